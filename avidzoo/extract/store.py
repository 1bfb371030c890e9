"""The output folder of an extraction: ``meta.json``, ``shards/*.safetensors`` and ``index.jsonl``.

``meta.json`` holds the model, weights fingerprint, preprocessing and settings; a shard holds the features of many
files (rows in index order); ``index.jsonl`` has one line per file (path, shard, row, clip start times, status or
error). While a run writes, each rank appends to ``parts/index-RRR.jsonl``; :func:`merge_index` folds the parts into
``index.jsonl``. Shards are written atomically and indexed only after they are on disk, so a run killed at any point
resumes without losing or repeating a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .._files import atomic_path

__all__ = ["INDEX_FILE", "META_FILE", "ExtractionResult", "check_meta", "reset_output", "read_index", "done_paths",
           "ShardWriter", "merge_index", "load_features"]

INDEX_FILE = "index.jsonl"
META_FILE = "meta.json"


@dataclass
class ExtractionResult:
    """Features of a run. ``features[modality]`` is ``(N, D)`` (or ``(N, clips, D)`` with ``clip_agg="none"``), row i
    belonging to ``paths[i]``; ``failed`` maps the paths that could not be read to their error; ``no_audio`` lists
    the paths without a soundtrack, whose audio features are those of silence (the original's zero filling)."""

    paths: list[str]
    features: dict[str, torch.Tensor]
    clip_starts: list[list[float]]
    failed: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    no_audio: list[str] = field(default_factory=list)

    def __getitem__(self, modality: str) -> torch.Tensor:
        return self.features[modality]


_CHECKED_META = ("model_fingerprint", "modalities", "layer", "clip_agg", "normalize", "clips_per_video",
                 "preprocessing", "dtype")


def check_meta(path: Path, meta: Mapping[str, Any]) -> None:
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: unreadable ({e}); remove the folder or choose another --out") from None
    diff = [k for k in _CHECKED_META if old.get(k) != meta.get(k)]
    if diff:
        raise ValueError(f"{path.parent}: made with other settings ({', '.join(diff)} differ); "
                         "use another output folder, or --no-resume to start it over")


def reset_output(out: Path) -> None:
    for p in [out / INDEX_FILE, out / META_FILE, *out.glob("parts/*.jsonl"), *out.glob("shards/*.safetensors"),
              *out.glob("shards/.*.tmp")]:
        p.unlink(missing_ok=True)


def read_index(path: Path) -> list[dict]:
    """Lines of an index file; a torn last line (a kill mid-write) is ignored."""
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return rows
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def index_files(out: Path) -> list[Path]:
    return [out / INDEX_FILE, *sorted((out / "parts").glob("index-*.jsonl"))]


def done_paths(out: Path, retry_failed: bool) -> set[str]:
    done = set()
    for f in index_files(out):
        for row in read_index(f):
            ok = row.get("status") == "ok" and (out / "shards" / row.get("shard", "")).is_file()
            if ok or (row.get("status") == "error" and not retry_failed):
                done.add(row["path"])
    return done


class ShardWriter:
    """Buffers per-file features; every ``shard_size`` files writes a shard atomically, then indexes its rows."""

    def __init__(self, out: Path, rank: int, shard_size: int, modalities: Sequence[str]) -> None:
        self.out, self.rank, self.shard_size, self.modalities = out, rank, shard_size, tuple(modalities)
        (out / "shards").mkdir(exist_ok=True)
        (out / "parts").mkdir(exist_ok=True)
        self.index = out / "parts" / f"index-{rank:03d}.jsonl"
        existing = [int(p.stem.split("-")[-1]) for p in (out / "shards").glob(f"r{rank:03d}-*.safetensors")]
        remove_stale_temps(out, f"r{rank:03d}-")  # a killed run of this rank can leave one half-written shard
        self.seq = max(existing, default=-1) + 1
        self.buffer: list[tuple[dict, dict]] = []

    def add(self, item: dict, feats: dict | None) -> None:
        if feats is None:
            self._append([{"path": item["path"], "status": "error", "error": item["error"]}])
            return
        self.buffer.append((item, feats))
        if len(self.buffer) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        name = f"r{self.rank:03d}-{self.seq:06d}.safetensors"
        tensors = {m: torch.stack([f[m] for _, f in self.buffer]).contiguous() for m in self.modalities}
        with atomic_path(self.out / "shards" / name) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "pt"})
            fsync(tmp)
        rows = [{"path": it["path"], "status": "ok", "shard": name, "row": r, "clip_starts": it["starts"],
                 "duration": it["duration"], **({"has_audio": it["has_audio"]} if "has_audio" in it else {})}
                for r, (it, _) in enumerate(self.buffer)]
        self._append(rows)  # after the shard is on disk: an indexed row always has its data
        self.seq += 1
        self.buffer = []

    def _append(self, rows: list[dict]) -> None:
        with open(self.index, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows))
            f.flush()
            os.fsync(f.fileno())

    def close(self) -> None:
        self.flush()


def fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def merge_index(out: Path, order: Sequence[str]) -> None:
    """Write ``index.jsonl``: one line per file (the newest), in input order; drop shards no line refers to."""
    latest: dict[str, dict] = {}
    for f in index_files(out):
        for row in read_index(f):
            if row.get("status") == "ok" and not (out / "shards" / row.get("shard", "")).is_file():
                continue
            latest[row["path"]] = row
    position = {p: i for i, p in enumerate(order)}
    rows = sorted(latest.values(), key=lambda r: (position.get(r["path"], len(position)), r["path"]))
    with atomic_path(out / INDEX_FILE) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        fsync(tmp)
    for part in (out / "parts").glob("index-*.jsonl"):
        part.unlink()
    used = {r["shard"] for r in rows if r.get("status") == "ok"}
    for shard in (out / "shards").glob("*.safetensors"):
        if shard.name not in used:
            shard.unlink()
    remove_stale_temps(out)  # every rank has finished: no temporary file here is still being written


def remove_stale_temps(out: Path, prefix: str = "") -> None:
    """Delete temporary shard files (``atomic_path`` names them ``.NAME.XXXX.tmp``) starting with ``prefix``."""
    for tmp in (out / "shards").glob(f".{prefix}*.tmp"):
        tmp.unlink(missing_ok=True)


def load_features(out: str | os.PathLike) -> ExtractionResult:
    """Read an output folder written by :func:`extract_features` back into an :class:`ExtractionResult`."""
    out = Path(out)
    meta = json.loads((out / META_FILE).read_text())
    rows = read_index(out / INDEX_FILE)
    shards: dict[str, dict[str, torch.Tensor]] = {}
    paths, starts, failed, no_audio = [], [], {}, []
    feats: dict[str, list[torch.Tensor]] = {m: [] for m in meta["modalities"]}
    for row in rows:
        if row["status"] != "ok":
            failed[row["path"]] = row.get("error", "")
            continue
        if row["shard"] not in shards:
            shards[row["shard"]] = load_file(str(out / "shards" / row["shard"]))
        for m in feats:
            feats[m].append(shards[row["shard"]][m][row["row"]])
        paths.append(row["path"])
        starts.append(row["clip_starts"])
        if row.get("has_audio") is False:
            no_audio.append(row["path"])
    features = {m: torch.stack(v) if v else torch.empty(0, meta["feature_dims"][m]) for m, v in feats.items()}
    return ExtractionResult(paths=paths, features=features, clip_starts=starts, failed=failed, meta=meta,
                            no_audio=no_audio)
