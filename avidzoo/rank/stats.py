"""Statistics a few hundred labelled items can support.

Predictions are out-of-fold class indices ``(R, N)`` (``R`` repeats of the cross-validation, each item predicted
once per repeat); labels ``(N,)``. The score is balanced accuracy (the mean of the per-class recalls), averaged over
repeats. Its interval comes from a bootstrap over items (over groups where items come in groups, so that clips of
one video are drawn together); :func:`paired_bootstrap` draws the same resamples for every weight, so the difference
to the best one is paired and a weight whose difference interval holds 0 is tied with it.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import torch

__all__ = ["balanced_accuracy", "bootstrap_weights", "interval", "mean_interval", "paired_bootstrap",
           "per_class_recall", "resampled_scores"]


def per_class_recall(pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> list[float]:
    """Recall of each class (``nan`` for a class without items)."""
    out = []
    for c in range(num_classes):
        mask = y == c
        out.append(float((pred[mask] == c).double().mean()) if mask.any() else math.nan)
    return out


def balanced_accuracy(pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> float:
    """The mean recall over the classes that have items."""
    recalls = [r for r in per_class_recall(pred, y, num_classes) if not math.isnan(r)]
    return sum(recalls) / len(recalls)


def bootstrap_weights(n: int, groups: Sequence[Hashable] | None, draws: int, seed: int) -> torch.Tensor:
    """``(draws, n)`` multiplicities of each item in ``draws`` resamples with replacement: of items, or of whole
    groups (each item counted as often as its group is drawn)."""
    g = torch.Generator().manual_seed(seed)
    if groups is None:
        picks = torch.randint(n, (draws, n), generator=g)
        return torch.zeros(draws, n, dtype=torch.float64).scatter_add_(1, picks, torch.ones(draws, n,
                                                                                               dtype=torch.float64))
    keys = {k: j for j, k in enumerate(dict.fromkeys(groups))}
    item_group = torch.tensor([keys[k] for k in groups])
    picks = torch.randint(len(keys), (draws, len(keys)), generator=g)
    counts = torch.zeros(draws, len(keys), dtype=torch.float64).scatter_add_(
        1, picks, torch.ones(draws, len(keys), dtype=torch.float64))
    return counts[:, item_group]


def resampled_scores(preds: torch.Tensor, y: torch.Tensor, num_classes: int, weights: torch.Tensor) -> torch.Tensor:
    """Balanced accuracy, averaged over the ``R`` repeats, of each resample: ``(B,)`` for weights ``(B, N)``."""
    onehot = torch.nn.functional.one_hot(y.long(), num_classes).double()  # (N, K)
    totals = weights @ onehot  # (B, K) items of each class drawn
    present = totals > 0
    scores = []
    for pred in preds:
        hits = weights @ (onehot * (pred == y).double()[:, None])
        recall = torch.where(present, hits / totals.clamp_min(1e-12), torch.zeros_like(hits))
        scores.append(recall.sum(1) / present.sum(1))
    return torch.stack(scores).mean(0)


def interval(samples: torch.Tensor, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap samples."""
    q = torch.tensor([(1 - level) / 2, 1 - (1 - level) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(samples.double(), q).tolist()
    return lo, hi


def mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the normal interval of the mean of independent draws (few-shot episodes)."""
    v = torch.tensor(list(values), dtype=torch.float64)
    mean = float(v.mean())
    if len(v) < 2:
        return mean, mean, mean
    z = {0.95: 1.959964, 0.9: 1.644854, 0.99: 2.575829}[level]
    half = z * float(v.std()) / math.sqrt(len(v))
    return mean, mean - half, mean + half


def paired_bootstrap(preds: Mapping[str, torch.Tensor], y: torch.Tensor, num_classes: int, *,
                     groups: Sequence[Hashable] | None = None, draws: int = 2000, seed: int = 0,
                     level: float = 0.95) -> dict[str, dict]:
    """Per candidate: ``score`` (balanced accuracy, mean over repeats), ``low``/``high`` (its bootstrap interval),
    and against the best-scoring candidate ``best``: ``diff`` (best minus this), its interval ``diff_low``/
    ``diff_high``, ``p_not_worse`` (the share of resamples where this one scores at least as well) and ``tied``
    (the difference interval holds 0; the best is tied with itself)."""
    weights = bootstrap_weights(len(y), groups, draws, seed)
    boot = {name: resampled_scores(p, y, num_classes, weights) for name, p in preds.items()}
    point = {name: sum(balanced_accuracy(r, y, num_classes) for r in p) / len(p) for name, p in preds.items()}
    best = max(point, key=lambda n: point[n])
    out = {}
    for name in preds:
        lo, hi = interval(boot[name], level)
        diff = boot[best] - boot[name]
        dlo, dhi = interval(diff, level)
        out[name] = {"score": point[name], "low": lo, "high": hi, "best": best, "diff": point[best] - point[name],
                     "diff_low": dlo, "diff_high": dhi, "p_not_worse": float((diff <= 0).double().mean()),
                     "tied": name == best or dlo <= 0.0}
    return out
