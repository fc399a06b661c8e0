"""Turn a results folder written by ``repsim analyze`` into figures, report.md and report.html.

    write_report("results/")            # -> results/report.md (+ report.html, figures/*.png|pdf)

Every analysis present in the folder (NAME.csv with its provenance NAME.json) gets a table with
our numbers beside the paper's (PAPER.md, via :mod:`repsim.paper`) and, where the setting is the
same (data set, ways, shots), the difference; where it is not, the paper's nearest setting is
shown in a separate, labelled column and no difference is computed. Analyses that are absent or
unfinished are listed as missing. Figures are written as PNG and PDF, deterministically (no
timestamps) and atomically; report.md and report.html are written last. report.html is one
self-contained file: its figures are embedded as base64 PNG data URIs.

The report is built in this order, one module each: :mod:`~repsim.report.loading` reads the
folder, :mod:`~repsim.report.figures` draws, :mod:`~repsim.report.tables` and
:mod:`~repsim.report.verdict` write the text (with :mod:`~repsim.report.text`'s formatting and
:mod:`~repsim.report.cross`'s table-3 summaries) into a :class:`~repsim.report.document.Doc`,
which is rendered as Markdown and HTML.
"""

from __future__ import annotations

import os
from pathlib import Path

from repsim.errors import RepsimError
from repsim.io import atomic_write_text
from repsim.report.loading import _one_line, load_result, load_results
from repsim.report.text import _setting_text, caption, conventions_text
from repsim.report.document import Doc, render_markdown, render_html
from repsim.report.figures import _RC, FIGURES
from repsim.report.tables import (
    table_similarity, table_freezing, table_accuracy, table_cross, table_heads, table_regimes,
    table_through_training, table_weight_change, provenance)
from repsim.report.verdict import verdict, caveats
# the names other modules and recipes use
from repsim.report.cross import CROSS_PAIRS, SAME_SEED, cross_pairs, cross_summary, cross_summary_of, tag_seeds
from repsim.report.document import markdown_table
from repsim.report.loading import ANALYSES, Result
from repsim.report.text import format_mean_std

__all__ = ["write_report", "load_result", "load_results", "Result", "ANALYSES", "markdown_table", "format_mean_std",
           "cross_pairs", "cross_summary", "cross_summary_of", "tag_seeds", "CROSS_PAIRS", "SAME_SEED"]


_SECTIONS = [
    ("similarity", "Representation change in the inner loop (paper Figure 2)", table_similarity,
     "Per-layer similarity of each layer's representation before vs after the inner loop", True),
    ("freezing", "Freezing layers at test time (paper Table 1)", table_freezing,
     "Test accuracy when the inner loop leaves the frozen layers at their meta-learned values", False),
    ("accuracy", "Accuracy with the inner loop and with NIL (paper Tables 2 and 4)", table_accuracy, None, False),
    ("cross", "Similarity between models (paper Table 3)", table_cross,
     "Similarity of body-layer representations of different models on the same query points, no adaptation", True),
    ("regimes", "Training regimes, NIL-tested (paper Table 5)", table_regimes,
     "NIL test accuracy by training regime; bars are means over seeds, dots each seed", False),
    ("through_training", "Through training (paper Section 4.1)", table_through_training,
     "Accuracy and per-layer before/after similarity at intermediate checkpoints (with several seeds: "
     "mean over seeds, shaded from the lowest seed to the highest)", True),
    ("weight_change", "Relative weight change per layer (MAML / ANIL / BOIL)", table_weight_change,
     "Relative change of each layer's weights over the inner loop", False),
    ("heads", "What the head contributes (repsim ablation)", table_heads,
     "Test accuracy with the head adapted, removed (NIL), unadapted, zeroed or random", False),
]


def write_report(results_dir, figures_dir=None, title=None) -> Path:
    """Write figures (PNG + PDF), report.md and report.html for a results folder; return report.md's path."""
    results_dir = Path(results_dir)
    results, missing = load_results(results_dir)
    figures_dir = Path(figures_dir) if figures_dir is not None else results_dir / "figures"
    try:
        figures_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RepsimError(f"cannot write figures to {figures_dir} ({e.strerror}): choose a writable --figures folder") from None
    fig_rel = Path(os.path.relpath(figures_dir.resolve(), results_dir.resolve())).as_posix()

    import matplotlib
    pngs = {}
    with matplotlib.rc_context(_RC):
        for name, _, _, _, _ in _SECTIONS:
            if name in results and name in FIGURES:
                try:
                    pngs[name] = FIGURES[name](results[name], figures_dir)
                except RepsimError:
                    raise
                except (KeyError, ValueError, TypeError, IndexError) as e:
                    raise RepsimError(f"cannot plot {results_dir / (name + '.csv')} ({_one_line(e)}): "
                                      f"re-run the analysis that wrote it") from None

    datasets = sorted({_setting_text(r) for r in results.values()})
    title = title or f"repsim report: {', '.join(datasets)}"
    doc = Doc()
    doc.h(1, title)
    doc.p("Reproduction of Raghu et al. 2020, “Rapid Learning or Feature Reuse? Towards Understanding the "
          "Effectiveness of MAML”. Paper numbers come from PAPER.md; a difference (ours − paper) is given only "
          "where the setting (data set, ways, shots) is the same. Elsewhere the paper's nearest setting is shown "
          "in a column labelled with that setting, for orientation only.")
    doc.p(f"Training conventions: {conventions_text([c for r in results.values() for c in r.checkpoints])} "
          f"(see Provenance).")
    doc.h(2, "Verdict (measured)")
    doc.items(verdict(results) or ["No analysis with a verdict."])
    notes = caveats(results)
    if notes:
        doc.p("Caveats:")
        doc.items(notes)
    for name, heading, table_fn, fig_alt, conv in _SECTIONS:
        if name not in results:
            continue
        res = results[name]
        doc.h(2, heading)
        doc.p(f"Setting: {_setting_text(res)}; {res.study.get('tasks', '?')} test tasks.")
        try:
            table_fn(doc, res)
        except RepsimError:
            raise
        except (KeyError, ValueError, TypeError, IndexError) as e:
            raise RepsimError(f"cannot tabulate {results_dir / (name + '.csv')} ({_one_line(e)}): "
                              f"re-run the analysis that wrote it") from None
        if name in pngs:
            doc.figure(name, fig_alt, f"Figure ({name}). {fig_alt}. " + caption(res, conventions=conv))
        else:
            doc.p(caption(res))
    doc.h(2, "Provenance")
    provenance(doc, results, missing)
    if missing:
        doc.h(2, "Missing analyses")
        doc.p("Not in this folder; run `repsim analyze NAME ... --out` into it to add them:")
        doc.items(f"{name}: {why}" for name, why in missing.items())

    md = render_markdown(doc, fig_rel)
    page = render_html(doc, title, pngs)
    atomic_write_text(results_dir / "report.md", md)
    atomic_write_text(results_dir / "report.html", page)
    return results_dir / "report.md"
