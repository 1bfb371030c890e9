"""Heads on top of the pooled 512-d encoder features."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

__all__ = ["ProjectionHead", "ClassifierHead"]


class ProjectionHead(nn.Sequential):
    """The pretraining projection MLP: Linear layers with ReLU between them (none after the last).

    ``dims=(512, 512, 128)`` on a 512-d input gives Linear(512, 512)-ReLU-Linear(512, 512)-ReLU-Linear(512, 128),
    children ``0, 2, 4`` as in the original ``projection`` Sequential. ``(B, in_dim) -> (B, dims[-1])``.
    """

    def __init__(self, in_dim: int, dims: Sequence[int]) -> None:
        layers: list[nn.Module] = []
        for i, d in enumerate(dims):
            if i:
                layers.append(nn.ReLU(inplace=True))
            layers.append(nn.Linear(in_dim, d))
            in_dim = d
        super().__init__(*layers)
        self.out_dim = in_dim


class ClassifierHead(nn.Sequential):
    """Dropout then Linear, as the original action-recognition finetuning. ``(B, in_dim) -> (B, num_classes)``."""

    def __init__(self, in_dim: int, num_classes: int, dropout: float = 0.5) -> None:
        super().__init__(nn.Dropout(dropout), nn.Linear(in_dim, num_classes))
        self.num_classes = num_classes
