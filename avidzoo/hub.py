"""Find, fetch, verify, convert and cache weights.

Resolution order for a registry weight (``create_model(name, pretrained=True)``):

1. ``AVIDZOO_WEIGHTS_DIR``: a read-only drop folder holding ``<name>/`` (a portable folder written by
   ``avidzoo download --to``) or the original file under its release name;
2. the cache (``$AVIDZOO_HOME``, default ``$XDG_CACHE_HOME/avidzoo``): the converted ``weights/<name>/`` folder;
3. the network, unless offline (``AVIDZOO_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``): Hugging Face Hub sources, then
   ``AVIDZOO_MIRRORS`` (base URLs, prepended), then the manifest's URLs, in order.

Explicit paths and ``local-dir:`` folders are handled by the factory before any of this. Whatever the source, the
original file must match the manifest's hash; it is then converted to safetensors once, under a file lock so that
concurrent processes (DDP ranks) download and convert exactly once.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout

from ._env import cache_dir, hf_endpoint, is_offline, show_progress
from ._files import remove_with_stamp, verify_file
from ._version import __version__
from .config import resolve_weights
from .convert import read_original_checkpoint
from .errors import CheckpointError, ChecksumError, DownloadError, WeightsNotFoundError
from .manifest import WeightSpec
from .serialization import CONFIG_FILE, WEIGHTS_FILE, read_pretrained_dir, render_model_card, save_pretrained_state

log = logging.getLogger("avidzoo")

_CHUNK = 1 << 20
_RETRYABLE_HTTP = {408, 425, 429, 500, 502, 503, 504}


# -- HTTP ----------------------------------------------------------------------------------------------------------
def download_url(
    url: str,
    dest: str | os.PathLike,
    *,
    hashes: Mapping[str, str],
    size: int | None = None,
    progress: bool | None = None,
    retries: int = 4,
    timeout: float = 60.0,
) -> Path:
    """Stream ``url`` to ``dest`` through ``dest.part``, resuming with HTTP Range after a dropped connection.

    The bytes are verified against ``hashes`` (and ``size``) before the atomic rename to ``dest``; on a mismatch the
    partial file is deleted and :class:`ChecksumError` names the expected and actual digests. HTTP errors other than
    transient ones (5xx, 408, 429) fail at once with :class:`DownloadError`.
    """
    from tqdm.auto import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    failures = 0
    while True:
        offset = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": f"avidzoo/{__version__}"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
                resumed = offset > 0 and resp.status == 206
                if not resumed:
                    offset = 0
                length = resp.headers.get("Content-Length")
                total = offset + int(length) if length is not None else None
                written = offset
                with (
                    open(part, "ab" if resumed else "wb") as f,
                    tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                         desc=dest.name, disable=not show_progress(progress), leave=False) as bar,
                ):
                    while chunk := resp.read(_CHUNK):
                        f.write(chunk)
                        written += len(chunk)
                        bar.update(len(chunk))
                if total is not None and written < total:
                    raise http.client.IncompleteRead(b"", total - written)
            break
        except urllib.error.HTTPError as e:
            if e.code == 416 and offset:  # our partial file is already complete, or not from this file
                if size is None or offset >= size:
                    break
                part.unlink(missing_ok=True)
                continue
            if e.code not in _RETRYABLE_HTTP or failures >= retries:
                raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
            failures += 1
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, OSError) as e:
            if failures >= retries:
                reason = getattr(e, "reason", None) or e
                raise DownloadError(f"{url}: {type(e).__name__}: {reason} (after {failures + 1} attempts)") from None
            failures += 1
            log.info("download of %s interrupted (%s); resuming", url, e)
        time.sleep(min(0.2 * 2**failures, 5.0))
    try:
        verify_file(part, hashes, size, use_stamp=False)
    except ChecksumError as e:
        part.unlink(missing_ok=True)
        raise ChecksumError(f"{url}: {e}; the partial download was deleted") from None
    os.replace(part, dest)
    verify_file(dest, hashes, size)  # cheap: writes the stamp so later loads skip hashing
    return dest


# -- sources of a registry weight ----------------------------------------------------------------------------------
def _mirror_urls(spec: WeightSpec) -> list[str]:
    bases = [b for b in os.environ.get("AVIDZOO_MIRRORS", "").replace(",", " ").split() if b]
    return [f"{b.rstrip('/')}/{spec.file_name}" for b in bases]


def network_sources(spec: WeightSpec) -> list[str | dict]:
    """HF Hub sources first, then ``AVIDZOO_MIRRORS``, then the manifest URLs, without duplicates."""
    hf = [s for s in spec.sources if isinstance(s, Mapping)]
    urls = _mirror_urls(spec) + [s for s in spec.sources if isinstance(s, str)]
    return hf + list(dict.fromkeys(urls))


def _fetch_hf(source: Mapping[str, Any], spec: WeightSpec) -> Path:
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(
        source["hf_hub_id"], source.get("filename", spec.file_name), revision=source.get("revision"),
        library_name="avidzoo", library_version=__version__, endpoint=hf_endpoint(),
    )
    verify_file(path, spec.hashes, spec.size_bytes)
    return Path(path)


def _describe(source: str | Mapping[str, Any]) -> str:
    return source if isinstance(source, str) else f"hf-hub:{source['hf_hub_id']}"


def fetch_original(spec: WeightSpec, *, cache: Path, progress: bool | None = None) -> Path:
    """A verified local copy of ``spec``'s original file: from the drop folder, the cache, or the network."""
    drop = os.environ.get("AVIDZOO_WEIGHTS_DIR")
    candidates = [Path(drop) / spec.file_name] if drop else []
    candidates.append(cache / "downloads" / spec.file_name)
    for path in candidates:
        if path.is_file():
            verify_file(path, spec.hashes, spec.size_bytes, use_stamp=path.parent != Path(drop or "\0"))
            return path
    if is_offline():
        raise WeightsNotFoundError(_offline_message(spec, cache))
    errors = []
    for source in network_sources(spec):
        try:
            if isinstance(source, Mapping):
                return _fetch_hf(source, spec)
            return download_url(source, cache / "downloads" / spec.file_name, hashes=spec.hashes,
                                size=spec.size_bytes, progress=progress)
        except (DownloadError, ChecksumError) as e:
            errors.append(f"  {_describe(source)}: {e}")
        except Exception as e:  # huggingface_hub's own errors, unreachable hosts
            errors.append(f"  {_describe(source)}: {type(e).__name__}: {e}")
        log.warning("could not fetch %s from %s", spec.file_name, _describe(source))
    raise DownloadError(f"{spec.name}: every source of {spec.file_name} failed:\n" + "\n".join(errors))


def _offline_message(spec: WeightSpec, cache: Path) -> str:
    url = next((s for s in spec.sources if isinstance(s, str)), "")
    hashes = ", ".join(f"{k} {v}" for k, v in spec.hashes.items())
    return (
        f"{spec.name}: weights not on this machine and offline mode is on (AVIDZOO_OFFLINE / HF_HUB_OFFLINE). "
        f"Obtain {spec.file_name} ({hashes}) from {url}, or run `avidzoo download {spec.name} --to DIR` on a "
        f"connected machine, then put it in a folder named by AVIDZOO_WEIGHTS_DIR or in {cache / 'downloads'}."
    )


# -- converted weights, cached once per weight ---------------------------------------------------------------------
def _converted_matches(folder: Path, spec: WeightSpec) -> bool:
    try:
        cfg = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (cfg.get("source") or {}).get("hashes") == dict(spec.hashes)



def load_weights(
    spec: WeightSpec,
    make_config: Callable[[], dict[str, Any]],
    *,
    cache_dir_: str | os.PathLike | None = None,
    progress: bool | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(config, state_dict)`` of a registry weight, converted to avidzoo names; see the module docstring."""
    _, config, state = _served(spec, make_config, cache_dir_=cache_dir_, progress=progress)
    return config, state


def weights_folders(spec: WeightSpec, cache_dir_: str | os.PathLike | None = None) -> list[Path]:
    """Where ``spec``'s converted weights may live, in the order they are looked for: the drop folder
    (``AVIDZOO_WEIGHTS_DIR``), then the cache."""
    drop = os.environ.get("AVIDZOO_WEIGHTS_DIR")
    return ([Path(drop) / spec.name] if drop else []) + [cache_dir(cache_dir_) / "weights" / spec.name]


def weights_folder(spec: WeightSpec, cache_dir_: str | os.PathLike | None = None) -> Path | None:
    """The folder that already holds ``spec``'s converted weights (the drop folder's, else the cache's), or None."""
    for folder in weights_folders(spec, cache_dir_):
        if (folder / WEIGHTS_FILE).is_file() and _converted_matches(folder, spec):
            return folder
    return None


def _served(
    spec: WeightSpec,
    make_config: Callable[[], dict[str, Any]],
    *,
    cache_dir_: str | os.PathLike | None,
    progress: bool | None,
) -> tuple[Path, dict[str, Any], dict[str, torch.Tensor]]:
    """``(folder, config, state_dict)``: the weights read from the folder that serves them (a drop folder, or the
    cache after fetching and converting them once under a file lock)."""
    cache = cache_dir(cache_dir_)
    if (folder := weights_folder(spec, cache)) is not None:
        try:
            return folder, *read_pretrained_dir(folder)
        except (ChecksumError, CheckpointError) as e:
            if folder.parent != cache / "weights":
                raise  # a read-only drop folder is the user's to fix
            log.warning("cached %s is damaged (%s); fetching it again", spec.name, e)
    folder = cache / "weights" / spec.name
    (cache / "locks").mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(cache / "locks" / f"{spec.name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.warning("another process is fetching %s; waiting for it", spec.name)
        lock.acquire()
    try:
        # Another process may have finished while we waited for the lock.
        if (folder / WEIGHTS_FILE).is_file() and _converted_matches(folder, spec):
            try:
                return folder, *read_pretrained_dir(folder)
            except (ChecksumError, CheckpointError):
                pass
        original = fetch_original(spec, cache=cache, progress=progress)
        state = read_original_checkpoint(original)
        config = make_config()
        save_pretrained_state(state, config, folder)
        if original.parent == cache / "downloads":  # the converted copy replaces the multi-GB training checkpoint
            remove_with_stamp(original)
    finally:
        lock.release()
    return folder, *read_pretrained_dir(folder)


def download(
    names: Iterable[str],
    to: str | os.PathLike | None = None,
    *,
    cache_dir_: str | os.PathLike | None = None,
    progress: bool | None = None,
) -> dict[str, Path]:
    """Fetch, verify and convert registry weights; with ``to``, also copy each into a portable ``to/<name>/`` folder.

    A portable folder holds ``config.json``, ``model.safetensors``, ``README.md`` and ``LICENSE``; copy it to an
    air-gapped machine and load it with ``local-dir:`` or by setting ``AVIDZOO_WEIGHTS_DIR``. Returns each weight's
    folder: the portable one, else the one that serves it (the cache or a drop folder).
    """
    out = {}
    for name in names:
        spec, make_config = resolve_weights(name)
        folder, config, _ = _served(spec, make_config, cache_dir_=cache_dir_, progress=progress)
        if to is not None:
            target = Path(to) / spec.name
            target.mkdir(parents=True, exist_ok=True)
            for f in (CONFIG_FILE, WEIGHTS_FILE):
                shutil.copy2(folder / f, target / f)
            card = folder / "README.md"
            (target / "README.md").write_text(card.read_text() if card.is_file() else render_model_card(config))
            (target / "LICENSE").write_text(_license_text(spec.license))
            folder = target
        out[spec.name] = folder
    return out


def _license_text(license_id: str) -> str:
    if license_id == "CC-BY-NC-4.0":
        return (
            "These weights were released by Facebook, Inc. and its affiliates (facebookresearch/AVID-CMA) under the\n"
            "Creative Commons Attribution-NonCommercial 4.0 International license:\n"
            "https://creativecommons.org/licenses/by-nc/4.0/legalcode\n"
        )
    return f"License: {license_id}\n"


def hf_hub_folder(repo: str, *, cache_dir_: str | os.PathLike | None = None, weights: bool = True) -> Path:
    """Download (or find in the HF cache) ``config.json`` and ``model.safetensors`` (unless not ``weights``) of
    ``org/repo[@revision]``; returns the snapshot folder holding them."""
    from huggingface_hub import hf_hub_download

    repo_id, _, revision = repo.partition("@")
    files = {}
    for fname in (CONFIG_FILE, WEIGHTS_FILE) if weights else (CONFIG_FILE,):
        try:
            files[fname] = hf_hub_download(
                repo_id, fname, revision=revision or None, local_files_only=is_offline(),
                library_name="avidzoo", library_version=__version__, endpoint=hf_endpoint(),
                cache_dir=None if cache_dir_ is None else str(Path(cache_dir_) / "hf"),
            )
        except Exception as e:
            how = "offline mode is on and it is not in the HF cache" if is_offline() else f"{type(e).__name__}: {e}"
            raise WeightsNotFoundError(f"hf-hub:{repo}: cannot get {fname}: {how}") from None
    return Path(files[CONFIG_FILE]).parent
