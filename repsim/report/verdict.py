"""The report's verdict, one measured sentence per finding, and its caveats (fewer test tasks
than the paper, reduced training schedules)."""

from __future__ import annotations

import math

from repsim import paper
from repsim.names import HEAD
from repsim.report.cross import cross_summary_of
from repsim.report.loading import Result
from repsim.report.text import (
    PAPER_ITERATIONS,
    PAPER_TASKS,
    ci_text,
    display_name,
    format_mean_std,
    frozen_label,
    iteration_phrase,
    iteration_text,
    layer_span,
    range_text,
    values_text,
)


def verdict(results: dict[str, Result]) -> list[str]:
    """One measured sentence per finding, analysis by analysis, in the report's order."""
    return [line for name, say in VERDICTS if name in results for line in say(results[name])]


def _figure2(kind: str, measure: str) -> float:
    """The paper's qualitative reading of Figure 2 (MiniImageNet 5-way): body CCA > 0.9, head < 0.5."""
    return paper.TABLES["similarity"][paper.MINI_5_UNSTATED][kind][measure].value


def similarity_verdict(res: Result) -> list[str]:
    """Per algorithm: which layers change in the inner loop, against Figure 2's pattern."""
    out, t = [], res.table
    body_reuse, head_change = _figure2("body", "cca"), _figure2("head", "cca")
    for a in dict.fromkeys(t["algorithm"]):
        sub = t[t["algorithm"] == a]
        parts, cca = [], sub[sub["measure"] == "cca"].set_index("layer")["mean"]
        for m in ("cca", "cka"):
            s = sub[sub["measure"] == m].set_index("layer")["mean"]
            body = [layer for layer in s.index if layer != HEAD]
            if body:
                txt = f"{layer_span(body)} {m.upper()} {range_text(s[body])}"
                if HEAD in s.index:
                    txt += f" vs head {s[HEAD]:.2f}"
                parts.append(txt)
        body = [layer for layer in cca.index if layer != HEAD]
        judgement = ""
        if body and HEAD in cca.index:
            low = [layer for layer in body if cca[layer] < body_reuse]
            if not low and cca[HEAD] < head_change:
                judgement = ("the pattern the paper reports as feature reuse "
                             f"(body CCA > {body_reuse:g}, head < {head_change:g})")
            elif min(cca[body]) > cca[HEAD]:
                judgement = ("the head changes most"
                             + (f"; {', '.join(low)} CCA below the paper's {body_reuse:g}" if low else "")
                             + ("" if cca[HEAD] < head_change else f"; head CCA not below the paper's {head_change:g}"))
            else:
                judgement = "some body layer changes as much as the head or more: not the paper's feature-reuse pattern"
        cka = sub[sub["measure"] == "cka"].set_index("layer")["mean"]
        split = [layer for layer in body if layer in cka.index and cca[layer] < body_reuse <= cka[layer]]
        if split:  # the two measures disagree: say why, rather than leave two verdicts side by side
            judgement += (f"{'; ' if judgement else ''}{layer_span(split)}: CCA below {body_reuse:g} but CKA above "
                          f"it, since mean CCA weighs every canonical direction alike and CKA weighs them by "
                          f"variance, the inner loop moves low-variance directions of "
                          f"{'this layer' if len(split) == 1 else 'these layers'} and leaves the dominant ones")
        if parts:
            out.append(f"Representation change ({display_name(a)}): " + "; ".join(parts)
                       + (f": {judgement}." if judgement else "."))
    return out


def freezing_verdict(res: Result) -> list[str]:
    """Freezing the whole body at test time: the change, judged by its paired CI (Table 1)."""
    out = []
    for r_none, r_all in _freeze_pairs(res):
        d = r_all["mean"] - r_none["mean"]
        ci = max(r_all["change_cis"])  # paired over tasks: the interval the change itself has
        within = f"{'within' if abs(d) <= ci else 'larger than'} its paired 95% CI per seed, {ci_text(ci)}"
        a = r_none["algorithm"]
        txt = (f"Freezing ({display_name(a)}, {iteration_phrase(res, a, r_none['iteration'])}, "
               f"{len(r_none['seeds'])} seed{'s' if len(r_none['seeds']) > 1 else ''}): freezing "
               f"{frozen_label(r_all['frozen'])} changes accuracy {r_none['mean']:.1f} → {r_all['mean']:.1f}% "
               f"({d:+.1f} points; {within})")
        p0 = paper.paper_value("freezing", res.setting, "none", "accuracy")
        p1 = paper.paper_value("freezing", res.setting, r_all["frozen"], "accuracy")
        if r_none["algorithm"] == "maml" and p0 and p1:
            txt += f"; paper, same setting: {p0.value:.1f} → {p1.value:.1f} ({p1.value - p0.value:+.1f})"
        out.append(txt + ".")
    return out


def freezing_decomposed_verdict(res: Result) -> list[str]:
    """Feature reuse judged on the features' part of the freezing cost, not the paper's protocol."""
    from repsim.report.tables import decomposed_rows
    from repsim.statistics import FEATURE_REUSE_POINTS

    out = []
    rows = decomposed_rows(res)
    for (a, it), group in _groups(rows).items():
        frozen = [r for r in group if r["frozen"] != "none" and "cost: features" in r]
        if not frozen:
            continue
        r = max(frozen, key=lambda r: len(r["frozen"].split(",")))
        total, feat, head = (r[q]["mean"] for q in ("cost: total", "cost: features", "cost: head optimisation"))
        ci = max(r["cost: features"]["cis"])
        seeds = len(r["paper protocol"]["seeds"])
        reused = feat <= FEATURE_REUSE_POINTS
        txt = (f"Freezing, decomposed ({display_name(a)}, {iteration_phrase(res, a, it)}, {seeds} "
               f"seed{'s' if seeds > 1 else ''}): freezing {frozen_label(r['frozen'])} costs {total:.1f} points in "
               f"the paper's protocol; of these, {feat:.1f} ({ci_text(ci)} paired, per seed) are the features' "
               f"(a head fitted to convergence on them reaches {r['fitted head']['mean']:.1f}%) and {head:.1f} "
               f"the inner loop's failure to fit the head")
        if "lr x curvature" in r:
            lc = r["lr x curvature"]["mean"]
            txt += (f" (lr × λmax {lc:.1f}: {'above 2, its first step can overshoot' if lc > 2 else 'below 2'}; "
                    f"support accuracy after the steps {r['support accuracy']['mean']:.0f}%)")
        verdict_text = ("the features are reused" if reused
                        else "the features change in the inner loop (rapid learning)")
        dominated = head > max(feat, FEATURE_REUSE_POINTS)  # and material: not a near-zero cost split
        txt += (f". Judged on the features (reuse: a cost of at most {FEATURE_REUSE_POINTS:g} points), "
                f"{verdict_text}"
                + ("; the paper's protocol alone is dominated by head optimisation" if dominated else "") + ".")
        out.append(txt)
    return out


def _groups(rows) -> dict:
    by = {}
    for r in rows:
        by.setdefault((r["algorithm"], r["iteration"]), []).append(r)
    return by


def accuracy_verdict(res: Result) -> list[str]:
    """NIL against each model's own inner loop (Tables 2 and 4)."""
    out = []
    rows = {(r["algorithm"], r["iteration"], r["mode"]): r
            for r in res.over_seeds()}
    for (a, it, mode), r in rows.items():
        if mode != "nil" or (a, it, "inner-loop") not in rows:
            continue
        inner = rows[(a, it, "inner-loop")]
        d = r["mean"] - inner["mean"]
        spread = f"paired 95% CI per seed {ci_text(max(r['change_cis']))}"
        txt = (f"NIL vs inner loop ({display_name(a)}, {iteration_phrase(res, a, it)}): "
               f"NIL {r['mean']:.1f}% vs inner loop {inner['mean']:.1f}% ({d:+.1f} points; {spread})")
        pn = (paper.paper_value("nil", res.setting, "ANIL", "nil") if a == "anil"
              else paper.paper_value("regimes", res.setting, a, "nil"))
        pi = paper.paper_value("maml_vs_anil", res.setting, display_name(a), "inner-loop")
        if pn and pi:
            txt += f"; paper, same setting: NIL {pn.value:.1f} vs {pi.value:.1f} ({pn.value - pi.value:+.1f})"
        out.append(txt + ".")
    return out


def _table3_text() -> str:
    rows = paper.TABLES["cross"][paper.MINI_5_UNSTATED].values()
    def span(m):
        return range_text([r[m].value for r in rows])
    return (f" (paper Table 3, MiniImageNet 5-way, models of different seeds: CCA {span('cca')}, "
            f"CKA {span('cka')})")


def cross_verdict(res: Result) -> list[str]:
    """Body-layer similarity across models, seeds kept apart from shared initialisations (Table 3)."""
    summary = cross_summary_of(res)

    def similarities(rows):
        return "; ".join(f"{r['pair']} {format_mean_std(r.get('cca'), 2)} / {format_mean_std(r.get('cka'), 2)}"
                         for r in rows)
    across = [r for r in summary if r["seeds"] == "different"]
    shared = [r for r in summary if r["seeds"] != "different"]
    text = ("Similarity between models of different seeds (CCA / CKA, body layers averaged, ± std over "
            "model pairs): " + (similarities(across) or "no such models") + _table3_text())
    if shared:
        text += "; models of one seed, which start from the same weights: " + similarities(shared)
    return [text + "."]


def weight_change_verdict(res: Result) -> list[str]:
    out, t = [], res.table
    for a in dict.fromkeys(t["algorithm"]):
        s = t[t["algorithm"] == a].set_index("layer")["mean"]
        body = [layer for layer in s.index if layer != HEAD]
        if body and HEAD in s.index:
            out.append(f"Weight change ({display_name(a)}): {layer_span(body)} move {range_text(s[body], 3)} "
                       f"of their norm, the head {s[HEAD]:.3f}.")
    return out


def regimes_verdict(res: Result) -> list[str]:
    rs = sorted(res.over_seeds(), key=lambda r: -r["mean"])
    return ["NIL accuracy by training regime: "
            + " > ".join(f"{display_name(r['regime'])} {r['mean']:.1f}%" for r in rs)
            + (f" (chance {res.chance:.0f}%)." if res.chance else ".")]


def through_training_verdict(res: Result) -> list[str]:
    out, body = [], res.extras["body"]  # per checkpoint: the body's lowest and highest layer, the head
    cca = body[body["metric"] == "cca"]
    for (a, s), g in cca.groupby(["algorithm", "seed"], sort=False):
        g = g.sort_values("iteration")
        parts = [f"iteration {iteration_text(r['iteration'])}: body CCA {range_text([r['body_min'], r['body_max']])}"
                 + ("" if math.isnan(r["head_mean"]) else f", head {r['head_mean']:.2f}")
                 for _, r in (g.iloc[[0, -1]] if len(g) > 1 else g).iterrows()]
        out.append(f"Through training ({display_name(a)} seed {iteration_text(s)}): " + "; ".join(parts) + ".")
    return out


# the report's order: (result name, what it says)
VERDICTS = (("similarity", similarity_verdict), ("freezing", freezing_verdict),
            ("freezing_decomposed", freezing_decomposed_verdict),
            ("accuracy", accuracy_verdict), ("cross", cross_verdict),
            ("weight_change", weight_change_verdict), ("regimes", regimes_verdict),
            ("through_training", through_training_verdict))


def _freeze_pairs(res: Result):
    rows = res.over_seeds()
    by = {}
    for r in rows:
        by.setdefault((r["algorithm"], r["iteration"]), []).append(r)
    for group in by.values():
        none = [r for r in group if r["frozen"] == "none"]
        frozen = [r for r in group if r["frozen"] != "none"]
        if none and frozen:
            yield none[0], max(frozen, key=lambda r: len(r["frozen"].split(",")))


def caveats(results: dict[str, Result]) -> list[str]:
    """What a reader must know before trusting the report's numbers, each in a line."""
    return [line for caveat in _CAVEATS for line in caveat(results)]


def _split_guessed(results: dict[str, Result]) -> list[str]:
    guessed = sorted({str(c["label"]) for r in results.values() for c in r.checkpoints
                      if c.get("split_guessed")})
    if not guessed:
        return []
    return [f"Test split guessed for {', '.join(guessed)}: imported without the split it was trained "
            f"with, it is tested on repsim's own shuffle of the characters, some of which it may have "
            f"trained on (its accuracies can be too high); import it again with --set split_scheme=...."]


def _data_set_without_paper(results: dict[str, Result]) -> list[str]:
    other = {r.setting[0] for r in results.values()} - {"omniglot", "miniimagenet"}
    if not other:
        return []
    return [f"Data set {', '.join(sorted(other))}: the paper has no numbers "
            f"for it; paper columns show its nearest setting for orientation only, without differences."]


def _fewer_tasks(results: dict[str, Result]) -> list[str]:
    tasks = sorted({r.study.get("tasks") for r in results.values() if isinstance(r.study.get("tasks"), int)})
    if not tasks or min(tasks) >= PAPER_TASKS:
        return []
    return [f"Test tasks per analysis: {', '.join(str(t) for t in tasks)} (paper: {PAPER_TASKS}); "
            f"confidence intervals are correspondingly wider."]


def _reduced_schedule(results: dict[str, Result]) -> list[str]:
    reduced: dict[str, tuple[set, set]] = {}
    for c in (c for r in results.values() for c in r.checkpoints if c.get("reduced_schedule")):
        seeds, iterations = reduced.setdefault(str(c.get("algorithm")), (set(), set()))
        seeds.add(c.get("seed"))
        iterations.add(c.get("iteration"))
    if not reduced:
        return []
    return ["† Reduced training schedule (shorter than the paper's 60,000 iterations): "
            + "; ".join(f"{display_name(a)} seed{'s' if len(s) > 1 else ''} {values_text(s)} "
                        f"at iteration{'s' if len(i) > 1 else ''} {values_text(i)}"
                        for a, (s, i) in sorted(reduced.items())) + "."]


def _other_conventions(results: dict[str, Result]) -> list[str]:
    summaries = {c.get("convention_summary", "pytorch conventions") for r in results.values() for c in r.checkpoints}
    departing = sorted(x for x in summaries if x != "finn conventions")
    if not departing:
        return []
    return [f"Trained with {'; '.join(departing)}, not (only) the conventions of the code the paper ran "
            f"(Finn et al.'s TensorFlow MAML, `conventions: finn`); which conventions change "
            f"which finding is measured in checkpoints/convention_study."]


def _short_runs(results: dict[str, Result]) -> list[str]:
    short = sorted({int(c["iteration"]) for r in results.values() for c in r.checkpoints
                    if isinstance(c.get("iteration"), (int, float)) and c["iteration"] < PAPER_ITERATIONS
                    and not c.get("reduced_schedule") and not c.get("imported")})
    if not short:
        return []
    return [f"Checkpoints at iterations {', '.join(str(i) for i in short)} are intermediate or short runs "
            f"(the paper's final models are at {PAPER_ITERATIONS:,} iterations)."]


def _seed_gaps(results: dict[str, Result]) -> list[str]:
    """Analyses that cover fewer seeds of a model than another analysis does (run before a seed
    finished training, say): their means are over other seeds than the rest of the report's."""
    by_analysis = {}
    for name, r in results.items():
        for c in r.checkpoints:
            model = str(c["model"])
            by_analysis.setdefault(name, {}).setdefault(model, set()).add(c.get("seed"))
    out = []
    for model in sorted({m for seeds in by_analysis.values() for m in seeds}):
        every = set().union(*(seeds.get(model, set()) for seeds in by_analysis.values()))
        short = {name: seeds[model] for name, seeds in sorted(by_analysis.items())
                 if model in seeds and seeds[model] < every}
        if short:
            out.append(f"{display_name(model)}: the analyses cover different seeds ({values_text(every)} in all; "
                       + "; ".join(f"{name} only {values_text(s)}" for name, s in short.items())
                       + f"): re-run {', '.join(short)} on the missing seeds to compare like with like.")
    return out


# in the order the report lists them
_CAVEATS = (_split_guessed, _data_set_without_paper, _fewer_tasks, _reduced_schedule, _other_conventions,
            _seed_gaps, _short_runs)
