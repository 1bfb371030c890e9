"""Read released checkpoints and map them to avidzoo's module names (``format`` in the manifest).

* ``avid_original``: PyTorch 1.4 training checkpoints (legacy, non-zip serialisation, tensors saved from CUDA):
  ``{"epoch", "model", "optimizer", "train_criterion"}``, where ``model`` is the state dict of a
  DistributedDataParallel-wrapped ``AV_Wrapper`` (keys start with ``module.``). Only ``model`` is kept.
* ``crisscross``: one ``.pth.tar.zip`` per tower, a zip around a flat state dict (or a torch zip file renamed);
  video keys are AVID's, audio keys a ResNet-18's with the stem in ``conv1.{0,1}`` and stages ``block1..4``.
* ``gdt``: a training checkpoint ``{"model", "optimizer", "lr_scheduler", "epoch", "args"}`` whose ``args`` is an
  ``argparse.Namespace`` and whose ``lr_scheduler`` (with warm-up) holds the pickled ``MultiStepLR`` or
  ``CosineAnnealingLR`` object and its ``SGD``: those classes (and the ``defaultdict`` / ``Counter`` in them) are
  read as inert stand-ins that keep their state as plain data and run none of their code, then dropped; any other
  class is refused. ``video_network.base.*`` (torchvision names),
  ``audio_network.base.*`` (a ResNet-9 with an unused ``fc``), MLP heads ``mlp_v``/``mlp_a`` (dropped: GDT's heads are
  not AVID's) and, for the video-text model, ``text_network.*`` (dropped).
* ``xdc``: a flat state dict with torchvision names, no ``fc``, maybe no ``num_batches_tracked``.
"""

from __future__ import annotations

import argparse
import io
import os
import pickle
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError
from .models.video import VIDEO_STAGE_BLOCKS

__all__ = ["read_original_checkpoint", "map_original_keys", "infer_architecture", "read_release", "complete_state",
           "gdt_audio_settings", "guess_layout"]

# Original AV_Wrapper prefix -> avidzoo AVIDModel prefix.
KEY_MAP = {
    "video_model.": "video_encoder.",
    "audio_model.": "audio_encoder.",
    "video_proj.projection.": "video_head.",
    "audio_proj.projection.": "audio_head.",
}
_TOWER = {"video_encoder.": "video", "video_head.": "video", "audio_encoder.": "audio", "audio_head.": "audio"}


class InertObject:
    """Stands in for a training object pickled beside the weights (an LR scheduler, an optimizer): the weights-only
    unpickler builds this instead of the real class, with the pickled state kept as plain data (``state``) and none
    of the class's code run."""

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"InertObject({self.state!r})"


def _inert_mapping(*args: Any) -> dict:
    """Stands in for ``collections.defaultdict(factory)`` and ``Counter(mapping)``: a plain dict (the unpickler then
    fills a defaultdict's items into it); the factory is never called."""
    return dict(args[0]) if args and isinstance(args[0], Mapping) else {}


# What GDT's save path pickles besides tensors and its Namespace: its warm-up scheduler's state dict holds the torch
# scheduler it hands over to (multi-step or cosine), which holds the SGD optimizer (its defaults, a defaultdict of
# per-parameter state, the param groups). Read as inert stand-ins under their pickled names.
TRAINING_STAND_INS: tuple[tuple[Any, str], ...] = (
    *((InertObject, f"torch.optim.lr_scheduler.{name}") for name in ("MultiStepLR", "CosineAnnealingLR", "StepLR")),
    (InertObject, "torch.optim.sgd.SGD"),
    (_inert_mapping, "collections.defaultdict"),
    (_inert_mapping, "collections.Counter"),
    (dict, "builtins.dict"),  # a defaultdict's factory, passed to the stand-in, never called
)


def torch_load_safely(path: str | os.PathLike, *, allow: tuple[Any, ...] = (), data: bytes | None = None) -> Any:
    """``torch.load(weights_only=True, map_location="cpu")`` with errors that name the file and the fix. ``allow``
    adds classes the weights-only unpickler may build (GDT's ``argparse.Namespace``, nothing that runs code) and
    ``(stand_in, "module.Name")`` pairs that it builds in place of the named global (:data:`TRAINING_STAND_INS`);
    ``data`` reads these bytes instead of the file (a member of a zip)."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(io.BytesIO(data) if data is not None else path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "unsupported global" in str(e).lower():  # also "unsupported GLOBAL ... whose module ... is blocked"
            raise CheckpointError(
                f"{path}: holds Python objects other than tensors and plain containers; avidzoo never unpickles "
                "such files. If you wrote it yourself, re-save only its state dict."
            ) from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({e}); it is corrupt or truncated") from None
    except (EOFError, zipfile.BadZipFile, RuntimeError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, OSError, UnicodeDecodeError, MemoryError) as e:
        reason = f"{type(e).__name__}: {e}".strip().rstrip(":")
        if isinstance(e, EOFError):
            reason = "the file ends early"
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({reason[:300]}); it is corrupt or truncated; "
            "delete it and fetch it again"
        ) from None


def read_original_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ``model`` state dict of an original checkpoint, keys mapped to avidzoo names (all towers present).

    Also accepts a bare state dict or ``{"state_dict": ...}``, with or without the ``module.`` prefix.
    """
    obj = torch_load_safely(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        state = obj["model"]
    elif isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        state = obj["state_dict"]
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj
    else:
        keys = list(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"{path}: no 'model' state dict in this checkpoint (found {keys})")
    try:
        return map_original_keys(state)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None


def map_original_keys(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Strip one leading ``module.`` and rename the AV_Wrapper prefixes (``video_model.`` -> ``video_encoder.``...)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"state dict entry {key!r} is a {type(value).__name__}, not a tensor")
        k = key[len("module."):] if key.startswith("module.") else key
        for old, new in KEY_MAP.items():
            if k.startswith(old):
                k = new + k[len(old):]
                break
        else:
            if not k.startswith(tuple(KEY_MAP.values())) and not k.startswith("classifier."):
                raise CheckpointError(f"unexpected key {key!r}: not an AVID audio-visual model state dict")
        out[k] = value.contiguous()
    return out


def select_towers(state: Mapping[str, torch.Tensor], modalities: Iterable[str]) -> dict[str, torch.Tensor]:
    """Keep the encoder and head entries of the given modalities (and any classifier if video is kept)."""
    keep = set(modalities)
    out = {}
    for k, v in state.items():
        default = "video" if k.startswith("classifier.") else None
        tower = next((t for p, t in _TOWER.items() if k.startswith(p)), default)
        if tower in keep:
            out[k] = v
    return out


def infer_architecture(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Towers, video depth and projection dims implied by a (mapped) state dict."""
    arch: dict[str, Any] = {"video": None, "audio": None, "proj_dims": None}
    if any(k.startswith("video_encoder.") for k in state):
        blocks = []
        for stage in ("conv2x", "conv3x", "conv4x", "conv5x"):
            idx = {k.split(".")[2] for k in state if k.startswith(f"video_encoder.{stage}.")}
            blocks.append(sum(i.isdigit() for i in idx) or 1)
        depth = next((d for d, b in VIDEO_STAGE_BLOCKS.items() if tuple(blocks) == b), None)
        if depth is None:
            raise CheckpointError(f"video encoder with {blocks} blocks per stage matches no R(2+1)D depth")
        arch["video"] = {"arch": "r2plus1d", "depth": depth}
    if any(k.startswith("audio_encoder.") for k in state):
        arch["audio"] = {"arch": "conv2d", "depth": 10}
    for head in ("video_head.", "audio_head."):
        ws = sorted((int(k.split(".")[1]), v) for k, v in state.items() if k.startswith(head) and k.endswith(".weight"))
        if ws:
            arch["proj_dims"] = [int(v.shape[0]) for _, v in ws]
    if "classifier.1.weight" in state:
        arch["num_classes"] = int(state["classifier.1.weight"].shape[0])
    return arch


# -- the siblings' releases -------------------------------------------------------------------------------------------
def _tensor_dict(obj: Any, path: Path, where: str = "") -> dict[str, torch.Tensor]:
    if not (isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values())):
        found = list(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"{path}: expected a state dict of tensors{where}, found {found}")
    return dict(obj)


def _archive_noise(name: str) -> bool:
    """Entries archive tools add beside the real content: macOS resource forks and Finder files, Windows thumbnails."""
    base = name.rsplit("/", 1)[-1]
    return name.startswith("__MACOSX/") or base.startswith("._") or base in (".DS_Store", "Thumbs.db", "desktop.ini")


def _load_zipped(path: Path, allow: tuple[Any, ...] = ()) -> Any:
    """A torch file that may sit inside a plain zip (CrissCross's ``.pth.tar.zip``): a torch zip file (it has a
    ``data.pkl``) loads as it is; a zip holding one ``.pth``/``.pth.tar``/``.pt`` member (besides the entries archive
    tools add, ``__MACOSX/``, ``.DS_Store``) loads that member."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if not n.endswith("/") and not _archive_noise(n)]
            if not any(n.endswith("data.pkl") for n in names):
                members = [n for n in names if n.endswith((".pth", ".pth.tar", ".pt", ".tar"))]
                if len(members) != 1:
                    raise CheckpointError(f"{path}: a zip with {len(names)} files ({names[:5]}), not one checkpoint")
                return torch_load_safely(path, allow=allow, data=z.read(members[0]))
    return torch_load_safely(path, allow=allow)


def guess_layout(path: str | os.PathLike) -> tuple[str, str | None] | None:
    """``(format, tower)`` of a release file from its contents, for a file whose name the manifest does not know:
    AVID's training checkpoint (``module.video_model.*``), GDT's (``video_network.base.*``), a flat state dict with
    torchvision's names (``stem.*``: XDC and its baselines), AVID's ``R2Plus1D`` names (``conv2x.*``: CrissCross's
    video file) or CrissCross's audio ResNet (``block1.*``); ``None`` when it is none of them."""
    path = Path(path)
    obj = _load_zipped(path, allow=(argparse.Namespace, *TRAINING_STAND_INS))
    if isinstance(obj, Mapping) and isinstance(obj.get("model", obj.get("state_dict")), Mapping):
        keys = [k.removeprefix("module.") for k in obj.get("model", obj.get("state_dict"))]
        if any(k.startswith("video_model.") for k in keys):
            return "avid_original", None
        if any(k.startswith("video_network.") for k in keys):
            return "gdt", None
        return None
    if not isinstance(obj, Mapping):
        return None
    keys = list(obj)
    if any(k.startswith("stem.") for k in keys):
        return "xdc", "video"
    if any(k.startswith("conv2x.") for k in keys):
        return "crisscross", "video"
    if any(k.startswith("block1.") for k in keys):
        return "crisscross", "audio"
    return None


_CRISSCROSS_AUDIO = (("conv1.0.", "conv1."), ("conv1.1.", "bn1."), ("block1.", "layer1."), ("block2.", "layer2."),
                     ("block3.", "layer3."), ("block4.", "layer4."))


def _rename(key: str, pairs: Iterable[tuple[str, str]]) -> str:
    for old, new in pairs:
        if key.startswith(old):
            return new + key[len(old):]
    return key


def _read_crisscross(files: list[tuple[Any, Path]]) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for spec, path in files:
        sd = _tensor_dict(_load_zipped(path), path)
        if spec.tower == "video":
            state.update({f"video_encoder.{k}": v for k, v in sd.items()})
        elif spec.tower == "audio":
            state.update({f"audio_encoder.{_rename(k, _CRISSCROSS_AUDIO)}": v for k, v in sd.items()})
        else:
            raise CheckpointError(f"{path}: a CrissCross file must say which tower it holds (video or audio)")
    return state


def _read_gdt(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    obj = torch_load_safely(path, allow=(argparse.Namespace, *TRAINING_STAND_INS))
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a GDT training checkpoint (a dict), found {type(obj).__name__}")
    model = obj.get("model", obj.get("state_dict"))
    sd = _tensor_dict(model, path, " under 'model'")
    args = obj.get("args")
    args = vars(args) if isinstance(args, argparse.Namespace) else dict(args) if isinstance(args, Mapping) else {}
    state: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        k = key.replace("module.", "", 1) if key.startswith("module.") else key
        if k.startswith("video_network.base."):
            state["video_encoder." + k[len("video_network.base."):]] = value
        elif k.startswith("audio_network.base."):
            k = k[len("audio_network.base."):]
            if not k.startswith("fc."):  # an ImageNet-sized classifier the model never used
                state["audio_encoder." + k] = value
        elif not k.startswith(("mlp_v.", "mlp_a.", "mlp_t.", "text_network.")):
            raise CheckpointError(f"{path}: unexpected key {key!r}: not a GDT model state dict")
    return state, {"args": args}


def gdt_audio_settings(args: Mapping[str, Any]) -> dict[str, Any]:
    """The audio preprocessing a GDT checkpoint's ``args`` imply: ``aud_spec_type`` 1 is 40 filters, 2 is 257;
    ``z_normalize``. Empty when the checkpoint carries no args (the manifest's preset then stands)."""
    out: dict[str, Any] = {}
    spec_type = args.get("aud_spec_type")
    if spec_type is not None:
        if int(spec_type) not in (1, 2):
            raise CheckpointError(f"GDT checkpoint: unknown aud_spec_type {spec_type!r} (1: 40 filters, 2: 257)")
        out["n_filters"] = 40 if int(spec_type) == 1 else 257
    if args.get("z_normalize") is not None:
        out["z_normalize"] = bool(args["z_normalize"])
    return out


def read_release(fmt: str, files: list[tuple[Any, Path]]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state, info)`` of a registry weight's original files (``(FileSpec, path)`` pairs) in ``fmt``, keys mapped
    to :class:`~avidzoo.AVIDModel` names; ``info`` holds what else the file says (GDT's ``args``)."""
    if fmt == "avid_original":
        return read_original_checkpoint(files[0][1]), {}
    if fmt == "crisscross":
        return _read_crisscross(files), {}
    if fmt == "gdt":
        return _read_gdt(files[0][1])
    if fmt == "xdc":
        path = files[0][1]
        return {f"video_encoder.{k}": v for k, v in _tensor_dict(torch_load_safely(path), path).items()}, {}
    raise CheckpointError(f"unknown checkpoint format {fmt!r}")


def complete_state(state: dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
                   where: str) -> dict[str, torch.Tensor]:
    """``state`` checked against a model's ``expected`` state dict, strictly: every key present with its shape, none
    extra; the only keys allowed missing are BatchNorm's ``num_batches_tracked`` counters (Caffe2 conversions lack
    them), filled with zeros."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    bad = [k for k in missing if not k.endswith("num_batches_tracked")]
    shapes = [f"{k}: {tuple(state[k].shape)} (expected {tuple(expected[k].shape)})" for k in state
              if k in expected and state[k].shape != expected[k].shape]
    if bad or unexpected or shapes:
        parts = [f"missing {bad[:6]}{' ...' if len(bad) > 6 else ''}" if bad else "",
                 f"unexpected {unexpected[:6]}{' ...' if len(unexpected) > 6 else ''}" if unexpected else "",
                 f"wrong shapes {shapes[:4]}" if shapes else ""]
        raise CheckpointError(f"{where}: does not fit the model: " + "; ".join(p for p in parts if p))
    out = dict(state)
    for k in missing:
        out[k] = torch.zeros(expected[k].shape, dtype=expected[k].dtype)
    return out
