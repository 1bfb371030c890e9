"""Write checkpoints in the exact layout of the released AVID files (facts sheet, section c).

``{"epoch", "model", "optimizer", "train_criterion"}`` in that order; ``model`` is the state dict of a
DistributedDataParallel-wrapped AV_Wrapper (``module.video_model.…``, ``module.audio_model.…``,
``module.{video,audio}_proj.projection.{0,2,4}.…``); Adam state for every parameter; memory banks and the NCE
partition constant in ``train_criterion``; legacy (PyTorch < 1.6, non-zip) serialisation with every storage tagged
as living on ``cuda:0``, as a file written by PyTorch 1.4 on a GPU machine is.
"""

from __future__ import annotations

import collections
import os

import torch
from torch import serialization

from avidzoo.convert import KEY_MAP

INVERSE_KEY_MAP = {new: old for old, new in KEY_MAP.items()}


def to_original_keys(state: dict[str, torch.Tensor]) -> collections.OrderedDict:
    out = collections.OrderedDict()
    for k, v in state.items():
        for new, old in INVERSE_KEY_MAP.items():
            if k.startswith(new):
                k = old + k[len(new):]
                break
        out["module." + k] = v.clone()
    return out


def _adam_state(model_state: dict[str, torch.Tensor]) -> dict:
    params = [v for k, v in model_state.items() if "running_" not in k and "num_batches_tracked" not in k]
    state = {i: {"step": torch.tensor(1000.0), "exp_avg": torch.randn_like(p) * 1e-3,
                 "exp_avg_sq": torch.rand_like(p) * 1e-6} for i, p in enumerate(params)}
    group = {"lr": 2e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-5, "amsgrad": False,
             "initial_lr": 2e-4, "params": list(range(len(params)))}
    return {"state": state, "param_groups": [group]}


def save_original_checkpoint(model, path: str | os.PathLike, *, num_data: int = 64, cma: bool = False,
                             epoch: int = 30) -> collections.OrderedDict:
    """Save ``model`` (an AVIDModel with both towers and heads) as an original checkpoint.

    Returns the checkpoint's ``model`` dict."""
    model_state = to_original_keys(model.state_dict())
    bank = lambda: torch.nn.functional.normalize(torch.randn(num_data, 128), dim=1)  # noqa: E731
    criterion = collections.OrderedDict(
        [("nce_average.view1_mem", bank()), ("nce_average.view2_mem", bank()),
         ("criterion.avg_exp_score", torch.tensor(1.3e-4))]
    )
    if cma:
        criterion["nce_average.positive_set"] = torch.randint(0, num_data, (num_data, 32), dtype=torch.int32)
    ckpt = collections.OrderedDict(
        [("epoch", epoch), ("model", model_state), ("optimizer", _adam_state(model_state)),
         ("train_criterion", criterion)]
    )
    entry = (-1000, lambda obj: "cuda:0", lambda obj, location: None)
    serialization._package_registry.insert(0, entry)
    try:
        torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    finally:
        serialization._package_registry.remove(entry)
    return model_state
