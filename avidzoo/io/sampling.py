"""Where clips start: evenly spread for evaluation, random for training, sliding windows over long videos; which span
of a file the clips may cover, and how much of each clip a stream really fills."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

__all__ = ["uniform_starts", "random_start", "sliding_starts", "snap_to_keyframes", "clip_span", "coverage"]

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
