"""Turn a results folder written by ``repsim analyze`` into figures, report.md and report.html.

    write_report("results/")            # -> results/report.md (+ report.html, figures/*.png|pdf)

Every analysis present in the folder (NAME.csv with its provenance NAME.json) gets a table with
our numbers beside the paper's (PAPER.md, via :mod:`repsim.paper`) and, where the setting is the
same (data set, ways, shots), the difference; where it is not, the paper's nearest setting is
shown in a separate, labelled column and no difference is computed. Analyses that are absent or
unfinished are listed as missing. Figures are written as PNG and PDF, deterministically (no
timestamps) and atomically; report.md and report.html are written last. report.html is one
self-contained file: its figures are embedded as base64 PNG data URIs.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from repsim import paper
from repsim.errors import RepsimError
from repsim.io import atomic_write_bytes
from repsim.results import summarise

ANALYSES = ("similarity", "freezing", "accuracy", "cross", "heads", "regimes",
            "through_training", "weight_change")

_REQUIRED = {
    "similarity": ("algorithm", "layer", "measure", "mean", "ci95"),
    "freezing": ("algorithm", "seed", "iteration", "frozen", "accuracy", "ci95"),
    "accuracy": ("algorithm", "seed", "iteration", "mode", "accuracy", "ci95"),
    "cross": ("pair", "layer", "measure", "mean", "ci95"),
    "heads": ("algorithm", "seed", "iteration", "variant", "accuracy", "ci95"),
    "regimes": ("regime", "seed", "accuracy", "ci95"),
    "through_training": ("algorithm", "seed", "iteration", "metric", "layer", "mean", "ci95"),
    "weight_change": ("algorithm", "layer", "mean", "ci95"),
}
_NUMERIC = ("mean", "ci95", "accuracy", "seed", "iteration", "tasks", "n", "seeds", "value")
HEAD = "head"
PAPER_TASKS = 600
PAPER_ITERATIONS = 60000
CI_TEXT = "95% CI = 1.96·std/√n over test tasks"

_COLORS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
_RC = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "xtick.labelsize": 10,
       "ytick.labelsize": 10, "legend.fontsize": 9.5, "figure.dpi": 100, "savefig.dpi": 150,
       "axes.spines.top": False, "axes.spines.right": False, "svg.hashsalt": "repsim",
       "pdf.compression": 6}


_PDF_META = {"CreationDate": None, "ModDate": None, "Creator": "repsim", "Producer": "repsim"}


# -- reading -------------------------------------------------------------------------------
@dataclass
class Result:
    name: str
    table: pd.DataFrame
    prov: dict
    tasks_table: pd.DataFrame | None = None

    @property
    def study(self) -> dict:
        return self.prov.get("study") or {}

    @property
    def checkpoints(self) -> list[dict]:
        return list(self.prov.get("checkpoints") or [])

    @property
    def setting(self) -> tuple:
        s, c = self.study, (self.checkpoints[0] if self.checkpoints else {})
        dataset = s.get("dataset", c.get("dataset", "unknown"))
        ways, shots = s.get("ways", c.get("ways")), s.get("shots", c.get("shots"))
        return (str(dataset).lower(), int(ways) if ways is not None else 0,
                int(shots) if shots is not None else None)

    @property
    def chance(self) -> float | None:
        ways = self.setting[1]
        return 100.0 / ways if ways else None

    def reduced(self, algorithm, seed=None, iteration=None) -> bool:
        for c in self.checkpoints:
            if (str(c.get("algorithm")) == str(algorithm) and (seed is None or _same(c.get("seed"), seed))
                    and (iteration is None or _same(c.get("iteration"), iteration))
                    and c.get("reduced_schedule")):
                return True
        return False


def _same(a, b) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _read_csv(path: Path, required=()) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as e:
        raise RepsimError(f"cannot read {path} ({_one_line(e)}): re-run the analysis that wrote it") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise RepsimError(f"cannot read {path}: no column {', '.join(missing)}; re-run the analysis that wrote it")
    for c in _NUMERIC:
        if c in df.columns:
            try:
                df[c] = pd.to_numeric(df[c])
            except (ValueError, TypeError):
                raise RepsimError(f"cannot read {path}: column {c} is not numeric; re-run the analysis that wrote it") from None
    for c in df.columns:
        if c not in _NUMERIC:
            df[c] = df[c].astype(object).where(df[c].notna(), "").astype(str)
    return df


def load_results(results_dir) -> tuple[dict[str, Result], dict[str, str]]:
    """The analyses found in ``results_dir`` and, for the others, why they are missing."""
    folder = Path(results_dir)
    if not folder.is_dir():
        raise RepsimError(f"no results folder at {folder}: run 'repsim analyze ... --out {folder}' first")
    found, missing = {}, {}
    for name in ANALYSES:
        csv, meta = folder / f"{name}.csv", folder / f"{name}.json"
        if not csv.exists() and not meta.exists():
            missing[name] = f"not run (no {name}.csv)"
            continue
        if not meta.is_file():
            missing[name] = f"unfinished ({name}.csv without {name}.json)"
            continue
        if not csv.is_file():
            missing[name] = f"unfinished ({name}.json without {name}.csv)"
            continue
        try:
            prov = json.loads(meta.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise RepsimError(f"cannot read {meta} ({_one_line(e)}): re-run the analysis that wrote it") from None
        if not isinstance(prov, dict):
            raise RepsimError(f"cannot read {meta}: not a provenance record; re-run the analysis that wrote it")
        table = _read_csv(csv, _REQUIRED[name])
        if table.empty:
            missing[name] = f"empty ({name}.csv has no rows)"
            continue
        tasks_path = folder / f"{name}_tasks.csv"
        tasks_table = _read_csv(tasks_path) if tasks_path.is_file() else None
        found[name] = Result(name, table, prov, tasks_table)
    if not found:
        raise RepsimError(f"{folder} holds no finished repsim analysis (none of "
                          f"{', '.join(n + '.csv' for n in ANALYSES)}): run 'repsim analyze' into it")
    return found, missing


# -- formatting ----------------------------------------------------------------------------
def _f(x, digits=1, signed=False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _ci(x, digits=1) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"±{x:.{digits}f}"


def _ci_range(values, digits=1) -> str:
    v = [x for x in values if math.isfinite(x)]
    if not v:
        return "n/a"
    lo, hi = min(v), max(v)
    return _ci(lo, digits) if f"{lo:.{digits}f}" == f"{hi:.{digits}f}" else f"±{lo:.{digits}f}–{hi:.{digits}f}"


def _alg(name) -> str:
    return str(name).upper() if str(name).lower() in ("maml", "fomaml", "anil", "boil", "nil") else str(name)


def _iter(x) -> str:
    return str(int(x)) if isinstance(x, (int, float, np.integer, np.floating)) and math.isfinite(x) else str(x)


def _frozen_label(frozen: str) -> str:
    if frozen in ("none", ""):
        return "none"
    parts = frozen.split(",")
    return parts[0] if len(parts) == 1 else f"{parts[0]}–{parts[-1]}"


def _setting_text(result: Result) -> str:
    return paper.setting_label(result.setting)


def _seeds_text(checkpoints) -> str:
    by = {}
    for c in checkpoints:
        by.setdefault(_alg(c.get("algorithm", "?")), set()).add(c.get("seed"))
    return "; ".join(f"{a} seed{'s' if len(s) > 1 else ''} {', '.join(str(x) for x in sorted(s, key=str))}"
                     for a, s in by.items()) or "n/a"


def caption(result: Result, *, conventions=False, extra="") -> str:
    """One line saying how a figure or table was made."""
    s = result.study
    its = sorted({c.get("iteration") for c in result.checkpoints if c.get("iteration") is not None})
    parts = [f"Data: {s.get('dataset', result.setting[0])} ({s.get('split', '?')} split), "
             f"{result.setting[1]}-way {result.setting[2]}-shot, {s.get('queries', '?')} queries per class",
             f"{s.get('tasks', '?')} test tasks (task seed {s.get('task_seed', '?')})",
             f"Checkpoints: {_seeds_text(result.checkpoints)}"
             + (f", iteration{'s' if len(its) > 1 else ''} {', '.join(str(i) for i in its)}" if its else ""),
             f"Error bars and ± values: {s.get('confidence_interval', CI_TEXT)}"]
    if any(c.get("reduced_schedule") for c in result.checkpoints):
        parts.append("† reduced training schedule")
    if conventions:
        parts.append(s.get("conventions", "CCA/CKA convention not recorded"))
    if extra:
        parts.append(extra)
    return ". ".join(parts) + "."


def _short_caption(result: Result, conventions=False, values="error bars: 95% CI over tasks") -> str:
    s = result.study
    text = (f"{s.get('dataset', '?')} {s.get('split', '?')} split, {result.setting[1]}-way {result.setting[2]}-shot, "
            f"{s.get('tasks', '?')} tasks (task seed {s.get('task_seed', '?')}), {_seeds_text(result.checkpoints)}; "
            f"{values}")
    if conventions:
        text += "; CCA: spatial positions as data points, CKA: linear, flattened"
    return text


# -- document model: rendered both as Markdown and as HTML --------------------------------
@dataclass
class Doc:
    blocks: list = field(default_factory=list)

    def h(self, level, text):
        self.blocks.append(("h", level, text))

    def p(self, text):
        self.blocks.append(("p", text))

    def items(self, items):
        if items:
            self.blocks.append(("ul", list(items)))

    def table(self, headers, rows):
        self.blocks.append(("table", list(headers), [list(r) for r in rows]))

    def figure(self, stem, alt, cap):
        self.blocks.append(("fig", stem, alt, cap))


def _md_cell(x) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def markdown_table(headers, rows) -> str:
    """A GitHub-flavoured markdown table (cells escaped so that '|' cannot split them)."""
    lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def render_markdown(doc: Doc, fig_rel: str) -> str:
    out = []
    for b in doc.blocks:
        if b[0] == "h":
            out.append("#" * b[1] + " " + b[2])
        elif b[0] == "p":
            out.append(b[1])
        elif b[0] == "ul":
            out.append("\n".join(f"- {x}" for x in b[1]))
        elif b[0] == "table":
            out.append(markdown_table(b[1], b[2]))
        elif b[0] == "fig":
            _, stem, alt, cap = b
            out.append(f"![{alt}]({fig_rel}/{stem}.png)\n\n*{cap}* "
                       f"([PDF]({fig_rel}/{stem}.pdf))")
    return "\n\n".join(out) + "\n"


def _inline_html(text: str) -> str:
    t = html.escape(text, quote=False)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    t = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", t)
    return t


_CSS = """body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:0.8em 0;font-size:0.92em}
th,td{border:1px solid #bbb;padding:0.25em 0.6em;text-align:left;vertical-align:top}
th{background:#eef1f5}tr:nth-child(even) td{background:#fafafa}
figure{margin:1.2em 0}figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:0.88em;color:#444;margin-top:0.3em}code{background:#f3f3f3;padding:0 0.2em}
h1{border-bottom:2px solid #ccc}h2{border-bottom:1px solid #ddd;margin-top:1.8em}"""


def render_html(doc: Doc, title: str, pngs: dict[str, bytes]) -> str:
    out = ["<!DOCTYPE html>", "<html lang=\"en\">", "<head>", "<meta charset=\"utf-8\">",
           f"<title>{html.escape(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>"]
    for b in doc.blocks:
        if b[0] == "h":
            out.append(f"<h{b[1]}>{_inline_html(b[2])}</h{b[1]}>")
        elif b[0] == "p":
            out.append(f"<p>{_inline_html(b[1])}</p>")
        elif b[0] == "ul":
            out.append("<ul>" + "".join(f"<li>{_inline_html(x)}</li>" for x in b[1]) + "</ul>")
        elif b[0] == "table":
            headers, rows = b[1], b[2]
            out.append("<table><thead><tr>" + "".join(f"<th>{_inline_html(str(h))}</th>" for h in headers)
                       + "</tr></thead><tbody>")
            out += ["<tr>" + "".join(f"<td>{_inline_html(str(c))}</td>" for c in r) + "</tr>" for r in rows]
            out.append("</tbody></table>")
        elif b[0] == "fig":
            _, stem, alt, cap = b
            data = base64.b64encode(pngs[stem]).decode("ascii")
            out.append(f"<figure><img alt=\"{html.escape(alt)}\" src=\"data:image/png;base64,{data}\">"
                       f"<figcaption>{_inline_html(cap)}</figcaption></figure>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


# -- figures -------------------------------------------------------------------------------
def _new_figure(width, height, ncols=1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _footer(fig, text):
    wrapped = textwrap.fill(text, 150)
    lines = wrapped.count("\n") + 1
    fig.text(0.01, 0.01, wrapped, fontsize=8, color="#444", ha="left", va="bottom")
    return 0.05 + 0.035 * lines


def _save(fig, folder: Path, stem: str, footer_height: float, top: float = 1.0) -> bytes:
    fig.tight_layout(rect=(0, footer_height, 1, top))
    png, pdf = io.BytesIO(), io.BytesIO()
    fig.savefig(png, format="png", metadata={"Software": "repsim"})
    fig.savefig(pdf, format="pdf", metadata=_PDF_META)
    atomic_write_bytes(folder / f"{stem}.png", png.getvalue())
    atomic_write_bytes(folder / f"{stem}.pdf", pdf.getvalue())
    return png.getvalue()


def _chance(ax, chance):
    if chance:
        ax.axhline(chance, color="#777", ls=":", lw=1.4, zorder=0, label=f"chance ({chance:.0f}%)")


def _grouped_bars(ax, categories, groups, ylim=None, ylabel="", err_label="95% CI"):
    """groups: list of (label, {category: (mean, ci)})."""
    n = max(len(groups), 1)
    width = 0.8 / n
    x = np.arange(len(categories))
    for i, (label, values) in enumerate(groups):
        means = [values.get(c, (np.nan, np.nan))[0] for c in categories]
        cis = [values.get(c, (np.nan, np.nan))[1] for c in categories]
        cis = [0 if not math.isfinite(v) else v for v in cis]
        ax.bar(x + (i - (n - 1) / 2) * width, means, width * 0.92, yerr=cis, capsize=3,
               color=_COLORS[i % len(_COLORS)], label=label, error_kw={"elinewidth": 1.1, "ecolor": "#222"})
        for xi, m in zip(x + (i - (n - 1) / 2) * width, means):
            if m == 0:  # a zero-height bar is invisible: say so
                ax.annotate("0", (xi, 0), xytext=(0, 2), textcoords="offset points", ha="center", va="bottom",
                            fontsize=9, color=_COLORS[i % len(_COLORS)])
    ax.set_xticks(x)
    ax.set_xticklabels(categories)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)


def fig_similarity(res: Result, folder: Path) -> bytes:
    t = res.table
    layers = list(dict.fromkeys(t["layer"]))
    algs = list(dict.fromkeys(t["algorithm"]))
    measures = [m for m in ("cca", "cka") if m in set(t["measure"])] or list(dict.fromkeys(t["measure"]))
    fig, axes = _new_figure(5.2 * len(measures), 4.8, len(measures))
    for ax, m in zip(axes, measures):
        sub = t[t["measure"] == m]
        groups = [(_alg(a) + _mark(res, a, None, None), {r.layer: (r.mean, r.ci95) for r in sub[sub["algorithm"] == a].itertuples()})
                  for a in algs]
        _grouped_bars(ax, layers, groups, ylim=(0, 1.05), ylabel=f"{m.upper()} similarity, before vs after")
        ax.set_xlabel("layer")
        ax.set_title(f"{m.upper()}: each layer before vs after the inner loop")
        ax.axhline(1.0, color="#999", lw=0.8, ls="--", zorder=0)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, title="algorithm", loc="upper center", ncol=len(labels), frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    return _save(fig, folder, "similarity", _footer(fig, _short_caption(res, conventions=True)), top=0.88)


def fig_freezing(res: Result, folder: Path) -> bytes:
    t = res.table
    frozen = list(dict.fromkeys(t["frozen"]))
    x = np.arange(len(frozen))
    fig, (ax,) = _new_figure(9.5, 4.6)
    runs = list(dict.fromkeys(zip(t["algorithm"], t["seed"], t["iteration"])))
    for i, (a, s, it) in enumerate(runs):
        sub = t[(t["algorithm"] == a) & (t["seed"] == s) & (t["iteration"] == it)].set_index("frozen")
        pos = [j for j, f in enumerate(frozen) if f in sub.index]
        mark = "†" if res.reduced(a, s, it) else ""
        ax.errorbar(x[pos] + (i - (len(runs) - 1) / 2) * 0.04, [sub.loc[frozen[j], "accuracy"] for j in pos],
                    yerr=[np.nan_to_num(sub.loc[frozen[j], "ci95"]) for j in pos], marker="o", capsize=3,
                    color=_COLORS[i % len(_COLORS)], label=f"{_alg(a)} seed {_iter(s)}, it {_iter(it)}{mark}")
    for a in dict.fromkeys(t["algorithm"]):
        vals = [paper.paper_value("freezing", res.setting, f, "accuracy") if a == "maml" else None for f in frozen]
        if any(v is not None for v in vals):
            pos = [j for j, v in enumerate(vals) if v is not None]
            ax.plot(x[pos], [vals[j].value for j in pos], ls="--", marker="s", color="#777", mfc="white",
                    label=f"paper, Table 1 ({_setting_text(res)})")
    _chance(ax, res.chance)
    ax.set_xticks(x)
    ax.set_xticklabels([_frozen_label(f) for f in frozen])
    ax.set_xlabel("layers frozen in the inner loop at test time")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Freezing body layers at test time")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return _save(fig, folder, "freezing", _footer(fig, _short_caption(res)))


def _body(layers):
    return [layer for layer in layers if layer != HEAD]


def _curve_over_seeds(ax, sub: pd.DataFrame, **style) -> None:
    """One algorithm's curve through training. With one seed: its values and 95% CI over
    tasks; with several: the mean over seeds, shaded from the lowest seed to the highest
    (one line per seed would make six indistinguishable line styles at three seeds)."""
    if sub["seed"].nunique() == 1:
        sub = sub.sort_values("iteration")
        ax.errorbar(sub["iteration"], sub["mean"], yerr=np.nan_to_num(sub["ci95"]), marker="o",
                    capsize=3, **style)
        return
    by = sub.groupby("iteration")["mean"]
    mean = by.mean()
    ax.plot(mean.index, mean, marker="o", **style)
    ax.fill_between(mean.index, by.min(), by.max(), color=style["color"], alpha=0.18, lw=0)


def fig_through_training(res: Result, folder: Path) -> bytes:
    t = res.table
    algorithms = list(dict.fromkeys(t["algorithm"]))
    styles = ["-", "--", "-.", ":"]
    sims = [m for m in ("cca", "cka") if m in set(t["metric"])]
    fig, axes = _new_figure(4.8 * (1 + len(sims)) + 1.0, 5.4, 1 + len(sims))
    acc = t[t["metric"].str.startswith("accuracy")]
    for r, a in enumerate(algorithms):
        for k, metric in enumerate(dict.fromkeys(acc["metric"])):
            sub = acc[(acc["algorithm"] == a) & (acc["metric"] == metric)]
            if sub.empty:
                continue
            mode = metric.replace("accuracy", "").strip(" ()")
            _curve_over_seeds(axes[0], sub, ls=styles[r % len(styles)], color=_COLORS[k % len(_COLORS)],
                              label=f"{_alg(a)} {'NIL' if mode == 'nil' else mode}")
    _chance(axes[0], res.chance)
    axes[0].set_ylim(0, 100)
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].set_title("Accuracy through training")
    layers = [layer for layer in dict.fromkeys(t["layer"]) if layer]
    for ax, m in zip(axes[1:], sims):
        for r, a in enumerate(algorithms):
            for k, layer in enumerate(layers):
                sub = t[(t["algorithm"] == a) & (t["metric"] == m) & (t["layer"] == layer)]
                if sub.empty:
                    continue
                _curve_over_seeds(ax, sub, ls=styles[r % len(styles)], color=_COLORS[k % len(_COLORS)],
                                  ms=4, label=layer if len(algorithms) == 1 else f"{_alg(a)} {layer}")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(f"{m.upper()} (before vs after)")
        ax.set_title(f"{m.upper()} per layer through training")
    for ax in axes:
        ax.set_xlabel("training iteration")
        its = sorted(set(t["iteration"]))
        if len(its) <= 8:
            ax.set_xticks(its)
            ax.set_xticklabels([_iter(i) for i in its])
    axes[0].legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=9)
    if len(axes) > 1:
        axes[-1].legend(title="layer" if len(algorithms) == 1 else "algorithm, layer", loc="upper left",
                        bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    several = t.groupby("algorithm")["seed"].nunique().max() > 1
    values = ("lines: mean over seeds, shaded from the lowest seed to the highest" if several
              else "error bars: 95% CI over tasks")
    return _save(fig, folder, "through_training", _footer(fig, _short_caption(res, conventions=True, values=values)))


def fig_cross(res: Result, folder: Path) -> bytes:
    t = cross_layer_table(res)
    if "seeds" in t:
        t = t.assign(pair=[p if s == "different" else f"{p}, same seed" for p, s in zip(t["pair"], t["seeds"])])
    pairs = list(dict.fromkeys(t["pair"]))
    layers = list(dict.fromkeys(t["layer"]))
    measures = [m for m in ("cca", "cka") if m in set(t["measure"])] or list(dict.fromkeys(t["measure"]))
    # explicit geometry in inches: room for pair labels on the left, a colour bar on the right
    cell_w, cell_h, left, gap, right, top, bottom = 1.0, 0.6, 2.0, 0.5, 1.3, 0.6, 1.25
    panel_w = cell_w * len(layers)
    width = left + len(measures) * panel_w + (len(measures) - 1) * gap + right
    height = top + max(cell_h * len(pairs), 1.0) + bottom
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    image = None
    for k, m in enumerate(measures):
        x0 = left + k * (panel_w + gap)
        ax = fig.add_axes([x0 / width, bottom / height, panel_w / width, (height - top - bottom) / height])
        sub = t[t["measure"] == m].set_index(["pair", "layer"])["mean"]
        grid = np.array([[sub.get((p, layer), np.nan) for layer in layers] for p in pairs], dtype=float)
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for i in range(len(pairs)):
            for j in range(len(layers)):
                v = grid[i, j]
                ax.text(j, i, "n/a" if not math.isfinite(v) else f"{v:.2f}", ha="center", va="center",
                        fontsize=10, color="black" if math.isfinite(v) and v > 0.6 else "white")
        ax.set_xticks(range(len(layers)))
        ax.set_xticklabels(layers)
        ax.set_yticks(range(len(pairs)))
        ax.set_yticklabels(pairs if k == 0 else [])
        ax.set_xlabel("layer")
        if k == 0:
            ax.set_ylabel("model pair")
        ax.set_title(f"{m.upper()} between models")
        for spine in ax.spines.values():
            spine.set_visible(False)
    if image is not None:
        cax = fig.add_axes([(width - right + 0.25) / width, bottom / height, 0.18 / width,
                            (height - top - bottom) / height])
        fig.colorbar(image, cax=cax, label="similarity")
    fig.text(0.01, 0.01, textwrap.fill(_short_caption(res, conventions=True, values="cells: mean over tasks, "
                                                        "no adaptation; rows: models of different seeds unless marked"), int(width * 14)),
             fontsize=8, color="#444", ha="left", va="bottom")
    png, pdf = io.BytesIO(), io.BytesIO()
    fig.savefig(png, format="png", metadata={"Software": "repsim"})
    fig.savefig(pdf, format="pdf", metadata=_PDF_META)
    atomic_write_bytes(folder / "cross.png", png.getvalue())
    atomic_write_bytes(folder / "cross.pdf", pdf.getvalue())
    return png.getvalue()


def fig_weight_change(res: Result, folder: Path) -> bytes:
    t = res.table
    layers = list(dict.fromkeys(t["layer"]))
    algs = list(dict.fromkeys(t["algorithm"]))
    fig, (ax,) = _new_figure(8.5, 4.6)
    groups = [(_alg(a) + _mark(res, a, None, None), {r.layer: (r.mean, r.ci95) for r in t[t["algorithm"] == a].itertuples()})
              for a in algs]
    _grouped_bars(ax, layers, groups, ylabel="relative weight change ‖θ′−θ‖ / ‖θ‖")
    ax.set_ylim(0, None)
    ax.set_xlabel("layer")
    ax.set_title("How much the inner loop moves each layer's weights")
    ax.legend(title="algorithm", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return _save(fig, folder, "weight_change", _footer(fig, _short_caption(res)))


def _seed_bars(ax, res, labels, per_label, paper_values=None, paper_label=""):
    """Bars = mean over seeds; each seed drawn as a dot with its 95% CI over tasks."""
    x = np.arange(len(labels))
    for i, label in enumerate(labels):
        rows = per_label[label]
        ax.bar(i, float(np.mean([r[0] for r in rows])), 0.7, color=_COLORS[0], alpha=0.75,
               label="mean over seeds" if i == 0 else None)
        offsets = np.linspace(-0.15, 0.15, len(rows)) if len(rows) > 1 else [0.0]
        for off, (mean, ci) in zip(offsets, rows):
            ax.errorbar(i + off, mean, yerr=0 if not math.isfinite(ci) else ci, fmt="o", ms=4, capsize=3,
                        color="#222", label="each seed, 95% CI over tasks" if i == 0 and off == offsets[0] else None)
    if paper_values and any(v is not None for v in paper_values):
        pos = [j for j, v in enumerate(paper_values) if v is not None]
        ax.scatter(x[pos], [paper_values[j].value for j in pos], marker="D", s=40, color=_COLORS[1],
                   zorder=5, label=paper_label)
    _chance(ax, res.chance)
    ax.set_xticks(x)
    ax.set_xticklabels([textwrap.fill(str(label), 16) for label in labels])
    ax.set_ylim(0, 100)
    ax.set_ylabel("test accuracy (%)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, fontsize=9)


def fig_regimes(res: Result, folder: Path) -> bytes:
    t = res.table
    labels = list(dict.fromkeys(t["regime"]))
    per = {r: list(zip(t[t["regime"] == r]["accuracy"], t[t["regime"] == r]["ci95"])) for r in labels}
    fig, (ax,) = _new_figure(max(8.0, 1.3 * len(labels) + 4.5), 4.6)
    pvals = [paper.paper_value("regimes", res.setting, r, "nil") for r in labels]
    _seed_bars(ax, res, labels, per, pvals, f"paper, Table 5 ({_setting_text(res)})")
    ax.set_xlabel("training regime (every model tested with NIL)")
    ax.set_title("NIL test accuracy by training regime")
    return _save(fig, folder, "regimes", _footer(fig, _short_caption(res, values="dots: each seed with its 95% CI over tasks")))


def fig_heads(res: Result, folder: Path) -> bytes:
    t = res.table
    runs = list(dict.fromkeys(zip(t["algorithm"], t["iteration"])))
    labels = list(dict.fromkeys(t["variant"]))
    fig, axes = _new_figure(max(8.0, 1.25 * len(labels) + 4.5) * len(runs), 4.8, len(runs))
    for ax, (a, it) in zip(axes, runs):
        sub = t[(t["algorithm"] == a) & (t["iteration"] == it)]
        per = {v: list(zip(sub[sub["variant"] == v]["accuracy"], sub[sub["variant"] == v]["ci95"])) for v in labels}
        per = {k: v for k, v in per.items() if v}
        _seed_bars(ax, res, list(per), per)
        ax.set_title(f"{_alg(a)} (iteration {_iter(it)}): what the head contributes")
        ax.set_xlabel("head variant at test time")
    return _save(fig, folder, "heads", _footer(fig, _short_caption(res, values="dots: each seed with its 95% CI over tasks")))


FIGURES = {"similarity": fig_similarity, "freezing": fig_freezing, "through_training": fig_through_training,
           "cross": fig_cross, "weight_change": fig_weight_change, "regimes": fig_regimes, "heads": fig_heads}


# -- tables --------------------------------------------------------------------------------
def _over_seeds(df: pd.DataFrame, keys, value="accuracy") -> list[dict]:
    """Per group: mean over seeds, sample std over seeds, the per-seed CIs, and the seeds."""
    out = []
    for key, g in df.groupby(list(keys), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        vals = g[value].astype(float).to_numpy()
        out.append({**dict(zip(keys, key)), "mean": float(vals.mean()),
                    "std": float(vals.std(ddof=1)) if len(vals) > 1 else float("nan"),
                    "seeds": sorted(g["seed"].tolist()) if "seed" in g else [],
                    "cis": g["ci95"].astype(float).tolist(),
                    "tasks": int(g["tasks"].min()) if "tasks" in g and g["tasks"].notna().all() else None})
    return out


def _std_text(row) -> str:
    return "—" if len(row["seeds"]) < 2 else _ci(row["std"])


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
            return [v.format(self.digits), _f(ours - v.value, self.digits, signed=True) + (" (?)" if v.uncertain else "")]
        return [v.format(self.digits)]

    def value(self, row, col):
        return paper.paper_value(self.table, self.setting, row, col)


def _mark(res, alg, seeds, it) -> str:
    return "†" if any(res.reduced(alg, s, it) for s in (seeds or [None])) else ""


def table_similarity(doc: Doc, res: Result):
    t = res.table
    measures = [m for m in ("cca", "cka") if m in set(t["measure"])]
    headers = ["algorithm", "layer"] + [f"{m.upper()} (± 95% CI)" for m in measures] + ["tasks (n)", "seeds"]
    ref = paper.TABLES["similarity"][paper.MINI_5_UNSTATED]
    headers += [f"paper Figure 2, {m.upper()} (read qualitatively; MiniImageNet 5w)" for m in measures]
    rows = []
    for (a, layer), g in t.groupby(["algorithm", "layer"], sort=False):
        g = g.set_index("measure")
        row = [_alg(a) + _mark(res, a, None, None), layer]
        for m in measures:
            row.append(f"{g.loc[m, 'mean']:.3f} {_ci(g.loc[m, 'ci95'], 3)}" if m in g.index else "—")
        first = g.iloc[0]
        row += [_iter(first["n"]) if "n" in g else "?", _iter(first["seeds"]) if "seeds" in g else "?"]
        kind = "head" if layer == HEAD else "body"
        for m in measures:
            v = ref.get(kind, {}).get(m)
            row.append(v.format() if v else "—")
        rows.append(row)
    doc.table(headers, rows)


def table_freezing(doc: Doc, res: Result):
    t = res.table
    pc = _PaperColumns("freezing", res.setting)
    pe = _PaperColumns("freezing", res.setting, label="paper, earlier version")
    headers = ["algorithm", "iteration", "frozen", "seeds", "ours (%)", "std over seeds", "95% CI (per seed)"]
    headers += pc.headers() + pe.headers()
    rows = []
    for r in _over_seeds(t, ["algorithm", "iteration", "frozen"]):
        a = r["algorithm"]
        prow = r["frozen"] if a == "maml" else None
        rows.append([_alg(a) + _mark(res, a, r["seeds"], r["iteration"]), _iter(r["iteration"]), r["frozen"].replace(",", ", "),
                     ", ".join(_iter(s) for s in r["seeds"]), _f(r["mean"]), _std_text(r), _ci_range(r["cis"])]
                    + pc.cells(r["mean"], prow, "accuracy") + pe.cells(r["mean"], prow, "accuracy (earlier version)"))
    doc.table(headers, rows)
    doc.p("Paper: Raghu et al. 2020 Table 1 (MAML-trained, MiniImageNet 5-way), mean ± std; (?) marks values "
          "PAPER.md could not confirm. Paper values are shown for MAML rows only.")


def _other_published(setting, alg, mode) -> str:
    out = []
    if mode == "inner-loop":
        v = paper.paper_value("maml_original", setting, "MAML (Finn et al. 2017)", "inner-loop") if alg == "maml" else None
        if v:
            out.append(f"Finn et al. 2017: {v.format()}")
        v = paper.paper_value("boil", setting, _alg(alg), "inner-loop")
        if v:
            out.append(f"Oh et al. 2021: {v.format()}")
    elif mode == "nil":
        v = paper.paper_value("regimes", setting, alg, "nil")
        if v and not (alg == "anil" and paper.paper_value("nil", setting, "ANIL", "nil")):
            out.append(f"Raghu et al. Table 5: {v.format()}")
    return "; ".join(out) or "—"


def table_accuracy(doc: Doc, res: Result):
    t = res.table
    pc = _PaperColumns("maml_vs_anil", res.setting, label="paper")
    headers = ["algorithm", "iteration", "test mode", "seeds", "tasks", "ours (%)", "std over seeds", "95% CI (per seed)"]
    headers += pc.headers() + ["paper source", "other published (same setting)"]
    rows = []
    setting = paper.normalise_setting(res.setting)
    for r in _over_seeds(t, ["algorithm", "iteration", "mode"]):
        a, mode = r["algorithm"], r["mode"]
        # every paper number in this table comes from one setting: the matched one, else the
        # nearest setting named in the column header
        col = "nil" if mode == "nil" else "inner-loop"
        if mode == "nil":
            table, row = ("nil", "ANIL") if a == "anil" else ("regimes", a)
        else:
            table, row = "maml_vs_anil", _alg(a)
        v = paper.paper_value(table, pc.setting, row, col)
        if v is None:
            cells = ["—", "—"] if pc.matches else ["—"]
        elif pc.matches:
            cells = [v.format(), _f(r["mean"] - v.value, signed=True) + (" (?)" if v.uncertain else "")]
        else:
            cells = [v.format()]
        source = f"{v.source}, {v.where}" if v else "—"
        rows.append([_alg(a) + _mark(res, a, r["seeds"], r["iteration"]), _iter(r["iteration"]),
                     "NIL" if mode == "nil" else mode, ", ".join(_iter(s) for s in r["seeds"]),
                     r["tasks"] if r["tasks"] is not None else "?", _f(r["mean"]), _std_text(r), _ci_range(r["cis"])]
                    + cells + [source, _other_published(setting, a, mode) if pc.matches else "—"])
    doc.table(headers, rows)
    doc.p("Inner-loop rows: Raghu et al. Table 2. NIL rows: Table 4 (ANIL) or Table 5 (other algorithms). "
          "Paper numbers are mean ± std over 3 seeds; ours are the mean over seeds, with the sample std "
          "over seeds where there are several and the per-seed 95% CI over test tasks.")


def _body_mean(t, pair_col, pair, measure) -> float | None:
    sub = t[(t[pair_col] == pair) & (t["measure"] == measure) & (t["layer"] != HEAD)]
    return float(sub["mean"].mean()) if len(sub) else None


# How repsim.analyses.Model labels a checkpoint in the cross-model tables.
_MODEL_LABEL = re.compile(r"^(?P<algorithm>.+)-s(?P<seed>-?\d+)-it(?P<iteration>\d+)$")
CROSS_PAIRS = ("MAML-MAML", "ANIL-ANIL", "ANIL-MAML")  # table 3's order
SAME_SEED = "same (same initial weights)"


def tag_seeds(tasks: pd.DataFrame) -> pd.DataFrame:
    """``cross_tasks.csv`` with a ``seeds`` column: "different", or :data:`SAME_SEED` where both
    models were trained from one seed. Training seeds the initialisation, so ANIL and MAML of
    one seed start from the same weights (and one algorithm twice is one run); the paper's
    table 3 compares models across seeds."""
    seeds = {}
    for label in set(tasks["model_a"]) | set(tasks["model_b"]):
        match = _MODEL_LABEL.match(str(label))
        if match is None:
            raise RepsimError(f"cannot read the seed of model {label!r} in a cross-model table: models are "
                              f"labelled ALGORITHM-sSEED-itITERATION; re-run 'repsim analyze cross' to rewrite it")
        seeds[label] = int(match["seed"])
    clash = tasks.duplicated(["model_a", "model_b", "layer", "measure", "task"])
    if clash.any():
        a, b = tasks.loc[clash, ["model_a", "model_b"]].iloc[0]
        raise RepsimError(f"two checkpoints in one cross-model table share the label of {a} or {b} (same "
                          f"algorithm, seed and iteration): compare them in separate 'repsim analyze cross' runs")
    same = [seeds[a] == seeds[b] for a, b in zip(tasks["model_a"], tasks["model_b"])]
    return tasks.assign(seeds=np.where(same, SAME_SEED, "different"))


def cross_pairs(tasks: pd.DataFrame) -> pd.DataFrame:
    """Paper table 3's unit: one row per pair of models and measure, the similarity averaged
    over tasks t and body layers l (NaN values, from degenerate activations, are skipped),

        s(a, b) = mean_{t, l} sim(h_l^a(x_t), h_l^b(x_t)),

    with :func:`tag_seeds`' ``seeds``. ``tasks`` is ``cross_tasks.csv``."""
    body = tag_seeds(tasks)
    body = body[body["layer"] != HEAD]
    keys = ["pair", "seeds", "model_a", "model_b", "measure"]
    return body.groupby(keys, sort=False)["value"].mean().reset_index()


def _pair_order(pair: str, seeds: str):
    return (seeds != "different", CROSS_PAIRS.index(pair) if pair in CROSS_PAIRS else len(CROSS_PAIRS), pair)


def cross_summary(tasks: pd.DataFrame) -> list[dict]:
    """Per pair of algorithms and ``seeds``, the mean and sample std over model pairs of
    :func:`cross_pairs`' similarity, per measure m present:

        row[m] = (mean_{(a, b)} s(a, b), std_{(a, b)} s(a, b))

    Different seeds first, in table 3's order. Pairs share models, so the std is a spread
    over pairs, not a standard error."""
    pairs = cross_pairs(tasks)
    out = []
    for (pair, seeds), g in pairs.groupby(["pair", "seeds"], sort=False):
        row = {"pair": pair, "seeds": seeds, "models": sorted(set(zip(g["model_a"], g["model_b"])))}
        for m, v in g.groupby("measure", sort=False)["value"]:
            row[m] = (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan"))
        out.append(row)
    return sorted(out, key=lambda r: _pair_order(r["pair"], r["seeds"]))


def _model_pair_rows(res: Result) -> pd.DataFrame | None:
    """A cross result's per-task rows, or None for results written without them."""
    tt = res.tasks_table
    return tt if tt is not None and {"model_a", "model_b", "pair"} <= set(tt.columns) else None


def cross_summary_of(res: Result) -> list[dict] | None:
    """:func:`cross_summary` of a cross result, or None for results written without per-task rows."""
    tt = _model_pair_rows(res)
    return None if tt is None else cross_summary(tt)


def cross_layer_table(res: Result) -> pd.DataFrame:
    """Per pair of algorithms, :func:`tag_seeds`' ``seeds``, layer and measure: mean and 95% CI
    over tasks, in :func:`cross_summary`'s order. Results written without per-task rows give
    their own table, all model pairs together."""
    tt = _model_pair_rows(res)
    if tt is None:
        return res.table
    layers = summarise(tag_seeds(tt), by=("pair", "seeds", "layer", "measure"))
    rank = [_pair_order(pair, seeds) for pair, seeds in zip(layers["pair"], layers["seeds"])]
    return layers.iloc[sorted(range(len(layers)), key=rank.__getitem__)]


def format_mean_std(stats, digits=3) -> str:
    """"0.617 ± 0.002" from (mean, std); the mean alone where the std is NaN; "—" for None."""
    if stats is None:
        return "—"
    mean, std = stats
    return f"{_f(mean, digits)} ± {_f(std, digits)}" if math.isfinite(std) else _f(mean, digits)


def _cross_layers(doc: Doc, table: pd.DataFrame, keys: list[str]):
    """Per layer: mean ± 95% CI over tasks, one row per ``keys`` and measure."""
    layers = list(dict.fromkeys(table["layer"]))
    rows = []
    for key, g in table.groupby(keys + ["measure"], sort=False):
        sub = g.set_index("layer")
        rows.append(list(key[:-1]) + [key[-1].upper()]
                    + [f"{sub.loc[layer, 'mean']:.3f} {_ci(sub.loc[layer, 'ci95'], 3)}" if layer in sub.index else "—"
                       for layer in layers])
    doc.table(keys + ["measure"] + layers, rows)


def table_cross(doc: Doc, res: Result):
    pc = {m: _PaperColumns("cross", res.setting, label=f"paper {m.upper()}", digits=2) for m in ("cca", "cka")}
    summary = cross_summary_of(res)
    if summary is None:  # results written before per-task rows: all model pairs together
        rows = []
        for pair in dict.fromkeys(res.table["pair"]):
            row = [pair, "all"]
            for m in ("cca", "cka"):
                s = _body_mean(res.table, "pair", pair, m)
                row += (["—"] * (1 + len(pc[m].headers())) if s is None
                        else [_f(s, 3)] + pc[m].cells(s, pair, m))
            rows.append(row)
        headers = ["pair", "seeds"]
        for m in ("cca", "cka"):
            headers += [f"{m.upper()} (mean over body layers)"] + pc[m].headers()
        doc.table(headers, rows)
        doc.p("Per layer, all model pairs (mean ± 95% CI over tasks):")
        _cross_layers(doc, res.table, ["pair"])
    else:
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
    doc.p("Paper: Raghu et al. Table 3, body layers averaged, across seeds (its data setting is not stated in "
          "PAPER.md beyond the representation analysis' 5-way MiniImageNet tasks).")


def table_heads(doc: Doc, res: Result):
    rows = []
    for r in _over_seeds(res.table, ["algorithm", "iteration", "variant"]):
        rows.append([_alg(r["algorithm"]) + _mark(res, r["algorithm"], r["seeds"], r["iteration"]),
                     _iter(r["iteration"]), r["variant"], ", ".join(_iter(s) for s in r["seeds"]),
                     _f(r["mean"]), _std_text(r), _ci_range(r["cis"])])
    doc.table(["algorithm", "iteration", "head variant", "seeds", "ours (%)", "std over seeds", "95% CI (per seed)"], rows)
    doc.p("No published numbers: an ablation of the head added by repsim.")


def table_regimes(doc: Doc, res: Result):
    pc = _PaperColumns("regimes", res.setting, label="paper (Table 5, NIL)")
    rows = []
    for r in _over_seeds(res.table, ["regime"]):
        reg = r["regime"]
        red = "†" if any(res.reduced(reg, s) for s in r["seeds"]) else ""
        rows.append([reg + red, paper.REGIME_NAMES.get(reg, "—"), ", ".join(_iter(s) for s in r["seeds"]),
                     _f(r["mean"]), _std_text(r), _ci_range(r["cis"])] + pc.cells(r["mean"], reg, "nil"))
    doc.table(["regime", "paper's name", "seeds", "ours NIL (%)", "std over seeds", "95% CI (per seed)"]
              + pc.headers(), rows)


def table_through_training(doc: Doc, res: Result):
    t = res.table
    rows = []
    measures = [m for m in ("cca", "cka") if m in set(t["metric"])]
    for (a, s, it), g in t.groupby(["algorithm", "seed", "iteration"], sort=False):
        row = [_alg(a) + ("†" if res.reduced(a, s, it) else ""), _iter(s), _iter(it)]
        for metric in ("accuracy (inner-loop)", "accuracy (nil)"):
            sub = g[g["metric"] == metric]
            row.append(f"{sub['mean'].iloc[0]:.1f} {_ci(sub['ci95'].iloc[0])}" if len(sub) else "—")
        for m in measures:
            body = g[(g["metric"] == m) & (g["layer"] != HEAD)]["mean"]
            head = g[(g["metric"] == m) & (g["layer"] == HEAD)]["mean"]
            row.append(f"{body.mean():.3f} ({body.min():.2f}–{body.max():.2f})" if len(body) else "—")
            row.append(f"{head.iloc[0]:.3f}" if len(head) else "—")
        rows.append(row)
    headers = ["algorithm", "seed", "iteration", "accuracy inner loop (%)", "accuracy NIL (%)"]
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
            row.append(f"{sub['mean'].iloc[0]:.4f} {_ci(sub['ci95'].iloc[0], 4)}" if len(sub) else "—")
        rows.append(row)
    doc.table(["layer"] + [f"{_alg(a)}{_mark(res, a, None, None)} (± 95% CI)" for a in algs], rows)
    doc.p("Relative weight change ‖θ′−θ‖/‖θ‖ of each layer over the inner loop (test-time steps). "
          "No published numbers: BOIL (Oh et al. 2021) compares representations, not weights.")


# -- verdict -------------------------------------------------------------------------------
def _range(vals, digits=2) -> str:
    lo, hi = min(vals), max(vals)
    return f"{lo:.{digits}f}" if f"{lo:.{digits}f}" == f"{hi:.{digits}f}" else f"{lo:.{digits}f}–{hi:.{digits}f}"


def _layer_span(layers) -> str:
    return layers[0] if len(layers) == 1 else f"{layers[0]}–{layers[-1]}"


def verdict(results: dict[str, Result]) -> list[str]:
    out = []
    if "similarity" in results:
        t = results["similarity"].table
        for a in dict.fromkeys(t["algorithm"]):
            sub = t[t["algorithm"] == a]
            parts, cca = [], sub[sub["measure"] == "cca"].set_index("layer")["mean"]
            for m in ("cca", "cka"):
                s = sub[sub["measure"] == m].set_index("layer")["mean"]
                body = [layer for layer in s.index if layer != HEAD]
                if body:
                    txt = f"{_layer_span(body)} {m.upper()} {_range(s[body])}"
                    if HEAD in s.index:
                        txt += f" vs head {s[HEAD]:.2f}"
                    parts.append(txt)
            body = [layer for layer in cca.index if layer != HEAD]
            judgement = ""
            if body and HEAD in cca.index:
                low = [layer for layer in body if cca[layer] < 0.9]
                if not low and cca[HEAD] < 0.5:
                    judgement = ("the pattern the paper reports as feature reuse "
                                 "(body CCA > 0.9, head < 0.5)")
                elif min(cca[body]) > cca[HEAD]:
                    judgement = ("the head changes most" + (f"; {', '.join(low)} CCA below the paper's 0.9" if low else "")
                                 + ("" if cca[HEAD] < 0.5 else "; head CCA not below the paper's 0.5"))
                else:
                    judgement = "some body layer changes as much as the head or more: not the paper's feature-reuse pattern"
            if parts:
                out.append(f"Representation change ({_alg(a)}): " + "; ".join(parts)
                           + (f": {judgement}." if judgement else "."))
    if "freezing" in results:
        res = results["freezing"]
        for r_none, r_all in _freeze_pairs(res):
            d = r_all["mean"] - r_none["mean"]
            ci_a, ci_b = max(r_none["cis"]), max(r_all["cis"])
            within = "within" if abs(d) <= max(ci_a, ci_b) else "larger than"
            txt = (f"Freezing ({_alg(r_none['algorithm'])}, iteration {_iter(r_none['iteration'])}, "
                   f"{len(r_none['seeds'])} seed{'s' if len(r_none['seeds']) > 1 else ''}): freezing "
                   f"{_frozen_label(r_all['frozen'])} changes accuracy {r_none['mean']:.1f} → {r_all['mean']:.1f}% "
                   f"({d:+.1f} points; {within} the per-seed 95% CIs, {_ci(ci_a)} / {_ci(ci_b)})")
            p0 = paper.paper_value("freezing", res.setting, "none", "accuracy")
            p1 = paper.paper_value("freezing", res.setting, r_all["frozen"], "accuracy")
            if r_none["algorithm"] == "maml" and p0 and p1:
                txt += f"; paper, same setting: {p0.value:.1f} → {p1.value:.1f} ({p1.value - p0.value:+.1f})"
            out.append(txt + ".")
    if "accuracy" in results:
        res = results["accuracy"]
        rows = {(r["algorithm"], r["iteration"], r["mode"]): r for r in _over_seeds(res.table, ["algorithm", "iteration", "mode"])}
        for (a, it, mode), r in rows.items():
            if mode != "nil" or (a, it, "inner-loop") not in rows:
                continue
            inner = rows[(a, it, "inner-loop")]
            d = r["mean"] - inner["mean"]
            txt = (f"NIL vs inner loop ({_alg(a)}, iteration {_iter(it)}): NIL {r['mean']:.1f}% vs inner loop "
                   f"{inner['mean']:.1f}% ({d:+.1f} points; per-seed 95% CIs {_ci(max(r['cis']))} / {_ci(max(inner['cis']))})")
            pn = paper.paper_value("nil", res.setting, "ANIL", "nil") if a == "anil" else paper.paper_value("regimes", res.setting, a, "nil")
            pi = paper.paper_value("maml_vs_anil", res.setting, _alg(a), "inner-loop")
            if pn and pi:
                txt += f"; paper, same setting: NIL {pn.value:.1f} vs {pi.value:.1f} ({pn.value - pi.value:+.1f})"
            out.append(txt + ".")
    if "cross" in results:
        summary = cross_summary_of(results["cross"])
        paper_text = " (paper Table 3, MiniImageNet 5-way, models of different seeds: CCA 0.50–0.51, CKA 0.83–0.86)"

        def similarities(rows):
            return "; ".join(f"{r['pair']} {format_mean_std(r.get('cca'), 2)} / {format_mean_std(r.get('cka'), 2)}"
                             for r in rows)
        if summary is None:
            t = results["cross"].table

            def body(pair, m):
                s = _body_mean(t, "pair", pair, m)
                return None if s is None else (s, math.nan)
            rows = [{"pair": p, "cca": body(p, "cca"), "cka": body(p, "cka")} for p in dict.fromkeys(t["pair"])]
            out.append("Similarity between models (CCA / CKA), body layers averaged: " + similarities(rows) + paper_text + ".")
        else:
            across = [r for r in summary if r["seeds"] == "different"]
            shared = [r for r in summary if r["seeds"] != "different"]
            text = ("Similarity between models of different seeds (CCA / CKA, body layers averaged, ± std over "
                    "model pairs): " + (similarities(across) or "no such models") + paper_text)
            if shared:
                text += "; models of one seed, which start from the same weights: " + similarities(shared)
            out.append(text + ".")
    if "weight_change" in results:
        t = results["weight_change"].table
        for a in dict.fromkeys(t["algorithm"]):
            s = t[t["algorithm"] == a].set_index("layer")["mean"]
            body = [layer for layer in s.index if layer != HEAD]
            if body and HEAD in s.index:
                out.append(f"Weight change ({_alg(a)}): {_layer_span(body)} move {_range(s[body], 3)} of their norm, "
                           f"the head {s[HEAD]:.3f}.")
    if "regimes" in results:
        res = results["regimes"]
        rs = sorted(_over_seeds(res.table, ["regime"]), key=lambda r: -r["mean"])
        out.append("NIL accuracy by training regime: " + " > ".join(f"{r['regime']} {r['mean']:.1f}%" for r in rs)
                   + (f" (chance {res.chance:.0f}%)." if res.chance else "."))
    if "through_training" in results:
        t = results["through_training"].table
        for (a, s), g in t.groupby(["algorithm", "seed"], sort=False):
            its = sorted(set(g["iteration"]))
            cca = g[g["metric"] == "cca"]
            if not its or cca.empty:
                continue
            parts = []
            for it in (its[0], its[-1]) if len(its) > 1 else (its[0],):
                c = cca[cca["iteration"] == it]
                body, head = c[c["layer"] != HEAD]["mean"], c[c["layer"] == HEAD]["mean"]
                if len(body):
                    parts.append(f"iteration {_iter(it)}: body CCA {_range(body)}"
                                 + (f", head {head.iloc[0]:.2f}" if len(head) else ""))
            out.append(f"Through training ({_alg(a)} seed {_iter(s)}): " + "; ".join(parts) + ".")
    return out


def _freeze_pairs(res: Result):
    rows = _over_seeds(res.table, ["algorithm", "iteration", "frozen"])
    by = {}
    for r in rows:
        by.setdefault((r["algorithm"], r["iteration"]), []).append(r)
    for group in by.values():
        none = [r for r in group if r["frozen"] == "none"]
        frozen = [r for r in group if r["frozen"] != "none"]
        if none and frozen:
            yield none[0], max(frozen, key=lambda r: len(r["frozen"].split(",")))


def caveats(results: dict[str, Result]) -> list[str]:
    out = []
    datasets = {r.setting[0] for r in results.values()}
    if datasets - {"omniglot", "miniimagenet"}:
        out.append(f"Data set {', '.join(sorted(datasets - {'omniglot', 'miniimagenet'}))}: the paper has no numbers "
                   f"for it; paper columns show its nearest setting for orientation only, without differences.")
    tasks = sorted({r.study.get("tasks") for r in results.values() if isinstance(r.study.get("tasks"), int)})
    if tasks and min(tasks) < PAPER_TASKS:
        out.append(f"Test tasks per analysis: {', '.join(str(t) for t in tasks)} (paper: {PAPER_TASKS}); "
                   f"confidence intervals are correspondingly wider.")
    reduced: dict[str, tuple[set, set]] = {}
    for c in (c for r in results.values() for c in r.checkpoints if c.get("reduced_schedule")):
        seeds, iterations = reduced.setdefault(str(c.get("algorithm")), (set(), set()))
        seeds.add(c.get("seed"))
        iterations.add(c.get("iteration"))
    if reduced:
        def listed(values):
            return ", ".join(str(v) for v in sorted(values, key=lambda v: (v is None, v)))
        out.append("† Reduced training schedule (shorter than the paper's 60,000 iterations): "
                   + "; ".join(f"{_alg(a)} seed{'s' if len(s) > 1 else ''} {listed(s)} "
                                 f"at iteration{'s' if len(i) > 1 else ''} {listed(i)}"
                               for a, (s, i) in sorted(reduced.items())) + ".")
    short = sorted({int(c["iteration"]) for r in results.values() for c in r.checkpoints
                    if isinstance(c.get("iteration"), (int, float)) and c["iteration"] < PAPER_ITERATIONS
                    and not c.get("reduced_schedule")})
    if short:
        out.append(f"Checkpoints at iterations {', '.join(str(i) for i in short)} are intermediate or short runs "
                   f"(the paper's final models are at {PAPER_ITERATIONS:,} iterations).")
    return out


# -- provenance ----------------------------------------------------------------------------
def provenance(doc: Doc, results: dict[str, Result], missing: dict[str, str]):
    rows = []
    for name, r in results.items():
        s = r.study
        ckpts = "; ".join(f"{_alg(c.get('algorithm', '?'))} s{c.get('seed', '?')} it{c.get('iteration', '?')}"
                          + ("†" if c.get("reduced_schedule") else "") for c in r.checkpoints) or "?"
        rows.append([name, f"{s.get('dataset', '?')} ({s.get('split', '?')})", _setting_text(r),
                     s.get("queries", "?"), f"{s.get('tasks', '?')} (seed {s.get('task_seed', '?')})", ckpts,
                     r.prov.get("created", "?"), r.prov.get("repsim_version", "?"), r.prov.get("command") or "—"])
    doc.table(["analysis", "data (split)", "setting", "queries/class", "tasks (task seed)", "checkpoints",
               "created", "repsim", "command"], rows)
    cis = sorted({r.study.get("confidence_interval", "?") for r in results.values()})
    conv = sorted({r.study.get("conventions", "?") for r in results.values()})
    doc.items([f"Confidence intervals: {c}." for c in cis] + [f"Similarity conventions: {c}." for c in conv])
    ck = []
    for name, r in results.items():
        for c in r.checkpoints:
            trained = f"{c.get('dataset', '?')} {c.get('ways', '?')}w{c.get('shots', '?')}s"
            ck.append([name, _alg(c.get("algorithm", "?")), c.get("seed", "?"), c.get("iteration", "?"), trained,
                       "yes †" if c.get("reduced_schedule") else "no", f"`{c.get('checkpoint', '?')}`"])
    if ck:
        doc.p("Checkpoints:")
        doc.table(["analysis", "algorithm", "seed", "iteration", "trained on", "reduced schedule", "file"], ck)


# -- the report ----------------------------------------------------------------------------
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
    atomic_write_bytes(results_dir / "report.md", md.encode("utf-8"))
    atomic_write_bytes(results_dir / "report.html", page.encode("utf-8"))
    return results_dir / "report.md"
