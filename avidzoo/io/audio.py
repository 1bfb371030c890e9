"""Audio clips: FFmpeg's resampler to signed 16-bit mono at the target rate, divided by 32767 as the original;
zeros before the first sample and after the last. Clips close together share one decoding run; with exact savings
a gap longer than a second is skipped by a seek, and each run starts its own resampler, as the original read each
clip (the samples then differ from one long run's by the resampler's phase, under one sample)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

from ..errors import CorruptMediaError
from .demux import decoded_frames, seek_to
from .probing import MediaInfo

__all__ = ["TRUNCATION_SLACK", "read_audio_clips"]

TRUNCATION_SLACK = 0.5  # seconds a stream may end before its declared duration without being called truncated
_AUDIO_GAP = 1.0  # seconds between audio clips beyond which a seek beats decoding through (audio seeks are cheap)


def read_audio_clips(container: Any, info: MediaInfo, path: Path | str, starts: Sequence[float], duration: float,
                     sample_rate: int, *, exact_savings: bool, seen_end: dict[str, float]) -> list[torch.Tensor]:
    """Clips ``(1, round(duration * sample_rate))`` float32 at ``starts`` of a file that has audio; where its data
    ends before its span says, ``seen_end["audio"]`` records it."""
    n = int(round(duration * sample_rate))
    out: list[torch.Tensor | None] = [None] * len(starts)
    order = sorted(range(len(starts)), key=lambda i: starts[i])
    gap = _AUDIO_GAP if exact_savings else math.inf
    runs: list[list[int]] = []
    for i in order:
        if runs and starts[i] - (starts[runs[-1][-1]] + duration) <= gap:
            runs[-1].append(i)
        else:
            runs.append([i])
    for run in runs:
        data, t0 = _decode(container, info, path, starts[run[0]], starts[run[-1]] + duration, sample_rate, seen_end)
        for i in run:
            offset = int(round((starts[i] - t0) * sample_rate))
            clip = np.zeros(n, dtype=np.float32)
            src_lo, dst_lo = max(offset, 0), max(-offset, 0)
            length = max(min(n - dst_lo, data.shape[0] - src_lo), 0)
            clip[dst_lo:dst_lo + length] = data[src_lo:src_lo + length]
            out[i] = torch.from_numpy(clip)[None]
    return out  # type: ignore[return-value]


def _decode(container: Any, info: MediaInfo, path: Path | str, lo: float, hi: float, sample_rate: int,
            seen_end: dict[str, float]) -> tuple[np.ndarray, float]:
    """The samples from ``lo`` to ``hi`` seconds (float32 mono) and the time of the first."""
    stream = container.streams.audio[0]
    resampler = av.AudioResampler(format="s16p", layout="mono", rate=sample_rate)
    seek_to(container, max(lo - 0.1, 0.0), stream)
    chunks: list[np.ndarray] = []
    t0 = None
    data_end = 0.0  # where the frames seen end
    exhausted = True  # the stream ran out before hi
    try:
        for frame in decoded_frames(container, stream, path):
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
        raise CorruptMediaError(path, f"audio stream is corrupt near {lo:.2f} s: {e}") from None
    if exhausted and data_end < hi:
        # Judged against the audio stream's own end: the video may rightly run longer.
        declared = info.audio_end
        if declared is not None and declared - max(data_end, lo) > TRUNCATION_SLACK:
            raise CorruptMediaError(path, f"audio stops at {data_end:.2f} s but the audio stream declares "
                                    f"{declared:.2f} s: truncated or corrupt before {min(hi, declared):.2f} s")
        seen_end["audio"] = min(data_end, seen_end.get("audio", math.inf))
    if t0 is None:  # nothing of the stream in [lo, hi]: before it starts or after it ends
        return np.zeros(0, dtype=np.float32), lo
    data = np.concatenate(chunks, axis=1)[0] if chunks else np.zeros(0, np.int16)
    return data.astype(np.float32) / np.iinfo(np.int16).max, t0
