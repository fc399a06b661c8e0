"""Paper table 3's unit: the similarity of two models' body layers on the same query points,
averaged over layers and tasks, then summarised over pairs of models. Pairs of one seed start
from the same weights, so they are kept apart from the paper's comparison across seeds."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from repsim.errors import RepsimError
from repsim.report.loading import Result
from repsim.report.text import HEAD
from repsim.results import summarise


def body_mean(t, pair_col, pair, measure) -> float | None:
    sub = t[(t[pair_col] == pair) & (t["measure"] == measure) & (t["layer"] != HEAD)]
    return float(sub["mean"].mean()) if len(sub) else None


# How repsim.study.Model labels a checkpoint in the cross-model tables.
_MODEL_LABEL = re.compile(r"^(?P<algorithm>.+)-s(?P<seed>-?\d+)-it(?P<iteration>\d+)$")


CROSS_PAIRS = ("MAML-MAML", "ANIL-ANIL", "ANIL-MAML")  # table 3's order
SAME_SEED = "same (same initial weights)"


def tag_seeds(tasks: pd.DataFrame) -> pd.DataFrame:
    """``cross_tasks.csv`` with a ``seeds`` column: "different", or :data:`SAME_SEED` where both
    models were trained from one seed. Training seeds the initialisation, so ANIL and MAML of
    one seed start from the same weights (and one algorithm twice is one run); the paper's
    table 3 compares models across seeds."""
    if {"seed_a", "seed_b"} <= set(tasks.columns):
        same = (tasks["seed_a"].astype(float) == tasks["seed_b"].astype(float)).tolist()
        _refuse_shared_labels(tasks)
        return tasks.assign(seeds=np.where(same, SAME_SEED, "different"))
    seeds = {}  # results written before the seed columns: read from the labels
    for label in set(tasks["model_a"]) | set(tasks["model_b"]):
        match = _MODEL_LABEL.match(str(label))
        if match is None:
            raise RepsimError(f"cannot read the seed of model {label!r} in a cross-model table: models are "
                              f"labelled ALGORITHM-sSEED-itITERATION; re-run 'repsim analyze cross' to rewrite it")
        seeds[label] = int(match["seed"])
    _refuse_shared_labels(tasks)
    same = [seeds[a] == seeds[b] for a, b in zip(tasks["model_a"], tasks["model_b"])]
    return tasks.assign(seeds=np.where(same, SAME_SEED, "different"))


def _refuse_shared_labels(tasks: pd.DataFrame) -> None:
    clash = tasks.duplicated(["model_a", "model_b", "layer", "measure", "task"])
    if clash.any():
        a, b = tasks.loc[clash, ["model_a", "model_b"]].iloc[0]
        raise RepsimError(f"two checkpoints in one cross-model table share the label of {a} or {b}: "
                          f"re-run 'repsim analyze cross', which now labels every checkpoint apart")


def cross_pairs(tasks: pd.DataFrame) -> pd.DataFrame:
    """Paper table 3's unit: one row per pair of models and measure, the similarity averaged
    over tasks t and body layers l (NaN values, from degenerate activations, are skipped),

        s(a, b) = mean_{t, l} sim(h_l^a(x_t), h_l^b(x_t)),

    with :func:`tag_seeds`' ``seeds``. ``tasks`` is ``cross_tasks.csv``."""
    body = tag_seeds(tasks)
    body = body[body["layer"] != HEAD]
    keys = ["pair", "seeds", "model_a", "model_b", "measure"]
    return body.groupby(keys, sort=False)["value"].mean().reset_index()


def _pair_order(pair: str, seeds: str):
    return (seeds != "different", CROSS_PAIRS.index(pair) if pair in CROSS_PAIRS else len(CROSS_PAIRS), pair)


def cross_summary(tasks: pd.DataFrame) -> list[dict]:
    """Per pair of algorithms and ``seeds``, the mean and sample std over model pairs of
    :func:`cross_pairs`' similarity, per measure m present:

        row[m] = (mean_{(a, b)} s(a, b), std_{(a, b)} s(a, b))

    Different seeds first, in table 3's order. Pairs share models, so the std is a spread
    over pairs, not a standard error."""
    pairs = cross_pairs(tasks)
    out = []
    for (pair, seeds), g in pairs.groupby(["pair", "seeds"], sort=False):
        row = {"pair": pair, "seeds": seeds, "models": sorted(set(zip(g["model_a"], g["model_b"])))}
        for m, v in g.groupby("measure", sort=False)["value"]:
            row[m] = (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan"))
        out.append(row)
    return sorted(out, key=lambda r: _pair_order(r["pair"], r["seeds"]))


def _model_pair_rows(res: Result) -> pd.DataFrame | None:
    """A cross result's per-task rows, or None for results written without them."""
    tt = res.tasks_table
    return tt if tt is not None and {"model_a", "model_b", "pair"} <= set(tt.columns) else None


def cross_summary_of(res: Result) -> list[dict] | None:
    """:func:`cross_summary` of a cross result, or None for results written without per-task rows."""
    tt = _model_pair_rows(res)
    return None if tt is None else cross_summary(tt)


def cross_layer_table(res: Result) -> pd.DataFrame:
    """Per pair of algorithms, :func:`tag_seeds`' ``seeds``, layer and measure: mean and 95% CI
    over tasks, in :func:`cross_summary`'s order. Results written without per-task rows give
    their own table, all model pairs together."""
    tt = _model_pair_rows(res)
    if tt is None:
        return res.table
    layers = summarise(tag_seeds(tt), by=("pair", "seeds", "layer", "measure"))
    rank = [_pair_order(pair, seeds) for pair, seeds in zip(layers["pair"], layers["seeds"])]
    return layers.iloc[sorted(range(len(layers)), key=rank.__getitem__)]
