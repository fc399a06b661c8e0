"""Benchmark for repsim.similarity (a benchmark, not a test: nothing here asserts a timing).

Cases, each timed against a reference, on the chosen device:
  (a) linear CKA, X, Y (10,000 x 512) float32, vs the single product X^T Y of the same shape
      (its floor: linear CKA needs X^T Y, X^T X and Y^T Y); also its error vs float64.
  (b) CCA on a conv-layer probe (15,000 x 64) float32, vs a plain float64 numpy QR route.
  (c) before-vs-after similarity for 600 tasks x 5 layers of an Omniglot conv4 (75 query
      points; conv1 (75,64,14,14), conv2 (75,64,7,7), conv3 (75,64,4,4), conv4 (75,64,2,2),
      head (75,5)): mean CCA with spatial positions as data points + linear CKA flattened,
  (d) vs the same computed the plain way (straightforward float64 numpy, written below).
  (e) SVCCA of a flattened conv layer, n=75 < d=8192 (d=2048 with --quick), float32, vs the
      d x d covariance route it used before reducing to the n-dimensional row space (timed once).

    repsim bench similarity [--quick] [--device cpu|cuda]

Without --device it runs on the CPU and, when one is available, on the GPU, and prints one
table. ``run(device, quick)`` returns the table for one device as a DataFrame.
"""

from __future__ import annotations

import argparse
import functools
import time
from typing import Callable

import numpy as np
import pandas as pd
import torch

from repsim import threads
from repsim.similarity import linear_cka, mean_cca, svcca

LAYERS = {
    "conv1": (75, 64, 14, 14),
    "conv2": (75, 64, 7, 7),
    "conv3": (75, 64, 4, 4),
    "conv4": (75, 64, 2, 2),
    "head": (75, 5),
}


# ------------------------------------------------------------------ the plain way (reference)


def plain_mean_cca(X: np.ndarray, Y: np.ndarray) -> float:
    """Textbook CCA in float64 numpy: QR of each centred matrix, SVD of Qx^T Qy."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    Qx, _ = np.linalg.qr(X - X.mean(0))
    Qy, _ = np.linalg.qr(Y - Y.mean(0))
    return float(np.clip(np.linalg.svd(Qx.T @ Qy, compute_uv=False), 0, 1).mean())


def plain_linear_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Kornblith et al.'s notebook route in float64: centred Gram matrices, <K, L>/(|K||L|)."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    K, L = X @ X.T, Y @ Y.T
    n = K.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    K, L = H @ K @ H, H @ L @ H
    return float(np.sum(K * L) / np.sqrt(np.sum(K * K) * np.sum(L * L)))


def plain_svcca(X: np.ndarray, Y: np.ndarray, threshold: float = 0.99) -> float:
    """The d x d covariance route in float64 numpy: eigh of Xc^T Xc, the top k components
    holding ``threshold`` of the variance, then mean CCA of their scores. O(d^3)."""
    def top(A):
        Ac = np.asarray(A, dtype=np.float64)
        Ac = Ac - Ac.mean(0)
        e, V = np.linalg.eigh(Ac.T @ Ac)
        e, V = e[::-1], V[:, ::-1]
        k = int(np.searchsorted(np.cumsum(e) / e.sum(), threshold) + 1)
        return Ac @ V[:, :k]

    return plain_mean_cca(top(X), top(Y))


def wide_layer_pair(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A correlated float32 (n, d) pair with a decaying spectrum, like a flattened conv layer."""
    r = np.random.default_rng(seed)
    lat = r.standard_normal((n, 30)) * np.logspace(0, -2, 30)
    lat_y = lat + 0.3 * r.standard_normal((n, 30)) * lat.std(0)
    X = lat @ r.standard_normal((30, d)) + 1e-3 * r.standard_normal((n, d))
    Y = lat_y @ r.standard_normal((30, d)) + 1e-3 * r.standard_normal((n, d))
    return X.astype(np.float32), Y.astype(np.float32)


@functools.lru_cache(maxsize=None)
def _plain_svcca_once(n: int, d: int) -> tuple[float, float]:
    """(value, ms) of one plain_svcca run (minutes at d=8192: once per process, on the CPU)."""
    X, Y = wide_layer_pair(n, d)
    t = time.perf_counter()
    v = plain_svcca(X, Y)
    return v, (time.perf_counter() - t) * 1e3


def spatial(a: np.ndarray) -> np.ndarray:
    return a.transpose(0, 2, 3, 1).reshape(-1, a.shape[1]) if a.ndim == 4 else a


def flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(a.shape[0], -1)


# ------------------------------------------------------------------ timing helpers


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _best_ms(fn: Callable[[], object], repeats: int, device: str) -> float:
    fn()  # warm-up
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def _tasks(n_distinct: int, seed: int = 0) -> list[tuple[dict, dict]]:
    """Correlated before/after activations (after = before + small noise, ReLU'd for convs)."""
    r = np.random.default_rng(seed)
    out = []
    for _ in range(n_distinct):
        before, after = {}, {}
        for name, shape in LAYERS.items():
            pre = r.standard_normal(shape, dtype=np.float32)
            post = pre + np.float32(0.3) * r.standard_normal(shape, dtype=np.float32)
            if len(shape) == 4:
                pre, post = np.maximum(pre, 0), np.maximum(post, 0)
            else:
                post = pre + np.float32(1.5) * r.standard_normal(shape, dtype=np.float32)
            before[name], after[name] = pre, post
        out.append((before, after))
    return out


# ------------------------------------------------------------------ the benchmark


def run(device: str = "cpu", quick: bool = False) -> pd.DataFrame:
    """Time the cases on ``device`` ("cpu", "cuda", "cuda:0", ...); one row per case."""
    rows = []
    reps = 2 if quick else 7
    g = torch.Generator().manual_seed(0)

    # (a) linear CKA at n=10,000, d=512 vs the floor X^T Y
    n, d = 10_000, 512
    X = torch.randn(n, d, generator=g)
    Y = (X @ torch.randn(d, d, generator=g) / d**0.5 + torch.randn(n, d, generator=g)).float()
    X = torch.relu(X) + 1.0  # a non-zero mean, as after a ReLU
    ref = linear_cka(X.double(), Y.double(), precision="float64")
    Xd, Yd = X.to(device), Y.to(device)
    floor = _best_ms(lambda: Xd.T @ Yd, reps, device)
    t_cka = _best_ms(lambda: linear_cka(Xd, Yd), reps, device)
    err32 = abs(linear_cka(Xd, Yd) - ref)
    Xc, Yc = Xd - Xd.mean(0), Yd - Yd.mean(0)  # naive: everything in float32, no chunking
    naive32 = float((Yc.T @ Xc).pow(2).sum() / ((Xc.T @ Xc).norm() * (Yc.T @ Yc).norm()))
    rows.append(dict(case="(a) linear CKA 10000x512 f32", repsim_ms=t_cka, reference="X^T Y floor",
                     reference_ms=floor, abs_err_vs_f64=err32,
                     note=f"naive all-f32 err {abs(naive32 - ref):.1e}"))
    X64, Y64 = Xd.double(), Yd.double()
    t64 = _best_ms(lambda: linear_cka(X64, Y64), reps, device)
    floor64 = _best_ms(lambda: X64.T @ Y64, reps, device)
    rows.append(dict(case="(a) linear CKA 10000x512 f64", repsim_ms=t64, reference="X^T Y floor (f64)",
                     reference_ms=floor64, abs_err_vs_f64=abs(linear_cka(X64, Y64) - ref), note=""))

    # (b) CCA on a conv-layer probe (15,000 x 64)
    P = torch.randn(15_000, 64, generator=g)
    Q = torch.relu(P + 0.5 * torch.randn(15_000, 64, generator=g))
    P = torch.relu(P)
    Pd, Qd = P.to(device), Q.to(device)
    Pn, Qn = P.numpy(), Q.numpy()
    t_cca = _best_ms(lambda: mean_cca(Pd, Qd), reps * 2, device)
    t_plain = _best_ms(lambda: plain_mean_cca(Pn, Qn), reps * 2, "cpu")
    rows.append(dict(case="(b) mean CCA 15000x64 f32", repsim_ms=t_cca, reference="plain f64 numpy QR",
                     reference_ms=t_plain, abs_err_vs_f64=abs(mean_cca(Pd, Qd) - plain_mean_cca(Pn, Qn)), note=""))

    # (c) / (d) before-vs-after, 600 tasks x 5 layers
    n_tasks = 10 if quick else 600
    pool = _tasks(3 if quick else 10)
    pool_dev = [({k: torch.from_numpy(v).to(device) for k, v in b.items()},
                 {k: torch.from_numpy(v).to(device) for k, v in a.items()}) for b, a in pool]

    def repsim_all():
        out = []
        for i in range(n_tasks):
            b, a = pool_dev[i % len(pool_dev)]
            for name in LAYERS:
                out.append(mean_cca(b[name], a[name], conv="spatial", name=name))
                out.append(linear_cka(b[name], a[name], conv="flatten", name=name))
        return out

    def plain_all():
        out = []
        for i in range(n_tasks):
            b, a = pool[i % len(pool)]
            for name in LAYERS:
                out.append(plain_mean_cca(spatial(b[name]), spatial(a[name])))
                out.append(plain_linear_cka(flat(b[name]), flat(a[name])))
        return out

    _sync(device)
    t = time.perf_counter()
    got = repsim_all()
    _sync(device)
    t_rep = (time.perf_counter() - t) * 1e3
    t = time.perf_counter()
    want = plain_all()
    t_pl = (time.perf_counter() - t) * 1e3
    rows.append(dict(case=f"(c) {n_tasks} tasks x 5 layers, CCA spatial + CKA flat",
                     repsim_ms=t_rep, reference="(d) plain f64 numpy", reference_ms=t_pl,
                     abs_err_vs_f64=float(np.max(np.abs(np.array(got) - np.array(want)))),
                     note=f"{t_rep / 1e3:.1f} s total; per task {t_rep / n_tasks:.1f} ms"))

    # (e) SVCCA with n < d: row-space route vs the d x d covariance route
    n, d = 75, (2048 if quick else 8192)
    Xw, Yw = (torch.from_numpy(a).to(device) for a in wide_layer_pair(n, d))
    t_sv = _best_ms(lambda: svcca(Xw, Yw), reps, device)
    old, t_old = _plain_svcca_once(n, d)
    rows.append(dict(case=f"(e) SVCCA {n}x{d} f32 (n < d)", repsim_ms=t_sv, reference="d x d covariance route (old)",
                     reference_ms=t_old, abs_err_vs_f64=abs(svcca(Xw, Yw) - old),
                     note=f"old route / new route = {t_old / t_sv:.0f}x"))

    df = pd.DataFrame(rows)
    df.insert(1, "device", device)
    df["ratio"] = df["repsim_ms"] / df["reference_ms"]
    return df[["case", "device", "repsim_ms", "reference", "reference_ms", "ratio", "abs_err_vs_f64", "note"]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None, help="cpu or cuda (default: cpu, plus cuda when available)")
    p.add_argument("--quick", action="store_true", help="fewer tasks and repeats (a few seconds)")
    args = p.parse_args(argv)
    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    df = pd.concat([run(dev, quick=args.quick) for dev in devices], ignore_index=True)
    with pd.option_context("display.width", 200, "display.max_colwidth", 60,
                           "display.float_format", lambda v: f"{v:.4g}"):
        print(f"torch {torch.__version__}, {threads.describe()}"
              + (f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"))
        print(df.to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
