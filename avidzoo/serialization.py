"""avidzoo's own on-disk format: ``config.json`` + ``model.safetensors`` (+ README model card).

The safetensors header also carries the config (metadata key ``avidzoo_config``), so a lone ``.safetensors`` file
is self-describing. ``config.json`` records the sha256 and size of the weights file, which loading verifies.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ._env import hf_endpoint
from ._files import atomic_path, verify_file, write_text_atomic
from ._version import __version__
from .errors import CheckpointError

if TYPE_CHECKING:
    from .models.avid import AVIDModel

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
METADATA_KEY = "avidzoo_config"


def write_safetensors(state: Mapping[str, torch.Tensor], dest: str | os.PathLike, config: Mapping[str, Any]) -> dict:
    """Atomically write ``state`` with ``config`` in the header; returns ``{"sha256", "size"}`` of the file."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    with atomic_path(dest) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", METADATA_KEY: json.dumps(config, sort_keys=True)})
        digests = verify_file(tmp, {}, use_stamp=False)
        size = tmp.stat().st_size
    return {"sha256": digests["sha256"], "size": size}


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, Any] | None, dict[str, torch.Tensor]]:
    """``(config or None, state_dict)`` of a safetensors file; corrupt files raise :class:`CheckpointError`."""
    return _open_safetensors(path, tensors=True)


def read_safetensors_config(path: str | os.PathLike) -> dict[str, Any] | None:
    """The config in a safetensors file's header (``None`` if it has none), without reading its tensors."""
    return _open_safetensors(path, tensors=False)[0]


def _open_safetensors(
    path: str | os.PathLike, *, tensors: bool
) -> tuple[dict[str, Any] | None, dict[str, torch.Tensor]]:
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}  # noqa: SIM118 - safe_open is not a dict
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e}); it is corrupt or truncated") from None
    config = None
    if METADATA_KEY in meta:
        try:
            config = _recorded_colour(json.loads(meta[METADATA_KEY]))
        except ValueError:
            raise CheckpointError(f"{path}: the '{METADATA_KEY}' header entry is not valid JSON") from None
    return config, state


def _recorded_colour(config: dict[str, Any]) -> dict[str, Any]:
    """A saved config's video colour rule (:mod:`avidzoo.io.colour`), for folders saved before avidzoo recorded it:
    weights avidzoo trained (a ``training`` record: pretraining, finetuning) saw frames converted by their streams'
    tags, PyAV >= 12's default, which avidzoo followed then; anything else is a conversion of released weights,
    whose rule is BT.601."""
    video = (config.get("preprocessing") or {}).get("video") if isinstance(config, dict) else None
    if isinstance(video, dict) and "colour" not in video:
        video["colour"] = "tagged" if config.get("training") else "bt601"
    return config


def save_pretrained_state(
    state: Mapping[str, torch.Tensor], config: Mapping[str, Any], save_directory: str | os.PathLike,
    *, model_card: str | None = None,
) -> Path:
    """Write ``state`` and ``config`` as a folder that :func:`avidzoo.from_pretrained` reads back exactly."""
    out = Path(save_directory)
    out.mkdir(parents=True, exist_ok=True)
    config = dict(config)
    config["avidzoo_version"] = __version__
    config.pop("files", None)
    info = write_safetensors(state, out / WEIGHTS_FILE, config)
    config["files"] = {WEIGHTS_FILE: info}
    write_text_atomic(out / CARD_FILE, model_card if model_card is not None else render_model_card(config))
    # config.json last: a folder with a config.json is complete.
    write_text_atomic(out / CONFIG_FILE, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return out


def save_pretrained(model: AVIDModel, save_directory: str | os.PathLike, *, model_card: str | None = None) -> Path:
    return save_pretrained_state(model.state_dict(), model.config, save_directory, model_card=model_card)


def read_config_file(directory: str | os.PathLike) -> dict[str, Any]:
    """``config.json`` of a folder written by ``save_pretrained``."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory}: missing {CONFIG_FILE}; expected a folder written by save_pretrained")
    try:
        return _recorded_colour(json.loads(path.read_text(encoding="utf-8")))
    except ValueError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None


def read_pretrained_dir(directory: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Config and state dict of a folder written by ``save_pretrained`` (weights verified against config.json)."""
    d = Path(directory)
    config = read_config_file(d)
    weights = d / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{d}: missing {WEIGHTS_FILE}; expected a folder written by save_pretrained")
    recorded = (config.get("files") or {}).get(WEIGHTS_FILE)
    if recorded:
        verify_file(weights, {"sha256": recorded["sha256"]}, recorded.get("size"))
    _, state = read_safetensors(weights)
    return config, state


def render_model_card(config: Mapping[str, Any]) -> str:
    """A README for a saved model: what it is, how it was made, how to load it, and its license."""
    name = config.get("weights") or config.get("model") or "avidzoo model"
    lines = [
        "---",
        f"license: {str(config.get('license') or 'other').lower()}",
        "library_name: avidzoo",
        "tags: [audio-visual, self-supervised, video, audio, avid]",
        "---",
        "",
        f"# {name}",
        "",
        f"Audio-visual model saved by avidzoo {config.get('avidzoo_version', __version__)}.",
        "",
        f"- model: `{config.get('model')}` (method `{config.get('method')}`)",
        f"- towers: {', '.join(config.get('modalities') or [])}",
    ]
    if config.get("weights"):
        lines.append(f"- initial weights: `{config['weights']}`")
    if config.get("num_classes"):
        labels = config.get("label_names") or []
        shown = ", ".join(labels[:10]) + (" ..." if len(labels) > 10 else "")
        lines.append(f"- classifier: {config['num_classes']} classes" + (f" ({shown})" if labels else ""))
    if config.get("metrics"):
        lines.append("- reported metrics: " + ", ".join(f"{k} {v}" for k, v in config["metrics"].items()))
    if config.get("training"):
        lines += ["", "## Training config", "", "```json", json.dumps(config["training"], indent=2), "```"]
    pre = config.get("preprocessing") or {}
    if pre:
        lines += ["", "## Preprocessing", "", "```json", json.dumps(pre, indent=2, sort_keys=True), "```"]
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "import avidzoo",
        "model = avidzoo.from_pretrained('local-dir:PATH')  # or 'hf-hub:ORG/REPO'",
        "transforms = avidzoo.create_transforms(model)",
        "```",
        "",
        "## License",
        "",
        f"{config.get('license') or 'unspecified'}. The released AVID weights and audio statistics are CC BY-NC 4.0 "
        "(facebookresearch/AVID-CMA); models derived from them inherit that license.",
        "",
    ]
    return "\n".join(lines)


def push_to_hub(
    model: AVIDModel,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str = "Upload avidzoo model",
) -> str:
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hf_endpoint(), token=token, library_name="avidzoo", library_version=__version__)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(model, tmp)
        info = api.upload_folder(repo_id=repo_id, folder_path=tmp, revision=revision, commit_message=commit_message)
    return str(getattr(info, "commit_url", info))
