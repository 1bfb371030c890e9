"""The original AVID audio encoder: a 9-layer 2D CNN over log-spectrograms (``Conv2D(depth=10)`` upstream).

Its blocks are *not* residual: conv -> BN -> ReLU -> conv -> BN -> ReLU. Attribute names match the original
modules so that state dicts load without renaming.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Conv2D", "Basic2DBlock"]

FEATURE_NAMES = ("conv2x", "conv3x", "conv4x", "conv5x", "pool")
_BLOCK_WIDTHS = (64, 128, 256, 512)
# Channels of each forward_features map.
FEATURE_CHANNELS = dict(zip(FEATURE_NAMES, (*_BLOCK_WIDTHS, _BLOCK_WIDTHS[-1])))


class Basic2DBlock(nn.Module):
    """Two 3x3 convs with BN and ReLU; the first one carries the stride. ``(B, C_in, T, F) -> (B, C_out, T/s, F/s)``."""

    def __init__(self, in_planes: int, planes: int, stride: tuple[int, int] = (1, 1)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(x)))


class Conv2D(nn.Module):
    """AVID audio encoder.

    Input: ``(B, 1, T, F)`` normalised log-spectrograms, time first; the released models take T=200 frames
    (2 s at 100 frames/s) and F=257 frequency bins. Output of :meth:`forward`: ``(B, 512)`` max-pooled features.
    """

    out_dim = 512
    feature_channels = FEATURE_CHANNELS

    def __init__(self, depth: int = 10) -> None:
        super().__init__()
        if depth != 10:
            raise ValueError(f"the AVID audio encoder exists only with depth 10, got {depth}")
        self.depth = depth
        self.conv1 = nn.Sequential(
            nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
        )
        widths, strides = (64, *_BLOCK_WIDTHS), ((2, 2), (2, 2), (2, 2), (1, 1))
        for i, stride in enumerate(strides):
            setattr(self, f"block{i + 1}", Basic2DBlock(widths[i], widths[i + 1], stride))
        self.pool = nn.AdaptiveMaxPool2d((1, 1))

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Outputs of block1..block4 keyed ``conv2x .. conv5x`` (``(B, C, T', F')``) and ``pool`` (``(B, 512, 1, 1)``).

        As upstream, the stem has no key of its own.
        """
        x = self.conv1(x)
        feats: dict[str, torch.Tensor] = {}
        for name, block in zip(FEATURE_NAMES[:4], (self.block1, self.block2, self.block3, self.block4)):
            x = feats[name] = block(x)
        feats["pool"] = self.pool(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, T, F)`` -> ``(B, 512)``."""
        x = self.block4(self.block3(self.block2(self.block1(self.conv1(x)))))
        return torch.flatten(self.pool(x), 1)
