"""WebDataset tar shards as inputs: each media member of a sample is an input, read as the shard streams by.

A shard is a ``.tar`` (local, or at a URL through :mod:`avidzoo.io.remote`; brace patterns such as
``shard-{000000..000099}.tar`` expand) whose members are grouped into samples by key, as WebDataset and video2dataset
write them: ``dir/key.mp4``, ``dir/key.json``, ... (the key is the member name up to the first dot of its base name).
Each media member is an input named ``<shard>/<key>.<ext>``, and the sample's ``.json`` (if any) travels with it as
metadata. Such a name is an input by itself too (as ``failed.txt`` lists failed members): the shard is streamed
until its named members have been read. A shard is read once, front to back, never written to disk first: a member
is copied into a spool that stays in memory up to ``AVIDZOO_SHARD_SPOOL_BYTES`` (64 MiB) and goes to a temporary
file beyond, and the decoder reads it from there.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from .remote import is_url, remote_fs

__all__ = ["is_shard", "expand_braces", "ShardMember", "shard_members", "member_shard", "split_member",
           "streams_from_shard", "shard_streams"]

_BRACES = re.compile(r"\{([^{}]*)\}")
_STREAM_BLOCK = 8 << 20  # sequential reads of a remote shard


def is_shard(item: object) -> bool:
    """Whether an input names tar shards (a ``.tar`` file, object or pattern)."""
    return str(item).lower().endswith(".tar")


def expand_braces(pattern: str) -> list[str]:
    """``shard-{000..002}.tar`` -> the three names (zero-padded as written), ``{a,b}`` -> both; nested in order."""
    match = _BRACES.search(pattern)
    if not match:
        return [pattern]
    body = match.group(1)
    if ".." in body:
        lo, hi = body.split("..", 1)
        width = len(lo) if lo.startswith("0") else 0
        step = 1 if int(hi) >= int(lo) else -1
        options = [str(n).zfill(width) for n in range(int(lo), int(hi) + step, step)]
    else:
        options = body.split(",")
    head, tail = pattern[: match.start()], pattern[match.end():]
    return [name for option in options for name in expand_braces(head + option + tail)]


def split_member(name: object) -> str | None:
    """The shard of an input that names one of its members (``<shard>.tar/<key>.<ext>``), else ``None``."""
    text = str(name)
    at = text.lower().find(".tar/")
    return text[: at + 4] if at >= 0 else None


def member_shard(name: str, shards: set[str]) -> str | None:
    """The shard an input name ``<shard>/<key>.<ext>`` came from, if it is one of ``shards``."""
    shard = split_member(name)
    return shard if shard in shards else None


def streams_from_shard(item: object) -> bool:
    """Whether an input is read from a tar shard: a shard, or one member of one named by itself."""
    return is_shard(item) or split_member(item) is not None


def shard_streams(inputs: Sequence[object]) -> list[tuple[int, str, set[str] | None]]:
    """The shards to stream for ``inputs``, in input order: ``(position, shard, only)``, where ``only`` is the set of
    member names asked for by themselves, or ``None`` for a whole shard (which then serves its named members too)."""
    streams: dict[str, tuple[int, set[str] | None]] = {}
    for k, item in enumerate(inputs):
        if is_shard(item):
            streams[str(item)] = (streams.get(str(item), (k, None))[0], None)
        elif (shard := split_member(item)) is not None:
            position, only = streams.setdefault(shard, (k, set()))
            if only is not None:
                only.add(str(item))
    return [(k, shard, only) for shard, (k, only) in streams.items()]


@dataclass
class ShardMember:
    """A media member of a shard: ``name`` (``<shard>/<key>.<ext>``), ``data`` (a seekable spool, for the decoder)
    and the sample's ``metadata`` (its ``.json`` member, parsed; ``None`` without one)."""

    name: str
    data: IO[bytes] | None
    metadata: dict[str, Any] | None = None
    error: str | None = None
    skipped: bool = field(default=False)


def _open_stream(shard: str) -> IO[bytes]:
    if is_url(shard):
        fs, path = remote_fs(shard)
        return fs.open(path, "rb", block_size=_STREAM_BLOCK, cache_type="readahead")
    return open(shard, "rb")


def shard_members(shard: str, extensions: set[str], *, skip: set[str] = frozenset(),
                  only: set[str] | None = None) -> Iterator[ShardMember]:
    """The media members of ``shard`` in the order they are stored, read in one pass. Members named in ``skip``
    (done by an earlier run), or not in ``only`` when it is given, come out with ``skipped`` and no data, and the
    reading stops once every member in ``only`` has been seen; a shard that cannot be read or ends early gives a
    member with ``error`` (the rest of it cannot be reached) rather than raising."""
    spool_bytes = int(os.environ.get("AVIDZOO_SHARD_SPOOL_BYTES", 64 << 20))
    sample_key, members, meta = None, [], None
    wanted = set(only) if only is not None else None

    def flush():
        for name, spool in members:
            yield ShardMember(name, spool, meta, skipped=spool is None)

    try:
        with _open_stream(shard) as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                base = info.name.rsplit("/", 1)[-1]
                key = info.name[: len(info.name) - len(base)] + base.split(".", 1)[0]
                ext = "." + base.split(".", 1)[1].lower() if "." in base else ""
                if key != sample_key:
                    yield from flush()
                    if wanted is not None and not wanted:
                        return  # every member asked for has been read
                    sample_key, members, meta = key, [], None
                if ext == ".json":
                    try:
                        meta = json.loads(tar.extractfile(info).read().decode("utf-8"))
                    except (ValueError, UnicodeDecodeError):
                        meta = None
                elif ext in extensions:
                    name = f"{shard}/{info.name}"
                    if wanted is not None:
                        if name not in wanted:
                            members.append((name, None))
                            continue
                        wanted.discard(name)
                    if name in skip:
                        members.append((name, None))
                        continue
                    # handed to the decoder with the member, which closes it
                    spool = tempfile.SpooledTemporaryFile(max_size=spool_bytes)  # noqa: SIM115
                    source = tar.extractfile(info)
                    while chunk := source.read(1 << 20):
                        spool.write(chunk)
                    spool.seek(0)
                    members.append((name, spool))
            yield from flush()
        for name in sorted(wanted or ()):  # asked for by name, and not in the shard
            yield ShardMember(name, None, None, error="the shard has no such member")
    except (tarfile.TarError, OSError, EOFError) as e:
        yield from flush()
        yield ShardMember(shard, None, None, error=f"the shard cannot be read past this point ({e})")
