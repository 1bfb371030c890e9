"""Network definitions: the AVID video and audio encoders, their heads and the two-tower model."""

from .audio import Conv2D
from .avid import AVIDModel
from .heads import ClassifierHead, ProjectionHead
from .video import R2Plus1D

__all__ = ["AVIDModel", "R2Plus1D", "Conv2D", "ProjectionHead", "ClassifierHead"]
