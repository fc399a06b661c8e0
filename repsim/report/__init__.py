"""Turn a results folder written by ``repsim analyze`` into figures, report.md and report.html.

    write_report("results/")            # -> results/report.md (+ report.html, figures/)

Every analysis present in the folder (NAME.csv with its provenance NAME.json) gets a table with
our numbers beside the paper's (Raghu et al., ICLR 2020, arXiv:1909.09157, whose tables are
shipped as :mod:`repsim.paper`) and, where the setting is the same (data set, ways, shots), the
difference; where it is not, the paper's nearest setting is shown in a separate, labelled column
and no difference is computed. Analyses that are absent or unfinished are listed as missing.

Each figure is written into the figures folder at page width (NAME.png, NAME.pdf, 6.75 in) and
at column width (NAME-column.png, NAME-column.pdf, 3.25 in), with its provenance in NAME.json
beside them and in its caption in the report, never drawn into the image (see
:mod:`~repsim.report.figures`). Everything is written deterministically (no timestamps) and
atomically; report.md and report.html last. Both open with a table of contents whose links
point at the headings' anchors. report.html is one self-contained file: its figures are
embedded as base64 PNG data URIs.

Checkpoint files are named relative to the results folder where they are found (else by the
shortest end of their path that tells them apart), never by a machine's absolute path. A
report on checkpoints that repsim trained on the paper's recipes is titled a reproduction of
Raghu et al.; one on models with names of their own (``repsim import --name``) is titled
neutrally, with those names.

The report is built in this order, one module each: :mod:`~repsim.report.loading` reads the
folder, :mod:`~repsim.report.figures` draws, :mod:`~repsim.report.tables` and
:mod:`~repsim.report.verdict` write the text (with :mod:`~repsim.report.text`'s formatting and
:mod:`~repsim.report.cross`'s table-3 summaries) into a :class:`~repsim.report.document.Doc`,
which is rendered as Markdown and HTML.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from repsim.errors import RepsimError, one_line
from repsim.io import atomic_write_text
from repsim.names import REPORT_ORDER, declaration
from repsim.report.cross import SAME_SEED, cross_layer_table, cross_summary_of
from repsim.report.document import Doc, markdown_table, render_html, render_markdown
from repsim.report.figures import FIGURES, PAPER_CITATION, draw_figure, write_figure
from repsim.report.loading import Result, load_result, load_results
from repsim.report.tables import TABLES, provenance
from repsim.report.text import caption, conventions_text, display_name, format_mean_std, setting_text
from repsim.report.verdict import caveats, verdict

# the names other modules and recipes use
__all__ = ["write_report", "load_result", "load_results", "Result", "markdown_table", "format_mean_std",
           "cross_layer_table", "cross_summary_of", "SAME_SEED"]


# (stem, heading, table, figure caption or None, states the similarity conventions), in the report's order
_SECTIONS = [(d.stem, d.title, TABLES[d.stem], d.figure, d.similarity)
             for d in (declaration(name) for name in REPORT_ORDER)]


_REFERENCES = [
    f"{PAPER_CITATION}. Tables 1–5 and Figure 2 (read qualitatively): the paper columns of this report, "
    "as shipped in the package in `repsim.paper`.",
    "Chelsea Finn, Pieter Abbeel, Sergey Levine. Model-Agnostic Meta-Learning for Fast Adaptation of Deep "
    "Networks. ICML 2017. arXiv:1703.03400. The original MAML accuracies quoted beside Table 2 (Omniglot).",
    "Jaehoon Oh, Hyungjun Yoo, ChangHwan Kim, Se-Young Yun. BOIL: Towards Representation Change for Few-shot "
    "Learning. ICLR 2021. arXiv:2008.08882. The BOIL accuracies.",
]


def _own_and_recipe_names(results: dict[str, Result]) -> tuple[list[str], list[str]]:
    """The models with names of their own (``repsim import --name``, or told apart by their
    file: a checkpoint whose model is not its algorithm), and the algorithms (display names) of
    repsim's training of the paper's recipes (a checkpoint whose model is its algorithm), each in
    the order they appear."""
    own, recipes = {}, {}
    for r in results.values():
        for c in r.prov.get("checkpoints") or []:
            if c["model"] != c.get("algorithm"):
                own.setdefault(str(c["model"]), None)
            else:
                recipes.setdefault(display_name(c["model"]), None)
    return list(own), list(recipes)


def _model_names(results: dict[str, Result]) -> list[str]:
    names = {}
    for r in results.values():
        for c in r.checkpoints:
            if isinstance(c, dict):
                names.setdefault(display_name(c.get("algorithm", "?")), None)
    return list(names)


def _display_files(results: dict[str, Result], results_dir: Path) -> dict[str, Result]:
    """``results`` with each checkpoint's file named as a reader of the folder can find it: relative
    to the results folder where the file is there (at most two folders up; a relative path is
    looked for from the results folder's parents, then from here), else by the shortest end of
    its path that tells it apart from the others, never by an absolute path."""
    root = results_dir.resolve()
    paths = _checkpoint_files(results)
    parts = {p: [x for x in Path(p).parts if x != Path(p).anchor] for p in paths}
    shown = {p: _in_folder(p, root) for p in paths}
    shown = {p: _distinct_end(p, parts) if rel is None else rel for p, rel in shown.items()}
    return {name: _with_files_shown(r, shown) for name, r in results.items()}


def _checkpoint_files(results: dict[str, Result]) -> list[str]:
    """Every checkpoint file the analyses name, once each."""
    return sorted({str(c["checkpoint"]) for r in results.values() for c in r.prov.get("checkpoints") or []
                   if isinstance(c, dict) and c.get("checkpoint")})


def _in_folder(path: str, root: Path) -> str | None:
    """``path`` relative to the results folder ``root``, where it is found there and a reader
    of the folder has it too; None otherwise."""
    q = Path(path)
    candidates = [q] if q.is_absolute() else [a / q for a in (root, *root.parents)] + [Path.cwd() / q]
    found = next((c for c in candidates if c.exists()), None)
    if found is None:
        return None
    steps = Path(os.path.relpath(found.resolve(), root)).as_posix().split("/")
    # (a hidden folder on the way, .wip or .cache, is a scratch place no reader has)
    if steps.count("..") > 2 or any(s.startswith(".") and s != ".." for s in steps):
        return None
    return "/".join(steps)


def _distinct_end(path: str, parts: dict[str, list[str]]) -> str:
    """The shortest end of ``path`` that no other of the ``parts`` (each path's folders and
    name) shares."""
    # at least the run's folder for a run's own files (runs/maml-a/model.safetensors,
    # runs/maml-a/checkpoints/iter-000500.safetensors), and as much as tells it apart
    q = parts[path]
    k = 3 if len(q) >= 2 and q[-2] == "checkpoints" else 2 if Path(path).stem == "model" else 1
    while k < len(q) and any(o != path and parts[o][-k:] == q[-k:] for o in parts):
        k += 1
    return "/".join(q[-k:]) or path


def _with_files_shown(r: Result, shown: dict[str, str]) -> Result:
    ckpts = r.prov.get("checkpoints")
    if not ckpts:
        return r
    ckpts = [{**c, "checkpoint": shown.get(str(c.get("checkpoint")), c.get("checkpoint"))}
             if isinstance(c, dict) and c.get("checkpoint") else c for c in ckpts]
    return dataclasses.replace(r, prov={**r.prov, "checkpoints": ckpts})


def write_report(results_dir, figures_dir=None, title=None) -> Path:
    """Write figures (PNG + PDF at page and column width, a JSON sidecar each), report.md and
    report.html for a results folder; return report.md's path."""
    results_dir = Path(results_dir)
    results, missing = load_results(results_dir)
    results = _display_files(results, results_dir)
    figures_dir = _figures_folder(results_dir, figures_dir)
    drawn = _draw_figures(results, results_dir)
    title = title if title is not None else _default_title(results)
    doc = Doc()
    doc.h(1, title)
    _introduction(doc, results)
    _verdict_section(doc, results)
    for section in _SECTIONS:
        if section[0] in results:
            _analysis_section(doc, section, results[section[0]], drawn, results_dir, figures_dir)
    _closing_sections(doc, results, missing)

    fig_rel = Path(os.path.relpath(figures_dir.resolve(), results_dir.resolve())).as_posix()
    md = render_markdown(doc, fig_rel)
    page = render_html(doc, title, {name: d.png for name, d in drawn.items()})
    atomic_write_text(results_dir / "report.md", md)
    atomic_write_text(results_dir / "report.html", page)
    return results_dir / "report.md"


def _figures_folder(results_dir: Path, figures_dir) -> Path:
    """The figures folder (by default the results folder's ``figures/``), made if need be."""
    figures_dir = Path(figures_dir) if figures_dir is not None else results_dir / "figures"
    try:
        figures_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RepsimError(f"cannot write figures to {figures_dir} ({e.strerror}): "
                          "choose a writable --figures folder") from None
    return figures_dir


def _draw_figures(results: dict[str, Result], results_dir: Path) -> dict:
    """Each analysis's figure, in the report's order, drawn before any text is written: a
    result that cannot be plotted stops the report."""
    drawn = {}
    for name, _, _, _, _ in _SECTIONS:
        if name in results and name in FIGURES:
            try:
                drawn[name] = draw_figure(name, results[name])
            except RepsimError:
                raise
            except (KeyError, ValueError, TypeError, IndexError) as e:
                raise RepsimError(f"cannot plot {results_dir / (name + '.csv')} ({one_line(e)}): "
                                  f"re-run the analysis that wrote it") from None
    return drawn


def _default_title(results: dict[str, Result]) -> str:
    """A reproduction of Raghu et al. for repsim's own training of the paper's recipes; a
    neutral title naming the models for models with names of their own."""
    datasets = ", ".join(sorted({setting_text(r) for r in results.values()}))
    if _own_and_recipe_names(results)[0]:
        return f"repsim report: {', '.join(_model_names(results))} on {datasets}"
    return f"Reproduction of Raghu et al. 2020 with repsim: {datasets}"


_CITED = ("A. Raghu, M. Raghu, S. Bengio and O. Vinyals, “Rapid Learning or Feature Reuse? Towards "
          "Understanding the Effectiveness of MAML”, ICLR 2020 (arXiv:1909.09157)")


def _introduction(doc: Doc, results: dict[str, Result]) -> None:
    """What the report is (a reproduction, the paper's analyses applied to other models, or
    both side by side) and where its paper numbers and training conventions come from."""
    own, recipes = _own_and_recipe_names(results)
    if own:
        what = "is a model with a name of its own" if len(own) == 1 else "are models with names of their own"
        which = (f"Reproduction of {_CITED} for {', '.join(recipes)}, which repsim trained on the paper's recipes; "
                 if recipes else f"The analyses of {_CITED}, applied to {', '.join(_model_names(results))}. ")
        doc.p(f"{which}{', '.join(own)} {what} "
              f"(imported with `repsim import --name`, or told apart by its file or folder name from the other runs "
              f"of its algorithm: one of the same seed, or most of them, trained with other conventions), "
              f"not repsim's training of the paper's recipes: "
              f"{'it is' if len(own) == 1 else 'they are'} not a reproduction, "
              f"and the paper's numbers are shown beside {'it' if len(own) == 1 else 'them'} for orientation.")
    else:
        doc.p(f"Reproduction of {_CITED}, with checkpoints that repsim trained on the paper's recipes.")
    doc.p("The paper's numbers come from `repsim.paper`, the package's transcription of its Tables 1–5 (and of "
          "Figure 2, read qualitatively; see References). A difference (ours − paper) is given only where the "
          "setting (data set, ways, shots) is the same. Elsewhere the paper's nearest setting is shown in a "
          "column labelled with that setting, for orientation only.")
    doc.p(f"Training conventions: {conventions_text([c for r in results.values() for c in r.checkpoints])} "
          f"(see Provenance).")


def _verdict_section(doc: Doc, results: dict[str, Result]) -> None:
    doc.h(2, "Verdict (measured)")
    doc.items(verdict(results) or ["No analysis with a verdict."])
    notes = caveats(results)
    if notes:
        doc.p("Caveats:")
        doc.items(notes)


def _analysis_section(doc: Doc, section: tuple, res: Result, drawn: dict, results_dir: Path, figures_dir: Path) -> None:
    """One analysis's section: its setting, its table beside the paper's, and its figure
    (written here, with the caption that carries its provenance) or its caption alone."""
    name, heading, table_fn, fig_alt, conv = section
    doc.h(2, heading)
    doc.p(f"Setting: {setting_text(res)}; {res.study.get('tasks', '?')} test tasks.")
    try:
        table_fn(doc, res)
    except RepsimError:
        raise
    except (KeyError, ValueError, TypeError, IndexError) as e:
        raise RepsimError(f"cannot tabulate {results_dir / (name + '.csv')} ({one_line(e)}): "
                          f"re-run the analysis that wrote it") from None
    if name not in drawn:
        doc.p(caption(res))
        return
    number = list(drawn).index(name) + 1  # figures are numbered in the report's order
    cap = f"Figure {number} ({name}). {fig_alt}; {drawn[name].note}. " + caption(res, conventions=conv)
    write_figure(drawn[name], res, figures_dir, cap)
    doc.figure(name, fig_alt, cap, links=[("PDF", f"{name}.pdf"), ("column-width PDF", f"{name}-column.pdf"),
                                          ("provenance", f"{name}.json")])


def _closing_sections(doc: Doc, results: dict[str, Result], missing: dict[str, str]) -> None:
    """Provenance of every result, the analyses the folder lacks, and the references."""
    doc.h(2, "Provenance")
    provenance(doc, results, missing)
    if missing:
        doc.h(2, "Missing analyses")
        doc.p("Not in this folder; run `repsim analyze NAME ... --out` into it to add them:")
        doc.items(f"{name}: {why}" for name, why in missing.items())
    doc.h(2, "References")
    doc.items(_REFERENCES)
