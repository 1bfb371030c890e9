"""2D ResNet audio encoders on log-mel / log-filterbank images: CrissCross's ResNet-18 and GDT's ResNet-9.

torchvision's own ``ResNet`` with ``BasicBlock`` (``[2, 2, 2, 2]`` for depth 18, ``[1, 1, 1, 1]`` for depth 9), a
one-channel 7x7 stride-2 stem conv, max pool, average pooling and no classifier; keys are torchvision's (``conv1``,
``bn1``, ``layer1.*`` .. ``layer4.*``). Unlike AVID's audio CNN (:mod:`avidzoo.models.audio`) the blocks are residual,
the stem max-pools, and the input is frequency-first ``(B, 1, F, T)``.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from .audio import FEATURE_CHANNELS, FEATURE_NAMES

__all__ = ["ResNet2D", "RESNET2D_BLOCKS"]

RESNET2D_BLOCKS: dict[int, tuple[int, int, int, int]] = {9: (1, 1, 1, 1), 18: (2, 2, 2, 2)}


class ResNet2D(ResNet):
    """Audio ResNet. Input ``(B, 1, F, T)`` normalised log-mel or log-filterbank frames (CrissCross: 80 x 201;
    GDT: 40 x 99); :meth:`forward` gives ``(B, 512)`` average-pooled ``layer4`` features."""

    out_dim = 512
    feature_channels = FEATURE_CHANNELS

    def __init__(self, depth: int = 18) -> None:
        if depth not in RESNET2D_BLOCKS:
            raise ValueError(f"audio ResNet depth must be one of {sorted(RESNET2D_BLOCKS)}, got {depth}")
        super().__init__(BasicBlock, list(RESNET2D_BLOCKS[depth]))
        self.depth = depth
        self.conv1 = nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)  # one input channel: a spectrogram
        del self.fc, self.avgpool
        self.pool = nn.AdaptiveAvgPool2d(1)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``conv2x .. conv5x`` (layers 1-4) as ``(B, C, F', T')`` and ``pool`` ``(B, 512, 1, 1)``, the names of the
        AVID audio encoder's maps."""
        x = self._stem(x)
        feats: dict[str, torch.Tensor] = {}
        for name, stage in zip(FEATURE_NAMES[:4], (self.layer1, self.layer2, self.layer3, self.layer4)):
            x = feats[name] = stage(x)
        feats["pool"] = self.pool(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, F, T)`` -> ``(B, 512)``."""
        x = self.layer4(self.layer3(self.layer2(self.layer1(self._stem(x)))))
        return torch.flatten(self.pool(x), 1)
