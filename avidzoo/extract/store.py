"""The output folder of an extraction, correct under any number of concurrent writers.

``meta.json`` holds the model, weights fingerprint, preprocessing and settings (created exclusively; a writer with
other settings is refused). Every writer (a process: a torchrun rank, a ``--shard K/N`` worker, a second terminal, a
Ray driver) has a name of its own (host, pid, random bits), so no two writers ever produce the same file: its features
go to ``shards/<writer>-<seq>.safetensors`` (written atomically) and its rows to ``parts/<writer>.jsonl`` (appended
after the shard is on disk; path, shard, row, clip start times, status or error). Readers (resume,
:func:`load_features`, ``--status``) take the union of all parts: each file once, a success over an error, then the
newest. ``index.jsonl`` is a snapshot of that picture in input order, written when a run ends. A SIGKILL loses at most
a writer's buffered files; what a dead writer leaves unindexed is removed by the next writer (:func:`collect_garbage`,
which recognises live writers by the file locks they hold).
"""

from __future__ import annotations

import concurrent.futures
import errno
import json
import os
import re
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout
from safetensors.torch import load_file, save_file

from .._files import atomic_path
from ..errors import OutputWriteError
from ..io.remote import is_url, object_version
from ..io.shards import is_shard, member_shard

__all__ = ["INDEX_FILE", "META_FILE", "FAILED_FILE", "ExtractionResult", "ok_row", "missing_modalities", "build_result",
           "check_meta", "claim_meta", "reset_output", "read_index", "read_rows", "object_versions", "done_paths",
           "new_writer_id", "ShardWriter", "no_room_error", "human_size", "live_writers", "collect_garbage",
           "write_snapshot", "StoreStatus", "status", "load_features"]

INDEX_FILE = "index.jsonl"
META_FILE = "meta.json"
FAILED_FILE = "failed.txt"  # the failed files' paths, one a line: an input list for another try


@dataclass
class ExtractionResult:
    """Features of a run. ``features[modality]`` is ``(N, D)`` (or ``(N, clips, D)`` with ``clip_agg="none"``; a map's
    shape in place of ``D`` with ``maps``, e.g. ``(N, 512, 7, 7)``), row i belonging to ``paths[i]``; ``failed``
    maps the paths that could not be read to their error.

    ``present[modality]`` ``(N,)`` bool is the mask of files that have that stream: a file without it (a video
    without a soundtrack, an audio-only file) has NaN features there. ``no_audio`` lists the paths without a
    soundtrack. ``coverage[i][modality]`` is, per clip, the fraction the stream really fills (1.0 but where a
    stream ends inside a clip and the rest is padding).

    Features over time (a ``stride`` or ``segments`` run): ``features[modality]`` is ``(R, D)`` (or ``(R, clips,
    D)``, or a map's shape per row), the rows of every file one after another; ``times`` ``(R, 2)`` float64 is each
    row's start and end (seconds), ``row_file`` ``(R,)`` the index into ``paths`` of its file and ``segments`` each
    row's ``label`` and ``id`` (annotated segments; empty dicts otherwise). :meth:`sequences` gives each file's
    ``(T_i, ...)``."""

    paths: list[str]
    features: dict[str, torch.Tensor]
    clip_starts: list[list[float]]
    failed: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    no_audio: list[str] = field(default_factory=list)
    present: dict[str, torch.Tensor] = field(default_factory=dict)
    coverage: list[dict[str, list[float]]] = field(default_factory=list)
    times: torch.Tensor | None = None
    row_file: torch.Tensor | None = None
    segments: list[dict[str, Any]] | None = None

    def __getitem__(self, modality: str) -> torch.Tensor:
        return self.features[modality]

    def rows_of(self, i: int) -> slice:
        """The rows of file ``i`` (features over time)."""
        if self.row_file is None:
            raise ValueError("these features are one per file (no --stride or --segments): there are no rows")
        lo = int(torch.searchsorted(self.row_file, i))
        hi = int(torch.searchsorted(self.row_file, i, right=True))
        return slice(lo, hi)

    def sequences(self, modality: str) -> list[torch.Tensor]:
        """Each file's rows, ``[(T_i, D), ...]`` in ``paths`` order (features over time)."""
        return [self.features[modality][self.rows_of(i)] for i in range(len(self.paths))]

    def file_times(self, i: int) -> torch.Tensor:
        """``(T_i, 2)``: file ``i``'s rows' start and end times, seconds."""
        return self.times[self.rows_of(i)]


# What an index row keeps of a file's item beyond its path and clip starts (see ClipDataset).
_ITEM_FIELDS = ("duration", "has_audio", "missing", "coverage", "placement", "audio_starts", "distinct_starts",
                "version", "metadata", "times", "row_clips", "segments")


def ok_row(item: Mapping[str, Any]) -> dict[str, Any]:
    """The index row of a file whose features were computed (without where they are stored)."""
    return {"path": item["path"], "status": "ok", "clip_starts": item["starts"],
            **{k: item[k] for k in _ITEM_FIELDS if k in item}}


def missing_modalities(row: Mapping[str, Any]) -> list[str]:
    """The requested modalities a file has no stream of (folders before ``missing`` only said ``has_audio``)."""
    if "missing" in row:
        return list(row["missing"])
    return ["audio"] if row.get("has_audio") is False else []


def build_result(rows: Sequence[Mapping[str, Any]], feats: Sequence[Mapping[str, torch.Tensor]],
                 failed: Mapping[str, str], meta: Mapping[str, Any]) -> ExtractionResult:
    """An :class:`ExtractionResult` of the finished files' ``rows`` and their ``feats``, in that order."""
    modalities = meta["modalities"]
    timed = "timeline" in meta
    join = torch.cat if timed else torch.stack
    features = {m: join([f[m] for f in feats]) if feats else torch.empty(0, meta["feature_dims"][m])
                for m in modalities}
    for m, shape in (meta.get("feature_shapes") or {}).items():  # maps: each clip's (C, H', W') or (C, T', ...)
        features[m] = features[m].reshape(*features[m].shape[:-1], *shape)
    missing = [set(missing_modalities(r)) for r in rows]
    present = {m: torch.tensor([m not in gone for gone in missing], dtype=torch.bool) for m in modalities}
    extra: dict[str, Any] = {}
    if timed:
        counts = [len(r["times"]) for r in rows]
        extra = {"times": torch.tensor([t for r in rows for t in r["times"]], dtype=torch.float64).reshape(-1, 2),
                 "row_file": torch.repeat_interleave(torch.arange(len(rows)), torch.tensor(counts, dtype=torch.long)),
                 "segments": [s for r in rows for s in r.get("segments") or [{}] * len(r["times"])]}
    return ExtractionResult(paths=[r["path"] for r in rows], features=features,
                            clip_starts=[r["clip_starts"] for r in rows], failed=dict(failed), meta=dict(meta),
                            no_audio=[r["path"] for r, gone in zip(rows, missing) if "audio" in gone],
                            present=present, coverage=[dict(r.get("coverage") or {}) for r in rows], **extra)


_CHECKED_META = ("model_fingerprint", "modalities", "layer", "clip_agg", "normalize", "clips_per_video",
                 "preprocessing", "dtype", "sampling", "decoder", "maps", "timeline")
# Settings that folders written before them do not record: what those folders ran with.
_META_DEFAULTS = {"sampling": "uniform", "decoder": "software", "maps": "grid"}


def check_meta(path: Path, meta: Mapping[str, Any]) -> None:
    """Refuse a folder whose ``meta.json`` was written with other settings (its features would not be comparable)."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: unreadable ({e}); remove the folder or choose another --out") from None
    diff = [k for k in _CHECKED_META if old.get(k, _META_DEFAULTS.get(k)) != meta.get(k, _META_DEFAULTS.get(k))]
    if diff:
        old_colour, colour = _colour_rule(old), _colour_rule(meta)
        why = ""
        if "preprocessing" in diff and old_colour != colour:
            was = repr(old_colour) if old_colour else "by the streams' tags (it was made before avidzoo recorded " \
                "the colour rule)"
            why = f": its frames were converted from YUV to RGB {was}, these by {colour!r}"
        raise ValueError(f"{path.parent}: made with other settings ({', '.join(diff)} differ{why}); "
                         "use another output folder, or --no-resume to start it over")


def _colour_rule(meta: Mapping[str, Any]) -> str | None:
    """The colour rule (``avidzoo.io.colour``) a folder's video features were decoded with; ``None`` for an
    audio-only folder or one made before the rule was recorded."""
    return ((meta.get("preprocessing") or {}).get("video") or {}).get("colour")


def claim_meta(out: Path, meta: Mapping[str, Any]) -> None:
    """Write ``meta.json`` if the folder has none, else check it. Creation is exclusive (a hard link of a complete
    temporary file), so of two writers that start together with different settings, one is refused."""
    dest = out / META_FILE
    if not dest.exists():
        fd, tmp = tempfile.mkstemp(prefix=".meta.", suffix=".tmp", dir=out)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(json.dumps(meta, indent=2) + "\n")
            try:
                os.link(tmp, dest)
                return
            except FileExistsError:
                pass
            except OSError:  # a filesystem without hard links: a plain atomic rename, last writer wins
                if not dest.exists():
                    os.replace(tmp, dest)
                    return
        finally:
            Path(tmp).unlink(missing_ok=True)
    check_meta(dest, meta)


def reset_output(out: Path) -> None:
    """Remove everything an extraction wrote in ``out`` (``--no-resume``; not while other writers run)."""
    for p in [out / INDEX_FILE, out / META_FILE, out / FAILED_FILE, *out.glob("parts/*.jsonl"),
              *out.glob("shards/*.safetensors"), *out.glob("shards/.*.tmp"), *out.glob("writers/*.lock")]:
        p.unlink(missing_ok=True)


def read_index(path: Path) -> list[dict]:
    """Lines of an index file; a torn line (a kill mid-write) is ignored."""
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return rows
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("path"), str) and row.get("status") in ("ok", "error"):
            rows.append(row)
    return rows


def read_rows(out: Path) -> dict[str, dict]:
    """The folder's consistent picture: one row per file over every writer's index part (and a snapshot
    ``index.jsonl``), ``{path: row}``. A row whose shard is not on disk is ignored; of several rows for a file, a
    success beats an error and then the newest wins (writers of the same settings compute the same features).
    Files of the snapshot come first in its order, then the others by path."""
    best: dict[str, tuple[tuple, dict]] = {}
    shards = {p.name for p in (out / "shards").glob("*.safetensors")}
    snapshot = read_index(out / INDEX_FILE)
    for n, row in enumerate([*snapshot, *(r for f in sorted((out / "parts").glob("*.jsonl")) for r in read_index(f))]):
        if row["status"] == "ok" and row.get("shard") not in shards:
            continue
        key = (row["status"] == "ok", float(row.get("t", 0.0)), n)
        if row["path"] not in best or key > best[row["path"]][0]:
            best[row["path"]] = (key, row)
    order = {r["path"]: i for i, r in enumerate(snapshot)}
    paths = sorted(best, key=lambda p: (order.get(p, len(order)), p))
    return {p: best[p][1] for p in paths}


def object_versions(urls: Sequence[str]) -> list[str | None]:
    """:func:`~avidzoo.io.remote.object_version` of each URL, 16 metadata requests at a time."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as ex:
        return list(ex.map(object_version, urls))


def done_paths(out: Path, retry_failed: bool,
               versions: Callable[[Sequence[str]], list[str | None]] = object_versions) -> set[str]:
    """Files any writer has finished (failed ones too, unless ``retry_failed``), less the remote objects whose
    content changed since (their ETag or version id differs from the one recorded): those are done again.
    ``versions`` asks the store for the objects' versions now (the Ray engine asks from its tasks)."""
    rows = read_rows(out)
    done = {p for p, r in rows.items() if r["status"] == "ok" or not retry_failed}
    recorded = {p: rows[p]["version"] for p in done if is_url(p) and rows[p].get("version")}
    if recorded:
        now = dict(zip(recorded, versions(list(recorded))))
        done -= {p for p, v in recorded.items() if now[p] != v}
    return done


def new_writer_id() -> str:
    """A name no other writer, on this machine or another, will take: host, process and 32 random bits."""
    host = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:32] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


class ShardWriter:
    """One writer's output: its features in ``shards/<writer>-<seq>.safetensors`` (written atomically, every
    ``shard_size`` files) and its rows in ``parts/<writer>.jsonl`` (appended and fsynced after the shard is on disk,
    so an indexed row always has its data). Any number of writers can share a folder; a SIGKILL loses at most the
    buffered files. While it runs, the writer holds the file lock ``writers/<writer>.lock``, which tells other writers
    it is alive; see :func:`collect_garbage`."""

    def __init__(self, out: Path, shard_size: int, modalities: Sequence[str], writer: str | None = None) -> None:
        self.out, self.shard_size, self.modalities = out, shard_size, tuple(modalities)
        self.writer = writer or new_writer_id()
        for sub in ("shards", "parts", "writers"):
            (out / sub).mkdir(parents=True, exist_ok=True)
        self.lock: FileLock | None = FileLock(str(out / "writers" / f"{self.writer}.lock"))
        try:
            # Another writer may be testing this new lock for an instant (live_writers); wait for it.
            self.lock.acquire(timeout=30)
        except Timeout:
            raise
        except Exception:  # a filesystem without locks: others count an untestable lock as live; nothing is lost
            self.lock = None
        self.index = out / "parts" / f"{self.writer}.jsonl"
        self.seq = 0
        self.buffer: list[tuple[dict, dict]] = []
        self.buffered_rows = 0
        self.written = 0  # inputs indexed by this writer (their data on disk)
        self.seen = [0, 0]  # inputs with features given to this writer, and their rows (a row per input but timed)

    def rows_per_input(self) -> float | None:
        """Rows of features the inputs given so far averaged (1 without a timeline); ``None`` before any."""
        return self.seen[1] / self.seen[0] if self.seen[0] else None

    def add(self, item: dict, feats: dict | None) -> None:
        if feats is None:
            self._append([{"path": item["path"], "status": "error", "error": item["error"]}])
            return
        self.seen[0] += 1
        self.seen[1] += len(item["times"]) if "times" in item else 1
        self.buffer.append((item, feats))
        self.buffered_rows += len(item.get("times") or ())
        # rows over time are flushed by count too: long files' features stay bounded and a kill loses little
        if len(self.buffer) >= self.shard_size or self.buffered_rows >= _FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        name = f"{self.writer}-{self.seq:06d}.safetensors"
        buffer, self.buffer = self.buffer, []  # not written if this fails: a rerun redoes those inputs
        self.buffered_rows = 0
        # a file's features over time are its (T, ...) rows, one after another ("row": the first, "row_count")
        timed = [len(it["times"]) if "times" in it else None for it, _ in buffer]
        join = torch.stack if timed[0] is None else torch.cat
        tensors = {m: join([f[m] for _, f in buffer]).contiguous() for m in self.modalities}
        with atomic_path(self.out / "shards" / name) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "pt"})
            fsync(tmp)
        rows, at = [], 0
        for r, ((it, _), count) in enumerate(zip(buffer, timed)):
            rows.append({**ok_row(it), "shard": name, "row": r if count is None else at,
                         **({"row_count": count} if count is not None else {})})
            at += count or 0
        self._append(rows)  # after the shard is on disk: an indexed row always has its data
        self.seq += 1
        self.written += len(rows)

    def _append(self, rows: list[dict]) -> None:
        t = time.time()
        with open(self.index, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps({**r, "t": t}) + "\n" for r in rows))
            f.flush()
            os.fsync(f.fileno())

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self.lock is not None:
                self.lock.release()


_FLUSH_ROWS = 1024  # rows over time a writer buffers before it writes a shard

# OS errors that mean the output folder cannot take more, and how to say so
_NO_ROOM = {errno.ENOSPC: "its disk is full", errno.EDQUOT: "its disk quota is reached",
            errno.EROFS: "it is on a read-only file system", errno.EFBIG: "a file outgrew the size its system allows"}


def no_room_error(e: BaseException, out: Path, written: int, left: int, row_bytes: int,
                  rows_per_input: float | None = 1.0) -> OutputWriteError | None:
    """The :class:`OutputWriteError` that ``e`` means if it says the output folder ``out`` cannot take more (an
    ``OSError``, or safetensors' error, which names the OS error in its message), else ``None``: one line with the
    folder, why, what is kept, about how much the ``left`` inputs still need and what to do. An input takes
    ``rows_per_input`` rows of ``row_bytes`` and an index row: over time, the rows the run's files averaged so far
    (``None``: none yet, so the need is given per row)."""
    code = e.errno if isinstance(e, OSError) else None
    if code not in _NO_ROOM:
        found = re.search(r"os error (\d+)", str(e))
        code = int(found.group(1)) if found else None
    if code not in _NO_ROOM:
        return None
    if rows_per_input is None:
        need = f"need about {human_size(row_bytes)} per row of their features over time"
    else:
        need = f"need about {human_size(left * (row_bytes * rows_per_input + _INDEX_ROW_BYTES))} more"
        if rows_per_input != 1:
            need += f" (at {rows_per_input:,.1f}".removesuffix(".0") + " rows a file, this run's average)"
    try:
        free = f", {human_size(shutil.disk_usage(out).free)} free there" if code != errno.EROFS else ""
    except OSError:
        free = ""
    return OutputWriteError(
        f"{out}: cannot write the features, {_NO_ROOM[code]} ({os.strerror(code)}). {written} input(s) of this run "
        f"are written and kept; the {left} left {need}{free}. Make room and rerun, or move the folder to a disk "
        "with room and rerun with --out there: finished inputs are not redone")


_INDEX_ROW_BYTES = 512  # about what one input's index row takes


def human_size(n: float) -> str:
    """``n`` bytes as people read them (``50.7 kB``)."""
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            break
        n /= 1000
    return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"


def fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _shard_writer(name: str) -> str:
    """The writer of a shard (``WRITER-SEQ.safetensors``) or of a temporary one (``.WRITER-SEQ.safetensors.X.tmp``)."""
    return name.lstrip(".").split(".safetensors")[0].rsplit("-", 1)[0]


def _indexed_shards(out: Path) -> set[str]:
    """Shard names any index row refers to (every writer's part and the snapshot)."""
    rows = [r for f in (out / "parts").glob("*.jsonl") for r in read_index(f)] + read_index(out / INDEX_FILE)
    return {r["shard"] for r in rows if "shard" in r}


def live_writers(out: Path) -> set[str]:
    """Writers whose lock is held now (their process is running). A lock that cannot be tested counts as live."""
    live = set()
    for lock_file in (out / "writers").glob("*.lock"):
        lock = FileLock(str(lock_file))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            live.add(lock_file.stem)
        except Exception:
            live.add(lock_file.stem)
        else:
            lock.release()
    return live


def collect_garbage(out: Path, keep: Iterable[str] = ()) -> list[Path]:
    """Remove what writers that are no longer running left behind: shards no index row refers to and temporary
    shard files (a kill during a write). Writers in ``keep`` and those holding their lock are left alone, so this is
    safe while others run. Returns the removed files."""
    alive = live_writers(out) | set(keep)
    used = _indexed_shards(out)
    removed = []
    for f in [*(out / "shards").glob("*.safetensors"), *(out / "shards").glob(".*.tmp")]:
        if _shard_writer(f.name) in alive or (f.suffix == ".safetensors" and f.name in used):
            continue
        f.unlink(missing_ok=True)
        removed.append(f)
    return removed


def write_snapshot(out: Path, order: Sequence[str] = ()) -> list[dict]:
    """Write ``index.jsonl``: the consistent picture (:func:`read_rows`), one line per file, ``order`` first, and
    ``failed.txt``, the paths of the failed files (their errors are in the index), one a line: a list that
    ``avidzoo extract`` takes as input for another try. They are a convenience for people and tools; readers of the
    folder use every writer's part, so they may lag behind them."""
    rows = read_rows(out)
    position = {p: i for i, p in enumerate(order)}
    ordered = sorted(rows.values(), key=lambda r: (position.get(r["path"], len(position)), r["path"]))
    for name, text in ((INDEX_FILE, "".join(json.dumps(r) + "\n" for r in ordered)),
                       (FAILED_FILE, "".join(r["path"] + "\n" for r in ordered if r["status"] == "error"))):
        with atomic_path(out / name) as tmp:
            tmp.write_text(text, encoding="utf-8")
            fsync(tmp)
    return ordered


@dataclass
class StoreStatus:
    """Where a folder stands across all writers: files ``done`` and ``failed`` (``{path: error}``), ``remaining``
    of the given inputs, writers seen and those running now, and garbage a finished writer would remove."""

    done: int
    failed: dict[str, str]
    remaining: list[str] | None
    writers: list[str]
    running: list[str]
    orphans: int

    def __str__(self) -> str:
        rem = "?" if self.remaining is None else str(len(self.remaining))
        return (f"done: {self.done}, failed: {len(self.failed)}, remaining: {rem}; writers: {len(self.writers)} "
                f"({len(self.running)} running); orphaned shard files: {self.orphans}")


def status(out: str | os.PathLike, inputs: Sequence[str | os.PathLike] | None = None) -> StoreStatus:
    """The :class:`StoreStatus` of an output folder (``inputs``: the full list of files, for ``remaining``)."""
    out = Path(out)
    rows = read_rows(out)
    done = sum(r["status"] == "ok" for r in rows.values())
    failed = {p: r.get("error", "") for p, r in rows.items() if r["status"] == "error"}
    # a tar shard counts as begun once any of its members has a row (its members are not listed before it is read)
    shard_inputs = {str(i) for i in inputs or () if is_shard(i)}
    begun = {member_shard(p, shard_inputs) for p in rows} if shard_inputs else set()
    remaining = None if inputs is None else [str(p) for p in inputs if str(p) not in rows and str(p) not in begun]
    writers = sorted({f.stem for f in (out / "parts").glob("*.jsonl")})
    running = sorted(live_writers(out))
    used = _indexed_shards(out)
    orphans = sum(1 for f in (out / "shards").glob("*.safetensors") if f.name not in used
                  and _shard_writer(f.name) not in running) + sum(1 for f in (out / "shards").glob(".*.tmp")
                                                                   if _shard_writer(f.name) not in running)
    return StoreStatus(done, failed, remaining, writers, running, orphans)


def load_features(out: str | os.PathLike) -> ExtractionResult:
    """Read an output folder written by :func:`extract_features` back into an :class:`ExtractionResult`."""
    out = Path(out)
    meta = json.loads((out / META_FILE).read_text())
    shards: dict[str, dict[str, torch.Tensor]] = {}
    ok, feats, failed = [], [], {}
    for row in read_rows(out).values():
        if row["status"] != "ok":
            failed[row["path"]] = row.get("error", "")
            continue
        if row["shard"] not in shards:
            shards[row["shard"]] = load_file(str(out / "shards" / row["shard"]))
        ok.append(row)
        at = row["row"] if "row_count" not in row else slice(row["row"], row["row"] + row["row_count"])
        feats.append({m: shards[row["shard"]][m][at] for m in meta["modalities"]})
    return build_result(ok, feats, failed, meta)
