"""avidzoo: the AVID family of self-supervised audio-visual encoders.

>>> import avidzoo
>>> model = avidzoo.from_pretrained("cross_avid_r2plus1d.kinetics400")      # doctest: +SKIP
>>> t = avidzoo.create_transforms(model)                                     # doctest: +SKIP
>>> emb = model.encode_video(t.video(frames)[None])   # (1, 512)             # doctest: +SKIP
"""

from ._version import __version__
from .errors import (
    AvidzooError,
    CheckpointError,
    ChecksumError,
    DecodeError,
    DownloadError,
    HardwareDecoderError,
    NonFiniteError,
    NoPretrainedWeightsError,
    UnknownModelError,
    WeightsNotFoundError,
)
from .evaluate import EvalReport, evaluate
from .extract import ExtractionResult, FeatureExtractor, extract_features, load_features, per_second
from .factory import create_model, create_transforms, from_pretrained, list_models, read_config
from .hub import cache_dir, download
from .models.avid import AVIDModel
from .probe import ProbeReport, linear_probe
from .score import score_av, similarity
from .transforms import Transforms
from .verify import VerifyReport, verify

__all__ = [
    "__version__",
    "AVIDModel",
    "EvalReport",
    "ExtractionResult",
    "FeatureExtractor",
    "evaluate",
    "extract_features",
    "linear_probe",
    "ProbeReport",
    "load_features",
    "per_second",
    "score_av",
    "similarity",
    "Transforms",
    "VerifyReport",
    "cache_dir",
    "create_model",
    "create_transforms",
    "download",
    "from_pretrained",
    "list_models",
    "read_config",
    "verify",
    "AvidzooError",
    "CheckpointError",
    "ChecksumError",
    "DecodeError",
    "DownloadError",
    "HardwareDecoderError",
    "NonFiniteError",
    "NoPretrainedWeightsError",
    "UnknownModelError",
    "WeightsNotFoundError",
]
