"""Decode clips from media files with PyAV, reproducing the original AVID frame and sample selection.

Video: a clip starting at ``start`` takes frames at target times ``t = start + k / fps`` (k < ``num_frames``); frames
repeat when the native rate is below ``fps``. Which frame a target gets (``frame_times``, :mod:`.selection`):
``"original"`` (default), as the original pipeline picked them and the released numbers were computed, lagging by a
late stream's start; or ``"timestamps"``, the frame on screen at ``t``. On a stream that starts at 0 with exact
timestamps the two agree. Targets past the end of the stream repeat the clip from its first frame (the original
``pad_missing``). Audio: :mod:`.audio`.

Streams end where they say: each stream's span is its own start and declared end (:mod:`.probing`), not the file's.
A stream that stops more than half a second before its own end is truncated (:class:`CorruptMediaError`); a clip
past the end of a stream that simply ends earlier than the others is padded.

Speed, exactly (the frames a clip takes are bit-identical to decoding everything): one open container serves every
clip of a file; the keyframes (read once from the packets, :mod:`.demux`) decide for each clip whether to seek or to
decode on from the previous one; outside the clips' windows the decoder skips non-reference frames on a constant
frame rate, and inside them those no target takes (predicted from the packets by the same frame rule, confirmed by
the decoded frames); only the frames a clip uses are converted to RGB, at the requested size (:mod:`.pixels`, by the
weights' colour rule, :mod:`.colour`). Nothing here holds a file open after ``close()`` / the ``with`` block.

:class:`MediaFile` composes those modules; where its bytes come from is :mod:`.sources`, NVDEC's availability
:mod:`.hardware`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..errors import (
    CorruptMediaError,
    DecodeError,
    EmptyMediaError,
    HardwareDecoderError,
    MissingStreamError,
    RotationError,
    VariableFrameRateError,
)
from .audio import TRUNCATION_SLACK, read_audio_clips
from .colour import check_rule
from .demux import FrameTable, PacketTable, decoded_frames, seek_to
from .hardware import cuda_decoder_problem, cuda_hwaccel
from .pixels import PixelConverter, Size
from .probing import MediaInfo, read_info
from .remote import is_url
from .selection import (
    TIME_EPS,
    NonRefSkipper,
    Selection,
    TargetPicker,
    earliest,
    lost_a_frame,
    predict,
    seek_between,
    skip_windows,
)
from .sources import open_source

__all__ = ["MediaInfo", "MediaFile", "FrameTable", "probe", "read_video_clip", "read_audio_clip", "DECODERS",
           "cuda_decoder_problem", "cuda_decoder_works"]

DECODERS = ("software", "cuda")


class MediaFile:
    """An open media file. Use as a context manager; every read reuses the one open container.

    Args:
        path: the file.
        threads: codec threads (0: FFmpeg decides). Use 1 inside many DataLoader workers.
        rotation: ``"apply"`` (default) rotates frames upright as the file's display matrix says, ``"ignore"``
            returns them as stored, ``"error"`` raises :class:`RotationError` for a rotated video.
        on_vfr: ``"timestamps"`` (default) selects frames by their real timestamps, ``"error"`` raises
            :class:`VariableFrameRateError` for a video whose frame timing is irregular.
        frame_times: ``"original"`` (default) or ``"timestamps"``: which frame a clip's target takes (see the module
            docstring).
        exact_savings: keyframe-aware seeking and skipping of unneeded non-reference frames (default on; the frames
            are the same either way, which a test checks), and audio clips more than a second apart decoded in
            separate runs (each its own resampler, as the original read each clip; the samples then differ from
            one joint run's by the resampler's phase, under one sample);
            off is the plain decoder, for benchmarks.
        decoder: ``"software"`` (FFmpeg on the CPU) or ``"cuda"`` (NVDEC through FFmpeg's CUDA hwaccel, the same
            parser, so seeking and skipping work as in software; a stream NVDEC cannot decode falls back to
            software). :func:`cuda_decoder_problem` says what a machine lacks for it.
        frames_on: where frames become RGB: ``None`` (default), FFmpeg's swscale on the host (numpy); a torch
            device, :func:`avidzoo.io.colour.frame_to_rgb` there, and clips come back as tensors on it. With the
            ``cuda`` decoder and a CUDA device, frames stay on the GPU from decoding to the clip (``None``
            downloads them to the host as NV12 first). On the CPU this is the GPU path's conversion, for tests.
        fileobj: an open, seekable binary file to read instead of ``path``, which then only names it (a shard's
            member, :mod:`avidzoo.io.shards`).
        skip_in_window: with exact savings, also skip the non-reference frames inside a clip's window that no
            target takes (predicted from the packets' timestamps and confirmed by the decoded frames' own, else the
            group is decoded again without); off only to measure what it saves.
        colour: how YUV becomes RGB (:mod:`avidzoo.io.colour`): ``"bt601"`` (default), the BT.601 matrix whatever
            the stream declares, as every original decoder converted and so every released weight saw; ``"tagged"``,
            the matrix and range the stream declares (true colour). Both decoders and every resize follow it.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        threads: int = 0,
        rotation: Literal["apply", "ignore", "error"] = "apply",
        on_vfr: Literal["timestamps", "error"] = "timestamps",
        frame_times: Literal["original", "timestamps"] = "original",
        exact_savings: bool = True,
        skip_in_window: bool = True,
        decoder: Literal["software", "cuda"] = "software",
        frames_on: torch.device | str | None = None,
        fileobj: Any = None,
        colour: Literal["bt601", "tagged"] = "bt601",
    ) -> None:
        self.colour = check_rule(colour)
        if frame_times not in ("original", "timestamps"):
            raise ValueError(f"frame_times must be 'original' or 'timestamps', got {frame_times!r}")
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        self.decoder = decoder
        self.frames_on = torch.device(frames_on) if frames_on is not None else None
        hwaccel = None
        if decoder == "cuda":
            problem = cuda_decoder_problem()
            if problem:
                raise HardwareDecoderError(f"decoder='cuda': {problem}")
            hwaccel = cuda_hwaccel(self.frames_on)
        # a URL stays a string (a Path would fold its "//"); its object is read through ranged requests
        self.path: Path | str = str(path) if is_url(path) or fileobj is not None else Path(path)
        self.threads, self.rotation_policy, self.on_vfr = threads, rotation, on_vfr
        self.frame_times, self.exact_savings = frame_times, exact_savings
        self.skip_in_window = skip_in_window
        # packets skipped inside clips' windows, and groups decoded again because the frames differed from the
        # prediction (what the in-window skipping saves and costs; the tests and benchmarks read them)
        self.decode_stats = {"skipped_in_window": 0, "redone": 0}
        self._seen_end: dict[str, float] = {}  # where a read found a stream's data to end before its span did
        self.read_stats: dict[str, int] | None = None  # a remote object's: bytes fetched, ranged GETs (after close)
        self._container = self._reader = None
        source = open_source(self.path, fileobj, hwaccel)
        self._container, self._reader = source.container, source.reader
        self.version: str | None = source.version  # a remote object's ETag or version id (resume redoes a changed one)
        for stream in self._container.streams.video:  # must be set before the codec opens
            stream.thread_type = "AUTO" if threads != 1 else "SLICE"
            if threads:
                stream.codec_context.thread_count = threads
        try:
            self.info = read_info(self._container, self.path)
        except BaseException:
            self.close()
            raise
        video = self._container.streams.video[0] if self.info.has_video else None
        self._packets = PacketTable(self._container, video, self.path, self.info.fps) if video else None
        self._pixels = PixelConverter(self.path, self.colour, (self.info.pixel_format or "").startswith("yuvj"),
                                      self.info.rotation if rotation == "apply" else 0, self.frames_on)

    # -- lifecycle ------------------------------------------------------------------------------------------------
    def close(self) -> None:
        container = getattr(self, "_container", None)
        if container is not None:
            container.close()
            self._container = None
        if getattr(self, "_reader", None) is not None:
            self.read_stats = self._reader.stats()
            self._reader.close()
            self._reader = None

    def __enter__(self) -> MediaFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    # -- metadata -------------------------------------------------------------------------------------------------
    def span(self, modality: str) -> tuple[float, float] | None:
        """``(start, end)`` of a stream as far as this file has shown: :meth:`MediaInfo.span`, ended earlier where a
        read found its data to stop (a stream without a declared end); ``None`` without that stream."""
        span = self.info.span(modality)
        if span is None or modality not in self._seen_end:
            return span
        return span[0], max(min(span[1], self._seen_end[modality]), span[0])

    def keyframe_times(self) -> list[float]:
        """Presentation times (seconds) of the video's keyframes, read from its packets without decoding; empty
        when the file has no video or they cannot be read."""
        return list(self._packets.keyframe_times() or []) if self._packets else []

    def frame_table(self) -> FrameTable:
        """The video stream's frames as the decoder outputs them, from the packets without decoding: the
        presentation timestamps in order (``pts``, in ``time_base`` ticks; not those an edit list discards) and what
        the stream header declares (``declared_frames``, ``declared_duration``; 0 / ``None`` where it declares
        nothing), which the siblings' frame rules read."""
        if self._packets is None:
            raise MissingStreamError(self.path, "has no video stream (an audio-only file)")
        return self._packets.frame_table()

    # -- video ----------------------------------------------------------------------------------------------------
    def read_video(
        self,
        starts: Sequence[float],
        *,
        num_frames: int = 8,
        fps: float = 16.0,
        short_side: int | tuple[int, int] | None = None,
        duration: float | None = None,
    ) -> list[torch.Tensor]:
        """Clips starting at ``starts`` (seconds), each ``(num_frames, H, W, 3)`` uint8 RGB.

        ``duration`` (seconds), when given, sets ``num_frames = round(duration * fps)``.

        ``short_side`` scales frames in FFmpeg so that their shorter side has that many pixels (the longer side
        scaled and truncated, as the transforms do); a ``(width, height)`` pair scales to that size, aspect ignored,
        in one swscale pass with ``FAST_BILINEAR`` (VMZ's decoder, XDC's inputs); ``None`` keeps the stored size.
        """
        return _in_order(self.iter_video(starts, num_frames=num_frames, fps=fps, short_side=short_side,
                                         duration=duration), len(starts))

    def iter_video(
        self,
        starts: Sequence[float],
        *,
        num_frames: int = 8,
        fps: float = 16.0,
        short_side: int | tuple[int, int] | None = None,
        duration: float | None = None,
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """:meth:`read_video`'s clips as a stream of ``(i, clip)``, each clip handed out as soon as its last frame is
        decoded (about in start order), so that a dense grid over an hour-long file is decoded front to back, each
        frame once, holding only the frames of the clips under way. The clips are :meth:`read_video`'s, bit for
        bit (it collects this stream)."""
        if duration is not None:
            num_frames = max(int(round(duration * fps)), 1)
        times = [[s + k / fps for k in range(num_frames)] for s in starts]
        return self._iter_clips(times, [s + num_frames / fps for s in starts], self.frame_times == "original",
                                short_side)

    def read_frames(self, times: Sequence[Sequence[float]], *,
                    short_side: int | tuple[int, int] | None = None) -> list[torch.Tensor]:
        """Clips whose frames are named by time: clip ``i`` is ``(len(times[i]), H, W, 3)`` uint8 RGB, frame ``k``
        the last one whose timestamp is at or before ``times[i][k]`` (seconds), so a frame's own timestamp gives
        exactly that frame. This is how the siblings' frame rules (:mod:`avidzoo.io.frame_rules`) read the frames
        they pick from the stream's packet timestamps. ``short_side`` as in :meth:`read_video`."""
        frame = 1.0 / (self.info.fps or 30.0)
        times = [list(t) for t in times]
        return _in_order(self._iter_clips(times, [max(t) + frame for t in times], False, short_side), len(times))

    def _iter_clips(self, times: list[list[float]], ends: list[float], original: bool,
                    short_side: Size) -> Iterator[tuple[int, torch.Tensor]]:
        """Clip ``i`` takes a frame for each target in ``times[i]`` (seconds), by the original frame numbers or by
        timestamps; ``ends[i]``: where the clip's span ends. Yields ``(i, clip)`` as clips complete."""
        if not self.info.has_video:
            raise MissingStreamError(self.path, "has no video stream (an audio-only file)")
        if self.info.rotation and self.rotation_policy == "error":
            raise RotationError(self.path, f"the video is rotated by {self.info.rotation} degrees")
        stream = self._container.streams.video[0]
        order = sorted(range(len(times)), key=lambda i: times[i][0])
        keyframes = self._packets.keyframe_times() if self.exact_savings else None
        # Clips share one decoding pass unless a keyframe lies between them: then a seek skips the frames between.
        group: list[int] = []
        for i in order:
            if group and seek_between(keyframes, ends[group[-1]], self._earliest(stream, times[i][0], original),
                                      self.info.fps or 30.0):
                yield from self._decode_group(stream, group, times, original, short_side)
                group = []
            group.append(i)
        if group:
            yield from self._decode_group(stream, group, times, original, short_side)

    def _earliest(self, stream, t: float, original: bool) -> float:
        return earliest(t, original, float(stream.average_rate or self.info.fps or 30.0), self.info.video_start)

    def _decode_group(self, stream, indices: list[int], times, original: bool, short_side: Size,
                      may_predict: bool = True) -> Iterator[tuple[int, torch.Tensor]]:
        """One decoding pass from the keyframe before the group's first target, yielding ``(clip index, clip)`` as
        each clip's last target is served (and, where the pass skips inside the windows by a prediction, its frames
        confirm it; a clip they do not confirm and those after it are decoded again without)."""
        targets = sorted((t, ci, k) for ci in indices for k, t in enumerate(times[ci]))
        rate = stream.average_rate or Fraction(self.info.fps or 30.0).limit_denominator(1001)
        # The original's target frame numbers: int() of a float, relative to the stream's start.
        wanted = [int((t - self.info.video_start) * float(rate)) for t, _, _ in targets] if original else None
        first_t = targets[0][0]
        keyframe = self._seek(stream, self._earliest(stream, first_t, original))
        # Inside the clips' windows, the non-reference frames that no target takes (predicted from the packets'
        # timestamps by the same rule) are skipped too. A clip is handed out once its frames confirm the prediction:
        # each is the predicted one, and no frame the skipping dropped is one its target would have taken instead.
        # Otherwise the clips not yet handed out are decoded again in a pass without it.
        predicted = self._predict(stream, targets, wanted, rate, keyframe) if may_predict else None
        hold = self._pixels.holder(short_side)
        clips = _ClipAssembler(self._pixels, times, short_side)
        state = Selection()
        done: set[int] = set()
        where = {(ci, k): j for j, (_, ci, k) in enumerate(targets)}
        order = self._packets.presentation_order() if predicted is not None else None

        def confirmed(ci: int) -> bool:
            dropped = state.dropped
            for k in range(len(times[ci])):
                frame = state.chosen.get((ci, k))
                pts = getattr(frame, "pts", None)
                if (ci, k) in predicted and pts != predicted[(ci, k)]:
                    return False
                if pts is not None and dropped:
                    j = where[(ci, k)]
                    if lost_a_frame(order, targets[j], wanted[j] if wanted else None, rate, stream.time_base, pts,
                                    dropped):
                        return False
            return True

        redo = False
        for finished in self._select(stream, targets, wanted, rate, predicted, hold, state):
            for ci in finished:
                if predicted is not None and not confirmed(ci):
                    redo = True
                    break
                done.add(ci)
                yield ci, clips.assemble(ci, state.chosen)
            if redo:
                break
        if redo or (predicted is not None and not all(confirmed(ci) for ci in indices if ci not in done)):
            self.decode_stats["redone"] += 1
            yield from self._decode_group(stream, [ci for ci in indices if ci not in done], times, original,
                                          short_side, may_predict=False)
            return
        prev, last_time, pos = state.prev, state.last_time, state.pos
        self._check_vfr(state.deltas)
        declared = self.info.span("video")[1]
        if last_time is None:
            if first_t > self.info.video_start + 0.5:
                raise CorruptMediaError(self.path, f"no video frame decodes at or after {first_t:.2f} s although the "
                                        f"video stream declares {declared:.2f} s: truncated or corrupt")
            raise EmptyMediaError(self.path, "the video stream has no decodable frames")
        # Targets after the last frame: shown while that frame lasts, missing after the stream's end.
        end = last_time + 1.0 / (self.info.fps or 30.0)
        while not original and pos < len(targets) and targets[pos][0] < end - TIME_EPS:
            _, ci, k = targets[pos]
            state.chosen[(ci, k)] = hold(prev)
            pos += 1
        if pos < len(targets):  # the stream's data ended before the last target
            # judged against the video stream's own end: another stream may rightly run longer
            if self.info.video_end is not None and self.info.video_end - end > TRUNCATION_SLACK:
                raise CorruptMediaError(
                    self.path, f"video stops at {end:.2f} s but the video stream declares {self.info.video_end:.2f} s:"
                    f" truncated or corrupt before the clip at {targets[pos][0]:.2f} s")
            self._seen_end["video"] = min(end, self._seen_end.get("video", math.inf))
        for ci in indices:
            if ci in done:
                continue
            if not any((ci, k) in state.chosen for k in range(len(times[ci]))):
                raise DecodeError(self.path, f"clip at {times[ci][0]:.2f} s starts after the video ends ({end:.2f} s)")
            yield ci, clips.assemble(ci, state.chosen)

    def _select(self, stream, targets, wanted, rate: Fraction, predicted: dict[tuple[int, int], int] | None,
                hold, state: Selection) -> Iterator[list[int]]:
        """Decode from the current position until every target has its frame (or the stream ends), recording in
        ``state`` the frame rule's choice per ``(clip, k)`` (as ``hold`` keeps it), with non-reference frames skipped
        outside the clips' windows and, when ``predicted`` is given, inside them wherever no target is predicted to
        take the frame. Yields, after each frame that served targets, the clips it completed."""
        picker = TargetPicker(targets, wanted, rate)
        left: dict[int, int] = {}
        for _, ci, _ in targets:
            left[ci] = left.get(ci, 0) + 1
        skipping = None
        if not self.info.variable_frame_rate and self.info.fps and self.exact_savings:  # no safe margin on VFR
            keep = None if predicted is None else set(predicted.values())
            skipping = NonRefSkipper(skip_windows(targets, wanted, float(rate), self.info.fps), stream.time_base,
                                     keep)
            state.dropped = skipping.dropped
        try:
            for frame in decoded_frames(self._container, stream, self.path, skipping):
                t = frame.time if frame.time is not None else (state.last_time or 0.0) + 1.0 / (self.info.fps or 30.0)
                if state.last_time is not None and t > state.last_time and not (skipping and skipping.skipped):
                    state.deltas.append(t - state.last_time)
                if skipping:
                    skipping.skipped = False
                state.last_time = t
                finished = []
                for key, taken in picker.feed(frame, frame.pts, t, stream.time_base):
                    state.chosen[key] = hold(taken)
                    left[key[0]] -= 1
                    if not left[key[0]]:
                        finished.append(key[0])
                state.prev, state.pos = picker.prev, picker.pos
                if finished:
                    yield finished
                if picker.done:
                    break
        except CorruptMediaError as e:
            raise CorruptMediaError(self.path, f"video stream is corrupt near {state.last_time or targets[0][0]:.2f}"
                                    f" s: {e.problem}") from None
        state.prev, state.pos = picker.prev, picker.pos
        if skipping is not None:
            self.decode_stats["skipped_in_window"] += skipping.inside

    def _predict(self, stream, targets, wanted, rate: Fraction,
                 keyframe: float | None) -> dict[tuple[int, int], int] | None:
        """:func:`~avidzoo.io.selection.predict`, where anything may be skipped inside the windows: not with exact
        savings off, a variable frame rate, an unknown seek point or packets without timestamps."""
        if keyframe is None or self.info.variable_frame_rate or not self.info.fps or not self.exact_savings \
                or not self.skip_in_window:
            return None
        order = self._packets.presentation_order()
        return None if order is None else predict(order, targets, wanted, rate, stream.time_base, keyframe)

    def _seek(self, stream, t: float) -> float | None:
        """Position the decoder for a frame at ``t`` (from :meth:`_earliest`): at the keyframe at or before it when
        the keyframes are known (exactly, by its own timestamp; returns that keyframe's time), else half a frame
        before ``t`` (returns ``None``)."""
        keyframe = self._packets.keyframe_at_or_before(t) if self.exact_savings else None
        if keyframe is not None:
            seek_to(self._container, keyframe + 0.5 * float(stream.time_base), stream)
            return keyframe
        seek_to(self._container, max(t - 0.5 / (self.info.fps or 30.0), 0.0), stream)
        return None

    def _check_vfr(self, deltas: list[float]) -> None:
        if self.on_vfr != "error" or len(deltas) < 3:
            return
        lo, hi = min(deltas), max(deltas)
        if hi > 1.5 * lo + TIME_EPS or self.info.variable_frame_rate:
            raise VariableFrameRateError(self.path, f"frame intervals vary from {lo * 1e3:.1f} to {hi * 1e3:.1f} ms")

    # -- audio ----------------------------------------------------------------------------------------------------
    def read_audio(
        self,
        starts: Sequence[float],
        duration: float,
        *,
        sample_rate: int = 24000,
        missing: Literal["zeros", "error"] = "zeros",
    ) -> list[torch.Tensor]:
        """Clips of ``duration`` seconds at ``starts``, each ``(1, round(duration * sample_rate))`` float32 mono
        in [-1, 1]. A file without audio gives zeros (``missing="zeros"``) or :class:`MissingStreamError`."""
        if not self.info.has_audio:
            if missing == "error":
                raise MissingStreamError(self.path, "has no audio stream")
            n = int(round(duration * sample_rate))
            return [torch.zeros(1, n) for _ in starts]
        return read_audio_clips(self._container, self.info, self.path, starts, duration, sample_rate,
                                exact_savings=self.exact_savings, seen_end=self._seen_end)


class _ClipAssembler:
    """Makes finished clips from the chosen frames, converting a frame that several clips took once, and forgetting
    each clip's frames (and their conversions) as it is handed out, so a long stream holds only the clips under
    way."""

    def __init__(self, pixels: PixelConverter, times: list[list[float]], short_side: Size) -> None:
        self.pixels, self.times, self.size = pixels, times, short_side
        self.converted: dict[int, np.ndarray] = {}

    def assemble(self, ci: int, chosen: dict) -> torch.Tensor:
        num_frames = len(self.times[ci])
        taken = [chosen.pop((ci, k), None) for k in range(num_frames)]
        have = [f for f in taken if f is not None]
        arrays = [self.pixels.rgb(f, self.converted, self.size) for f in have]
        while len(arrays) < num_frames:  # loop the clip from its start, as the original pad_missing
            arrays += arrays[: num_frames - len(arrays)]
        on_device = isinstance(arrays[0], torch.Tensor)
        clip = torch.stack(arrays) if on_device else torch.from_numpy(np.stack(arrays))
        still = {id(f) for f in chosen.values()}
        for key in [k for k in self.converted if k not in still]:
            del self.converted[key]
        return clip


def _in_order(clips: Iterator[tuple[int, torch.Tensor]], n: int) -> list[torch.Tensor]:
    out: list[torch.Tensor | None] = [None] * n
    for i, clip in clips:
        out[i] = clip
    return out  # type: ignore[return-value]


def cuda_decoder_works(path: str | os.PathLike, device: torch.device | str = "cuda") -> str | None:
    """Decode the first video frame of ``path`` with NVDEC, frames kept on ``device``: ``None`` if a CUDA frame came
    out, else why not (what :func:`cuda_decoder_problem` says, or that FFmpeg fell back to software: no NVDEC in the
    driver, or a codec or profile it does not decode)."""
    problem = cuda_decoder_problem()
    if problem:
        return problem
    try:
        with MediaFile(path, decoder="cuda", frames_on=device) as f:
            if not f.info.has_video:
                return f"{f.path} has no video stream to try NVDEC on"
            frame = next(decoded_frames(f._container, f._container.streams.video[0], f.path), None)
    except Exception as e:  # a driver without NVDEC fails in FFmpeg's device set-up
        return f"NVDEC failed on {path}: {e}"
    if frame is None or frame.format.name != "cuda":
        return f"FFmpeg decoded {path} in software (no NVDEC for its codec, or none in the driver)"
    return None


def probe(path: str | os.PathLike) -> MediaInfo:
    """Metadata of a media file (raises a :class:`DecodeError` subclass for a missing or unreadable file)."""
    with MediaFile(path) as f:
        return f.info


def read_video_clip(path: str | os.PathLike, start: float = 0.0, *, num_frames: int = 8, fps: float = 16.0,
                    short_side: int | None = None, **kw) -> torch.Tensor:
    """One clip ``(num_frames, H, W, 3)`` uint8; see :meth:`MediaFile.read_video`."""
    with MediaFile(path, **kw) as f:
        return f.read_video([start], num_frames=num_frames, fps=fps, short_side=short_side)[0]


def read_audio_clip(path: str | os.PathLike, start: float = 0.0, duration: float = 2.0, *, sample_rate: int = 24000,
                    missing: Literal["zeros", "error"] = "zeros") -> torch.Tensor:
    """One clip ``(1, N)`` float32 mono; see :meth:`MediaFile.read_audio`."""
    with MediaFile(path) as f:
        return f.read_audio([start], duration, sample_rate=sample_rate, missing=missing)[0]


