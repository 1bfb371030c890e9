"""Inference-only rewrites of the encoders: BatchNorm folded into the convolutions before it.

``relu(bn(conv(x)))`` becomes ``relu(conv'(x))``. The post-addition BN of a video block, ``bn(a + b)``, folds into
both branches when the shortcut is a convolution (``bn(conv_a(x) + conv_b(x)) = conv_a'(x) + conv_b'(x)``); after an
identity shortcut it stays (one cheap per-channel affine op). Outputs equal the eval-mode model's up to float error.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .audio import Basic2DBlock, Conv2D
from .video import BasicR2P1DBlock, R2Plus1D

__all__ = ["fuse_batchnorm"]


def _scale_shift(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def _fold(conv: nn.Module, bn: nn.modules.batchnorm._BatchNorm, *, with_bias: bool = True) -> None:
    """Fold ``bn`` into ``conv`` in place (the conv gains a bias unless ``with_bias`` is False)."""
    scale, shift = _scale_shift(bn)
    conv.weight.copy_(conv.weight * scale.view(-1, *([1] * (conv.weight.ndim - 1))))
    if with_bias:
        bias = shift if conv.bias is None else conv.bias * scale + shift
        conv.bias = nn.Parameter(bias.detach().clone())


@torch.no_grad()
def fuse_batchnorm(module: nn.Module) -> nn.Module:
    """A copy of ``module`` (an encoder or an :class:`AVIDModel`) in eval mode with BatchNorm folded.

    For inference only: the copy has different parameters and no BatchNorm statistics to train.
    """
    module = copy.deepcopy(module).eval()
    for m in list(module.modules()):
        if isinstance(m, (R2Plus1D, Conv2D)):
            _fold(m.conv1[0], m.conv1[1])
            m.conv1[1] = nn.Identity()
        if isinstance(m, BasicR2P1DBlock):
            for conv, bn in (("spt_conv1", "spt_bn1"), ("tmp_conv1", "tmp_bn1"), ("spt_conv2", "spt_bn2")):
                _fold(getattr(m, conv), getattr(m, bn))
                setattr(m, bn, nn.Identity())
            if m.res_conv is not None:
                _fold(m.tmp_conv2, m.out_bn)
                _fold(m.res_conv, m.out_bn, with_bias=False)
                m.out_bn = nn.Identity()
        elif isinstance(m, Basic2DBlock):
            _fold(m.conv1, m.bn1)
            _fold(m.conv2, m.bn2)
            m.bn1, m.bn2 = nn.Identity(), nn.Identity()
        # torchvision's blocks (the sibling graphs): a BatchNorm right after a conv, in a Sequential (stems,
        # (2+1)D convs, shortcuts) or as a conv1/bn1, conv2/bn2 pair (2D ResNets)
        if isinstance(m, nn.Sequential):
            for i in range(1, len(m)):
                conv = _last_conv(m[i - 1])
                if isinstance(m[i], nn.modules.batchnorm._BatchNorm) and conv is not None:
                    _fold(conv, m[i])
                    m[i] = nn.Identity()
        for conv_name, bn_name in (("conv1", "bn1"), ("conv2", "bn2")):
            conv, bn = getattr(m, conv_name, None), getattr(m, bn_name, None)
            if isinstance(conv, nn.modules.conv._ConvNd) and isinstance(bn, nn.modules.batchnorm._BatchNorm):
                _fold(conv, bn)
                setattr(m, bn_name, nn.Identity())
    return module


def _last_conv(m: nn.Module) -> nn.modules.conv._ConvNd | None:
    """``m`` if it is a conv, or the conv that ends a Sequential (torchvision's ``Conv2Plus1D``); else None."""
    while isinstance(m, nn.Sequential) and len(m):
        m = m[-1]
    return m if isinstance(m, nn.modules.conv._ConvNd) else None
