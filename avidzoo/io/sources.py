"""Where a media file's bytes come from, and opening them as a container: a local file, an object at a URL (read
through :class:`~avidzoo.io.remote.RemoteReader`) or an open file object (a shard's member). Bad input becomes a
:class:`~avidzoo.errors.DecodeError` naming the file: missing, empty, not media, or media that is damaged."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av

from ..errors import CorruptMediaError, DecodeError, MediaNotFoundError, NotMediaError
from .remote import RemoteReader

__all__ = ["Source", "open_source"]

_NOT_MEDIA_FORMATS = {"tty", "image2", "lavfi"}  # FFmpeg also "plays" text files and still images
# First bytes of container formats: a file that has one of these but will not open is damaged, not "not media".
_SIGNATURES = (b"\x1aE\xdf\xa3", b"RIFF", b"OggS", b"ID3", b"fLaC", b"FLV", b"\x00\x00\x01\xba", b"\x30\x26\xb2\x75")


@dataclass
class Source:
    """An open container and what it reads from: ``reader`` for a URL's object (its ``version``, ETag or version
    id, lets a resumed run redo a changed object)."""

    container: Any
    reader: RemoteReader | None
    version: str | None


def open_source(path: Path | str, fileobj: Any = None, hwaccel: Any = None) -> Source:
    """Open ``path`` (a local :class:`~pathlib.Path`, a URL string, or the name of ``fileobj``) for reading."""
    reader = None
    if fileobj is not None:
        size = fileobj.seek(0, os.SEEK_END)
        fileobj.seek(0)
        if not size:
            raise NotMediaError(path, "the member is empty (0 bytes)")
        what: Any = fileobj
    elif isinstance(path, Path):
        if not path.is_file():
            raise MediaNotFoundError(path, "no such file")
        if path.stat().st_size == 0:
            raise NotMediaError(path, "the file is empty (0 bytes)")
        what = str(path)
    else:
        reader = what = _remote(path)
    try:
        container = _open(path, what, fileobj, hwaccel)
    except BaseException:
        if reader is not None:
            reader.close()
        raise
    return Source(container, reader, reader.version if reader is not None else None)


def _open(path: Path | str, what: Any, fileobj: Any, hwaccel: Any) -> Any:
    try:
        container = av.open(what, "r", metadata_errors="ignore", hwaccel=hwaccel)
    except av.error.FileNotFoundError:
        raise MediaNotFoundError(path, "no such file") from None
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        if _looks_like_media(_head(path, fileobj)):
            raise CorruptMediaError(path, f"cannot be opened, the file is damaged or truncated ({e})") from None
        raise NotMediaError(path, f"not a media file FFmpeg can read ({e})") from None
    fmt = container.format.name
    if fmt in _NOT_MEDIA_FORMATS or fmt.endswith("_pipe"):
        container.close()
        raise NotMediaError(path, f"not a media file (FFmpeg reads it as {fmt!r}, text or a still image)")
    return container


def _remote(url: str) -> RemoteReader:
    try:
        reader = RemoteReader(url)
    except FileNotFoundError:
        raise MediaNotFoundError(url, "no such object") from None
    except ValueError as e:  # no fsspec implementation of the scheme
        raise DecodeError(url, str(e).removeprefix(f"{url}: ")) from None
    except Exception as e:  # the store refused or could not be reached
        raise DecodeError(url, f"cannot be read from its store ({type(e).__name__}: {e})") from None
    if reader.size == 0:
        reader.close()
        raise NotMediaError(url, "the object is empty (0 bytes)")
    return reader


def _head(path: Path | str, fileobj: Any) -> bytes:
    """The first bytes of the file or object (to tell a damaged media file from something else)."""
    try:
        if fileobj is not None:
            fileobj.seek(0)
            return fileobj.read(12)
        if isinstance(path, Path):
            with open(path, "rb") as f:
                return f.read(12)
        with RemoteReader(path) as r:
            return r.read(12) or b""
    except Exception:
        return b""


def _looks_like_media(head: bytes) -> bool:
    return head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide") or head.startswith(_SIGNATURES) \
        or (len(head) > 0 and head[0] == 0x47)  # MPEG-TS sync byte
