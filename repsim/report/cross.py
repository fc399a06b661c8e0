"""Paper table 3 as the cross analysis wrote it: the similarity of two models' body layers on
the same query points, averaged over layers and tasks, then summarised over pairs of models
(repsim.results made every number; this module reads and labels them). Pairs of one seed
start from the same weights, so they are kept apart from the paper's comparison across seeds."""

from __future__ import annotations

import pandas as pd

from repsim.report.loading import Result

SAME_SEED = "same (same initial weights)"


def seeds_text(same: bool) -> str:
    """How a table names a pair's seeds: "different", or :data:`SAME_SEED`."""
    return SAME_SEED if same else "different"


def cross_summary_of(res: Result) -> list[dict]:
    """Table 3's rows from cross_pairs.csv and cross_model_pairs.csv, in the order written
    (different seeds first, table 3's order): {"pair", "seeds", "models": [(a, b), ...],
    measure: (mean, std over model pairs)}."""
    pairs, models = res.extras["pairs"], res.extras["model_pairs"]
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
    """cross.csv with each row's ``seeds`` named (:func:`seeds_text`)."""
    return res.table.assign(seeds=[seeds_text(s) for s in res.table["same_seed"]])
