"""Canonical correlation analysis and the summaries built on it: mean CCA, mean squared CCA,
SVCCA (Raghu et al. 2017) and PWCCA (Morcos et al. 2018).

Route: centre X and Y in float64, form the covariances Cxx = Xc^T Xc, Cyy, Cxy (cheap when
n >> d), whiten each side with its eigendecomposition Cxx = V diag(e) V^T, and take the
singular values of  diag(e_x^-1/2) Vx^T Cxy Vy diag(e_y^-1/2).  When d > n (SVCCA only: CCA
proper needs n > d + 1) each centred side is first replaced by its principal-component scores
Z = U diag(s) (n, n) from the thin SVD Xc = U diag(s) W^T, so the cost is O(n^2 d), not O(d^3).
Null directions -- constant or duplicated features, any exact linear dependence -- are dropped
by a relative tolerance on the singular values of the centred matrix: direction i is kept when
s_i > rtol * s_max, i.e. e_i > rtol^2 * e_max. The default rtol is
max(1e-6, sqrt(eps64 * max(n, d))) for every input dtype: float16/32 inputs are up-cast exactly
to float64 before any arithmetic, so only float64 rounding can blur a null direction. Correlations
are therefore computed over the k = min(rank_x, rank_y) non-null directions and are never NaN;
they are clipped to [0, 1] only as a last guard against rounding.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch

from repsim.errors import RepsimError

from ._common import center, check_finite, input_label, no_variance, prepare_pair


class _Side(NamedTuple):
    e: torch.Tensor  # kept eigenvalues of Xc^T Xc, descending
    V: torch.Tensor  # matching eigenvectors (d, k); (n, k) in Z's coordinates when d > n (SVCCA)


def default_rtol(n: int, d: int) -> float:
    """rtol = max(1e-6, sqrt(eps64 * max(n, d))), the same for every input dtype.

    In float64 the computed e_i of an exact null direction is at most ~ eps64 * max(n, d) * e_max,
    i.e. s_i <~ sqrt(eps64 * max(n, d)) * s_max; 1e-6 is the float64 default this always had.
    """
    # float16/32 values are up-cast exactly, so only float64 rounding blurs a null direction;
    # the input's own rounding (1e-3 in float16) is real variation, and cutting at it dropped real ones
    return max(1e-6, math.sqrt(torch.finfo(torch.float64).eps * max(n, d)))


def _row_space(xc: torch.Tensor) -> torch.Tensor:
    """Xc (n, d) with d > n  ->  Z = U diag(s) (n, n), from the thin SVD Xc = U diag(s) W^T.

    Z = Xc W with W^T W = I: Z^T Z = diag(s^2) holds the non-zero eigenvalues of Xc^T Xc and
    Z's columns are Xc's principal components, so every quantity here (invariant to an
    orthogonal map of the features) is unchanged, in O(n^2 d) time and n x n memory instead
    of O(d^3) and d x d. Returned as is when d <= n.
    """
    n, d = xc.shape
    if d <= n:
        return xc
    U, s, _ = torch.linalg.svd(xc, full_matrices=False)  # SVD, not eigh(Xc Xc^T): no squaring
    return U * s


def _eig_side(C: torch.Tensor, rtol: float, threshold: float | None, what: str, name, measure) -> _Side:
    e, V = torch.linalg.eigh(C)
    e, V = e.flip(-1), V.flip(-1)  # descending
    emax = float(e[0]) if e.numel() else 0.0
    if not emax > 0.0:
        raise no_variance(what, name, measure)
    keep = int((e > (rtol * rtol) * emax).sum())
    e, V = e[:keep], V[:, :keep]
    if threshold is not None and threshold < 1.0:
        frac = torch.cumsum(e, 0) / e.sum()
        # smallest k whose leading components keep >= threshold of the variance
        k = int((frac < threshold - 1e-12).sum()) + 1
        e, V = e[:k], V[:, :k]
    return _Side(e, V)


def _check_n(n: int, d: int, what: str, name, measure: str) -> None:
    if d >= n - 1:
        raise RepsimError(
            f"{measure} needs more data points than features (n > d + 1), but {input_label(what, name)} "
            f"has n={n}, d={d} (all correlations would be 1); pass conv='spatial' to use spatial "
            "positions as data points, use more data points, or use svcca (which first reduces d)"
        )


def _cca_parts(X: Any, Y: Any, conv, name, rtol, threshold, measure):
    """Return (rho, M's SVD pieces, sides) for CCA on the kept directions."""
    x, y = prepare_pair(X, Y, conv, name)
    n = x.shape[0]
    if threshold is None:
        _check_n(n, x.shape[1], "X", name, measure)
        _check_n(n, y.shape[1], "Y", name, measure)
    if rtol is None:
        rtol = default_rtol(n, max(x.shape[1], y.shape[1]))
    xc, yc = center(x, False), center(y, False)
    # checked before the SVD in _row_space, which fails on NaN/inf instead of propagating them
    check_finite(float(torch.linalg.vector_norm(xc) + torch.linalg.vector_norm(yc)), x, y, name)
    # only SVCCA can reach d > n (CCA proper was refused above), so pwcca always gets the
    # original features back in sx.V, as its weights need
    xc, yc = _row_space(xc), _row_space(yc)
    cxx, cyy, cxy = xc.T @ xc, yc.T @ yc, xc.T @ yc
    sx = _eig_side(cxx, rtol, threshold, "X", name, measure)
    sy = _eig_side(cyy, rtol, threshold, "Y", name, measure)
    if threshold is not None:
        for side, what in ((sx, "X"), (sy, "Y")):
            if side.e.numel() >= n - 1:
                raise RepsimError(
                    f"{measure} kept {side.e.numel()} components of {input_label(what, name)} but has only "
                    f"n={n} data points; lower the threshold, use more data points, or pass conv='spatial'"
                )
    wx = sx.V * sx.e.rsqrt()  # whitening: (xc @ wx) has orthonormal columns
    wy = sy.V * sy.e.rsqrt()
    M = wx.T @ cxy @ wy
    U, rho, Vh = torch.linalg.svd(M, full_matrices=False)
    return rho.clamp(0.0, 1.0), U, Vh, sx, sy


def cca(X: Any, Y: Any, *, conv: str | None = None, name: str | None = None, rtol: float | None = None) -> np.ndarray:
    """Canonical correlations rho_1 >= ... >= rho_k between X (n, d1) and Y (n, d2).

    rho_i are the singular values of Qx^T Qy, Qx and Qy orthonormal bases of the column
    spaces of the centred X and Y (computed by whitening the float64 covariances, which is
    the same thing). k = min(rank X, rank Y): null directions (constant or duplicated
    features) are dropped by the relative singular-value tolerance ``rtol`` (module doc).
    Needs n > d + 1 on each side (centred data span at most n - 1 dimensions) (raises
    RepsimError otherwise; with conv activations pass ``conv="spatial"``). Invariant to any
    invertible linear map and translation of X or Y.

    Returns a float64 numpy vector sorted in descending order.
    """
    rho, *_ = _cca_parts(X, Y, conv, name, rtol, None, "cca")
    return rho.cpu().numpy()


def mean_cca(X: Any, Y: Any, *, conv: str | None = None, name: str | None = None, rtol: float | None = None) -> float:
    """Mean CCA similarity  (1/k) sum_i rho_i  over all k canonical correlations (see ``cca``).

    Unlike the reference SVCCA code, every coefficient is averaged (not only the leading ones
    that make up 98% of their sum). 1 for identical inputs.
    """
    rho, *_ = _cca_parts(X, Y, conv, name, rtol, None, "mean_cca")
    return float(rho.mean())


def mean_sq_cca(
    X: Any, Y: Any, *, conv: str | None = None, name: str | None = None, rtol: float | None = None,
) -> float:
    """Mean squared CCA (Yanai's R^2)  (1/k) sum_i rho_i^2  (see ``cca``)."""
    rho, *_ = _cca_parts(X, Y, conv, name, rtol, None, "mean_sq_cca")
    return float((rho * rho).mean())


def svcca(
    X: Any, Y: Any, threshold: float = 0.99, *, conv: str | None = None, name: str | None = None,
    rtol: float | None = None,
) -> float:
    """SVCCA (Raghu et al. 2017): mean CCA after reducing each side to its top principal components.

    Each centred matrix is reduced to its k leading principal components, k the smallest
    number with  sum_{i<=k} s_i^2 >= threshold * sum_i s_i^2  (s the singular values; variance,
    not |s|), then  SVCCA = (1/m) sum_i rho_i  over the m = min(k_x, k_y) canonical
    correlations of the reduced matrices. ``threshold=1.0`` keeps every non-null direction and
    equals ``mean_cca``. Needs n > k + 1 on each side (not n > d), so it also works when n <= d;
    then each side is first reduced to its n principal-component scores (module doc), O(n^2 d).
    """
    if not 0.0 < threshold <= 1.0:
        raise RepsimError(f"svcca threshold={threshold} is outside (0, 1]; "
                          "pass the fraction of variance to keep, e.g. 0.99")
    rho, *_ = _cca_parts(X, Y, conv, name, rtol, threshold, "svcca")
    return float(rho.mean())


def pwcca(
    X: Any, Y: Any, *, side: str = "x", conv: str | None = None, name: str | None = None,
    rtol: float | None = None,
) -> float:
    """Projection-weighted CCA (Morcos et al. 2018):  sum_i alpha_i rho_i.

    alpha_i ∝ sum_j |<h_i, x_j>|  with h_i the i-th (unit-norm) canonical variate and x_j the
    j-th column of the *centred* X, normalised so that sum_i alpha_i = 1. Not symmetric:
    ``side="x"`` (default) takes the weights from the first argument X, ``side="y"`` from Y.
    Morcos et al. weight by the earlier layer / the side with fewer neurons; pass that one as
    X or choose ``side``. Computed in d-space: with Cxx = V diag(e) V^T and u_i the i-th left
    singular vector of the whitened cross-covariance,  h_i^T Xc = u_i^T diag(sqrt e) V^T.
    """
    if side not in ("x", "y"):
        raise RepsimError(f"pwcca side={side!r} is not understood; pass side='x' (weights from X) or side='y'")
    rho, U, Vh, sx, sy = _cca_parts(X, Y, conv, name, rtol, None, "pwcca")
    k = rho.numel()
    if side == "x":
        proj = U[:, :k].T @ (sx.e.sqrt()[:, None] * sx.V.T)  # (k, d1) = h_i^T Xc
    else:
        proj = Vh[:k, :] @ (sy.e.sqrt()[:, None] * sy.V.T)
    alpha = proj.abs().sum(dim=1)
    alpha = alpha / alpha.sum()
    return min(float((alpha * rho).sum()), 1.0)
