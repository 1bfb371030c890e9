"""The probes and statistics behind `avidzoo rank`, on features whose answer is known, over seeds."""

from __future__ import annotations

import warnings
from collections import Counter

import pytest
import torch

from avidzoo.rank.probes import cross_validate, few_shot, fit_logistic, knn_predict, make_folds
from avidzoo.rank.stats import balanced_accuracy, bootstrap_weights, paired_bootstrap, per_class_recall


def blobs(seed: int, n_per: int = 30, k: int = 4, d: int = 64, sep: float = 12.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` classes of ``n_per`` items: class means ``sep`` apart on average in ``d`` dims, unit noise; ``sep=0``
    gives features that say nothing of the labels."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(k, d, generator=g) * sep / (2 * d) ** 0.5
    y = torch.arange(k).repeat_interleave(n_per)
    x = means[y] + torch.randn(len(y), d, generator=g)
    return x, y


def test_folds_are_stratified_and_keep_groups_whole():
    labels = [c for c in range(3) for _ in range(20)]
    folds = make_folds(labels, None, 5, seed=0)
    for f in range(5):
        counts = Counter(lab for lab, g in zip(labels, folds) if g == f)
        assert sorted(counts.values()) == [4, 4, 4]
    groups = [f"{lab}-{i // 4}" for i, lab in enumerate(labels)]  # 5 groups of 4 per class
    folds = make_folds(labels, groups, 5, seed=1)
    fold_of_group: dict[str, set[int]] = {}
    for g, f in zip(groups, folds):
        fold_of_group.setdefault(g, set()).add(f)
    assert all(len(v) == 1 for v in fold_of_group.values())
    assert all(sorted(Counter(lab for lab, g in zip(labels, folds) if g == f).values()) == [4, 4, 4]
               for f in range(5))
    assert make_folds(labels, None, 5, seed=0) != make_folds(labels, None, 5, seed=1)


def test_small_classes_are_named():
    with pytest.raises(ValueError, match="class index 2 has one item"):
        make_folds([0, 0, 0, 1, 1, 1, 2], None, 3, seed=0, source="mice.csv")
    with pytest.warns(UserWarning, match=r"mice.csv: classes \[1\] have fewer items than the 5 folds"):
        make_folds([0] * 10 + [1] * 3, None, 5, seed=0, source="mice.csv")


def test_balanced_accuracy_by_hand():
    y = torch.tensor([0, 0, 0, 0, 1, 2, 2])
    pred = torch.tensor([0, 0, 0, 1, 1, 0, 2])
    assert per_class_recall(pred, y, 4)[:3] == [0.75, 1.0, 0.5]
    assert balanced_accuracy(pred, y, 4) == pytest.approx((0.75 + 1.0 + 0.5) / 3)


def test_knn_votes_and_breaks_ties_by_similarity():
    train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    y = torch.tensor([0, 0, 1, 2, 3])
    test = torch.tensor([[0.95, 0.05], [0.1, 1.0]])
    assert knn_predict(train, y, test, 1, 4).tolist() == [0, 1]
    # k = 2 at [0.1, 1]: class 1 (one, nearest) against class 0 (one, farther): the tie goes to the nearer
    assert knn_predict(train, y, test[1:], 2, 4).tolist() == [1]


def test_logistic_reaches_the_penalised_optimum():
    x, y = blobs(0, n_per=20, d=16)
    x = (x - x.mean(0)) / x.std(0, unbiased=False)
    w, b = fit_logistic(x, y, 4, c=1.0)
    w, b = w.clone().requires_grad_(), b.clone().requires_grad_()
    loss = (torch.nn.functional.cross_entropy(x.double() @ w + b, y, reduction="sum") + (w * w).sum() / 2) / len(x)
    loss.backward()
    assert w.grad.abs().max() < 1e-6 and b.grad.abs().max() < 1e-6


@pytest.mark.parametrize("seed", [0, 1])
def test_cross_validation_ranks_informative_features_above_noise(seed):
    x, y = blobs(seed)
    noise, _ = blobs(seed, sep=0.0)
    good, info = cross_validate(x, y, folds=5, repeats=2, seed=seed)
    bad, _ = cross_validate(noise, y, folds=5, repeats=2, seed=seed)
    assert set(good) == {"knn1", "knn5", "knn20", "logistic"} and len(info["logistic_C"]) == 10
    threads = torch.get_num_threads()
    torch.set_num_threads(2 if threads == 1 else 1)
    try:  # the same predictions whatever the caller's thread count (the probes run on one thread)
        again, _ = cross_validate(x, y, folds=5, repeats=2, seed=seed, knn=(5,))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(again["logistic"], good["logistic"]) and torch.equal(again["knn5"], good["knn5"])
    for name in good:
        assert (good[name] >= 0).all()  # every item predicted once per repeat
        score = sum(balanced_accuracy(p, y, 4) for p in good[name]) / 2
        chance = sum(balanced_accuracy(p, y, 4) for p in bad[name]) / 2
        assert score > 0.8 and abs(chance - 0.25) < 0.15, (name, score, chance)
    stats = paired_bootstrap({"good": good["logistic"], "noise": bad["logistic"], "copy": good["logistic"].clone()},
                             y, 4, draws=500, seed=seed)
    assert stats["good"]["best"] == "good" and stats["copy"]["tied"] and stats["copy"]["diff"] == 0
    assert not stats["noise"]["tied"] and stats["noise"]["diff_low"] > 0.3
    for s in stats.values():
        assert s["low"] <= s["score"] <= s["high"]


def test_bootstrap_draws_whole_groups():
    groups = ["a", "a", "b", "b", "b", "c"]
    w = bootstrap_weights(6, groups, 200, seed=0)
    assert torch.equal(w[:, 0], w[:, 1]) and torch.equal(w[:, 2], w[:, 4])
    assert (w[:, [0, 2, 5]].sum(1) == 3).all()  # three groups drawn per resample
    assert (bootstrap_weights(6, None, 200, seed=0).sum(1) == 6).all()


def test_few_shot_improves_with_shots_and_skips_what_cannot_be_tested():
    x, y = blobs(3, n_per=12, sep=6.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        curves = few_shot(x, y, shots=(1, 5, 10, 12), episodes=40, seed=0)
    assert sorted(curves) == [1, 5, 10]  # 12 shots leave nothing of a 12-item class to test
    means = {n: sum(v) / len(v) for n, v in curves.items()}
    assert means[1] < means[5] < means[10] and means[10] > 0.6
    assert few_shot(x, y, shots=(1,), episodes=5, seed=0) == few_shot(x, y, shots=(1,), episodes=5, seed=0)
