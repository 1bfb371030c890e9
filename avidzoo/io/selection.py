"""Which frame each of a clip's targets takes, and what may be skipped on the way.

One implementation of the frame rules (:class:`TargetPicker`) serves both the selection from decoded frames and
the prediction from packet timestamps, so the two cannot disagree by construction; a prediction the decoded frames
do not confirm is still caught and the group decoded again without it.

* ``"original"``: the target frame number ``int((t - stream_start) * native_fps)`` (``wanted``), and the first frame
  whose absolute frame number ``pts * time_base * native_fps`` reaches it;
* ``"timestamps"``: the frame on screen at ``t``, the last one whose timestamp is at or before it.

Skipping (:class:`NonRefSkipper`): outside the clips' windows the decoder drops non-reference frames
(``skip_frame=NONREF``), and inside them those no target is predicted to take."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

__all__ = ["TIME_EPS", "NonRefSkipper", "Selection", "TargetPicker", "earliest", "lost_a_frame", "predict",
           "seek_between", "skip_windows"]

TIME_EPS = 1e-6  # seconds; absorbs float error when a target falls exactly on a frame's timestamp
_SEEK_GAP = 2.0  # seconds between clips beyond which seeking beats decoding through, when keyframes are unknown

Target = tuple[float, int, int]  # (time in seconds, clip, frame k of the clip), sorted by time


class TargetPicker:
    """The frame rule, fed frames in presentation order: :meth:`feed` says which targets a frame serves and what
    each takes (the frame itself; for the timestamps rule, the frame before it, once a frame shows the target has
    passed). ``wanted``: the original rule's frame numbers per target, ``None`` for the timestamps rule."""

    def __init__(self, targets: list[Target], wanted: list[int] | None, rate: Fraction) -> None:
        self.targets, self.wanted, self.rate = targets, wanted, rate
        self.pos = 0  # targets served so far
        self.prev: Any = None  # the frame fed before the current one (until every target is served)

    @property
    def done(self) -> bool:
        return self.pos == len(self.targets)

    def feed(self, item: Any, pts: int | None, t: float, time_base: Fraction) -> list[tuple[tuple[int, int], Any]]:
        """``((clip, k), taken)`` for each target the frame ``item`` (timestamp ``pts``, ``t`` seconds) serves."""
        targets, pos, out = self.targets, self.pos, []
        if self.wanted is not None:  # the first frame whose absolute frame number reaches the target's
            number = pts * time_base * self.rate if pts is not None else t * float(self.rate)
            while pos < len(targets) and number >= self.wanted[pos]:
                out.append((targets[pos][1:], item))
                pos += 1
        else:  # the last frame at or before the target time
            while pos < len(targets) and t > targets[pos][0] + TIME_EPS:
                out.append((targets[pos][1:], self.prev if self.prev is not None else item))
                pos += 1
        self.pos = pos
        if not self.done:
            self.prev = item
        return out


def predict(order: tuple[list[int], list[float]], targets: list[Target], wanted: list[int] | None, rate: Fraction,
            time_base: Fraction, keyframe: float) -> dict[tuple[int, int], int] | None:
    """The pts of the frame each target ``(clip, k)`` will take, from the packets' presentation ``order`` (pts,
    seconds) when decoding starts at the keyframe at ``keyframe`` seconds; ``None`` when the targets run past the
    stream's last frame (its end then decides what they take)."""
    pts_sorted, times = order
    picker = TargetPicker(targets, wanted, rate)
    out: dict[tuple[int, int], int] = {}
    for pts in pts_sorted[bisect.bisect_left(times, keyframe - float(time_base)):]:
        out.update(picker.feed(pts, pts, float(pts * time_base), time_base))
        if picker.done:
            return out
    return None


@dataclass
class Selection:
    """What one decoding pass of a group found: the frame each ``(clip, k)`` takes, the last frame before the one
    the pass stopped at, the last frame's time, the frame intervals seen, how many targets were served and which
    packets were skipped inside the windows."""

    chosen: dict = field(default_factory=dict)
    prev: object = None
    last_time: float | None = None
    deltas: list = field(default_factory=list)
    pos: int = 0
    dropped: set = field(default_factory=set)  # pts of the packets skipped inside the windows


def lost_a_frame(order: tuple[list[int], list[float]], target: Target, wanted: int | None, rate: Fraction,
                 time_base: Fraction, chosen: int, dropped: set[int]) -> bool:
    """Whether a target that took the frame ``chosen`` (pts) would have taken another had the in-window skipping
    not dropped it: a packet in ``dropped`` (skipped inside a window) that the frame rule prefers. The original rule
    takes the first frame whose number reaches ``wanted``, so a dropped frame before ``chosen`` that reaches it; the
    timestamps rule the last at or before the target time, so a dropped frame after ``chosen`` and not after it.
    ``order``: the packets' presentation order (pts, seconds)."""
    pts_sorted, times = order
    i = bisect.bisect_left(pts_sorted, chosen)
    if wanted is not None:
        while i > 0 and pts_sorted[i - 1] * time_base * rate >= wanted:
            i -= 1
            if pts_sorted[i] in dropped:
                return True
        return False
    i += 1
    while i < len(pts_sorted) and times[i] <= target[0] + TIME_EPS:
        if pts_sorted[i] in dropped:
            return True
        i += 1
    return False


def earliest(t: float, original: bool, rate: float, video_start: float) -> float:
    """A time at or before the frame that the target ``t`` takes, such that the keyframe at or before it is all a
    decoder needs: ``t`` itself for the timestamps rule (the frame on screen at ``t`` comes at or after the
    keyframe before ``t``); for the original rule, the time of the target's frame number (``number / rate``)."""
    if not original:
        return t
    return min(t, max(int((t - video_start) * rate), 0) / rate)


def seek_between(keyframes: list[float] | None, done: float, need: float, fps: float) -> bool:
    """Whether a clip whose earliest frame is at ``need`` is better reached by a seek than by decoding on from
    ``done`` (seconds): exactly when a keyframe lies after ``done`` and at or before ``need`` (decoding would
    restart there anyway)."""
    if keyframes is None:
        return need - done > _SEEK_GAP
    i = bisect.bisect_right(keyframes, need + 1e-9) - 1
    return i >= 0 and keyframes[i] > done + 1.0 / fps


def skip_windows(targets: list[Target], wanted: list[int] | None, rate: float, fps: float) -> list[tuple[float, float]]:
    """The clips' time windows, from two frames before a clip's earliest possible frame to one frame past its last
    target, so that no frame a target could take is skipped outside them."""
    frame = 1.0 / fps
    clips: dict[int, list[float]] = {}
    for j, (t, ci, _) in enumerate(targets):
        # the frame a target takes: timestamps rule, at or before t; original rule, number >= wanted
        at = t if wanted is None else min(t, max(wanted[j], 0) / rate)
        clips.setdefault(ci, []).append(at)
    return sorted((min(v) - 2 * frame, max(v) + 1.5 * frame) for v in clips.values())


class NonRefSkipper:
    """Per packet: may its frame be skipped if it is a non-reference one? Outside every window always; inside one,
    when ``keep`` (the pts of the frames the targets take) is given and does not hold it. ``skipped`` notes that a
    packet was decoded with skipping on since the last frame came out (frame intervals then say nothing about the
    rate)."""

    def __init__(self, windows: list[tuple[float, float]], time_base: Fraction, keep: set[int] | None = None) -> None:
        merged: list[list[float]] = []  # disjoint, sorted: a packet's window is found by bisection (dense grids)
        for lo, hi in sorted(windows):
            if merged and lo <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        self.starts, self.ends = [w[0] for w in merged], [w[1] for w in merged]
        self.time_base, self.keep, self.skipped = time_base, keep, False
        self.inside = 0  # non-key packets inside a window that were not kept (skipped if non-reference)
        self.dropped: set[int] = set()  # their pts (the frames a wrong prediction could have lost)

    def outside(self, packet: Any) -> bool:
        if packet.pts is None or packet.is_keyframe:
            return False
        t = float(packet.pts * self.time_base)
        i = bisect.bisect_right(self.starts, t) - 1
        out = not (i >= 0 and t <= self.ends[i])
        if not out and self.keep is not None and packet.pts not in self.keep:
            out = True
            self.inside += 1
            self.dropped.add(packet.pts)
        self.skipped |= out
        return out
