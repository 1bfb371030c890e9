"""Turn what a user points at (files, folders, globs, list files) into an ordered list of media paths."""

from __future__ import annotations

import csv
import glob
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import DecodeError
from .decode import MediaFile

__all__ = ["MEDIA_EXTENSIONS", "find_media", "readable_media"]

MEDIA_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ts", ".mts",
    ".wav", ".mp3", ".flac", ".m4a", ".aac", ".ogg", ".opus",
})
_LIST_SUFFIXES = (".csv", ".txt", ".lst")
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def _refuse_url(item: str | os.PathLike, where: str = "") -> None:
    """A URL is not a path: say so at once, rather than look for a local file named ``s3:/bucket/...``."""
    match = _URL.match(str(item))
    if match:
        raise ValueError(f"{item}{where}: {match.group(1)}:// URLs are not readable inputs; give local files, folders, "
                         "globs or lists of paths (copy or mount the objects first)")


def _read_list(path: Path) -> list[Path]:
    """Paths in a TXT (one per line) or CSV (a ``path`` column, else the first) list, relative to the list's folder."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".csv":
        rows = list(csv.reader(text.splitlines()))
        if not rows:
            return []
        header = [c.strip().lower() for c in rows[0]]
        col = header.index("path") if "path" in header else 0
        body = rows[1:] if "path" in header or not Path(rows[0][0]).suffix else rows
        entries = [r[col].strip() for r in body if r and r[col].strip()]
    else:
        entries = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    for entry in entries:
        _refuse_url(entry, f" (in {path})")
    return [p if p.is_absolute() else path.parent / p for p in map(Path, entries)]


def find_media(
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    extensions: Iterable[str] = MEDIA_EXTENSIONS,
    missing: str = "record",
) -> list[Path]:
    """Media files named by ``inputs``, in order and without duplicates.

    Each input may be a media file, a folder (searched recursively for ``extensions``, sorted), a glob
    (``"videos/**/*.mp4"``), or a ``.txt``/``.csv`` list. A file that does not exist is kept, so that extraction
    records it as missing (``missing="record"``), or raises ``FileNotFoundError`` at once (``missing="error"``, as the
    command line does for what it is given; files named in a list are always kept). A folder or glob that matches
    nothing raises ``FileNotFoundError``, and a URL (``s3://...``) ``ValueError``.
    """
    if missing not in ("record", "error"):
        raise ValueError(f"missing must be 'record' or 'error', got {missing!r}")
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    found: list[Path] = []
    for item in inputs:
        _refuse_url(item)
        path = Path(item).expanduser()
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
    seen: set[str] = set()
    unique = []
    for p in found:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            unique.append(Path(key))
    return unique


def readable_media(paths: Sequence[Path], *, need_video: bool = True) -> tuple[list[Path], dict[str, str]]:
    """Split ``paths`` into the files that open (with a video stream if ``need_video``) and ``{path: error}``."""
    good, bad = [], {}
    for p in paths:
        try:
            with MediaFile(p) as f:
                if need_video and not f.info.has_video:
                    raise DecodeError(p, "has no video stream")
                if f.info.duration <= 0:
                    raise DecodeError(p, "has zero duration")
            good.append(Path(p))
        except DecodeError as e:
            bad[str(p)] = f"{type(e).__name__}: {e.problem}"
    return good, bad
