"""Audio-visual agreement: cosine similarity of embeddings, and score-av's ranking of files whose soundtrack may not
belong to the picture."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F

from ._files import write_text_atomic
from .extract import FeatureExtractor
from .models.avid import AVIDModel

__all__ = ["similarity", "score_av"]


def similarity(video_emb: torch.Tensor, audio_emb: torch.Tensor, *, pairwise: bool = False) -> torch.Tensor:
    """Cosine similarity of video and audio embeddings ``(N, D)``: row by row ``(N,)``, or ``(N, M)`` with
    ``pairwise=True`` (video i against audio j, for retrieval). Use the projected (``layer="proj"``) embeddings:
    pretraining made those of a video and its own soundtrack agree."""
    v, a = F.normalize(video_emb.float(), dim=-1), F.normalize(audio_emb.float(), dim=-1)
    return v @ a.transpose(-1, -2) if pairwise else (v * a).sum(-1)


def score_av(
    model: AVIDModel | str | os.PathLike,
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    out_csv: str | os.PathLike | None = None,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Audio-visual correspondence of each file: the cosine of its video and audio projected embeddings, averaged
    over clips, and its percentile within the run. Low scores flag soundtracks that do not belong to the picture
    (Robust-xID's faulty positives). Returns rows sorted from the lowest score, then the files without a soundtrack
    (or a video stream) and those that failed (``score`` None, ``error`` says why); ``out_csv`` also writes them."""
    kwargs.update(modalities=("video", "audio"), layer="proj", normalize=True, clip_agg="none")
    result = FeatureExtractor(model, **kwargs).extract(inputs)
    # A file without a soundtrack (or without a picture) has nothing to agree with: it is listed, not ranked.
    both = result.present["video"] & result.present["audio"]
    keep = [i for i in range(len(result.paths)) if both[i]]
    per_clip = similarity(result["video"][keep], result["audio"][keep])  # (N, clips)
    scores = per_clip.mean(-1)
    n = len(scores)
    order = torch.argsort(scores)
    percentile = torch.empty(n)
    percentile[order] = torch.arange(n, dtype=torch.float32) * (100.0 / max(n - 1, 1))
    rows = [{"path": result.paths[keep[i]], "score": float(scores[i]), "percentile": float(percentile[i]),
             "clip_scores": [round(float(s), 5) for s in per_clip[i]]} for i in order.tolist()]
    rows += [{"path": p, "score": None, "percentile": None,
              "error": "no audio stream" if not result.present["audio"][i] else "no video stream"}
             for i, p in enumerate(result.paths) if not both[i]]
    rows += [{"path": p, "score": None, "percentile": None, "error": e} for p, e in result.failed.items()]
    if out_csv is not None:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["path", "score", "percentile", "error"])
        for r in rows:
            w.writerow([r["path"], "" if r["score"] is None else f"{r['score']:.5f}",
                        "" if r["percentile"] is None else f"{r['percentile']:.1f}", r.get("error", "")])
        write_text_atomic(out_csv, buf.getvalue())
    return rows
