"""Fitted heads and their diagnostics (repsim.heads) against closed forms and a peer library."""

import numpy as np
import pytest
import torch

from repsim.heads import fit_head, head_curvature, mean_cosine, prototype_predictions


def _data(n_per_class=4, ways=3, d=6, seed=0, spread=1.0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(ways, d))
    y = np.repeat(np.arange(ways), n_per_class)
    x = means[y] + spread * rng.normal(size=(len(y), d))
    return x, y


def test_the_fitted_head_is_scikit_learns_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    x, y = _data(n_per_class=5, spread=2.0)  # not separable: a finite optimum without the penalty too
    l2 = 0.05
    w, b = fit_head(x, y, 3, l2=l2)
    peer = LogisticRegression(C=1 / (len(y) * l2), tol=1e-12, max_iter=100000).fit(x, y)
    probe = np.random.default_rng(1).normal(size=(20, 6)) * 3
    ours = torch.softmax(torch.tensor(probe @ w.T + b), 1).numpy()
    np.testing.assert_allclose(ours, peer.predict_proba(probe), atol=1e-6)
    np.testing.assert_allclose(w, peer.coef_, atol=1e-5)


def test_the_fitted_head_meets_its_optimality_condition_about_any_centre():
    # the gradient vanishes: W = W_c - (P - Y)^T X / (n l2), and sum_i (p_i - y_i) = 0
    x, y = _data(n_per_class=1, ways=5, d=8, seed=3)  # 1-shot: separable, as in the freezing test
    centre = np.random.default_rng(2).normal(size=(5, 8))
    for c in (None, centre):
        w, b = fit_head(x, y, 5, centre=c, l2=1e-2)
        p = torch.softmax(torch.tensor(x @ w.T + b), 1).numpy()
        residual = p - np.eye(5)[y]
        expected = (np.zeros((5, 8)) if c is None else c) - residual.T @ x / (len(y) * 1e-2)
        np.testing.assert_allclose(w, expected, atol=1e-6)
        np.testing.assert_allclose(residual.sum(0), 0, atol=1e-8)
        assert (p.argmax(1) == y).all()  # the support set is fitted


def test_a_strong_penalty_keeps_the_head_at_its_centre():
    x, y = _data()
    centre = np.random.default_rng(5).normal(size=(3, 6))
    w, _ = fit_head(x, y, 3, centre=centre, l2=1e6)
    np.testing.assert_allclose(w, centre, atol=1e-5)


@pytest.mark.parametrize("shots", [1, 2])  # fewer points than head parameters, and more
def test_head_curvature_is_the_largest_eigenvalue_of_the_exact_hessian(shots):
    x, y = _data(n_per_class=shots, ways=4, d=5, seed=7)
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(4, 5)), rng.normal(size=4)
    scale = 0.5

    def loss(theta):
        W, B = theta[:20].reshape(4, 5), theta[20:]
        return scale * torch.nn.functional.cross_entropy(torch.tensor(x) @ W.T + B, torch.tensor(y),
                                                         reduction="sum")
    theta = torch.tensor(np.concatenate([w.ravel(), b]))
    exact = torch.linalg.eigvalsh(torch.func.hessian(loss)(theta))[-1].item()
    assert head_curvature(x, w, b, scale=scale) == pytest.approx(exact, rel=1e-6)
    # it scales with the loss, and with the features' square
    assert head_curvature(x, w, b, scale=2 * scale) == pytest.approx(2 * exact, rel=1e-6)


def test_gradient_descent_on_the_head_diverges_past_two_over_the_curvature():
    # the stability bound the diagnostic is compared with: near the minimum of a
    # strongly convex head loss, steps above 2 / lambda_max grow, steps below shrink
    x, y = _data(n_per_class=4, spread=3.0, seed=4)
    w, b = fit_head(x, y, 3, l2=1e-1)
    lam = head_curvature(x, w, b, scale=1 / len(y)) + 1e-1  # the mean loss's, plus the penalty's

    def distance_after(lr, steps=200):
        W = torch.tensor(w + 1e-3, requires_grad=True)
        B = torch.tensor(b.copy(), requires_grad=True)
        for _ in range(steps):
            f = torch.nn.functional.cross_entropy(torch.tensor(x) @ W.T + B, torch.tensor(y)) \
                + 0.05 * ((W) ** 2).sum()
            gw, gb = torch.autograd.grad(f, (W, B))
            W, B = (W - lr * gw).detach().requires_grad_(), (B - lr * gb).detach().requires_grad_()
        return float(np.abs(W.detach().numpy() - w).max())
    assert distance_after(1.8 / lam) < 1e-3 < distance_after(2.3 / lam)


def test_mean_cosine_closed_forms_and_invariances():
    v = np.random.default_rng(0).normal(size=7)
    assert mean_cosine(np.outer([1, 2, 0.5], v)) == pytest.approx(1.0)   # collinear
    assert mean_cosine(np.eye(4)) == pytest.approx(0.0)                   # orthogonal
    assert mean_cosine(np.array([[1.0, 0], [-1, 0]])) == pytest.approx(-1.0)
    x = np.random.default_rng(1).normal(size=(6, 5))
    q, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(5, 5)))
    scales = np.arange(1, 7)[:, None]
    assert mean_cosine(x @ q * scales) == pytest.approx(mean_cosine(x))  # rotation, per-row scale


def test_prototypes_with_one_shot_are_the_nearest_support_point_by_cosine():
    rng = np.random.default_rng(0)
    support, query = rng.normal(size=(5, 9)), rng.normal(size=(30, 9))
    cos = (query / np.linalg.norm(query, axis=1, keepdims=True)) @ \
          (support / np.linalg.norm(support, axis=1, keepdims=True)).T
    labels = np.array([3, 0, 4, 1, 2])
    assert (prototype_predictions(support, labels, query, 5) == labels[cos.argmax(1)]).all()
    # several shots: the class mean, unaffected by the query's scale
    x, y = _data(n_per_class=3)
    q = np.random.default_rng(3).normal(size=(10, 6))
    assert (prototype_predictions(x, y, q, 3) == prototype_predictions(x, y, 5 * q, 3)).all()
