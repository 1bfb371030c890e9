"""Probes on frozen features, each fit on a fold's training items and scored on the rest.

Features are ``(N, D)`` float (one row per labelled item), labels ``(N,)`` class indices, groups (optional) one key
per item: items of a group (UCF-101's ``g08``: clips cut from one video) never sit on both sides of a split.

- :func:`make_folds`: repeated stratified k-fold, group-aware; each item is tested once per repeat.
- :func:`knn_predict`: cosine kNN (features centred by the training mean, then L2-normalised), majority vote, ties
  to the class with the larger summed similarity.
- :func:`fit_logistic`: multinomial logistic regression with an L2 penalty, on standardised features, fit to
  convergence by L-BFGS in float64 (no minibatches, no learning rate: the same optimum on any CPU up to rounding);
  the penalty is chosen per training set by an inner stratified cross-validation (:func:`logistic_predict`).
- :func:`cross_validate`: out-of-fold predictions ``(repeats, N)`` of each protocol.
- :func:`few_shot`: episodes of ``n`` training items per class, the rest tested by the nearest class mean.
"""

from __future__ import annotations

import contextlib
import random
import warnings
from collections import Counter
from collections.abc import Hashable, Iterator, Sequence

import torch
import torch.nn.functional as F

from .stats import balanced_accuracy

__all__ = ["C_GRID", "KNN_K", "cross_validate", "fit_logistic", "few_shot", "knn_predict", "logistic_predict",
           "make_folds"]

C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)  # inverse penalty strengths, as scikit-learn's C
KNN_K = (1, 5, 20)


def make_folds(labels: Sequence[int], groups: Sequence[Hashable] | None, k: int, seed: int,
               source: str = "the data") -> list[int]:
    """The fold (0..k-1) of each item: groups (or single items) dealt, largest first and in a seeded order among
    equals, to the fold where they bring each class's count closest to its share. A class with fewer groups than
    folds is warned about (some folds test it without training on it); one with a single item is an error."""
    labels = [int(y) for y in labels]
    keys = list(groups) if groups is not None else list(range(len(labels)))
    members: dict[Hashable, list[int]] = {}
    for i, g in enumerate(keys):
        members.setdefault(g, []).append(i)
    classes = sorted(set(labels))
    per_class = Counter(labels)
    groups_of = {c: len({keys[i] for i in range(len(labels)) if labels[i] == c}) for c in classes}
    lonely = [c for c in classes if per_class[c] < 2]
    if lonely:
        raise ValueError(f"{source}: class index {lonely[0]} has one item; cross-validation needs at least 2 per class")
    few = [c for c in classes if groups_of[c] < k]
    if few:
        warnings.warn(f"{source}: classes {few} have fewer {'groups' if groups is not None else 'items'} than the "
                      f"{k} folds; some folds test them without training on them", stacklevel=2)
    rng = random.Random(seed)
    order = list(members)
    rng.shuffle(order)
    order.sort(key=lambda g: -len(members[g]))  # stable: the shuffled order among groups of one size
    target = {c: per_class[c] / k for c in classes}
    counts = [Counter() for _ in range(k)]
    sizes = [0] * k
    fold_of = [0] * len(labels)
    for g in order:
        hist = Counter(labels[i] for i in members[g])
        costs = [(_growth(counts[f], hist, target), sizes[f]) for f in range(k)]
        best = costs.index(min(costs))
        counts[best].update(hist)
        sizes[best] += len(members[g])
        for i in members[g]:
            fold_of[i] = best
    return fold_of


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Probes on a few hundred items are small matrix products: one thread is faster than several (measured: a
    cross-validation took 5 s on one core and 18 s on two), and no result then depends on the machine's cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _growth(counts: Counter, hist: Counter, target: dict[int, float]) -> float:
    """How much adding a group of class counts ``hist`` to a fold holding ``counts`` moves it off its share."""
    return sum((counts[c] + n - target[c]) ** 2 - (counts[c] - target[c]) ** 2 for c, n in hist.items())


def _centred_unit(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    mean = train.mean(0)
    return [F.normalize(x - mean, dim=1) for x in (train, *others)]


def knn_predict(train: torch.Tensor, y: torch.Tensor, test: torch.Tensor, k: int, num_classes: int) -> torch.Tensor:
    """``(n, D)`` training features with labels ``(n,)``, ``(m, D)`` test features -> ``(m,)`` predicted classes."""
    a, b = _centred_unit(train.double(), test.double())
    sim = b @ a.T
    k = min(k, len(a))
    top, idx = sim.topk(k, dim=1)
    votes = torch.zeros(len(b), num_classes, dtype=torch.float64)
    votes.scatter_add_(1, y[idx], torch.ones_like(top))
    summed = torch.zeros_like(votes).scatter_add_(1, y[idx], top)
    return (votes + summed / (k + 1)).argmax(1)  # similarity only breaks ties: |summed| / (k + 1) < 1


def fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, c: float, max_iter: int = 100,
                 start: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights ``(D, K)`` and bias ``(K,)`` minimising ``(sum CE + |W|^2 / (2 C)) / n`` on ``x`` ``(n, D)`` (already
    standardised), by L-BFGS with a strong-Wolfe line search in float64, from ``start`` (a neighbouring ``C``'s
    solution: a regularisation path converges in a few steps) or zeros."""
    x = x.double()
    w0, b0 = start if start is not None else (torch.zeros(x.shape[1], num_classes, dtype=torch.float64),
                                              torch.zeros(num_classes, dtype=torch.float64))
    w, b = w0.clone().requires_grad_(), b0.clone().requires_grad_()
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-8, tolerance_change=1e-10,
                            history_size=10, line_search_fn="strong_wolfe")
    n = len(x)

    def closure():
        opt.zero_grad()
        loss = (F.cross_entropy(x @ w + b, y, reduction="sum") + (w * w).sum() / (2 * c)) / n
        loss.backward()
        return loss
    opt.step(closure)
    return w.detach(), b.detach()


def _standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    train = train.double()
    mean, std = train.mean(0), train.std(0, unbiased=False) + 1e-6
    return [(x.double() - mean) / std for x in (train, *others)]


def logistic_predict(train: torch.Tensor, y: torch.Tensor, test: torch.Tensor, num_classes: int, *,
                     inner_folds: int = 3, seed: int = 0, groups: Sequence[Hashable] | None = None
                     ) -> tuple[torch.Tensor, float]:
    """``(m,)`` predictions for ``test`` and the ``C`` chosen from :data:`C_GRID` by an inner stratified
    ``inner_folds``-fold cross-validation on the training items (balanced accuracy; ties to the stronger penalty)."""
    labels = y.tolist()
    smallest = min(Counter(labels).values())
    best_c = 1.0
    if smallest >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the outer folds already warned about small classes
            inner = make_folds(labels, groups, min(inner_folds, smallest), seed)
        preds = {c: torch.empty_like(y) for c in C_GRID}
        for f in sorted(set(inner)):
            tr = torch.tensor([i for i, g in enumerate(inner) if g != f])
            te = torch.tensor([i for i, g in enumerate(inner) if g == f])
            a, b = _standardise(train[tr], train[te])
            solution = None
            for c in C_GRID:  # strongest penalty first, each fit starting from the previous one
                solution = fit_logistic(a, y[tr], num_classes, c, start=solution)
                preds[c][te] = (b @ solution[0] + solution[1]).argmax(1)
        scores = [balanced_accuracy(preds[c], y, num_classes) for c in C_GRID]
        best_c = C_GRID[max(range(len(C_GRID)), key=lambda j: (scores[j], -j))]
    a, b = _standardise(train, test)
    w, bias = fit_logistic(a, y, num_classes, best_c)
    return (b @ w + bias).argmax(1), best_c


def cross_validate(features: torch.Tensor, labels: torch.Tensor, groups: Sequence[Hashable] | None = None, *,
                   folds: int = 5, repeats: int = 3, seed: int = 0, knn: Sequence[int] = KNN_K,
                   logistic: bool = True, source: str = "the data", warn: bool = True
                   ) -> tuple[dict[str, torch.Tensor], dict]:
    """Out-of-fold predictions ``{protocol: (repeats, N)}`` (``knn1``, ``knn5``, ``knn20``, ``logistic``) and
    details (``{"logistic_C": [chosen C per repeat and fold]}``); repeat ``r`` uses the folds of seed ``seed + r``.
    ``warn=False``: the caller has already warned about classes smaller than the folds."""
    labels = labels.long()
    num_classes = int(labels.max()) + 1
    names = [f"knn{k}" for k in knn] + (["logistic"] if logistic else [])
    out = {name: torch.full((repeats, len(labels)), -1, dtype=torch.long) for name in names}
    chosen: list[float] = []
    with one_thread(), warnings.catch_warnings():
        if not warn:
            warnings.simplefilter("ignore", UserWarning)
        for r in range(repeats):
            fold_of = make_folds(labels.tolist(), groups, folds, seed + r, source)
            for f in sorted(set(fold_of)):
                tr = torch.tensor([i for i, g in enumerate(fold_of) if g != f])
                te = torch.tensor([i for i, g in enumerate(fold_of) if g == f])
                for k in knn:
                    out[f"knn{k}"][r, te] = knn_predict(features[tr], labels[tr], features[te], k, num_classes)
                if logistic:
                    sub = [groups[i] for i in tr.tolist()] if groups is not None else None
                    pred, c = logistic_predict(features[tr], labels[tr], features[te], num_classes, seed=seed + r,
                                               groups=sub)
                    out["logistic"][r, te] = pred
                    chosen.append(c)
    return out, {"logistic_C": chosen}


def few_shot(features: torch.Tensor, labels: torch.Tensor, shots: Sequence[int] = (1, 5, 10), *,
             episodes: int = 100, seed: int = 0) -> dict[int, list[float]]:
    """Balanced accuracy of each episode per shot count: ``n`` training items drawn per class, every other item
    tested by the nearest class mean (cosine, features centred by the training mean). A shot count is left out where
    some class has no item left to test (``n`` or fewer items)."""
    labels = labels.long()
    num_classes = int(labels.max()) + 1
    by_class = [torch.nonzero(labels == c).flatten().tolist() for c in range(num_classes)]
    out: dict[int, list[float]] = {}
    for n in shots:
        if min(len(m) for m in by_class) <= n:
            continue
        rng = random.Random(seed * 1000 + n)
        accs = []
        for _ in range(episodes):
            support = [rng.sample(m, n) for m in by_class]
            chosen = {i for s in support for i in s}
            query = torch.tensor([i for i in range(len(labels)) if i not in chosen])
            train = features[[i for s in support for i in s]].double()
            a, b = _centred_unit(train, features[query].double())
            means = F.normalize(a.view(num_classes, n, -1).mean(1), dim=1)
            accs.append(balanced_accuracy((b @ means.T).argmax(1), labels[query], num_classes))
        out[n] = accs
    return out
