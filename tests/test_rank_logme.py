"""LogME (avidzoo.rank.logme): the closed-form evidence against the Gaussian marginal likelihood computed directly, the
fixed point being a maximum, ranking informative features above noise, invariances, and input errors."""

from __future__ import annotations

import math

import pytest
import torch

from avidzoo.rank.logme import evidence, fit_evidence, logme

PRECISIONS = [(0.3, 2.0), (5.0, 0.5), (40.0, 10.0), (1.0, 1.0)]


def direct_evidence(f: torch.Tensor, y: torch.Tensor, alpha: float, beta: float) -> float:
    """log N(y; 0, C), C = I/beta + F F^T/alpha, straight from the N x N covariance."""
    n = f.shape[0]
    chol = torch.linalg.cholesky(torch.eye(n, dtype=torch.float64) / beta + f @ f.T / alpha)
    quad = y @ torch.cholesky_solve(y[:, None], chol)[:, 0]
    return float(-0.5 * (n * math.log(2 * math.pi) + 2 * chol.diagonal().log().sum() + quad))


def reference_style_evidence(f: torch.Tensor, y: torch.Tensor, alpha: float, beta: float) -> float:
    """thuml/LogME's formula: the same terms, but log det(alpha I + beta F^T F) summed over the r = min(N, D)
    singular values only (thuml/LogME issue 23). m and the residual come from a direct D x D solve."""
    n, d = f.shape
    m = beta * torch.linalg.solve(alpha * torch.eye(d, dtype=torch.float64) + beta * f.T @ f, f.T @ y)
    sigma = torch.linalg.svdvals(f).square()
    logdet_r = (alpha + beta * sigma).log().sum()
    return float(d / 2 * math.log(alpha) + n / 2 * math.log(beta) - n / 2 * math.log(2 * math.pi)
                 - beta / 2 * (f @ m - y).square().sum() - alpha / 2 * m.square().sum() - logdet_r / 2)


def random_problem(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), (torch.arange(n) % 3 == 0).to(torch.float64)


@pytest.mark.parametrize("n, d", [(12, 30), (40, 8)])
@pytest.mark.parametrize("alpha, beta", PRECISIONS)
def test_evidence_equals_direct_marginal_likelihood(n, d, alpha, beta):
    f, y = random_problem(n, d, seed=n + d)
    direct = direct_evidence(f, y, alpha, beta)
    assert evidence(f, y, alpha, beta) == pytest.approx(direct, rel=1e-8)
    reference = reference_style_evidence(f, y, alpha, beta)
    if n < d and alpha != 1.0:  # the r-term log det misses (D - N)/2 log alpha: this test would catch it
        assert abs(reference - direct) == pytest.approx((d - n) / 2 * abs(math.log(alpha)), rel=1e-6)
        assert abs(reference - direct) > 1e-3 * abs(direct)
    else:  # N >= D (r = D), or log alpha = 0: the two formulas agree
        assert reference == pytest.approx(direct, rel=1e-8)


def interior_problem(wide: bool, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Problems whose evidence peaks at finite (alpha, beta) (checked over 300 seeds). Wide: rank-6 features (so y
    is not interpolated) with one direction correlated with y (so the weights are not pinned to zero). Tall: well
    separated class means plus noise."""
    g = torch.Generator().manual_seed(seed)
    n = 12 if wide else 40
    labels = torch.arange(n) % 3
    y = (labels == 0).to(torch.float64)
    if wide:
        a = torch.randn(n, 6, generator=g, dtype=torch.float64)
        a[:, 0] += 4 * y
        return a @ torch.randn(6, 30, generator=g, dtype=torch.float64), y
    means = 2 * torch.randn(3, 8, generator=g, dtype=torch.float64)
    return means[labels] + torch.randn(n, 8, generator=g, dtype=torch.float64), y


@pytest.mark.parametrize("wide", [True, False], ids=["N<D", "N>D"])
@pytest.mark.parametrize("seed", range(3))
def test_fixed_point_is_a_maximum(wide, seed):
    f, y = interior_problem(wide, seed)
    alpha, beta, best = fit_evidence(f, y)
    assert 0 < alpha < 1e8 and 0 < beta < 1e8  # an interior point, not a drift towards a boundary
    assert best == pytest.approx(evidence(f, y, alpha, beta), rel=1e-12)
    for fa in (0.9, 1.0, 1.1):
        for fb in (0.9, 1.0, 1.1):
            assert evidence(f, y, alpha * fa, beta * fb) <= best + 1e-9 * abs(best)
    # and strictly: 10% off in alpha alone costs something
    assert evidence(f, y, alpha * 1.1, beta) < best


@pytest.mark.parametrize("n, d", [(30, 100), (200, 16)])
@pytest.mark.parametrize("seed", range(5))
def test_informative_features_rank_above_noise(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    informative = torch.randn(4, d, generator=g)[labels] + torch.randn(n, d, generator=g)
    noise = torch.randn(n, d, generator=g)
    assert logme(informative, labels) > logme(noise, labels) + 0.1


@pytest.mark.parametrize("n, d", [(30, 100), (200, 16)])
def test_invariances(n, d):
    g = torch.Generator().manual_seed(7)
    labels = torch.arange(n) % 4
    f = torch.randn(4, d, generator=g)[labels] + 2 * torch.randn(n, d, generator=g)
    score = logme(f, labels)
    perm = torch.randperm(n, generator=g)
    assert logme(f[perm], labels[perm]) == pytest.approx(score, rel=1e-6, abs=1e-6)
    assert logme(1e3 * f, labels) == pytest.approx(score, rel=1e-6, abs=1e-6)  # the log det over all D terms
    assert logme(f, labels * 5 + 2) == pytest.approx(score, rel=1e-12)  # only which items share a class matters
    # the batched fit equals the per-class one (up to rounding in z = U^T y, which can shift a drifting fit's stop)
    per_class = [fit_evidence(f, (labels == k).double())[2] for k in range(4)]
    assert score == pytest.approx(sum(per_class) / 4 / n, rel=1e-6, abs=1e-6)


def test_class_without_signal_gets_the_noise_only_evidence():
    f = torch.randn(20, 5, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0] * 10 + [1] * 10)
    f[labels == 1] = 0  # F^T y = 0 for class 1: the evidence peaks with the weights pinned to zero
    _, beta, ev = fit_evidence(f, (labels == 1).double())
    assert beta == pytest.approx(2.0) and ev == pytest.approx(10 * math.log(2 / (2 * math.pi)) - 10, rel=1e-9)
    assert math.isfinite(logme(f, labels))


def test_errors():
    f = torch.randn(10, 4)
    with pytest.raises(ValueError, match="at least 2 classes"):
        logme(f, torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match="9 labels for 10"):
        logme(f, torch.arange(9) % 2)
    with pytest.raises(ValueError, match="all zero"):
        logme(torch.zeros(10, 4), torch.arange(10) % 2)
    with pytest.raises(ValueError, match="integer class indices"):
        logme(f, (torch.arange(10) % 2).float())
    with pytest.raises(ValueError, match="entries but features have"):
        evidence(f, torch.ones(9), 1.0, 1.0)
