"""Turn what a user points at (files, folders, globs, list files, and their remote twins: objects, prefixes, globs and
lists at URLs, :mod:`avidzoo.io.remote`) into an ordered list of media paths and URLs."""

from __future__ import annotations

import csv
import glob
import os
import posixpath
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import DecodeError
from .decode import MediaFile
from .remote import is_url, list_remote, read_remote_text, remote_fs
from .shards import expand_braces, is_shard, split_member

__all__ = ["read_segments", "MEDIA_EXTENSIONS", "find_media", "input_list", "unique_media", "readable_media"]

MEDIA_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ts", ".mts",
    ".wav", ".mp3", ".flac", ".m4a", ".aac", ".ogg", ".opus",
})
_LIST_SUFFIXES = (".csv", ".txt", ".lst")
_FILE_URL = re.compile(r"^file://", re.I)

Media = Path | str  # a local path, or a URL (kept a string: a Path would fold its "//")


def read_segments(path: str | os.PathLike) -> dict[str, list[dict[str, Any]]]:
    """Annotated segments from a CSV with a header ``path,start,end[,label][,id]`` (seconds): ``{path: [{"start",
    "end", "label", "id"}, ...]}``, the paths resolved as for an input list (relative to the CSV's folder), the
    files in the order they first appear and each file's segments in the CSV's order. A row that is not a segment
    (an end not after its start, a number that is not one) is an error naming the CSV and its line."""
    src: Media = str(path) if is_url(path) else Path(path)
    text = read_remote_text(src) if isinstance(src, str) else src.read_text(encoding="utf-8")
    rows = list(csv.reader(text.splitlines()))
    header = [c.strip().lower() for c in rows[0]] if rows else []
    if not {"path", "start", "end"} <= set(header):
        raise ValueError(f"{path}: a segments CSV needs a header with path,start,end (and optionally label, id); "
                         f"found {','.join(header) or 'nothing'}")
    col = {name: header.index(name) for name in ("path", "start", "end", "label", "id") if name in header}
    resolved = _read_list(src)  # the same resolution as an input list's (one entry per row with a path)
    out: dict[str, list[dict[str, Any]]] = {}
    k = 0
    for line, row in enumerate(rows[1:], start=2):
        if not row or not row[col["path"]].strip():
            continue
        try:
            start, end = float(row[col["start"]]), float(row[col["end"]])
        except (ValueError, IndexError):
            raise ValueError(f"{path}, line {line}: start and end must be seconds, got {row}") from None
        if not end > start >= 0:
            raise ValueError(f"{path}, line {line}: a segment must end after it starts (at 0 s or later), "
                             f"got {start}..{end}")
        label = row[col["label"]].strip() if "label" in col and len(row) > col["label"] else None
        ident = row[col["id"]].strip() if "id" in col and len(row) > col["id"] else None
        out.setdefault(str(resolved[k]), []).append({"start": start, "end": end, "label": label or None,
                                                     "id": ident or None})
        k += 1
    return out


def _read_list(path: Media) -> list[Media]:
    """Entries of a TXT (one per line) or CSV (a ``path`` column, else the first) list: URLs as they are, paths
    relative to the list's folder (a remote list's relative entries are relative to its prefix)."""
    remote = isinstance(path, str)
    text = read_remote_text(path) if remote else path.read_text(encoding="utf-8")
    if os.path.splitext(str(path))[1].lower() == ".csv":
        rows = list(csv.reader(text.splitlines()))
        if not rows:
            return []
        header = [c.strip().lower() for c in rows[0]]
        col = header.index("path") if "path" in header else 0
        body = rows[1:] if "path" in header or not Path(rows[0][0]).suffix else rows
        entries = [r[col].strip() for r in body if r and r[col].strip()]
    else:
        entries = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    out: list[Media] = []
    for entry in entries:
        if is_url(entry):
            remote_fs(entry)  # a scheme without an implementation here is said now, not per file later
            out.append(entry)
        elif remote:  # relative to the list's prefix: s3://b/lists/all.txt + ../v/a.mp4 = s3://b/v/a.mp4
            scheme, _, rest = path.partition("://")
            out.append(entry if entry.startswith("/") else
                       f"{scheme}://{posixpath.normpath(posixpath.join(posixpath.dirname(rest), entry))}")
        else:
            p = Path(_FILE_URL.sub("", entry))
            out.append(p if p.is_absolute() else path.parent / p)
    return out


def find_media(
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    extensions: Iterable[str] = MEDIA_EXTENSIONS,
    missing: str = "record",
) -> list[Media]:
    """Media files named by ``inputs``, in order and without duplicates: local paths (absolute) and URLs (strings).

    Each input may be a media file, a folder (searched recursively for ``extensions``, sorted), a glob
    (``"videos/**/*.mp4"``), a WebDataset tar shard or a brace pattern of them (``shards/shard-{000..099}.tar``,
    :mod:`avidzoo.io.shards`: one input each, whose media members are read when extracting), one member of a shard
    (``shards/shard-000000.tar/key.mp4``, as the index and ``failed.txt`` name it), or a ``.txt``/``.csv``
    list (of paths and URLs); or the same at a URL (``s3://bucket/
    video.mp4``, a prefix ``s3://bucket/videos/``, ``s3://bucket/videos/*.mp4``, ``s3://bucket/list.txt``). A file
    or object that does not exist is kept, so that extraction records it as missing (``missing="record"``), or raises
    ``FileNotFoundError`` at once (``missing="error"``, as the command line does for what it is given; entries of a
    list are always kept). A folder, prefix or glob that matches nothing raises ``FileNotFoundError``; a URL whose
    scheme has no fsspec implementation here, ``ValueError`` naming the package to install.
    """
    if missing not in ("record", "error"):
        raise ValueError(f"missing must be 'record' or 'error', got {missing!r}")
    inputs = input_list(inputs)
    exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    found: list[Media] = []
    for item in inputs:
        if (shard := split_member(item)) is not None:  # one member of a tar shard, as the index names it
            if missing == "error" and is_url(shard):
                list_remote(shard, {".tar"})  # FileNotFoundError where the shard is not there
            elif missing == "error" and not Path(_FILE_URL.sub("", shard)).expanduser().is_file():
                raise FileNotFoundError(f"{item}: no such shard {shard}")
            found.append(str(item) if is_url(item) else Path(_FILE_URL.sub("", str(item))).expanduser())
            continue
        if is_url(item):
            url = str(item)
            if os.path.splitext(url)[1].lower() in _LIST_SUFFIXES and not any(c in url for c in "*?["):
                found += _read_list(url)
            else:
                found += list_remote(url, exts, missing=missing)
            continue
        path = Path(_FILE_URL.sub("", str(item))).expanduser() if isinstance(item, str) else Path(item).expanduser()
        if path.is_dir():
            hits = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in exts)
            if not hits:
                raise FileNotFoundError(f"{path}: no media files ({', '.join(sorted(exts))}) in this folder")
            found += hits
        elif path.is_file() and path.suffix.lower() in _LIST_SUFFIXES:
            found += _read_list(path)
        elif any(c in str(item) for c in "*?["):
            hits = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            if not hits:
                raise FileNotFoundError(f"{item}: the pattern matches no file")
            found += hits
        else:
            if missing == "error" and not path.exists():
                raise FileNotFoundError(f"{item}: no such file or folder")
            found.append(path)
    return unique_media(found)


def input_list(inputs: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str | os.PathLike]:
    """``inputs`` as a list, with tar shard patterns expanded (``shard-{000000..000099}.tar``: a shard is one input,
    its members read when extracting)."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    return [name for item in inputs for name in (expand_braces(str(item)) if is_shard(item) else [item])]


def unique_media(found: Iterable[Media]) -> list[Media]:
    """``found`` in order without repeats: local paths made absolute, URLs as they are."""
    seen: set[str] = set()
    unique: list[Media] = []
    for p in found:
        key = p if isinstance(p, str) else os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            unique.append(key if isinstance(p, str) else Path(key))
    return unique


def readable_media(paths: Sequence[Media], *, need_video: bool = True) -> tuple[list[Media], dict[str, str]]:
    """Split ``paths`` into the files that open (with a video stream if ``need_video``) and ``{path: error}``."""
    good, bad = [], {}
    for p in paths:
        try:
            with MediaFile(p) as f:
                if need_video and not f.info.has_video:
                    raise DecodeError(p, "has no video stream")
                if f.info.duration <= 0:
                    raise DecodeError(p, "has zero duration")
            good.append(p if isinstance(p, str) and is_url(p) else Path(p))
        except DecodeError as e:
            bad[str(p)] = f"{type(e).__name__}: {e.problem}"
    return good, bad
