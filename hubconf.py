"""torch.hub entry points for avidzoo.

    model = torch.hub.load("org/avidzoo:v0.1.0", "cross_avid_r2plus1d", dataset="kinetics")
    model = torch.hub.load("/path/to/avidzoo", "avid_cma_r2plus1d", source="local")

Weights load through the same verified, cached resolver as ``pip install avidzoo``.
"""

# torch.hub checks that each of these imports; they are everything avidzoo imports.
dependencies = ["torch", "torchvision", "torchaudio", "huggingface_hub", "safetensors", "einops", "av", "numpy",
                "filelock", "tqdm", "yaml", "PIL", "fsspec"]

from avidzoo import create_model as _create_model  # noqa: E402
from avidzoo import create_transforms as _create_transforms  # noqa: E402

_COMMON = """
    Args:
        pretrained: load the released weights (downloaded, SHA1-verified and converted once; CC BY-NC 4.0).
        dataset: pretraining data of the weights: ``"kinetics"`` (Kinetics-400) or ``"audioset"`` (AudioSet-2M).
        **kwargs: passed to ``avidzoo.create_model``: ``modalities=("video",)`` builds and loads one tower,
            ``num_classes=K`` adds a new classifier on the video features, ``device``, ``cache_dir``.

    Returns an ``avidzoo.AVIDModel``: ``encode_video((B, 3, T, H, W)) -> (B, 512)``,
    ``encode_audio((B, 1, 200, 257)) -> (B, 512)``; ``project=True`` gives the 128-d pretraining embeddings.
    Preprocessing: ``torch.hub.load(..., "transforms", name)`` or ``avidzoo.create_transforms(model)``.
"""

_UNRELEASED = """
    Same architecture as Cross-AVID (R(2+1)D-18 video, 9-layer 2D-CNN audio, 512-512-128 heads); only the
    training objective differs. No weights were ever released: ``pretrained=True`` raises an error. Train it with
    ``avidzoo.train`` or load your own with ``avidzoo.from_pretrained``. ``**kwargs`` go to ``avidzoo.create_model``
    (``video_depth=10|18|34``, ``modalities``, ``num_classes``).
"""


def _released(model: str, pretrained: bool, dataset: str, kwargs: dict):
    return _create_model(f"{model}.{dataset}", pretrained=pretrained, **kwargs)


def cross_avid_r2plus1d(pretrained: bool = True, dataset: str = "audioset", **kwargs):
    return _released("cross_avid_r2plus1d", pretrained, dataset, kwargs)


def avid_cma_r2plus1d(pretrained: bool = True, dataset: str = "audioset", **kwargs):
    return _released("avid_cma_r2plus1d", pretrained, dataset, kwargs)


def self_avid_r2plus1d(pretrained: bool = False, **kwargs):
    return _create_model("self_avid_r2plus1d", pretrained=pretrained, **kwargs)


def joint_avid_r2plus1d(pretrained: bool = False, **kwargs):
    return _create_model("joint_avid_r2plus1d", pretrained=pretrained, **kwargs)


def robust_xid_r2plus1d(pretrained: bool = False, **kwargs):
    return _create_model("robust_xid_r2plus1d", pretrained=pretrained, **kwargs)


_SIBLING = """
    Args:
        pretrained: load the released weights from their authors' URLs (no full hash is published: the first
            download's SHA-256 is recorded and later copies must match it; XDC's name prefix is checked).
        tag: which weights (``avidzoo list {model}`` shows them); default {default}.
        **kwargs: passed to ``avidzoo.create_model`` (``modalities``, ``num_classes``, ``device``, ``cache_dir``).

    Returns an ``avidzoo.AVIDModel`` with the weights' own preprocessing in its config
    (``avidzoo.create_transforms(model)``). License: {license}.
"""


def crisscross_r2plus1d(pretrained: bool = True, tag: str = "audioset2m", **kwargs):
    return _create_model(f"crisscross_r2plus1d.{tag}", pretrained=pretrained, **kwargs)


def gdt_r2plus1d(pretrained: bool = True, tag: str = "ig65m", **kwargs):
    return _create_model(f"gdt_r2plus1d.{tag}", pretrained=pretrained, **kwargs)


def xdc_r2plus1d(pretrained: bool = True, tag: str = "ig65m_kinetics", **kwargs):
    return _create_model(f"xdc_r2plus1d.{tag}", pretrained=pretrained, **kwargs)


def transforms(name: str = "cross_avid_r2plus1d"):
    """Preprocessing bound to a model's weights: an object with ``.video`` (frames ``(T, H, W, 3)`` uint8 ->
    ``(3, T, 224, 224)``) and ``.audio`` (waveform ``(C, N)`` at 24 kHz -> ``(1, 200, 257)``) callables."""
    return _create_transforms(name)


cross_avid_r2plus1d.__doc__ = "Cross-AVID (CVPR 2021), R(2+1)D-18 video and 2D-CNN audio encoders.\n" + _COMMON
avid_cma_r2plus1d.__doc__ = "AVID-CMA (CVPR 2021): Cross-AVID refined with cross-modal agreement.\n" + _COMMON
self_avid_r2plus1d.__doc__ = "Self-AVID: within-modal instance discrimination.\n" + _UNRELEASED
joint_avid_r2plus1d.__doc__ = "Joint-AVID: cross- plus within-modal instance discrimination.\n" + _UNRELEASED
robust_xid_r2plus1d.__doc__ = "Robust-xID (CVPR 2021; method reconstructed, no official code).\n" + _UNRELEASED
crisscross_r2plus1d.__doc__ = ("CrissCross (AAAI 2023): AVID's R(2+1)D-18 (average pool) and an audio ResNet-18 on "
                               "log-mel.\n" + _SIBLING.format(model="crisscross_r2plus1d", default="audioset2m",
                                                              license="CC BY-NC 4.0"))
gdt_r2plus1d.__doc__ = ("GDT (ICCV 2021): torchvision's r2plus1d_18 and an audio ResNet-9 on log filterbanks "
                        "(ht100m: video only).\n" + _SIBLING.format(
                            model="gdt_r2plus1d", default="ig65m",
                            license="non-commercial (CC BY-NC 4.0 per its README)"))
xdc_r2plus1d.__doc__ = ("XDC (NeurIPS 2020): VMZ-exact R(2+1)D-18, video only.\n"
                        + _SIBLING.format(model="xdc_r2plus1d", default="ig65m_kinetics", license="MIT"))
