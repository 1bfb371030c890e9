"""The original AVID video encoder: an R(2+1)D network with a full 3D stem.

This is *not* torchvision's ``r2plus1d_18``. It follows the released AVID checkpoints exactly:

* stem: Conv3d(3, 64, k=(3, 7, 7), s=(1, 2, 2)) -> BN -> ReLU -> MaxPool3d(k=(1, 3, 3), s=(1, 2, 2));
* no (2+1)D mid-channel formula: every spatial conv outputs ``planes`` and every temporal conv maps
  ``planes -> planes``;
* the block's BatchNorm sits *after* the residual addition, and the second temporal conv has no BN;
* the first block of stages 3-5 downsamples time and space (stride 2, 2, 2);
* global *max* pooling (``pool="avg"`` for CrissCross's pretrained features).

Attribute names match the original modules so that state dicts load without renaming.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["R2Plus1D", "BasicR2P1DBlock", "VIDEO_STAGE_BLOCKS"]

# Blocks per stage (conv2x, conv3x, conv4x, conv5x) for each supported depth.
VIDEO_STAGE_BLOCKS: dict[int, tuple[int, int, int, int]] = {
    10: (1, 1, 1, 1),
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
}
_STAGE_WIDTHS = (64, 128, 256, 512)
FEATURE_NAMES = ("conv1", "conv2x", "conv3x", "conv4x", "conv5x", "pool")
# Channels of each forward_features map (the same for every depth).
FEATURE_CHANNELS = dict(zip(FEATURE_NAMES, (64, *_STAGE_WIDTHS, _STAGE_WIDTHS[-1])))


class BasicR2P1DBlock(nn.Module):
    """(1x3x3 -> 3x1x1) x 2 with a post-addition BatchNorm.

    ``stride`` is ``(s_t, s_h, s_w)``: the spatial convs take ``s_h, s_w`` and the first temporal conv ``s_t``.
    Input ``(B, in_planes, T, H, W)``, output ``(B, planes, T / s_t, H / s_h, W / s_w)``.
    """

    def __init__(self, in_planes: int, planes: int, stride: tuple[int, int, int] = (1, 1, 1)) -> None:
        super().__init__()
        st, sh, sw = stride
        self.spt_conv1 = nn.Conv3d(in_planes, planes, (1, 3, 3), stride=(1, sh, sw), padding=(0, 1, 1), bias=False)
        self.spt_bn1 = nn.BatchNorm3d(planes)
        self.tmp_conv1 = nn.Conv3d(planes, planes, (3, 1, 1), stride=(st, 1, 1), padding=(1, 0, 0), bias=False)
        self.tmp_bn1 = nn.BatchNorm3d(planes)
        self.spt_conv2 = nn.Conv3d(planes, planes, (1, 3, 3), padding=(0, 1, 1), bias=False)
        self.spt_bn2 = nn.BatchNorm3d(planes)
        self.tmp_conv2 = nn.Conv3d(planes, planes, (3, 1, 1), padding=(1, 0, 0), bias=False)
        self.out_bn = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        if in_planes != planes or any(s != 1 for s in stride):
            # The original shortcut projection has no BatchNorm of its own: out_bn covers the sum.
            self.res_conv = nn.Conv3d(in_planes, planes, 1, stride=stride, bias=False)
        else:
            self.res_conv = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.spt_bn1(self.spt_conv1(x)))
        out = self.relu(self.tmp_bn1(self.tmp_conv1(out)))
        out = self.relu(self.spt_bn2(self.spt_conv2(out)))
        out = self.tmp_conv2(out)
        shortcut = x if self.res_conv is None else self.res_conv(x)
        return self.relu(self.out_bn(out + shortcut))


def _make_stage(in_planes: int, planes: int, blocks: int, downsample: bool) -> nn.Module:
    stride = (2, 2, 2) if downsample else (1, 1, 1)
    layers = [BasicR2P1DBlock(in_planes, planes, stride)]
    layers += [BasicR2P1DBlock(planes, planes) for _ in range(blocks - 1)]
    # A one-block stage is stored bare in the original (keys ``conv2x.spt_conv1...``, not ``conv2x.0...``).
    return layers[0] if blocks == 1 else nn.Sequential(*layers)


class R2Plus1D(nn.Module):
    """AVID video encoder.

    Input: ``(B, 3, T, H, W)`` float RGB in [0, 1], normalised with ImageNet mean/std (pretraining used
    T=8 frames at 16 fps and H=W=224). Output of :meth:`forward`: ``(B, 512)`` max-pooled (``pool="avg"``: averaged)
    ``conv5x`` features.
    Time is halved by each of conv3x, conv4x and conv5x, space by 4 in the stem and then 2 per stage.
    """

    out_dim = 512
    feature_channels = FEATURE_CHANNELS

    def __init__(self, depth: int = 18, pool: str = "max") -> None:
        super().__init__()
        if pool not in ("max", "avg"):
            raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
        if depth not in VIDEO_STAGE_BLOCKS:
            raise ValueError(f"R2Plus1D depth must be one of {sorted(VIDEO_STAGE_BLOCKS)}, got {depth}")
        self.depth = depth
        self.conv1 = nn.Sequential(
            nn.Conv3d(3, 64, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            nn.BatchNorm3d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        )
        blocks = VIDEO_STAGE_BLOCKS[depth]
        in_planes = 64
        for i, (planes, n) in enumerate(zip(_STAGE_WIDTHS, blocks)):
            setattr(self, f"conv{i + 2}x", _make_stage(in_planes, planes, n, downsample=i > 0))
            in_planes = planes
        # AVID max-pools; CrissCross's pretraining averaged (its finetuning configs max-pool again)
        self.pool = nn.AdaptiveMaxPool3d((1, 1, 1)) if pool == "max" else nn.AdaptiveAvgPool3d((1, 1, 1))

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every stage's output: ``conv1 .. conv5x`` as ``(B, C, T', H', W')``, ``pool`` as ``(B, 512, 1, 1, 1)``."""
        feats: dict[str, torch.Tensor] = {}
        x = feats["conv1"] = self.conv1(x)
        for name in FEATURE_NAMES[1:5]:
            x = feats[name] = getattr(self, name)(x)
        feats["pool"] = self.pool(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` -> ``(B, 512)``."""
        x = self.conv1(x)
        x = self.conv5x(self.conv4x(self.conv3x(self.conv2x(x))))
        return torch.flatten(self.pool(x), 1)
