"""Media in object storage and on web servers (``s3://``, ``gs://``, ``az://``, ``https://``, ...) through fsspec.

A URL is an input like a path: an object, a prefix (listed recursively and filtered by media extension, as a
folder), a glob (``s3://bucket/videos/*.mp4``), or a ``.txt``/``.csv`` list of URLs and paths. Credentials and
endpoints are the ecosystem's own: for S3 the standard AWS variables and files (``AWS_PROFILE``,
``AWS_ENDPOINT_URL``, ...) as boto reads them, and fsspec's configuration (``FSSPEC_S3_*`` variables or its config
files) for anything else; avidzoo adds nothing to learn. A scheme whose fsspec implementation is not installed is an
error naming the package (``pip install 'avidzoo[remote]'`` brings s3fs).

Objects are never written to disk: an object up to ``AVIDZOO_REMOTE_WHOLE_BYTES`` (default 64 MiB) is fetched
into memory in one GET on its first read, and a larger one is read by ranged GETs of ``AVIDZOO_REMOTE_BLOCK_SIZE``
(default 4 MiB) kept in a small LRU of blocks (``_MAX_BLOCKS``), because the demuxer reads a file in several places
at once (its index, the packets of both streams) and a single read-ahead buffer re-fetches them without end
(``benchmarks/remote.py``: 387x the object's bytes with 4-MiB read-ahead, 1.00x whole). A read that fails is retried
from where it stopped, with backoff (``_READ_RETRIES`` times); an object that vanishes or cannot be read is a
:class:`~avidzoo.errors.DecodeError` for that input, never a hang (the filesystem's own time-outs apply).
:func:`object_version` (the ETag, or a version id) lets a resumed extraction redo an object that changed.
"""

from __future__ import annotations

import io
import os
import re
import time
from typing import Any

__all__ = ["is_url", "url_scheme", "remote_fs", "list_remote", "names_object", "read_remote_text", "object_version",
           "RemoteReader"]

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_GLOB_CHARS = "*?["
_READ_RETRIES = 4
_MAX_BLOCKS = 16  # ranged blocks kept per open object (16 x 4 MiB)
_INSTALL = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs",
            "abfss": "adlfs", "http": "aiohttp", "https": "aiohttp"}


def url_scheme(item: object) -> str | None:
    """The scheme of a URL (``"s3"``), ``None`` for a local path (``file://`` URLs count as local)."""
    match = _URL.match(str(item))
    scheme = match.group(1).lower() if match else None
    return None if scheme in (None, "file") else scheme


def is_url(item: object) -> bool:
    return url_scheme(item) is not None


def remote_fs(url: str) -> tuple[Any, str]:
    """``(filesystem, path)`` for a URL; ``ValueError`` naming the package to install when this environment has no
    implementation of its scheme."""
    import fsspec

    scheme = url_scheme(url)
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as e:
        package = _INSTALL.get(scheme or "", "its fsspec implementation")
        hint = "pip install 'avidzoo[remote]'" if package == "s3fs" else f"pip install {package}"
        raise ValueError(f"{url}: {scheme}:// URLs need {package}, which is not installed ({hint}); {e}") from None


def list_remote(url: str, extensions: set[str], *, missing: str = "error") -> list[str]:
    """The media objects a URL names, as URLs, sorted: a glob's matches, a prefix's objects (recursively) or the
    object itself. A prefix or glob without media raises ``FileNotFoundError``; so does a missing object with
    ``missing="error"`` (else it is kept, and extraction records it). With ``missing="record"``, a URL that names
    an object by a media extension (or ``.tar``) is taken as it is, without a request: a list of a million resolved
    URLs resolves again for free."""
    if missing == "record" and names_object(url, extensions):
        return [url]
    fs, path = remote_fs(url)
    fs.invalidate_cache()  # listings are cached per filesystem instance; an input is listed as it is now
    if any(c in path for c in _GLOB_CHARS):
        hits = [p for p in fs.glob(path) if _is_media(p, extensions) and fs.isfile(p)]
        if not hits:
            raise FileNotFoundError(f"{url}: the pattern matches no media object")
        return sorted(fs.unstrip_protocol(p) for p in hits)
    if url.endswith("/") or fs.isdir(path):
        hits = [p for p in fs.find(path) if _is_media(p, extensions)]
        if not hits:
            raise FileNotFoundError(f"{url}: no media objects ({', '.join(sorted(extensions))}) under this prefix")
        return sorted(fs.unstrip_protocol(p) for p in hits)
    if missing == "error" and not fs.exists(path):
        raise FileNotFoundError(f"{url}: no such object or prefix")
    return [url]


def _is_media(path: str, extensions: set[str]) -> bool:
    return os.path.splitext(path)[1].lower() in extensions


def names_object(url: str, extensions: set[str]) -> bool:
    """Whether a URL names one object by its extension (a media file of ``extensions``, or a ``.tar`` shard), rather
    than a prefix or a glob; a URL ending in ``.mp4`` could still be a prefix, which only a request would tell."""
    return not url.endswith("/") and not any(c in url for c in _GLOB_CHARS) and (
        _is_media(url, extensions) or url.lower().endswith(".tar"))


def read_remote_text(url: str) -> str:
    """A remote list file's text."""
    fs, path = remote_fs(url)
    return fs.cat_file(path).decode("utf-8")


def object_version(url: str) -> str | None:
    """What identifies an object's content: its version id where the store keeps versions, else its ETag, else its
    size and modification time; ``None`` where the store says none of these, or the object is gone."""
    fs, path = remote_fs(url)
    fs.invalidate_cache(path)  # the object as it is now, not as a listing saw it
    try:
        return _version_of(fs.info(path))
    except (FileNotFoundError, OSError):
        return None


def _version_of(info: dict) -> str | None:
    for key in ("VersionId", "version_id", "ETag", "etag", "md5Hash", "generation"):
        if info.get(key):
            return str(info[key]).strip('"')
    if info.get("size") is not None and (info.get("LastModified") or info.get("mtime")):
        return f"{info['size']}-{info.get('LastModified') or info.get('mtime')}"
    return None


class RemoteReader(io.RawIOBase):
    """A seekable, read-only file object over a remote object for the decoder: the whole object in one GET up to
    ``whole_bytes``, else ranged GETs of ``block_size`` kept in an LRU of blocks (fsspec's caches); a read that fails
    is retried from the same offset on a new handle, with exponential backoff, up to ``retries`` times; then, or when
    the object is gone, the error is raised."""

    def __init__(self, url: str, *, block_size: int | None = None, whole_bytes: int | None = None,
                 retries: int = _READ_RETRIES) -> None:
        super().__init__()
        self.url = url
        self.fs, self.path = remote_fs(url)
        self.block_size = block_size or int(os.environ.get("AVIDZOO_REMOTE_BLOCK_SIZE", 4 << 20))
        whole = whole_bytes if whole_bytes is not None else int(os.environ.get("AVIDZOO_REMOTE_WHOLE_BYTES", 64 << 20))
        self.retries = retries
        self.fs.invalidate_cache(self.path)  # an earlier listing's entry would hide a change since
        info = self.fs.info(self.path)  # FileNotFoundError for a missing object
        self.size = int(info.get("size") or 0)
        if self.size <= whole:  # one GET: the read-ahead block covers the object
            self.block_size, self._cache = max(self.size, 1), "readahead"
        else:
            self._cache = "blockcache"
        self.version = _version_of(info)
        self._pos = 0
        self._handle = None
        self.opened = 0  # handles opened: the first, and one per retry
        self.fetched_bytes = 0  # bytes the ranged reads brought (closed handles'; see stats())
        self.fetches = 0

    def _open(self):
        self._drop_handle()
        options = {"maxblocks": _MAX_BLOCKS} if self._cache == "blockcache" else {}
        self._handle = self.fs.open(self.path, "rb", block_size=self.block_size, cache_type=self._cache,
                                    cache_options=options)
        self.opened += 1
        return self._handle

    def _drop_handle(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            cache = getattr(handle, "cache", None)
            self.fetched_bytes += int(getattr(cache, "total_requested_bytes", 0) or 0)
            self.fetches += int(getattr(cache, "miss_count", 0) or 0)
            handle.close()

    def stats(self) -> dict[str, int]:
        """What reading cost so far: ``bytes`` fetched, ranged ``gets`` (cache misses), handles ``opened``."""
        cache = getattr(self._handle, "cache", None)
        return {"bytes": self.fetched_bytes + int(getattr(cache, "total_requested_bytes", 0) or 0),
                "gets": self.fetches + int(getattr(cache, "miss_count", 0) or 0), "opened": self.opened}

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(base + offset, 0)
        return self._pos

    def readinto(self, buffer) -> int:
        n = len(buffer)
        if n == 0 or self._pos >= self.size:
            return 0
        delay = 0.2
        for attempt in range(self.retries + 1):
            try:
                handle = self._handle or self._open()
                handle.seek(self._pos)
                data = handle.read(min(n, self.size - self._pos))
                break
            except FileNotFoundError:
                raise FileNotFoundError(f"{self.url}: the object vanished while it was read") from None
            except Exception:  # a transient network or server error: a new handle, from the same offset
                try:
                    self._drop_handle()
                except Exception:  # the failed handle may not close cleanly
                    self._handle = None
                if attempt == self.retries:
                    raise
                time.sleep(delay)
                delay *= 2
        buffer[:len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        self._drop_handle()
        super().close()

