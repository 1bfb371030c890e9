"""Which frames an evaluation clip takes, per method: the siblings placed clips and picked frames by their own
decoders' rules, and a weight's preset names its rule (``frame_rule`` in the video preprocessing).

* ``"avid"`` (the default): clips start at evenly spaced times over the streams' span and take frames at
  ``start + k / fps`` (:meth:`~avidzoo.io.MediaFile.read_video`, :func:`~avidzoo.io.clip_span`).
* ``"gdt"``: GDT's ``datasets/decoder.py`` at test time. With ``fps`` the stream's average rate, a clip spans
  ``clip_size = num_frames / target_fps * fps`` source frames; clip ``k`` of ``n`` starts at frame
  ``int(max(frames - clip_size, 0) * k / n)`` (``frames`` the count the header declares) and takes the frames whose
  timestamps lie in ``[int(start * tb), int((start + clip_size - 1) * tb)]`` with ``tb = duration / frames`` (ticks
  per frame, from the header), plus the first frame after (its decoder's one-frame buffer); of those, the
  ``torch.linspace(0, clip_size - 1, num_frames)`` -th, clamped to the last and truncated. Its audio starts
  ``start / fps`` seconds into the audio stream, moved back to end with the stream where it would run past.
  Where the header declares no duration or no frame count (Matroska/WebM), GDT decodes the whole stream and places
  the clip over all its frames: ``linspace(start, start + clip_size - 1, num_frames)``, ``start`` from the frames
  decoded (GDT itself then fails on its audio; avidzoo uses the same start).
* ``"vmz"``: VMZ's Caffe2 video input op in its uniform test mode (``decode_type=1``, every frame at the native rate,
  at most 10,000), the input XDC's README points to: ``n`` clips of ``num_frames`` consecutive frames, clip ``i`` at
  frame ``floor(i * float32(N - num_frames) / (n - 1))`` of the ``N`` decoded. ``N`` counts the frames the decoder
  outputs, as VMZ's did: an edit list's discarded frames are read but never output, so they are not counted. A
  stream shorter than a clip is looped from its first frame (AVID's ``pad_missing``). VMZ's own output there is no
  rule to follow: its decoder returns no clip when fewer frames than one clip decode (``video_decoder.cc``: "could
  not decode enough frames"), its op copies ``min(clip_per_video, clips decoded) = 0`` clips and leaves the batch
  slots it would have filled as they were (the previous batch's data, scored under this video's label).

Every rule reads only the packets' timestamps (:meth:`~avidzoo.io.MediaFile.frame_table`, no decoding) and names each
frame by its timestamp; :meth:`~avidzoo.io.MediaFile.read_frames` then decodes exactly those frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DecodeError
from .decode import FrameTable, MediaFile

__all__ = ["FRAME_RULES", "RuleClip", "gdt_clips", "vmz_clips", "rule_clips"]

FRAME_RULES = ("avid", "gdt", "vmz")
_VMZ_MAX_FRAMES = 10000  # MAX_DECODING_FRAMES in VMZ's av_video_decoder_commons.h


@dataclass(frozen=True)
class RuleClip:
    """One clip under a frame rule: ``times`` the timestamps (seconds) of the frames it takes, in order, and
    ``audio_from`` where its audio starts, in seconds after the audio stream's first sample."""

    times: list[float]
    audio_from: float


def _linspace_index(lo: float, hi: float, num: int, length: int) -> list[int]:
    """``torch.linspace(lo, hi, num)`` clamped to ``[0, length - 1]`` and truncated, as GDT's ``temporal_sampling``."""
    index = torch.clamp(torch.linspace(lo, hi, num), 0, length - 1).long()
    return index.tolist()


def _gdt_start(video_size: int, clip_size: float, k: int, n: int) -> int:
    """GDT's ``get_start_end_idx`` for test clip ``k`` of ``n``: the start frame (the end is ``start + clip_size -
    1``)."""
    return int(max(video_size - clip_size, 0) * k / n)


def gdt_clips(table: FrameTable, n: int, num_frames: int, target_fps: float) -> list[RuleClip]:
    """GDT's ``n`` test clips of ``num_frames`` frames at ``target_fps`` (see the module docstring)."""
    fps = table.rate
    if not fps:
        raise ValueError("the video stream declares no frame rate")
    pts = table.pts
    out = []
    if table.declared_duration is not None and table.declared_frames:  # GDT's selective decoding
        frames, duration = table.declared_frames, table.declared_duration
        clip_size = 1 * num_frames / target_fps * fps  # sampling_rate * num_frames / target_fps * fps, its order
        pick_size = num_frames * 1 * fps / target_fps  # decode()'s num_frames * sampling_rate * fps / target_fps
        tb = duration / frames
        for k in range(n):
            start = _gdt_start(frames, clip_size, k, n)
            lo, hi = int(start * tb), int((start + clip_size - 1) * tb)
            window = [p for p in pts if lo <= p <= hi]
            window += [p for p in pts if p > hi][:1]  # its decoder keeps the first frame past the window
            if not window:
                raise ValueError(f"no frame at or after timestamp {lo} (clip {k} of {n})")
            index = _linspace_index(0, pick_size - 1, num_frames, len(window))
            out.append(RuleClip([table.seconds(window[i]) for i in index], start / fps))
    else:  # nothing declared: GDT decodes the whole stream and places the clip over its frames
        clip_size = num_frames * 1 * fps / target_fps
        for k in range(n):
            start = _gdt_start(len(pts), clip_size, k, n)
            index = _linspace_index(start, start + clip_size - 1, num_frames, len(pts))
            out.append(RuleClip([table.seconds(pts[i]) for i in index], start / fps))
    return out


def vmz_clips(table: FrameTable, n: int, num_frames: int) -> list[RuleClip]:
    """VMZ's ``n`` uniform test clips of ``num_frames`` consecutive frames (see the module docstring)."""
    pts = table.pts[:_VMZ_MAX_FRAMES]
    step = np.float32(0) if n <= 1 else np.float32(len(pts) - num_frames) / np.float32(n - 1)
    first = table.seconds(pts[0])
    out = []
    for i in range(n):
        start = max(int(math.floor(np.float32(i) * step)), 0)
        chosen = [pts[start + j] if start + j < len(pts) else pts[j % len(pts)] for j in range(num_frames)]
        times = [table.seconds(p) for p in chosen]
        out.append(RuleClip(times, times[0] - first))
    return out


def rule_clips(f: MediaFile, rule: str, n: int, *, num_frames: int, fps: float) -> list[RuleClip]:
    """The ``n`` evaluation clips of ``f``'s video under ``rule`` (``"gdt"`` or ``"vmz"``; ``fps`` is GDT's target
    rate). Raises :class:`~avidzoo.errors.DecodeError` naming the file where the stream gives nothing to place."""
    if rule not in ("gdt", "vmz"):
        raise ValueError(f"frame_rule must be one of {FRAME_RULES} (rule_clips places 'gdt' and 'vmz'), got {rule!r}")
    table = f.frame_table()
    try:
        return gdt_clips(table, n, num_frames, fps) if rule == "gdt" else vmz_clips(table, n, num_frames)
    except ValueError as e:
        raise DecodeError(f.path, f"cannot place {rule} clips: {e}") from None
