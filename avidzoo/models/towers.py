"""Encoders by name: a tower config ``{"arch": ..., "depth": ..., "pool": ...}`` (``config.json``'s ``video`` and
``audio`` entries, the manifest's ``architectures``) -> the module.

Video: ``r2plus1d`` (AVID's graph; AVID-CMA, CrissCross), ``tv_r2plus1d`` (torchvision's ``r2plus1d_18``; GDT),
``vmz_r2plus1d`` (XDC's VMZ-exact variant). Audio: ``conv2d`` (AVID's CNN), ``resnet2d`` (CrissCross depth 18, GDT
depth 9). Every encoder maps its input to ``(B, out_dim)`` and has ``forward_features`` and ``feature_channels``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from .audio import Conv2D
from .audio_resnet import ResNet2D
from .video import R2Plus1D
from .video_tv import TorchvisionR2Plus1D

__all__ = ["VIDEO_ENCODERS", "AUDIO_ENCODERS", "build_encoder"]

VIDEO_ENCODERS: dict[str, Callable[[Mapping[str, Any]], nn.Module]] = {
    "r2plus1d": lambda c: R2Plus1D(int(c.get("depth", 18)), pool=c.get("pool", "max")),
    "tv_r2plus1d": lambda c: TorchvisionR2Plus1D(int(c.get("depth", 18)), "torchvision", pool=c.get("pool", "avg")),
    "vmz_r2plus1d": lambda c: TorchvisionR2Plus1D(int(c.get("depth", 18)), "vmz", pool=c.get("pool", "avg")),
}
AUDIO_ENCODERS: dict[str, Callable[[Mapping[str, Any]], nn.Module]] = {
    "conv2d": lambda c: Conv2D(int(c.get("depth", 10))),
    "resnet2d": lambda c: ResNet2D(int(c.get("depth", 18))),
}


def build_encoder(modality: str, config: Mapping[str, Any]) -> nn.Module:
    """The ``modality`` encoder a tower config describes (``arch`` defaults to AVID's)."""
    table = VIDEO_ENCODERS if modality == "video" else AUDIO_ENCODERS
    arch = config.get("arch") or ("r2plus1d" if modality == "video" else "conv2d")
    if arch not in table:
        raise ValueError(f"unknown {modality} architecture {arch!r}; known: {', '.join(table)}")
    return table[arch](config)
