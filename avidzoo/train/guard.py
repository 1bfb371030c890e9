"""The non-finite step guard of pretraining and finetuning.

A step whose loss or gradients are not finite (a NaN from a kernel, an fp16 overflow, a bad batch) must not reach
the weights: Adam turns ``lr * 0 * NaN`` into NaN weights, and a memory bank updated from NaN embeddings poisons every
later step. :class:`StepGuard` makes one decision per step, after the backward pass and before anything is kept:

* finite: the optimizer steps and the loss's pending state (memory banks, Z) is committed;
* not finite: no optimizer step, the pending loss state is discarded, the BatchNorm running statistics are put back
  as they were before the forward pass, and the step is counted (``skipped_steps``) and logged with the precision.
  After ``max_bad_steps`` bad steps in a row the run stops with :class:`~avidzoo.errors.NonFiniteError`.

The fp16 gradient scaler goes through the same decision: its overflow steps are skipped steps (and halve the loss
scale as before); the scaler never makes a second, separate skip.

:func:`check_finite` is the last line: nothing with a non-finite tensor is written as a checkpoint or a model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import torch
from torch import nn

from ..errors import NonFiniteError
from .distributed import all_reduce_mean

log = logging.getLogger("avidzoo")

__all__ = ["StepGuard", "PendingState", "check_finite"]

T = TypeVar("T")


class PendingState(Protocol):
    """State computed during a step that is kept only if the step is: ``commit()`` keeps it, ``discard()`` drops
    it (the pretraining losses' memory-bank and Z updates)."""

    def commit(self) -> None: ...

    def discard(self) -> None: ...


class StepGuard:
    """Apply or skip each training step (see the module docstring).

    :meth:`run` is a whole step: :meth:`before_forward` (saves the BatchNorm statistics), the caller's forward pass,
    ``scaler.scale(loss).backward()``, then :meth:`step`, which unscales, checks, and either steps the optimizer or
    skips. ``amp`` is the run's precision for messages (``"off"``, ``"bf16"``, ``"fp16"``); ``pending`` are the
    states to commit or discard with the step; ``skipped`` continues a resumed run's count.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, *,
                 amp: str, max_bad_steps: int, pending: Sequence[PendingState] = (), skipped: int = 0) -> None:
        if max_bad_steps < 1:
            raise ValueError(f"max_bad_steps must be >= 1, got {max_bad_steps}")
        self.optimizer, self.scaler, self.amp, self.max_bad_steps = optimizer, scaler, amp, max_bad_steps
        self.pending = list(pending)
        self.skipped, self.consecutive = skipped, 0
        self._bn = [b for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                    for b in m.buffers(recurse=False)]
        self._bn_saved = [torch.empty_like(b) for b in self._bn]

    def before_forward(self) -> None:
        """Save the BatchNorm running statistics that the coming forward pass will update."""
        with torch.no_grad():
            for saved, b in zip(self._bn_saved, self._bn):
                saved.copy_(b)

    def run(self, forward: Callable[[], tuple[torch.Tensor, T]], *, step: int, epoch: int
            ) -> tuple[bool, float, torch.Tensor, T]:
        """One whole training step: zero the gradients, save the BatchNorm statistics, ``loss, extra = forward()``
        (the caller's forward pass and loss, under its autocast), the scaled backward pass and :meth:`step`.
        Returns ``(applied, grad_norm, loss, extra)``."""
        self.optimizer.zero_grad(set_to_none=True)
        self.before_forward()
        loss, extra = forward()
        self.scaler.scale(loss).backward()
        applied, grad_norm = self.step(loss, step=step, epoch=epoch)
        return applied, grad_norm, loss, extra

    def step(self, loss: torch.Tensor, *, step: int, epoch: int) -> tuple[bool, float]:
        """After the backward pass: ``(applied, grad_norm)``. ``grad_norm`` is the unscaled gradients' 2-norm (NaN or
        inf on a skipped step). Raises :class:`NonFiniteError` at the ``max_bad_steps``-th bad step in a row."""
        self.scaler.unscale_(self.optimizer)
        grads = [p.grad for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])) \
            if grads else torch.zeros((), device=loss.device)
        bad = ~(torch.isfinite(loss.detach().float()) & torch.isfinite(norm))
        # Every rank must take the same decision: the banks are global, and DDP's next all-reduce waits for all.
        bad = bool(all_reduce_mean(bad.float()) > 0)
        grad_norm = float(norm)
        if not bad:
            self.scaler.step(self.optimizer)
            for p in self.pending:
                p.commit()
            self.consecutive = 0
        else:
            with torch.no_grad():
                for saved, b in zip(self._bn_saved, self._bn):
                    b.copy_(saved)
            for p in self.pending:
                p.discard()
            self.skipped += 1
            self.consecutive += 1
            scale = f", loss scale {self.scaler.get_scale():g}" if self.scaler.is_enabled() else ""
            log.warning("step %d (epoch %d) skipped: non-finite %s (amp %s%s); %d skipped so far", step, epoch,
                        "loss" if not torch.isfinite(loss.detach()).all() else "gradients", self.amp, scale,
                        self.skipped)
        self.scaler.update()  # an enabled fp16 scaler halves its scale after an overflow, as always
        if self.consecutive >= self.max_bad_steps:
            lr = self.optimizer.param_groups[0]["lr"]
            advice = f"a lower learning rate (lr is {lr:g}), or check the data"
            if self.amp != "off":
                advice = f"--amp off (full fp32) first, then {advice}"
            raise NonFiniteError(
                f"training stopped at step {step} (epoch {epoch}): {self.consecutive} steps in a row had a non-finite "
                f"loss or gradients with amp={self.amp}; none of them changed the weights or reached a checkpoint. "
                f"Try {advice}; max_bad_steps={self.max_bad_steps} sets how many bad steps in a row stop a run")
        return not bad, grad_norm


def _tensors(obj: Any, prefix: str = "") -> Iterable[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}[{i}]")


def check_finite(obj: Any, what: str) -> None:
    """Raise :class:`NonFiniteError` naming the first floating-point tensor in ``obj`` (a tensor, a module's state
    dict, nested dicts and lists) that holds NaN or inf; ``what`` says what was about to be written."""
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    for name, t in _tensors(obj):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise NonFiniteError(f"{what}: {name} holds non-finite values (NaN or inf); it was not written")
