"""Paper table 3 as the cross analysis wrote it: the similarity of two models' body layers on
the same query points, averaged over layers and tasks, then summarised over pairs of models
(repsim.results made every number; this module reads and labels them). Pairs of one seed
start from the same weights, so they are kept apart from the paper's comparison across seeds."""

from __future__ import annotations

import pandas as pd

from repsim.report.loading import Result
from repsim.results import HEAD

SAME_SEED = "same (same initial weights)"


def seeds_text(same: bool) -> str:
    """How a table names a pair's seeds: "different", or :data:`SAME_SEED`."""
    return SAME_SEED if same else "different"


def body_mean(t, pair_col, pair, measure) -> float | None:
    """The mean over body layers of a pair's per-layer means: results written before the
    cross analysis kept its model pairs apart (cross_pairs.csv) are summarised this way."""
    sub = t[(t[pair_col] == pair) & (t["measure"] == measure) & (t["layer"] != HEAD)]
    return float(sub["mean"].mean()) if len(sub) else None


def cross_summary_of(res: Result) -> list[dict] | None:
    """Table 3's rows from cross_pairs.csv and cross_model_pairs.csv, in the order written
    (different seeds first, table 3's order): {"pair", "seeds", "models": [(a, b), ...],
    measure: (mean, std over model pairs)}. None for results written without them."""
    pairs, models = res.extras.get("pairs"), res.extras.get("model_pairs")
    if pairs is None or models is None:
        return None
    out = []
    for (pair, same), g in pairs.groupby(["pair", "same_seed"], sort=False):
        these = models[(models["pair"] == pair) & (models["same_seed"] == same)]
        row = {"pair": pair, "seeds": seeds_text(same),
               "models": sorted(set(zip(these["model_a"], these["model_b"])))}
        for r in g.itertuples():
            row[r.measure] = (r.mean, r.std)
        out.append(row)
    return out


def cross_layer_table(res: Result) -> pd.DataFrame:
    """cross.csv with each row's ``seeds`` named (:func:`seeds_text`); results written before
    the analysis kept seeds apart give their table as it is, all model pairs together."""
    t = res.table
    return t.assign(seeds=[seeds_text(s) for s in t["same_seed"]]) if "same_seed" in t else t
