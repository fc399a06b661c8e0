"""Confidence intervals and paired changes, checked against scipy.stats."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from repsim.statistics import ci95, over_seeds, paired_change, summarise, through_training_body


@pytest.mark.parametrize("n", [2, 5, 20, 600])
def test_ci95_is_the_student_t_interval_scipy_gives(n):
    x = np.random.default_rng(n).normal(0.8, 0.1, n)
    lo, hi = stats.t.interval(0.95, n - 1, loc=x.mean(), scale=stats.sem(x))
    assert ci95(x) == pytest.approx((hi - lo) / 2, rel=1e-12)


def test_ci95_is_nan_for_one_task_and_wider_than_the_normal_interval_for_few():
    assert np.isnan(ci95([0.5]))
    x = np.random.default_rng(0).normal(size=5)
    assert ci95(x) > 1.5 * 1.96 * x.std() / np.sqrt(5)  # the normal interval is far too narrow at n = 5


def test_paired_change_is_scipys_paired_t_interval_and_narrower_than_the_marginal_ones():
    rng = np.random.default_rng(1)
    difficulty = rng.uniform(0.3, 1.0, 100)  # tasks differ far more than the conditions do
    a = difficulty + rng.normal(0, 0.02, 100)
    b = difficulty - 0.01 + rng.normal(0, 0.02, 100)
    change, ci = paired_change(b, a)
    test = stats.ttest_rel(b, a)
    lo, hi = test.confidence_interval(0.95)
    assert change == pytest.approx((lo + hi) / 2, abs=1e-12)
    assert ci == pytest.approx((hi - lo) / 2, rel=1e-10)
    assert ci < 0.2 * ci95(a)  # pairing removes the tasks' spread
    with pytest.raises(ValueError, match="same tasks"):
        paired_change(a, a[:-1])


def test_summarise_shows_the_spread_over_seeds_beside_the_ci_over_tasks():
    rows = [{"model": "maml", "layer": "conv1", "measure": "cca", "seed": seed, "task": t,
             "value": base + 0.01 * t}
            for seed, base in ((0, 0.5), (1, 0.7), (2, 0.9)) for t in range(4)]
    out = summarise(pd.DataFrame(rows))
    assert len(out) == 1
    row = out.iloc[0]
    assert row["seeds"] == 3 and row["n"] == 4
    assert row["seed_std"] == pytest.approx(np.std([0.515, 0.715, 0.915], ddof=1))
    # seeds are averaged per task first: the CI is over the 4 tasks' seed means
    assert row["ci95"] == pytest.approx(ci95([0.7 + 0.01 * t for t in range(4)]))
    one = summarise(pd.DataFrame([r for r in rows if r["seed"] == 0]))
    assert np.isnan(one.iloc[0]["seed_std"])


def test_over_seeds_is_the_plain_statistics_over_runs():
    rng = np.random.default_rng(0)
    rows = pd.DataFrame([{"algorithm": a, "frozen": f, "seed": s, "iteration": it, "accuracy": acc,
                          "ci95": 1 + s, "change": acc - 50, "change_ci95": 0.5 * (s + 1), "tasks": 600 - s}
                         for a in ("maml", "anil") for f in ("none", "conv1") for it in (500, 1000)
                         for s, acc in zip((2, 0, 1), rng.uniform(40, 90, 3))])
    groups = over_seeds(rows, ["algorithm", "frozen", "iteration"])
    assert len(groups) == 8
    for _, g in groups.iterrows():
        these = rows[(rows.algorithm == g["algorithm"]) & (rows.frozen == g["frozen"])
                     & (rows.iteration == g["iteration"])].accuracy
        assert g["mean"] == pytest.approx(np.mean(these))
        assert g["seed_std"] == pytest.approx(np.std(these, ddof=1))
        assert (g["low"], g["high"]) == (these.min(), these.max())
        assert g["seeds"] == 3 and g["seed_list"] == "0 1 2" and g["tasks"] == 598
        assert (g["ci95_min"], g["ci95_max"], g["change_ci95_min"], g["change_ci95_max"]) == (1, 3, 0.5, 1.5)
        assert g["change"] == pytest.approx(g["mean"] - 50)
    one = over_seeds(rows[rows.seed == 0], ["algorithm", "frozen", "iteration"]).iloc[0]
    assert np.isnan(one["seed_std"]) and one["low"] == one["high"] == one["mean"] and one["seed_list"] == "0"
    # a named model is never pooled with another model of its algorithm; a NaN CI is left out
    named = rows.assign(model=np.where(rows.seed == 2, "mine", "maml"), ci95=np.where(rows.seed == 1, np.nan, 1.0))
    split = over_seeds(named[named.algorithm == "maml"], ["algorithm", "frozen", "iteration"])
    assert len(split) == 8 and set(split["seeds"]) == {1, 2}
    assert (split["ci95_min"] == 1.0).all()
    # regimes and the decomposition have no paired change; empty keys (an accuracy row's layer) are kept
    plain = over_seeds(rows.drop(columns=["change", "change_ci95"]).assign(layer=np.nan), ["algorithm", "layer"])
    assert "change" not in plain and len(plain) == 2


def test_through_training_body_is_the_mean_and_range_of_the_body_layers_and_leaves_the_head_apart():
    rng = np.random.default_rng(3)
    rows = []
    for it in (500, 1000):
        for metric in ("cca", "cka"):
            for layer in ("conv1", "conv2", "conv3", "head"):
                rows.append({"checkpoint": f"maml-s0-it{it}", "algorithm": "maml", "seed": 0, "iteration": it,
                             "metric": metric, "layer": layer, "mean": rng.uniform(), "ci95": 0.01})
        rows.append({"checkpoint": f"maml-s0-it{it}", "algorithm": "maml", "seed": 0, "iteration": it,
                     "metric": "accuracy (nil)", "layer": "", "mean": 90.0, "ci95": 1.0})
    # a model without a head (its features only): no head value, not a head of 0
    rows += [{"checkpoint": "proto-s0-it0", "algorithm": "proto", "seed": 0, "iteration": 0, "metric": "cca",
              "layer": layer, "mean": v, "ci95": 0.0} for layer, v in (("conv1", 0.9), ("conv2", 0.7))]
    table = pd.DataFrame(rows)
    body = through_training_body(table)
    assert len(body) == 5 and set(body["metric"]) == {"cca", "cka"}  # the accuracies have no layer
    for r in body.itertuples():
        these = table[(table.checkpoint == r.checkpoint) & (table.metric == r.metric)]
        layers = these[these.layer.str.startswith("conv")]
        assert r.body_mean == pytest.approx(layers["mean"].mean())
        assert (r.body_min, r.body_max) == (layers["mean"].min(), layers["mean"].max())
        assert r.body_layers == " ".join(layers["layer"])
        head = these[these.layer == "head"]["mean"]
        assert (np.isnan(r.head_mean) and head.empty) or r.head_mean == head.iloc[0]
    assert body.iloc[-1]["body_mean"] == pytest.approx(0.8) and np.isnan(body.iloc[-1]["head_mean"])
