"""What a media file holds, read from its container: the streams, their rates, sizes and formats, and each
stream's own span (its declared end, else where its last packets end). Nothing is decoded but one frame, for the
rotation that travels on decoded frames."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from ..errors import DecodeError, NotMediaError
from .demux import decoded_frames, seek_to

__all__ = ["MediaInfo", "read_info"]


@dataclass(frozen=True)
class MediaInfo:
    """What a file holds. Times in seconds; ``rotation`` in degrees counter-clockwise, as PyAV reports it.

    ``duration`` is the file's (its longest stream's end); ``video_end`` / ``audio_end`` are each stream's own end
    (declared by the container, else found from the stream's last packets), ``None`` where neither says (see
    :meth:`span`). ``pixel_format``: the video as the software decoder gives it (``yuvj420p`` for full-range H.264,
    which the BT.601 colour rule reads as full range)."""

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
    pixel_format: str | None = None

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


def read_info(container: Any, path: Path | str) -> MediaInfo:
    """The :class:`MediaInfo` of an open container (``path`` names it in errors)."""
    v = container.streams.video[0] if container.streams.video else None
    a = container.streams.audio[0] if container.streams.audio else None
    if v is None and a is None:
        raise NotMediaError(path, "the file has neither a video nor an audio stream")
    container_end = _seconds(container.duration, Fraction(1, av.time_base)) or 0.0
    durations = [container_end]
    kw: dict = {}
    if v is not None:
        rate = v.average_rate or v.guessed_rate or v.base_rate
        start, kw["video_end"] = _span(container, v, container_end)
        base = v.base_rate
        vfr = bool(rate and base and abs(float(rate) - float(base)) > 0.01 * float(base))
        # read before any decoding: a hardware decoder's frames (NV12) do not say what the software decoder gives
        fmt = getattr(v.codec_context.format, "name", None)
        kw.update(fps=float(rate) if rate else None, width=v.codec_context.width, height=v.codec_context.height,
                  num_frames=v.frames or None, video_start=start, variable_frame_rate=vfr,
                  rotation=_rotation(container, v, path), pixel_format=fmt)
    if a is not None:
        start, kw["audio_end"] = _span(container, a, container_end)
        kw.update(sample_rate=a.rate, channels=a.channels, audio_start=start)
    durations += [kw[k] for k in ("video_end", "audio_end") if kw.get(k) is not None]
    return MediaInfo(path=str(path), duration=max(durations), has_video=v is not None, has_audio=a is not None, **kw)


def _span(container: Any, stream: Any, container_end: float) -> tuple[float, float | None]:
    """A stream's start and its own end (declared, else where its last packets end; ``None`` if neither says)."""
    start = _seconds(stream.start_time, stream.time_base) or 0.0
    duration = _declared_seconds(stream, start)
    duration = duration if duration is not None else _tail_end(container, stream, container_end, start)
    return start, None if duration is None else start + duration


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    return None if value is None or time_base is None else float(value * time_base)


def _declared_seconds(stream: Any, start: float) -> float | None:
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


def _tail_end(container: Any, stream: Any, container_end: float, start: float) -> float | None:
    """A stream's duration from its last packets (a seek to the file's last seconds, no decoding), for files
    that do not declare it (PCM audio in AVI, Matroska without tags); ``None`` if that fails too."""
    end = None
    try:
        seek_to(container, max(container_end - 3.0, 0.0), stream)
        for packet in container.demux(stream):
            if packet.pts is not None:
                t = float((packet.pts + (packet.duration or 0)) * stream.time_base)
                end = t if end is None else max(end, t)
    except (av.error.FFmpegError, ValueError):
        return None
    return None if end is None else max(end - start, 0.0)


def _rotation(container: Any, stream: Any, path: Path | str) -> int:
    # The display matrix travels on decoded frames; peek at the first one.
    seek_to(container, 0.0, stream)
    try:
        frame = next(decoded_frames(container, stream, path), None)
    except DecodeError:
        frame = None
    seek_to(container, 0.0, stream)
    return int(round(getattr(frame, "rotation", 0) or 0)) % 360
