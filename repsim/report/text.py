"""Formatting shared by the tables, the figures and the verdict: numbers, ± values, names, and
the captions that say how each result was made (the numbers themselves: repsim.statistics)."""

from __future__ import annotations

import math

import numpy as np

from repsim import paper
from repsim.report.loading import Result

PAPER_TASKS = 600
PAPER_ITERATIONS = 60000


def number_text(x, digits=1, signed=False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def ci_text(x, digits=1) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"±{x:.{digits}f}"


def ci_range_text(values, digits=1) -> str:
    v = [x for x in values if math.isfinite(x)]
    if not v:
        return "n/a"
    lo, hi = min(v), max(v)
    return ci_text(lo, digits) if f"{lo:.{digits}f}" == f"{hi:.{digits}f}" else f"±{lo:.{digits}f}–{hi:.{digits}f}"


def display_name(name) -> str:
    return str(name).upper() if str(name).lower() in ("maml", "fomaml", "anil", "boil", "nil") else str(name)


def iteration_text(x) -> str:
    return str(int(x)) if isinstance(x, (int, float, np.integer, np.floating)) and math.isfinite(x) else str(x)


def values_text(values) -> str:
    """Seeds or iterations in a sentence: in numeric order, an unknown one (None) last."""
    return ", ".join(str(v) for v in sorted(values, key=lambda v: (v is None, v or 0)))


def iteration_cell(res: Result, model, iteration) -> str:
    """A row's training iteration as printed: "imported" for a model trained elsewhere, whose
    checkpoint's iteration (0) is no point of any schedule."""
    return "imported" if res.imported(model) else iteration_text(iteration)


def iteration_phrase(res: Result, model, iteration) -> str:
    """iteration_cell in a sentence: "iteration N", or "imported"."""
    cell = iteration_cell(res, model, iteration)
    return cell if res.imported(model) else f"iteration {cell}"


def seeds_cell(res: Result, model, seeds) -> str:
    """A row's seeds as printed: "unknown" for a model imported without one."""
    return "unknown" if res.seed_unknown(model) else ", ".join(iteration_text(s) for s in seeds)


def frozen_label(frozen: str) -> str:
    if frozen in ("none", ""):
        return "none"
    parts = frozen.split(",")
    return parts[0] if len(parts) == 1 else f"{parts[0]}–{parts[-1]}"


def setting_text(result: Result) -> str:
    return paper.setting_label(result.setting)


def _seeds_text(checkpoints) -> str:
    by = {}
    for c in checkpoints:
        if c.get("imported"):  # trained elsewhere: named, its seed and iteration not repsim's to tell
            by.setdefault(f"{c['model']} (imported)", set())
        else:
            by.setdefault(display_name(c.get("algorithm", "?")), set()).add(c.get("seed"))
    return "; ".join(a + (f" seed{'s' if len(s) > 1 else ''} {', '.join(str(x) for x in sorted(s, key=str))}"
                          if s else "") for a, s in by.items()) or "n/a"


def conventions_text(checkpoints) -> str:
    """The training conventions of the checkpoints (repsim.config), e.g. "finn conventions";
    checkpoints analysed before conventions were recorded were trained with the pytorch set."""
    found = sorted({c.get("convention_summary", "pytorch conventions") for c in checkpoints})
    return "; ".join(found) or "pytorch conventions"


def caption(result: Result, *, conventions=False, extra="") -> str:
    """One line saying how a figure or table was made."""
    s = result.study
    its = sorted({c.get("iteration") for c in result.checkpoints
                  if c.get("iteration") is not None and not c.get("imported")})
    parts = [f"Data: {s.get('dataset', result.setting[0])} ({s.get('split', '?')} split), "
             f"{result.setting[1]}-way {result.setting[2]}-shot, {s.get('queries', '?')} queries per class",
             f"{s.get('tasks', '?')} test tasks (task seed {s.get('task_seed', '?')})",
             f"Checkpoints: {_seeds_text(result.checkpoints)}"
             + (f", iteration{'s' if len(its) > 1 else ''} {', '.join(str(i) for i in its)}" if its else ""),
             f"Error bars and ± values: {s['confidence_interval']}"]
    if any(c.get("reduced_schedule") for c in result.checkpoints):
        parts.append("† reduced training schedule")
    parts.append(f"Trained with {conventions_text(result.checkpoints)}")
    if conventions:
        parts.append(s.get("conventions", "CCA/CKA convention not recorded"))
    if extra:
        parts.append(extra)
    return ". ".join(parts) + "."


def std_text(row) -> str:
    return "—" if len(row["seeds"]) < 2 else ci_text(row["std"])


def reduced_mark(res, alg, seeds, it) -> str:
    return "†" if any(res.reduced(alg, s, it) for s in (seeds or [None])) else ""


def format_mean_std(stats, digits=3) -> str:
    """"0.617 ± 0.002" from (mean, std); the mean alone where the std is NaN; "—" for None."""
    if stats is None:
        return "—"
    mean, std = stats
    return (f"{number_text(mean, digits)} ± {number_text(std, digits)}" if math.isfinite(std)
            else number_text(mean, digits))


def range_text(vals, digits=2) -> str:
    lo, hi = min(vals), max(vals)
    return f"{lo:.{digits}f}" if f"{lo:.{digits}f}" == f"{hi:.{digits}f}" else f"{lo:.{digits}f}–{hi:.{digits}f}"


def layer_span(layers) -> str:
    return layers[0] if len(layers) == 1 else f"{layers[0]}–{layers[-1]}"


def change_text(row, digits=1) -> str:
    """"−38.2 (±2.1)": an ablation's mean paired change and its per-seed 95% CIs."""
    if row.get("change") is None:
        return "—"
    return f"{number_text(row['change'], digits, signed=True)} ({ci_range_text(row['change_cis'], digits)})"
