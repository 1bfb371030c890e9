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

import dataclasses
import http.client
import json
import logging
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout

from ._env import cache_dir, hf_endpoint, is_offline, show_progress
from ._files import file_digests, remove_with_stamp, verify_file, write_text_atomic
from ._version import __version__
from .config import MODALITIES, resolve_weights
from .convert import complete_state, gdt_audio_settings, read_release, select_towers
from .errors import CheckpointError, ChecksumError, DownloadError, WeightsNotFoundError
from .manifest import FileSpec, WeightSpec
from .models.avid import AVIDModel
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
def _mirror_urls(file: FileSpec) -> list[str]:
    bases = [b for b in os.environ.get("AVIDZOO_MIRRORS", "").replace(",", " ").split() if b]
    return [f"{b.rstrip('/')}/{file.file_name}" for b in bases]


def network_sources(spec: WeightSpec, file: FileSpec | None = None) -> list[str | dict]:
    """HF Hub sources first, then ``AVIDZOO_MIRRORS``, then the manifest URLs, without duplicates (of ``file``, by
    default the weight's first file)."""
    file = file or spec.files[0]
    hf = [s for s in file.sources if isinstance(s, Mapping)]
    urls = _mirror_urls(file) + [s for s in file.sources if isinstance(s, str)]
    return hf + list(dict.fromkeys(urls))


def _fetch_hf(source: Mapping[str, Any], file: FileSpec) -> Path:
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(
        source["hf_hub_id"], source.get("filename", file.file_name), revision=source.get("revision"),
        library_name="avidzoo", library_version=__version__, endpoint=hf_endpoint(),
    ))


def _describe(source: str | Mapping[str, Any]) -> str:
    return source if isinstance(source, str) else f"hf-hub:{source['hf_hub_id']}"


def _recorded(cache: Path, file: FileSpec) -> tuple[Path, dict[str, Any] | None]:
    """Where the first download of an unpublished ``file`` is recorded, and the record (None before it)."""
    record = cache / "hashes" / f"{file.file_name}.json"
    return record, json.loads(record.read_text()) if record.is_file() else None


def hash_status(file: FileSpec, cache_dir_: str | os.PathLike | None = None) -> str:
    """How ``file`` is checked, in words (``avidzoo info``)."""
    if file.published:
        return "published: " + ", ".join(f"{k} {v}" for k, v in file.hashes.items())
    prefix = f"the sha256 prefix {file.sha256_prefix} in its name, and " if file.sha256_prefix else ""
    _, saved = _recorded(cache_dir(cache_dir_), file)
    if saved is not None:
        return (f"no full hash published; checked against {prefix}the sha256 {saved['sha256']} recorded at the "
                f"first download ({saved['recorded']})")
    return (f"no full hash published; checked against {prefix}the sha256 of the first download, which is recorded "
            f"then (not downloaded yet)")


def _check_unpublished(spec: WeightSpec, file: FileSpec, path: Path, sha256: str, cache: Path) -> None:
    """The checks of a file whose authors published no full digest: the name's SHA-256 prefix, if any, then the
    digest recorded at its first download (trust on first use; recorded now, with a warning, if there is none)."""
    if file.sha256_prefix and not sha256.startswith(file.sha256_prefix.lower()):
        raise ChecksumError(f"{path}: sha256 {sha256} does not start with {file.sha256_prefix}, the prefix its "
                            "release name carries; the file is damaged or not the released one")
    if file.published:
        return
    record, saved = _recorded(cache, file)
    if saved is not None:
        if saved["sha256"] != sha256:
            raise ChecksumError(
                f"{path}: sha256 {sha256} differs from {saved['sha256']}, recorded when {file.file_name} was first "
                f"downloaded ({saved['recorded']}). Its authors published no hash, so that first download is the "
                f"reference; if they replaced the file, delete {record} to accept the new one.")
        return
    log.warning("%s: %s has no published hash; its sha256 %s is recorded in %s and every later copy must match it",
                spec.name, file.file_name, sha256, record)
    write_text_atomic(record, json.dumps({
        "file_name": file.file_name, "weights": spec.name, "sha256": sha256, "size": path.stat().st_size,
        "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1))


def _as_found(file: FileSpec, path: Path) -> FileSpec:
    """The spec of the file found for ``file``: itself, or the unzipped member of a zipped release under its own name
    (checked by its own first-download record; the zip's digests say nothing of it)."""
    if path.name == file.file_name:
        return file
    return dataclasses.replace(file, file_name=path.name, hashes={}, size_bytes=None, sha256_prefix=None)


def _release_names(file: FileSpec) -> tuple[str, ...]:
    """The names a release file may be found under: as released, and a zipped release's member unzipped."""
    return tuple(dict.fromkeys([file.file_name, file.file_name.removesuffix(".zip")]))


def _local_originals(file: FileSpec, cache: Path) -> list[Path]:
    """Where an original file may already be on this machine, in the order looked for: the drop folder (also the
    unzipped member of a zipped release, CrissCross's ``.pth.tar``), the cache."""
    drop = os.environ.get("AVIDZOO_WEIGHTS_DIR")
    names = _release_names(file) if not file.published else (file.file_name,)  # a digest binds the zip itself
    return [Path(drop) / n for n in names if drop] + [cache / "downloads" / file.file_name]


def fetch_file(spec: WeightSpec, file: FileSpec, *, cache: Path, progress: bool | None = None) -> tuple[Path, str]:
    """A verified local copy of one of ``spec``'s original files and its sha256: from the drop folder, the cache,
    or the network (see :func:`_check_unpublished` for files without a published hash)."""
    drop = os.environ.get("AVIDZOO_WEIGHTS_DIR")
    candidates = _local_originals(file, cache)

    def verified(path: Path, use_stamp: bool = True) -> tuple[Path, str]:
        found = _as_found(file, path)
        sha256 = verify_file(path, found.hashes, found.size_bytes, use_stamp=use_stamp)["sha256"]
        _check_unpublished(spec, found, path, sha256, cache)
        return path, sha256

    for path in candidates:
        if path.is_file():
            return verified(path, use_stamp=path.parent != Path(drop or "\0"))
    if is_offline():
        raise WeightsNotFoundError(_offline_message(spec, file, cache))
    errors = []
    for source in network_sources(spec, file):
        try:
            if isinstance(source, Mapping):
                path = _fetch_hf(source, file)
            else:
                path = download_url(source, cache / "downloads" / file.file_name, hashes=file.hashes,
                                    size=file.size_bytes, progress=progress)
            return verified(path)
        except (DownloadError, ChecksumError) as e:
            errors.append(f"  {_describe(source)}: {e}")
        except Exception as e:  # huggingface_hub's own errors, unreachable hosts
            errors.append(f"  {_describe(source)}: {type(e).__name__}: {e}")
        log.warning("could not fetch %s from %s", file.file_name, _describe(source))
    raise DownloadError(f"{spec.name}: every source of {file.file_name} failed:\n" + "\n".join(errors))


def _offline_message(spec: WeightSpec, file: FileSpec, cache: Path) -> str:
    url = next((s for s in file.sources if isinstance(s, str)), "")
    hashes = ", ".join(f"{k} {v}" for k, v in file.hashes.items()) or "no published hash"
    return (
        f"{spec.name}: weights not on this machine and offline mode is on (AVIDZOO_OFFLINE / HF_HUB_OFFLINE). "
        f"Obtain {file.file_name} ({hashes}) from {url}, or run `avidzoo download {spec.name} --to DIR` on a "
        f"connected machine, then put it in a folder named by AVIDZOO_WEIGHTS_DIR or in {cache / 'downloads'}."
    )


# -- converted weights, cached once per weight ---------------------------------------------------------------------
def _converted_matches(folder: Path, spec: WeightSpec, cache: Path, files: Iterable[FileSpec] | None = None) -> bool:
    """Whether ``folder`` was converted from the files ``spec`` names now. A published digest binds the bytes; a file
    without one must be the very file (by name) the folder records, and, where this cache holds no first-download
    record to check against (:func:`_check_converted`), a local original must hash to what the folder recorded, so a
    renamed or replaced source is converted afresh rather than served from a stale folder. ``files``: only these
    (a one-tower load of a weight released as one file per tower)."""
    try:
        cfg = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return False
    source = cfg.get("source") or {}
    if source.get("hashes") != spec.hashes:
        return False
    converted = source.get("sha256") or {}
    for file in spec.files if files is None else files:
        if file.published:
            continue
        name = next((n for n in _release_names(file) if n in converted), None)
        if name is None:
            return False
        found = dataclasses.replace(file, file_name=name)
        if _recorded(cache, found)[1] is None:
            local = next((p for p in _local_originals(file, cache) if p.is_file() and p.name == name), None)
            if local is not None and file_digests(local)["sha256"] != converted[name]:
                return False
    return True


def _check_converted(folder: Path, config: Mapping[str, Any], spec: WeightSpec, cache: Path) -> None:
    """A converted folder of files without a published hash must come from the copies this cache recorded."""
    converted = (config.get("source") or {}).get("sha256") or {}
    for file in spec.files:
        for name in _release_names(file):
            _, saved = _recorded(cache, dataclasses.replace(file, file_name=name))
            if not file.published and saved is not None and name in converted and converted[name] != saved["sha256"]:
                raise ChecksumError(f"{folder}: converted from a {name} with sha256 {converted[name]}, not the "
                                    f"{saved['sha256']} recorded at its first download")


def convert_release(spec: WeightSpec, fetched: list[tuple[FileSpec, Path, str]],
                    config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The avidzoo state dict of a weight's original files, checked strictly against the model ``config``
    describes (which the files' own settings may amend: GDT's audio preprocessing)."""
    state, info = read_release(spec.format, [(f, p) for f, p, _ in fetched])
    if spec.format == "gdt":
        config["preprocessing"]["audio"].update(gdt_audio_settings(info.get("args", {})))
    config.setdefault("source", {})["sha256"] = {_as_found(f, p).file_name: sha for f, p, sha in fetched}
    state = select_towers(state, config["modalities"])
    with torch.device("meta"):  # names and shapes only: no memory, no initialisation
        expected = AVIDModel(config).state_dict()
    return complete_state(state, expected, spec.file_name)


def load_release_file(path: str | os.PathLike, spec: WeightSpec, file: FileSpec | None = None,
                      towers: Sequence[str] | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(config, state_dict)`` of one original release file given by path: read in ``spec``'s layout and converted
    in memory (the cache is not involved), with ``spec``'s config and preprocessing. A file of a per-tower release
    (``file``) gives that tower; ``towers`` must be among those the file holds."""
    path = Path(path)
    config = resolve_weights(spec.name)[1]()
    if len(spec.files) > 1:
        if file is None or file.tower is None:
            raise CheckpointError(f"{path}: {spec.name} is released as one file per tower; say which this is")
        config["modalities"] = [file.tower]
    file = file or spec.files[0]
    absent = [m for m in towers or () if m not in config["modalities"]]
    if absent:
        raise ValueError(f"{path} holds no {' or '.join(absent)} tower (it has {', '.join(config['modalities'])})")
    sha256 = file_digests(path)["sha256"]
    if file.sha256_prefix and path.name == file.file_name and not sha256.startswith(file.sha256_prefix.lower()):
        raise ChecksumError(f"{path}: sha256 {sha256} does not start with {file.sha256_prefix}, the prefix its "
                            "release name carries; the file is damaged or not the released one")
    state = convert_release(spec, [(file, path, sha256)], config)
    config["source"]["path"] = str(path)
    return config, state


def load_weights(
    spec: WeightSpec,
    make_config: Callable[[], dict[str, Any]],
    *,
    towers: Sequence[str] | None = None,
    cache_dir_: str | os.PathLike | None = None,
    progress: bool | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(config, state_dict)`` of a registry weight, converted to avidzoo names; see the module docstring.
    ``towers``: the modalities wanted (default all); a weight released as one file per tower then fetches and
    reads only those towers' files."""
    _, config, state = _served(spec, make_config, towers=towers, cache_dir_=cache_dir_, progress=progress)
    return config, state


def _files_for(spec: WeightSpec, towers: Sequence[str] | None) -> list[FileSpec]:
    """The files a load of ``towers`` (None: all) needs: all of a one-file weight, those towers' of a per-tower one."""
    return [f for f in spec.files if towers is None or f.tower is None or f.tower in towers]


def weights_folders(spec: WeightSpec, cache_dir_: str | os.PathLike | None = None) -> list[Path]:
    """Where ``spec``'s converted weights may live, in the order they are looked for: the drop folder
    (``AVIDZOO_WEIGHTS_DIR``), then the cache."""
    drop = os.environ.get("AVIDZOO_WEIGHTS_DIR")
    return ([Path(drop) / spec.name] if drop else []) + [cache_dir(cache_dir_) / "weights" / spec.name]


def weights_folder(spec: WeightSpec, cache_dir_: str | os.PathLike | None = None,
                   towers: Sequence[str] | None = None) -> Path | None:
    """The folder that already holds ``spec``'s converted weights (the drop folder's, else the cache's), or None;
    with ``towers``, one that holds at least those towers."""
    cache = cache_dir(cache_dir_)
    for folder in weights_folders(spec, cache):
        if (folder / WEIGHTS_FILE).is_file() and _converted_matches(folder, spec, cache, _files_for(spec, towers)):
            return folder
    return None


def _served(
    spec: WeightSpec,
    make_config: Callable[[], dict[str, Any]],
    *,
    towers: Sequence[str] | None = None,
    cache_dir_: str | os.PathLike | None,
    progress: bool | None,
) -> tuple[Path, dict[str, Any], dict[str, torch.Tensor]]:
    """``(folder, config, state_dict)``: the weights read from the folder that serves them (a drop folder, or the
    cache after fetching and converting them once under a file lock). With ``towers``, a weight released per tower
    fetches and converts only those towers' files; towers the cache already holds from files the weight still names
    are kept beside them."""
    cache = cache_dir(cache_dir_)
    needed = _files_for(spec, towers)
    if (folder := weights_folder(spec, cache, towers)) is not None:
        try:
            config, state = read_pretrained_dir(folder)
            _check_converted(folder, config, spec, cache)
            return folder, config, state
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
        if (folder / WEIGHTS_FILE).is_file() and _converted_matches(folder, spec, cache, needed):
            try:
                return folder, *read_pretrained_dir(folder)
            except (ChecksumError, CheckpointError):
                pass
        kept, old_config, old_state = _cached_towers(folder, spec, cache)
        todo = [f for f in needed if f.tower not in kept]
        fetched = [(f, *fetch_file(spec, f, cache=cache, progress=progress)) for f in todo]
        config = make_config()
        if len(todo) < len(spec.files):  # some towers of a per-tower release
            config["modalities"] = [m for m in config["modalities"] if any(f.tower == m for f in todo)]
        state = convert_release(spec, fetched, config)
        if kept:  # the towers converted before stay beside the new ones
            state = {**select_towers(old_state, kept), **state}
            config["modalities"] = [m for m in MODALITIES if m in config["modalities"] or m in kept]
            old_sha = (old_config.get("source") or {}).get("sha256") or {}
            config["source"]["sha256"].update({n: old_sha[n] for f in spec.files if f.tower in kept
                                               for n in _release_names(f) if n in old_sha})
        save_pretrained_state(state, config, folder)
        for _, original, _ in fetched:
            if original.parent == cache / "downloads":  # the converted copy replaces the multi-GB training checkpoint
                remove_with_stamp(original)
    finally:
        lock.release()
    return folder, *read_pretrained_dir(folder)


def _cached_towers(folder: Path, spec: WeightSpec, cache: Path) -> tuple[list[str], dict[str, Any], dict]:
    """The towers of a per-tower release that ``folder`` already holds, converted from the files the weight names
    now, with the folder's config and state (so loading video, then audio, fetches each file once)."""
    per_tower = [f for f in spec.files if f.tower is not None]
    if not per_tower or not (folder / WEIGHTS_FILE).is_file():
        return [], {}, {}
    try:
        config, state = read_pretrained_dir(folder)
    except (ChecksumError, CheckpointError):
        return [], {}, {}
    towers = [f.tower for f in per_tower if f.tower in config.get("modalities", ())
              and _converted_matches(folder, spec, cache, [f])]
    return towers, config, state


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
            (target / "LICENSE").write_text(_license_text(spec))
            folder = target
        out[spec.name] = folder
    return out


_LICENSE_URLS = {"CC-BY-NC-4.0": "Creative Commons Attribution-NonCommercial 4.0 International license:\n"
                                  "https://creativecommons.org/licenses/by-nc/4.0/legalcode",
                 "MIT": "MIT license: https://opensource.org/license/mit"}


def _license_text(spec: WeightSpec) -> str:
    """The LICENSE of a portable folder: who released the weights (their repository) and under what terms."""
    terms = _LICENSE_URLS.get(spec.license, spec.license)
    text = f"These weights ({spec.name}) were released by the authors of {spec.origin_url or 'their repository'}\n" \
           f"under the {terms}\n"
    note = spec.extra.get("license_note")
    return text + (f"\nNote: {note}.\n" if note else "")


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
