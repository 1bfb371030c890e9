"""Read the released AVID checkpoints and map them to avidzoo's module names.

The originals are PyTorch 1.4 training checkpoints (legacy, non-zip serialisation, tensors saved from CUDA):
``{"epoch", "model", "optimizer", "train_criterion"}``, where ``model`` is the state dict of a
DistributedDataParallel-wrapped ``AV_Wrapper`` (keys start with ``module.``). Only ``model`` is kept.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError
from .models.video import VIDEO_STAGE_BLOCKS

__all__ = ["read_original_checkpoint", "map_original_keys", "infer_architecture"]

# Original AV_Wrapper prefix -> avidzoo AVIDModel prefix.
KEY_MAP = {
    "video_model.": "video_encoder.",
    "audio_model.": "audio_encoder.",
    "video_proj.projection.": "video_head.",
    "audio_proj.projection.": "audio_head.",
}
_TOWER = {"video_encoder.": "video", "video_head.": "video", "audio_encoder.": "audio", "audio_head.": "audio"}


def torch_load_safely(path: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True, map_location="cpu")`` with errors that name the file and the fix."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e):
            raise CheckpointError(
                f"{path}: holds Python objects other than tensors and plain containers; avidzoo never unpickles "
                "such files. If you wrote it yourself, re-save only its state dict."
            ) from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({e}); it is corrupt or truncated") from None
    except (EOFError, zipfile.BadZipFile, RuntimeError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, OSError, UnicodeDecodeError, MemoryError) as e:
        reason = f"{type(e).__name__}: {e}".strip().rstrip(":")
        if isinstance(e, EOFError):
            reason = "the file ends early"
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({reason[:300]}); it is corrupt or truncated; "
            "delete it and fetch it again"
        ) from None


def read_original_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ``model`` state dict of an original checkpoint, keys mapped to avidzoo names (all towers present).

    Also accepts a bare state dict or ``{"state_dict": ...}``, with or without the ``module.`` prefix.
    """
    obj = torch_load_safely(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        state = obj["model"]
    elif isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        state = obj["state_dict"]
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj
    else:
        keys = list(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"{path}: no 'model' state dict in this checkpoint (found {keys})")
    try:
        return map_original_keys(state)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None


def map_original_keys(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Strip one leading ``module.`` and rename the AV_Wrapper prefixes (``video_model.`` -> ``video_encoder.``...)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"state dict entry {key!r} is a {type(value).__name__}, not a tensor")
        k = key[len("module."):] if key.startswith("module.") else key
        for old, new in KEY_MAP.items():
            if k.startswith(old):
                k = new + k[len(old):]
                break
        else:
            if not k.startswith(tuple(KEY_MAP.values())) and not k.startswith("classifier."):
                raise CheckpointError(f"unexpected key {key!r}: not an AVID audio-visual model state dict")
        out[k] = value.contiguous()
    return out


def select_towers(state: Mapping[str, torch.Tensor], modalities: Iterable[str]) -> dict[str, torch.Tensor]:
    """Keep the encoder and head entries of the given modalities (and any classifier if video is kept)."""
    keep = set(modalities)
    out = {}
    for k, v in state.items():
        default = "video" if k.startswith("classifier.") else None
        tower = next((t for p, t in _TOWER.items() if k.startswith(p)), default)
        if tower in keep:
            out[k] = v
    return out


def infer_architecture(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Towers, video depth and projection dims implied by a (mapped) state dict."""
    arch: dict[str, Any] = {"video": None, "audio": None, "proj_dims": None}
    if any(k.startswith("video_encoder.") for k in state):
        blocks = []
        for stage in ("conv2x", "conv3x", "conv4x", "conv5x"):
            idx = {k.split(".")[2] for k in state if k.startswith(f"video_encoder.{stage}.")}
            blocks.append(sum(i.isdigit() for i in idx) or 1)
        depth = next((d for d, b in VIDEO_STAGE_BLOCKS.items() if tuple(blocks) == b), None)
        if depth is None:
            raise CheckpointError(f"video encoder with {blocks} blocks per stage matches no R(2+1)D depth")
        arch["video"] = {"arch": "r2plus1d", "depth": depth}
    if any(k.startswith("audio_encoder.") for k in state):
        arch["audio"] = {"arch": "conv2d", "depth": 10}
    for head in ("video_head.", "audio_head."):
        ws = sorted((int(k.split(".")[1]), v) for k, v in state.items() if k.startswith(head) and k.endswith(".weight"))
        if ws:
            arch["proj_dims"] = [int(v.shape[0]) for _, v in ws]
    if "classifier.1.weight" in state:
        arch["num_classes"] = int(state["classifier.1.weight"].shape[0])
    return arch
