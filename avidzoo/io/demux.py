"""A container's packets and its decoder loop: seeking, decoded frames with damaged packets skipped, and the video
stream's packet table (read once, without decoding) from which keyframes, the presentation order and the frames
the decoder outputs are known."""

from __future__ import annotations

import bisect
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from ..errors import CorruptMediaError, DecodeError, EmptyMediaError

__all__ = ["FrameTable", "PacketTable", "decoded_frames", "seek_to"]

_MAX_BAD_PACKETS = 64  # undecodable packets skipped in one read before the stream is called corrupt


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


def seek_to(container: Any, t: float, stream: Any) -> None:
    """Seek to the keyframe at or before ``t`` seconds; files that cannot seek are read from the start."""
    try:
        container.seek(int(t / stream.time_base), stream=stream, backward=True, any_frame=False)
    except (av.error.FFmpegError, ZeroDivisionError, TypeError):
        with contextlib.suppress(av.error.FFmpegError):  # a fresh container is at the start already
            container.seek(0)


def decoded_frames(container: Any, stream: Any, path: Path | str, skipper: Any = None) -> Iterator[Any]:
    """Decoded frames of ``stream`` from the current position; undecodable packets are skipped, as the ffmpeg
    command line does, until there are too many (:class:`CorruptMediaError` naming ``path``). With ``skipper``
    (``skipper.outside(packet)``), the decoder drops the non-reference frames of the packets it says."""
    bad = 0
    ctx = stream.codec_context
    mode = "DEFAULT"
    try:
        for packet in container.demux(stream):
            if skipper is not None:
                want = "NONREF" if skipper.outside(packet) else "DEFAULT"
                if want != mode:
                    ctx.skip_frame = mode = want
            try:
                frames = packet.decode()
            except av.error.FFmpegError as e:
                bad += 1
                if bad > _MAX_BAD_PACKETS:
                    raise CorruptMediaError(path, f"{bad} undecodable packets ({e})") from None
                continue
            yield from frames
    except av.error.FFmpegError as e:  # the demuxer itself gave up
        raise CorruptMediaError(path, f"cannot read the stream ({e})") from None
    finally:
        if mode != "DEFAULT":
            ctx.skip_frame = "DEFAULT"


class PacketTable:
    """The video stream's packets in file order, demuxed once on first use and kept: ``(pts, is_keyframe)``, and
    the timestamps of those an edit list discards (read and decoded as references, never output)."""

    def __init__(self, container: Any, stream: Any, path: Path | str, fps: float | None) -> None:
        self._container, self.stream, self.path, self.fps = container, stream, path, fps
        self._packets: list[tuple[int | None, bool]] | None | bool = False
        self.discarded: set[int] = set()
        self._keyframes: list[float] | None | bool = False
        self._order: tuple[list[int], list[float]] | None | bool = False

    def packets(self) -> list[tuple[int | None, bool]] | None:
        """``(pts, is_keyframe)`` of every video packet; None when the packets cannot be read."""
        if self._packets is False:
            packets: list[tuple[int | None, bool]] | None = []
            try:
                seek_to(self._container, 0.0, self.stream)
                for packet in self._container.demux(self.stream):
                    if packet.size or packet.pts is not None:  # the demuxer's final empty packet is no frame
                        packets.append((packet.pts, bool(packet.is_keyframe)))
                        if packet.is_discard:  # before an edit list's start
                            self.discarded.add(packet.pts)
            except (av.error.FFmpegError, ValueError):
                packets = None
            self._packets = packets
        return self._packets  # type: ignore[return-value]

    def keyframe_times(self) -> list[float] | None:
        """Presentation times (seconds) of the keyframes; None when they cannot be read."""
        if self._keyframes is False:
            tb = self.stream.time_base
            times = sorted(float(pts * tb) for pts, key in self.packets() or () if key and pts is not None)
            self._keyframes = times or None
        return self._keyframes  # type: ignore[return-value]

    def presentation_order(self) -> tuple[list[int], list[float]] | None:
        """The packets' pts sorted (presentation order) and their times in seconds; ``None`` when the packets
        cannot be read or some have no timestamp."""
        if self._order is False:
            packets = self.packets()
            if not packets or any(pts is None for pts, _ in packets):
                self._order = None
            else:
                pts_sorted = sorted(pts for pts, _ in packets)
                tb = float(self.stream.time_base)
                self._order = (pts_sorted, [p * tb for p in pts_sorted])
        return self._order  # type: ignore[return-value]

    def frame_table(self) -> FrameTable:
        """The frames the decoder outputs, as the siblings' decoders counted them (not those an edit list
        discards), with what the stream header declares."""
        packets = self.packets()
        if packets is None:
            raise CorruptMediaError(self.path, "the video packets cannot be read")
        if not packets:
            raise EmptyMediaError(self.path, "the video stream has no packets")
        if any(pts is None for pts, _ in packets):
            raise DecodeError(self.path, "video packets without timestamps: frames cannot be placed by them")
        stream = self.stream
        return FrameTable(pts=sorted(pts for pts, _ in packets if pts not in self.discarded),
                          time_base=stream.time_base, rate=float(stream.average_rate or self.fps or 0.0),
                          declared_frames=int(stream.frames or 0), declared_duration=stream.duration)

    def keyframe_at_or_before(self, t: float) -> float | None:
        """The last keyframe at or before ``t`` seconds, if the keyframes are known and one is."""
        keyframes = self.keyframe_times()
        if not keyframes:
            return None
        i = bisect.bisect_right(keyframes, t + 1e-9) - 1
        return keyframes[i] if i >= 0 else None
