"""Tests for repsim.report and repsim.paper on small synthetic results folders with known numbers."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from report_fixtures import (
    CROSS_TASKS,
    build_results,
    checkpoint_row,
    cross_means,
    provenance,
    record_tables,
    write_result,
)
from repsim import paper, statistics
from repsim.errors import RepsimError
from repsim.names import DECLARATIONS
from repsim.report import write_report

FIGURES = ("similarity", "freezing", "freezing_decomposed", "through_training", "cross", "weight_change", "regimes",
           "heads")


def _table_row(md: str, *cells) -> str:
    """The first Markdown table row containing all ``cells`` as whole cells."""
    for line in md.splitlines():
        if line.startswith("|"):
            parts = [c.strip() for c in line.strip("|").split("|")]
            if all(c in parts for c in cells):
                return line
    raise AssertionError(f"no table row with {cells}")


def test_paper_lookup():
    assert paper.paper_value("table2", ("omniglot", 20, 1), "MAML", "inner-loop").value == 93.7
    assert paper.paper_value("maml_vs_anil", ("Omniglot", 20, 1), "ANIL", "inner-loop").value == 96.2
    assert paper.paper_value("freezing", ("miniimagenet", 5, 5), "conv1", "accuracy").uncertain
    assert not paper.paper_value("freezing", ("miniimagenet", 5, 5), "none", "accuracy").uncertain
    assert paper.paper_value("freezing", ("miniimagenet", 5, 1), "conv1,conv2,conv3,conv4",
                             "accuracy (earlier version)").value == 44.7
    assert paper.paper_value("maml_original", ("omniglot", 5, 5), "MAML (Finn et al. 2017)", "inner-loop").value == 99.9
    assert paper.paper_value("nil", ("omniglot", 20, 5), "ANIL", "nil").pm == 0.04
    assert paper.paper_value("regimes", ("miniimagenet", 5, 5), "multitask", "nil").value == 34.2
    assert paper.paper_value("boil", ("miniimagenet", 5, 5), "BOIL", "inner-loop").value == 66.5
    assert paper.paper_value("table3", ("miniimagenet", 5, None), "ANIL-ANIL", "cka").value == 0.86
    assert paper.paper_value("table2", ("synthetic", 5, 1), "MAML", "inner-loop") is None
    assert paper.nearest_setting("table2", ("synthetic", 5, 1)) == ("miniimagenet", 5, 1)
    assert paper.nearest_setting("table2", ("omniglot", 5, 1)) == ("omniglot", 20, 1)
    assert paper.setting_label(("miniimagenet", 5, 1)) == "MiniImageNet 5w1s"


def test_every_figure_is_written_as_valid_png_and_pdf(rendered_report):
    folder, _ = rendered_report
    for stem in FIGURES:
        png, pdf = folder / "figures" / f"{stem}.png", folder / "figures" / f"{stem}.pdf"
        with Image.open(png) as im:
            im.verify()
        with Image.open(png) as im:
            assert im.size[0] > 400 and im.size[1] > 200
        assert pdf.read_bytes().startswith(b"%PDF")
    leftovers = [p.name for p in folder.rglob("*.tmp")]
    assert not leftovers


def test_markdown_tables_compare_with_the_paper_where_the_setting_matches(rendered_report):
    _, report = rendered_report
    md = report.read_text()
    # Table 2, Omniglot 20w1s: MAML mean of 94/95/96 = 95.0 vs 93.7; ANIL 96.0 vs 96.2
    row = _table_row(md, "MAML", "inner-loop")
    assert "95.0" in row and "93.7 ± 0.7" in row and "+1.3" in row and "±1.0" in row  # std over seeds = 1.0
    row = _table_row(md, "ANIL†", "inner-loop")
    assert "96.0" in row and "96.2 ± 0.5" in row and "-0.2" in row
    assert "Finn et al. 2017: 95.8" in _table_row(md, "MAML", "inner-loop")
    # Table 4: ANIL NIL 97.0 vs 96.7
    row = _table_row(md, "ANIL†", "NIL")
    assert "96.7 ± 0.3" in row and "+0.3" in row
    # Table 1 is MiniImageNet only: shown in a separate, labelled column with no difference
    assert "paper (MiniImageNet 5w1s), not the same setting" in md
    row = _table_row(md, "MAML", "60000", "none")
    assert "46.9 ± 0.2" in row and "90.5" in row
    # Table 3 and Table 5 present, with the paper's numbers
    assert "0.51" in _table_row(md, "MAML-MAML", "different")
    assert "39.7" in _table_row(md, "multiclass", "multiclass pretraining")
    # reduced schedule is marked, provenance and verdict are there
    assert "† Reduced training schedule" in md and "ANIL seed 0 at iteration 60000." in md
    assert "## Verdict" in md and "feature reuse" in md
    assert "NIL vs inner loop (MAML" in md
    for stem in FIGURES:
        assert f"](figures/{stem}.png)" in md
    assert "task seed 7" in md


def test_miniimagenet_setting_gives_differences_for_freezing_and_regimes(tmp_path):
    folder = build_results(tmp_path / "r", dataset="miniimagenet", ways=5, shots=5,
                           names=("freezing", "regimes", "accuracy"))
    md = write_report(folder).read_text()
    row = _table_row(md, "MAML", "60000", "conv1")  # ours 90.0 (seeds 89.5, 90.5) vs 63.0 (?)
    assert "63.0 ± 0.4 (?)" in row and "+27.0 (?)" in row
    assert "34.2" not in md  # multitask was not run: no row invented
    assert "-2.7" in _table_row(md, "random features", "random features")  # 40.5 vs 43.2
    assert "46.9" not in md  # only the matching (5-shot) setting's numbers


def test_html_is_self_contained(rendered_report):
    folder, _ = rendered_report
    page = (folder / "report.html").read_text()
    assert "http://" not in page and "https://" not in page
    assert 'src="figures/' not in page
    srcs = re.findall(r'src="([^"]*)"', page)
    assert len(srcs) == len(FIGURES) and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<table>" in page and "93.7 ± 0.7" in page
    assert "<link" not in page and "<script" not in page


def test_missing_or_empty_folder_raises(tmp_path):
    with pytest.raises(RepsimError, match="no results folder"):
        write_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RepsimError, match="no finished repsim analysis"):
        write_report(tmp_path / "empty")
    assert not (tmp_path / "empty" / "report.md").exists()


def test_unreadable_csv_names_the_file(tmp_path):
    folder = build_results(tmp_path / "r", names=("similarity", "accuracy"))
    (folder / "accuracy.csv").write_bytes(b"\xff\xfe\x00garbage\n\x00\x01")
    with pytest.raises(RepsimError, match="accuracy.csv") as e:
        write_report(folder)
    assert "\n" not in str(e.value)
    (folder / "accuracy.csv").write_text("algorithm,seed\nmaml,0\n")  # columns missing
    record_tables(folder, "accuracy")
    with pytest.raises(RepsimError, match="accuracy.csv.*no column"):
        write_report(folder)
    (folder / "accuracy.json").write_text("{not json")
    with pytest.raises(RepsimError, match="accuracy.json"):
        write_report(folder)
    assert not (folder / "report.md").exists() and not (folder / "report.html").exists()


def test_a_subset_of_analyses_is_reported_and_the_rest_listed_missing(tmp_path):
    folder = build_results(tmp_path / "r", dataset="synthetic", ways=5, shots=1, names=("similarity", "regimes"))
    (folder / "heads.csv").write_text("checkpoint,algorithm\n")  # unfinished: no heads.json
    out = tmp_path / "figs"
    md = write_report(folder, figures_dir=out, title="Subset").read_text()
    assert md.startswith("# Subset\n")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{stem}{kind}" for stem in ("regimes", "similarity")
        for kind in (".pdf", ".png", "-column.pdf", "-column.png", ".json"))
    assert "](../figs/similarity.png)" in md
    assert "## Missing analyses" in md
    assert "freezing: not run" in md and "heads: unfinished" in md
    # synthetic data: the paper's nearest setting, clearly labelled, and no difference column
    assert "paper (Table 5, NIL) (MiniImageNet 5w1s), not the same setting" in md
    assert "| ours − paper |" not in md


def test_analyses_run_on_fewer_seeds_than_the_others_are_named_in_the_caveats(tmp_path):
    # accuracy covers MAML seeds 0-2, freezing 0-1, heads 0: their means are over other models
    md = write_report(build_results(tmp_path / "r", names=["accuracy", "freezing", "heads"])).read_text()
    gaps = [line for line in md.splitlines() if "cover different seeds" in line]
    assert gaps == ["- MAML: the analyses cover different seeds (0, 1, 2 in all; freezing only 0, 1; "
                    "heads only 0): re-run freezing, heads on the missing seeds to compare like with like."]
    # one analysis, or analyses that agree on every model's seeds, raise nothing
    md = write_report(build_results(tmp_path / "s", names=["accuracy"])).read_text()
    assert "cover different seeds" not in md


def test_edge_cases_nan_ci_no_head_accuracy_only_through_training(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    ck = [checkpoint_row("maml", 0, 500, dataset="synthetic", ways=20, shots=1)]
    write_result(folder, "accuracy", [{"checkpoint": "maml-s0-it500", "algorithm": "maml", "seed": 0, "iteration": 500,
                                 "mode": m, "accuracy": 50.0, "ci95": float("nan"), "change": 0.0,
                                 "change_ci95": float("nan"), "tasks": 1}
                                for m in ("inner-loop", "nil")],
                 provenance("accuracy", "synthetic", 20, 1, ck, tasks=1))
    write_result(folder, "similarity", [{"algorithm": "maml", "layer": "conv1", "measure": "cca", "mean": 0.9,
                                   "ci95": float("nan"), "n": 1, "seeds": 1}],
           provenance("similarity", "synthetic", 20, 1, ck))
    write_result(folder, "through_training", [{"checkpoint": "maml-s0-it500", "algorithm": "maml", "seed": 0,
                                         "iteration": 500, "metric": "accuracy (nil)", "layer": "", "mean": 40.0,
                                         "ci95": 2.0, "n": 5}],
           provenance("through_training", "synthetic", 20, 1, ck))
    md = write_report(folder).read_text()
    row = _table_row(md, "MAML", "inner-loop")
    # nearest paper setting for synthetic 20w1s is Omniglot 20w1s, for every row of the table
    assert "paper (Omniglot 20w1s), not the same setting" in md and "93.7 ± 0.7" in row and "n/a" in row
    assert "96.7" not in md  # ANIL NIL (Table 4) not invented for MAML
    for stem in ("similarity", "through_training"):
        with Image.open(folder / "figures" / f"{stem}.png") as im:
            im.verify()


def test_through_training_curves_are_the_mean_over_seeds_shaded_by_their_range():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from repsim.report.figures import _curve_over_seeds

    rows = pd.DataFrame([{"seed": s, "iteration": it, "mean": m, "ci95": 1.0}
                         for s, ms in enumerate(((40, 70), (50, 80), (60, 60))) for it, m in zip((250, 500), ms)])
    pooled = statistics.over_seeds(rows, ["iteration"], value="mean").iloc[::-1]  # the runner's, in any order
    fig, ax = plt.subplots()
    _curve_over_seeds(ax, rows, pooled, color="C0", ls="-")
    (line,) = ax.get_lines()
    assert line.get_xdata().tolist() == [250, 500] and line.get_ydata().tolist() == [50, 70]
    band = ax.collections[0].get_paths()[0].vertices  # lowest and highest seed at each iteration
    assert {(x, y) for x, y in band} >= {(250, 40), (250, 60), (500, 60), (500, 80)}

    # one seed: its own values with the 95% CI over tasks as error bars, no band
    fig, ax = plt.subplots()
    _curve_over_seeds(ax, rows[rows.seed == 1], None, color="C0", ls="-")
    assert ax.get_lines()[0].get_ydata().tolist() == [50, 80] and not any(
        isinstance(c, matplotlib.collections.PolyCollection) for c in ax.collections)
    plt.close("all")


def test_cross_model_rows_average_body_layers_per_model_pair_and_keep_shared_initialisations_apart(rendered_report):
    from repsim.report import SAME_SEED, cross_summary_of, load_result
    t = pd.DataFrame(CROSS_TASKS)
    pairs = statistics.model_pairs(t)
    # a second route to the same number: the mean of every body-layer row of one pair of models
    one = t[(t.model_a == "maml-s0-it60000") & (t.model_b == "anil-s1-it60000") & (t.measure == "cka")
            & (t.layer != "head")]
    row = pairs[(pairs.model_a == "maml-s0-it60000") & (pairs.model_b == "anil-s1-it60000") & (pairs.measure == "cka")]
    assert row.value.item() == pytest.approx(one.value.mean()) == pytest.approx(0.70 + 0.15 - 0.14)
    assert set(pairs[pairs.same_seed].pair) == {"ANIL-MAML"}  # maml-s0/anil-s0 and maml-s1/anil-s1
    # the report reads what the analysis wrote: different seeds first, in table 3's order
    summary = cross_summary_of(load_result(rendered_report[0], "cross"))
    assert [(r["pair"], r["seeds"]) for r in summary] == [("MAML-MAML", "different"), ("ANIL-ANIL", "different"),
                                                          ("ANIL-MAML", "different"), ("ANIL-MAML", SAME_SEED)]
    across = summary[2]
    assert len(across["models"]) == 2 and across["cca"][0] == pytest.approx(0.57)
    assert across["cca"][1] == pytest.approx(0.02 / 2 ** 0.5)  # sample std of 0.56 and 0.58
    assert summary[3]["cca"][0] == pytest.approx(0.61)
    # the report: models of different seeds beside the paper, shared initialisations apart, no paper
    md = rendered_report[1].read_text()
    assert "| ANIL-MAML | different | 2 | 0.570 ± 0.014 | 0.50 | 0.720 ± 0.014 | 0.83 |" in md
    assert "| ANIL-MAML | same (same initial weights) | 2 | 0.610 ± 0.000 | — | 0.760 ± 0.000 | — |" in md
    assert "| MAML-MAML | different | 1 | 0.660 | 0.51 | 0.810 | 0.83 |" in md  # one pair: no spread
    # per layer, across seeds only: conv4 of ANIL-MAML is base 0.71 - 0.3 + 0.01 (tasks 0 and 1)
    # (a t-interval over 2 tasks: t(0.975, 1) * s / sqrt(2) = 12.71 * 0.0141 / 1.414)
    assert _table_row(md, "ANIL-MAML", "different", "CCA").split("|")[7].strip() == "0.420 ±0.127"
    assert ("models of different seeds (CCA / CKA, body layers averaged, ± std over model pairs): MAML-MAML "
            "0.66 / 0.81; ANIL-ANIL 0.68 / 0.83; ANIL-MAML 0.57 ± 0.01 / 0.72 ± 0.01") in md
    assert "models of one seed, which start from the same weights: ANIL-MAML 0.61 ± 0.00 / 0.76 ± 0.00." in md


def test_the_report_reads_summaries_and_never_the_per_task_rows(rendered_report, tmp_path):
    """Every number the report shows was summarised by the analysis that wrote it: without
    the per-task rows the report is the same, byte for byte (figures included)."""
    folder = tmp_path / "results"
    shutil.copytree(rendered_report[0], folder)
    for rows in folder.glob("*_tasks.csv"):
        rows.unlink()
    assert write_report(folder).read_text() == rendered_report[1].read_text()
    assert ({p.name: p.read_bytes() for p in (folder / "figures").glob("*.png")}
            == {p.name: p.read_bytes() for p in (rendered_report[0] / "figures").glob("*.png")})


def _earlier_format(folder: Path, name: str, lacking: str):
    """``folder``'s report is refused in one line naming what its ``name`` result lacks and the fix."""
    with pytest.raises(RepsimError) as e:
        write_report(folder)
    message = str(e.value)
    assert "\n" not in message and message.startswith(str(folder / f"{name}.json"))
    assert f"is of an earlier format (no {lacking}), which this repsim does not read" in message
    assert f"re-run 'repsim analyze' into {folder}" in message


def _without_column(folder: Path, name: str, columns: str):
    """``folder``'s report is refused in one line naming the table, the columns it lacks and the fix."""
    with pytest.raises(RepsimError) as e:
        write_report(folder)
    assert str(e.value) == (f"cannot read {folder / (name + '.csv')}: no column {columns}; "
                            "re-run the analysis that wrote it")
    assert not (folder / "report.md").exists()


def test_cross_results_of_an_older_repsim_are_refused(tmp_path):
    """Before cross kept seeds apart, cross.csv pooled every model pair of two algorithms and
    had no ``same_seed`` column: no committed result is such, so the report refuses it (its
    missing cross_pairs.csv: test_a_result_without_an_extra_table_its_analysis_declares_is_refused)."""
    folder = build_results(tmp_path / "r", names=("cross",))
    old = pd.DataFrame(CROSS_TASKS).drop(columns=["seed_a", "seed_b", "same_seed"])
    old.to_csv(folder / "cross_tasks.csv", index=False)
    pd.DataFrame(cross_means(CROSS_TASKS)).to_csv(folder / "cross.csv", index=False)
    record_tables(folder, "cross")
    _without_column(folder, "cross", "same_seed")


def test_tables_without_their_paired_changes_are_refused(tmp_path):
    """Paired changes (``change``, ``change_ci95``) were once absent and read around; they are
    now among the columns each ablation's table must hold."""
    folder = build_results(tmp_path / "r", names=("freezing",))
    pd.read_csv(folder / "freezing.csv").drop(columns=["change", "change_ci95"]).to_csv(
        folder / "freezing.csv", index=False)
    record_tables(folder, "freezing")
    _without_column(folder, "freezing", "change, change_ci95")


@pytest.mark.parametrize("name, edit, lacking", [
    ("accuracy", lambda folder, prov: prov["study"].pop("confidence_interval"), "study.confidence_interval"),
    ("heads", lambda folder, prov: prov["checkpoints"][0].update(imported=True), "checkpoint 0's seed_known"),
    ("regimes", lambda folder, prov: prov["checkpoints"][1].pop("label"), "checkpoint 1's label"),
])
def test_results_without_what_every_result_since_the_format_holds_are_refused(tmp_path, name, edit, lacking):
    """The CI's definition, the checkpoints' labels and an import's seed_known were once absent,
    and read around; no committed result lacks them, so a result that does is refused."""
    folder = build_results(tmp_path / "r", names=(name,))
    meta = folder / f"{name}.json"
    prov = json.loads(meta.read_text())
    edit(folder, prov)
    meta.write_text(json.dumps(prov))
    record_tables(folder, name)
    _earlier_format(folder, name, lacking)


def test_the_report_shows_the_runners_pooling_over_seeds_and_refuses_a_result_without_it(tmp_path):
    """The mean over seeds is the runner's (NAME_over_seeds.csv): the report shows what that
    file says, not a mean of its own, and a result without the file is of an earlier format."""
    folder = build_results(tmp_path / "r", names=("accuracy", "regimes"))
    md = write_report(folder).read_text()
    assert "| 95.0 |" in _table_row(md, "MAML", "inner-loop")  # seeds 94, 95, 96
    pooled = pd.read_csv(folder / "accuracy_over_seeds.csv", keep_default_na=False)
    pooled.loc[(pooled.algorithm == "maml") & (pooled["mode"] == "inner-loop"), "mean"] = 91.25
    pooled.to_csv(folder / "accuracy_over_seeds.csv", index=False)
    record_tables(folder, "accuracy")
    row = _table_row(write_report(folder).read_text(), "MAML", "inner-loop")
    assert "| 91.2 |" in row and "| 95.0 |" not in row
    (folder / "regimes_over_seeds.csv").unlink()
    record_tables(folder, "regimes")
    _earlier_format(folder, "regimes", "regimes_over_seeds.csv")


@pytest.mark.parametrize("stem, suffix", [(d.stem, s) for d in DECLARATIONS for s in d.extra_tables])
def test_a_result_without_an_extra_table_its_analysis_declares_is_refused(tmp_path, stem, suffix):
    """Each extra table a declaration names is read with no fallback: without it the result is
    of an earlier format, named in one line, and the report writes nothing."""
    folder = build_results(tmp_path / "r", names=(stem,))
    (folder / f"{stem}_{suffix}.csv").unlink()
    record_tables(folder, stem)
    _earlier_format(folder, stem, f"{stem}_{suffix}.csv")
    assert not (folder / "report.md").exists()


def test_results_of_another_format_or_none_are_refused(tmp_path):
    """Every committed result records its format (the first repsims' were given it when they
    were brought up to it); a result without one, or of another, is refused in one line."""
    folder = build_results(tmp_path / "r", names=("freezing",))
    meta = folder / "freezing.json"
    prov = json.loads(meta.read_text())
    write_report(folder)
    meta.write_text(json.dumps({k: v for k, v in prov.items() if k != "format"}))
    _earlier_format(folder, "freezing", "format field")
    meta.write_text(json.dumps({**prov, "format": "repsim-results-0"}))
    with pytest.raises(RepsimError, match=r"is of format 'repsim-results-0', which this repsim does not read"):
        write_report(folder)


@pytest.mark.parametrize("edit, refusal", [
    (lambda folder, prov: prov.pop("tables"), "freezing.csv is not among the tables its analysis recorded"),
    (lambda folder, prov: pd.read_csv(folder / "freezing.csv").drop(columns=["model"])
     .to_csv(folder / "freezing.csv", index=False), "cannot read .*freezing.csv: no column model"),
])
def test_results_without_table_digests_or_models_are_refused(tmp_path, edit, refusal):
    """Table digests and the model of each row are in every result of this format: a table
    not recorded (never written by the analysis) or without models is refused, not guessed at."""
    folder = build_results(tmp_path / "r", names=("freezing",))
    meta = folder / "freezing.json"
    prov = json.loads(meta.read_text())
    edit(folder, prov)
    meta.write_text(json.dumps(prov))
    if "tables" in prov:
        record_tables(folder, "freezing")
    with pytest.raises(RepsimError, match=refusal) as e:
        write_report(folder)
    assert "\n" not in str(e.value) and "re-run the analysis" in str(e.value)


def test_a_damaged_same_seed_column_is_refused_in_one_line(tmp_path):
    folder = build_results(tmp_path / "r", names=("cross",))
    pairs = pd.read_csv(folder / "cross_pairs.csv").astype({"same_seed": str})
    pairs.loc[0, "same_seed"] = "maybe"
    pairs.to_csv(folder / "cross_pairs.csv", index=False)
    record_tables(folder, "cross")
    with pytest.raises(RepsimError, match=r"cross_pairs.csv: column same_seed is not True or False; re-run"):
        write_report(folder)


def test_reproduction_table_lists_table_3_across_seeds_in_the_papers_order(tmp_path, recipe):
    build_results(tmp_path / "results", names=("cross",))
    out = recipe("reproduction_table").cross_table([tmp_path]).splitlines()
    at = "| Omniglot 20w1s | 60000 (reduced) |"  # the fixture's models' iteration, from their provenance
    assert out[2:] == [f"{at} MAML-MAML | 1 | 0.660 | 0.810 | 0.51 / 0.83 |",
                       f"{at} ANIL-ANIL | 1 | 0.680 | 0.830 | 0.51 / 0.86 |",
                       f"{at} ANIL-MAML | 2 | 0.570 ± 0.014 | 0.720 ± 0.014 | 0.50 / 0.83 |"]
    (tmp_path / "results" / "cross_pairs.csv").unlink()  # an older folder: refused in one line
    with pytest.raises(RepsimError, match=r"of an earlier format \(no cross_pairs.csv\)"):
        recipe("reproduction_table").cross_table([tmp_path])


def test_the_decomposed_freezing_verdict_judges_reuse_on_the_features_part(rendered_report):
    _, report = rendered_report
    line = next(x for x in report.read_text().splitlines() if x.startswith("- Freezing, decomposed (MAML"))
    # full loop 90%, body frozen 30% in the protocol, 85% with a fitted head (29.8 and 84.8: the
    # per-task wobble does not average to 0 over 20 tasks; the paired differences have none)
    assert "costs 60.0 points in the paper's protocol" in line
    assert "5.0 (±0.0 paired, per seed) are the features'" in line and "55.0 the inner loop's failure" in line
    assert "lr × λmax 4.8: above 2, its first step can overshoot" in line
    assert "rapid learning" in line and "dominated by head optimisation" in line
    row = _table_row(report.read_text(), "MAML", "60000", "conv1, conv2, conv3, conv4", "4.80")
    assert "| 29.8 | 84.8 | 80.0 | 60.0 | 5.0 (±0.0) | 55.0 (±0.0) | 4.80 | 40.0 | 0.97 |" in row


def test_every_declared_analysis_is_computed_reported_and_reproduced():
    """One declaration per analysis (repsim.names.DECLARATIONS): its measure, table, figure,
    verdict and place in the main job are looked up by its name, and none is missing."""
    from repsim.names import DECLARATIONS, REPORT_ORDER
    from repsim.report.figures import FIGURES
    from repsim.report.tables import TABLES
    from repsim.report.verdict import VERDICTS
    from repsim.reproduce import analysis_plan
    from repsim.runner import REGISTRY
    stems = {d.stem for d in DECLARATIONS}
    assert list(REGISTRY) == [d.name for d in DECLARATIONS]
    assert sorted(REPORT_ORDER) == sorted(d.name for d in DECLARATIONS)
    assert set(TABLES) == stems
    assert set(FIGURES) == {d.stem for d in DECLARATIONS if d.figure}
    assert {name for name, _ in VERDICTS} <= stems
    planned = [name for name, _, _ in analysis_plan({"maml-s0": "m", "anil-s0": "a"}, {}, 10, 10)]
    assert sorted(planned) == sorted(d.name for d in DECLARATIONS)
