"""One table per analysis: our numbers beside the paper's (:mod:`repsim.paper`), with the
difference where the setting (data set, ways, shots) is the same."""

from __future__ import annotations

import pandas as pd

from repsim import paper
from repsim.names import HEAD
from repsim.report.cross import cross_layer_table, cross_summary_of
from repsim.report.document import Doc
from repsim.report.loading import Result, unknown_seed
from repsim.report.text import (
    change_text,
    ci_range_text,
    ci_text,
    conventions_text,
    display_name,
    format_mean_std,
    iteration_cell,
    iteration_text,
    number_text,
    reduced_mark,
    seeds_cell,
    setting_text,
    std_text,
)

CHANGE_HEADER = "change vs {} (points, paired 95% CI per seed)"


class _PaperColumns:
    """Paper columns for one table: 'paper' + 'ours − paper' when the setting matches,
    else one column labelled with the paper's nearest setting and no difference."""

    def __init__(self, table: str, setting, label="paper", digits=1):
        self.table, self.digits, self.label = table, digits, label
        self.matches = paper.normalise_setting(setting) in paper.settings(table)
        self.setting = paper.normalise_setting(setting) if self.matches else paper.nearest_setting(table, setting)

    def headers(self):
        if self.matches:
            return [self.label, "ours − paper"]
        return [f"{self.label} ({paper.setting_label(self.setting)}), not the same setting"]

    def cells(self, ours, row, col):
        v = paper.paper_value(self.table, self.setting, row, col) if row is not None else None
        if v is None:
            return ["—", "—"] if self.matches else ["—"]
        if self.matches:
            return [v.format(self.digits),
                    number_text(ours - v.value, self.digits, signed=True) + (" (?)" if v.uncertain else "")]
        return [v.format(self.digits)]

    def value(self, row, col):
        return paper.paper_value(self.table, self.setting, row, col)


def table_similarity(doc: Doc, res: Result):
    t = res.table
    measures = [m for m in ("cca", "cka") if m in set(t["measure"])]
    spread = "seed_std" in t
    headers = ["algorithm", "layer"] + [f"{m.upper()} (± 95% CI)" for m in measures] + ["tasks (n)", "seeds"]
    headers += [f"std over seeds ({' / '.join(m.upper() for m in measures)})"] if spread else []
    ref = paper.TABLES["similarity"][paper.MINI_5_UNSTATED]
    headers += [f"paper Figure 2, {m.upper()} (read qualitatively; MiniImageNet 5w)" for m in measures]
    rows = []
    for (a, layer), g in t.groupby(["algorithm", "layer"], sort=False):
        g = g.set_index("measure")
        row = [display_name(a) + reduced_mark(res, a, None, None), layer]
        for m in measures:
            row.append(f"{g.loc[m, 'mean']:.3f} {ci_text(g.loc[m, 'ci95'], 3)}" if m in g.index else "—")
        first = g.iloc[0]
        row += [iteration_text(first["n"]) if "n" in g else "?",
                iteration_text(first["seeds"]) if "seeds" in g else "?"]
        if spread:
            row.append(" / ".join(number_text(g.loc[m, "seed_std"], 3) if m in g.index and first["seeds"] > 1 else "—"
                                  for m in measures))
        kind = "head" if layer == HEAD else "body"
        for m in measures:
            v = ref.get(kind, {}).get(m)
            row.append(v.format() if v else "—")
        rows.append(row)
    doc.table(headers, rows)


def table_freezing(doc: Doc, res: Result):
    pc = _PaperColumns("freezing", res.setting)
    pe = _PaperColumns("freezing", res.setting, label="paper, earlier version")
    headers = ["algorithm", "iteration", "frozen", "seeds", "ours (%)", "std over seeds", "95% CI (per seed)",
               CHANGE_HEADER.format("unfrozen")] + pc.headers() + pe.headers()
    rows = []
    for r in res.over_seeds():
        a = r["algorithm"]
        prow = r["frozen"] if a == "maml" else None
        rows.append([display_name(a) + reduced_mark(res, a, r["seeds"], r["iteration"]),
                     iteration_cell(res, a, r["iteration"]), r["frozen"].replace(",", ", "),
                     seeds_cell(res, a, r["seeds"]),
                     number_text(r["mean"]), std_text(r), ci_range_text(r["cis"]), change_text(r)]
                    + pc.cells(r["mean"], prow, "accuracy") + pe.cells(r["mean"], prow, "accuracy (earlier version)"))
    doc.table(headers, rows)
    doc.p("Paper: Raghu et al. 2020 Table 1 (MAML-trained, MiniImageNet 5-way), mean ± std; (?) marks values "
          "the paper's text leaves uncertain (repsim.paper). Paper values are shown for MAML rows only.")


def decomposed_rows(res: Result) -> list[dict]:
    """Per (algorithm, iteration, frozen set): each decomposition quantity over seeds
    (:meth:`Result.over_seeds`'s dict, keyed by quantity)."""
    rows = {}
    for r in res.over_seeds():
        rows.setdefault((r["algorithm"], r["iteration"], r["frozen"]), {})[r["quantity"]] = r
    return [{"algorithm": a, "iteration": it, "frozen": f, **q} for (a, it, f), q in rows.items()]


def table_freezing_decomposed(doc: Doc, res: Result):
    headers = ["algorithm", "iteration", "frozen", "seeds", "paper protocol (%)", "fitted head (%)",
               "prototypes (%)", "cost: total", "cost: features (± paired 95% CI per seed)",
               "cost: head optimisation (±)", "lr × λmax", "support accuracy (%)", "support cosine"]
    rows = []
    for r in decomposed_rows(res):
        a, first = r["algorithm"], r["paper protocol"]

        def mean(q, digits=1):
            return number_text(r[q]["mean"], digits) if q in r else "—"

        def cost(q):
            return (f"{number_text(r[q]['mean'], 1)} ({ci_range_text(r[q]['cis'], 1)})" if q in r else "—")
        rows.append([display_name(a) + reduced_mark(res, a, first["seeds"], r["iteration"]),
                     iteration_cell(res, a, r["iteration"]), r["frozen"].replace(",", ", "),
                     seeds_cell(res, a, first["seeds"]), mean("paper protocol"), mean("fitted head"),
                     mean("prototypes"), mean("cost: total"), cost("cost: features"),
                     cost("cost: head optimisation"), mean("lr x curvature", 2), mean("support accuracy"),
                     mean("support cosine", 2)])
    doc.table(headers, rows)
    doc.p("The paper's freezing protocol adapts what is not frozen with the checkpoint's own inner loop "
          "(paper protocol); its cost, against the full inner loop on the same tasks, is split in two. "
          "**Features**: the full inner loop against a head fitted to convergence (multinomial logistic "
          "regression, L2 1e-3) on the penultimate features that the frozen inner loop leaves, the support "
          "set only. **Head optimisation**: that fitted head against the protocol's own steps. Prototypes: "
          "cosine similarity to the class means of the same features. lr × λmax: the inner step size times "
          "the largest eigenvalue of the head's support-loss Hessian at the meta-learned head; above 2, "
          "a gradient step on the head can overshoot (descent is no longer guaranteed; whether it fails shows in "
          "the support accuracy after the steps). Support cosine: mean pairwise cosine of the support "
          "features (near 1: nearly collinear). Means over seeds; the CIs are each seed's paired 95% CIs "
          "over tasks.")


def _other_published(setting, alg, mode) -> str:
    out = []
    if mode == "inner-loop":
        v = (paper.paper_value("maml_original", setting, "MAML (Finn et al. 2017)", "inner-loop")
             if alg == "maml" else None)
        if v:
            out.append(f"Finn et al. 2017: {v.format()}")
        v = paper.paper_value("boil", setting, display_name(alg), "inner-loop")
        if v:
            out.append(f"Oh et al. 2021: {v.format()}")
    elif mode == "nil":
        v = paper.paper_value("regimes", setting, alg, "nil")
        if v and not (alg == "anil" and paper.paper_value("nil", setting, "ANIL", "nil")):
            out.append(f"Raghu et al. Table 5: {v.format()}")
    return "; ".join(out) or "—"


def table_accuracy(doc: Doc, res: Result):
    pc = _PaperColumns("maml_vs_anil", res.setting, label="paper")
    headers = ["algorithm", "iteration", "test mode", "seeds", "tasks", "ours (%)", "std over seeds",
               "95% CI (per seed)", CHANGE_HEADER.format("inner loop")]
    headers += pc.headers() + ["paper source", "other published (same setting)"]
    rows = []
    setting = paper.normalise_setting(res.setting)
    for r in res.over_seeds():
        a, mode = r["algorithm"], r["mode"]
        # every paper number in this table comes from one setting: the matched one, else the
        # nearest setting named in the column header
        col = "nil" if mode == "nil" else "inner-loop"
        if mode == "nil":
            table, row = ("nil", "ANIL") if a == "anil" else ("regimes", a)
        else:
            table, row = "maml_vs_anil", display_name(a)
        v = paper.paper_value(table, pc.setting, row, col)
        if v is None:
            cells = ["—", "—"] if pc.matches else ["—"]
        elif pc.matches:
            cells = [v.format(), number_text(r["mean"] - v.value, signed=True) + (" (?)" if v.uncertain else "")]
        else:
            cells = [v.format()]
        source = f"{v.source}, {v.where}" if v else "—"
        rows.append([display_name(a) + reduced_mark(res, a, r["seeds"], r["iteration"]),
                     iteration_cell(res, a, r["iteration"]), "NIL" if mode == "nil" else mode,
                     seeds_cell(res, a, r["seeds"]),
                     r["tasks"] if r["tasks"] is not None else "?",
                     number_text(r["mean"]), std_text(r), ci_range_text(r["cis"]),
                     change_text(r) if mode == "nil" else "—"] + cells
                    + [source, _other_published(setting, a, mode) if pc.matches else "—"])
    doc.table(headers, rows)
    doc.p("Inner-loop rows: Raghu et al. Table 2. NIL rows: Table 4 (ANIL) or Table 5 (other algorithms). "
          "Paper numbers are mean ± std over 3 seeds; ours are the mean over seeds, with the sample std "
          "over seeds where there are several and the per-seed 95% CI over test tasks.")


def _cross_layers(doc: Doc, table: pd.DataFrame, keys: list[str]):
    """Per layer: mean ± 95% CI over tasks, one row per ``keys`` and measure."""
    layers = list(dict.fromkeys(table["layer"]))
    rows = []
    for key, g in table.groupby(keys + ["measure"], sort=False):
        sub = g.set_index("layer")
        rows.append(list(key[:-1]) + [key[-1].upper()]
                    + [f"{sub.loc[layer, 'mean']:.3f} {ci_text(sub.loc[layer, 'ci95'], 3)}"
                       if layer in sub.index else "—" for layer in layers])
    doc.table(keys + ["measure"] + layers, rows)


def table_cross(doc: Doc, res: Result):
    pc = {m: _PaperColumns("cross", res.setting, label=f"paper {m.upper()}", digits=2) for m in ("cca", "cka")}
    summary = cross_summary_of(res)
    rows = []
    for r in summary:
        row = [r["pair"], r["seeds"], str(len(r["models"]))]
        for m in ("cca", "cka"):
            paper_cells = (pc[m].cells(r[m][0], r["pair"], m) if r["seeds"] == "different" and m in r
                           else ["—"] * len(pc[m].headers()))
            row += [format_mean_std(r.get(m))] + paper_cells
        rows.append(row)
    headers = ["pair", "seeds", "model pairs"]
    for m in ("cca", "cka"):
        headers += [f"{m.upper()} (body layers; mean ± std over model pairs)"] + pc[m].headers()
    doc.table(headers, rows)
    doc.p("Paper table 3 compares models trained from different seeds. Models of one seed start from the "
          "same weights (ANIL and MAML; one algorithm twice is one run), so they are listed apart, "
          "without the paper's numbers.")
    doc.p("Per layer (mean ± 95% CI over tasks):")
    _cross_layers(doc, cross_layer_table(res), ["pair", "seeds"])
    doc.p("Models compared:")
    doc.items([f"{r['pair']}, seeds {r['seeds']}: " + "; ".join(f"{a} vs {b}" for a, b in r["models"])
               for r in summary])
    doc.p("Paper: Raghu et al. Table 3, body layers averaged, across seeds (its data setting is not stated "
          "in the paper beyond the representation analysis' 5-way MiniImageNet tasks).")


def table_heads(doc: Doc, res: Result):
    rows = []
    for r in res.over_seeds():
        rows.append([display_name(r["algorithm"]) + reduced_mark(res, r["algorithm"], r["seeds"], r["iteration"]),
                     iteration_cell(res, r["algorithm"], r["iteration"]), r["variant"],
                     seeds_cell(res, r["algorithm"], r["seeds"]),
                     number_text(r["mean"]), std_text(r), ci_range_text(r["cis"]),
                     change_text(r) if r["variant"] != "trained inner loop" else "—"])
    doc.table(["algorithm", "iteration", "head variant", "seeds", "ours (%)", "std over seeds", "95% CI (per seed)",
               CHANGE_HEADER.format("trained inner loop")], rows)
    doc.p("No published numbers: an ablation of the head added by repsim.")


def table_regimes(doc: Doc, res: Result):
    pc = _PaperColumns("regimes", res.setting, label="paper (Table 5, NIL)")
    rows = []
    for r in res.over_seeds():
        reg = r["regime"]
        red = "†" if any(res.reduced(reg, s) for s in r["seeds"]) else ""
        rows.append([reg + red, paper.REGIME_NAMES.get(reg, "—"), seeds_cell(res, reg, r["seeds"]),
                     number_text(r["mean"]), std_text(r), ci_range_text(r["cis"])] + pc.cells(r["mean"], reg, "nil"))
    doc.table(["regime", "paper's name", "seeds", "ours NIL (%)", "std over seeds", "95% CI (per seed)"]
              + pc.headers(), rows)


def table_through_training(doc: Doc, res: Result):
    t, body = res.table, res.extras["body"]
    rows = []
    measures = [m for m in ("cca", "cka") if m in set(t["metric"])]
    # the body-frozen accuracies are measured since the freezing decomposition; the committed
    # 1,500-iteration references' through-training predates it and shows the other columns
    accuracies = [m for m in ("accuracy (inner-loop)", "accuracy (nil)", "accuracy (body frozen)",
                              "accuracy (body frozen, fitted head)") if m in set(t["metric"])]
    for (a, s, it), g in t.groupby(["algorithm", "seed", "iteration"], sort=False):
        row = [display_name(a) + ("†" if res.reduced(a, s, it) else ""), seeds_cell(res, a, [s]),
               iteration_cell(res, a, it)]
        for metric in accuracies:
            sub = g[g["metric"] == metric]
            row.append(f"{sub['mean'].iloc[0]:.1f} {ci_text(sub['ci95'].iloc[0])}" if len(sub) else "—")
        for m in measures:  # the runner's through_training_body.csv
            b = body[(body["algorithm"] == a) & (body["seed"] == s) & (body["iteration"] == it) & (body["metric"] == m)]
            row.append(f"{b['body_mean'].iloc[0]:.3f} ({b['body_min'].iloc[0]:.2f}–{b['body_max'].iloc[0]:.2f})"
                       if len(b) else "—")
            row.append(f"{b['head_mean'].iloc[0]:.3f}" if len(b) and pd.notna(b["head_mean"].iloc[0]) else "—")
        rows.append(row)
    names = {"accuracy (inner-loop)": "accuracy inner loop (%)", "accuracy (nil)": "accuracy NIL (%)",
             "accuracy (body frozen)": "body frozen, paper protocol (%)",
             "accuracy (body frozen, fitted head)": "body frozen, fitted head (%)"}
    headers = ["algorithm", "seed", "iteration"] + [names[m] for m in accuracies]
    for m in measures:
        headers += [f"{m.upper()} body (mean; range)", f"{m.upper()} head"]
    doc.table(headers, rows)
    doc.p("Paper: the same pattern (body layers barely change, the head does) already holds early in training "
          "(checkpoints at 10k/20k/30k iterations); it publishes no table for this.")


def table_weight_change(doc: Doc, res: Result):
    t = res.table
    algs = list(dict.fromkeys(t["algorithm"]))
    rows = []
    for layer in dict.fromkeys(t["layer"]):
        row = [layer]
        for a in algs:
            sub = t[(t["algorithm"] == a) & (t["layer"] == layer)]
            row.append(f"{sub['mean'].iloc[0]:.4f} {ci_text(sub['ci95'].iloc[0], 4)}" if len(sub) else "—")
        rows.append(row)
    doc.table(["layer"] + [f"{display_name(a)}{reduced_mark(res, a, None, None)} (± 95% CI)" for a in algs], rows)
    doc.p("Relative weight change ‖θ′−θ‖/‖θ‖ of each layer over the inner loop (test-time steps). "
          "No published numbers: BOIL (Oh et al. 2021) compares representations, not weights. "
          "Changes above 1 are not a contradiction: under Finn et al.'s conventions each inner step is "
          "`ways` times the mean-loss step (the support loss summed over the set, divided by the shots), "
          "and BatchNorm without scale normalises every convolution's output, so a layer's weights can "
          "grow or shrink severalfold while what it computes changes far less (see the similarity table).")


def provenance(doc: Doc, results: dict[str, Result], missing: dict[str, str]):
    rows = []
    for name, r in results.items():
        s = r.study
        ckpts = "; ".join(f"{display_name(c.get('algorithm', '?'))} " + (
                          "imported" if c.get("imported") else f"s{c.get('seed', '?')} it{c.get('iteration', '?')}")
                          + ("†" if c.get("reduced_schedule") else "") for c in r.checkpoints) or "?"
        tested = f"; tested with {s['test_overrides']}" if s.get("test_overrides") else ""
        rows.append([name, f"{s.get('dataset', '?')} ({s.get('split', '?')})", setting_text(r) + tested,
                     s.get("queries", "?"), f"{s.get('tasks', '?')} (seed {s.get('task_seed', '?')})", ckpts,
                     r.prov.get("created", "?"), r.prov.get("repsim_version", "?"), r.prov.get("command") or "—"])
    doc.table(["analysis", "data (split)", "setting", "queries/class", "tasks (task seed)", "checkpoints",
               "created", "repsim", "command"], rows)
    cis = sorted({r.study["confidence_interval"] for r in results.values()})
    conv = sorted({r.study.get("conventions", "?") for r in results.values()})
    trained = conventions_text([c for r in results.values() for c in r.checkpoints])
    doc.items([f"Confidence intervals: {c}." for c in cis] + [f"Similarity conventions: {c}." for c in conv]
              + [f"Training conventions: {trained} (repsim.config: `finn` is the TensorFlow MAML "
                 f"of Finn et al. that the paper ran, `pytorch` the PyTorch libraries' defaults)."]
              + ["Query points: BatchNorm normalises each task's query batch (ways × queries per class "
                 "points) with its own statistics, so accuracies depend on the number of queries: the "
                 "analyses use the queries/class above; `repsim evaluate` and the MANIFESTs use each "
                 "checkpoint's `test_queries` (Finn et al.'s: shots per class)."])
    ck = []
    for name, r in results.items():
        for c in r.checkpoints:
            trained = f"{c.get('dataset', '?')} {c.get('ways', '?')}w{c.get('shots', '?')}s"
            imported = c.get("imported")
            ck.append([name, display_name(c.get("algorithm", "?")),
                       "unknown" if unknown_seed(c) else c.get("seed", "?"),
                       "imported" if imported else c.get("iteration", "?"),
                       trained, c.get("convention_summary", "pytorch conventions"),
                       "—" if imported else "yes †" if c.get("reduced_schedule") else "no",
                       f"`{c.get('checkpoint', '?')}`"])
    if ck:
        doc.p("Checkpoints:")
        doc.table(["analysis", "algorithm", "seed", "iteration", "trained on", "conventions",
                   "reduced schedule", "file"], ck)


# each analysis' table, by its result stem (repsim.names.DECLARATIONS)
TABLES = {"similarity": table_similarity, "freezing": table_freezing,
          "freezing_decomposed": table_freezing_decomposed, "accuracy": table_accuracy, "cross": table_cross,
          "heads": table_heads, "regimes": table_regimes, "through_training": table_through_training,
          "weight_change": table_weight_change}
