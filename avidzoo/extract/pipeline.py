"""The extraction pipeline: files -> DataLoader workers (decode, transform) -> batches of clips from several files
-> the encoders -> per-file aggregation -> memory or an output folder, with a progress bar and torchrun sharding."""

from __future__ import annotations

import datetime
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from .._env import default_device, init_distributed, show_progress, slurm_array_task
from .._version import __version__
from ..config import normalize_modalities
from ..errors import HardwareDecoderError
from ..factory import create_transforms, from_pretrained
from ..io import cuda_decoder_problem, find_media
from ..io.shards import shard_streams, streams_from_shard
from ..models.avid import AVIDModel
from .dataset import (
    CHUNK_CLIPS,
    ClipDataset,
    FileParts,
    ShardClips,
    collate_items,
    init_worker,
    join_parts,
    prepare_batch,
    stage_item,
    threaded_items,
    threaded_parts,
)
from .encoder import ClipEncoder, Layer
from .plan import ThreadPlan, plan_threads
from .store import (
    ExtractionResult,
    ShardWriter,
    build_result,
    claim_meta,
    collect_garbage,
    done_paths,
    new_writer_id,
    no_room_error,
    ok_row,
    reset_output,
    write_snapshot,
)
from .timeline import Timeline

__all__ = ["FeatureExtractor", "extract_features", "ClipBatcher", "PartJoiner", "parse_shard", "select_shard"]


class ClipBatcher:
    """Packs whole files' clips into batches of about ``batch_size`` clips for ``encoder``, and hands back each
    file's aggregated features as soon as its batch has run.

    ``add(item)`` queues a decoded item (``item["n"]`` clips) and yields the files it completes; ``flush()`` runs
    what is left. Both yield ``(item, {modality: features})``. ``clips_done`` counts the clips encoded.
    ``prepare(items)`` makes one batch's model inputs on the device (:func:`~avidzoo.extract.dataset.prepare_batch`).
    """

    def __init__(self, encoder: ClipEncoder, prepare: Callable[[list[dict]], dict[str, torch.Tensor]]) -> None:
        self.encoder = encoder
        self.prepare = prepare
        self.pending: deque[dict] = deque()
        self.queued = 0
        self.clips_done = 0

    def add(self, item: dict) -> Iterator[tuple[dict, dict[str, torch.Tensor]]]:
        self.pending.append(item)
        self.queued += item["n"]
        yield from self._run(flush=False)

    def flush(self) -> Iterator[tuple[dict, dict[str, torch.Tensor]]]:
        yield from self._run(flush=True)

    def _run(self, flush: bool) -> Iterator[tuple[dict, dict[str, torch.Tensor]]]:
        enc = self.encoder
        while self.pending and (self.queued >= enc.batch_size or flush):
            take, members = 0, []
            for item in self.pending:  # whole files, up to about batch_size clips
                members.append(item)
                take += item["n"]
                if take >= enc.batch_size:
                    break
            feats = enc.encode(**self.prepare(members))
            for it, per_file in zip(members, enc.per_file(feats, members)):
                self.pending.popleft()
                self.queued -= it["n"]
                for m in ("video", "audio"):  # the inputs are spent: a writer keeps items until its shard is full
                    it.pop(m, None)
                self.clips_done += it["n"]
                yield it, per_file


class FeatureExtractor(ClipEncoder):
    """Embeddings from AVID encoders, for files or for tensors you decoded yourself.

    Args:
        model: an :class:`AVIDModel`, or anything :func:`avidzoo.from_pretrained` accepts.
        modalities: towers to run; default every tower the model has.
        clips_per_video: clips per file, uniformly spaced (the original evaluation's ``linspace`` rule; default 10);
            with ``stride`` or ``segments``, clips per row (default 1 on a grid, 10 in annotated segments).
        stride: features over time: a row every ``stride`` seconds, each the length of the longest clip of the
            requested towers, as many as the file's streams hold (:mod:`avidzoo.extract.timeline`).
        segments: features over time: back-to-back segments of this many seconds (``1.0``: AVE's and AVVP's one
            row per second), or a CSV of annotated segments ``path,start,end[,label][,id]`` (or its parsed mapping,
            :func:`~avidzoo.io.inputs.read_segments`), one row per segment. Row k's clips of every tower share their
            centre; rows come back with their times (:class:`~avidzoo.extract.store.ExtractionResult`).
        clip_agg: ``"mean"`` or ``"max"`` over a file's clips, or ``"none"`` to keep every clip.
        layer: ``"pool"`` (512-d pooled features), ``"proj"`` (128-d pretraining embedding), or an intermediate map
            ``"conv1"`` .. ``"conv5x"`` pooled to the original linear-probe grid (manifest ``protocols``).
        maps: for an intermediate layer, ``"grid"`` (default: pooled to the probe grid), ``"map"`` (its spatial map,
            time pooled as the probe pools: video ``(C, H', W')``, ``conv5x`` at 224 px ``(512, 7, 7)``; audio
            ``(C, F')``) or ``"full"`` (the whole map, ``(C, T', H', W')`` / ``(C, T', F')``). Features come back in
            that shape per clip (``feature_shapes`` in ``meta.json``); maps are much larger than vectors.
        normalize: L2-normalise each clip's features (and the aggregate).
        batch_size: clips per forward pass (mixed across files); halved automatically on CUDA out-of-memory.
        num_workers, decoder_threads, torch_threads: decoding processes, FFmpeg threads in each, and the model's
            torch threads; default a plan that never runs more threads than the cores this process may use
            (:func:`~avidzoo.extract.plan.plan_threads`; ``self.plan`` says what was chosen).
        preprocess: where crop, normalisation and the spectrogram run: ``"worker"`` (decoding processes, CPU),
            ``"device"`` (batched on the model's device; workers send uint8 crops and waveforms), ``"auto"``
            (device on CUDA, worker on CPU, the faster placement measured there).
        device: default CUDA when available. dtype: ``"bf16"``/``"fp16"``/``"fp32"``; default bf16 (or fp16) autocast
            on CUDA, fp32 on CPU. channels_last: channels_last_3d memory format for the video encoder.
        compile: wrap the encoders in ``torch.compile`` (a string: its ``mode``, e.g. ``"reduce-overhead"``, CUDA
            graphs). fuse: fold BatchNorm into the convolutions (inference only).
        sampling: ``"uniform"`` (the original rule) or ``"keyframe"``: each clip moved to the keyframe nearest its
            uniform start, so that no frame before it is decoded (much faster on long-GOP files; the starts differ
            from the original's, and the index records the real ones).
        decoder: ``"software"`` (FFmpeg on the CPU cores), ``"cuda"`` (NVDEC on the model's GPU: frames, colour
            conversion, resize and crop stay on the GPU; raises :class:`~avidzoo.errors.HardwareDecoderError` at once
            where the machine lacks it), or ``"auto"`` (default: ``cuda`` where the model is on a GPU that has it,
            else software). ``self.decoder`` and ``meta.json`` say which ran. The frames are the same ones by
            timestamp; their pixels differ from swscale's by rounding (docs/gpu_extraction.md).
    """

    def __init__(
        self,
        model: AVIDModel | str | os.PathLike,
        *,
        modalities: str | Sequence[str] | None = None,
        clips_per_video: int | None = None,
        clip_agg: Literal["mean", "max", "none"] = "mean",
        layer: Layer = "pool",
        normalize: bool = False,
        batch_size: int | None = None,
        num_workers: int | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        channels_last: bool = True,
        compile: bool | str = False,
        fuse: bool = True,
        progress: bool | None = None,
        sampling: Literal["uniform", "keyframe"] = "uniform",
        preprocess: Literal["auto", "worker", "device"] = "auto",
        decoder_threads: int | None = None,
        torch_threads: int | None = None,
        decoder: Literal["auto", "software", "cuda"] = "auto",
        maps: Literal["grid", "map", "full"] = "grid",
        stride: float | None = None,
        segments: float | str | os.PathLike | Mapping | None = None,
    ) -> None:
        self.timeline = Timeline.build(stride=stride, segments=segments, clips_per_row=clips_per_video)
        if self.timeline is not None and sampling != "uniform":
            raise ValueError("sampling='keyframe' moves whole-file clips; rows over time are placed by their times")
        clips_per_video = self.timeline.clips_per_row if self.timeline is not None else clips_per_video or 10
        wanted = normalize_modalities(modalities) if modalities is not None else None
        if decoder not in ("auto", "software", "cuda"):
            raise ValueError(f"decoder must be 'auto', 'software' or 'cuda', got {decoder!r}")
        # said before the model loads: a missing hardware decoder is the machine's, not the run's
        decoder = resolve_decoder(decoder, torch.device(device) if device is not None else default_device())
        if sampling not in ("uniform", "keyframe"):
            raise ValueError(f"sampling must be 'uniform' or 'keyframe', got {sampling!r}")
        if not isinstance(model, AVIDModel):
            model = from_pretrained(model, modalities=wanted)
        if clips_per_video < 1:
            raise ValueError(f"clips_per_video must be at least 1, got {clips_per_video}")
        super().__init__(model, modalities=wanted or model.modalities, layer=layer, clip_agg=clip_agg,
                         normalize=normalize, batch_size=batch_size, device=device, dtype=dtype,
                         channels_last=channels_last, compile=compile, fuse=fuse, maps=maps)
        self.clips_per_video, self.sampling = clips_per_video, sampling
        self.decoder = decoder
        self.plan: ThreadPlan = plan_threads(self.device, workers=num_workers, decoder_threads=decoder_threads,
                                             torch_threads=torch_threads, preprocess=preprocess, decoder=self.decoder)
        self.num_workers = self.plan.workers
        self.progress = progress
        self.transforms = create_transforms(model)

    def __call__(
        self, frames: torch.Tensor | None = None, waveforms: torch.Tensor | None = None,
        sample_rate: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-clip features of raw clips: frames ``(B, T, H, W, 3)`` or one clip ``(T, H, W, 3)`` (uint8, or float
        in [0, 255]) and/or waveforms ``(B, C, N)`` or one clip ``(C, N)`` / ``(N,)`` at ``sample_rate`` (default: the
        model's, 24 kHz). Returns ``{modality: (B, D)}``, B = 1 for a single clip."""
        on = self.device if self.plan.preprocess == "device" else None  # else the tensors' own device
        video = self.transforms.video(torch.as_tensor(frames).to(on)) if frames is not None else None
        audio = self.transforms.audio(torch.as_tensor(waveforms).to(on), sample_rate) if waveforms is not None else None
        if video is not None and video.dim() == 4:  # one clip (3, T, S, S)
            video = video[None]
        if audio is not None and audio.dim() == 3:  # one clip (1, T, F)
            audio = audio[None]
        return self.encode(video=video, audio=audio)

    # -- files --------------------------------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        """What an output folder records about the run (``meta.json``); resuming checks it."""
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
            **({"sampling": self.sampling} if self.sampling != "uniform" else {}),  # folders before it had none
            **({"maps": self.maps, "feature_shapes": {m: list(s) for m, s in self.map_shapes.items()}}
               if self.maps != "grid" else {}),
            "decoder": self.decoder,  # NVDEC's frames differ from swscale's by rounding: a resume must not mix them
            **({"timeline": self.timeline.describe()} if self.timeline is not None else {}),
        }

    def row_bytes(self) -> int:
        """Bytes one input's features take in an output folder (float32; every clip's with ``clip_agg="none"``);
        with a timeline, one row's."""
        clips = self.clips_per_video if self.clip_agg == "none" else 1
        return 4 * clips * sum(self.feature_dim(m) for m in self.modalities)

    def extract(
        self,
        inputs: str | os.PathLike | Iterable[str | os.PathLike],
        out: str | os.PathLike | None = None,
        *,
        resume: bool = True,
        retry_failed: bool = False,
        shard_size: int = 256,
        shard: tuple[int, int] | None = None,
    ) -> ExtractionResult | Path:
        """Features of every file in ``inputs`` (see :func:`avidzoo.io.find_media`).

        Without ``out``: an :class:`ExtractionResult` in memory. With ``out``: written to that folder (see
        :mod:`avidzoo.extract.store`), which is returned; any number of processes may write to it at once.
        ``resume`` skips files any writer has finished (failed ones too, unless ``retry_failed``). ``shard=(k, n)``
        takes the files whose position in the input list is ``k`` modulo ``n``, so that n independent workers given
        the same inputs cover them exactly once. Under ``torchrun`` each rank takes a disjoint share (of the shard).
        """
        paths = select_shard(find_media(inputs), shard)
        rank, world, _ = init_distributed()
        if out is None:
            if world > 1:
                raise ValueError("under torchrun, pass out=DIR: each rank writes its own shards")
            return self._extract_to_memory(paths)
        return self._extract_to_dir(paths, Path(out), resume=resume, retry_failed=retry_failed,
                                    shard_size=shard_size, rank=rank, world=world)

    def _loader(self, paths: Sequence[Path | str], skip: set[str] = frozenset()) -> Iterator[list[dict]]:
        """Batches of one item: the files' (DataLoader workers, or threads for NVDEC), then the tar shards' members
        (each shard streamed once, whole shards per worker; ``skip`` the members done before). Every item carries
        ``"order"``, its place in the inputs."""
        hw = self.decoder == "cuda"
        # VMZ's fixed-size FAST_BILINEAR scale (XDC) runs in swscale: NVDEC's frames come to the host for it
        fixed_size = isinstance(getattr(self.transforms.video, "decoder_scale", None), tuple)
        files = [(k, p) for k, p in enumerate(paths) if not streams_from_shard(p)]
        shards = shard_streams(paths)  # whole shards, and those that hold members named as inputs
        dataset = ClipDataset([p for _, p in files], self.transforms, self.modalities, self.clips_per_video,
                              self.sampling, preprocess=self.plan.preprocess,
                              decoder_threads=self.plan.decoder_threads, decoder=self.decoder,
                              frames_on=self.device if hw and not fixed_size else None, timeline=self.timeline,
                              chunk_clips=max(self.batch_size, CHUNK_CLIPS))

        def loader(ds, workers):
            return torch.utils.data.DataLoader(
                ds, batch_size=1, shuffle=False, num_workers=workers, collate_fn=collate_items,
                pin_memory=self.device.type == "cuda", worker_init_fn=init_worker if workers else None,
                prefetch_factor=4 if workers else None, persistent_workers=False)

        if files:
            if self.timeline is not None:  # files in parts (bounded memory for any length), read front to back
                batches = (threaded_parts(dataset, self.plan.workers) if hw else
                           loader(FileParts(dataset), min(self.num_workers, len(files))))
            else:
                batches = threaded_items(dataset, self.plan.workers) if hw else loader(dataset, self.num_workers)
            for batch in batches:
                for item in batch:
                    item["order"] = (files[item["index"]][0], 0)
                yield batch
        if shards:
            members = ShardClips(dataset, shards, skip)
            # NVDEC's frames stay in this process; software decoding takes up to one worker per shard
            yield from ([item] for item in members) if hw else loader(members, min(self.num_workers, len(shards)))

    def _iterate(self, paths: Sequence[Path | str],
                 skip: set[str] = frozenset()) -> Iterator[tuple[dict, dict[str, torch.Tensor] | None]]:
        """Yield ``(item, features or None)`` per file, in completion order; clips of several files share batches."""
        batcher = ClipBatcher(self, lambda items: prepare_batch(items, self.modalities, self.transforms, self.device))
        copies = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        t0 = time.perf_counter()
        total = None if shard_streams(paths) else len(paths)  # a shard's members are counted as read
        with self.plan.applied(), tqdm(total=total, unit="video", disable=not show_progress(self.progress),
                  dynamic_ncols=True) as bar:
            def report(done):
                bar.update(1)
                bar.set_postfix(clips_s=f"{batcher.clips_done / (time.perf_counter() - t0):.1f}", refresh=False)
                return done

            joiner = PartJoiner()
            for batch in self._loader(paths, skip):
                for item in batch:
                    if "error" in item:
                        joiner.fail(item)
                        yield report((item, None))
                        continue
                    item["n"] = len(item["starts"])
                    for done in batcher.add(stage_item(item, self.modalities, self.device, copies)):
                        if (whole := joiner.add(*done)) is not None:
                            yield report(whole)
            for done in batcher.flush():
                if (whole := joiner.add(*done)) is not None:
                    yield report(whole)

    def _extract_to_memory(self, paths: Sequence[Path]) -> ExtractionResult:
        rows: dict[tuple[int, int], tuple[dict, dict]] = {}
        failed = {}
        for item, feats in self._iterate(paths):
            if feats is None:
                failed[item["path"]] = item["error"]
            else:
                rows[item["order"]] = (item, feats)
        order = sorted(rows)
        return build_result([ok_row(rows[i][0]) for i in order], [rows[i][1] for i in order], failed, self.meta())

    def _extract_to_dir(self, paths, out: Path, *, resume, retry_failed, shard_size, rank, world) -> Path:
        mine: list = paths[rank::world]
        writer: ShardWriter | None = None
        try:
            out.mkdir(parents=True, exist_ok=True)
            meta = {**self.meta(),
                    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
            if rank == 0 and not resume:
                reset_output(out)
            _barrier(world)
            claim_meta(out, meta)
            writer_id = new_writer_id()
            collect_garbage(out, keep=[writer_id])  # what killed writers left unindexed
            done = done_paths(out, retry_failed) if resume else set()
            _barrier(world)  # every rank has read the same index before anyone appends to it
            mine = [p for p in paths if str(p) not in done][rank::world]
            writer = ShardWriter(out, shard_size, self.modalities, writer=writer_id)
            try:
                for item, feats in self._iterate(mine, skip=done):
                    writer.add(item, feats)
            finally:
                writer.close()
            _barrier(world)
            if rank == 0:
                write_snapshot(out, [str(p) for p in paths])
        except Exception as e:  # the disk full, a quota, a read-only folder: one line a person can act on
            written = writer.written if writer is not None else 0
            rows = 1.0 if self.timeline is None else writer.rows_per_input() if writer is not None else None
            if (err := no_room_error(e, out, written, len(mine) - written, self.row_bytes(), rows)) is None:
                raise
            raise err from None
        return out


class PartJoiner:
    """Makes whole files of parts as their features come back (:meth:`ClipDataset.read_parts`), in any order: a
    file is handed on once all its ``"parts"`` are encoded, its rows and features joined in part order, so that a
    writer publishes a file's rows together; the parts of a file that failed on the way are dropped. Items without
    parts pass through. A file is known by its ``"order"`` (the local engine) or its path (Ray)."""

    def __init__(self) -> None:
        self.parts: dict[Any, list[tuple[dict, dict[str, torch.Tensor]]]] = {}
        self.failed: set[Any] = set()

    @staticmethod
    def _key(item: dict) -> Any:
        return item.get("order", item["path"])

    def fail(self, item: dict) -> None:
        self.parts.pop(self._key(item), None)
        self.failed.add(self._key(item))

    def add(self, item: dict, feats: dict[str, torch.Tensor]) -> tuple[dict, dict[str, torch.Tensor]] | None:
        if "part" not in item:
            return item, feats
        key = self._key(item)
        if key in self.failed:
            return None
        got = self.parts.setdefault(key, [])
        got.append((item, feats))
        if len(got) < item["parts"]:
            return None
        del self.parts[key]
        got.sort(key=lambda pair: pair[0]["part"])
        whole = join_parts([it for it, _ in got])
        whole["n"] = sum(len(it["starts"]) for it, _ in got)
        return whole, {m: torch.cat([f[m] for _, f in got]) for m in feats}


def resolve_decoder(decoder: str, device: torch.device) -> str:
    """``"software"`` or ``"cuda"`` for a run on ``device``: ``auto`` takes NVDEC where the model is on a GPU and the
    machine has it (:func:`~avidzoo.io.decode.cuda_decoder_problem`); ``cuda`` where it is missing raises
    :class:`~avidzoo.errors.HardwareDecoderError` naming what is."""
    if decoder == "software":
        return decoder
    problem = cuda_decoder_problem()
    if problem is None and device.type != "cuda":
        problem = f"the model runs on {device}, and NVDEC decodes on the GPU the model runs on (--device cuda)"
    if decoder == "cuda" and problem:
        raise HardwareDecoderError(f"decoder 'cuda' is not available here: {problem}")
    return "software" if problem else "cuda"


def select_shard(paths: list[Path], shard: tuple[int, int] | None) -> list[Path]:
    """The inputs of worker ``k`` of ``n`` (``shard=(k, n)``): those at positions ``k``, ``k + n``, ...; all
    without a shard."""
    if shard is None:
        return paths
    k, n = shard
    if not (n >= 1 and 0 <= k < n):
        raise ValueError(f"shard must be K/N with 0 <= K < N, got {k}/{n}")
    return paths[k::n]


def parse_shard(spec: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)``; ``"slurm"`` reads the job array's task and task count."""
    if spec == "slurm":
        task = slurm_array_task()
        if task is None:
            raise ValueError("--shard slurm: SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT are not set")
        return task
    k, sep, n = spec.partition("/")
    if not sep or not k.isdigit() or not n.isdigit() or not int(k) < int(n):
        raise ValueError(f"--shard must be K/N with 0 <= K < N (or 'slurm'), got {spec!r}")
    return int(k), int(n)


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
    shard: tuple[int, int] | None = None,
    **kwargs: Any,
) -> ExtractionResult | Path:
    """Embeddings of media files. ``kwargs`` configure the :class:`FeatureExtractor` (modalities, clips_per_video,
    clip_agg, layer, normalize, batch_size, num_workers, device, dtype, channels_last, compile).

    Returns an :class:`ExtractionResult` when ``out`` is None, else the output folder (read it back with
    :func:`~avidzoo.extract.load_features`)."""
    extractor = FeatureExtractor(model, **kwargs)
    return extractor.extract(inputs, out, resume=resume, retry_failed=retry_failed, shard_size=shard_size,
                             shard=shard)
