"""Tests for repsim.similarity against truths that do not come from the code under test:
scipy's subspace angles, from-scratch float64 routes written here, the explicit U-statistic of
Song et al. (2012), a direct O(n^2) RBF CKA, scipy's orthogonal Procrustes, and invariances."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from repsim.errors import RepsimError
from repsim.similarity import (
    MEASURES,
    MinibatchCKA,
    as_matrix,
    cca,
    compare,
    debiased_cka,
    linear_cka,
    mean_cca,
    mean_sq_cca,
    procrustes,
    pwcca,
    rbf_cka,
    svcca,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matrices: one intra-op thread avoids OpenMP spin stalls on a busy shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


ALL_SCALAR = [mean_cca, mean_sq_cca, svcca, pwcca, linear_cka, rbf_cka, debiased_cka]


def pair(n=120, d1=8, d2=6, seed=0, noise=1.0):
    r = np.random.default_rng(seed)
    X = r.standard_normal((n, d1))
    Y = X @ r.standard_normal((d1, d2)) + noise * r.standard_normal((n, d2))
    return X, Y


def ortho(d, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q


# ------------------------------------------------------------------ independent reference routes


def ref_cca_qr(X, Y):
    Qx, _ = np.linalg.qr(X - X.mean(0))
    Qy, _ = np.linalg.qr(Y - Y.mean(0))
    return np.linalg.svd(Qx.T @ Qy, compute_uv=False)


def ref_cca_whiten(X, Y):
    """Covariance whitening with Cholesky factors, float64."""
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    n = len(X)
    Sxx, Syy, Sxy = Xc.T @ Xc / (n - 1), Yc.T @ Yc / (n - 1), Xc.T @ Yc / (n - 1)
    Lx, Ly = np.linalg.cholesky(Sxx), np.linalg.cholesky(Syy)
    T = scipy.linalg.solve_triangular(Lx, Sxy, lower=True)
    T = scipy.linalg.solve_triangular(Ly, T.T, lower=True).T
    return np.linalg.svd(T, compute_uv=False)


def ref_unbiased_hsic(K, L):
    """Song et al. 2012: HSIC_1 = (n)_4^{-1} sum over distinct (i,j,q,r) of
    k_ij l_ij + k_ij l_qr - 2 k_ij l_iq (the ordered sum already symmetrises h)."""
    n = len(K)
    total = 0.0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += K[i, j] * L[i, j] + K[i, j] * L[q, r] - 2 * K[i, j] * L[i, q]
    return total / (n * (n - 1) * (n - 2) * (n - 3))


def ref_rbf_cka(X, Y, threshold=1.0):
    def gram(A):
        n = len(A)
        D = np.array([[np.sum((A[i] - A[j]) ** 2) for j in range(n)] for i in range(n)])
        s2 = threshold**2 * np.median(D)
        return np.exp(-D / (2 * s2))

    n = len(X)
    H = np.eye(n) - np.ones((n, n)) / n
    K, L = H @ gram(X) @ H, H @ gram(Y) @ H
    return np.trace(K @ L) / np.sqrt(np.trace(K @ K) * np.trace(L @ L))


def ref_linear_cka(X, Y):
    K, L = (X - X.mean(0)) @ (X - X.mean(0)).T, (Y - Y.mean(0)) @ (Y - Y.mean(0)).T
    return np.sum(K * L) / np.sqrt(np.sum(K * K) * np.sum(L * L))  # = tr(KL)/sqrt(tr(KK) tr(LL))


# ------------------------------------------------------------------ CCA family


def test_cca_matches_scipy_subspace_angles_and_two_float64_routes():
    X, Y = pair(200, 9, 6, seed=1)
    rho = cca(X, Y)
    angles = scipy.linalg.subspace_angles(X - X.mean(0), Y - Y.mean(0))
    np.testing.assert_allclose(rho, np.sort(np.cos(angles))[::-1], atol=1e-9)
    np.testing.assert_allclose(rho, ref_cca_qr(X, Y), atol=1e-9)
    np.testing.assert_allclose(rho, ref_cca_whiten(X, Y), atol=1e-9)
    assert rho.shape == (6,) and np.all(np.diff(rho) <= 0)
    assert mean_cca(X, Y) == pytest.approx(rho.mean(), abs=1e-12)
    assert mean_sq_cca(X, Y) == pytest.approx(np.mean(rho**2), abs=1e-12)


def test_cca_invariant_to_invertible_linear_maps_and_translation():
    X, Y = pair(150, 6, 5, seed=2)
    r = np.random.default_rng(3)
    A = r.standard_normal((6, 6)) + 3 * np.eye(6)
    B = r.standard_normal((5, 5)) + 3 * np.eye(5)
    base = cca(X, Y)
    np.testing.assert_allclose(cca(X @ A + 5.0, Y @ B - 2.0), base, atol=1e-8)


def test_svcca_threshold_one_equals_mean_cca_and_matches_naive_svd_route():
    r = np.random.default_rng(4)
    X = r.standard_normal((300, 10)) * np.linspace(5, 0.1, 10)
    Y = X @ r.standard_normal((10, 7)) + r.standard_normal((300, 7))
    assert svcca(X, Y, threshold=1.0) == pytest.approx(mean_cca(X, Y), abs=1e-12)

    def reduce(A, t):
        Ac = A - A.mean(0)
        U, s, _ = np.linalg.svd(Ac, full_matrices=False)
        frac = np.cumsum(s**2) / np.sum(s**2)
        k = int(np.searchsorted(frac, t) + 1)
        return U[:, :k] * s[:k]

    Xr, Yr = reduce(X, 0.9), reduce(Y, 0.9)
    expect = np.mean(np.cos(scipy.linalg.subspace_angles(Xr, Yr)))
    assert svcca(X, Y, threshold=0.9) == pytest.approx(expect, abs=1e-9)


def ref_svcca_cov(X, Y, t):
    """The plain d x d route: eigh of each centred covariance, the top k components holding
    ``t`` of the variance, then the mean cosine of the principal angles between the scores."""
    def reduce(A):
        Ac = A - A.mean(0)
        e, V = np.linalg.eigh(Ac.T @ Ac)
        e, V = e[::-1], V[:, ::-1]
        k = int(np.searchsorted(np.cumsum(e) / e.sum(), t) + 1)
        return Ac @ V[:, :k]

    return np.mean(np.cos(scipy.linalg.subspace_angles(reduce(X), reduce(Y))))


def wide_pair(n=40, d=400, rank=12, seed=0):
    """n < d, with a decaying spectrum (as a flattened conv layer) so SVCCA keeps < n - 1."""
    r = np.random.default_rng(seed)
    lat = r.standard_normal((n, rank)) * np.logspace(0, -2, rank)
    lat_y = lat + 0.5 * r.standard_normal((n, rank)) * lat.std(0)
    X = lat @ r.standard_normal((rank, d)) + 1e-3 * r.standard_normal((n, d))
    Y = lat_y @ r.standard_normal((rank, d)) + 1e-3 * r.standard_normal((n, d))
    return X, Y, lat, lat_y


def test_svcca_row_space_route_matches_plain_covariance_route_when_n_below_d():
    X, Y, lat, lat_y = wide_pair()
    for t in (0.5, 0.9, 0.99):
        assert svcca(X, Y, threshold=t) == pytest.approx(ref_svcca_cov(X, Y, t), abs=1e-8), t
    # invariant to an orthogonal map of the d features (the reduction is one)
    assert svcca(X @ ortho(400, 1), Y, threshold=0.9) == pytest.approx(svcca(X, Y, threshold=0.9), abs=1e-9)
    # exactly rank-12 sides: threshold 1 keeps the 12 directions, i.e. mean CCA of the n > d latents
    W = np.random.default_rng(2).standard_normal((12, 400))
    assert svcca(lat @ W, lat_y @ W[::-1], threshold=1.0) == pytest.approx(mean_cca(lat, lat_y), abs=1e-8)
    X[3, 7] = np.nan  # the reduction's SVD must not see it: the usual error instead
    with pytest.raises(RepsimError, match="X of layer 'conv1' contains 1 NaN or inf"):
        svcca(X, Y, name="conv1")


def test_float16_keeps_every_real_direction_of_its_float64_upcast():
    """Up-casting float16 to float64 is exact, so both must give the same coefficients; a cut at
    float16's eps (1e-2) once kept 42 of these 64 and moved mean CCA from 0.77 to 0.89."""
    r = np.random.default_rng(24)
    X = r.standard_normal((2000, 64)) * np.logspace(0, -3, 64)
    Y = X @ r.standard_normal((64, 64)) + 0.3 * r.standard_normal((2000, 64)) * np.logspace(0, -3, 64)
    x16, y16 = X.astype(np.float16), Y.astype(np.float16)
    x64, y64 = x16.astype(np.float64), y16.astype(np.float64)
    assert np.linalg.matrix_rank(x64 - x64.mean(0)) == 64
    rho = cca(x16, y16)
    assert rho.shape == cca(x64, y64).shape == (64,)
    np.testing.assert_allclose(rho, ref_cca_qr(x64, y64), atol=1e-6)
    assert mean_cca(torch.from_numpy(x16), torch.from_numpy(y16)) == pytest.approx(mean_cca(x64, y64), abs=1e-9)
    # exact null directions of float16 data (constant, duplicated feature) are still dropped
    bad = np.column_stack([x16, np.full(2000, 3.0, np.float16), x16[:, 5]])
    np.testing.assert_allclose(cca(bad, y16), rho, atol=1e-7)


def test_pwcca_matches_from_scratch_canonical_variates_and_side_choice():
    X, Y = pair(250, 7, 5, seed=5)

    def ref(A, B):
        Ac, Bc = A - A.mean(0), B - B.mean(0)
        Qa, _ = np.linalg.qr(Ac)
        Qb, _ = np.linalg.qr(Bc)
        U, s, Vt = np.linalg.svd(Qa.T @ Qb, full_matrices=False)
        H = Qa @ U  # canonical variates of A, unit norm
        alpha = np.abs(H.T @ Ac).sum(1)
        return np.sum(alpha / alpha.sum() * s)

    assert pwcca(X, Y) == pytest.approx(ref(X, Y), abs=1e-9)
    assert pwcca(X, Y, side="y") == pytest.approx(ref(Y, X), abs=1e-9)
    assert pwcca(Y, X) == pytest.approx(pwcca(X, Y, side="y"), abs=1e-9)
    assert pwcca(X, X) == pytest.approx(1.0, abs=1e-9)


def test_cca_drops_constant_and_duplicated_features_without_nan():
    X, Y = pair(100, 5, 4, seed=6)
    Xbad = np.column_stack([X, np.full(100, 3.0), X[:, 0], X[:, 1] + X[:, 2]])
    rho = cca(Xbad, Y)
    assert np.all(np.isfinite(rho)) and rho.shape == (4,)
    np.testing.assert_allclose(rho, cca(X, Y), atol=1e-7)
    for f in (mean_cca, mean_sq_cca, svcca, pwcca, linear_cka, debiased_cka, rbf_cka):
        assert f(Xbad, Xbad) == pytest.approx(1.0, abs=1e-7), f.__name__
    assert procrustes(Xbad, Xbad) == pytest.approx(0.0, abs=1e-7)
    # float32 duplicates too
    X32 = Xbad.astype(np.float32)
    assert mean_cca(X32, X32) == pytest.approx(1.0, abs=1e-6)


# ------------------------------------------------------------------ CKA family


def test_linear_cka_gram_and_feature_forms_agree_with_reference():
    X, Y = pair(60, 20, 30, seed=7)
    f, g = linear_cka(X, Y, form="feature"), linear_cka(X, Y, form="gram")
    assert f == pytest.approx(g, abs=1e-12)
    assert f == pytest.approx(ref_linear_cka(X, Y), abs=1e-12)
    assert linear_cka(X, Y) == pytest.approx(f, abs=1e-12)
    assert debiased_cka(X, Y, form="feature") == pytest.approx(debiased_cka(X, Y, form="gram"), abs=1e-10)


def test_cka_invariances_and_non_invariance():
    X, Y = pair(100, 8, 8, seed=8)
    base = linear_cka(X, Y)
    Q = ortho(8, 9)
    assert linear_cka(X @ Q * 7.5 + 4.0, Y) == pytest.approx(base, abs=1e-10)
    assert rbf_cka(X @ Q * 7.5 + 4.0, Y) == pytest.approx(rbf_cka(X, Y), abs=1e-10)
    assert debiased_cka(X @ Q * 0.01 - 3.0, Y) == pytest.approx(debiased_cka(X, Y), abs=1e-10)
    A = np.diag(np.linspace(0.1, 10, 8)) @ ortho(8, 10)
    assert abs(linear_cka(X @ A, Y) - base) > 1e-2  # not invariant to a general linear map
    assert mean_cca(X @ A, Y) == pytest.approx(mean_cca(X, Y), abs=1e-9)  # CCA is


def test_debiased_hsic_matches_explicit_u_statistic():
    from repsim.similarity.cka import _unbiased_hsic_gram, _unbiased_hsic_linear_terms

    r = np.random.default_rng(11)
    X, Y = r.standard_normal((8, 3)), r.standard_normal((8, 2)) + 1.0
    K, L = X @ X.T, Y @ Y.T
    got = _unbiased_hsic_gram(torch.from_numpy(K), torch.from_numpy(L))
    assert got == pytest.approx(ref_unbiased_hsic(K, L), rel=1e-10, abs=1e-12)
    # the feature form (on centred data) gives the same U-statistic
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    hxy, hxx, hyy = _unbiased_hsic_linear_terms(torch.from_numpy(Xc), torch.from_numpy(Yc), "feature")
    assert hxy == pytest.approx(ref_unbiased_hsic(K, L), rel=1e-9, abs=1e-12)
    assert hxx == pytest.approx(ref_unbiased_hsic(K, K), rel=1e-9)
    expect = ref_unbiased_hsic(K, L) / math.sqrt(ref_unbiased_hsic(K, K) * ref_unbiased_hsic(L, L))
    assert debiased_cka(X, Y) == pytest.approx(expect, rel=1e-9)


def test_rbf_cka_matches_direct_numpy():
    X, Y = pair(30, 4, 3, seed=12)
    for t in (1.0, 0.5):
        assert rbf_cka(X, Y, threshold=t) == pytest.approx(ref_rbf_cka(X, Y, t), abs=1e-10)


def test_debiased_near_zero_for_independent_data_biased_is_not():
    r = np.random.default_rng(13)
    X, Y = r.standard_normal((3000, 10)), r.standard_normal((3000, 10))
    assert abs(debiased_cka(X, Y)) < 0.01
    Xs, Ys = r.standard_normal((20, 10)), r.standard_normal((20, 10))
    assert linear_cka(Xs, Ys) > 0.2
    assert abs(debiased_cka(Xs, Ys)) < linear_cka(Xs, Ys) - 0.1


def test_minibatch_cka_one_batch_equals_debiased_and_many_converge():
    X, Y = pair(2000, 6, 5, seed=14, noise=2.0)
    assert MinibatchCKA().update(X[:50], Y[:50]).value() == pytest.approx(debiased_cka(X[:50], Y[:50]), abs=1e-12)
    target = debiased_cka(X, Y)
    acc = MinibatchCKA()
    for i in range(0, 2000, 100):
        acc.update(X[i:i + 100], Y[i:i + 100])
    assert acc.n_batches == 20 and acc.n_points == 2000
    assert acc.value() == pytest.approx(target, abs=0.02)
    # torch batches, and conv batches flattened
    t = MinibatchCKA(conv="flatten")
    t.update(torch.from_numpy(X[:64]).reshape(64, 6, 1, 1), torch.from_numpy(Y[:64]).reshape(64, 5, 1, 1))
    assert t.value() == pytest.approx(debiased_cka(X[:64], Y[:64]), abs=1e-12)


# ------------------------------------------------------------------ Procrustes


def test_procrustes_matches_scipy_orthogonal_procrustes_and_gram_route():
    X, Y = pair(50, 6, 6, seed=15)

    def ref(A, B):
        A = (A - A.mean(0)) / np.linalg.norm(A - A.mean(0))
        B = (B - B.mean(0)) / np.linalg.norm(B - B.mean(0))
        R, _ = scipy.linalg.orthogonal_procrustes(B, A)
        return np.linalg.norm(A - B @ R) ** 2

    assert procrustes(X, Y) == pytest.approx(ref(X, Y), abs=1e-10)
    assert procrustes(X @ ortho(6, 1) * 3 + 1, X) == pytest.approx(0.0, abs=1e-10)
    r = np.random.default_rng(16)
    Xw, Yw = r.standard_normal((10, 40)), r.standard_normal((10, 30))  # d > n: reduced route
    A = np.pad(Yw, ((0, 0), (0, 10)))
    assert procrustes(Xw, Yw) == pytest.approx(ref(Xw, A), abs=1e-9)


# ------------------------------------------------------------------ inputs, conv, dtypes


def test_as_matrix_layouts_and_types():
    a = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    f = as_matrix(a, conv="flatten")
    s = as_matrix(a, conv="spatial")
    assert isinstance(f, np.ndarray) and f.shape == (2, 12) and s.shape == (8, 3)
    np.testing.assert_array_equal(s[1], a[0, :, 0, 1])  # row = (input 0, h 0, w 1)
    np.testing.assert_array_equal(s[4], a[1, :, 0, 0])
    t = as_matrix(torch.from_numpy(a), conv="spatial")
    assert isinstance(t, torch.Tensor) and t.shape == (8, 3)
    m = np.ones((4, 2))
    assert as_matrix(m) is not None and as_matrix(m).shape == (4, 2)
    with pytest.raises(RepsimError, match="conv='flatten'.*conv='spatial'"):
        as_matrix(a)


def test_conv_keyword_on_measures():
    r = np.random.default_rng(17)
    A = r.standard_normal((20, 4, 3, 3))
    B = A + 0.1 * r.standard_normal(A.shape)
    assert mean_cca(A, B, conv="spatial") == pytest.approx(mean_cca(as_matrix(A, "spatial"), as_matrix(B, "spatial")))
    assert linear_cka(A, B, conv="flatten") == pytest.approx(linear_cka(A.reshape(20, -1), B.reshape(20, -1)))
    with pytest.raises(RepsimError, match="pass conv='flatten'"):
        linear_cka(A, B, name="conv1")


def test_torch_inputs_and_low_precision_agree_with_float64():
    X, Y = pair(3000, 40, 30, seed=18)
    X = X + 10.0  # a mean far from 0 stresses float32 centring
    ref = linear_cka(X, Y, precision="float64")
    assert ref == pytest.approx(ref_linear_cka(X, Y), abs=1e-12)
    for dt, tol in ((torch.float32, 1e-6), (torch.float16, 2e-3)):
        tx, ty = torch.from_numpy(X).to(dt), torch.from_numpy(Y).to(dt)
        assert linear_cka(tx, ty) == pytest.approx(ref, abs=tol)
        assert mean_cca(tx, ty) == pytest.approx(mean_cca(X, Y), abs=50 * tol)
    assert isinstance(linear_cka(torch.from_numpy(X), Y), float)
    assert isinstance(cca(torch.from_numpy(X), Y), np.ndarray)


def test_chunked_float32_products_across_chunk_boundary():
    from repsim.similarity import _common

    X, Y = pair(200, 5, 4, seed=19)
    old = _common.CHUNK
    try:
        _common.CHUNK = 64
        got = linear_cka(X.astype(np.float32), Y.astype(np.float32))
    finally:
        _common.CHUNK = old
    assert got == pytest.approx(ref_linear_cka(X, Y), abs=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_gpu_matches_cpu():  # pragma: no cover - runs only where a GPU exists
    X, Y = pair(500, 20, 10, seed=20)
    for f in (mean_cca, linear_cka, debiased_cka, procrustes):
        g = f(torch.from_numpy(X).cuda().float(), torch.from_numpy(Y).cuda().float())
        assert g == pytest.approx(f(X, Y), abs=1e-5)


# ------------------------------------------------------------------ compare()


def test_compare_tidy_dataframe_with_per_measure_conv():
    r = np.random.default_rng(21)
    a = {"conv1": r.standard_normal((30, 4, 3, 3)), "head": r.standard_normal((30, 5))}
    b = {k: v + 0.1 * r.standard_normal(v.shape) for k, v in a.items()}
    df = compare(a, b, measures=("cca", "cka", "procrustes"),
                 conv={"cca": "spatial", "cka": "flatten", "procrustes": "flatten"})
    assert isinstance(df, pd.DataFrame) and list(df.columns) == ["layer", "measure", "value", "conv"]
    assert len(df) == 6 and df["value"].map(type).eq(float).all()
    row = df[(df.layer == "conv1") & (df.measure == "cca")].iloc[0]
    assert row.conv == "spatial" and row.value == pytest.approx(mean_cca(a["conv1"], b["conv1"], conv="spatial"))
    assert df[df.layer == "head"].conv.isna().all()
    with pytest.raises(RepsimError, match="unknown measure 'foo'"):
        compare(a, b, measures=("foo",))
    with pytest.raises(RepsimError, match="not in acts_b"):
        compare(a, {"head": b["head"]}, measures=("cka",), conv="flatten")
    bad = dict(b, head=np.full((30, 5), np.nan))
    with pytest.raises(RepsimError, match="layer 'head'.*NaN"):
        compare(a, bad, measures=("cka",), conv="flatten")
    assert set(MEASURES) >= {"cca", "cka", "svcca", "pwcca", "rbf_cka", "debiased_cka", "procrustes"}


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("f", ALL_SCALAR + [procrustes, cca])
def test_nan_and_inf_rejected_with_layer_name(f):
    X, Y = pair(40, 3, 3)
    X[3, 1] = np.nan
    with pytest.raises(RepsimError, match="X of layer 'conv2' contains 1 NaN or inf"):
        f(X, Y, name="conv2")
    Y[0, 0] = np.inf
    with pytest.raises(RepsimError, match="Y contains 1 NaN or inf"):
        f(np.ones((40, 3)), Y)


@pytest.mark.parametrize("f", ALL_SCALAR + [procrustes, cca])
def test_mismatched_rows_rejected(f):
    with pytest.raises(RepsimError, match="has 40 rows .* but Y has 39"):
        f(np.random.rand(40, 3), np.random.rand(39, 3))


@pytest.mark.parametrize("f", [cca, mean_cca, mean_sq_cca, pwcca])
def test_cca_with_too_few_points_suggests_spatial_or_svcca(f):
    X, Y = np.random.rand(75, 100), np.random.rand(75, 5)
    with pytest.raises(RepsimError, match=r"n=75, d=100.*conv='spatial'.*svcca"):
        f(X, Y, name="conv1")


def test_svcca_works_when_n_below_d_but_not_when_components_fill_n():
    r = np.random.default_rng(22)
    low = r.standard_normal((60, 3)) @ r.standard_normal((3, 200))  # rank 3, d=200 > n
    Y = low + 0.01 * r.standard_normal((60, 200))
    assert 0.9 < svcca(low, Y, threshold=0.99) <= 1.0
    with pytest.raises(RepsimError, match="svcca kept .* lower the threshold"):
        svcca(r.standard_normal((20, 50)), r.standard_normal((20, 50)), threshold=1.0)
    with pytest.raises(RepsimError, match="threshold=1.5"):
        svcca(low, Y, threshold=1.5)


@pytest.mark.parametrize("f", [debiased_cka, lambda X, Y: MinibatchCKA().update(X, Y).value(),
                               lambda X, Y: rbf_cka(X, Y, debiased=True)])
def test_unbiased_estimator_needs_four_points(f):
    with pytest.raises(RepsimError, match="at least 4 data points.*n=3"):
        f(np.random.rand(3, 2), np.random.rand(3, 2))


def test_constant_inputs_raise_instead_of_nan():
    X, Y = np.ones((20, 3)), np.random.rand(20, 3)
    for f in ALL_SCALAR + [procrustes]:
        with pytest.raises(RepsimError, match="X .*(no variance|not > 0|median)"):
            f(X, Y)


def test_other_user_errors():
    X, Y = pair(30, 3, 3)
    with pytest.raises(RepsimError, match="conv='bogus' is not understood"):
        linear_cka(X, Y, conv="bogus")
    with pytest.raises(RepsimError, match="form='x'"):
        linear_cka(X, Y, form="x")
    with pytest.raises(RepsimError, match="side='z'"):
        pwcca(X, Y, side="z")
    with pytest.raises(RepsimError, match="1-D"):
        linear_cka(X[:, 0], Y)
    with pytest.raises(RepsimError, match="before any update"):
        MinibatchCKA().value()
    acc = MinibatchCKA().update(X, Y)
    with pytest.raises(RepsimError, match="same shape"):
        acc.update(X[:, :2], Y)
    with pytest.raises(RepsimError, match="precision='half'"):
        linear_cka(X, Y, precision="half")


# ------------------------------------------------------------------ property tests

shapes = st.tuples(st.integers(12, 40), st.integers(1, 5), st.integers(1, 5))


@settings(max_examples=25, deadline=None)
@given(shapes, st.floats(1e-3, 1e3), st.floats(-100, 100), st.integers(0, 2**31 - 1))
def test_property_invariances(shape, scale, shift, seed):
    n, d1, d2 = shape
    r = np.random.default_rng(seed)
    X = r.standard_normal((n, d1))
    Y = X[:, :1] @ r.standard_normal((1, d2)) + r.standard_normal((n, d2))
    Q = ortho(d1, seed % 1000)
    A = r.standard_normal((d1, d1)) + 3 * np.eye(d1)
    Xt = X @ Q * scale + shift
    for f in (linear_cka, debiased_cka, rbf_cka):
        assert f(Xt, Y) == pytest.approx(f(X, Y), abs=1e-7), f.__name__
    assert procrustes(Xt, Y) == pytest.approx(procrustes(X, Y), abs=1e-7)
    np.testing.assert_allclose(cca(X @ A * scale + shift, Y), cca(X, Y), atol=1e-6)
    for f in (mean_cca, mean_sq_cca, svcca, pwcca, linear_cka, rbf_cka):
        v = f(X, Y)
        assert 0.0 <= v <= 1.0
        assert f(X * scale + shift, X) == pytest.approx(1.0, abs=1e-7), f.__name__
    assert 0.0 <= procrustes(X, Y) <= 2.0
    assert procrustes(X * scale + shift, X) == pytest.approx(0.0, abs=1e-7)
    assert debiased_cka(X, X) == pytest.approx(1.0, abs=1e-9)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 30), st.integers(2, 30), st.integers(5, 40), st.integers(0, 2**31 - 1))
def test_property_cca_agrees_with_subspace_angles_and_forms_agree(d1, d2, extra, seed):
    n = max(d1, d2) + extra
    r = np.random.default_rng(seed)
    X = r.standard_normal((n, d1)) * r.uniform(0.1, 10, d1)
    Y = X[:, : min(d1, d2)] @ r.standard_normal((min(d1, d2), d2)) + r.standard_normal((n, d2))
    expect = np.sort(np.cos(scipy.linalg.subspace_angles(X - X.mean(0), Y - Y.mean(0))))[::-1]
    np.testing.assert_allclose(cca(X, Y), expect, atol=1e-7)
    assert linear_cka(X, Y, form="gram") == pytest.approx(linear_cka(X, Y, form="feature"), abs=1e-10)
    assert debiased_cka(X, Y, form="gram") == pytest.approx(debiased_cka(X, Y, form="feature"), abs=1e-9)


@pytest.mark.parametrize("scale", [1e-30, 1e20])
def test_float32_activations_of_extreme_scale_neither_underflow_nor_overflow(scale):
    """Scale invariance must hold in float32 too: activations of 1e-30 once underflowed to "no
    variance" (and debiased CKA to an HSIC of -2e-120), and of 1e20 overflowed."""
    r = np.random.default_rng(23)
    X = r.standard_normal((50, 3)).astype(np.float32)
    Y = (X @ r.standard_normal((3, 4)) + r.standard_normal((50, 4))).astype(np.float32)
    for measure in (linear_cka, debiased_cka, procrustes, mean_cca):
        unit = measure(X, Y)
        assert measure(X * np.float32(scale), Y * np.float32(scale)) == pytest.approx(unit, rel=1e-5, abs=1e-6), measure


@pytest.mark.parametrize("measure", [linear_cka, rbf_cka, procrustes])
def test_two_data_points_are_refused_not_scored_as_identical(measure):
    r = np.random.default_rng(0)
    X, Y = r.standard_normal((2, 5)), r.standard_normal((2, 5))
    with pytest.raises(RepsimError, match=r"needs at least 3 data points .*n=2"):
        measure(X, Y)
    measure(r.standard_normal((3, 5)), r.standard_normal((3, 5)))  # three are enough
