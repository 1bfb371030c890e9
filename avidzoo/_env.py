"""Decisions read from the environment, made once here: cache folder, offline mode, Hugging Face endpoint, progress
bars, default device and autocast dtype, and the torch.distributed process group. A leaf: imports no avidzoo module.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

__all__ = ["env_flag", "is_offline", "cache_dir", "hf_endpoint", "show_progress", "default_device",
           "autocast_dtype", "slurm_array_task", "rank_world", "init_distributed"]

_TRUE = {"1", "true", "yes", "on"}


def env_flag(name: str) -> bool:
    """True when the variable is set to 1/true/yes/on (any case); ``0``, ``false`` or unset are False."""
    return os.environ.get(name, "").strip().lower() in _TRUE


def is_offline() -> bool:
    """True when ``AVIDZOO_OFFLINE`` or ``HF_HUB_OFFLINE`` is set: no network access at all."""
    return env_flag("AVIDZOO_OFFLINE") or env_flag("HF_HUB_OFFLINE")


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """``override``, else ``$AVIDZOO_HOME``, else ``$XDG_CACHE_HOME/avidzoo`` (``~/.cache/avidzoo``)."""
    if override is not None:
        return Path(override).expanduser()
    if os.environ.get("AVIDZOO_HOME"):
        return Path(os.environ["AVIDZOO_HOME"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "avidzoo"


def hf_endpoint() -> str | None:
    """``HF_ENDPOINT`` read at call time (huggingface_hub reads it once, at import), for mirrors such as hf-mirror."""
    return os.environ.get("HF_ENDPOINT") or None


def show_progress(progress: bool | None = None) -> bool:
    """``progress`` when given, else: a terminal on stderr and ``AVIDZOO_DISABLE_PROGRESS`` not set to a true value."""
    if progress is not None:
        return progress
    return not env_flag("AVIDZOO_DISABLE_PROGRESS") and sys.stderr.isatty()


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def autocast_dtype(device: torch.device) -> torch.dtype:
    """The low precision for inference and ``amp="auto"`` training on ``device``: bf16 on CUDA where supported,
    else fp16; fp32 (no autocast) on CPUs."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def slurm_array_task() -> tuple[int, int] | None:
    """``(task, tasks)`` of a SLURM job array (task counted from 0), or None outside one."""
    if "SLURM_ARRAY_TASK_ID" not in os.environ or "SLURM_ARRAY_TASK_COUNT" not in os.environ:
        return None
    first = int(os.environ.get("SLURM_ARRAY_TASK_MIN", "0"))
    return int(os.environ["SLURM_ARRAY_TASK_ID"]) - first, int(os.environ["SLURM_ARRAY_TASK_COUNT"])


def rank_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the current process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed() -> tuple[int, int, int]:
    """Join the process group torchrun describes, if nobody has yet (NCCL on GPUs, gloo on CPUs);
    ``(rank, world, local_rank)``."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank, world = rank_world()
    return rank, world, int(os.environ.get("LOCAL_RANK", "0"))
