"""Public entry points: list, create and load models; bind transforms to weights."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from . import hub
from .config import MODALITIES, config_from_state, model_config, no_weights_error, normalize_modalities, resolve_weights
from .convert import guess_layout, read_original_checkpoint, select_towers
from .errors import CheckpointError, WeightsNotFoundError
from .manifest import get_manifest
from .models.avid import AVIDModel
from .serialization import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    read_config_file,
    read_pretrained_dir,
    read_safetensors,
    read_safetensors_config,
)
from .transforms import Transforms, VideoTransform, audio_transform

__all__ = ["list_models", "create_model", "from_pretrained", "read_config", "create_transforms", "resolve_weights"]

_ORIGINAL_SUFFIXES = (".pth", ".pt", ".tar", ".ckpt", ".bin")

log = logging.getLogger("avidzoo")


def list_models(filter: str = "*", pretrained: bool = False) -> list[str]:
    """Model names (``pretrained=False``) or weight names ``model.tag`` (``pretrained=True``) matching ``filter``.

    ``filter`` is an fnmatch pattern; a plain word matches as a substring (``list_models("cma")``).
    """
    return get_manifest().list_models(filter, pretrained)


def create_model(
    name: str,
    pretrained: bool = False,
    *,
    num_classes: int | None = None,
    label_names: Sequence[str] | None = None,
    modalities: str | Sequence[str] = MODALITIES,
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    progress: bool | None = None,
    video_depth: int | None = None,
    proj_dims: Sequence[int] | None | str = "default",
) -> AVIDModel:
    """Build a model by registry name, optionally with its pretrained weights.

    Args:
        name: ``model`` (e.g. ``cross_avid_r2plus1d``, its default weights), ``model.tag``
            (``cross_avid_r2plus1d.kinetics400``; ``kinetics``/``audioset`` are accepted tags), or a source that
            :func:`from_pretrained` understands (``hf-hub:``, ``local-dir:``, a path), which implies pretrained.
        pretrained: load the weights (fetched, verified, converted and cached on first use).
        num_classes: attach a new Dropout(0.5) + Linear video classifier with this many classes; the backbone
            still loads strictly.
        label_names: names of the classes, saved with the model.
        modalities: ``("video",)``, ``("audio",)`` or both; only these towers are built and loaded.
        cache_dir: where weights are cached (default ``$AVIDZOO_HOME`` or ``~/.cache/avidzoo``).
        device: move the model there (loading always happens on the CPU first).
        video_depth, proj_dims: architecture overrides for untrained models (depth 10/18/34; heads, ``None`` for none).

    Pretrained models are returned in eval mode; untrained ones in train mode.
    """
    if _is_source(name):
        return from_pretrained(name, num_classes=num_classes, label_names=label_names, modalities=modalities,
                               cache_dir=cache_dir, device=device, progress=progress)
    model_spec, weight_spec = get_manifest().resolve(name)
    if pretrained:
        if weight_spec is None:
            raise no_weights_error(model_spec)
        if video_depth is not None or proj_dims != "default":
            raise ValueError("video_depth and proj_dims are fixed by pretrained weights")
        every = list(normalize_modalities(modalities)) == list(MODALITIES)  # the default: every tower it has
        config, state = hub.load_weights(weight_spec, lambda: model_config(model_spec, weight_spec),
                                         towers=None if every else normalize_modalities(modalities),
                                         cache_dir_=cache_dir, progress=progress)
        return build_model(config, state, modalities=None if every else modalities, num_classes=num_classes,
                           label_names=label_names, device=device)
    config = model_config(model_spec, weight_spec, modalities=modalities, video_depth=video_depth, proj_dims=proj_dims)
    config["weights"] = None  # architecture and preprocessing of the named weights, random initialisation
    config.pop("source", None)
    config.pop("metrics", None)
    model = AVIDModel(config)
    if num_classes:
        model.reset_classifier(num_classes, label_names)
    return model.to(device) if device is not None else model


def from_pretrained(
    name_or_path: str | os.PathLike,
    *,
    num_classes: int | None = None,
    label_names: Sequence[str] | None = None,
    modalities: str | Sequence[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    progress: bool | None = None,
    release: str | None = None,
) -> AVIDModel:
    """Load a model with weights from any source.

    ``name_or_path`` is one of: a registry name or alias (see :func:`create_model`); ``hf-hub:org/repo[@revision]``;
    ``local-dir:PATH`` or a directory written by ``save_pretrained`` (or a training run folder, for its latest model);
    a ``.safetensors`` file; an original release file of any registry weight (AVID's ``.pth.tar``, CrissCross's
    ``.pth.tar.zip`` or the ``.pth.tar`` inside it, GDT's and XDC's ``.pth``), read with ``weights_only=True``.
    ``modalities=None`` keeps every tower the source has. The model is returned in eval mode.

    A release file is read as the weight ``release`` names (``"gdt_r2plus1d.ig65m"``: its layout, architecture and
    preprocessing), else as the weight whose release file has this name, else by the layout its contents show (with
    the preprocessing of that method's default weights, and a warning saying so).
    """
    name = os.fspath(name_or_path)
    kind, where = _locate(name, cache_dir)
    if kind == "registry":
        return create_model(name, pretrained=True, modalities=modalities or MODALITIES, cache_dir=cache_dir,
                            progress=progress, num_classes=num_classes, label_names=label_names, device=device)
    if kind == "dir":
        config, state = read_pretrained_dir(where)
    elif kind == "safetensors":
        config, state = read_safetensors(where)
        config = config or _headerless_config(where, state)
    else:
        config, state = _read_release_file(where, release, modalities)
    return build_model(config, state, num_classes=num_classes, label_names=label_names, modalities=modalities,
                       device=device)


def _read_release_file(path: Path, release: str | None, modalities: str | Sequence[str] | None
                       ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(config, state)`` of an original release file given by path (see :func:`from_pretrained`)."""
    manifest = get_manifest()
    towers = normalize_modalities(modalities) if modalities is not None else None
    if release is not None:
        spec, make_config = resolve_weights(release)
        found = manifest.release_file(path.name)
        file = found[1] if found and found[0].name == spec.name else None
        if file is None and len(spec.files) > 1:  # a per-tower release: the file's contents say which tower
            tower = (guess_layout(path) or (None, None))[1]
            file = next((f for f in spec.files if f.tower == tower), None)
        return hub.load_release_file(path, spec, file, towers)
    if (found := manifest.release_file(path.name)) is not None:
        return hub.load_release_file(path, *found, towers)
    try:
        state = read_original_checkpoint(path)
        return config_from_state(state), state
    except CheckpointError as not_avid:
        guess = guess_layout(path)
        spec = manifest.default_weight(guess[0]) if guess else None
        if spec is None:
            raise CheckpointError(f"{not_avid}; nor a release file of CrissCross, GDT or XDC (pass release= to "
                                  "name the weights it is)") from None
    file = next((f for f in spec.files if f.tower == guess[1]), None) if len(spec.files) > 1 else None
    log.warning("%s: read as a %s release file (its contents show that layout) with the preprocessing of %s; pass "
                "release='<weights name>' to say which weights it is", path, guess[0], spec.name)
    return hub.load_release_file(path, spec, file, towers)


def read_config(name_or_path: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The config (architecture, preprocessing, labels) of any source :func:`from_pretrained` accepts, reading no
    weights where the source allows: registry names, folders and ``hf-hub:`` repos (``config.json`` only) and
    ``.safetensors`` files (their header). An original ``.pth.tar`` has no config; its tensors are read to infer one."""
    name = os.fspath(name_or_path)
    kind, where = _locate(name, cache_dir, weights=False)
    if kind == "registry":
        model_spec, weight_spec = get_manifest().resolve(name)
        return model_config(model_spec, weight_spec)
    if kind == "dir":
        return read_config_file(where)
    if kind == "safetensors":
        return read_safetensors_config(where) or _headerless_config(where, read_safetensors(where)[1])
    return config_from_state(read_original_checkpoint(where))


def _headerless_config(path: Path, state: dict[str, torch.Tensor]) -> dict[str, Any]:
    # A foreign safetensors file says nothing of its preprocessing: say what is assumed rather than assume silently.
    log.warning("%s carries no avidzoo config in its header; assuming the architecture its tensors show and the "
                "original AVID preprocessing (16 fps, 224 crop; 24 kHz log-spectrograms). Save models with "
                "save_pretrained to keep their config with them.", path)
    return config_from_state(state)


def _locate(name: str, cache_dir: str | os.PathLike | None, *, weights: bool = True) -> tuple[str, Path | None]:
    """What kind of source ``name`` is and where its files are: ``("dir", folder)`` (``save_pretrained`` layout,
    ``hf-hub:`` fetched into the HF cache: only its config unless ``weights``), ``("safetensors", file)``,
    ``("original", file)``, or ``("registry", None)``."""
    if name.startswith("hf-hub:"):
        return "dir", hub.hf_hub_folder(name[len("hf-hub:"):], cache_dir_=cache_dir, weights=weights)
    path = Path(name[len("local-dir:"):] if name.startswith("local-dir:") else name).expanduser()
    if path.is_dir():
        if not (path / WEIGHTS_FILE).exists() and (path / "model" / CONFIG_FILE).exists():
            path = path / "model"  # a training run folder: its latest model
        return "dir", path
    if path.is_file():
        return ("safetensors" if path.suffix == ".safetensors" else "original"), path
    if name.startswith("local-dir:") or _looks_like_path(name):
        hint = ""
        if re.fullmatch(r"[\w.-]+/[\w.-]+(@[\w./-]+)?", name):
            hint = f"; for a Hugging Face Hub repo, write 'hf-hub:{name}'"
        raise WeightsNotFoundError(f"{name}: no such file or directory{hint}")
    return "registry", None


def build_model(
    config: dict[str, Any],
    state: dict[str, torch.Tensor],
    *,
    modalities: str | Sequence[str] | None = None,
    num_classes: int | None = None,
    label_names: Sequence[str] | None = None,
    device: str | torch.device | None = None,
) -> AVIDModel:
    """An :class:`AVIDModel` for ``config`` with ``state`` loaded strictly (a newly requested head excepted)."""
    config = dict(config)
    available = normalize_modalities(config.get("modalities") or MODALITIES)
    mods = normalize_modalities(modalities) if modalities is not None else available
    missing_towers = [m for m in mods if m not in available]
    if missing_towers:
        raise ValueError(f"these weights have no {' or '.join(missing_towers)} tower (they have {available})")
    config["modalities"] = mods
    state = select_towers(state, mods)
    new_head = num_classes is not None and num_classes != config.get("num_classes")
    if new_head:
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        config.update(num_classes=num_classes or None, label_names=None)
    if label_names is not None:
        config["label_names"] = list(label_names)
    model = AVIDModel(config)
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not (new_head and k.startswith("classifier."))]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"weights do not fit the {config.get('model') or 'AVID'} architecture: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {result.unexpected_keys[:5]}{'...' if len(result.unexpected_keys) > 5 else ''}"
        )
    model.eval()
    return model.to(device) if device is not None else model


def _is_source(name: str) -> bool:
    return name.startswith(("hf-hub:", "local-dir:")) or _looks_like_path(name)


def _looks_like_path(name: str) -> bool:
    return os.sep in name or name.startswith((".", "~")) or name.endswith((".safetensors", *_ORIGINAL_SUFFIXES)) \
        or Path(name).exists()


def create_transforms(name_or_model: Any, *, train: bool = False) -> Transforms:
    """Preprocessing bound to a model's weights: a registry name, a source ``from_pretrained`` accepts, or a model.

    ``train=True`` gives the pretraining augmentations (random crop, flip, colour jitter; volume gain) instead of
    the deterministic evaluation transforms."""
    config = name_or_model.config if isinstance(name_or_model, AVIDModel) else read_config(name_or_model)
    pre = config["preprocessing"]
    mods = config.get("modalities") or ["video", "audio"]
    return Transforms(
        video=VideoTransform(pre["video"], train=train) if "video" in mods else None,
        audio=audio_transform(pre["audio"], train=train) if "audio" in mods else None,
        config=pre,
    )
