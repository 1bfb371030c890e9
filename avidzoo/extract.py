"""Feature extraction: media files in, embeddings out.

Data flows one way: paths -> DataLoader workers (decode clips, transform) -> batches of clips from several videos
-> the encoders on the device -> per-video aggregation -> safetensors shards + a JSON-lines index.

An output folder holds ``meta.json`` (model, weights fingerprint, preprocessing, settings), ``shards/*.safetensors``
(features of many videos each, rows in index order) and ``index.jsonl`` (one line per video: path, shard, row, clip
start times, status or error). Shards are written atomically and indexed only once on disk, so a run killed at any
point resumes without losing or repeating a video.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import math
import os
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ._env import autocast_dtype, default_device, init_distributed, show_progress
from ._files import atomic_path, write_text_atomic
from ._version import __version__
from .config import normalize_modalities
from .errors import DecodeError
from .factory import create_transforms, from_pretrained
from .io import MediaFile, find_media, uniform_starts
from .manifest import get_manifest
from .models.avid import AVIDModel
from .models.fuse import fuse_batchnorm

__all__ = ["FeatureExtractor", "extract_features", "load_features", "similarity", "ExtractionResult"]

log = logging.getLogger("avidzoo")

Layer = str  # "pool" | "proj" | "conv1" .. "conv5x"
INDEX_FILE = "index.jsonl"
META_FILE = "meta.json"


# -- data ------------------------------------------------------------------------------------------------------------
class ClipDataset(torch.utils.data.Dataset):
    """One item per media file: ``clips_per_video`` uniformly spaced clips, decoded and transformed.

    Item: ``{"index", "path", "starts", "duration", "video": (n, 3, T, S, S), "audio": (n, 1, T', F), "has_audio"}`` or
    ``{"index", "path", "error"}`` when the file cannot be read (the error is recorded, never raised).
    """

    def __init__(self, paths: Sequence[Path], transforms, modalities: Sequence[str], clips_per_video: int) -> None:
        self.paths = list(paths)
        self.transforms = transforms
        self.modalities = tuple(modalities)
        self.clips_per_video = clips_per_video
        pre = transforms.config
        self.video_cfg, self.audio_cfg = pre["video"], pre["audio"]
        # Clips of both modalities start together (as in pretraining at test time); the window is the longer one.
        self.window = max(float(pre[m]["clip_duration"]) for m in self.modalities)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        path = self.paths[i]
        try:
            with MediaFile(path, threads=1) as f:
                starts = uniform_starts(f.info.duration, self.window, self.clips_per_video)
                item: dict[str, Any] = {"index": i, "path": str(path), "starts": [round(t, 6) for t in starts],
                                        "duration": f.info.duration}
                if "video" in self.modalities:
                    v = self.video_cfg
                    frames = f.read_video(starts, num_frames=int(v["num_frames"]), fps=float(v["fps"]),
                                          short_side=int(v["resize"]))
                    item["video"] = self.transforms.video(torch.stack(frames))
                if "audio" in self.modalities:
                    item["has_audio"] = f.info.has_audio  # without, its features are those of silence
                    a = self.audio_cfg
                    waves = f.read_audio(starts, float(a["clip_duration"]), sample_rate=int(a["sample_rate"]))
                    item["audio"] = self.transforms.audio(torch.stack(waves))
            return item
        except DecodeError as e:
            return {"index": i, "path": str(path), "error": f"{type(e).__name__}: {e.problem}"}
        except Exception as e:  # an unexpected failure on one file must not end a long run
            return {"index": i, "path": str(path), "error": f"{type(e).__name__}: {e}"}


def _collate(items: list[dict]) -> list[dict]:
    return items


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers decode; the main process owns the cores for the model


# -- results ---------------------------------------------------------------------------------------------------------
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


def similarity(video_emb: torch.Tensor, audio_emb: torch.Tensor, *, pairwise: bool = False) -> torch.Tensor:
    """Cosine similarity of video and audio embeddings ``(N, D)``: row by row ``(N,)``, or ``(N, M)`` with
    ``pairwise=True`` (video i against audio j, for retrieval). Use the projected (``layer="proj"``) embeddings:
    pretraining made those of a video and its own soundtrack agree."""
    v, a = F.normalize(video_emb.float(), dim=-1), F.normalize(audio_emb.float(), dim=-1)
    return v @ a.transpose(-1, -2) if pairwise else (v * a).sum(-1)


# -- the extractor ---------------------------------------------------------------------------------------------------
def _parse_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        return autocast_dtype(device)
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
             "half": torch.float16, "fp32": torch.float32, "float32": torch.float32, "float": torch.float32}
    if dtype not in names:
        raise ValueError(f"dtype must be one of bf16, fp16, fp32, got {dtype!r}")
    return names[dtype]


def _model_fingerprint(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class FeatureExtractor:
    """Embeddings from AVID encoders, for files or for tensors you decoded yourself.

    Args:
        model: an :class:`AVIDModel`, or anything :func:`avidzoo.from_pretrained` accepts.
        modalities: towers to run; default every tower the model has.
        clips_per_video: clips per file, uniformly spaced (the original evaluation's ``linspace`` rule).
        clip_agg: ``"mean"`` or ``"max"`` over a file's clips, or ``"none"`` to keep every clip.
        layer: ``"pool"`` (512-d pooled features), ``"proj"`` (128-d pretraining embedding), or an intermediate map
            ``"conv1"`` .. ``"conv5x"`` pooled to the original linear-probe grid (manifest ``protocols``).
        normalize: L2-normalise each clip's features (and the aggregate).
        batch_size: clips per forward pass (mixed across files); halved automatically on CUDA out-of-memory.
        num_workers: DataLoader processes that decode and transform.
        device: default CUDA when available. dtype: ``"bf16"``/``"fp16"``/``"fp32"``; default bf16 (or fp16) autocast
            on CUDA, fp32 on CPU. channels_last: channels_last_3d memory format for the video encoder.
        compile: wrap the encoders in ``torch.compile``. fuse: fold BatchNorm into the convolutions (inference only).
    """

    def __init__(
        self,
        model: AVIDModel | str | os.PathLike,
        *,
        modalities: str | Sequence[str] | None = None,
        clips_per_video: int = 10,
        clip_agg: Literal["mean", "max", "none"] = "mean",
        layer: Layer = "pool",
        normalize: bool = False,
        batch_size: int | None = None,
        num_workers: int | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        channels_last: bool = True,
        compile: bool = False,
        fuse: bool = True,
        progress: bool | None = None,
    ) -> None:
        wanted = normalize_modalities(modalities) if modalities is not None else None
        if not isinstance(model, AVIDModel):
            model = from_pretrained(model, modalities=wanted)
        self.modalities = tuple(wanted or model.modalities)
        missing = [m for m in self.modalities if m not in model.modalities]
        if missing:
            raise ValueError(f"the model has no {' or '.join(missing)} tower (it has {model.modalities})")
        if clip_agg not in ("mean", "max", "none"):
            raise ValueError(f"clip_agg must be 'mean', 'max' or 'none', got {clip_agg!r}")
        if clips_per_video < 1:
            raise ValueError(f"clips_per_video must be at least 1, got {clips_per_video}")
        self.grids = get_manifest().data["protocols"]["intermediate_features"]
        if layer not in ("pool", "proj"):
            for m in self.modalities:
                if layer not in self.grids[m]["grid"]:
                    raise ValueError(f"layer {layer!r} is not one of pool, proj, "
                                     f"{', '.join(self.grids[m]['grid'])} for the {m} tower")
        if layer == "proj" and model.embed_dim is None:
            raise ValueError("layer='proj' needs the projection heads, which this model does not have")
        self.model = model.eval()
        self.layer, self.clip_agg, self.normalize = layer, clip_agg, normalize
        self.clips_per_video = clips_per_video
        self.device = torch.device(device) if device is not None else default_device()
        self.dtype = _parse_dtype(dtype, self.device)
        cuda = self.device.type == "cuda"
        self.batch_size = batch_size or (64 if cuda else 8)
        self.num_workers = num_workers if num_workers is not None else min(8 if cuda else 1, os.cpu_count() or 1)
        self.channels_last = channels_last
        self.progress = progress
        net = fuse_batchnorm(model) if fuse else model
        net = net.to(self.device)
        if channels_last and "video" in self.modalities:
            net.video_encoder.to(memory_format=torch.channels_last_3d)
        self._net = net
        self._encode = {m: self._encoder_fn(m) for m in self.modalities}
        if compile:
            self._encode = {m: torch.compile(fn, dynamic=True) for m, fn in self._encode.items()}
        self.transforms = create_transforms(model)
        self.fingerprint = _model_fingerprint(model)

    # -- encoding of ready model inputs ---------------------------------------------------------------------------
    def _encoder_fn(self, modality: str):
        net, layer = self._net, self.layer
        if layer in ("pool", "proj"):
            enc = net.encode_video if modality == "video" else net.encode_audio
            return lambda x: enc(x, project=layer == "proj")
        grid = self.grids[modality]
        size = grid["grid"][layer]
        pools = {("video", "max"): F.adaptive_max_pool3d, ("video", "avg"): F.adaptive_avg_pool3d,
                 ("audio", "max"): F.adaptive_max_pool2d, ("audio", "avg"): F.adaptive_avg_pool2d}
        pool = pools[(modality, grid["pool"])]

        def encode(x: torch.Tensor) -> torch.Tensor:
            return torch.flatten(pool(net.forward_features(x, modality=modality)[layer], size), 1)

        return encode

    def feature_dim(self, modality: str) -> int:
        if self.layer == "pool":
            return self.model.num_features
        if self.layer == "proj":
            return int(self.model.embed_dim)
        channels = self.model.feature_channels(modality)[self.layer]
        size = self.grids[modality]["grid"][self.layer]
        return channels * math.prod(size)

    @torch.inference_mode()
    def encode(self, video: torch.Tensor | None = None, audio: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-clip features of model inputs: video ``(B, 3, T, H, W)``, audio ``(B, 1, T, F)`` (already
        transformed). Returns ``{modality: (B, D)}`` float32 on the CPU, L2-normalised if ``normalize``."""
        out = {}
        for modality, x in (("video", video), ("audio", audio)):
            if x is None:
                continue
            if modality not in self.modalities:
                raise ValueError(f"this extractor runs {self.modalities}, not {modality}")
            out[modality] = self._run(modality, x)
        return out

    def _run(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """Forward in chunks of ``batch_size``; on out-of-memory, halve the chunk and retry (and keep it halved)."""
        parts = []
        i = 0
        while i < x.shape[0]:
            chunk = x[i:i + self.batch_size]
            try:
                parts.append(self._forward(modality, chunk))
                i += chunk.shape[0]
            except torch.OutOfMemoryError:
                if self.batch_size == 1:
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                self.batch_size = max(1, self.batch_size // 2)
                log.warning("out of memory: batch size lowered to %d clips", self.batch_size)
        return torch.cat(parts) if parts else torch.empty(0)

    def _forward(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if modality == "video" and self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            z = self._encode[modality](x)
        z = z.float()
        if self.normalize:
            z = F.normalize(z, dim=-1)
        return z.cpu()

    def __call__(
        self, frames: torch.Tensor | None = None, waveforms: torch.Tensor | None = None,
        sample_rate: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-clip features of raw clips: frames ``(B, T, H, W, 3)`` or one clip ``(T, H, W, 3)`` (uint8, or float
        in [0, 255]) and/or waveforms ``(B, C, N)`` or one clip ``(C, N)`` / ``(N,)`` at ``sample_rate`` (default: the
        model's, 24 kHz). Returns ``{modality: (B, D)}``, B = 1 for a single clip."""
        video = self.transforms.video(frames) if frames is not None else None
        audio = self.transforms.audio(waveforms, sample_rate) if waveforms is not None else None
        if video is not None and video.dim() == 4:  # one clip (3, T, S, S)
            video = video[None]
        if audio is not None and audio.dim() == 3:  # one clip (1, T, F)
            audio = audio[None]
        return self.encode(video=video, audio=audio)

    def aggregate(self, clip_features: torch.Tensor) -> torch.Tensor:
        """``(clips, D)`` -> ``(D,)`` by ``clip_agg`` (``"none"`` keeps ``(clips, D)``)."""
        if self.clip_agg == "none":
            return clip_features
        z = clip_features.mean(0) if self.clip_agg == "mean" else clip_features.amax(0)
        return F.normalize(z, dim=-1) if self.normalize else z

    # -- files --------------------------------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        cfg = self.model.config
        return {
            "avidzoo_version": __version__,
            "model": cfg.get("model"), "weights": cfg.get("weights"), "method": cfg.get("method"),
            "source_hashes": (cfg.get("source") or {}).get("hashes"),
            "model_fingerprint": self.fingerprint,
            "preprocessing": {m: cfg["preprocessing"][m] for m in self.modalities},
            "modalities": list(self.modalities), "layer": self.layer, "clip_agg": self.clip_agg,
            "normalize": self.normalize, "clips_per_video": self.clips_per_video,
            "feature_dims": {m: self.feature_dim(m) for m in self.modalities},
            "dtype": str(self.dtype).removeprefix("torch."),
            "license": cfg.get("license"),
        }

    def extract(
        self,
        inputs: str | os.PathLike | Iterable[str | os.PathLike],
        out: str | os.PathLike | None = None,
        *,
        resume: bool = True,
        retry_failed: bool = False,
        shard_size: int = 256,
    ) -> ExtractionResult | Path:
        """Features of every file in ``inputs`` (see :func:`avidzoo.io.find_media`).

        Without ``out``: an :class:`ExtractionResult` in memory. With ``out``: written to that folder (see the module
        docstring), which is returned. ``resume`` skips files already in the folder's index (failed ones too, unless
        ``retry_failed``). Under ``torchrun`` each rank takes a disjoint share and rank 0 merges the index.
        """
        paths = find_media(inputs)
        rank, world, _ = init_distributed()
        if out is None:
            if world > 1:
                raise ValueError("under torchrun, pass out=DIR: each rank writes its own shards")
            return self._extract_to_memory(paths)
        return self._extract_to_dir(paths, Path(out), resume=resume, retry_failed=retry_failed,
                                    shard_size=shard_size, rank=rank, world=world)

    def _loader(self, paths: Sequence[Path]):
        dataset = ClipDataset(paths, self.transforms, self.modalities, self.clips_per_video)
        return torch.utils.data.DataLoader(
            dataset, batch_size=1, shuffle=False, num_workers=self.num_workers, collate_fn=_collate,
            pin_memory=self.device.type == "cuda", worker_init_fn=_worker_init if self.num_workers else None,
            prefetch_factor=4 if self.num_workers else None, persistent_workers=False,
        )

    def _iterate(self, paths: Sequence[Path]):
        """Yield ``(item, features or None)`` per file, in completion order; clips of several files share batches."""
        bar = tqdm(total=len(paths), unit="video", disable=not show_progress(self.progress), dynamic_ncols=True)
        pending: deque[dict] = deque()  # files whose clips are queued
        queued = 0
        clips_done, t0 = 0, time.perf_counter()

        def run_queue(flush: bool):
            nonlocal queued, clips_done
            while pending and (queued >= self.batch_size or flush):
                take, members = 0, []
                for item in pending:  # whole files, up to about batch_size clips
                    members.append(item)
                    take += item["n"]
                    if take >= self.batch_size:
                        break
                inputs = {m: torch.cat([it[m] for it in members]) for m in self.modalities}
                feats = self.encode(**inputs)
                offset = 0
                for it in members:
                    pending.popleft()
                    queued -= it["n"]
                    per_file = {m: self.aggregate(feats[m][offset:offset + it["n"]]) for m in self.modalities}
                    offset += it["n"]
                    clips_done += it["n"]
                    yield it, per_file
                elapsed = time.perf_counter() - t0
                bar.set_postfix(clips_s=f"{clips_done / elapsed:.1f}", refresh=False)

        try:
            for batch in self._loader(paths):
                for item in batch:
                    if "error" in item:
                        bar.update(1)
                        yield item, None
                        continue
                    item["n"] = len(item["starts"])
                    pending.append(item)
                    queued += item["n"]
                for done in run_queue(flush=False):
                    bar.update(1)
                    yield done
            for done in run_queue(flush=True):
                bar.update(1)
                yield done
        finally:
            bar.close()

    def _extract_to_memory(self, paths: Sequence[Path]) -> ExtractionResult:
        rows: dict[int, tuple[dict, dict]] = {}
        failed = {}
        for item, feats in self._iterate(paths):
            if feats is None:
                failed[item["path"]] = item["error"]
            else:
                rows[item["index"]] = (item, feats)
        order = sorted(rows)
        features = {m: torch.stack([rows[i][1][m] for i in order]) if order else
                    torch.empty(0, self.feature_dim(m)) for m in self.modalities}
        return ExtractionResult(paths=[rows[i][0]["path"] for i in order], features=features,
                                clip_starts=[rows[i][0]["starts"] for i in order], failed=failed, meta=self.meta(),
                                no_audio=[rows[i][0]["path"] for i in order if rows[i][0].get("has_audio") is False])

    def _extract_to_dir(self, paths, out: Path, *, resume, retry_failed, shard_size, rank, world) -> Path:
        out.mkdir(parents=True, exist_ok=True)
        meta = self.meta()
        meta_path = out / META_FILE
        if rank == 0:
            if meta_path.exists() and resume:
                _check_meta(meta_path, meta)
            elif not resume:
                _reset_output(out)
            meta["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            if not meta_path.exists():
                write_text_atomic(meta_path, json.dumps(meta, indent=2) + "\n")
        _barrier(world)
        if rank != 0:
            _check_meta(meta_path, meta)
        done = _done_paths(out, retry_failed) if resume else set()
        _barrier(world)  # every rank has read the same index before anyone appends to it
        todo = [p for p in paths if str(p) not in done]
        mine = todo[rank::world]
        writer = _ShardWriter(out, rank, shard_size, self.modalities)
        try:
            for item, feats in self._iterate(mine):
                writer.add(item, feats)
        finally:
            writer.close()
        _barrier(world)
        if rank == 0:
            _merge_index(out, [str(p) for p in paths])
        _barrier(world)
        return out


# -- output folder ---------------------------------------------------------------------------------------------------
_CHECKED_META = ("model_fingerprint", "modalities", "layer", "clip_agg", "normalize", "clips_per_video",
                 "preprocessing", "dtype")


def _check_meta(path: Path, meta: Mapping[str, Any]) -> None:
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: unreadable ({e}); remove the folder or choose another --out") from None
    diff = [k for k in _CHECKED_META if old.get(k) != meta.get(k)]
    if diff:
        raise ValueError(f"{path.parent}: made with other settings ({', '.join(diff)} differ); "
                         "use another output folder, or --no-resume to start it over")


def _reset_output(out: Path) -> None:
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


def _index_files(out: Path) -> list[Path]:
    return [out / INDEX_FILE, *sorted((out / "parts").glob("index-*.jsonl"))]


def _done_paths(out: Path, retry_failed: bool) -> set[str]:
    done = set()
    for f in _index_files(out):
        for row in read_index(f):
            ok = row.get("status") == "ok" and (out / "shards" / row.get("shard", "")).is_file()
            if ok or (row.get("status") == "error" and not retry_failed):
                done.add(row["path"])
    return done


class _ShardWriter:
    """Buffers per-file features; every ``shard_size`` files writes a shard atomically, then indexes its rows."""

    def __init__(self, out: Path, rank: int, shard_size: int, modalities: Sequence[str]) -> None:
        self.out, self.rank, self.shard_size, self.modalities = out, rank, shard_size, tuple(modalities)
        (out / "shards").mkdir(exist_ok=True)
        (out / "parts").mkdir(exist_ok=True)
        self.index = out / "parts" / f"index-{rank:03d}.jsonl"
        existing = [int(p.stem.split("-")[-1]) for p in (out / "shards").glob(f"r{rank:03d}-*.safetensors")]
        _remove_stale_temps(out, f"r{rank:03d}-")  # a killed run of this rank can leave one half-written shard
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
            _fsync(tmp)
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


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _merge_index(out: Path, order: Sequence[str]) -> None:
    """Write ``index.jsonl``: one line per file (the newest), in input order; drop shards no line refers to."""
    latest: dict[str, dict] = {}
    for f in _index_files(out):
        for row in read_index(f):
            if row.get("status") == "ok" and not (out / "shards" / row.get("shard", "")).is_file():
                continue
            latest[row["path"]] = row
    position = {p: i for i, p in enumerate(order)}
    rows = sorted(latest.values(), key=lambda r: (position.get(r["path"], len(position)), r["path"]))
    with atomic_path(out / INDEX_FILE) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        _fsync(tmp)
    for part in (out / "parts").glob("index-*.jsonl"):
        part.unlink()
    used = {r["shard"] for r in rows if r.get("status") == "ok"}
    for shard in (out / "shards").glob("*.safetensors"):
        if shard.name not in used:
            shard.unlink()
    _remove_stale_temps(out)  # every rank has finished: no temporary file here is still being written


def _remove_stale_temps(out: Path, prefix: str = "") -> None:
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


# -- torch.distributed -----------------------------------------------------------------------------------------------
def _barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()


def extract_features(
    model: AVIDModel | str | os.PathLike,
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    out: str | os.PathLike | None = None,
    resume: bool = True,
    retry_failed: bool = False,
    shard_size: int = 256,
    **kwargs: Any,
) -> ExtractionResult | Path:
    """Embeddings of media files. ``kwargs`` configure the :class:`FeatureExtractor` (modalities, clips_per_video,
    clip_agg, layer, normalize, batch_size, num_workers, device, dtype, channels_last, compile).

    Returns an :class:`ExtractionResult` when ``out`` is None, else the output folder (read it back with
    :func:`load_features`)."""
    extractor = FeatureExtractor(model, **kwargs)
    return extractor.extract(inputs, out, resume=resume, retry_failed=retry_failed, shard_size=shard_size)


def score_av(
    model: AVIDModel | str | os.PathLike,
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    out_csv: str | os.PathLike | None = None,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Audio-visual correspondence of each file: the cosine of its video and audio projected embeddings, averaged
    over clips, and its percentile within the run. Low scores flag soundtracks that do not belong to the picture
    (Robust-xID's faulty positives). Returns rows sorted from the lowest score, then the files without a soundtrack
    and those that failed (``score`` None, ``error`` says why); ``out_csv`` also writes them."""
    kwargs.update(modalities=("video", "audio"), layer="proj", normalize=True, clip_agg="none")
    result = FeatureExtractor(model, **kwargs).extract(inputs)
    # A file without a soundtrack has nothing to agree with: it is listed, not ranked.
    silent = set(result.no_audio)
    keep = [i for i, p in enumerate(result.paths) if p not in silent]
    per_clip = similarity(result["video"][keep], result["audio"][keep])  # (N, clips)
    scores = per_clip.mean(-1)
    n = len(scores)
    order = torch.argsort(scores)
    percentile = torch.empty(n)
    percentile[order] = torch.arange(n, dtype=torch.float32) * (100.0 / max(n - 1, 1))
    rows = [{"path": result.paths[keep[i]], "score": float(scores[i]), "percentile": float(percentile[i]),
             "clip_scores": [round(float(s), 5) for s in per_clip[i]]} for i in order.tolist()]
    rows += [{"path": p, "score": None, "percentile": None, "error": "no audio stream"} for p in result.no_audio]
    rows += [{"path": p, "score": None, "percentile": None, "error": e} for p, e in result.failed.items()]
    if out_csv is not None:
        import csv
        import io

        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["path", "score", "percentile", "error"])
        for r in rows:
            w.writerow([r["path"], "" if r["score"] is None else f"{r['score']:.5f}",
                        "" if r["percentile"] is None else f"{r['percentile']:.1f}", r.get("error", "")])
        write_text_atomic(out_csv, buf.getvalue())
    return rows
