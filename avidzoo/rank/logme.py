"""LogME (You et al., ICML 2021): a training-free transferability score of frozen features ``(N, D)`` for labels
``(N,)``, the log evidence of a Bayesian linear model per one-hot class target, maximised over its prior precision
alpha and noise precision beta, divided by N and averaged over classes. Higher means the features suit the task better.

The log determinant runs over all D eigenvalues of ``F^T F`` (the D - r zero ones each add ``log alpha``), so the
evidence is the exact marginal likelihood for every N and D, N < D included (thuml/LogME issue 23)."""

from __future__ import annotations

import math

import torch

__all__ = ["logme"]


def _spectrum(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared singular values ``(r,)`` and left singular vectors ``(N, r)`` of features, float64, r = min(N, D)."""
    f = torch.as_tensor(features).to(torch.float64)
    if f.ndim != 2 or f.shape[0] == 0 or f.shape[1] == 0:
        raise ValueError(f"features must be a non-empty (N, D) matrix, got shape {tuple(f.shape)}")
    if not torch.isfinite(f).all():
        raise ValueError("features contain NaN or infinite values")
    if not f.any():
        raise ValueError("features are all zero: LogME needs some signal to score")
    u, s, _ = torch.linalg.svd(f, full_matrices=False)
    return s.square(), u


def _evidence(sigma, z, yy, n, d, alpha, beta):
    """Log evidence and (gamma, ||m||^2, ||F m - y||^2) from the spectrum ``(r, 1)``, ``z = U^T y`` ``(r, K)`` and
    ``yy = ||y||^2`` ``(K,)``, at precisions alpha, beta ``(K,)``; everything broadcasts over the K targets."""
    denom = alpha + beta * sigma
    gamma = (beta * sigma / denom).sum(0)
    mm = (beta**2 * sigma * z.square() / denom.square()).sum(0)  # ||m||^2, m = beta A^-1 F^T y
    outside = (yy - z.square().sum(0)).clamp_min(0)  # part of y outside span(U)
    res = ((alpha / denom).square() * z.square()).sum(0) + outside
    logdet = denom.log().sum(0) + (d - sigma.shape[0]) * alpha.log()  # log det(alpha I_D + beta F^T F)
    ev = (d * alpha.log() + n * beta.log() - n * math.log(2 * math.pi) - beta * res - alpha * mm - logdet) / 2
    return ev, gamma, mm, res


def _fit(sigma, z, yy, n, d, max_iter, tol):
    """MacKay's fixed point for K targets side by side, each stopping once alpha and beta change by less than ``tol``
    (relative) or an update would overflow: where the supremum lies at alpha or beta = infinity (weights pinned to 0,
    or noise-free interpolation, common when N < D) they drift outwards while the evidence settles. Returns alpha,
    beta, evidence, each ``(K,)``. Starting at alpha = mean(sigma), beta = 1 makes it all independent of the features'
    scale (F -> c F gives alpha -> c^2 alpha and the same evidence)."""
    alpha, beta = torch.full_like(yy, float(sigma.mean())), torch.ones_like(yy)
    active = torch.ones_like(yy, dtype=torch.bool)
    for _ in range(max_iter):
        _, gamma, mm, res = _evidence(sigma, z, yy, n, d, alpha, beta)
        # F^T y = 0 (a class whose feature rows are all zero, say): the evidence peaks as alpha -> infinity.
        new_alpha, new_beta = torch.where(mm > 0, gamma / mm, 1e300), (n - gamma) / res
        ok = torch.isfinite(new_alpha) & torch.isfinite(new_beta) & (new_alpha > 0) & (new_beta > 0)
        step = active & ok
        change = torch.maximum((new_alpha - alpha).abs() / alpha, (new_beta - beta).abs() / beta)
        alpha, beta = torch.where(step, new_alpha, alpha), torch.where(step, new_beta, beta)
        active = step & (change >= tol)
        if not active.any():
            break
    return alpha, beta, _evidence(sigma, z, yy, n, d, alpha, beta)[0]


def _project(features: torch.Tensor, y: torch.Tensor):  # one target's _evidence arguments
    sigma, u = _spectrum(features)
    y = torch.as_tensor(y).to(torch.float64).reshape(-1)
    if y.shape[0] != u.shape[0]:
        raise ValueError(f"target has {y.shape[0]} entries but features have {u.shape[0]} rows")
    return sigma[:, None], (u.T @ y)[:, None], y.square().sum()[None], *features.shape


def evidence(features: torch.Tensor, y: torch.Tensor, alpha: float, beta: float) -> float:
    """Log evidence (not divided by N) of one target column ``y`` ``(N,)`` under features ``(N, D)`` at the given
    prior precision alpha and noise precision beta, in float64."""
    sigma, z, yy, n, d = _project(features, y)
    a, b = (torch.tensor([float(v)], dtype=torch.float64, device=z.device) for v in (alpha, beta))
    return float(_evidence(sigma, z, yy, n, d, a, b)[0])


def fit_evidence(
    features: torch.Tensor, y: torch.Tensor, *, max_iter: int = 100, tol: float = 1e-5
) -> tuple[float, float, float]:
    """Maximise the evidence of one target ``y`` ``(N,)`` under features ``(N, D)``: returns (alpha, beta, evidence)."""
    alpha, beta, ev = _fit(*_project(features, y), max_iter, tol)
    return float(alpha), float(beta), float(ev)


def logme(features: torch.Tensor, labels: torch.Tensor, *, max_iter: int = 100, tol: float = 1e-5) -> float:
    """LogME of features ``(N, D)`` for integer class labels ``(N,)``: the maximised log evidence of each class's
    one-hot target, divided by N, averaged over the classes present (at least 2)."""
    labels = torch.as_tensor(labels).reshape(-1)
    if labels.shape[0] != features.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels for {features.shape[0]} feature rows")
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels must be integer class indices, got {labels.dtype}")
    classes, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"LogME needs at least 2 classes, labels hold {len(classes)}")
    sigma, u = _spectrum(features)
    # z = U^T y for every class's one-hot y at once: the sum of U's rows in that class.
    z = torch.zeros(u.shape[1], len(classes), dtype=torch.float64, device=u.device)
    z.index_add_(1, inverse.to(u.device), u.T)
    n, d = features.shape
    ev = _fit(sigma[:, None], z, counts.to(u.device, torch.float64), n, d, max_iter, tol)[2]
    return float(ev.mean() / n)
