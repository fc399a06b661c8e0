"""Input handling shared by every measure: conversion, conv layouts, validation, centering.

Every public measure accepts numpy arrays or torch tensors (CPU or GPU; float16/32/64; integer
and bool arrays are promoted to float64) and works internally on torch tensors on the input's
device. Reductions are done in float64 (see ``_products`` for the one place where float32
matrix products are used, and how their error is bounded).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from repsim.errors import RepsimError

CONV_CHOICES = ("flatten", "spatial")

# Rows per float32 matrix-product chunk: partial products are summed in float64, so the
# float32 accumulation length never exceeds this many terms whatever n is.
CHUNK = 8192


def input_label(what: str, name: str | None) -> str:
    return f"{what} of layer {name!r}" if name is not None else what


def _to_tensor(x: Any, what: str, name: str | None) -> torch.Tensor:
    """numpy array / torch tensor / nested list -> floating torch tensor (no copy when possible)."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:  # pragma: no cover - exotic inputs
            raise RepsimError(
                f"{input_label(what, name)} could not be read as an array ({exc}); pass a numpy array "
                "or a torch tensor"
            ) from None
        if arr.dtype == object or arr.dtype.kind in "USV":
            raise RepsimError(
                f"{input_label(what, name)} has dtype {arr.dtype}; pass a numeric numpy array or torch tensor"
            )
        if not arr.dtype.isnative:
            arr = arr.astype(arr.dtype.newbyteorder("="))
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.is_complex():
        raise RepsimError(f"{input_label(what, name)} is complex; pass real-valued activations")
    if not t.is_floating_point():
        t = t.to(torch.float64)
    elif t.dtype == torch.bfloat16:
        t = t.to(torch.float32)
    return t


def _reshape(t: torch.Tensor, conv: str | None, what: str, name: str | None) -> torch.Tensor:
    if conv is not None and conv not in CONV_CHOICES:
        raise RepsimError(f"conv={conv!r} is not understood; pass conv='flatten' or conv='spatial'")
    if t.ndim == 2:
        return t
    if t.ndim == 4:
        n, c, h, w = t.shape
        if conv is None:
            raise RepsimError(
                f"{input_label(what, name)} is 4-D (n, c, h, w) = {tuple(t.shape)}; pass conv='flatten' "
                "for (n, c*h*w) or conv='spatial' for spatial positions as data points (n*h*w, c)"
            )
        if conv == "flatten":
            return t.reshape(n, c * h * w)
        return t.permute(0, 2, 3, 1).reshape(n * h * w, c)  # one copy (channels last)
    if t.ndim == 1:
        raise RepsimError(
            f"{input_label(what, name)} is 1-D with shape {tuple(t.shape)}; pass an (n, d) matrix, "
            "e.g. x.reshape(-1, 1) for a single feature"
        )
    raise RepsimError(
        f"{input_label(what, name)} has shape {tuple(t.shape)}; pass an (n, d) matrix or (n, c, h, w) "
        "conv activations"
    )


def as_matrix(acts: Any, conv: str | None = None, *, name: str | None = None) -> Any:
    """Return activations as an (n, d) matrix, choosing the conv layout explicitly.

    ``acts`` is (n, d) -- returned unchanged -- or conv activations (n, c, h, w):

    * ``conv="flatten"``: each input is one data point, (n, c*h*w); the usual choice for CKA.
    * ``conv="spatial"``: each spatial position of each input is a data point, (n*h*w, c)
      (rows ordered input-major, then h, then w); the usual way to make CCA well posed for
      conv layers, where n is far smaller than c*h*w.

    A 4-D input with ``conv=None`` raises RepsimError. The result has the input's type
    (numpy in, numpy out; torch in, torch out, same device and dtype).
    """
    is_numpy = not isinstance(acts, torch.Tensor)
    t = _reshape(_to_tensor(acts, "activations", name), conv, "activations", name)
    return t.numpy() if is_numpy else t


def prepare(x: Any, conv: str | None, what: str, name: str | None) -> torch.Tensor:
    """Convert and reshape to (n, d); returns a floating tensor (may share the input's memory).

    NaN/inf are not searched for here (that would cost a pass over the data): the measures
    check their small float64 results with ``check_finite``, which NaN/inf always reach
    (a non-finite entry makes its column's mean, hence the whole centred column, non-finite),
    and only then locate the bad values to report them.
    """
    t = _reshape(_to_tensor(x, what, name), conv, what, name)
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise RepsimError(f"{input_label(what, name)} is empty (shape {tuple(t.shape)}); "
                          "pass at least one row and column")
    return t


def check_finite(result: torch.Tensor | float, x: torch.Tensor, y: torch.Tensor, name: str | None) -> None:
    """Raise RepsimError if ``result`` (computed from x and y) is not finite, naming the culprit."""
    ok = math.isfinite(result) if isinstance(result, float) else bool(torch.isfinite(result).all())
    if ok:
        return
    for t, what in ((x, "X"), (y, "Y")):
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            raise RepsimError(
                f"{input_label(what, name)} contains {bad} NaN or inf value(s); fix the activations "
                "(e.g. a diverged model or an overflow in float16) before comparing"
            )
    raise RepsimError(
        f"activations of {'layer ' + repr(name) if name is not None else 'X, Y'} overflow in the "
        "similarity computation; rescale them (e.g. divide by their standard deviation) first"
    )


def prepare_pair(X: Any, Y: Any, conv: str | None, name: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Prepare X and Y, put them on one device and check that they have the same rows."""
    x = prepare(X, conv, "X", name)
    y = prepare(Y, conv, "Y", name)
    if x.shape[0] != y.shape[0]:
        hint = " (with conv='spatial', X and Y must have the same n*h*w)" if conv == "spatial" else ""
        raise RepsimError(
            f"{input_label('X', name)} has {x.shape[0]} rows (data points) but Y has {y.shape[0]}{hint}; "
            "pass activations of the same data points, in the same order"
        )
    if x.device != y.device:
        y = y.to(x.device)
    return x, y


def low_precision(t: torch.Tensor, precision: str) -> bool:
    """Whether float32 matrix products may be used for this input (see ``_products``)."""
    if precision not in ("auto", "float64"):
        raise RepsimError(f"precision={precision!r} is not understood; pass 'auto' or 'float64'")
    return precision == "auto" and t.dtype in (torch.float16, torch.float32)


def center(t: torch.Tensor, lowp: bool, rescale: bool = True) -> torch.Tensor:
    """Subtract column means: float64 result, or float32 when ``lowp``. Never modifies ``t``.

    With ``rescale`` the result is also multiplied by the power of two that brings its largest
    entry into [0.5, 1): exact in floating point, so it changes no measure that is invariant
    to isotropic scaling (all of them, taken one batch at a time), but the products that
    follow can no longer underflow (activations of 1e-30 in float32) or overflow.
    """
    dtype = torch.float32 if lowp else torch.float64
    if t.dtype == dtype:
        out = t - t.mean(dim=0, keepdim=True)  # torch's float32 mean uses cascade summation
    else:
        out = t.to(dtype)  # a fresh copy: centre it in place
        out.sub_(out.mean(dim=0, keepdim=True))
    if rescale:
        peak = float(out.abs().max())
        if 0.0 < peak < math.inf:
            out.mul_(2.0 ** -math.frexp(peak)[1])
    return out


TWO_POINTS = "centred, two data points lie on one line, so any two layers would look identical"


def check_min_n(n: int, least: int, name: str | None, measure: str, why: str) -> None:
    """Refuse too few data points for ``measure``, saying why ``least`` are needed."""
    if n < least:
        raise RepsimError(f"{measure} needs at least {least} data points ({why}), but "
                          f"{input_label('X', name)} has n={n}; pass activations of more data points")


def mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` returned in float64; float32 inputs are multiplied in float32 in chunks of
    ``CHUNK`` along the contracted axis and the chunks summed in float64, so the float32
    rounding error does not grow with n (measured: 1e-8 on linear CKA at n=10,000, d=512)."""
    if a.dtype == torch.float64:
        return a @ b
    k = a.shape[-1]
    if k <= CHUNK:
        return (a @ b).to(torch.float64)
    step = -(-k // -(-k // CHUNK))  # equal chunks of at most CHUNK
    out = None
    for i in range(0, k, step):
        part = (a[..., i:i + step] @ b[..., i:i + step, :]).to(torch.float64)
        out = part if out is None else out + part
    return out


def no_variance(what: str, name: str | None, measure: str) -> RepsimError:
    return RepsimError(
        f"{input_label(what, name)} has no variance (every feature is constant over the data points), "
        f"so {measure} is undefined; check that the layer's activations are not all equal"
    )
