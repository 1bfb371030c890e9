"""Small file helpers: atomic writes, streamed hashing, and a stamp that avoids re-hashing unchanged files."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from .errors import ChecksumError

_CHUNK = 1 << 20
STAMP_SUFFIX = ".verified"


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it over ``dest`` only if the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text_atomic(dest: str | os.PathLike, text: str) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")


def file_digests(path: str | os.PathLike, algorithms: tuple[str, ...] = ("sha256",)) -> dict[str, str]:
    """Hex digests of a file, read once in 1 MiB chunks."""
    hashers = {a: hashlib.new(a) for a in algorithms}
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            for h in hashers.values():
                h.update(chunk)
    return {a: h.hexdigest() for a, h in hashers.items()}


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + STAMP_SUFFIX)


def _identity(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def verify_file(
    path: str | os.PathLike,
    hashes: Mapping[str, str],
    size: int | None = None,
    *,
    use_stamp: bool = True,
) -> dict[str, str]:
    """Check ``path`` against expected ``hashes`` (e.g. ``{"sha1": ...}``) and ``size``; raise :class:`ChecksumError`.

    A successful check leaves a ``<file>.verified`` stamp holding the digests, size and mtime, so later checks of
    the unchanged file cost one ``stat``. Returns the digests (always including sha256).
    """
    path = Path(path)
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise ChecksumError(f"{path}: expected {size} bytes, found {actual_size}; the file is truncated or wrong")
    expected = {k.lower(): v.lower() for k, v in hashes.items()}
    stamp = _stamp_path(path)
    if use_stamp and stamp.is_file():
        try:
            saved = json.loads(stamp.read_text())
            same_file = saved.get("identity") == _identity(path)
            if same_file and all(saved["digests"].get(k) == v for k, v in expected.items()):
                return dict(saved["digests"])
        except (OSError, ValueError, KeyError, AttributeError):
            pass  # an unreadable stamp only costs a re-hash
    digests = file_digests(path, tuple(sorted(set(expected) | {"sha256"})))
    for algo, want in expected.items():
        if digests[algo] != want:
            raise ChecksumError(f"{path}: {algo} mismatch: expected {want}, got {digests[algo]}")
    if use_stamp:
        with contextlib.suppress(OSError):
            write_text_atomic(stamp, json.dumps({"identity": _identity(path), "digests": digests}))
    return digests


def remove_with_stamp(path: Path) -> None:
    path.unlink(missing_ok=True)
    _stamp_path(path).unlink(missing_ok=True)
