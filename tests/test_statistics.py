"""Confidence intervals and paired changes, checked against scipy.stats."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from repsim.statistics import ci95, over_seeds, paired_change, seed_band, summarise


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


def test_over_seeds_and_the_seed_band_are_the_plain_statistics_over_runs():
    rng = np.random.default_rng(0)
    rows = pd.DataFrame([{"algorithm": a, "frozen": f, "seed": s, "iteration": it, "accuracy": acc,
                          "mean": acc, "ci95": 1 + s, "change": acc - 50, "change_ci95": 0.5, "tasks": 600 - s}
                         for a in ("maml", "anil") for f in ("none", "conv1") for it in (500, 1000)
                         for s, acc in zip((2, 0, 1), rng.uniform(40, 90, 3))])
    groups = over_seeds(rows, ["algorithm", "frozen", "iteration"])
    assert len(groups) == 8
    for g in groups:
        these = rows[(rows.algorithm == g["algorithm"]) & (rows.frozen == g["frozen"])
                     & (rows.iteration == g["iteration"])]
        assert g["mean"] == pytest.approx(np.mean(these.accuracy))
        assert g["std"] == pytest.approx(np.std(these.accuracy, ddof=1))
        assert g["seeds"] == [0, 1, 2] and g["cis"] == [3, 1, 2] and g["tasks"] == 598
        assert g["change"] == pytest.approx(g["mean"] - 50)
    one = over_seeds(rows[rows.seed == 0], ["algorithm", "frozen", "iteration"])[0]
    assert np.isnan(one["std"]) and one["change_cis"] == [0.5]
    band = seed_band(rows[(rows.algorithm == "maml") & (rows.frozen == "none")])
    for it, r in band.iterrows():
        values = rows[(rows.algorithm == "maml") & (rows.frozen == "none") & (rows.iteration == it)]["mean"]
        assert (r["mean"], r["low"], r["high"]) == pytest.approx((values.mean(), values.min(), values.max()))
