"""Features over time: which rows a file gets (a stride grid, fixed segments, or annotated segments) and how rows
become per-second vectors.

A row is a window ``[start, end]`` of a file (seconds); its clips (``clips_per_row``, default 1 on a grid) are centred
in equal parts of it, each modality's clip on the same centre (:func:`~avidzoo.io.sampling.row_clip_starts`), so that
row k of the video and row k of the audio describe the same moment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..io.inputs import read_segments
from ..io.sampling import Span, row_clip_starts, segment_rows, stride_rows, timeline_span

__all__ = ["Timeline", "per_second"]


@dataclass(frozen=True)
class Timeline:
    """How a file's rows are laid out: ``kind`` ``"stride"`` (rows of the longest clip's length every ``step``
    seconds), ``"segments"`` (back-to-back segments of ``step`` seconds) or ``"annotated"`` (the segments of
    ``annotations``: ``{path: [{"start", "end", "label", "id"}]}``, :func:`~avidzoo.io.inputs.read_segments`);
    ``clips_per_row`` clips in each row."""

    kind: str
    step: float | None = None
    clips_per_row: int = 1
    annotations: Mapping[str, list[dict[str, Any]]] = field(default_factory=dict, compare=False, repr=False)
    source: str | None = None  # the annotations' CSV, as named

    @classmethod
    def build(cls, *, stride: float | None, segments: float | str | os.PathLike | Mapping | None,
              clips_per_row: int | None) -> Timeline | None:
        """The timeline of ``stride`` / ``segments`` (a length in seconds, a segments CSV, or its parsed mapping);
        ``None`` for neither (whole files)."""
        if stride is not None and segments is not None:
            raise ValueError("stride and segments are two ways to lay rows over a file: give one")
        if stride is not None:
            if not stride > 0:
                raise ValueError(f"stride must be positive seconds, got {stride}")
            if clips_per_row not in (None, 1):
                raise ValueError("a stride grid has one clip per row (its row is the clip); for several clips per "
                                 "row use segments")
            return cls("stride", float(stride), 1)
        if segments is None:
            return None
        if clips_per_row is not None and clips_per_row < 1:
            raise ValueError(f"clips per row must be at least 1, got {clips_per_row}")
        # annotated segments are trimmed videos (10 clips, as whole files); a fixed segment is one moment (1 clip)
        k = 10 if clips_per_row is None else int(clips_per_row)
        if isinstance(segments, Mapping):
            return cls("annotated", None, k, dict(segments), None)
        try:
            length = float(segments)
        except (TypeError, ValueError):
            return cls("annotated", None, k, read_segments(segments), str(segments))
        k = 1 if clips_per_row is None else k
        if not length > 0:
            raise ValueError(f"segments must be a positive length in seconds or a CSV, got {segments}")
        return cls("segments", length, k)

    def describe(self) -> dict[str, Any]:
        """What ``meta.json`` records (and a resumed run must match)."""
        return {"kind": self.kind, "step": self.step, "clips_per_row": self.clips_per_row,
                **({"annotations": self.source} if self.source else {})}

    def rows(self, path: str, spans: Mapping[str, Span], clip_durations: Mapping[str, float]) -> tuple[
            list[Span], list[dict[str, Any]], str]:
        """The rows of the file at ``path`` whose requested streams span ``spans``: ``(windows, annotations (one
        per row, empty dicts on a grid), placement)``."""
        window = max(clip_durations[m] for m in spans)
        lo, hi, placement = timeline_span(spans, window)
        if self.kind == "stride":
            return stride_rows((lo, hi), window, float(self.step)), [], placement
        if self.kind == "segments":
            return segment_rows((lo, hi), float(self.step)), [], placement
        found = self.annotations.get(path)
        if not found:
            raise ValueError(f"{path} has no segment in the annotations")
        return [(s["start"], s["end"]) for s in found], list(found), placement

    def clip_starts(self, rows: Sequence[Span], duration: float, span: Span | None) -> list[float]:
        return row_clip_starts(rows, self.clips_per_row, duration, span)


def per_second(times: torch.Tensor, features: torch.Tensor, seconds: Sequence[float] | int) -> torch.Tensor:
    """One vector per second from a file's rows: ``times`` ``(T, 2)`` (each row's start and end, seconds) and
    ``features`` ``(T, ...)`` -> ``(len(seconds), ...)``, second ``s`` (the interval ``[s, s + 1)``) given the mean of
    the rows whose window overlaps it most (every row that ties), or, where no row overlaps it, the row whose centre
    is nearest. ``seconds``: a list of whole seconds, or ``n`` for ``0 .. n - 1`` (AVE and AVVP: 10)."""
    if isinstance(seconds, int):
        seconds = range(seconds)
    times = torch.as_tensor(times, dtype=torch.float64)
    if times.ndim != 2 or times.shape[-1] != 2 or len(times) != len(features):
        raise ValueError(f"times must be (T, 2) with T = {len(features)} rows, got {tuple(times.shape)}")
    if not len(features):
        raise ValueError("per_second needs at least one row")
    out = []
    centres = times.mean(1)
    for s in seconds:
        overlap = (torch.minimum(times[:, 1], torch.tensor(s + 1.0)) - torch.maximum(times[:, 0], torch.tensor(
            float(s)))).clamp(min=0)
        if overlap.max() > 0:
            pick = overlap >= overlap.max() - 1e-9
        else:
            gap = (centres - (s + 0.5)).abs()
            pick = gap <= gap.min() + 1e-9
        out.append(features[pick].float().mean(0))
    return torch.stack(out)
