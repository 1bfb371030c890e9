"""Model configs: the plain dict an :class:`AVIDModel` is built from and that ``save_pretrained`` writes."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .convert import infer_architecture
from .errors import NoPretrainedWeightsError
from .manifest import ModelSpec, WeightSpec, get_manifest
from .models.avid import MODALITIES


def normalize_modalities(modalities: str | Sequence[str]) -> list[str]:
    mods = [modalities] if isinstance(modalities, str) else list(modalities)
    bad = [m for m in mods if m not in MODALITIES]
    if bad or not mods:
        raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got {tuple(mods)}")
    return [m for m in MODALITIES if m in mods]


def config_dict(
    *,
    modalities: list[str],
    video: dict[str, Any],
    audio: dict[str, Any],
    proj_dims: list[int] | None,
    preprocessing: dict[str, Any],
    model: str | None = None,
    architecture: str | None = None,
    method: str | None = None,
    weights: str | None = None,
    num_classes: int | None = None,
    license: str | None = None,
) -> dict[str, Any]:
    """The one schema of a model config (what ``config.json`` holds and :class:`AVIDModel` is built from):
    provenance (``model``, ``architecture``, ``method``, ``weights``, ``license``), the graph (``modalities``,
    ``video``, ``audio``, ``proj_dims``, ``num_classes``, ``label_names``, ``dropout``) and ``preprocessing``."""
    return {
        "model": model, "architecture": architecture, "method": method, "weights": weights,
        "modalities": modalities, "video": video, "audio": audio, "proj_dims": proj_dims,
        "num_classes": num_classes, "label_names": None, "dropout": 0.5,
        "preprocessing": preprocessing, "license": license,
    }


def model_config(
    model: ModelSpec,
    weights: WeightSpec | None,
    *,
    modalities: str | Sequence[str] = MODALITIES,
    video_depth: int | None = None,
    proj_dims: Sequence[int] | None | str = "default",
) -> dict[str, Any]:
    """The config of ``model`` (with ``weights``' provenance and preprocessing when given)."""
    arch = model.arch
    towers = [m for m in MODALITIES if arch.get(m)]  # XDC's architecture has no audio network
    if weights is not None and weights.modalities:  # GDT's video-text weights: a video tower only
        towers = [m for m in towers if m in weights.modalities]
    requested = normalize_modalities(modalities)
    absent = [m for m in requested if m not in towers]
    if absent and requested != list(MODALITIES):  # the default asks for "every tower there is"
        what = weights.name if weights is not None else model.name
        raise ValueError(f"{what} has no {' or '.join(absent)} tower (it has {', '.join(towers)})")
    mods = [m for m in requested if m in towers]
    video = dict(arch.get("video") or {})
    if video_depth is not None:  # untrained models only: create_model refuses overrides with pretrained weights
        video["depth"] = int(video_depth)
    cfg = config_dict(
        model=model.name, architecture=model.architecture, method=model.method,
        weights=weights.name if weights else None, modalities=mods, video=video, audio=dict(arch.get("audio") or {}),
        proj_dims=(list(arch["proj_dims"]) if arch.get("proj_dims") else None) if proj_dims == "default" else (
            list(proj_dims) if proj_dims else None),
        preprocessing=copy.deepcopy(dict(weights.preprocessing)) if weights else default_preprocessing(
            model.arch.get("preprocessing", "avid_original")),
        license=weights.license if weights else None,
    )
    if weights is not None:
        cfg["metrics"] = dict(weights.metrics)
        cfg["source"] = {"file_name": weights.file_name, "hashes": dict(weights.hashes), "format": weights.format}
    return cfg


def default_preprocessing(preset: str = "avid_original") -> dict[str, Any]:
    """A preprocessing preset of the manifest, for models without weights of their own: by default the released
    AVID weights' (``avid_original``); an architecture may name its own (the siblings')."""
    return copy.deepcopy(get_manifest().data["preprocessing"][preset])


def config_from_state(state: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """A config for a state dict of unknown provenance (an original ``.pth.tar`` given by path)."""
    arch = infer_architecture(state)
    mods = [m for m in MODALITIES if arch[m]]
    cfg = config_dict(
        modalities=mods, video=arch["video"] or {"arch": "r2plus1d", "depth": 18},
        audio=arch["audio"] or {"arch": "conv2d", "depth": 10}, proj_dims=arch["proj_dims"],
        num_classes=arch.get("num_classes"), preprocessing=default_preprocessing(),
    )
    cfg.update(extra)
    return cfg


def resolve_weights(name: str) -> tuple[WeightSpec, Callable[[], dict[str, Any]]]:
    """The weight spec a registry name points to, and a function building its full config."""
    model_spec, weight_spec = get_manifest().resolve(name)
    if weight_spec is None:
        raise no_weights_error(model_spec)
    return weight_spec, lambda: model_config(model_spec, weight_spec)


def weights_protocol(model: Any) -> str:
    """The protocol behind the published numbers of a model's registry weights (``protocol`` in the manifest:
    ``avid``, ``crisscross/<variant>``, ...), from a registry name or a model whose config names its weights;
    ``avid`` for anything else (a local folder, a path, a model without released weights)."""
    config = getattr(model, "config", None)
    name = config.get("weights") if isinstance(config, Mapping) else model
    try:
        return resolve_weights(str(name))[0].protocol
    except Exception:  # not a registry name: no published numbers to follow
        return "avid"


def no_weights_error(model: ModelSpec) -> NoPretrainedWeightsError:
    """The error for a model that never had weights released, listing the ones that were and what to do instead."""
    title = model.method_info.get("title", model.method)
    released = ", ".join(get_manifest().list_models("*", True))
    return NoPretrainedWeightsError(
        f"no pretrained weights were ever released for {model.name} ({title}); the released ones are: {released}. "
        f"Train it with avidzoo.train, or load weights you have with from_pretrained('local-dir:DIR'), "
        f"from_pretrained('hf-hub:ORG/REPO') or from_pretrained(PATH). create_model({model.name!r}) builds it "
        "untrained."
    )
