"""Orthogonal Procrustes distance (Ding et al. 2021 convention)."""

from __future__ import annotations

from typing import Any

import torch

from ._common import TWO_POINTS, center, check_finite, check_min_n, no_variance, prepare_pair


def _reduce_features(xc: torch.Tensor) -> torch.Tensor:
    """An (n, min(n, d)) matrix Z with Z Z^T = X X^T, i.e. X up to an orthogonal map of its
    features (X = Z Q^T, Q^T Q = I): Z = U sqrt(e) from the eigendecomposition of X X^T."""
    n, d = xc.shape
    if d <= n:
        return xc
    e, U = torch.linalg.eigh(xc @ xc.T)
    return U * e.clamp_min(0.0).sqrt()


def procrustes(X: Any, Y: Any, *, conv: str | None = None, name: str | None = None) -> float:
    """Orthogonal Procrustes distance  min_Q ||X - Y Q||_F^2 = 2 - 2 ||X^T Y||_*  (Q orthogonal).

    X (n, d1) and Y (n, d2) are column-centred and scaled to unit Frobenius norm first (a
    narrower side is implicitly zero-padded), so the value lies in [0, 2]: 0 for identical
    inputs (or ones equal up to an orthogonal map, translation and isotropic scaling), and
    ||.||_* is the nuclear norm (sum of singular values). Other libraries report the square
    root of this or an angle arccos(||X^T Y||_*); convert if comparing. When d > n the
    features are first reduced isometrically to n columns, so the cost is O(n^2 d).
    """
    x, y = prepare_pair(X, Y, conv, name)
    check_min_n(x.shape[0], 3, name, "procrustes", TWO_POINTS)
    xc, yc = center(x, False), center(y, False)
    nx, ny = float(torch.linalg.norm(xc)), float(torch.linalg.norm(yc))
    check_finite(nx + ny, x, y, name)
    if nx == 0.0:
        raise no_variance("X", name, "procrustes")
    if ny == 0.0:
        raise no_variance("Y", name, "procrustes")
    zx, zy = _reduce_features(xc / nx), _reduce_features(yc / ny)
    nuc = float(torch.linalg.svdvals(zx.T @ zy).sum())
    return max(2.0 - 2.0 * min(nuc, 1.0), 0.0)
