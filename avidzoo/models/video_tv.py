"""R(2+1)D video encoders on torchvision's graph: ``torchvision.models.video.r2plus1d_18`` (GDT) and the VMZ-exact
variant XDC was trained with.

Both are torchvision's own ``VideoResNet`` (its ``R2Plus1dStem``, ``BasicBlock`` and ``Conv2Plus1D``), without the
classifier, so their state-dict keys are torchvision's (``stem.*``, ``layer1.*`` .. ``layer4.*``). They differ from the
AVID graph (:mod:`avidzoo.models.video`): a (2+1)D stem with 45 mid channels and no max pool (space /2, not /4, so
112-px crops give the 7x7 ``conv5x`` maps AVID gets from 224 px), a mid-channel formula in every (2+1)D conv, BatchNorm
before the residual addition and a BatchNorm on the projection shortcut.

* ``variant="torchvision"``: one mid-channel count per block, computed from the block's input and output widths and
  used by both its convs (230/460/921 in the down-sampling blocks).
* ``variant="vmz"`` (XDC): every conv computes its own from its own widths, so the second conv of each down-sampling
  block is wider (288/576/1152), and every BatchNorm has ``eps=1e-3`` (Caffe2's). Stock torchvision cannot load these
  weights.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torchvision.models.video.resnet import BasicBlock, Conv2Plus1D, R2Plus1dStem, VideoResNet

from .video import FEATURE_NAMES, VIDEO_STAGE_BLOCKS

__all__ = ["TorchvisionR2Plus1D", "VMZConv2Plus1D"]

_STAGES = ("layer1", "layer2", "layer3", "layer4")


def vmz_midplanes(in_planes: int, out_planes: int) -> int:
    """Mid channels of a (2+1)D conv with as many parameters as the full 3x3x3 conv it replaces (Tran et al. 2018)."""
    return (in_planes * out_planes * 27) // (in_planes * 9 + 3 * out_planes)


class VMZConv2Plus1D(Conv2Plus1D):
    """torchvision's (2+1)D conv, its mid channels computed from its own widths (the block's value is ignored)."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: int, stride: int = 1, padding: int = 1) -> None:
        super().__init__(in_planes, out_planes, vmz_midplanes(in_planes, out_planes), stride, padding)


class TorchvisionR2Plus1D(VideoResNet):
    """torchvision's R(2+1)D (``variant="torchvision"``) or XDC's VMZ-exact one (``"vmz"``) as a feature encoder.

    Input ``(B, 3, T, H, W)`` normalised RGB (the released weights: 112x112 crops). :meth:`forward` gives ``(B, 512)``,
    ``pool`` (``"avg"``, torchvision's, or ``"max"``) over ``layer4``. Time is halved by layers 2-4, space by 2 in the
    stem and then 2 per layer.
    """

    out_dim = 512
    feature_channels = dict(zip(FEATURE_NAMES, (64, 64, 128, 256, 512, 512)))

    def __init__(self, depth: int = 18, variant: Literal["torchvision", "vmz"] = "torchvision",
                 pool: Literal["avg", "max"] = "avg") -> None:
        if depth not in VIDEO_STAGE_BLOCKS:
            raise ValueError(f"R(2+1)D depth must be one of {sorted(VIDEO_STAGE_BLOCKS)}, got {depth}")
        if variant not in ("torchvision", "vmz"):
            raise ValueError(f"variant must be 'torchvision' or 'vmz', got {variant!r}")
        conv = Conv2Plus1D if variant == "torchvision" else VMZConv2Plus1D
        super().__init__(BasicBlock, [conv] * 4, list(VIDEO_STAGE_BLOCKS[depth]), R2Plus1dStem)
        del self.fc, self.avgpool  # a feature encoder: heads live in AVIDModel
        self.depth, self.variant = depth, variant
        self.pool = nn.AdaptiveAvgPool3d(1) if pool == "avg" else nn.AdaptiveMaxPool3d(1)
        if variant == "vmz":
            for m in self.modules():
                if isinstance(m, nn.BatchNorm3d):
                    # Caffe2's eps. Its momentum 0.9 is the decay of the running statistics, PyTorch's 0.1 (its
                    # momentum weighs the new batch): XDC's port sets PyTorch's 0.9, the number, not the meaning, so
                    # the default 0.1 stays (docs/siblings.md). Evaluation never updates the statistics either way.
                    m.eps = 1e-3

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``conv1`` (the stem) and ``conv2x .. conv5x`` (layers 1-4) as ``(B, C, T', H', W')``, ``pool``
        ``(B, 512, 1, 1, 1)``: the AVID encoder's names, so that ``--layer`` means the same stage on every graph."""
        feats: dict[str, torch.Tensor] = {}
        x = feats["conv1"] = self.stem(x)
        for name, stage in zip(FEATURE_NAMES[1:5], _STAGES):
            x = feats[name] = getattr(self, stage)(x)
        feats["pool"] = self.pool(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` -> ``(B, 512)``."""
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return torch.flatten(self.pool(x), 1)
