"""Decode clips from media files with PyAV, reproducing the original AVID frame and sample selection.

Video: a clip starting at ``start`` takes frames at target times ``t = start + k / fps`` (k < ``num_frames``); frames
repeat when the native rate is below ``fps``. Which frame a target gets, ``frame_times``:

* ``"original"`` (default), as the original pipeline picked them and the released numbers were computed: the target
  frame number ``int((t - stream_start) * native_fps)`` (relative to the video stream's start), and the first frame
  whose *absolute* frame number ``pts * time_base * native_fps`` (exact) reaches it. On a stream that starts late (H.264
  in MP4 often starts two frames in, for the B-frame delay) this lags by the stream's start and repeats the first frame.
* ``"timestamps"``: the frame on screen at ``t``, the last one whose timestamp is at or before it (a variable frame
  rate follows the real timestamps).

On a stream that starts at 0 with exact timestamps the two rules pick the same frames.

Targets past the end of the stream are filled by repeating the clip from its first frame (the original
``pad_missing``).

Audio: resampled by FFmpeg's resampler to signed 16-bit mono at the target rate and divided by 32767, as the original;
zeros before the first sample and after the last.

Streams end where they say: each stream's span is its own start and declared end (its duration in the container, or
Matroska's ``DURATION`` tag, else the end of its last packet), not the file's, which is the longest stream's. A
stream that stops more than half a second before its own end is truncated (:class:`CorruptMediaError`); a clip past
the end of a stream that simply ends earlier than the others is padded. :meth:`MediaFile.span` gives a stream's span,
ended earlier where a read found its data to stop.

Speed, exactly (the frames a clip takes are bit-identical to decoding everything): one open container serves every
clip of a file; the keyframe positions (read once from the packets, without decoding) decide for each clip whether to
seek or to decode through from the previous one; outside the clips' time windows the decoder skips non-reference
frames (``skip_frame=NONREF``: frames no other frame is predicted from, so skipping them changes nothing else) on a
constant-frame-rate stream, and inside them those no target takes (worked out from the packets' timestamps, checked
against the decoded frames' own: a group whose frames differ from the prediction is decoded again without); only
the frames a clip uses are converted to RGB, directly at the requested size by FFmpeg's scaler; codec threads are on.
Nothing here holds a file open after ``close()`` / the ``with`` block.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import av.codec.hwaccel
import numpy as np
import torch

from ..errors import (
    CorruptMediaError,
    DecodeError,
    EmptyMediaError,
    HardwareDecoderError,
    MediaNotFoundError,
    MissingStreamError,
    NotMediaError,
    RotationError,
    VariableFrameRateError,
)
from .colour import check_rule, frame_to_rgb, resize_rgb, rgb_supported, swscale_colour
from .remote import RemoteReader, is_url

__all__ = ["MediaInfo", "MediaFile", "FrameTable", "probe", "read_video_clip", "read_audio_clip", "DECODERS",
           "cuda_decoder_problem", "cuda_decoder_works"]

DECODERS = ("software", "cuda")

_EPS = 1e-6  # seconds; absorbs float error when a target falls exactly on a frame's timestamp
_SEEK_GAP = 2.0  # seconds between clips beyond which seeking beats decoding through, when keyframes are unknown
_AUDIO_GAP = 1.0  # seconds between audio clips beyond which a seek beats decoding through (audio seeks are cheap)
_TRUNCATION_SLACK = 0.5  # seconds a stream may end before its declared duration without being called truncated
# First bytes of container formats: a file that has one of these but will not open is damaged, not "not media".
_MAX_BAD_PACKETS = 64  # undecodable packets skipped in one read before the stream is called corrupt
_NOT_MEDIA_FORMATS = {"tty", "image2", "lavfi"}  # FFmpeg also "plays" text files and still images
_RESIZE_FLAGS = (av.video.reformatter.Interpolation.BILINEAR | av.video.reformatter.Interpolation.FULL_CHR_H_INT
                 | av.video.reformatter.Interpolation.FULL_CHR_H_INP)
_SIGNATURES = (b"\x1aE\xdf\xa3", b"RIFF", b"OggS", b"ID3", b"fLaC", b"FLV", b"\x00\x00\x01\xba", b"\x30\x26\xb2\x75")


@dataclass(frozen=True)
class FrameTable:
    """A video stream's frames, from its packets (:meth:`MediaFile.frame_table`): ``pts`` the presentation
    timestamps in order, in ``time_base`` ticks; ``rate`` the stream's average frame rate; ``declared_frames`` and
    ``declared_duration`` (ticks) what its header says (0 and ``None`` when it says nothing, as Matroska)."""

    pts: list[int]
    time_base: Fraction
    rate: float
    declared_frames: int
    declared_duration: int | None

    def seconds(self, pts: int) -> float:
        return float(pts * self.time_base)


@dataclass(frozen=True)
class MediaInfo:
    """What a file holds. Times in seconds; ``rotation`` in degrees counter-clockwise, as PyAV reports it.

    ``duration`` is the file's (its longest stream's end); ``video_end`` / ``audio_end`` are each stream's own end
    (declared by the container, else found from the stream's last packets), ``None`` where neither says (see
    :meth:`span`)."""

    path: str
    duration: float
    has_video: bool
    has_audio: bool
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    num_frames: int | None = None
    rotation: int = 0
    video_start: float = 0.0
    variable_frame_rate: bool = False
    sample_rate: int | None = None
    channels: int | None = None
    audio_start: float = 0.0
    video_end: float | None = None
    audio_end: float | None = None

    def has(self, modality: str) -> bool:
        """Whether the file has a ``"video"`` or ``"audio"`` stream."""
        return self.has_video if modality == "video" else self.has_audio

    def span(self, modality: str) -> tuple[float, float] | None:
        """``(start, end)`` of the ``"video"`` or ``"audio"`` stream, in seconds: its declared end, else the file's
        duration; ``None`` when the file has no such stream."""
        if not self.has(modality):
            return None
        start, end = (self.video_start, self.video_end) if modality == "video" else (self.audio_start, self.audio_end)
        return start, (end if end is not None else self.duration)


def _declared_seconds(stream, start: float) -> float | None:
    """A stream's own duration: the container's field, else Matroska/WebM's ``DURATION`` tag (``HH:MM:SS.fff``,
    the time its last packet ends, so a stream starting late lasts that much less)."""
    seconds = _seconds(stream.duration, stream.time_base)
    if seconds is not None:
        return seconds
    tag = next((v for k, v in stream.metadata.items() if k.upper() == "DURATION"), None)
    try:
        h, m, sec = str(tag).split(":")
        return max(int(h) * 3600 + int(m) * 60 + float(sec) - start, 0.0)
    except (TypeError, ValueError):
        return None


def _looks_like_media(head: bytes) -> bool:
    return head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide") or head.startswith(_SIGNATURES) \
        or (len(head) > 0 and head[0] == 0x47)  # MPEG-TS sync byte


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    return None if value is None or time_base is None else float(value * time_base)


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
            on_gpu = self.frames_on is not None and self.frames_on.type == "cuda"
            index = self.frames_on.index if on_gpu and self.frames_on.index is not None else \
                torch.cuda.current_device()
            hwaccel = av.codec.hwaccel.HWAccel("cuda", device=str(index), allow_software_fallback=True,
                                               is_hw_owned=on_gpu)
        # a URL stays a string (a Path would fold its "//"); its object is read through ranged requests
        self.path: Path | str = str(path) if is_url(path) or fileobj is not None else Path(path)
        self._fileobj = fileobj
        self.threads, self.rotation_policy, self.on_vfr = threads, rotation, on_vfr
        self.frame_times, self.exact_savings = frame_times, exact_savings
        self.skip_in_window = skip_in_window
        # packets skipped inside clips' windows, and groups decoded again because the frames differed from the
        # prediction (what the in-window skipping saves and costs; the tests and benchmarks read them)
        self.decode_stats = {"skipped_in_window": 0, "redone": 0}
        self._seen_end: dict[str, float] = {}  # where a read found a stream's data to end before its span did
        self.version: str | None = None  # a remote object's ETag or version id (resume redoes a changed one)
        self.read_stats: dict[str, int] | None = None  # a remote object's: bytes fetched, ranged GETs (after close)
        self._reader: RemoteReader | None = None
        self._discarded: set[int] = set()  # timestamps of video packets an edit list discards (see _packets)
        self._yuvj = False  # set by the probe: the software decoder gives the video as yuvj* (full range)
        source = self._open_source()
        try:
            self._container = av.open(source, "r", metadata_errors="ignore", hwaccel=hwaccel)
            fmt = self._container.format.name
            if fmt in _NOT_MEDIA_FORMATS or fmt.endswith("_pipe"):
                self._container.close()
                raise NotMediaError(self.path, f"not a media file (FFmpeg reads it as {fmt!r}, text or a still image)")
        except av.error.FileNotFoundError:
            raise MediaNotFoundError(self.path, "no such file") from None
        except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
            self._close_reader()
            if _looks_like_media(self._head()):
                raise CorruptMediaError(self.path, f"cannot be opened, the file is damaged or truncated ({e})") \
                    from None
            raise NotMediaError(self.path, f"not a media file FFmpeg can read ({e})") from None
        for stream in self._container.streams.video:  # must be set before the codec opens
            stream.thread_type = "AUTO" if threads != 1 else "SLICE"
            if threads:
                stream.codec_context.thread_count = threads
        try:
            self.info = self._probe()
        except BaseException:
            self.close()
            raise

    # -- lifecycle ------------------------------------------------------------------------------------------------
    def _open_source(self) -> str | RemoteReader:
        """What the demuxer opens: the local file's name, a reader over the remote object, or the file object."""
        if self._fileobj is not None:
            size = self._fileobj.seek(0, os.SEEK_END)
            self._fileobj.seek(0)
            if not size:
                raise NotMediaError(self.path, "the member is empty (0 bytes)")
            return self._fileobj
        if isinstance(self.path, Path):
            if not self.path.is_file():
                raise MediaNotFoundError(self.path, "no such file")
            if self.path.stat().st_size == 0:
                raise NotMediaError(self.path, "the file is empty (0 bytes)")
            return str(self.path)
        try:
            self._reader = RemoteReader(self.path)
        except FileNotFoundError:
            raise MediaNotFoundError(self.path, "no such object") from None
        except ValueError as e:  # no fsspec implementation of the scheme
            raise DecodeError(self.path, str(e).removeprefix(f"{self.path}: ")) from None
        except Exception as e:  # the store refused or could not be reached
            raise DecodeError(self.path, f"cannot be read from its store ({type(e).__name__}: {e})") from None
        if self._reader.size == 0:
            raise NotMediaError(self.path, "the object is empty (0 bytes)")
        self.version = self._reader.version
        return self._reader

    def _head(self) -> bytes:
        """The first bytes of the file or object (to tell a damaged media file from something else)."""
        try:
            if self._fileobj is not None:
                self._fileobj.seek(0)
                return self._fileobj.read(12)
            if isinstance(self.path, Path):
                with open(self.path, "rb") as f:
                    return f.read(12)
            with RemoteReader(self.path) as r:
                return r.read(12) or b""
        except Exception:
            return b""

    def _close_reader(self) -> None:
        if getattr(self, "_reader", None) is not None:
            self.read_stats = self._reader.stats()
            self._reader.close()
            self._reader = None

    def close(self) -> None:
        container = getattr(self, "_container", None)
        if container is not None:
            container.close()
            self._container = None
        self._close_reader()

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

    def _probe(self) -> MediaInfo:
        c = self._container
        v = c.streams.video[0] if c.streams.video else None
        a = c.streams.audio[0] if c.streams.audio else None
        if v is None and a is None:
            raise NotMediaError(self.path, "the file has neither a video nor an audio stream")
        container_end = _seconds(c.duration, Fraction(1, av.time_base)) or 0.0
        durations = [container_end]
        kw: dict = {}
        if v is not None:
            rate = v.average_rate or v.guessed_rate or v.base_rate
            start = _seconds(v.start_time, v.time_base) or 0.0
            vdur = _declared_seconds(v, start)
            vdur = vdur if vdur is not None else self._tail_end(v, container_end, start)
            if vdur is not None:
                durations.append(start + vdur)
                kw["video_end"] = start + vdur
            # whether the software decoder gives this stream as yuvj* (full range under the BT.601 rule), read before
            # any decoding: a hardware decoder's frames (NV12) do not say
            self._yuvj = (getattr(v.codec_context.format, "name", "") or "").startswith("yuvj")
            base = v.base_rate
            vfr = bool(rate and base and abs(float(rate) - float(base)) > 0.01 * float(base))
            kw.update(fps=float(rate) if rate else None, width=v.codec_context.width, height=v.codec_context.height,
                      num_frames=v.frames or None, video_start=start, variable_frame_rate=vfr,
                      rotation=self._rotation(v))
        if a is not None:
            start = _seconds(a.start_time, a.time_base) or 0.0
            adur = _declared_seconds(a, start)
            adur = adur if adur is not None else self._tail_end(a, container_end, start)
            if adur is not None:
                durations.append(start + adur)
                kw["audio_end"] = start + adur
            kw.update(sample_rate=a.rate, channels=a.channels, audio_start=start)
        return MediaInfo(path=str(self.path), duration=max(durations), has_video=v is not None,
                         has_audio=a is not None, **kw)

    def _tail_end(self, stream, container_end: float, start: float) -> float | None:
        """A stream's duration from its last packets (a seek to the file's last seconds, no decoding), for files
        that do not declare it (PCM audio in AVI, Matroska without tags); ``None`` if that fails too."""
        end = None
        try:
            self._seek_to(max(container_end - 3.0, 0.0), stream)
            for packet in self._container.demux(stream):
                if packet.pts is not None:
                    t = float((packet.pts + (packet.duration or 0)) * stream.time_base)
                    end = t if end is None else max(end, t)
        except (av.error.FFmpegError, ValueError):
            return None
        return None if end is None else max(end - start, 0.0)

    def _rotation(self, stream) -> int:
        # The display matrix travels on decoded frames; peek at the first one.
        self._seek_to(0.0, stream)
        try:
            frame = next(self._frames(stream), None)
        except DecodeError:
            frame = None
        self._seek_to(0.0, stream)
        return int(round(getattr(frame, "rotation", 0) or 0)) % 360

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
        if duration is not None:
            num_frames = max(int(round(duration * fps)), 1)
        times = [[s + k / fps for k in range(num_frames)] for s in starts]
        return self._read_clips(times, [s + num_frames / fps for s in starts], self.frame_times == "original",
                                short_side)

    def read_frames(self, times: Sequence[Sequence[float]], *,
                    short_side: int | tuple[int, int] | None = None) -> list[torch.Tensor]:
        """Clips whose frames are named by time: clip ``i`` is ``(len(times[i]), H, W, 3)`` uint8 RGB, frame ``k``
        the last one whose timestamp is at or before ``times[i][k]`` (seconds), so a frame's own timestamp gives
        exactly that frame. This is how the siblings' frame rules (:mod:`avidzoo.io.frame_rules`) read the frames
        they pick from the stream's packet timestamps. ``short_side`` as in :meth:`read_video`."""
        frame = 1.0 / (self.info.fps or 30.0)
        times = [list(t) for t in times]
        return self._read_clips(times, [max(t) + frame for t in times], False, short_side)

    def _read_clips(self, times: list[list[float]], ends: list[float], original: bool,
                    short_side: int | tuple[int, int] | None) -> list[torch.Tensor]:
        """Clip ``i`` takes a frame for each target in ``times[i]`` (seconds), by the original frame numbers or by
        timestamps; ``ends[i]``: where the clip's span ends."""
        if not self.info.has_video:
            raise MissingStreamError(self.path, "has no video stream (an audio-only file)")
        if self.info.rotation and self.rotation_policy == "error":
            raise RotationError(self.path, f"the video is rotated by {self.info.rotation} degrees")
        stream = self._container.streams.video[0]
        order = sorted(range(len(times)), key=lambda i: times[i][0])
        clips: list[torch.Tensor | None] = [None] * len(times)
        keyframes = self._keyframe_times(stream) if self.exact_savings else None
        # Clips share one decoding pass unless a keyframe lies between them: then a seek skips the frames between.
        group: list[int] = []
        for i in order:
            if group and self._seek_between(keyframes, ends[group[-1]], self._earliest(stream, times[i][0], original)):
                self._decode_group(stream, group, clips, times, original, short_side)
                group = []
            group.append(i)
        if group:
            self._decode_group(stream, group, clips, times, original, short_side)
        return clips  # type: ignore[return-value]

    def keyframe_times(self) -> list[float]:
        """Presentation times (seconds) of the video's keyframes, read from its packets without decoding; empty
        when the file has no video or they cannot be read."""
        if not self.info.has_video:
            return []
        return list(self._keyframe_times(self._container.streams.video[0]) or [])

    def _keyframe_times(self, stream) -> list[float] | None:
        """Presentation times of the video's keyframes, from its packets (demuxed once, not decoded); None when
        they cannot be read."""
        if getattr(self, "_keyframes", False) is False:
            packets = self._packets(stream)
            times = sorted(float(pts * stream.time_base) for pts, key in packets or () if key and pts is not None)
            self._keyframes = times or None
        return self._keyframes

    def _packets(self, stream) -> list[tuple[int | None, bool]] | None:
        """``(pts, is_keyframe)`` of every video packet in file order, demuxed once and kept; None when the packets
        cannot be read."""
        if getattr(self, "_packet_list", False) is not False:
            return self._packet_list
        packets: list[tuple[int | None, bool]] | None = []
        try:
            self._seek_to(0.0, stream)
            for packet in self._container.demux(stream):
                if packet.size or packet.pts is not None:  # the demuxer's final empty packet is no frame
                    packets.append((packet.pts, bool(packet.is_keyframe)))
                    if packet.is_discard:  # before an edit list's start: decoded as a reference, never output
                        self._discarded.add(packet.pts)
        except (av.error.FFmpegError, ValueError):
            packets = None
        self._packet_list = packets
        return packets

    def frame_table(self) -> FrameTable:
        """The video stream's frames as its packets list them, without decoding: the presentation timestamps in
        order (``pts``, in ``time_base`` ticks) and what the stream header declares (``declared_frames``,
        ``declared_duration``; 0 / ``None`` where it declares nothing), which the siblings' frame rules read."""
        if not self.info.has_video:
            raise MissingStreamError(self.path, "has no video stream (an audio-only file)")
        stream = self._container.streams.video[0]
        packets = self._packets(stream)
        if packets is None:
            raise CorruptMediaError(self.path, "the video packets cannot be read")
        if not packets:
            raise EmptyMediaError(self.path, "the video stream has no packets")
        if any(pts is None for pts, _ in packets):
            raise DecodeError(self.path, "video packets without timestamps: frames cannot be placed by them")
        rate = float(stream.average_rate or self.info.fps or 0.0)
        # the frames the decoder outputs, as the siblings' decoders counted them: not those an edit list discards
        return FrameTable(pts=sorted(pts for pts, _ in packets if pts not in self._discarded),
                          time_base=stream.time_base, rate=rate, declared_frames=int(stream.frames or 0),
                          declared_duration=stream.duration)

    def _earliest(self, stream, t: float, original: bool) -> float:
        """A time at or before the frame that the target ``t`` takes, such that the keyframe at or before it is all a
        decoder needs: ``t`` itself for the timestamps rule (the frame on screen at ``t`` comes at or after the
        keyframe before ``t``); for the original rule, the time of the target's frame number (``number / rate``)."""
        if not original:
            return t
        rate = float(stream.average_rate or self.info.fps or 30.0)
        return min(t, max(int((t - self.info.video_start) * rate), 0) / rate)

    def _seek_between(self, keyframes: list[float] | None, done: float, need: float) -> bool:
        """Whether a clip whose earliest frame is at ``need`` is better reached by a seek than by decoding on from
        ``done`` (seconds): exactly when a keyframe lies after ``done`` and at or before ``need`` (decoding would
        restart there anyway)."""
        if keyframes is None:
            return need - done > _SEEK_GAP
        i = bisect.bisect_right(keyframes, need + 1e-9) - 1
        return i >= 0 and keyframes[i] > done + 1.0 / (self.info.fps or 30.0)

    @staticmethod
    def _output_size(frame, short_side: int | tuple[int, int] | None) -> tuple[int, int] | None:
        if short_side is None or isinstance(short_side, tuple):
            return short_side
        w, h, s = frame.width, frame.height, short_side
        return (s, int(s * h / w)) if w <= h else (int(s * w / h), s)

    def _decode_group(self, stream, indices, clips, times, original: bool, short_side) -> None:
        targets = sorted((t, ci, k) for ci in indices for k, t in enumerate(times[ci]))
        rate = stream.average_rate or Fraction(self.info.fps or 30.0).limit_denominator(1001)
        # The original's target frame numbers: int() of a float, relative to the stream's start.
        wanted = [int((t - self.info.video_start) * float(rate)) for t, _, _ in targets]
        first_t = targets[0][0]
        keyframe = self._seek(stream, self._earliest(stream, first_t, original))
        # Inside the clips' windows, the non-reference frames that no target takes (predicted from the packets'
        # timestamps) are skipped too; a prediction that the decoded frames do not confirm redoes the group without.
        predicted = self._predict(stream, targets, wanted if original else None, rate, keyframe)
        hold = self._holder(short_side)
        state = self._select(stream, targets, wanted, original, rate, predicted, hold)
        if predicted is not None and any(getattr(state.chosen.get((ci, k)), "pts", None) != pts
                                         for (ci, k), pts in predicted.items()):
            self.decode_stats["redone"] += 1
            self._seek(stream, self._earliest(stream, first_t, original))
            state = self._select(stream, targets, wanted, original, rate, None, hold)
        chosen, prev, last_time, deltas, pos = state.chosen, state.prev, state.last_time, state.deltas, state.pos
        self._check_vfr(deltas)
        declared = self.info.span("video")[1]
        if last_time is None:
            if first_t > self.info.video_start + 0.5:
                raise CorruptMediaError(self.path, f"no video frame decodes at or after {first_t:.2f} s although the "
                                        f"video stream declares {declared:.2f} s: truncated or corrupt")
            raise EmptyMediaError(self.path, "the video stream has no decodable frames")
        # Targets after the last frame: shown while that frame lasts, missing after the stream's end.
        frame_dur = 1.0 / (self.info.fps or 30.0)
        end = last_time + frame_dur
        while not original and pos < len(targets) and targets[pos][0] < end - _EPS:
            _, ci, k = targets[pos]
            chosen[(ci, k)] = hold(prev)
            pos += 1
        if pos < len(targets):  # the stream's data ended before the last target
            # judged against the video stream's own end: another stream may rightly run longer
            if self.info.video_end is not None and self.info.video_end - end > _TRUNCATION_SLACK:
                raise CorruptMediaError(
                    self.path, f"video stops at {end:.2f} s but the video stream declares {self.info.video_end:.2f} s:"
                    f" truncated or corrupt before the clip at {targets[pos][0]:.2f} s")
            self._seen_end["video"] = min(end, self._seen_end.get("video", math.inf))
        converted: dict[int, np.ndarray] = {}
        for ci in indices:
            num_frames, start = len(times[ci]), times[ci][0]
            frames = [chosen.get((ci, k)) for k in range(num_frames)]
            have = [f for f in frames if f is not None]
            if not have:
                raise DecodeError(self.path, f"clip at {start:.2f} s starts after the video ends ({end:.2f} s)")
            arrays = [f.rgb if isinstance(f, _Held) else self._to_rgb(f, converted, short_side) for f in have]
            while len(arrays) < num_frames:  # loop the clip from its start, as the original pad_missing
                arrays += arrays[: num_frames - len(arrays)]
            on_device = isinstance(arrays[0], torch.Tensor)
            clips[ci] = torch.stack(arrays) if on_device else torch.from_numpy(np.stack(arrays))

    def _select(self, stream, targets, wanted, original: bool, rate: Fraction,
                predicted: dict[tuple[int, int], int] | None, hold) -> _Selection:
        """Decode from the current position until every target has its frame (or the stream ends): the frame rule's
        choice per ``(clip, k)`` (as ``hold`` keeps it), with non-reference frames skipped outside the clips'
        windows and, when ``predicted`` is given, inside them wherever no target is predicted to take the frame."""
        state = _Selection()
        chosen = state.chosen
        first_t = targets[0][0]
        pos = 0
        prev = None
        skipping = self._nonref_skipper(stream, targets, wanted if original else None, float(rate),
                                        keep=None if predicted is None else set(predicted.values()))
        try:
            for frame in self._frames(stream, skipping):
                t = frame.time if frame.time is not None else (state.last_time or 0.0) + 1.0 / (self.info.fps or 30.0)
                if state.last_time is not None and t > state.last_time and not (skipping and skipping.skipped):
                    state.deltas.append(t - state.last_time)
                if skipping:
                    skipping.skipped = False
                state.last_time = t
                if original:  # the first frame whose absolute frame number reaches the target's
                    number = frame.pts * stream.time_base * rate if frame.pts is not None else t * float(rate)
                    while pos < len(targets) and number >= wanted[pos]:
                        _, ci, k = targets[pos]
                        chosen[(ci, k)] = hold(frame)
                        pos += 1
                else:  # the last frame at or before the target time
                    while pos < len(targets) and t > targets[pos][0] + _EPS:
                        _, ci, k = targets[pos]
                        chosen[(ci, k)] = hold(prev if prev is not None else frame)
                        pos += 1
                if pos == len(targets):
                    break
                prev = frame
        except CorruptMediaError as e:
            raise CorruptMediaError(self.path, f"video stream is corrupt near {state.last_time or first_t:.2f} s: "
                                    f"{e.problem}") from None
        state.prev, state.pos = prev, pos
        if skipping is not None:
            self.decode_stats["skipped_in_window"] += skipping.inside
        return state

    def _predict(self, stream, targets, wanted, rate: Fraction,
                 keyframe: float | None) -> dict[tuple[int, int], int] | None:
        """The pts of the frame each target ``(clip, k)`` will take, worked out from the packets' timestamps as
        :meth:`_select` chooses from decoded frames (``wanted``: the original rule's frame numbers, ``None`` for the
        timestamps rule), decoding from the keyframe at ``keyframe`` seconds. ``None`` where nothing may be skipped
        inside the windows: exact savings off, a variable frame rate, an unknown seek point, packets without
        timestamps, or targets past the stream's last frame (whose end then decides what they take)."""
        if keyframe is None or self.info.variable_frame_rate or not self.info.fps or not self.exact_savings \
                or not self.skip_in_window:
            return None
        order = self._presentation_order(stream)
        if order is None:
            return None
        tb = stream.time_base
        pts_sorted, times = order
        out: dict[tuple[int, int], int] = {}
        pos, prev = 0, None
        for pts in pts_sorted[bisect.bisect_left(times, keyframe - float(tb)):]:
            if wanted is not None:
                number = pts * tb * rate
                while pos < len(targets) and number >= wanted[pos]:
                    out[targets[pos][1:]] = pts
                    pos += 1
            else:
                t = float(pts * tb)
                while pos < len(targets) and t > targets[pos][0] + _EPS:
                    out[targets[pos][1:]] = prev if prev is not None else pts
                    pos += 1
            if pos == len(targets):
                return out
            prev = pts
        return None

    def _presentation_order(self, stream) -> tuple[list[int], list[float]] | None:
        """The video packets' pts sorted (presentation order) and their times in seconds, computed once per file;
        ``None`` when the packets cannot be read or some have no timestamp."""
        if getattr(self, "_order", False) is False:
            packets = self._packets(stream)
            if not packets or any(pts is None for pts, _ in packets):
                self._order = None
            else:
                pts_sorted = sorted(pts for pts, _ in packets)
                tb = float(stream.time_base)
                self._order = (pts_sorted, [p * tb for p in pts_sorted])
        return self._order

    def _nonref_skipper(self, stream, targets, wanted, rate: float,
                        keep: set[int] | None = None) -> _NonRefSkipper | None:
        """What may be skipped while decoding a group: non-reference frames outside every clip's window, and with
        ``keep`` (the pts of the frames the targets take) those inside the windows that are not kept. Each window
        runs from two frames before a clip's earliest possible frame to one frame past its last target, so no frame
        a target could take is ever skipped outside them. Off for variable frame rates, where no fixed margin is
        safe."""
        if self.info.variable_frame_rate or not self.info.fps or not self.exact_savings:
            return None
        frame = 1.0 / self.info.fps
        clips: dict[int, list[float]] = {}
        for j, (t, ci, _) in enumerate(targets):
            # the frame a target takes: timestamps rule, at or before t; original rule, number >= wanted
            at = t if wanted is None else min(t, max(wanted[j], 0) / rate)
            clips.setdefault(ci, []).append(at)
        windows = sorted((min(v) - 2 * frame, max(v) + 1.5 * frame) for v in clips.values())
        return _NonRefSkipper(windows, stream.time_base, keep if self.skip_in_window else None)

    def _frames(self, stream, skipper: _NonRefSkipper | None = None):
        """Decoded frames of ``stream`` from the current position; undecodable packets are skipped, as the ffmpeg
        command line does, until there are too many. With ``skipper``, the decoder drops the non-reference frames of
        packets outside its windows."""
        bad = 0
        ctx = stream.codec_context
        mode = "DEFAULT"
        try:
            for packet in self._container.demux(stream):
                if skipper is not None:
                    want = "NONREF" if skipper.outside(packet) else "DEFAULT"
                    if want != mode:
                        ctx.skip_frame = mode = want
                try:
                    frames = packet.decode()
                except av.error.FFmpegError as e:
                    bad += 1
                    if bad > _MAX_BAD_PACKETS:
                        raise CorruptMediaError(self.path, f"{bad} undecodable packets ({e})") from None
                    continue
                yield from frames
        except av.error.FFmpegError as e:  # the demuxer itself gave up
            raise CorruptMediaError(self.path, f"cannot read the stream ({e})") from None
        finally:
            if mode != "DEFAULT":
                ctx.skip_frame = "DEFAULT"

    def _seek(self, stream, t: float) -> float | None:
        """Position the decoder for a frame at ``t`` (from :meth:`_earliest`): at the keyframe at or before it when
        the keyframes are known (exactly, by its own timestamp; returns that keyframe's time), else half a frame
        before ``t`` (returns ``None``)."""
        keyframes = self._keyframe_times(stream) if self.exact_savings else None
        if keyframes:
            i = bisect.bisect_right(keyframes, t + 1e-9) - 1
            if i >= 0:
                self._seek_to(keyframes[i] + 0.5 * float(stream.time_base), stream)
                return keyframes[i]
        self._seek_to(max(t - 0.5 / (self.info.fps or 30.0), 0.0), stream)
        return None

    def _seek_to(self, t: float, stream) -> None:
        """Seek to the keyframe at or before ``t`` seconds; files that cannot seek are read from the start."""
        try:
            self._container.seek(int(t / stream.time_base), stream=stream, backward=True, any_frame=False)
        except (av.error.FFmpegError, ZeroDivisionError, TypeError):
            with contextlib.suppress(av.error.FFmpegError):  # a fresh container is at the start already
                self._container.seek(0)

    def _holder(self, short_side: int | tuple[int, int] | None):
        """How a chosen frame is kept until its clip is assembled: as the decoder's frame (converted by swscale
        later), or with ``frames_on`` converted at once to an RGB tensor on that device (a hardware decoder's
        surfaces are few, and the frame's own planes are released as soon as it is copied). A frame chosen by
        several targets in a row is converted once."""
        if self.frames_on is None:
            return lambda frame: frame
        last: list = [None, None]

        def hold(frame):
            if frame is None or isinstance(frame, _Held):
                return frame
            if last[0] is not frame:
                last[0], last[1] = frame, _Held(frame.pts, frame.time, self._to_tensor(frame, short_side))
            return last[1]
        return hold

    def _to_tensor(self, frame, short_side: int | tuple[int, int] | None) -> torch.Tensor:
        """``(H, W, 3)`` uint8 on ``frames_on``: :func:`~avidzoo.io.colour.frame_to_rgb` and an antialiased bilinear
        resize there; a fixed ``(width, height)`` (VMZ's FAST_BILINEAR, which torch does not reproduce) or a layout
        torch does not read goes through swscale on the host first."""
        if isinstance(short_side, tuple) or not rgb_supported(frame):
            if frame.format.name == "cuda":
                raise DecodeError(self.path, f"{frame.sw_format.name} frames held on the GPU cannot be converted "
                                  f"{'to a fixed size' if isinstance(short_side, tuple) else 'in torch'}; decode "
                                  f"them to the host (frames_on=None)")
            return torch.from_numpy(self._to_rgb(frame, {}, short_side)).to(self.frames_on)
        rgb = frame_to_rgb(frame, self.frames_on, self.colour, self._yuvj)
        size = self._output_size(frame, short_side)
        if size is not None:
            rgb = resize_rgb(rgb, size)
        if self.info.rotation and self.rotation_policy == "apply":
            rgb = torch.rot90(rgb, k=self.info.rotation // 90, dims=(0, 1)).contiguous()
        return rgb

    def _to_rgb(self, frame, cache: dict[int, np.ndarray], short_side: int | tuple[int, int] | None) -> np.ndarray:
        key = id(frame)
        if key not in cache:
            size = self._output_size(frame, short_side)
            colour = swscale_colour(frame, self.colour, self._yuvj)
            if size is None:
                rgb = frame.reformat(format="rgb24", **colour).to_ndarray()
            elif isinstance(short_side, tuple):
                # A fixed (width, height), aspect ignored, as VMZ's decoder scales: one swscale pass from the
                # decoder's pixel format to RGB with SWS_FAST_BILINEAR.
                rgb = frame.reformat(width=size[0], height=size[1], format="rgb24", **colour,
                                     interpolation=av.video.reformatter.Interpolation.FAST_BILINEAR).to_ndarray()
            else:
                # Colour conversion at full size, then swscale's bilinear RGB resize: within 0.2 grey levels of
                # the original's PIL bilinear resize (resizing straight from YUV differs by about 3).
                rgb = frame.reformat(format="rgb24", **colour).reformat(width=size[0], height=size[1],
                                                                        interpolation=_RESIZE_FLAGS).to_ndarray()
            if self.info.rotation and self.rotation_policy == "apply":
                rgb = np.ascontiguousarray(np.rot90(rgb, k=self.info.rotation // 90))
            cache[key] = rgb
        return cache[key]

    def _check_vfr(self, deltas: list[float]) -> None:
        if self.on_vfr != "error" or len(deltas) < 3:
            return
        lo, hi = min(deltas), max(deltas)
        if hi > 1.5 * lo + _EPS or self.info.variable_frame_rate:
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
        n = int(round(duration * sample_rate))
        if not self.info.has_audio:
            if missing == "error":
                raise MissingStreamError(self.path, "has no audio stream")
            return [torch.zeros(1, n) for _ in starts]
        out: list[torch.Tensor | None] = [None] * len(starts)
        # Clips close together share one decoding run; with exact savings a gap longer than _AUDIO_GAP is skipped by
        # a seek (each run starts its own resampler, as the original did per clip).
        order = sorted(range(len(starts)), key=lambda i: starts[i])
        gap = _AUDIO_GAP if self.exact_savings else math.inf
        runs: list[list[int]] = []
        for i in order:
            if runs and starts[i] - (starts[runs[-1][-1]] + duration) <= gap:
                runs[-1].append(i)
            else:
                runs.append([i])
        for run in runs:
            data, t0 = self._decode_audio(starts[run[0]], starts[run[-1]] + duration, sample_rate)
            for i in run:
                offset = int(round((starts[i] - t0) * sample_rate))
                clip = np.zeros(n, dtype=np.float32)
                src_lo, dst_lo = max(offset, 0), max(-offset, 0)
                length = max(min(n - dst_lo, data.shape[0] - src_lo), 0)
                clip[dst_lo:dst_lo + length] = data[src_lo:src_lo + length]
                out[i] = torch.from_numpy(clip)[None]
        return out  # type: ignore[return-value]

    def _decode_audio(self, lo: float, hi: float, sample_rate: int) -> tuple[np.ndarray, float]:
        stream = self._container.streams.audio[0]
        resampler = av.AudioResampler(format="s16p", layout="mono", rate=sample_rate)
        self._seek_to(max(lo - 0.1, 0.0), stream)
        chunks: list[np.ndarray] = []
        t0 = None
        data_end = 0.0  # where the frames seen end
        exhausted = True  # the stream ran out before hi
        try:
            for frame in self._frames(stream):
                ft = frame.time if frame.time is not None else 0.0
                data_end = max(data_end, ft + frame.samples / frame.rate)
                if ft + frame.samples / frame.rate < lo:
                    continue
                if ft > hi:
                    exhausted = False
                    break
                if t0 is None:
                    t0 = ft
                frame.pts = None  # let the resampler run continuously across frames
                chunks += [r.to_ndarray() for r in resampler.resample(frame)]
            chunks += [r.to_ndarray() for r in resampler.resample(None)]
        except (CorruptMediaError, av.error.FFmpegError) as e:
            raise CorruptMediaError(self.path, f"audio stream is corrupt near {lo:.2f} s: {e}") from None
        if exhausted and data_end < hi:
            # Judged against the audio stream's own end: the video may rightly run longer.
            declared = self.info.audio_end
            if declared is not None and declared - max(data_end, lo) > _TRUNCATION_SLACK:
                raise CorruptMediaError(self.path, f"audio stops at {data_end:.2f} s but the audio stream declares "
                                        f"{declared:.2f} s: truncated or corrupt before {min(hi, declared):.2f} s")
            self._seen_end["audio"] = min(data_end, self._seen_end.get("audio", math.inf))
        if t0 is None:  # nothing of the stream in [lo, hi]: before it starts or after it ends
            return np.zeros(0, dtype=np.float32), lo
        data = np.concatenate(chunks, axis=1)[0] if chunks else np.zeros(0, np.int16)
        return data.astype(np.float32) / np.iinfo(np.int16).max, t0


@dataclass(frozen=True)
class _Held:
    """A chosen frame already converted to RGB on ``frames_on`` (its timestamp kept for the checks)."""

    pts: int | None
    time: float | None
    rgb: torch.Tensor


@dataclass
class _Selection:
    """What one decoding pass of a group found: the frame each ``(clip, k)`` takes, the last frame before the one
    the pass stopped at, the last frame's time, the frame intervals seen and how many targets were served."""

    chosen: dict = field(default_factory=dict)
    prev: object = None
    last_time: float | None = None
    deltas: list = field(default_factory=list)
    pos: int = 0


class _NonRefSkipper:
    """Per packet: may its frame be skipped if it is a non-reference one? Outside every window always; inside one,
    when ``keep`` (the pts of the frames the targets take) is given and does not hold it. ``skipped`` notes that a
    packet was decoded with skipping on since the last frame came out (frame intervals then say nothing about the
    rate)."""

    def __init__(self, windows: list[tuple[float, float]], time_base: Fraction, keep: set[int] | None = None) -> None:
        self.windows, self.time_base, self.keep, self.skipped = windows, time_base, keep, False
        self.inside = 0  # non-key packets inside a window that were not kept (skipped if non-reference)

    def outside(self, packet) -> bool:
        if packet.pts is None or packet.is_keyframe:
            return False
        t = float(packet.pts * self.time_base)
        out = not any(lo <= t <= hi for lo, hi in self.windows)
        if not out and self.keep is not None and packet.pts not in self.keep:
            out = True
            self.inside += 1
        self.skipped |= out
        return out


def cuda_decoder_problem() -> str | None:
    """What this machine lacks for ``decoder="cuda"``, or ``None``: a CUDA device that torch sees and an FFmpeg built
    with CUDA hwaccel (PyAV's wheels are). Whether the driver has NVDEC shows only when a frame decodes
    (:func:`cuda_decoder_works`)."""
    if not torch.cuda.is_available():
        build = "a CPU-only torch" if torch.version.cuda is None else f"torch built for CUDA {torch.version.cuda}"
        return f"no CUDA device ({build}; torch.cuda.is_available() is False); use decoder='software' or 'auto'"
    devices = av.codec.hwaccel.hwdevices_available()
    if "cuda" not in devices:
        return (f"PyAV {av.__version__}'s FFmpeg has no CUDA hwaccel (it has: {', '.join(devices) or 'none'}); "
                "install PyAV's binary wheel, or use decoder='software'")
    return nvdec_session_problem(torch.cuda.current_device())


@functools.cache
def nvdec_session_problem(index: int) -> str | None:
    """Whether an NVDEC session starts on GPU ``index`` (once per process), with torch's CUDA context there as
    extraction has it: a one-frame H.264 clip made in memory, decoded there. Seen on an H200 machine whose container
    did not expose video decoding (``NVIDIA_DRIVER_CAPABILITIES`` without ``video``): NVDEC decoded until torch
    created its context in the process, then every open failed with "Operation not supported" (FFmpeg's
    ``primary_ctx`` did not help), which read as a damaged file. It is found here, before any file is blamed."""
    with contextlib.suppress(RuntimeError):  # the model's context comes first in extraction, too
        torch.zeros(1, device=torch.device("cuda", index))
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=1)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        black = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
        for packet in [*stream.encode(black), *stream.encode(None)]:
            out.mux(packet)
    buf.seek(0)
    try:
        hwaccel = av.codec.hwaccel.HWAccel("cuda", device=str(index), allow_software_fallback=False, is_hw_owned=True)
        with av.open(buf, "r", hwaccel=hwaccel) as c:
            frame = next(c.decode(video=0), None)
    except Exception as e:  # FFmpeg's device or decoder set-up refused
        caps = os.environ.get("NVIDIA_DRIVER_CAPABILITIES")
        hint = (f"; this container's NVIDIA_DRIVER_CAPABILITIES is {caps!r}, and NVDEC needs 'video' (or 'all') "
                "there" if caps is not None and not {"video", "all"} & set(caps.split(",")) else "")
        return f"NVDEC does not start on GPU {index} ({type(e).__name__}: {e}){hint}; use decoder='software'"
    if frame is None or frame.format.name != "cuda":
        return f"FFmpeg decoded H.264 in software on GPU {index}: the driver offers no NVDEC"
    return None


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
            frame = next(f._frames(f._container.streams.video[0]), None)
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


