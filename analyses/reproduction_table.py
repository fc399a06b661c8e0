"""Recipe: the README's reproduction table (tables 2 and 4), from the reference MANIFESTs.

    python analyses/reproduction_table.py [checkpoints/omniglot_20w1s checkpoints/omniglot_20w5s ...]

For every setting and method, the final checkpoints' 600-task test accuracies are averaged
over seeds and printed as mean ± std over seeds (sample std; a single seed shows its 95% CI
over tasks instead, marked "CI"), beside the paper's number (mean +- std over 3 seeds) and
the difference. Rows: MAML and ANIL with their own inner loop (table 2) and NIL testing
after ANIL training (table 4), a row for each set of training conventions (the runs of a
control, such as MAML with ``head_init: pytorch``, are never pooled with the others' seeds).
Every Omniglot entry of tables 2 and 4 that has no run in the folders is listed too, as
"not trained", so the table never hides a gap.

Then table 3: for every folder whose report compared models across seeds
(``results/cross_tasks.csv``), the similarity of body layers for MAML-MAML, ANIL-ANIL and
ANIL-MAML (and any control's pairs), mean ± std over pairs of models of different seeds (the
paper's comparison; ANIL and MAML of one seed share their initial weights and are left out),
with the models' training iterations, beside the paper's MiniImageNet numbers. Prints markdown to standard output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from repsim import paper, report
from repsim.errors import RepsimError, one_line
from repsim.statistics import over_seeds

# label, algorithm, MANIFEST column prefix, paper table, its row and column, where
ROWS = (("MAML", "maml", "test", "maml_vs_anil", "MAML", "inner-loop", "table 2"),
        ("ANIL", "anil", "test", "maml_vs_anil", "ANIL", "inner-loop", "table 2"),
        ("NIL after ANIL training", "anil", "nil", "nil", "ANIL", "nil", "table 4"))


# what this table reads of a MANIFEST (analyses/reference_checkpoints.py writes them all)
MANIFEST_COLUMNS = ("run", "algorithm", "dataset", "ways", "shots", "seed", "iteration", "iterations_planned",
                    "reduced_schedule", "conventions", "test_accuracy", "test_ci95", "nil_accuracy", "nil_ci95")


def finals(folder: Path) -> pd.DataFrame:
    """The final checkpoints of ``folder``'s MANIFEST.csv."""
    path = folder / "MANIFEST.csv"
    try:
        m = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise RepsimError(f"cannot read {path} ({one_line(e)}): give a folder of reference checkpoints "
                          f"(analyses/reference_checkpoints.py writes its MANIFEST.csv)") from None
    missing = [c for c in MANIFEST_COLUMNS if c not in m.columns]
    if missing:
        raise RepsimError(f"{path} has no column {', '.join(missing)}: regenerate it with "
                          f"analyses/reference_checkpoints.py")
    return m[m.iteration == m.iterations_planned]


def finn_value(setting) -> paper.PaperValue | None:
    """Finn et al.'s MAML number for ``setting`` (quoted under table 2), or None."""
    return paper.paper_value("maml_original", setting, "MAML (Finn et al. 2017)", "inner-loop")


def conventions(rows: pd.DataFrame) -> str:
    """The training conventions of the rows' runs: "finn", "pytorch", or several."""
    return "; ".join(sorted({str(c).replace(" conventions", "") for c in rows.conventions}))


def pooled(rows: pd.DataFrame, mode: str) -> dict:
    """The seeds' final accuracies pooled as every table of repsim pools them (statistics.over_seeds)."""
    runs = pd.DataFrame({"seed": rows.seed, "accuracy": rows[f"{mode}_accuracy"], "ci95": rows[f"{mode}_ci95"]})
    return over_seeds(runs.assign(setting=0), ["setting"]).iloc[0].to_dict()


def describe(pool: dict) -> str:
    if pool["seeds"] == 1:
        return f"{pool['mean']:.2f} ± {pool['ci95_max']:.2f} (CI)"
    return f"{pool['mean']:.2f} ± {pool['seed_std']:.2f}"


def table(folders: list[Path]) -> str:
    lines = ["| setting | method | conventions | seeds | iterations | ours | paper | ours - paper |",
             "|---|---|---|---|---|---|---|---|"]
    trained = set()
    for folder in folders:
        m = finals(folder)
        for (dataset, ways, shots), group in m.groupby(["dataset", "ways", "shots"]):
            setting = (dataset, int(ways), int(shots))
            for (label, algorithm, mode, source, row, col, where), (_, rows) in (
                    (r, c) for r in ROWS for c in group[group.algorithm == r[1]].groupby("conventions")):
                # a run whose conventions differ (a control, e.g. head_init: pytorch) is a row of its own
                rows = rows.sort_values("seed")
                trained.add((setting, label))
                pool = pooled(rows, mode)
                ours = describe(pool)
                published = paper.paper_value(source, setting, row, col)
                original = finn_value(setting) if algorithm == "maml" and mode == "test" else None
                cells = []
                diffs = []
                if published:
                    cells.append(f"{published.format()} ({where})")
                    diffs.append(f"{pool['mean'] - published.value:+.1f}")
                if original:
                    cells.append(f"Finn et al.: {original.value:.1f}")
                    diffs.append(f"{pool['mean'] - original.value:+.1f} vs Finn")
                iterations = ", ".join(sorted({str(int(i)) for i in rows.iteration}))
                reduced = " (reduced)" if rows.reduced_schedule.any() else ""
                lines.append(f"| {paper.setting_label(setting)} | {label} | {conventions(rows)} | "
                             f"{', '.join(str(int(s)) for s in rows.seed)} | {iterations}{reduced} | {ours} | "
                             f"{'; '.join(cells) or '—'} | {'; '.join(diffs) or '—'} |")
    for setting in sorted(s for s in paper.settings("maml_vs_anil") if s[0] == "omniglot"):
        for label, _, _, source, row, col, where in ROWS:
            published = paper.paper_value(source, setting, row, col)
            if published and (setting, label) not in trained:
                original = finn_value(setting) if label == "MAML" else None
                finn = f"; Finn et al.: {original.value:.1f}" if original else ""
                lines.append(f"| {paper.setting_label(setting)} | {label} | — | — | not trained | — | "
                             f"{published.format()} ({where}){finn} | — |")
    return "\n".join(lines) + "\n"


def cross_table(folders: list[Path]) -> str:
    lines = ["| setting | iterations | pair | model pairs | CCA | CKA | paper CCA / CKA (table 3, MiniImageNet 5w) |",
             "|---|---|---|---|---|---|---|"]
    for folder in folders:
        cross = report.load_result(folder / "results", "cross")
        summary = report.cross_summary_of(cross) if isinstance(cross, report.Result) else None
        if summary:  # one setting may be published at two schedules (5-way 1-shot: 1,500 and 60,000)
            iterations = ", ".join(str(i) for i in sorted({int(c["iteration"]) for c in cross.checkpoints}))
            iterations += " (reduced)" if any(c.get("reduced_schedule") for c in cross.checkpoints) else ""
        for r in summary or []:
            if r["seeds"] != "different":
                continue
            published = [paper.paper_value("cross", paper.MINI_5_UNSTATED, r["pair"], m) for m in ("cca", "cka")]
            theirs = " / ".join(f"{v.value:.2f}" for v in published) if all(published) else "—"
            lines.append(f"| {paper.setting_label(cross.setting)} | {iterations} | {r['pair']} | {len(r['models'])} | "
                         f"{report.format_mean_std(r.get('cca'))} | "
                         f"{report.format_mean_std(r.get('cka'))} | {theirs} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="*", type=Path,
                   default=[Path(f"checkpoints/omniglot_{s}") for s in ("20w1s", "20w5s", "5w1s_reduced", "5w1s")])
    args = p.parse_args(argv)
    try:
        text = table(args.folders) + "\n" + cross_table(args.folders)
    except RepsimError as e:
        print(f"reproduction_table: error: {e}", file=sys.stderr)
        return 1
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
