"""Heads fitted to features: what a linear classifier can do with a representation, apart from
what a few SGD steps of the inner loop do.

The paper's freezing test adapts the head with the checkpoint's own inner loop (a few steps of
a fixed size). When accuracy falls with the body frozen, either the frozen features cannot
separate the classes, or those steps failed to fit a head that could. These short functions
on arrays (float64 numpy) tell the two apart:

- :func:`fit_head`: multinomial logistic regression fitted to convergence;
- :func:`prototype_predictions`: the cosine-prototype classifier (no head to fit at all);
- :func:`head_curvature`: the largest eigenvalue of the head's support-loss Hessian, which
  decides whether gradient descent with step ``lr`` is stable (``lr < 2 / lambda_max``);
- :func:`mean_cosine`: how collinear a set of features is.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse.linalg import LinearOperator, eigsh
from scipy.special import log_softmax, softmax

L2 = 1e-3  # the fitted head's penalty: small, so the fit is the data's, yet strictly convex


def _augmented(features: np.ndarray) -> np.ndarray:
    """[f, 1]: the bias as one more input."""
    return np.hstack([features, np.ones((len(features), 1))])


def fit_head(features, labels, ways: int, *, centre=None, l2: float = L2,
             tol: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:
    """The head (W, b) minimising the mean cross-entropy plus an L2 penalty about ``centre``:

        L(W, b) = 1/n sum_i -log softmax(W f_i + b)_{y_i}  +  l2/2 ||W - W_c||_F^2

    (W_c = 0 by default; the bias is not penalised, as in scikit-learn). Strictly convex in W,
    so it has one minimum: what scikit-learn's LogisticRegression(C = 1 / (n * l2)) fits
    (tested), found here by Newton's method to a gradient norm below ``tol``.

    At the minimum W - W_c = -(P - Y)^T F / (n l2) lies in the span of the n support features,
    so with fewer points than dimensions the problem is solved in that span (an orthonormal
    basis V of it: W = W_c + Z V^T), exactly, with n instead of d coordinates per class.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    n, d = x.shape
    centre = np.zeros((ways, d)) if centre is None else np.asarray(centre, dtype=np.float64)
    basis = np.linalg.svd(x, full_matrices=False)[2].T if n < d else np.eye(d)  # (d, r)
    g = _augmented(x @ basis)                     # coordinates in the span, and 1 for the bias
    offset = x @ centre.T                         # the centre's logits
    onehot = np.eye(ways)[y]
    r = basis.shape[1]
    penalty = np.concatenate([np.full(r, l2), [0.0]])  # on Z, not on the bias

    def loss(theta):
        logits = offset + g @ theta.T
        return -(onehot * log_softmax(logits, axis=1)).sum() / n + 0.5 * (penalty * theta ** 2).sum()

    theta = np.zeros((ways, r + 1))
    for _ in range(100):  # Newton's method with a backtracking line search
        p = softmax(offset + g @ theta.T, axis=1)
        grad = (p - onehot).T @ g / n + penalty * theta
        if np.abs(grad).max() < tol:
            break
        a = p[:, :, None] * (np.eye(ways)[None] - p[:, None, :])           # diag(p_i) - p_i p_i^T
        # sum_i A_i (x) g_i g_i^T as one matrix product over the points
        outer = (g[:, :, None] * g[:, None, :]).reshape(n, -1)
        hess = (a.reshape(n, -1).T @ outer).reshape(ways, ways, r + 1, r + 1)
        hess = hess.transpose(0, 2, 1, 3).reshape(grad.size, grad.size) / n
        # the bias shared by all classes changes nothing: a tiny ridge keeps the solve regular
        hess += np.diag(np.tile(penalty, ways) + 1e-12)
        step = np.linalg.solve(hess, grad.ravel()).reshape(theta.shape)
        size, before, slope = 1.0, loss(theta), (grad * step).sum()
        while loss(theta - size * step) > before - 1e-4 * size * slope and size > 1e-10:
            size /= 2
        theta = theta - size * step
    return centre + theta[:, :r] @ basis.T, theta[:, r]


def prototype_predictions(support, support_labels, query, ways: int) -> np.ndarray:
    """Each query's class by cosine similarity to the class prototypes (mean support feature
    of each class): argmax_c cos(f_q, p_c), p_c = mean_{i: y_i = c} f_i. With one shot the
    prototype is the support point, and this is NIL's nearest neighbour by cosine."""
    s = np.asarray(support, dtype=np.float64)
    protos = np.stack([s[np.asarray(support_labels) == c].mean(0) for c in range(ways)])
    q = np.asarray(query, dtype=np.float64)
    cos = _unit(q) @ _unit(protos).T
    return cos.argmax(1)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def head_curvature(features, weight, bias, *, scale: float) -> float:
    """The largest eigenvalue of the Hessian, in the head's parameters (W, b), of the support
    loss ``scale * sum_i CE(W f_i + b, y_i)`` at (``weight``, ``bias``):

        H = scale * sum_i (diag(p_i) - p_i p_i^T) (x) [f_i, 1][f_i, 1]^T,   p_i = softmax(W f_i + b)

    (independent of the labels). Gradient descent with step lr is stable about that point only
    if lr < 2 / lambda_max. ``scale`` is the inner loss's: 1/K for Finn et al.'s summed loss
    over K shots, 1/n for a mean.
    """
    xa = _augmented(np.asarray(features, dtype=np.float64))
    w = np.hstack([np.asarray(weight, dtype=np.float64), np.asarray(bias, dtype=np.float64)[:, None]])
    p = softmax(xa @ w.T, axis=1)
    n, ways, width = len(xa), *w.shape
    if n * ways <= ways * width:
        # H = J^T D J, with J the map from (W, b) to the n points' logits (J J^T = X X^T (x) I)
        # and D = scale * blockdiag(A_i): its non-zero eigenvalues are those of the smaller
        # D^1/2 J J^T D^1/2 (few-shot support sets are smaller than the head)
        roots = []
        for pi in p:
            vals, vecs = np.linalg.eigh(np.diag(pi) - np.outer(pi, pi))
            roots.append(vecs * np.sqrt(np.clip(vals, 0, None)) @ vecs.T)
        root = np.sqrt(scale) * _block_diagonal(roots)
        return float(np.linalg.eigvalsh(root @ np.kron(xa @ xa.T, np.eye(ways)) @ root)[-1])

    def hvp(v):
        v = np.asarray(v).reshape(ways, width)
        u = xa @ v.T                                   # (n, ways): V x_i
        a = p * u - p * (p * u).sum(1, keepdims=True)  # (diag(p_i) - p_i p_i^T) V x_i
        return (scale * a.T @ xa).ravel()

    op = LinearOperator((ways * width, ways * width), matvec=hvp, dtype=np.float64)
    # a random start: the all-ones direction (every logit moved alike) is in H's null space
    v0 = np.random.default_rng(0).normal(size=ways * width)
    return float(eigsh(op, k=1, which="LA", tol=1e-10, return_eigenvectors=False, v0=v0)[0])


def _block_diagonal(blocks: list[np.ndarray]) -> np.ndarray:
    size = sum(len(b) for b in blocks)
    out = np.zeros((size, size))
    at = 0
    for b in blocks:
        out[at:at + len(b), at:at + len(b)] = b
        at += len(b)
    return out


def mean_cosine(features) -> float:
    """The mean cosine similarity over all pairs i < j of the rows of ``features``:
    1 when they are collinear (one direction holds them all), 0 when orthogonal on average."""
    u = _unit(np.asarray(features, dtype=np.float64))
    n = len(u)
    if n < 2:
        return float("nan")
    gram = u @ u.T
    return float((gram.sum() - np.trace(gram)) / (n * (n - 1)))
