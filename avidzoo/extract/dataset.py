"""File -> model inputs: one DataLoader item per media file, its clips decoded in a worker and transformed there
(``preprocess="worker"``) or later, batched on the model's device (``"device"``: :func:`prepare_batch`)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import queue
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import DecodeError, MissingStreamError
from ..io import MEDIA_EXTENSIONS, MediaFile, clip_span, coverage, snap_to_keyframes, uniform_starts
from ..io.colour import preset_colour
from ..io.frame_rules import FRAME_RULES, rule_clips
from ..io.shards import shard_members
from ..transforms import Transforms, clip_seconds
from .timeline import Timeline

__all__ = ["ClipDataset", "FileParts", "join_parts", "CHUNK_CLIPS", "ShardClips", "shard_items", "collate_items",
           "init_worker", "prepare_batch", "threaded_items", "threaded_parts", "stage_item"]


# Clips a part of a long file holds (see ClipDataset.read_parts): enough to fill a CPU batch, few enough that parts in
# flight take little memory.
CHUNK_CLIPS = 32


class ClipDataset(torch.utils.data.Dataset):
    """One item per media file: ``clips_per_video`` uniformly spaced clips (``sampling="keyframe"``: each moved to
    a keyframe near it), decoded and transformed.

    Clips of every requested modality start together, over the span the file's streams cover together
    (:func:`~avidzoo.io.clip_span`); a modality the file lacks is listed in ``"missing"`` and has no tensor (the
    pipeline gives it NaN features), and a file with none of the requested streams is an error.

    Item: ``{"index", "path", "starts", "duration", "coverage", "video": (n, 3, T, S, S), "audio": (n, 1, T', F)}``
    (and ``"has_audio"`` when audio is asked for, ``"missing"``, ``"placement"`` where the streams overlap by less
    than a clip or the weights' ``frame_rule`` placed the clips (``"gdt"``, ``"vmz"``: :mod:`avidzoo.io.frame_rules`;
    ``"starts"`` are then the first frames' times, and ``"audio_starts"`` the audio clips' where they differ),
    ``"distinct_starts"`` where starts repeat), or ``{"index", "path", "error"}`` when the file cannot
    be read (the error is recorded, never raised). ``"coverage"``: per modality, the fraction of each clip that the
    stream really fills (the rest is padding). With ``preprocess="device"`` the item carries uint8 and waveforms for
    :func:`prepare_batch` instead, and ``"raw"`` says what each is: ``"video"`` the centre crops
    ``(n, T, S, S, 3)`` uint8 (``"crop"``; FFmpeg already scaled the frames to the short side ``resize``, and a crop
    is a slice), ``"audio"`` mono waveforms ``(n, 1, N)`` at the model's rate (``"wave"``).

    ``decoder`` and ``frames_on`` are :class:`~avidzoo.io.MediaFile`'s: with ``decoder="cuda"`` and ``frames_on`` a
    CUDA device the frames (and so the crops) are already on the GPU; iterate such a dataset in threads of the
    model's process (:func:`threaded_items`), not in DataLoader worker processes.
    """

    def __init__(self, paths: Sequence[Path | str], transforms: Transforms, modalities: Sequence[str],
                 clips_per_video: int, sampling: str = "uniform", *, preprocess: str = "worker",
                 decoder_threads: int = 1, decoder: str = "software",
                 frames_on: torch.device | str | None = None, timeline: Timeline | None = None,
                 chunk_clips: int = CHUNK_CLIPS) -> None:
        self.paths = list(paths)
        self.timeline, self.chunk_clips = timeline, max(chunk_clips, 1)
        if timeline is not None and sampling != "uniform":
            raise ValueError("sampling='keyframe' moves whole-file clips; rows over time are placed by their times")
        self.sampling = sampling
        self.raw = preprocess == "device"
        if preprocess not in ("worker", "device"):
            raise ValueError(f"preprocess must be 'worker' or 'device', got {preprocess!r}")
        self.decoder_threads = decoder_threads
        self.decoder, self.frames_on = decoder, frames_on
        self.transforms = transforms
        self.modalities = tuple(modalities)
        self.clips_per_video = clips_per_video
        pre = transforms.config
        self.video_cfg, self.audio_cfg = pre["video"], pre["audio"]
        self.clip_durations = {m: clip_seconds(pre[m], m) for m in self.modalities}
        self.frame_rule = (self.video_cfg or {}).get("frame_rule", "avid")
        self.colour = preset_colour(self.video_cfg)
        if self.frame_rule not in FRAME_RULES:
            raise ValueError(f"frame_rule must be one of {FRAME_RULES}, got {self.frame_rule!r}")
        if self.frame_rule != "avid" and sampling == "keyframe" and "video" in self.modalities:
            raise ValueError(f"sampling='keyframe' moves AVID's clip starts; these weights place clips by the "
                             f"{self.frame_rule!r} frame rule (use sampling='uniform')")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.read(i, self.paths[i])

    def read(self, index: Any, path: Path | str, *, fileobj: Any = None,
             metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        """The item of one input (``fileobj``: its open data, for a shard's member; ``metadata`` travels with it into
        the index); an input that cannot be read gives ``{"index", "path", "error"}``, never an exception. With a
        timeline, the whole file's rows in one item (:meth:`read_parts` gives them in bounded parts)."""
        if self.timeline is not None:
            return join_parts(list(self.read_parts(index, path, fileobj=fileobj, metadata=metadata)))
        try:
            with MediaFile(path, threads=self.decoder_threads, decoder=self.decoder, frames_on=self.frames_on,
                           fileobj=fileobj, colour=self.colour) as f:
                item = self._read(index, path, f)
        except DecodeError as e:
            return {"index": index, "path": str(path), "error": f"{type(e).__name__}: {e.problem}"}
        except Exception as e:  # an unexpected failure on one file must not end a long run
            return {"index": index, "path": str(path), "error": f"{type(e).__name__}: {e}"}
        if metadata is not None:
            item["metadata"] = metadata
        return item

    def read_parts(self, index: Any, path: Path | str, *, fileobj: Any = None,
                   metadata: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """A file's items in parts of at most ``chunk_clips`` clips (whole rows), decoded front to back, so that an
        hour-long file takes the memory of a short one: each part carries ``"part"`` (from 0) and ``"last"``, and
        :func:`join_parts` (or the pipeline, part by part) makes them one file again. Without a timeline, the one
        item of :meth:`read`. A file that fails on the way gives an error item (after its earlier parts)."""
        if self.timeline is None:
            yield self.read(index, path, fileobj=fileobj, metadata=metadata)
            return
        try:
            with contextlib.ExitStack() as stack:
                f = stack.enter_context(MediaFile(path, threads=self.decoder_threads, decoder=self.decoder,
                                                  frames_on=self.frames_on, fileobj=_own_position(fileobj),
                                                  colour=self.colour))
                yield from self._read_rows(index, path, f, stack, fileobj, metadata)
        except DecodeError as e:
            yield {"index": index, "path": str(path), "error": f"{type(e).__name__}: {e.problem}", "last": True}
        except Exception as e:  # an unexpected failure on one file must not end a long run
            yield {"index": index, "path": str(path), "error": f"{type(e).__name__}: {e}", "last": True}

    def _read_rows(self, index: Any, path: Path | str, f: MediaFile, stack: contextlib.ExitStack, fileobj: Any,
                   metadata: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
        spans = self._spans(path, f)
        rows, notes, placement = self.timeline.rows(str(path), spans, self.clip_durations)
        k = self.timeline.clips_per_row
        starts = {m: self.timeline.clip_starts(rows, self.clip_durations[m], spans[m]) for m in spans}
        per_part = max(self.chunk_clips // k, 1)  # rows a part holds
        cuts = list(range(0, len(rows), per_part))
        video = None
        if "video" in spans:
            v = self.video_cfg
            video = f.iter_video(starts["video"], num_frames=int(v["num_frames"]), fps=float(v["fps"]),
                                 short_side=self.transforms.video.decoder_scale)
        # Audio is read part by part beside the video's one pass: from a second reader of the file where there are
        # several parts (a seek in the video's container would restart its pass).
        audio_file = f
        if "audio" in spans and video is not None and len(cuts) > 1:
            audio_file = stack.enter_context(MediaFile(path, threads=1, fileobj=_own_position(fileobj),
                                                       colour=self.colour))
        pending: dict[int, torch.Tensor] = {}
        for part, r0 in enumerate(cuts):
            r1 = min(r0 + per_part, len(rows))
            c0, c1 = r0 * k, r1 * k
            part_starts = {m: starts[m][c0:c1] for m in spans}
            item = self._fields(index, path, f, spans, part_starts, placement)
            item.update(times=[[round(a, 6), round(b, 6)] for a, b in rows[r0:r1]], row_clips=k, part=part,
                        parts=len(cuts), last=r1 == len(rows))
            if notes:
                item["segments"] = [{key: n[key] for key in ("label", "id") if n.get(key) is not None}
                                    for n in notes[r0:r1]]
            if metadata is not None:
                item["metadata"] = metadata
            raw: dict[str, str] = {}
            if video is not None:
                while any(i not in pending for i in range(c0, c1)):
                    i, clip = next(video)
                    pending[i] = clip
                item["video"] = self._video([pending.pop(i) for i in range(c0, c1)], raw)
            self._audio(item, audio_file, spans, part_starts, raw)
            item["coverage"] = {m: [round(coverage(s, self.clip_durations[m], (f if m == "video" else audio_file)
                                                   .span(m)), 4) for s in part_starts[m]] for m in spans}
            if raw:
                item["raw"] = raw
            yield item

    def _starts(self, f: MediaFile, spans: dict[str, tuple[float, float]]) -> tuple[list[float], str]:
        first, last, placement = clip_span(spans, self.clip_durations)
        starts = uniform_starts(last, 0.0, self.clips_per_video, start=first)
        if self.sampling == "keyframe" and "video" in spans:  # no pre-roll: each clip starts at a keyframe
            # half a frame in, so that the keyframe is the clip's first frame under either frame rule
            lag = (f.info.video_start if f.frame_times == "original" else 0.0) + 0.5 / (f.info.fps or 30.0)
            starts = snap_to_keyframes(starts, f.keyframe_times(), lag=lag, latest=last)
        return starts, placement

    def _read(self, i: Any, path: Path | str, f: MediaFile) -> dict[str, Any]:
        spans = self._spans(path, f)
        v = self.video_cfg
        ruled = None
        if self.frame_rule != "avid" and "video" in spans:  # the method's own decoder rule places the clips
            ruled = rule_clips(f, self.frame_rule, self.clips_per_video, num_frames=int(v["num_frames"]),
                               fps=float(v["fps"]))
            starts, placement = [c.times[0] for c in ruled], self.frame_rule
        else:
            starts, placement = self._starts(f, spans)
        clip_starts = {m: starts for m in spans}
        if ruled is not None and "audio" in spans:
            lo, hi = spans["audio"]
            last = max(hi - self.clip_durations["audio"], lo)  # moved back to end with the stream, as GDT's
            clip_starts["audio"] = [min(lo + c.audio_from, last) for c in ruled]
        item = self._fields(i, path, f, spans, clip_starts, placement)
        if len(set(item["starts"])) < len(starts):
            item["distinct_starts"] = len(set(item["starts"]))
        raw: dict[str, str] = {}
        if "video" in spans:
            scale = self.transforms.video.decoder_scale
            if ruled is not None:
                frames = f.read_frames([c.times for c in ruled], short_side=scale)
            else:
                frames = f.read_video(starts, num_frames=int(v["num_frames"]), fps=float(v["fps"]), short_side=scale)
            item["video"] = self._video(frames, raw)
        self._audio(item, f, spans, clip_starts, raw)
        # after the reads, which find where a stream without a declared end stops
        item["coverage"] = {m: [round(coverage(s, self.clip_durations[m], f.span(m)), 4) for s in clip_starts[m]]
                            for m in spans}
        if raw:
            item["raw"] = raw
        return item

    def _spans(self, path: Path | str, f: MediaFile) -> dict[str, tuple[float, float]]:
        """The requested streams' spans (seconds) in the file; a file with none of them is an error."""
        spans = {m: f.info.span(m) for m in self.modalities if f.info.has(m)}
        if not spans:
            raise MissingStreamError(path, f"has no {' or '.join(self.modalities)} stream")
        return spans

    def _fields(self, index: Any, path: Path | str, f: MediaFile, spans: dict[str, tuple[float, float]],
                starts: dict[str, list[float]], placement: str) -> dict[str, Any]:
        """The fields every item of a file carries: where its clips start (the video's, else the one stream's;
        ``audio_starts`` where the audio's differ), and what the index row records of the file."""
        shared = [round(t, 6) for t in starts["video" if "video" in starts else next(iter(starts))]]
        item: dict[str, Any] = {"index": index, "path": str(path), "starts": shared, "duration": f.info.duration}
        if f.version:  # a remote object's ETag or version id: a resumed run redoes the object if it changed
            item["version"] = f.version
        missing = [m for m in self.modalities if m not in spans]
        if missing:
            item["missing"] = missing
        if placement != "overlap":  # by a method's frame rule, or over one stream's span (they overlap too little)
            item["placement"] = placement
        if "audio" in starts:
            audio_starts = [round(t, 6) for t in starts["audio"]]
            if audio_starts != shared:
                item["audio_starts"] = audio_starts
        return item

    def _audio(self, item: dict[str, Any], f: MediaFile, spans: dict[str, tuple[float, float]],
               starts: dict[str, list[float]], raw: dict[str, str]) -> None:
        """``has_audio`` and the audio clips' inputs ``(B, 1, T, F)`` (with ``raw``, the waveforms: the
        spectrogram is made on the device) into ``item``."""
        if "audio" in self.modalities:
            item["has_audio"] = "audio" in spans
        if "audio" in spans:
            waves = torch.stack(f.read_audio(starts["audio"], self.clip_durations["audio"],
                                             sample_rate=int(self.audio_cfg["sample_rate"])))
            if self.raw:
                item["audio"], raw["audio"] = waves, "wave"
            else:
                item["audio"] = self.transforms.audio(waves)

    def _video(self, clips: list[torch.Tensor], raw: dict[str, str]) -> torch.Tensor:
        """Clips ``(T, H, W, 3)`` uint8 -> ``(B, 3, T, S, S)`` model inputs, or with ``raw`` the uint8 crops
        ``(B, T, S, S, 3)`` (else the frames). Clips the decoder has already scaled are cropped before they are
        stacked: the same pixels, and half the bytes copied."""
        t = self.transforms.video
        crops = [t.crop(c[None]) for c in clips]
        if clips and all(c is not None for c in crops):
            crops = torch.cat(crops)
            if self.raw:
                raw["video"] = "crop"
                return crops
            return t.normalize(crops)
        frames = torch.stack(clips)
        if self.raw:
            raw["video"] = "frames"
            return frames
        return t(frames)


def join_parts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One file's item from its parts (:meth:`ClipDataset.read_parts`): lists and tensors joined in order; an error
    in any part makes the whole an error item."""
    for p in parts:
        if "error" in p:
            return {k: v for k, v in p.items() if k != "last"}
    item = {k: v for k, v in parts[0].items() if k not in ("part", "parts", "last")}
    for key in ("starts", "audio_starts", "times", "segments"):
        if key in item:
            item[key] = [x for p in parts for x in p[key]]
    if "coverage" in item:
        item["coverage"] = {m: [x for p in parts for x in p["coverage"][m]] for m in item["coverage"]}
    for m in ("video", "audio"):
        if m in item:
            item[m] = torch.cat([p[m] for p in parts])
    return item


class FileParts(torch.utils.data.IterableDataset):
    """The parts of files (:meth:`ClipDataset.read_parts`), for a DataLoader: worker ``w`` of ``W`` takes files
    ``w, w + W, ...`` and yields each file's parts in order (files of different workers interleave; ``"index"``
    says whose a part is)."""

    def __init__(self, clips: ClipDataset) -> None:
        self.clips = clips

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        n = len(self.clips.paths)
        for i in range(info.id, n, info.num_workers) if info else range(n):
            yield from self.clips.read_parts(i, self.clips.paths[i])


class _OwnPosition(io.RawIOBase):
    """A view of a seekable binary file with a position of its own, so that two decoders can read one shard member
    (the video's pass and the audio's parts) without moving each other."""

    def __init__(self, raw: Any) -> None:
        self.raw, self.pos = raw, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        self.raw.seek(self.pos)
        data = self.raw.read(len(b))
        b[:len(data)] = data
        self.pos += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END:
            self.pos = self.raw.seek(0, io.SEEK_END) + offset
        else:
            self.pos = (self.pos if whence == io.SEEK_CUR else 0) + offset
        return self.pos

    def tell(self) -> int:
        return self.pos


def _own_position(fileobj: Any) -> Any:
    return None if fileobj is None else io.BufferedReader(_OwnPosition(fileobj))


class ShardClips(torch.utils.data.IterableDataset):
    """The media members of WebDataset tar shards (:mod:`avidzoo.io.shards`), each shard read once as it streams by,
    as :class:`ClipDataset` items (``"path"`` is ``<shard>/<key>.<ext>``, ``"metadata"`` the sample's ``.json``).
    ``streams`` are :func:`~avidzoo.io.shards.shard_streams`' ``(position, shard, only)``; DataLoader workers take
    whole streams (``streams[worker::workers]``). An item's ``"order"`` is ``(position, member number)``, how results
    are put in input order. Members in ``skip`` (done before) are passed over without decoding; a shard that cannot be
    read is an error item named by the shard."""

    def __init__(self, clips: ClipDataset, streams: Sequence[tuple[int, str, set[str] | None]],
                 skip: set[str] = frozenset()) -> None:
        self.clips, self.streams, self.skip = clips, list(streams), set(skip)

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        mine = self.streams[info.id::info.num_workers] if info else self.streams
        for position, shard, only in mine:
            yield from shard_items(self.clips, shard, position, self.skip, only)


def shard_items(clips: ClipDataset, shard: Path | str, position: int, skip: set[str] = frozenset(),
                only: set[str] | None = None) -> Iterator[dict]:
    """The :class:`ClipDataset` items of one shard's media members (those in ``only``, if given), read as the shard
    streams by (members in ``skip`` passed over without decoding); ``"order"`` is ``(position, member number)``. A
    shard that cannot be read (on, past some point) gives an error item named by the shard, a member asked for that
    the shard does not have an error item named by the member."""
    for n, member in enumerate(shard_members(str(shard), set(MEDIA_EXTENSIONS), skip=skip, only=only)):
        order = (position, n + 1)
        if member.skipped:
            continue
        if member.error:
            yield {"index": order, "order": order, "path": member.name, "error": f"ShardError: {member.error}"}
            continue
        with member.data:
            for item in clips.read_parts(order, member.name, fileobj=member.data, metadata=member.metadata):
                yield {**item, "order": order}


def collate_items(items: list[dict]) -> list[dict]:
    """Items stay whole: files have different numbers of clips and some carry an error instead."""
    return items


def init_worker(_: int) -> None:
    torch.set_num_threads(1)  # workers decode; the main process owns the cores for the model


def threaded_items(dataset: torch.utils.data.Dataset, threads: int, ahead: int = 4) -> Iterator[list[dict]]:
    """``dataset``'s items in order, each as a one-item list (as a DataLoader of batch size 1 gives them), read by
    ``threads`` threads of this process with at most ``threads * ahead`` items read ahead. For decoders whose frames
    stay on the GPU: FFmpeg releases the GIL while it decodes, and the tensors never leave the process."""
    n = len(dataset)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(threads, 1), thread_name_prefix="avidzoo-decode") as ex:
        pending: deque[concurrent.futures.Future] = deque()
        nxt = 0
        while nxt < n or pending:
            while nxt < n and len(pending) < max(threads, 1) * ahead:
                pending.append(ex.submit(dataset.__getitem__, nxt))
                nxt += 1
            yield [pending.popleft().result()]


def threaded_parts(dataset: ClipDataset, threads: int, ahead: int = 4) -> Iterator[list[dict]]:
    """The parts of ``dataset``'s files (:meth:`ClipDataset.read_parts`), each as a one-item list, read by ``threads``
    threads of this process (each a file at a time, NVDEC's frames staying on the GPU) into a queue of at most
    ``threads * ahead`` parts, so that readers wait for the model rather than fill the memory."""
    n, threads = len(dataset), max(threads, 1)
    parts: queue.Queue = queue.Queue(maxsize=threads * ahead)
    nxt = iter(range(n))
    lock = threading.Lock()

    def work() -> None:
        try:
            while True:
                with lock:
                    i = next(nxt, None)
                if i is None:
                    return
                for part in dataset.read_parts(i, dataset.paths[i]):
                    parts.put(part)
        finally:  # read_parts records a file's failure as an item; this ends the stream whatever happens
            parts.put(None)

    workers = [threading.Thread(target=work, daemon=True, name="avidzoo-decode") for _ in range(threads)]
    for w in workers:
        w.start()
    finished = 0
    while finished < threads:
        part = parts.get()
        if part is None:
            finished += 1
            continue
        yield [part]


def stage_item(item: dict, modalities: Sequence[str], device: torch.device,
               stream: torch.cuda.Stream | None) -> dict:
    """Start an item's copy to ``device`` on ``stream`` (a CUDA side stream) as soon as it is decoded, so that the
    copy overlaps the model's work on the batches before it; :func:`prepare_batch` makes the model's stream wait
    for it. Without a stream (a CPU run), the item is left as it is."""
    if stream is None or "error" in item:
        return item
    with torch.cuda.stream(stream):
        for m in modalities:
            if m in item:
                item[m] = item[m].to(device, non_blocking=True)
        item["copied"] = torch.cuda.Event()
        item["copied"].record(stream)
    return item


def prepare_batch(items: Sequence[dict], modalities: Sequence[str], transforms: Transforms,
                  device: torch.device) -> dict[str, torch.Tensor]:
    """The model inputs of several files' items, on ``device``: ``{"video": (B, 3, T, S, S), "audio": (B, 1, T', F)}``
    with B the clips, in order, of the items that have that modality (a modality none has is left out).
    Transformed items are joined; raw ones (``item["raw"]``) cross to the device as uint8 crops (or frames) and
    waveforms and are transformed there, one call per kind and size."""
    steps = {"crop": transforms.video.normalize if transforms.video else None, "frames": transforms.video,
             "wave": transforms.audio}
    out = {}
    for it in items:  # staged on a copy stream: wait for its copy, and keep its memory until this stream is done
        event = it.pop("copied", None)
        if event is not None:
            current = torch.cuda.current_stream(device)
            current.wait_event(event)
            for m in modalities:
                if m in it and it[m].is_cuda:
                    it[m].record_stream(current)
    for m in modalities:
        having = [it for it in items if m in it]  # a file without this stream contributes no clips of it
        if not having:
            continue
        parts = [it[m].to(device, non_blocking=True) for it in having]
        groups: dict[tuple, list[int]] = {}
        for k, (it, part) in enumerate(zip(having, parts)):
            groups.setdefault((it.get("raw", {}).get(m), tuple(part.shape[1:])), []).append(k)
        done: list[torch.Tensor | None] = [None] * len(having)
        for (step, _), ks in groups.items():
            joined = torch.cat([parts[k] for k in ks])
            joined = steps[step](joined) if step else joined
            for k, chunk in zip(ks, joined.split([len(parts[k]) for k in ks])):
                done[k] = chunk
        out[m] = torch.cat(done)
    return out
