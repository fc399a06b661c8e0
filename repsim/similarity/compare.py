"""Many layers at once: a tidy DataFrame of similarities."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import pandas as pd

from repsim.errors import RepsimError

from .cca import mean_cca, mean_sq_cca, pwcca, svcca
from .cka import debiased_cka, linear_cka, rbf_cka
from .procrustes import procrustes

#: measure names accepted by ``compare``; "cca" is mean CCA and "cka" linear CKA.
MEASURES: dict[str, Callable[..., float]] = {
    "cca": mean_cca,
    "mean_cca": mean_cca,
    "mean_sq_cca": mean_sq_cca,
    "svcca": svcca,
    "pwcca": pwcca,
    "cka": linear_cka,
    "linear_cka": linear_cka,
    "rbf_cka": rbf_cka,
    "debiased_cka": debiased_cka,
    "procrustes": procrustes,
}


def compare(
    acts_a: Mapping[str, Any],
    acts_b: Mapping[str, Any],
    measures: Iterable[str] = ("cca", "cka"),
    conv: str | Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Compare activations layer by layer; one row per (layer, measure).

    ``acts_a`` and ``acts_b`` map layer names to activations of the same data points (e.g.
    before and after the inner loop); every layer of ``acts_a`` must be in ``acts_b``.
    ``measures`` are names from ``MEASURES`` ("cca" = mean CCA, "cka" = linear CKA).
    ``conv`` applies to 4-D layers: one of "flatten"/"spatial" for every measure, or a dict
    per measure, e.g. ``{"cca": "spatial", "cka": "flatten"}`` (the paper's convention);
    2-D layers ignore it.

    Returns a DataFrame with columns ``layer``, ``measure``, ``value`` (float) and ``conv``
    (the layout used: "flatten", "spatial", or None for 2-D layers), in input order.
    """
    measures = list(measures)
    for m in measures:
        if m not in MEASURES:
            raise RepsimError(f"unknown measure {m!r}; choose from {', '.join(MEASURES)}")
    missing = [k for k in acts_a if k not in acts_b]
    if missing:
        raise RepsimError(f"layer(s) {missing} are in acts_a but not in acts_b; pass the same layer names in both")
    rows = []
    for layer, a in acts_a.items():
        b = acts_b[layer]
        for m in measures:
            c = conv.get(m) if isinstance(conv, Mapping) else conv
            value = MEASURES[m](a, b, conv=c, name=layer)
            used = c if getattr(a, "ndim", 2) == 4 else None
            rows.append({"layer": layer, "measure": m, "value": float(value), "conv": used})
    return pd.DataFrame(rows, columns=["layer", "measure", "value", "conv"])
