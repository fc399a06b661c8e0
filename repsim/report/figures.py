"""Paper-style figures, one per analysis, written as PNG and PDF, deterministically (no
timestamps) and atomically. Each figure's footer says how it was made."""

from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from repsim import paper
from repsim.io import atomic_write_bytes
from repsim.report.loading import Result
from repsim.report.text import HEAD, _alg, _iter, _frozen_label, _setting_text, _short_caption, _mark
from repsim.report.cross import cross_layer_table


_COLORS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
_RC = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "xtick.labelsize": 10,
       "ytick.labelsize": 10, "legend.fontsize": 9.5, "figure.dpi": 100, "savefig.dpi": 150,
       "axes.spines.top": False, "axes.spines.right": False, "svg.hashsalt": "repsim",
       "pdf.compression": 6}
_PDF_META = {"CreationDate": None, "ModDate": None, "Creator": "repsim", "Producer": "repsim"}


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
