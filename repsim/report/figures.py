"""Paper-style figures, one per analysis, drawn at their final size for a two-column paper.

Every figure is written twice, at the two widths a paper needs, plus a provenance sidecar::

    figures/NAME.pdf         page width, 6.75 in (a two-column paper's text width: figure*)
    figures/NAME.png
    figures/NAME-column.pdf  column width, 3.25 in (one column: figure)
    figures/NAME-column.png
    figures/NAME.json        how the figure was made (see below)

Include them at scale 1, so that their 7-8 pt text stays 7-8 pt on the page::

    \\begin{figure*}\\includegraphics{figures/similarity.pdf}\\end{figure*}
    \\begin{figure}\\includegraphics{figures/similarity-column.pdf}\\end{figure}

(``width=\\textwidth`` / ``width=\\columnwidth`` is the same scale on a 6.75 / 3.25 in layout.)
The column variant is a layout of its own (panels stacked rather than side by side), not a
shrunk page figure. PDFs embed their fonts as TrueType (Type 42), never Type 3, as
publishers' checks ask; PNGs are 200 dpi. report.md and report.html show the page-width PNG.

No provenance is drawn into the images: it goes into the report's figure caption and into
NAME.json beside the images (the data set and split, ways, shots, queries, the number of test
tasks and their seed, the kind of confidence interval, the similarity and training
conventions, each checkpoint's model, seed, iteration and file, what the figure's marks mean,
the repsim versions that analysed and drew, the caption and the files with their sizes).

Everything is deterministic (no timestamps, fixed PDF metadata) and written atomically, so that
drawing a figure twice gives byte-identical files.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from repsim import paper
from repsim.io import atomic_write_bytes, atomic_write_json
from repsim.names import HEAD
from repsim.report.cross import cross_layer_table
from repsim.report.loading import Result
from repsim.report.text import (
    conventions_text,
    display_name,
    frozen_label,
    iteration_text,
    layer_span,
    range_text,
    reduced_mark,
    setting_text,
)

PAGE_WIDTH = 6.75     # inches: a two-column paper's text width
COLUMN_WIDTH = 3.25   # inches: one column
WIDTHS = {"page": PAGE_WIDTH, "column": COLUMN_WIDTH}
SUFFIX = {"page": "", "column": "-column"}
DPI = 200

_COLORS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
# through training: body layers light to dark, the head apart; the accuracy modes in neither palette
_LAYER_COLORS = ["#56B4E9", "#0072B2", "#009E73", "#E69F00", "#CC79A7", "#F0E442"]
_HEAD_COLOR = "#D55E00"
# the accuracy modes, in colours the layers' palettes do not use (the panels beside share a legend)
_MODE_COLORS = {"inner-loop": "#000000", "nil": "#999999", "body frozen": "#882255",
                "body frozen, fitted head": "#999933"}
_TRUETYPE = {"pdf.fonttype": 42, "ps.fonttype": 42}
_RC = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7,
       "ytick.labelsize": 7, "legend.fontsize": 7, "legend.title_fontsize": 7, "figure.dpi": 100,
       "savefig.dpi": DPI, "axes.spines.top": False, "axes.spines.right": False, "axes.linewidth": 0.6,
       "xtick.major.width": 0.6, "ytick.major.width": 0.6, "xtick.major.size": 2.5, "ytick.major.size": 2.5,
       "lines.linewidth": 1.2, "lines.markersize": 3.5, "errorbar.capsize": 2, "axes.titlepad": 4,
       "legend.frameon": False, "legend.handlelength": 1.8, "legend.columnspacing": 1.2,
       "svg.hashsalt": "repsim", "pdf.compression": 6, **_TRUETYPE}
_PDF_META = {"CreationDate": None, "ModDate": None, "Creator": "repsim", "Producer": "repsim"}


# Figures ----------------------------------------------------------------------------------
@dataclass
class Drawn:
    """One figure drawn at both widths: ``images[variant] = (png, pdf, width_in, height_in)``,
    and ``note``, what its marks mean (for the caption)."""
    name: str
    note: str
    images: dict

    @property
    def png(self) -> bytes:
        return self.images["page"][0]


def draw_figure(name: str, res: Result) -> Drawn:
    """Figure ``name`` (a key of :data:`FIGURES`) of ``res`` at page and column width, in memory."""
    import matplotlib
    images, note = {}, ""
    with matplotlib.rc_context(_RC):
        for variant, width in WIDTHS.items():
            fig, note = FIGURES[name](res, width)
            images[variant] = (*_render(fig), *map(float, fig.get_size_inches()))
    return Drawn(name, note, images)


def write_figure(drawn: Drawn, res: Result, folder: Path, caption: str = "") -> dict:
    """Write ``drawn``'s PNGs and PDFs and its sidecar NAME.json into ``folder``; return the sidecar."""
    files = {}
    for variant, (png, pdf, w, h) in drawn.images.items():
        stem = drawn.name + SUFFIX[variant]
        atomic_write_bytes(folder / f"{stem}.png", png)
        atomic_write_bytes(folder / f"{stem}.pdf", pdf)
        files[variant] = {"png": f"{stem}.png", "pdf": f"{stem}.pdf", "width_in": round(w, 3),
                          "height_in": round(h, 3), "dpi": DPI}
    record = sidecar(drawn, res, files, caption)
    atomic_write_json(folder / f"{drawn.name}.json", record)
    return record


def sidecar(drawn: Drawn, res: Result, files: dict, caption: str = "") -> dict:
    """How a figure was made, from its result's provenance: deterministic (no time of drawing)."""
    import repsim
    s, raw = res.study, [c for c in res.prov.get("checkpoints") or [] if isinstance(c, dict)]
    seeds: dict[str, list] = {}
    for c in res.checkpoints:
        seeds.setdefault(display_name(c.get("algorithm", "?")), [])
        if c.get("seed") not in seeds[display_name(c.get("algorithm", "?"))]:
            seeds[display_name(c.get("algorithm", "?"))].append(c.get("seed"))
    record = {
        "figure": drawn.name, "analysis": res.name, "results": f"{res.name}.csv",
        "files": files, "caption": caption, "marks": drawn.note,
        "data": {"dataset": s.get("dataset", res.setting[0]), "split": s.get("split"),
                 "split_scheme": s.get("split_scheme"), "ways": res.setting[1], "shots": res.setting[2],
                 "queries_per_class": s.get("queries")},
        "setting": setting_text(res),
        "tasks": s.get("tasks"), "task_seed": s.get("task_seed"),
        "confidence_interval": s["confidence_interval"],
        "similarity_conventions": s.get("conventions"),
        "training_conventions": conventions_text(res.checkpoints),
        "seeds": {a: _sorted(v) for a, v in seeds.items()},
        "iterations": _sorted({c.get("iteration") for c in raw if c.get("iteration") is not None}),
        "checkpoints": [{"model": display_name(c["model"]),
                         "algorithm": c.get("algorithm"), "seed": c.get("seed"), "iteration": c.get("iteration"),
                         "reduced_schedule": bool(c.get("reduced_schedule")),
                         "conventions": c.get("convention_summary", "pytorch conventions"),
                         "file": c.get("checkpoint")} for c in raw],
        "analysed_by": {"repsim_version": res.prov.get("repsim_version"), "created": res.prov.get("created"),
                        "command": res.prov.get("command")},
        "drawn_by": {"repsim_version": repsim.__version__},
        "paper": PAPER_CITATION,
    }
    return _plain(record)


PAPER_CITATION = ("Aniruddh Raghu, Maithra Raghu, Samy Bengio, Oriol Vinyals. Rapid Learning or Feature Reuse? "
                  "Towards Understanding the Effectiveness of MAML. ICLR 2020. arXiv:1909.09157")


def _sorted(values) -> list:
    """Numbers in numeric order, then anything else by its text."""
    def key(v):
        try:
            return (0, float(v), "")
        except (TypeError, ValueError):
            return (1, 0.0, str(v))
    return sorted(values, key=key)


def _plain(x):
    """JSON-ready: numpy numbers as Python ones, NaN as null."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return int(x) if x.is_integer() and abs(x) < 2 ** 53 else (x if math.isfinite(x) else None)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def _render(fig) -> tuple[bytes, bytes]:
    import matplotlib
    png, pdf = io.BytesIO(), io.BytesIO()
    with matplotlib.rc_context(_TRUETYPE):
        fig.savefig(png, format="png", dpi=DPI, metadata={"Software": "repsim"})
        fig.savefig(pdf, format="pdf", metadata=_PDF_META)
    return png.getvalue(), pdf.getvalue()


def _figure(width, height, nrows=1, ncols=1, layout="constrained", **kw):
    """A figure of exactly ``width`` x ``height`` inches and its axes, row-major; constrained
    layout unless ``layout`` is None (then the caller lays it out, :func:`save_figure`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), layout=layout)
    if layout == "constrained":
        fig.get_layout_engine().set(w_pad=0.03, h_pad=0.03, wspace=0.03, hspace=0.03)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, [ax for row in axes for ax in row]


def _column(width) -> bool:
    return width < PAGE_WIDTH - 1e-9


# kept for analyses/convention_study.py, which draws figures of its own in this style
def new_figure(width, height, ncols=1):
    return _figure(width, height, 1, ncols, layout=None)


def save_figure(fig, folder: Path, stem: str, footer_height: float = 0.0, top: float = 1.0) -> bytes:
    fig.tight_layout(rect=(0, footer_height, 1, top))
    png, pdf = _render(fig)
    atomic_write_bytes(folder / f"{stem}.png", png)
    atomic_write_bytes(folder / f"{stem}.pdf", pdf)
    return png


def _chance(ax, chance, horizontal=True):
    if chance:
        line = ax.axhline if horizontal else ax.axvline
        line(chance, color="#777", ls=":", lw=1.1, zorder=0, label=f"chance ({chance:.0f}%)")


def _grouped_bars(ax, categories, groups, ylim=None, ylabel="", seed_means=None):
    """groups: list of (label, {category: (mean, ci)}, colour); ``seed_means``, where given,
    {label: {category: [each seed's mean]}}, drawn as dots on the bars (the spread over seeds
    beside the CI over tasks)."""
    n = max(len(groups), 1)
    width = 0.8 / n
    x = np.arange(len(categories))
    for i, (label, values, color) in enumerate(groups):
        means = [values.get(c, (np.nan, np.nan))[0] for c in categories]
        cis = [values.get(c, (np.nan, np.nan))[1] for c in categories]
        cis = [0 if not math.isfinite(v) else v for v in cis]
        xs = x + (i - (n - 1) / 2) * width
        ax.bar(xs, means, width * 0.92, yerr=cis, color=color, label=label,
               error_kw={"elinewidth": 0.8, "ecolor": "#222", "capsize": 1.5, "capthick": 0.8})
        for xi, c in zip(xs, categories):
            points = (seed_means or {}).get(label, {}).get(c, [])
            if len(points) > 1:
                ax.scatter([xi] * len(points), points, s=5, color="#222", zorder=3, linewidths=0)
        for xi, m in zip(xs, means):
            if m == 0:  # a zero-height bar is invisible: say so
                ax.annotate("0", (xi, 0), xytext=(0, 1.5), textcoords="offset points", ha="center", va="bottom",
                            fontsize=6, color=color)
    ax.set_xticks(x)
    ax.set_xticklabels(categories)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)


_FIXED = {"maml": _COLORS[0], "anil": _COLORS[1], "boil": _COLORS[2], "fomaml": _COLORS[3]}


def _algorithm_colors(algs) -> dict:
    """One colour per algorithm, the same in every figure (MAML blue, ANIL orange, BOIL green);
    models with names of their own take the others in turn."""
    free = [c for c in _COLORS if c not in _FIXED.values()]
    out, k = {}, 0
    for a in algs:
        if str(a).lower() in _FIXED:
            out[a] = _FIXED[str(a).lower()]
        else:
            out[a] = free[k % len(free)]
            k += 1
    return out


def fig_similarity(res: Result, width: float):
    t = res.table
    layers = list(dict.fromkeys(t["layer"]))
    algs = list(dict.fromkeys(t["algorithm"]))
    colors = _algorithm_colors(algs)
    measures = [m for m in ("cca", "cka") if m in set(t["measure"])] or list(dict.fromkeys(t["measure"]))
    column = _column(width)
    n = len(measures)
    fig, axes = (_figure(width, 0.5 + 1.75 * n, n, 1, sharex=True) if column
                 else _figure(width, 2.45, 1, n, sharey=True))
    several = False
    for k, (ax, m) in enumerate(zip(axes, measures)):
        sub = t[t["measure"] == m]
        groups = [(display_name(a) + reduced_mark(res, a, None, None),
                   {r.layer: (r.mean, r.ci95) for r in sub[sub["algorithm"] == a].itertuples()}, colors[a])
                  for a in algs]
        seeds = _seed_means(res, m, {a: g[0] for a, g in zip(algs, groups)})
        several = several or any(len(v) > 1 for g in seeds.values() for v in g.values())
        _grouped_bars(ax, layers, groups, ylim=(0, 1.05),
                      ylabel="similarity, before vs after" if (column or k == 0) else "", seed_means=seeds)
        if not column or k == n - 1:
            ax.set_xlabel("layer")
        ax.set_title(f"{m.upper()}: each layer before vs after the inner loop")
        ax.axhline(1.0, color="#999", lw=0.6, ls="--", zorder=0)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncol=len(labels))
    return fig, "error bars: 95% CI over tasks" + ("; dots: each seed's mean" if several else "")


def _seed_means(res: Result, measure: str, labels: dict) -> dict:
    """{label (or algorithm): {layer: [each seed's mean over tasks]}} from NAME_seeds.csv."""
    t = res.extras["seeds"]
    t = t[t["measure"] == measure]
    return {labels.get(a, a): {layer: g["mean"].tolist() for layer, g in ga.groupby("layer", sort=False)}
            for a, ga in t.groupby("algorithm", sort=False)}


def _trained_here(res: Result, runs) -> list:
    """The training iterations of the (model, iteration) ``runs`` that repsim trained, sorted:
    an imported model's checkpoint iteration (0) says nothing."""
    return sorted({it for a, it in runs if not res.imported(a)})


def fig_freezing(res: Result, width: float):
    t = res.table
    frozen = list(dict.fromkeys(t["frozen"]))
    x = np.arange(len(frozen))
    column = _column(width)
    fig, (ax,) = _figure(width, 3.1 if column else 2.5)
    runs = list(dict.fromkeys(zip(t["algorithm"], t["seed"], t["iteration"])))
    its = _trained_here(res, {(a, it) for a, _, it in runs})
    several_its = len(its) > 1
    for i, (a, s, it) in enumerate(runs):
        sub = t[(t["algorithm"] == a) & (t["seed"] == s) & (t["iteration"] == it)].set_index("frozen")
        pos = [j for j, f in enumerate(frozen) if f in sub.index]
        mark = "†" if res.reduced(a, s, it) else ""
        ax.errorbar(x[pos] + (i - (len(runs) - 1) / 2) * 0.04, [sub.loc[frozen[j], "accuracy"] for j in pos],
                    yerr=[np.nan_to_num(sub.loc[frozen[j], "ci95"]) for j in pos], marker="o",
                    color=_COLORS[i % len(_COLORS)],
                    label=display_name(a) + ("" if res.seed_unknown(a) else f" seed {iteration_text(s)}")
                          + (f", it {iteration_text(it)}" if several_its and not res.imported(a) else "") + mark)
    for a in dict.fromkeys(t["algorithm"]):
        vals = [paper.paper_value("freezing", res.setting, f, "accuracy") if a == "maml" else None for f in frozen]
        if any(v is not None for v in vals):
            pos = [j for j, v in enumerate(vals) if v is not None]
            ax.plot(x[pos], [vals[j].value for j in pos], ls="--", marker="s", color="#777", mfc="white",
                    label=f"paper, Table 1 ({setting_text(res)})")
            break
    _chance(ax, res.chance)
    ax.set_xticks(x)
    labels = [frozen_label(f) for f in frozen]
    if column and len(frozen) > 3:  # "conv1–conv4" five times does not fit a column in one line
        labels = [label.replace("–", "–\n") for label in labels]
    ax.set_xticklabels(labels)
    ax.set_xlabel("layers frozen in the inner loop at test time")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Freezing body layers at test time"
                 + (f" (iteration {iteration_text(its[0])})" if len(its) == 1 else ""))
    if column:
        fig.legend(loc="outside lower center", ncol=2)
    else:
        fig.legend(loc="outside right upper")
    return fig, "error bars: 95% CI over tasks"


def fig_freezing_decomposed(res: Result, width: float):
    from repsim.report.tables import decomposed_rows

    rows = decomposed_rows(res)
    runs = list(dict.fromkeys((r["algorithm"], r["iteration"]) for r in rows))
    column = _column(width)
    ncols = 1 if column else min(len(runs), 2)
    nrows = math.ceil(len(runs) / ncols)
    fig, axes = _figure(width, 0.6 + 1.9 * nrows, nrows, ncols, sharey=True)
    parts = [("cost: total", "paper protocol (total)", "#999999"), ("cost: features", "features", _COLORS[0]),
             ("cost: head optimisation", "head optimisation", _COLORS[1])]
    its = _trained_here(res, runs)
    for ax, (a, it) in zip(axes, runs):
        sub = [r for r in rows if (r["algorithm"], r["iteration"]) == (a, it)]
        x = np.arange(len(sub))
        for k, (q, label, color) in enumerate(parts):
            means = [r[q]["mean"] if q in r else np.nan for r in sub]
            cis = [max(r[q]["cis"]) if q in r else np.nan for r in sub]
            ax.bar(x + (k - 1) * 0.26, means, 0.26, yerr=np.nan_to_num(cis), color=color,
                   label=label, error_kw={"elinewidth": 0.6})
        ax.axhline(0, color="black", lw=0.5)
        ax.set_xticks(x)
        # side by side, each panel is half as wide: upright labels of 5 sets run into each other
        tilted = column or ncols > 1
        ax.set_xticklabels([frozen_label(r["frozen"]) for r in sub], rotation=30 if tilted else 0,
                           ha="right" if tilted else "center", rotation_mode="anchor")
        ax.set_title(f"{display_name(a)}{reduced_mark(res, a, None, it)}"
                     + (f", iteration {iteration_text(it)}" if len(its) > 1 and not res.imported(a) else ""))
        ax.set_xlabel("layers frozen in the inner loop at test time")
        ax.set_ylabel("accuracy cost (points)")
    for ax in axes[len(runs):]:
        ax.set_visible(False)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center" if column else "outside right upper",
               ncol=3 if column else 1)
    note = ("bars: mean over seeds of the cost against the full inner loop; error bars: the largest per-seed "
            "paired 95% CI over tasks; features = full loop - fitted head, head optimisation = fitted head - "
            "paper protocol")
    return fig, note + (f"; models at iteration {iteration_text(its[0])}" if len(its) == 1 else "")


def _body(layers):
    return [layer for layer in layers if layer != HEAD]


def _curve_over_seeds(ax, sub: pd.DataFrame, pooled: pd.DataFrame, **style) -> None:
    """One algorithm's curve through training: ``sub`` its rows (one per seed and iteration),
    ``pooled`` the same rows over seeds (the runner's NAME_over_seeds.csv). With one seed: its
    values and 95% CI over tasks; with several: the mean over seeds, shaded from the lowest
    seed to the highest (one line per seed would make six indistinguishable line styles at
    three seeds)."""
    if sub["seed"].nunique() == 1:
        sub = sub.sort_values("iteration")
        ax.errorbar(sub["iteration"], sub["mean"], yerr=np.nan_to_num(sub["ci95"]), marker="o",
                    capsize=2, **style)
        return
    band = pooled.sort_values("iteration")
    ax.plot(band["iteration"], band["mean"], marker="o", **style)
    ax.fill_between(band["iteration"], band["low"], band["high"], color=style["color"], alpha=0.15, lw=0)


_LINESTYLES = ["-", "--", ":", "-."]


def _iter_ticks(ax, its):
    if len(its) <= 8:
        ax.set_xticks(its)
        thousands = all(i >= 10000 and i % 1000 == 0 for i in its)
        ax.set_xticklabels([f"{int(i) // 1000}k" if thousands else iteration_text(i) for i in its])


def fig_through_training(res: Result, width: float):
    from matplotlib.lines import Line2D
    t, pooled = res.table, res.extras["over_seeds"]
    algorithms = list(dict.fromkeys(t["algorithm"]))
    style = {a: _LINESTYLES[r % len(_LINESTYLES)] for r, a in enumerate(algorithms)}
    sims = [m for m in ("cca", "cka") if m in set(t["metric"])]
    column = _column(width)
    n = 1 + len(sims)
    fig, axes = (_figure(width, 0.7 + 1.55 * n, n, 1, sharex=True) if column
                 else _figure(width, 2.55, 1, n))
    _accuracy_panel(axes[0], res, algorithms, style)
    layers = [layer for layer in dict.fromkeys(t["layer"]) if layer]
    body = _body(layers)
    colors = {layer: _LAYER_COLORS[k % len(_LAYER_COLORS)] for k, layer in enumerate(body)}
    colors.update({HEAD: _HEAD_COLOR} if HEAD in layers else {})
    for ax, m in zip(axes[1:], sims):
        for a in algorithms:
            for layer in layers:
                sub = t[(t["algorithm"] == a) & (t["metric"] == m) & (t["layer"] == layer)]
                if not sub.empty:
                    _curve_over_seeds(ax, sub, pooled[(pooled["algorithm"] == a) & (pooled["metric"] == m)
                                                      & (pooled["layer"] == layer)],
                                      ls=style[a], color=colors[layer], ms=2.5)
        coinciding = [note for a in algorithms for note in _coinciding(res.extras["body"], a, m)]
        if coinciding:
            ax.text(0.02, 0.02, "; ".join(coinciding), transform=ax.transAxes, fontsize=6, color="#444",
                    va="bottom")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(f"{m.upper()}, before vs after")
        ax.set_title(f"{m.upper()} per layer")
    its = sorted(set(t["iteration"]))
    for k, ax in enumerate(axes):
        if not column or k == n - 1:
            ax.set_xlabel("training iteration")
        _iter_ticks(ax, its)
    marks = {a: reduced_mark(res, a, None, None) for a in algorithms}
    handles = [Line2D([], [], color="#333", ls=style[a], label=display_name(a) + marks[a]) for a in algorithms]
    if sims:
        handles += [Line2D([], [], color=colors[layer], lw=2.5, label=layer) for layer in layers]
    fig.legend(handles=handles, loc="outside upper center", ncol=min(len(handles), 4 if column else 8))
    several = t.groupby("algorithm")["seed"].nunique().max() > 1
    note = ("line style: algorithm, in every panel; colour: the accuracy mode in the accuracy panel (its own "
            "legend), the layer in the similarity panels (the legend above); "
            + ("lines: mean over seeds, shaded from the lowest seed to the highest" if several
               else "error bars: 95% CI over tasks"))
    return fig, note


def _accuracy_panel(ax, res: Result, algorithms: list, style: dict) -> None:
    """Through-training's accuracy panel: a curve per algorithm and accuracy mode, mean over seeds."""
    from matplotlib.lines import Line2D
    t, pooled = res.table, res.extras["over_seeds"]
    acc = t[t["metric"].str.startswith("accuracy")]
    modes = []
    for metric in dict.fromkeys(acc["metric"]):
        mode = metric.replace("accuracy", "").strip(" ()")
        modes.append(mode)
        for a in algorithms:
            sub = acc[(acc["algorithm"] == a) & (acc["metric"] == metric)]
            if not sub.empty:
                _curve_over_seeds(ax, sub, pooled[(pooled["algorithm"] == a) & (pooled["metric"] == metric)],
                                  ls=style[a], color=_MODE_COLORS.get(mode, "#56B4E9"))
    _chance(ax, res.chance)
    ax.set_ylim(0, 100)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy")
    mode_handles = [Line2D([], [], color=_MODE_COLORS.get(m, "#56B4E9"), marker="o", label="NIL" if m == "nil" else
                           ("inner loop" if m == "inner-loop" else m)) for m in modes]
    if res.chance:
        mode_handles.append(Line2D([], [], color="#777", ls=":", lw=1.1, label="chance"))
    if mode_handles:
        ax.legend(handles=mode_handles, loc="lower right", borderaxespad=0.2, frameon=True,
                  facecolor="white", edgecolor="none", framealpha=0.9)


def _coinciding(glance, algorithm: str, measure: str) -> list[str]:
    """Body layers whose curves coincide (ANIL's, all at 1.00) hide each other: the note that
    says so, from the runner's through_training_body.csv (``glance``)."""
    b = glance[(glance["algorithm"] == algorithm) & (glance["metric"] == measure)]
    names = b["body_layers"].iloc[0].split() if len(b) else []
    if len(names) > 1 and (b["body_max"] - b["body_min"] < 0.005).all():
        return [f"{display_name(algorithm)}: {layer_span(names)} coincide at "
                f"{range_text([b['body_min'].min(), b['body_max'].max()])}"]
    return []


def fig_cross(res: Result, width: float):
    t = cross_layer_table(res)
    t = t.assign(pair=[p if s == "different" else f"{p} (same seed)" for p, s in zip(t["pair"], t["seeds"])])
    pairs = list(dict.fromkeys(t["pair"]))
    layers = list(dict.fromkeys(t["layer"]))
    measures = [m for m in ("cca", "cka") if m in set(t["measure"])] or list(dict.fromkeys(t["measure"]))
    column = _column(width)
    n = len(measures)
    rows_h = max(0.26 * len(pairs), 0.5)
    fig, axes = (_figure(width, 0.35 + n * (rows_h + 0.45), n, 1, sharex=True) if column
                 else _figure(width, 0.75 + rows_h, 1, n, sharey=True))
    image = None
    for k, (ax, m) in enumerate(zip(axes, measures)):
        sub = t[t["measure"] == m].set_index(["pair", "layer"])["mean"]
        grid = np.array([[sub.get((p, layer), np.nan) for layer in layers] for p in pairs], dtype=float)
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for i in range(len(pairs)):
            for j in range(len(layers)):
                v = grid[i, j]
                ax.text(j, i, "n/a" if not math.isfinite(v) else f"{v:.2f}", ha="center", va="center",
                        fontsize=7, color="black" if math.isfinite(v) and v > 0.6 else "white")
        ax.set_xticks(range(len(layers)))
        ax.set_xticklabels(layers)
        ax.set_yticks(range(len(pairs)))
        ax.set_yticklabels(pairs)
        ax.tick_params(length=0)
        if not column or k == n - 1:
            ax.set_xlabel("layer")
        ax.set_title(f"{m.upper()} between models")
        for spine in ax.spines.values():
            spine.set_visible(False)
    if image is not None:
        fig.colorbar(image, ax=axes, label="similarity", fraction=0.05, aspect=30 if column else 10, pad=0.02)
    return fig, "cells: mean over tasks; rows: models of different seeds unless marked (same seed)"


def fig_weight_change(res: Result, width: float):
    t = res.table
    layers = list(dict.fromkeys(t["layer"]))
    algs = list(dict.fromkeys(t["algorithm"]))
    colors = _algorithm_colors(algs)
    body, head = _body(layers), [layer for layer in layers if layer == HEAD]
    parts = [p for p in (body, head) if p]
    column = _column(width)
    ratios = [max(len(p), 1) + (0.6 if p is head else 0) for p in parts]
    fig, axes = _figure(width, 2.7 if column else 2.4, 1, len(parts), width_ratios=ratios)
    for k, (ax, part) in enumerate(zip(axes, parts)):
        groups = [(display_name(a) + reduced_mark(res, a, None, None),
                   {r.layer: (r.mean, r.ci95) for r in t[t["algorithm"] == a].itertuples() if r.layer in part},
                   colors[a]) for a in algs]
        label = "relative weight change ‖θ′−θ‖ / ‖θ‖"
        if column:
            label = label.replace(" ‖", "\n‖", 1)
        _grouped_bars(ax, part, groups, ylabel=label if k == 0 else "")
        ax.set_ylim(0, None)
        ax.set_title("body layers" if part is body else "head")
    fig.supxlabel("layer", fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncol=len(labels))
    return fig, ("body layers and the head on separate axes, each with its own scale; " if len(parts) > 1 else "") + \
        "error bars: 95% CI over tasks"


def _seed_bars(ax, res, labels, per_label, means, paper_values=None, paper_label="", show_labels=True):
    """Horizontal bars, one per label, top to bottom: bar = the mean over seeds (``means``, the
    runner's); each seed (``per_label``: (mean, 95% CI over tasks) per seed) drawn as a dot with
    its CI."""
    y = np.arange(len(labels))
    for i, label in enumerate(labels):
        rows = per_label[label]
        ax.barh(i, means[i], 0.7, color=_COLORS[0], alpha=0.75,
                label="mean over seeds" if i == 0 else None)
        offsets = np.linspace(-0.18, 0.18, len(rows)) if len(rows) > 1 else [0.0]
        for off, (mean, ci) in zip(offsets, rows):
            ax.errorbar(mean, i + off, xerr=0 if not math.isfinite(ci) else ci, fmt="o", ms=2.5, capsize=1.5,
                        elinewidth=0.8, color="#222",
                        label="each seed, 95% CI over tasks" if i == 0 and off == offsets[0] else None)
    if paper_values and any(v is not None for v in paper_values):
        pos = [j for j, v in enumerate(paper_values) if v is not None]
        ax.scatter([paper_values[j].value for j in pos], y[pos], marker="D", s=16, color=_COLORS[1],
                   zorder=5, label=paper_label)
    _chance(ax, res.chance, horizontal=False)
    ax.set_yticks(y)
    ax.set_yticklabels([str(label) for label in labels] if show_labels else [])
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.tick_params(axis="y", length=0)
    ax.set_xlim(0, 100)
    ax.set_xlabel("test accuracy (%)")


def _seed_legend(fig, axes, column):
    seen = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, h)
    fig.legend(list(seen.values()), list(seen), loc="outside lower center" if column else "outside upper center",
               ncol=2 if column else len(seen))


def fig_regimes(res: Result, width: float):
    t = res.table
    regimes = list(dict.fromkeys(t["regime"]))
    per = {display_name(r): list(zip(t[t["regime"] == r]["accuracy"], t[t["regime"] == r]["ci95"])) for r in regimes}
    column = _column(width)
    fig, (ax,) = _figure(width, 0.95 + 0.25 * len(regimes) + (0.3 if column else 0))
    pvals = [paper.paper_value("regimes", res.setting, r, "nil") for r in regimes]
    means = {r["regime"]: r["mean"] for r in res.over_seeds()}
    _seed_bars(ax, res, [display_name(r) for r in regimes], per, [means[r] for r in regimes], pvals,
               f"paper, Table 5 ({setting_text(res)})")
    ax.set_xlabel("NIL test accuracy (%)")
    ax.set_title("Training regimes, tested with NIL")
    _seed_legend(fig, [ax], column)
    return fig, "bars: mean over seeds; dots: each seed with its 95% CI over tasks"


def fig_heads(res: Result, width: float):
    t = res.table
    runs = list(dict.fromkeys(zip(t["algorithm"], t["iteration"])))
    labels = list(dict.fromkeys(t["variant"]))
    column = _column(width)
    ncols = 1 if column else min(len(runs), 3)
    nrows = math.ceil(len(runs) / ncols)
    panel_h = 0.45 + 0.2 * len(labels)
    fig, axes = _figure(width, 0.5 + nrows * panel_h, nrows, ncols, sharex=True, sharey=True)
    its = _trained_here(res, runs)
    several_its = len(its) > 1
    means = {(r["algorithm"], r["iteration"], r["variant"]): r["mean"] for r in res.over_seeds()}
    for k, (ax, (a, it)) in enumerate(zip(axes, runs)):
        sub = t[(t["algorithm"] == a) & (t["iteration"] == it)]
        per = {v: list(zip(sub[sub["variant"] == v]["accuracy"], sub[sub["variant"] == v]["ci95"])) for v in labels}
        per = {v: rows if rows else [(np.nan, np.nan)] for v, rows in per.items()}
        _seed_bars(ax, res, labels, per, [means.get((a, it, v), np.nan) for v in labels], show_labels=True)
        ax.set_title(f"{display_name(a)}{reduced_mark(res, a, None, it)}"
                     + (f", iteration {iteration_text(it)}" if several_its and not res.imported(a) else ""))
        if k < len(runs) - ncols:
            ax.set_xlabel("")
    for ax in axes[len(runs):]:
        ax.set_visible(False)
    _seed_legend(fig, axes[:len(runs)], column)
    note = "bars: mean over seeds; dots: each seed with its 95% CI over tasks"
    return fig, f"{note}; models at iteration {iteration_text(its[0])}" if len(its) == 1 else note


FIGURES = {"similarity": fig_similarity, "freezing": fig_freezing, "freezing_decomposed": fig_freezing_decomposed,
           "through_training": fig_through_training,
           "cross": fig_cross, "weight_change": fig_weight_change, "regimes": fig_regimes, "heads": fig_heads}

