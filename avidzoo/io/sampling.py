"""Where clips start: evenly spread for evaluation, random for training, sliding windows over long videos, rows on a
time grid; which span of a file the clips may cover, and how much of each clip a stream really fills."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence

__all__ = ["uniform_starts", "random_start", "sliding_starts", "snap_to_keyframes", "clip_span", "coverage",
           "timeline_span", "stride_rows", "segment_rows", "row_clip_starts"]

Span = tuple[float, float]


def uniform_starts(duration: float, clip_duration: float, n: int, *, start: float = 0.0) -> list[float]:
    """``n`` start times evenly spaced from ``start`` to ``duration - clip_duration`` (the original evaluation rule,
    ``linspace(start, end - clip, n)``, with ``duration`` the span's end); all ``start`` for a span shorter than a
    clip."""
    last = max(duration - clip_duration, start)
    if n <= 1:
        return [start] * max(n, 0)
    return [start + (last - start) * i / (n - 1) for i in range(n)]


def clip_span(spans: Mapping[str, Span], clip_durations: Mapping[str, float]) -> tuple[float, float, str]:
    """The span in which clips of every stream in ``spans`` (``{modality: (start, end)}``, the streams a file has of
    those requested) start together, each lasting its ``clip_durations[modality]``: ``(first, last, rule)``.

    * ``"overlap"``: from the latest stream start to the earliest ``end - clip`` (the original training sampler's
      ``max_ss = min(audio_end - audio_clip, video_end - video_clip)``), so that every clip lies in every stream. With
      one stream this is that stream's own span (for video, the released evaluation's ``start_time = vs;
      final_time = vf``).
    * ``"video"`` (or ``"audio"``): where the streams overlap by less than a clip, the video stream's span (the
      released evaluation's rule; the audio stream's for a file without video), and the other stream is padded.

    ``last`` is never before ``first``: a stream shorter than its clip gives clips all starting at its start."""
    if not spans:
        raise ValueError("clip_span needs at least one stream")
    first = max(lo for lo, _ in spans.values())
    last = min(hi - clip_durations[m] for m, (_, hi) in spans.items())
    if last >= first - 1e-9 or len(spans) == 1:
        return first, max(last, first), "overlap"
    lead = "video" if "video" in spans else next(iter(spans))
    lo, hi = spans[lead]
    return lo, max(hi - clip_durations[lead], lo), lead


def coverage(start: float, clip_duration: float, span: Span | None) -> float:
    """The fraction of the clip ``[start, start + clip_duration]`` inside a stream's ``span`` (0 without it)."""
    if span is None or clip_duration <= 0:
        return 0.0
    inside = min(start + clip_duration, span[1]) - max(start, span[0])
    return min(max(inside / clip_duration, 0.0), 1.0)


def random_start(duration: float, clip_duration: float, rng: random.Random | None = None) -> float:
    """A start time drawn uniformly from ``[0, duration - clip_duration]``."""
    return (rng or random).uniform(0.0, max(duration - clip_duration, 0.0))


def sliding_starts(duration: float, clip_duration: float, stride: float | None = None) -> list[float]:
    """Windows of ``clip_duration`` every ``stride`` seconds (default: back to back) covering the whole video;
    the last window is aligned to the end so that no second is left out."""
    stride = stride or clip_duration
    if stride <= 0:
        raise ValueError(f"stride must be positive, got {stride}")
    last = max(duration - clip_duration, 0.0)
    starts = []
    t = 0.0
    while t < last - 1e-9:
        starts.append(t)
        t += stride
    starts.append(last)
    return starts


def snap_to_keyframes(starts: Sequence[float], keyframes: Sequence[float], *, lag: float = 0.0,
                      latest: float | None = None) -> list[float]:
    """Each start moved to a keyframe near it (``sampling="keyframe"``), so that decoding a clip begins at its first
    frame with no pre-roll. ``lag``: how far after its keyframe a clip starts (half a frame, plus the video stream's
    start under the original frame rule); ``latest``: the last start allowed (``end - clip``), which a keyframe at or
    before it may overshoot by ``lag``. Each start takes its nearest keyframe; where two would take the same one and
    there are keyframes enough, the starts take distinct keyframes at the least total distance, in order. Without
    keyframes the starts are returned as they are."""
    if not keyframes:
        return list(starts)
    usable = sorted(k + lag for k in keyframes if latest is None or k <= latest + 1e-9) or [min(keyframes) + lag]
    nearest = [min(usable, key=lambda k: (abs(k - s), k)) for s in starts]
    if len(set(nearest)) == len(nearest) or len(usable) < len(starts):
        return nearest
    # Order-preserving assignment of distinct keyframes (starts sorted): cost[i][j], start i on keyframe j.
    order = sorted(range(len(starts)), key=lambda i: starts[i])
    n, m = len(order), len(usable)
    inf = float("inf")
    best = [[inf] * (m + 1) for _ in range(n + 1)]  # best[i][j]: first i starts on keyframes among the first j
    best[0] = [0.0] * (m + 1)
    for i in range(1, n + 1):
        s = starts[order[i - 1]]
        for j in range(i, m + 1):
            best[i][j] = min(best[i][j - 1], best[i - 1][j - 1] + abs(usable[j - 1] - s))
    out = [0.0] * n
    j = m
    for i in range(n, 0, -1):  # walk back: keyframe j-1 is start i-1's exactly where taking it was the best
        while best[i][j] == best[i][j - 1]:
            j -= 1
        out[order[i - 1]] = usable[j - 1]
        j -= 1
    return out


# -- rows over time ----------------------------------------------------------------------------------------------------
# A file's features over time are rows, each a window [a, b] of the file; a row's K clips are centred in K equal parts
# of it (K = 1: on its centre), every modality's clip on the same centre, so that row k of the video and row k of the
# audio describe the same moment whatever their clip lengths (AVID: video 0.5 s, audio 2 s).


def timeline_span(spans: Mapping[str, Span], window: float) -> tuple[float, float, str]:
    """The span rows are laid over, from the streams in ``spans`` (those a file has of the requested ones):
    ``(start, end, rule)``. ``"overlap"``: where the streams overlap (every row's clips lie in every stream), when
    they overlap by at least ``window``; else the video stream's span (``"video"``; the audio stream's for a file
    without video), the other stream padded, as :func:`clip_span` decides for clips."""
    if not spans:
        raise ValueError("timeline_span needs at least one stream")
    lo = max(a for a, _ in spans.values())
    hi = min(b for _, b in spans.values())
    if hi - lo >= window - 1e-9 or len(spans) == 1:
        return lo, max(hi, lo), "overlap"
    lead = "video" if "video" in spans else next(iter(spans))
    a, b = spans[lead]
    return a, max(b, a), lead


def stride_rows(span: Span, window: float, stride: float) -> list[Span]:
    """Rows ``window`` seconds long starting every ``stride`` seconds from the span's start, as many as end within it
    (a regular grid: a tail shorter than a stride is left out); one row at the start for a span shorter than
    ``window``."""
    if stride <= 0:
        raise ValueError(f"stride must be positive, got {stride}")
    lo, hi = span
    n = max(int(math.floor((hi - lo - window) / stride + 1e-6)) + 1, 1)
    return [(lo + k * stride, lo + k * stride + window) for k in range(n)]


def segment_rows(span: Span, length: float) -> list[Span]:
    """Back-to-back segments of ``length`` seconds from the span's start: as many as the span holds, rounded to the
    nearest (a 10.0-s file in 1-s segments has 10 of them whether its streams end at 9.98 s or 10.03 s; a last
    segment may run past the end by less than half its length, and its clips are moved inside the streams), at
    least one."""
    if length <= 0:
        raise ValueError(f"segment length must be positive, got {length}")
    lo, hi = span
    n = max(int(math.floor((hi - lo) / length + 0.5)), 1)
    return [(lo + k * length, lo + (k + 1) * length) for k in range(n)]


def row_clip_starts(rows: Sequence[Span], clips_per_row: int, clip_duration: float,
                    span: Span | None = None) -> list[float]:
    """Start times of each row's ``clips_per_row`` clips of ``clip_duration`` seconds, row by row: clip ``j`` of
    row ``[a, b]`` is centred on ``a + (b - a) * (j + 0.5) / K``. A clip that would begin before its stream's
    ``span`` starts or end after it ends is moved inside it (where the stream is at least a clip long), as the
    originals moved a clip back at a file's end; the starts say where each went."""
    out = []
    for a, b in rows:
        for j in range(clips_per_row):
            t = a + (b - a) * (j + 0.5) / clips_per_row - clip_duration / 2
            if span is not None:
                t = max(min(t, span[1] - clip_duration), span[0])
            out.append(t)
    return out
