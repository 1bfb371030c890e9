"""Read ``weights_manifest.json``: the one description of every model and weight.

The bundled manifest ships inside the package (a source checkout reads the top-level file). Extra manifest files
named in ``AVIDZOO_MANIFEST`` (``os.pathsep``-separated) are overlaid on it, entry by entry, so that private or
mirrored weights get the same verified, cached loading as the released ones.
"""

from __future__ import annotations

import copy
import difflib
import fnmatch
import functools
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UnknownModelError

__all__ = ["Manifest", "ModelSpec", "WeightSpec", "FileSpec", "get_manifest"]

MANIFEST_FILE = "weights_manifest.json"
_SECTIONS = ("architectures", "methods", "models", "tag_aliases", "preprocessing", "protocols", "recipes", "weights")


@dataclass(frozen=True)
class ModelSpec:
    """A named model: an architecture trained (or to be trained) with one method."""

    name: str
    architecture: str
    method: str
    default_tag: str | None
    arch: Mapping[str, Any]
    method_info: Mapping[str, Any]
    tags: tuple[str, ...]


@dataclass(frozen=True)
class FileSpec:
    """One released file: its name, where it is served, and what it must hash to. ``hashes`` are published full
    digests (``sha1``, ``sha256``; empty when the authors published none), ``sha256_prefix`` the leading hex digits a
    file name carries (XDC's, as torch.hub checks them); ``tower`` names the modality a per-tower file holds."""

    file_name: str
    sources: tuple[Any, ...]
    hashes: Mapping[str, str]
    size_bytes: int | None = None
    sha256_prefix: str | None = None
    tower: str | None = None

    @property
    def published(self) -> bool:
        """Whether a full digest was published (else the first download's SHA-256 is recorded and trusted)."""
        return bool(self.hashes)


@dataclass(frozen=True)
class WeightSpec:
    """One set of weights (one file, or one per tower) and everything known about it (``name`` is ``model.tag``)."""

    name: str
    model: str
    tag: str
    format: str
    files: tuple[FileSpec, ...]
    license: str
    preprocessing: Mapping[str, Any]
    metrics: Mapping[str, float]
    protocol: str = "avid"  # the finetuning protocol behind ``metrics`` (family[/variant], manifest protocols.finetune)
    description: str = ""
    pretrain_data: str = ""
    hash_provenance: str = ""
    origin_url: str = ""
    training_config: str = ""
    modalities: tuple[str, ...] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def file_name(self) -> str:
        return " + ".join(f.file_name for f in self.files)

    @property
    def hashes(self) -> dict[str, Any]:
        """The published digests: ``{"sha1": ...}`` for one file, ``{file_name: {...}}`` for per-tower files."""
        if len(self.files) == 1:
            return dict(self.files[0].hashes)
        return {f.file_name: dict(f.hashes) for f in self.files}

    @property
    def size_bytes(self) -> int | None:
        sizes = [f.size_bytes for f in self.files]
        return None if None in sizes else sum(sizes)  # type: ignore[arg-type]


def _natural_key(s: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _bundled_path() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / MANIFEST_FILE, here.parent / MANIFEST_FILE):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{MANIFEST_FILE} is neither in {here} nor in {here.parent}; the installation is broken")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read manifest {path}: {e}") from e
    if not isinstance(data, dict) or data.get("schema_version") != 1:
        raise ValueError(f"manifest {path}: expected a JSON object with schema_version 1")
    return data


class Manifest:
    """Typed, read-only access to the merged manifest data."""

    def __init__(self, data: Mapping[str, Any], paths: tuple[Path, ...] = ()) -> None:
        self.data = data
        self.paths = paths
        self._check()

    @classmethod
    def load(cls, extra: str | None = None) -> Manifest:
        base = _bundled_path()
        merged = _read_json(base)
        paths = [base]
        for item in filter(None, (extra or "").split(os.pathsep)):
            path = Path(item).expanduser()
            overlay = _read_json(path)
            for section in _SECTIONS:
                merged.setdefault(section, {}).update(overlay.get(section, {}))
            paths.append(path)
        return cls(merged, tuple(paths))

    def _check(self) -> None:
        d = self.data
        for name, m in d["models"].items():
            for key in ("architecture", "method"):
                table = "architectures" if key == "architecture" else "methods"
                if m[key] not in d[table]:
                    raise ValueError(f"manifest: model {name!r} names unknown {key} {m[key]!r}")
        for name, pre in d["preprocessing"].items():
            # how the weights' frames were converted from YUV is part of their input (avidzoo.io.colour): no default
            if pre.get("video") and "colour" not in pre["video"]:
                raise ValueError(f"manifest: preprocessing {name!r} does not say which colour rule its video takes "
                                 "(colour: 'bt601' or 'tagged')")
        for name, w in d["weights"].items():
            model, _, tag = name.partition(".")
            if model not in d["models"] or not tag:
                raise ValueError(f"manifest: weight {name!r} must be named '<model>.<tag>' with a known model")
            if w["preprocessing"] not in d["preprocessing"]:
                raise ValueError(f"manifest: weight {name!r} names unknown preprocessing {w['preprocessing']!r}")
            for f in w.get("files") or [w]:
                if not f.get("hashes") and not f.get("sha256_prefix") and "none published" not in w.get(
                        "hash_provenance", ""):
                    raise ValueError(f"manifest: weight {name!r} has no expected hash and does not say that none "
                                     "was published (hash_provenance)")

    # -- lookups -------------------------------------------------------------------------------------------------
    def model(self, name: str) -> ModelSpec:
        d = self.data
        if name not in d["models"]:
            raise self._unknown(name)
        m = d["models"][name]
        tags = tuple(sorted(w.partition(".")[2] for w in d["weights"] if w.partition(".")[0] == name))
        return ModelSpec(
            name=name,
            architecture=m["architecture"],
            method=m["method"],
            default_tag=m.get("default_tag"),
            arch=copy.deepcopy(d["architectures"][m["architecture"]]),
            method_info=copy.deepcopy(d["methods"][m["method"]]),
            tags=tags,
        )

    def weight(self, name: str) -> WeightSpec:
        if name not in self.data["weights"]:
            raise self._unknown(name)
        w = copy.deepcopy(self.data["weights"][name])
        model, _, tag = name.partition(".")
        file_fields = set(FileSpec.__dataclass_fields__)
        files = w.pop("files", None) or [{k: w.pop(k) for k in list(w) if k in file_fields}]
        known = {f for f in WeightSpec.__dataclass_fields__ if f not in ("name", "model", "tag", "extra", "files")}
        kwargs = {k: w.pop(k) for k in list(w) if k in known}
        kwargs["preprocessing"] = copy.deepcopy(self.data["preprocessing"][kwargs["preprocessing"]])
        if kwargs.get("modalities"):
            kwargs["modalities"] = tuple(kwargs["modalities"])
        specs = tuple(FileSpec(**{**f, "sources": tuple(f.get("sources", ()))}) for f in files)
        return WeightSpec(name=name, model=model, tag=tag, files=specs, extra=w, **kwargs)

    def resolve(self, name: str) -> tuple[ModelSpec, WeightSpec | None]:
        """``model`` (its default weights, if any) or ``model.tag`` (a tag alias like ``kinetics`` is accepted)."""
        model_name, _, tag = name.strip().partition(".")
        spec = self.model(model_name)
        if not tag:
            return spec, self.weight(f"{model_name}.{spec.default_tag}") if spec.default_tag else None
        tag = self.data["tag_aliases"].get(tag, tag)
        full = f"{model_name}.{tag}"
        if full not in self.data["weights"]:
            known = ", ".join(spec.tags) or "none: no weights were released for it"
            raise UnknownModelError(f"model {model_name!r} has no weights tagged {tag!r}; its tags: {known}")
        return spec, self.weight(full)

    def release_file(self, file_name: str) -> tuple[WeightSpec, FileSpec] | None:
        """The weight and file a released file's name belongs to (the name as released, or a zipped release's
        member, CrissCross's ``.pth.tar`` without ``.zip``); ``None`` for a name no release has."""
        for name in self.data["weights"]:
            spec = self.weight(name)
            for f in spec.files:
                if file_name in (f.file_name, f.file_name.removesuffix(".zip")):
                    return spec, f
        return None

    def default_weight(self, fmt: str) -> WeightSpec | None:
        """The default weights of the first model whose default weights are released in ``fmt``."""
        for model in self.data["models"]:
            spec = self.model(model)
            if spec.default_tag and (w := self.weight(f"{model}.{spec.default_tag}")).format == fmt:
                return w
        return None

    def list_models(self, filter: str = "*", pretrained: bool = False) -> list[str]:
        names = list(self.data["weights"]) if pretrained else list(self.data["models"])
        pattern = filter if any(c in filter for c in "*?[") else f"*{filter}*"
        return sorted((n for n in names if fnmatch.fnmatchcase(n, pattern)), key=_natural_key)

    def _unknown(self, name: str) -> UnknownModelError:
        names = list(self.data["models"]) + list(self.data["weights"])
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        return UnknownModelError(
            f"unknown model or weights {name!r}.{hint} `avidzoo list` shows them all; local files load with "
            "from_pretrained('local-dir:PATH'), a path, or 'hf-hub:ORG/REPO'."
        )


@functools.lru_cache(maxsize=8)
def _cached(extra: str) -> Manifest:
    return Manifest.load(extra)


def get_manifest() -> Manifest:
    """The bundled manifest with ``AVIDZOO_MANIFEST`` overlays applied (cached per value of that variable)."""
    return _cached(os.environ.get("AVIDZOO_MANIFEST", ""))
