"""Where clips start: evenly spread for evaluation, random for training, sliding windows over long videos."""

from __future__ import annotations

import random

__all__ = ["uniform_starts", "random_start", "sliding_starts", "snap_to_keyframes"]


def uniform_starts(duration: float, clip_duration: float, n: int) -> list[float]:
    """``n`` start times evenly spaced from 0 to ``duration - clip_duration`` (the original evaluation rule,
    ``linspace(0, duration - clip, n)``); all 0 for a video shorter than a clip."""
    last = max(duration - clip_duration, 0.0)
    if n <= 1:
        return [0.0] * max(n, 0)
    return [last * i / (n - 1) for i in range(n)]


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


def snap_to_keyframes(starts: list[float], keyframes: list[float], *, lag: float = 0.0,
                      latest: float | None = None) -> list[float]:
    """Each start moved to the keyframe nearest it (``sampling="keyframe"``), so that decoding a clip begins at its
    first frame with no pre-roll. ``lag``: how far before a clip's start its first frame lies (the video stream's
    start under the original frame rule, else 0); ``latest``: the last start allowed (``duration - clip``).
    Without keyframes the starts are returned as they are."""
    if not keyframes:
        return list(starts)
    usable = [k + lag for k in keyframes if latest is None or k + lag <= latest + 1e-9] or [keyframes[0] + lag]
    return [min(usable, key=lambda k: (abs(k - s), k)) for s in starts]
