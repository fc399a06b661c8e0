"""Centred kernel alignment (Kornblith et al. 2019): linear, RBF, debiased, and minibatch.

CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with Gram matrices K = k(X), L = k(Y).
For the linear kernel on centred X, Y this is  ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)
("feature form", O(n d^2)) or  <K, L> / (||K|| ||L||) with K = X X^T ("Gram form", O(n^2 d)).
No epsilon is added to any denominator (it would break scale invariance); a side with no
variance raises RepsimError instead.

Precision: every sum is taken in float64. For float16/float32 input (``precision="auto"``) the
matrix products themselves run in float32, in chunks of 8192 along the contracted axis with
the partial products summed in float64 (measured error ~1e-8 at n=10,000, d=512); pass
``precision="float64"`` to do the products in float64 too (several times slower on CPU).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from repsim.errors import RepsimError

from ._common import (
    TWO_POINTS,
    center,
    check_finite,
    check_min_n,
    input_label,
    low_precision,
    mm,
    no_variance,
    prepare_pair,
)

FORMS = ("auto", "feature", "gram")


def _pick_form(form: str, n: int, d1: int, d2: int) -> str:
    if form not in FORMS:
        raise RepsimError(f"form={form!r} is not understood; pass form='auto', 'feature' or 'gram'")
    if form != "auto":
        return form
    feature_cost = d1 * d1 + d2 * d2 + d1 * d2
    gram_cost = n * (d1 + d2 + 3)
    return "feature" if feature_cost <= gram_cost else "gram"


def _sq(a: torch.Tensor) -> float:
    return float((a * a).sum())


def linear_cka(
    X: Any, Y: Any, *, conv: str | None = None, name: str | None = None, form: str = "auto",
    precision: str = "auto",
) -> float:
    """Linear CKA:  ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)  on column-centred X (n, d1), Y (n, d2).

    ``form="auto"`` picks the feature form (d x d products, O(n d^2)) when the features are
    fewer than the data points and the Gram form  <K, L>_F / (||K||_F ||L||_F), K = X X^T,
    L = Y Y^T (O(n^2 d)) otherwise; ``form="feature"`` / ``"gram"`` forces one (they agree to
    rounding). Invariant to orthogonal maps, isotropic scaling and translation, not to general
    invertible linear maps. 1 for identical inputs; in [0, 1].
    """
    x, y = prepare_pair(X, Y, conv, name)
    n, d1, d2 = x.shape[0], x.shape[1], y.shape[1]
    check_min_n(n, 3, name, "linear_cka", TWO_POINTS)
    lowp = low_precision(x, precision) and low_precision(y, precision)
    xc, yc = center(x, lowp), center(y, lowp)
    if _pick_form(form, n, d1, d2) == "feature":
        hxy = _sq(mm(yc.T, xc))
        hxx = math.sqrt(_sq(mm(xc.T, xc)))
        hyy = math.sqrt(_sq(mm(yc.T, yc)))
    else:
        K, L = mm(xc, xc.T), mm(yc, yc.T)
        hxy, hxx, hyy = float((K * L).sum()), math.sqrt(_sq(K)), math.sqrt(_sq(L))
    check_finite(hxx + hyy + hxy, x, y, name)
    if hxx == 0.0:
        raise no_variance("X", name, "linear_cka")
    if hyy == 0.0:
        raise no_variance("Y", name, "linear_cka")
    return min(max(hxy / (hxx * hyy), 0.0), 1.0)


# ---------------------------------------------------------------------------------------------
# Unbiased HSIC (Song et al. 2012)


def _unbiased_hsic_gram(K: torch.Tensor, L: torch.Tensor) -> float:
    """Song et al.'s U-statistic on float64 Gram matrices:

    HSIC_1 = [tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n(n-3)),
    with K~, L~ the Gram matrices with their diagonals set to zero.
    """
    n = K.shape[0]
    Kt = K - torch.diag_embed(torch.diagonal(K))
    Lt = L - torch.diag_embed(torch.diagonal(L))
    k1, l1 = Kt.sum(dim=1), Lt.sum(dim=1)
    tr = float((Kt * Lt).sum())
    return ((tr + float(k1.sum()) * float(l1.sum()) / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * float(k1 @ l1))
            / (n * (n - 3)))


def _unbiased_hsic_linear_terms(xc: torch.Tensor, yc: torch.Tensor, form: str) -> tuple[float, float, float]:
    """(HSIC_1(K,L), HSIC_1(K,K), HSIC_1(L,L)) for linear kernels on (centred) X, Y.

    Feature form, with K = X X^T, diag(K)_i = |x_i|^2 =: a_i, s = X^T 1:
      tr(K~ L~) = ||X^T Y||_F^2 - a.b,   1^T K~ 1 = |s_x|^2 - sum a,   K~ 1 = X s_x - a.
    """
    n = xc.shape[0]
    if form == "gram":
        K, L = mm(xc, xc.T), mm(yc, yc.T)
        return _unbiased_hsic_gram(K, L), _unbiased_hsic_gram(K, K), _unbiased_hsic_gram(L, L)
    x64, y64 = xc.to(torch.float64), yc.to(torch.float64)
    a, b = (x64 * x64).sum(dim=1), (y64 * y64).sum(dim=1)
    sx, sy = x64.sum(dim=0), y64.sum(dim=0)
    k1, l1 = x64 @ sx - a, y64 @ sy - b
    ksum, lsum = float(sx @ sx - a.sum()), float(sy @ sy - b.sum())

    def h(tr: float, s1: float, s2: float, v1: torch.Tensor, v2: torch.Tensor) -> float:
        return (tr + s1 * s2 / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * float(v1 @ v2)) / (n * (n - 3))

    hxy = h(_sq(mm(yc.T, xc)) - float(a @ b), ksum, lsum, k1, l1)
    hxx = h(_sq(mm(xc.T, xc)) - float(a @ a), ksum, ksum, k1, k1)
    hyy = h(_sq(mm(yc.T, yc)) - float(b @ b), lsum, lsum, l1, l1)
    return hxy, hxx, hyy


def _min_n(n: int, name, measure: str) -> None:
    if n < 4:
        raise RepsimError(
            f"{measure} needs at least 4 data points for the unbiased HSIC estimator, but "
            f"{input_label('X', name)} has n={n}; use more data points per batch, or linear_cka"
        )


def _ratio(hxy: float, hxx: float, hyy: float, name, measure: str) -> float:
    if not hxx > 0.0:
        raise RepsimError(
            f"{measure}: the unbiased HSIC of {input_label('X', name)} with itself is {hxx:.3g} (not > 0), "
            "so CKA is undefined; check for constant activations or use more data points"
        )
    if not hyy > 0.0:
        raise RepsimError(
            f"{measure}: the unbiased HSIC of {input_label('Y', name)} with itself is {hyy:.3g} (not > 0), "
            "so CKA is undefined; check for constant activations or use more data points"
        )
    return hxy / math.sqrt(hxx * hyy)


def debiased_cka(
    X: Any, Y: Any, *, conv: str | None = None, name: str | None = None, form: str = "auto",
    precision: str = "auto",
) -> float:
    """Debiased linear CKA: CKA with HSIC replaced by Song et al.'s (2012) unbiased estimator.

    CKA_1 = HSIC_1(K, L) / sqrt(HSIC_1(K, K) HSIC_1(L, L)),  K = X X^T,  L = Y Y^T, with
    HSIC_1 = [tr(K~ L~) + (1^T K~ 1)(1^T L~ 1)/((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n(n-3))
    and K~, L~ the Gram matrices with zeroed diagonals (this is not "centre, then zero the
    diagonal"). Near 0 for independent data at any n (biased CKA is not); can be slightly
    negative. Needs n >= 4. ``form`` as in ``linear_cka``; the feature form never builds an
    n x n matrix.
    """
    x, y = prepare_pair(X, Y, conv, name)
    n = x.shape[0]
    _min_n(n, name, "debiased_cka")
    lowp = low_precision(x, precision) and low_precision(y, precision)
    xc, yc = center(x, lowp), center(y, lowp)
    terms = _unbiased_hsic_linear_terms(xc, yc, _pick_form(form, n, x.shape[1], y.shape[1]))
    check_finite(sum(terms), x, y, name)
    return _ratio(*terms, name, "debiased_cka")


class MinibatchCKA:
    """Linear CKA accumulated over minibatches (Nguyen, Raghu & Kornblith 2021).

    CKA = sum_b HSIC_1(K_b, L_b) / sqrt(sum_b HSIC_1(K_b, K_b) * sum_b HSIC_1(L_b, L_b)),
    HSIC_1 the unbiased estimator of ``debiased_cka`` on each batch b (n_b >= 4). Only three
    float64 scalars are kept, never an n x n matrix, so batches -- and tasks: each task's
    batch can simply be another ``update`` -- stream through. With one batch it equals
    ``debiased_cka``; over many batches of the same data it converges to it.

    >>> acc = MinibatchCKA()
    >>> for xb, yb in batches:          # doctest: +SKIP
    ...     acc.update(xb, yb)
    >>> acc.value()                     # doctest: +SKIP
    """

    def __init__(self, *, conv: str | None = None, name: str | None = None, form: str = "auto",
                 precision: str = "auto") -> None:
        self.conv, self.name, self.form, self.precision = conv, name, form, precision
        self.reset()

    def reset(self) -> "MinibatchCKA":
        """Forget every batch seen so far."""
        self.hsic_xy = self.hsic_xx = self.hsic_yy = 0.0
        self.n_batches = 0
        self.n_points = 0
        self._dims: tuple[int, int] | None = None
        return self

    def update(self, X: Any, Y: Any) -> "MinibatchCKA":
        """Add one batch: X (n_b, d1) and Y (n_b, d2) hold the same n_b >= 4 data points."""
        x, y = prepare_pair(X, Y, self.conv, self.name)
        n = x.shape[0]
        _min_n(n, self.name, "MinibatchCKA.update")
        dims = (x.shape[1], y.shape[1])
        if self._dims is not None and dims != self._dims:
            raise RepsimError(
                f"MinibatchCKA got a batch with feature sizes {dims} after {self._dims}; pass every "
                "batch of one layer pair with the same shape, or start a new MinibatchCKA"
            )
        self._dims = dims
        lowp = low_precision(x, self.precision) and low_precision(y, self.precision)
        # no rescaling: the batches' HSICs are summed, so they must share one scale
        xc, yc = center(x, lowp, rescale=False), center(y, lowp, rescale=False)
        hxy, hxx, hyy = _unbiased_hsic_linear_terms(xc, yc, _pick_form(self.form, n, *dims))
        check_finite(hxy + hxx + hyy, x, y, self.name)
        self.hsic_xy += hxy
        self.hsic_xx += hxx
        self.hsic_yy += hyy
        self.n_batches += 1
        self.n_points += n
        return self

    def value(self) -> float:
        """The accumulated CKA as a Python float."""
        if self.n_batches == 0:
            raise RepsimError("MinibatchCKA.value() called before any update(); call update(X, Y) first")
        return _ratio(self.hsic_xy, self.hsic_xx, self.hsic_yy, self.name, "MinibatchCKA")


# ---------------------------------------------------------------------------------------------
# RBF CKA


def _rbf_gram(xc: torch.Tensor, threshold: float, what: str, name) -> torch.Tensor:
    g = xc @ xc.T
    sq = torch.diagonal(g)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * g).clamp_min(0.0)
    d2.fill_diagonal_(0.0)
    # Kornblith: np.median over all n^2 entries, diagonal zeros included (mean of the two
    # middle values when n^2 is even; torch.median would return the lower one)
    flat = d2.flatten()
    m = flat.numel()
    med = float(torch.kthvalue(flat, (m + 1) // 2).values)
    if m % 2 == 0:
        med = 0.5 * (med + float(torch.kthvalue(flat, m // 2 + 1).values))
    if not med > 0.0:
        raise RepsimError(
            f"rbf_cka: the median squared pairwise distance of {input_label(what, name)} is 0 (most data "
            "points coincide), so the bandwidth is 0; remove duplicate points or use linear_cka"
        )
    return torch.exp(-d2 / (2.0 * threshold * threshold * med))


def rbf_cka(
    X: Any, Y: Any, threshold: float = 1.0, *, conv: str | None = None, name: str | None = None,
    debiased: bool = False,
) -> float:
    """CKA with RBF kernels:  <HKH, HLH>_F / (||HKH||_F ||HLH||_F),  H = I - 11^T/n.

    K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2)) with Kornblith et al.'s bandwidth convention
    sigma^2 = threshold^2 * median_ij ||x_i - x_j||^2, the median over all n^2 pairs (zero
    diagonal included; np.median's convention for an even count), i.e. sigma is ``threshold``
    times the median pairwise distance (default 1.0; Kornblith et al. also use 0.5). Each side
    gets its own sigma. Builds n x n
    float64 matrices (O(n^2 d)). ``debiased=True`` uses the unbiased HSIC (needs n >= 4).
    Invariant to orthogonal maps, isotropic scaling and translation.
    """
    if not threshold > 0.0:
        raise RepsimError(f"rbf_cka threshold={threshold} must be > 0; pass e.g. 1.0 or 0.5")
    x, y = prepare_pair(X, Y, conv, name)
    n = x.shape[0]
    check_min_n(n, 3, name, "rbf_cka", TWO_POINTS)
    xc, yc = center(x, False), center(y, False)
    vx, vy = float((xc * xc).sum()), float((yc * yc).sum())
    check_finite(vx + vy, x, y, name)
    if vx == 0.0:
        raise no_variance("X", name, "rbf_cka")
    if vy == 0.0:
        raise no_variance("Y", name, "rbf_cka")
    K = _rbf_gram(xc, threshold, "X", name)
    L = _rbf_gram(yc, threshold, "Y", name)
    if debiased:
        _min_n(n, name, "rbf_cka(debiased=True)")
        return _ratio(_unbiased_hsic_gram(K, L), _unbiased_hsic_gram(K, K), _unbiased_hsic_gram(L, L),
                      name, "rbf_cka")
    Kc = K - K.mean(dim=0, keepdim=True)
    Kc = Kc - Kc.mean(dim=1, keepdim=True)
    Lc = L - L.mean(dim=0, keepdim=True)
    Lc = Lc - Lc.mean(dim=1, keepdim=True)
    return min(max(float((Kc * Lc).sum()) / math.sqrt(_sq(Kc) * _sq(Lc)), 0.0), 1.0)
