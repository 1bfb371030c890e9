"""Run folders shared by pretraining and finetuning: device and process set-up, AMP, the metrics log, checkpoints."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch

from .._env import autocast_dtype
from .._files import atomic_path
from ..serialization import read_pretrained_dir
from .distributed import init_distributed
from .guard import check_finite

__all__ = ["RunOptions", "RunLogger", "read_metrics", "latest_checkpoint", "setup_device", "start_run", "Precision",
           "amp_settings", "read_config_file", "export_model", "save_checkpoint", "resume_checkpoint"]


@dataclasses.dataclass
class RunOptions:
    """Settings every training run has: DataLoader processes, device (default ``cuda:LOCAL_RANK`` or CPU), mixed
    precision (see :func:`amp_settings`), seed, steps between logged rows, whether to continue the run folder's
    last checkpoint, how many steps in a row may have a non-finite loss or gradients (each is skipped, see
    :class:`~avidzoo.train.guard.StepGuard`) before the run stops (20 lets an fp16 loss scale fall from 2^16 to
    2^-4 before giving up), and how many of the newest ``checkpoints/epoch-NNN`` folders to keep (0: all; an
    R(2+1)D-18 checkpoint with its optimizer is about 150 MB, with AVID's memory banks far more)."""

    num_workers: int = 4
    device: str | None = None
    amp: bool | str = True
    seed: int = 0
    log_every: int = 10
    resume: bool = False
    max_bad_steps: int = 20
    keep_checkpoints: int = 0


def read_config_file(path: str | os.PathLike, cls: type, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments for dataclass ``cls`` in a YAML or JSON file, updated with the non-``None``
    ``overrides`` (a dict merged into the file's dict); unknown keys are an error naming the file."""
    text = Path(path).read_text(encoding="utf-8")
    if str(path).endswith((".yaml", ".yml")):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    for k, v in overrides.items():
        if v is None:
            continue
        # a flag that sets one key of a dict (--video-colour) keeps the file's other keys
        data[k] = {**data[k], **v} if isinstance(v, dict) and isinstance(data.get(k), dict) else v
    return data


def setup_device(name: str | None) -> tuple[int, int, torch.device]:
    """Join torchrun's process group if there is one; ``(rank, world, device)`` with ``cuda:LOCAL_RANK`` by default
    when CUDA is available, else the CPU."""
    rank, world, local_rank = init_distributed()
    if name:
        device = torch.device(name)
    elif torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return rank, world, device


def start_run(cfg: RunOptions) -> tuple[int, int, torch.device, Path]:
    """``(rank, world, device, run folder)`` for a config with ``device``, ``out`` and ``seed``; creates the folder
    and seeds torch."""
    rank, world, device = setup_device(cfg.device)
    run = Path(cfg.out)
    run.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    return rank, world, device, run


class Precision(NamedTuple):
    """A run's mixed precision: autocast ``enabled`` with ``dtype``, the gradient ``scaler`` (enabled for fp16
    only) and the ``name`` used in logs and errors (``"off"``, ``"bf16"`` or ``"fp16"``)."""

    enabled: bool
    dtype: torch.dtype
    scaler: torch.amp.GradScaler
    name: str


def amp_settings(amp: bool | str, device: torch.device) -> Precision:
    """The :class:`Precision` of a run's ``amp`` setting.

    ``True``/``"auto"``: autocast on CUDA only, bf16 where supported, else fp16 with a gradient scaler; the CPU runs
    fp32. ``"bf16"``/``"fp16"``: that autocast on any device (fp16 with a scaler), which is how the CUDA code path is
    exercised on CPUs; there it warns, since CPU low-precision backward kernels are slow and some return NaN (torch
    2.11's bf16 Conv3d backward with a (3, 1, 1) kernel on AVX-512-BF16 CPUs). ``False``/``"off"``: fp32. Disabled
    autocast and scaler are no-ops, so one loop body serves all.
    """
    if amp is True or amp == "auto":
        enabled = device.type == "cuda"
        dtype = autocast_dtype(device) if enabled else torch.float16
    elif amp in ("bf16", "fp16"):
        enabled, dtype = True, torch.bfloat16 if amp == "bf16" else torch.float16
        if device.type == "cpu":
            warnings.warn(f"amp={amp!r} on the CPU runs the CUDA autocast path; CPU {amp} backward kernels are "
                          "slow and some return NaN gradients on some CPUs. Steps with non-finite gradients are "
                          "skipped and counted (skipped_steps), and the run stops after max_bad_steps in a row; "
                          "amp='auto' trains in fp32 on CPUs", stacklevel=2)
    elif amp is False or amp == "off":
        enabled, dtype = False, torch.float32
    else:
        raise ValueError(f"amp must be true/'auto', 'bf16', 'fp16' or false/'off', got {amp!r}")
    name = "off" if not enabled else "bf16" if dtype == torch.bfloat16 else "fp16"
    scaler = torch.amp.GradScaler(device.type, enabled=enabled and dtype == torch.float16)
    return Precision(enabled, dtype, scaler, name)


class RunLogger:
    """Appends ``metrics.csv`` rows (``epoch, step, kind, name, value``) and, when installed, TensorBoard scalars."""

    def __init__(self, run: Path, enabled: bool) -> None:
        self.enabled, self.path = enabled, run / "metrics.csv"
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run / "tensorboard"))
            except Exception:  # tensorboard is optional
                self.tb = None

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        new = not self.path.exists()
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["epoch", "step", "kind", "name", "value"])
            if new:
                w.writeheader()
            for k, v in row["values"].items():
                w.writerow({"epoch": row["epoch"], "step": row["step"], "kind": row["kind"], "name": k,
                            "value": f"{v:.6g}"})
        if self.tb is not None:
            for k, v in row["values"].items():
                self.tb.add_scalar(f"{row['kind']}/{k}", v, row["step"])


def read_metrics(run: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a run's ``metrics.csv`` with numeric ``epoch``, ``step`` and ``value``."""
    with open(Path(run) / "metrics.csv", newline="") as f:
        return [{**r, "epoch": int(r["epoch"]), "step": int(r["step"]), "value": float(r["value"])}
                for r in csv.DictReader(f)]


def latest_checkpoint(run: Path) -> Path | None:
    """The newest complete ``checkpoints/epoch-NNN`` folder (one with its ``training_state.pt``)."""
    done = _complete_checkpoints(run)
    return done[-1] if done else None


def _complete_checkpoints(run: Path) -> list[Path]:
    """The run's ``checkpoints/epoch-NNN`` folders that have their ``training_state.pt``, oldest first."""
    return sorted(p for p in (run / "checkpoints").glob("epoch-*") if (p / "training_state.pt").is_file())


def export_model(model, folder: Path) -> Path:
    """``model.save_pretrained(folder)``, refused with :class:`~avidzoo.errors.NonFiniteError` (and nothing
    written) when a weight or buffer is not finite."""
    check_finite(model, f"{folder}: the model")
    model.save_pretrained(folder)
    return folder


def save_checkpoint(run: Path, epoch: int, model, state: dict[str, Any], keep: int = 0) -> Path:
    """Write ``checkpoints/epoch-NNN/`` (the model as ``save_pretrained`` writes it, and ``training_state.pt``
    atomically, after the model, so a complete folder always has both) and refresh ``run/model``. Nothing is written
    when the model or the training state holds a non-finite tensor. With ``keep`` > 0, the complete checkpoints
    older than the newest ``keep`` are deleted afterwards (so a crash mid-write never leaves fewer than ``keep``)."""
    folder = run / "checkpoints" / f"epoch-{epoch:03d}"
    check_finite(state, f"{folder}: the training state")
    export_model(model, folder)
    with atomic_path(folder / "training_state.pt") as tmp:
        torch.save({"epoch": epoch, **state}, tmp)
    model.save_pretrained(run / "model")  # checked above
    if keep > 0:
        for old in _complete_checkpoints(run)[:-keep]:
            shutil.rmtree(old)
    return folder


def resume_checkpoint(run: Path, model, device: torch.device) -> dict[str, Any] | None:
    """Load the newest complete checkpoint's weights into ``model`` and return its training state (read with
    ``weights_only=True``), or ``None`` when the run has no checkpoint yet."""
    ckpt = latest_checkpoint(run)
    if ckpt is None:
        return None
    _, weights = read_pretrained_dir(ckpt)
    model.load_state_dict(weights)
    return torch.load(ckpt / "training_state.pt", map_location=device, weights_only=True)

