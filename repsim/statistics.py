"""The statistics every summary is made of: means over tasks with Student-t intervals, paired
changes, means over seeds, table 3's summaries over model pairs and the freezing decomposition's
costs. Pure functions on arrays and DataFrames: no files (results.py writes them), no torch.

Every checkpoint of an analysis is scored on the same tasks, so a change between two conditions
is judged by the interval of its per-task differences (paired), and seeds are averaged per task
before an interval is taken over tasks.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.special import stdtrit  # Student t quantile: scipy.stats.t.ppf, without scipy.stats' 1 s import

from repsim.names import HEAD  # the head's layer name; the other layers are the body


def ci95(values) -> float:
    """Half-width of the 95% Student-t interval of the mean over tasks:

        t_{0.975, n-1} * s / sqrt(n),    s the sample std (ddof=1).

    At n = 600 this is 1.0033 x the paper code's 1.96 * std / sqrt(n) (population std); at
    n = 5 it is 1.67 x, where the normal interval is too narrow. NaN for fewer than 2 values.
    """
    values = np.asarray(values, dtype=np.float64)
    n = values.size
    if n < 2:
        return float("nan")
    return float(stdtrit(n - 1, 0.975) * values.std(ddof=1) / math.sqrt(n))


def paired_change(values, reference) -> tuple[float, float]:
    """Mean per-task change ``values - reference`` and its 95% t-interval.

    Every condition of an ablation (frozen vs unfrozen, NIL vs inner loop, a head variant
    vs the trained head) is scored on the same tasks, so the change is judged against the
    spread of its per-task differences, which is far narrower than the two marginal CIs
    when tasks vary in difficulty.
    """
    values, reference = np.asarray(values, np.float64), np.asarray(reference, np.float64)
    if values.shape != reference.shape:
        raise ValueError(f"paired values need the same tasks: {values.shape} vs {reference.shape}")
    diff = values - reference
    return float(diff.mean()), ci95(diff)


def summarise(per_task: pd.DataFrame, by=("model", "algorithm", "iteration", "layer", "measure")) -> pd.DataFrame:
    """Mean and 95% CI over tasks, how many tasks (n) and seeds, and the spread over seeds.

    ``model`` is an algorithm (its seeds pooled) or a model with a name of its own
    (repsim.study.Model.unit), so two differently named models are never pooled.

    Every checkpoint is scored on the same tasks, so seeds are averaged per task first: the
    CI is over the n distinct tasks, not over tasks x seeds (which are not independent).
    ``seed_std`` is the sample std of the per-seed means (NaN for one seed): the run-to-run
    variation that the CI over tasks does not show.
    """
    by = [b for b in by if b in per_task.columns]
    per = per_task.groupby(by + ["task"], sort=False)["value"].mean().reset_index()
    out = per.groupby(by, sort=False)["value"].agg(mean="mean", ci95=ci95, n="size").reset_index()
    if "seed" in per_task.columns:
        out["seeds"] = per_task.groupby(by, sort=False)["seed"].nunique().values
        spread = seed_means(per_task, by).groupby(by, sort=False)["mean"].std(ddof=1)  # NaN for one seed
        out["seed_std"] = spread.reindex(pd.MultiIndex.from_frame(out[by]) if len(by) > 1
                                         else out[by[0]]).to_numpy()
    return out


def through_training_summary(per_task: pd.DataFrame) -> pd.DataFrame:
    """Through-training's table: per intermediate checkpoint, metric and layer, the mean over
    tasks, its 95% CI and the number of tasks (n). Every checkpoint of a run is one seed, so
    nothing is pooled."""
    keys = [k for k in ("checkpoint", "model", "algorithm", "seed", "iteration") if k in per_task]
    return per_task.groupby(keys + ["metric", "layer"], sort=False)["value"].agg(
        mean="mean", ci95=ci95, n="size").reset_index()


def through_training_body(table: pd.DataFrame) -> pd.DataFrame:
    """The body at a glance, per intermediate checkpoint and similarity measure (what the
    report's table, verdict and figure note show): the mean over the body's layers of each
    layer's mean over tasks, the lowest and highest layer (``body_min``, ``body_max``), the
    layers (``body_layers``, "conv1 conv2 conv3 conv4") and the head's mean (``head_mean``, NaN
    without a head).
    ``table`` is :func:`through_training_summary`'s; written as through_training_body.csv.

        body_mean = (1/L) sum_l mean_l,   body_min = min_l mean_l,   body_max = max_l mean_l
    """
    keys = [k for k in ("checkpoint", "model", "algorithm", "seed", "iteration") if k in table] + ["metric"]
    layered = table[table["layer"].notna() & (table["layer"] != "")]  # accuracies have no layer
    out = []
    for key, g in layered.groupby(keys, sort=False):
        body, head = g[g["layer"] != HEAD], g[g["layer"] == HEAD]["mean"]
        if body.empty:
            continue
        out.append({**dict(zip(keys, key)), "body_mean": float(body["mean"].mean()),
                    "body_min": float(body["mean"].min()), "body_max": float(body["mean"].max()),
                    "body_layers": " ".join(body["layer"]),
                    "head_mean": float(head.iloc[0]) if len(head) else math.nan})
    return pd.DataFrame(out, columns=keys + ["body_mean", "body_min", "body_max", "body_layers", "head_mean"])


def seed_means(per_task: pd.DataFrame, by=("model", "algorithm", "iteration", "layer", "measure")) -> pd.DataFrame:
    """Each seed's mean over tasks, per :func:`summarise` group: the spread between training
    runs that the CI over tasks hides (the similarity figure draws it as dots). Written as
    NAME_seeds.csv; ``n`` is the number of tasks behind each mean."""
    by = [b for b in by if b in per_task.columns]
    return per_task.groupby(by + ["seed"], sort=False)["value"].agg(mean="mean", n="size").reset_index()


def over_seeds(rows: pd.DataFrame, keys, value: str = "accuracy") -> pd.DataFrame:
    """What a table shows of several training runs (one row per seed): per group of ``keys``
    (and of the model's name beside the algorithm, where the rows name one), the mean of
    ``value`` over seeds, its sample std over seeds (``seed_std``, NaN for one seed), its lowest
    and highest seed (``low``, ``high``), the seeds (their number and ``seed_list``, "0 1 2"),
    the smallest and largest of the seeds' 95% CI half-widths over tasks (``ci95_min``,
    ``ci95_max``) and, where the rows have one, the mean paired change with the smallest and
    largest of its half-widths (``change_ci95_min``, ``change_ci95_max``). Written by
    the runner as NAME_over_seeds.csv (the keys of each analysis: ``names.DECLARATIONS``).

        mean = (1/S) sum_s v_s,   seed_std = sqrt(sum_s (v_s - mean)^2 / (S - 1))
    """
    if rows.empty:  # an analysis that measured nothing (the report says so)
        return pd.DataFrame()
    keys = list(keys)
    by = (["model"] if "model" in rows.columns and "algorithm" in keys else []) + keys

    def ci_range(values) -> tuple[float, float]:
        finite = [v for v in values.astype(float) if math.isfinite(v)]
        return (min(finite), max(finite)) if finite else (math.nan, math.nan)

    out = []
    for key, g in rows.groupby(by, sort=False, dropna=False):
        vals = g[value].astype(float).to_numpy()
        row = {**dict(zip(by, key if isinstance(key, tuple) else (key,))),
               "mean": float(vals.mean()), "seed_std": float(vals.std(ddof=1)) if len(vals) > 1 else math.nan,
               "low": float(vals.min()), "high": float(vals.max()), "seeds": len(g),
               "seed_list": " ".join(str(s) for s in sorted(g["seed"].tolist())) if "seed" in g else ""}
        row["ci95_min"], row["ci95_max"] = ci_range(g["ci95"])
        if "change" in g:  # an ablation's paired change (regimes and the decomposition have none)
            row["change"] = float(g["change"].astype(float).mean())
            row["change_ci95_min"], row["change_ci95_max"] = ci_range(g["change_ci95"])
        if "tasks" in g:
            row["tasks"] = int(g["tasks"].min()) if g["tasks"].notna().all() else math.nan
        out.append(row)
    return pd.DataFrame(out)


# Cross-model similarity (paper table 3) ------------------------------------------------------
CROSS_PAIRS = ("MAML-MAML", "ANIL-ANIL", "ANIL-MAML")  # table 3's order


def same_seed(seed_a, seed_b) -> bool:
    """Whether two models were trained from one seed. Training seeds the initialisation, so
    ANIL and MAML of one seed start from the same weights (and one algorithm twice is one
    run); the paper's table 3 compares models of different seeds."""
    return float(seed_a) == float(seed_b)


def _in_pair_order(table: pd.DataFrame) -> pd.DataFrame:
    """Models of different seeds first, each in table 3's order; rows of one pair keep their order."""
    def rank(pair, same):
        return bool(same), CROSS_PAIRS.index(pair) if pair in CROSS_PAIRS else len(CROSS_PAIRS), pair
    ranks = [rank(pair, same) for pair, same in zip(table["pair"], table["same_seed"])]
    return table.iloc[sorted(range(len(table)), key=ranks.__getitem__)].reset_index(drop=True)


def cross_layers(per_task: pd.DataFrame) -> pd.DataFrame:
    """cross.csv: mean and 95% CI over tasks per pair of algorithms, ``same_seed``, layer and
    measure; models of different seeds first, in table 3's order."""
    return _in_pair_order(summarise(per_task, by=("pair", "same_seed", "layer", "measure")))


def model_pairs(per_task: pd.DataFrame) -> pd.DataFrame:
    """cross_model_pairs.csv, table 3's unit: one row per pair of models and measure, the
    similarity averaged over tasks t and body layers l (NaN values, from degenerate
    activations, are skipped),

        s(a, b) = mean_{t, l} sim(h_l^a(x_t), h_l^b(x_t)).
    """
    body = per_task[per_task["layer"] != HEAD]
    keys = ["pair", "same_seed", "model_a", "model_b", "seed_a", "seed_b", "measure"]
    return _in_pair_order(body.groupby(keys, sort=False)["value"].mean().reset_index())


def pair_summary(pairs: pd.DataFrame) -> pd.DataFrame:
    """cross_pairs.csv, paper table 3: per pair of algorithms, ``same_seed`` and measure, the
    mean and sample std over model pairs of s(a, b), and how many model pairs. ``pairs`` is
    :func:`model_pairs`' table. Pairs share models, so the std is a spread over pairs, not a
    standard error."""
    return (pairs.groupby(["pair", "same_seed", "measure"], sort=False)["value"]
            .agg(mean="mean", std=lambda v: v.std(ddof=1), model_pairs="size").reset_index())


def cross_extras(per_task: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The cross analysis' summaries beside cross.csv: each pair of models and table 3."""
    pairs = model_pairs(per_task)
    return {"model_pairs": pairs, "pairs": pair_summary(pairs)}


# The freezing test taken apart (measures.freezing_decomposed) ---------------------------------
# What a frozen set's cost is made of: "features" (the full inner loop against a head fitted to
# convergence on the features the frozen inner loop leaves) and "head optimisation" (that fitted
# head against the paper's protocol, the inner loop's own steps); their sum is the paper's cost.
DECOMPOSITION = {  # quantity: (per-task column or difference, scale)
    "paper protocol": ("paper", 100),
    "fitted head": ("fitted", 100),
    "fitted head about the meta-learned head": ("fitted_meta", 100),
    "prototypes": ("prototypes", 100),
    "support accuracy": ("support_accuracy", 100),
    "cost: total": (("full", "paper"), 100),
    "cost: features": (("full", "fitted"), 100),
    "cost: head optimisation": (("fitted", "paper"), 100),
    "lr x curvature": ("lr_curvature", 1),
    "tasks with lr x curvature > 2": ("unstable", 100),
    "support cosine": ("support_cosine", 1),
}
FEATURE_REUSE_POINTS = 2.0  # a frozen body whose features cost at most this many points is reused


def decompose_freezing(per_task: pd.DataFrame) -> pd.DataFrame:
    """Per checkpoint and frozen set, each :data:`DECOMPOSITION` quantity's mean over tasks
    with its 95% CI; the costs are per-task differences against the same tasks' full inner
    loop (frozen none), so their CIs are paired."""
    keys = [k for k in ("model", "algorithm", "seed", "iteration", "checkpoint") if k in per_task]
    rows = []
    for key, g in per_task.groupby(keys, sort=False):
        full = g[g["frozen"] == "none"].set_index("task")["paper"]
        for frozen, f in g.groupby("frozen", sort=False):
            f = f.set_index("task").assign(full=full, unstable=lambda d: d["lr_curvature"] > 2)
            for quantity, (column, scale) in DECOMPOSITION.items():
                v = (f[column[0]] - f[column[1]] if isinstance(column, tuple) else f[column]).astype(float)
                rows.append({**dict(zip(keys, key)), "frozen": frozen, "quantity": quantity,
                             "mean": scale * v.mean(), "ci95": scale * ci95(v), "tasks": len(v)})
    return pd.DataFrame(rows)
