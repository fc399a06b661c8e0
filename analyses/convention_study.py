"""Recipe: which training convention decides "rapid learning or feature reuse"?

    python analyses/convention_study.py train --setting omniglot_5w1s --runs RUNS \
        --data-root ../shared/data/omniglot [--iterations 1500] [--seeds 0] [--variants ...] \
        [--worker 0/2]
    python analyses/convention_study.py trajectory --runs LONG_RUNS --data-root ../shared/data/omniglot
    python analyses/convention_study.py report --runs RUNS --out checkpoints/convention_study \
        [--trajectory LONG_RUNS]
    python analyses/convention_study.py export --setting omniglot_5w1s --runs RUNS --variant pytorch \
        --seeds 0 1 2 --out checkpoints/convention_study/models/pytorch

Every training convention where PyTorch code and Finn et al.'s TensorFlow MAML (the code the
paper ran) differ is a config key (repsim.config). Starting from the ``pytorch`` set, each
convention is switched to Finn's alone ("pytorch + KEY"); starting from the ``finn`` set, each
is switched back alone ("finn - KEY"). Every variant is trained at one matched reduced schedule
(same seed, same training tasks, same iterations) and then measured on the same test tasks:

* test accuracy with its own inner loop (``--tasks`` tasks, its test-time steps and queries),
* the cost of freezing conv1-conv4 at test time (only the head adapts), with a 95% CI over the
  per-task differences, which pair the same tasks,
* NIL accuracy (no head, no inner loop),
* CCA and linear CKA of every layer before vs after the inner loop (``--similarity-tasks``
  tasks, 15 query points per class, the analyses' conventions).

Keys that switch nothing on a setting (equal in both sets) are skipped; a key that only
changes testing (``inner_steps_test``) reuses the run trained without it. The task pool is
fixed at 0 (fresh tasks) for every variant: at a reduced schedule the pool of 200,000 tasks
never comes round (1,500 iterations draw 48,000 tasks at most), so it cannot matter here, and
fixing it gives every variant the same training tasks. Runs resume when interrupted, and a
run's measurements are kept beside it (``study.json``), so ``train`` run again measures only
what is new. ``--worker K/N`` takes every N-th variant, so N processes can share the work.

``export`` copies a variant's final models, weights only, to ``OUT/maml-sSEED/model.safetensors``
(what ``repsim analyze`` reads; the decisive cells are committed so).

``trajectory`` measures every intermediate checkpoint of longer runs (any run folders, e.g.
the finn and pytorch sets trained 20,000 iterations), to see whether the answer moves with
training time; ``report --trajectory`` adds them to the report.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

# everything imported here, at start: a long study must not mix library versions when the
# source changes while it runs
from repsim import measures
from repsim.checkpoint import load_checkpoint, save_checkpoint
from repsim.config import CONVENTION_KEYS, TEST_TIME_KEYS, Config, convention_set, from_saved, load_config
from repsim.errors import RepsimError
from repsim.io import atomic_write_json, atomic_write_text
from repsim.meta import own_inner_loop
from repsim.report import markdown_table
from repsim.report.figures import new_figure, save_figure
from repsim.statistics import summarise
from repsim.study import Study
from repsim.train import train

SETTINGS = {
    "omniglot_5w1s": ["dataset=omniglot", "ways=5", "shots=1"],
    "omniglot_20w1s": ["dataset=omniglot", "ways=20", "shots=1"],
    "synthetic_5w1s": ["dataset=synthetic", "ways=5", "shots=1", "filters=16", "meta_batch_size=4"],  # for tests
}
ONLY_OMNIGLOT = ("image_resize",)  # the other data sets are not resized
# Finn's inner step (ways x the mean-loss step) with Finn's 10 test-time steps: the change the
# issue first tried (the second needs no training of its own)
COMBINATIONS = (("inner_loss", "inner_steps_test"),)
FROZEN = ["conv1", "conv2", "conv3", "conv4"]
STUDY_VERSION = 1  # bump when the measurements change, to measure every run again
# the paper's readings: freezing conv1-conv4 costs at most this many points, and conv4's
# similarity before vs after the inner loop is at least this, when features are reused
REUSE_COST, REUSE_SIMILARITY = 2, 0.9


def switches(setting: str) -> list[str]:
    """The convention keys whose pytorch and finn values differ on ``setting``."""
    c = load_config(None, SETTINGS[setting])
    finn, pytorch = convention_set("finn", c), convention_set("pytorch", c)
    return [k for k in CONVENTION_KEYS if k != "task_pool" and finn[k] != pytorch[k]
            and (c.dataset == "omniglot" or k not in ONLY_OMNIGLOT)]


def variants(setting: str) -> dict[str, dict]:
    """Each variant's config overrides: the two sets, and each switch from either side."""
    c = load_config(None, SETTINGS[setting])
    finn, pytorch = convention_set("finn", c), convention_set("pytorch", c)
    out = {"pytorch": {"conventions": "pytorch"}, "finn": {"conventions": "finn"}}
    for key in switches(setting):
        out[f"pytorch + {key}"] = {"conventions": "pytorch", key: finn[key]}
    for key in switches(setting):
        out[f"finn - {key}"] = {"conventions": "finn", key: pytorch[key]}
    for keys in COMBINATIONS:  # pairs worth seeing together, where both switch something
        if all(k in switches(setting) for k in keys):
            out["pytorch + " + " + ".join(keys)] = {"conventions": "pytorch", **{k: finn[k] for k in keys}}
    if c.dataset != "miniimagenet":
        # Finn's own head for MiniImageNet, where the paper froze layers: does his set reuse
        # features with the head he drew there?
        out["finn with head_init: xavier_uniform"] = {"conventions": "finn", "head_init": "xavier_uniform"}
    return out


def run_config(setting: str, overrides: dict, seed: int, iterations: int,
               data_root: str | None = None) -> Config:
    items = SETTINGS[setting] + [f"{k}={v}" for k, v in overrides.items()] + [
        "algorithm=maml", f"seed={seed}", "task_pool=0", f"iterations={iterations}",
        f"checkpoint_every={max(iterations // 3, 1)}", f"eval_every={max(iterations // 6, 1)}",
        "eval_tasks=100", "reduced=true"] + ([f"data_root={data_root}"] if data_root else [])
    return load_config(None, items)


def _trained(config: Config) -> dict:
    """What training depends on: the config without test-time keys and local paths."""
    return {k: v for k, v in config.to_dict().items() if k not in TEST_TIME_KEYS + ("data_root", "conventions")}


def training_name(config: Config) -> str:
    """A run folder name from the training config alone (test-time keys left out), so that
    variants that differ only in how they are tested share one training run."""
    return (f"maml-s{config.seed}-"
            + hashlib.sha256(json.dumps(_trained(config), sort_keys=True).encode()).hexdigest()[:10])


def run_folder(runs: Path, config: Config) -> Path:
    """The run folder that trained ``config``: an earlier one whose recorded config, read with
    today's defaults, trains the same (a key added to repsim later changes the folder name,
    not the training), else a new one named by :func:`training_name`."""
    for folder in sorted(runs.glob(f"maml-s{config.seed}-*")):
        try:
            saved = from_saved(yaml.safe_load((folder / "config.yaml").read_text()), str(folder)).resolved()
        except (OSError, RepsimError, yaml.YAMLError):
            continue
        if _trained(saved) == _trained(config):
            return folder
    return runs / training_name(config)


# measuring one run --------------------------------------------------------------------------
def measure(config: Config, final: Path, *, tasks: int, similarity_tasks: int,
            data_root: str | None, run: Path | None = None) -> dict:
    """The study's numbers for checkpoint ``final`` of the run folder ``run`` (default: the
    checkpoint's folder), tested as ``config`` says."""
    import dataclasses

    trained = load_checkpoint(final)
    ckpt = dataclasses.replace(trained, config=dataclasses.replace(
        trained.config, **{k: getattr(config, k) for k in TEST_TIME_KEYS}))
    common = dict(data_root=data_root, device="cpu", progress=False, seed=0)
    study = Study.for_checkpoint(ckpt, queries=config.test_queries, num_tasks=tasks, **common)
    m = study.load(ckpt)
    own = study.score(m)
    head = [n for n in own_names(m) if n.startswith("head.")]
    frozen = study.score(m, names=head)
    nil = study.score(m, nil=True)
    diff = own.per_task - frozen.per_task
    row = {"accuracy": own.mean, "accuracy_ci95": own.ci95,
           "frozen_accuracy": frozen.mean, "frozen_accuracy_ci95": frozen.ci95,
           "freezing_cost": 100 * diff.mean(), "freezing_cost_ci95": 100 * 1.96 * diff.std() / np.sqrt(diff.size),
           "nil_accuracy": nil.mean, "nil_accuracy_ci95": nil.ci95, "tasks": own.tasks}
    rep = Study.for_checkpoint(ckpt, num_tasks=similarity_tasks, **common)
    sims = summarise(measures.layer_similarity(rep, [ckpt]))
    for r in sims.itertuples():
        row[f"{r.measure}_{r.layer}"] = r.mean
        row[f"{r.measure}_{r.layer}_ci95"] = r.ci95
    row["similarity_tasks"] = similarity_tasks
    curve = [json.loads(line) for line in ((run or final.parent) / "metrics.jsonl").read_text().splitlines() if line]
    row["val_curve"] = json.dumps({c["iteration"]: None if c["val_accuracy"] is None else round(c["val_accuracy"], 2)
                                   for c in curve})  # None: a validation whose inner loop diverged
    row["wall_time_s"] = trained.extra.get("wall_time_s")
    return row


def own_names(m) -> list[str]:
    return list(own_inner_loop(m.ckpt.config, m.model).names)


def train_and_measure(args) -> None:
    runs = Path(args.runs)
    table = variants(args.setting)
    chosen = args.variants or list(table)
    unknown = [v for v in chosen if v not in table]
    if unknown:
        raise RepsimError(f"unknown variant(s) {unknown}: choose from {list(table)}")
    k, n = (int(x) for x in args.worker.split("/"))
    jobs = [(v, s) for s in args.seeds for v in chosen]
    for i, (variant, seed) in enumerate(jobs):
        if i % n != k:
            continue
        config = run_config(args.setting, table[variant], seed, args.iterations, args.data_root)
        folder = run_folder(runs / args.setting, config)
        final = folder / "model.safetensors"
        if not final.is_file():
            print(f"training {variant} seed {seed} in {folder}", flush=True)
            train(config, folder, device="cpu", resume=(folder / "config.yaml").is_file(),
                  progress=not args.quiet)
        key = {"version": STUDY_VERSION, "variant": variant, "setting": args.setting, "seed": seed,
               "tasks": args.tasks, "similarity_tasks": args.similarity_tasks,
               "weights": hashlib.sha256(final.read_bytes()).hexdigest(),
               "test": {k: getattr(config, k) for k in TEST_TIME_KEYS}}
        record_file = folder / f"study-{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]}.json"
        if record_file.is_file():
            continue
        print(f"measuring {variant} seed {seed}", flush=True)
        row = measure(config, final, tasks=args.tasks, similarity_tasks=args.similarity_tasks,
                      data_root=args.data_root)
        row.update({"setting": args.setting, "variant": variant, "seed": seed,
                    "iterations": args.iterations, "run": folder.name,
                    "convention_summary": config.describe_conventions()})
        atomic_write_json(record_file, {"key": key, "row": row})
        print(f"  {variant} s{seed}: {row['accuracy']:.2f} +- {row['accuracy_ci95']:.2f}%, "
              f"freezing costs {row['freezing_cost']:.2f} +- {row['freezing_cost_ci95']:.2f}, "
              f"NIL {row['nil_accuracy']:.2f}", flush=True)


def export(args) -> None:
    """Copy a variant's final models, weights only (no optimiser state), for analysis and commit."""
    table = variants(args.setting)
    if args.variant not in table:
        raise RepsimError(f"unknown variant {args.variant!r}: choose from {list(table)}")
    for seed in args.seeds:
        config = run_config(args.setting, table[args.variant], seed, args.iterations)
        final = run_folder(Path(args.runs) / args.setting, config) / "model.safetensors"
        if not final.is_file():
            raise RepsimError(f"{args.variant} seed {seed} has no final model at {final}: train it first "
                              f"('train --setting {args.setting} --variants \"{args.variant}\" --seeds {seed} "
                              f"--iterations {args.iterations}')")
        c = load_checkpoint(final)  # read without its optimiser state, so written without it
        target = save_checkpoint(Path(args.out) / f"maml-s{seed}" / "model.safetensors", c)
        print(f"{args.variant} seed {seed}, iteration {c.iteration} -> {target}")


def trajectory(args) -> None:
    """Measure every intermediate checkpoint of the long runs under ``--runs`` (one folder per
    run, written by ``repsim train``): how the answer moves with training time."""
    runs = sorted(p for p in Path(args.runs).iterdir() if (p / "config.yaml").is_file())
    if not runs:
        raise RepsimError(f"no run folders under {args.runs}: train them with 'repsim train' first")
    for run in runs:
        for path in measures.run_checkpoints(run):
            if int(path.stem.split("-")[1]) % args.every:  # iter-012500
                continue
            key = {"version": STUDY_VERSION, "tasks": args.tasks, "similarity_tasks": args.similarity_tasks,
                   "weights": hashlib.sha256(path.read_bytes()).hexdigest()}
            digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
            record = run / f"trajectory-{digest[:10]}.json"
            if record.is_file():
                continue
            ckpt = load_checkpoint(path)
            print(f"measuring {run.name} at iteration {ckpt.iteration}", flush=True)
            row = measure(ckpt.config, path, tasks=args.tasks, similarity_tasks=args.similarity_tasks,
                          data_root=args.data_root, run=run)
            row.update({"run": run.name, "iteration": ckpt.iteration, "setting": run.parent.name,
                        "convention_summary": ckpt.config.describe_conventions()})
            atomic_write_json(record, {"key": key, "row": row})
            print(f"  {row['accuracy']:.2f}%, freezing costs {row['freezing_cost']:.2f}, "
                  f"NIL {row['nil_accuracy']:.2f}, conv4 CCA {row.get('cca_conv4', float('nan')):.2f}", flush=True)


# the report -------------------------------------------------------------------------------
def collect(runs: Path) -> pd.DataFrame:
    rows = [json.loads(p.read_text())["row"] for p in sorted(runs.glob("*/*/study-*.json"))]
    if not rows:
        raise RepsimError(f"no measured runs under {runs}: run 'convention_study.py train' first")
    return pd.DataFrame(rows)


def early(curve: str) -> float:
    """Validation accuracy at the first evaluation (1/6 of the schedule): how fast it starts."""
    points = json.loads(curve)
    return points[min(points, key=int)]


def verdicts(row: dict) -> tuple[str, str, str]:
    """The paper's readings of a run: freezing conv1-conv4 at test time costs at most 2 points
    (feature reuse) or more (rapid learning in the body); and conv4's similarity before vs
    after the inner loop, by CCA and by CKA, at least 0.9 (unchanged: reuse) or not."""
    freezing = "reuse" if row["freezing_cost"] <= REUSE_COST else "rapid"
    cca = "reuse" if row.get("cca_conv4", 0) >= REUSE_SIMILARITY else "changes"
    cka = "reuse" if row.get("cka_conv4", 0) >= REUSE_SIMILARITY else "changes"
    return freezing, cca, cka


def per_variant(df: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per (setting, variant); with one seed the 95% CI over tasks, with more
    the seeds' standard deviation."""
    out = []
    order = {v: i for s in df.setting.unique() for i, v in enumerate(variants(s))}
    for (setting, variant), g in df.groupby(["setting", "variant"], sort=False):
        row = {"setting": setting, "variant": variant, "seeds": len(g),
               "seed_list": " ".join(str(s) for s in sorted(g.seed))}
        g = g.assign(early_accuracy=[early(c) for c in g.val_curve])
        for col in ("accuracy", "early_accuracy", "freezing_cost", "nil_accuracy", "cca_conv4",
                    "cca_head", "cka_conv4", "cka_head", "cca_conv3", "cka_conv3"):
            if col not in g:
                continue
            row[col] = g[col].mean()
            spread = g[f"{col}_ci95"].iloc[0] if f"{col}_ci95" in g else np.nan
            row[f"{col}_spread"] = g[col].std(ddof=1) if len(g) > 1 else spread
        out.append(row)
    table = pd.DataFrame(out)
    table["order"] = [order.get(v, 99) for v in table.variant]
    return table.sort_values(["setting", "order"]).drop(columns="order").reset_index(drop=True)


def report(args) -> None:
    runs, out = Path(args.runs), Path(args.out)
    df = collect(runs)
    summary = per_variant(df)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "convention_study_runs.csv", df.to_csv(index=False))
    atomic_write_text(out / "convention_study.csv", summary.to_csv(index=False))
    figure(summary, out / "figures")

    def pm(row, col, digits=1):
        if col not in row or pd.isna(row[col]):
            return "—"
        if pd.isna(row.get(col + "_spread")):
            return f"{row[col]:.{digits}f}"
        return f"{row[col]:.{digits}f} ± {row[col + '_spread']:.{digits}f}"

    lines = ["# Which training convention decides the answer?", "",
             "Omniglot MAML (second order), trained with each convention switched alone, at one "
             "matched reduced schedule per setting; recipe `analyses/convention_study.py`. "
             "Each cell: mean ± 95% CI over test tasks (one seed) or mean ± standard deviation "
             "over seeds (seeds column). Freezing cost: accuracy with the full inner loop minus "
             "accuracy with conv1-conv4 frozen (the head alone adapts), on the same tasks. "
             "CCA/CKA: conv4 and head, before vs after the inner loop (1.0: unchanged). Verdicts: "
             "freezing says *reuse* when freezing conv1-conv4 costs at most 2 points (the paper: "
             "0.6 and 2.1 on MiniImageNet, *rapid* otherwise); CCA and CKA say *reuse* when conv4's "
             "similarity before vs after is at least 0.9 (the paper's body layers: above 0.9), "
             "*changes* otherwise. Mean CCA weighs all 64 canonical directions of conv4 alike, "
             "CKA weighs them by variance, so CCA is the stricter of the two.", ""]
    for setting, g in summary.groupby("setting", sort=False):
        its = sorted(df[df.setting == setting].iterations.unique())
        r0 = df[df.setting == setting].iloc[0]
        lines += [f"## {setting}", "",
                  f"{', '.join(str(i) for i in its)} iterations (reduced schedule), "
                  f"{int(r0.tasks)} test tasks for accuracies, {int(r0.similarity_tasks)} for "
                  f"similarities (15 queries per class), task seed 0, task_pool 0 for every variant.", ""]
        rows = []
        for r in g.itertuples():
            d = r._asdict()
            rows.append([r.variant, r.seed_list, pm(d, "early_accuracy"), pm(d, "accuracy"),
                         pm(d, "freezing_cost"), pm(d, "nil_accuracy"), pm(d, "cca_conv4", 2),
                         pm(d, "cca_head", 2), pm(d, "cka_conv4", 2), " / ".join(verdicts(d))])
        first = int(min(json.loads(r0.val_curve), key=int))
        lines += [markdown_table(["variant", "seeds", f"val. accuracy at {first} it. %", "test accuracy %",
                                  "freezing conv1-4 costs (points)", "NIL %", "CCA conv4", "CCA head",
                                  "CKA conv4", "verdict: freezing / CCA / CKA"], rows), ""]
    lines += ["![convention study](figures/convention_study.png)", ""]
    if args.trajectory:
        lines += trajectory_section(Path(args.trajectory), out)
    atomic_write_text(out / "report.md", "\n".join(lines))
    print(out / "report.md")


def trajectory_section(folder: Path, out: Path) -> list[str]:
    rows = [json.loads(p.read_text())["row"] for p in sorted(folder.glob("*/trajectory-*.json"))]
    if not rows:
        raise RepsimError(f"no measured checkpoints under {folder}: run 'convention_study.py trajectory' first")
    df = pd.DataFrame(rows).sort_values(["run", "iteration"])
    atomic_write_text(out / "convention_trajectory.csv", df.to_csv(index=False))
    r0 = df.iloc[0]
    lines = ["## Longer training", "",
             f"The same measurements on the intermediate checkpoints of longer runs ({r0.setting}, "
             f"seed 0, {int(df.iteration.max())} iterations, {int(r0.tasks)} test tasks, "
             f"{int(r0.similarity_tasks)} for similarities; ± 95% CI over tasks).", ""]
    table = [[r.run, r.convention_summary, int(r.iteration), f"{r.accuracy:.1f} ± {r.accuracy_ci95:.1f}",
              f"{r.freezing_cost:.1f} ± {r.freezing_cost_ci95:.1f}",
              f"{r.nil_accuracy:.1f} ± {r.nil_accuracy_ci95:.1f}", f"{r.cca_conv4:.2f}", f"{r.cca_head:.2f}",
              " / ".join(verdicts(r._asdict()))] for r in df.itertuples()]
    lines += [markdown_table(["run", "conventions", "iteration", "test accuracy %", "freezing conv1-4 costs",
                              "NIL %", "CCA conv4", "CCA head", "verdict: freezing / CCA / CKA"], table), ""]
    fig, axes = new_figure(6.75, 2.4, 3)
    for (run, g), color in zip(df.groupby("run"), ("#0072B2", "#D55E00", "#009E73", "#CC79A7")):
        for ax, col in zip(axes, ("accuracy", "freezing_cost", "cca_conv4")):
            err = g.get(f"{col}_ci95")
            ax.errorbar(g.iteration, g[col], yerr=err, marker="o", ms=3, lw=1.2, capsize=2, color=color,
                        label=g.convention_summary.iloc[0].replace(" conventions", ""))
    # full scales, so a few points of drift do not look like a trend; dotted: the reuse threshold
    for ax, label, top, reuse in zip(axes, ("test accuracy (%)", "freezing conv1-4 costs (points)", "conv4 CCA"),
                                     (100, 100, 1), (None, REUSE_COST, REUSE_SIMILARITY)):
        ax.set_ylim(min(0, ax.get_ylim()[0]), top)
        if reuse is not None:
            ax.axhline(reuse, color="#999", ls=":", lw=1)
        ax.set_xlabel("iteration", fontsize=8)
        ax.set_ylabel(label, fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7, frameon=False)
    save_figure(fig, out / "figures", "convention_trajectory", 0.02)
    lines += ["![through training](figures/convention_trajectory.png)", ""]
    return lines


def figure(summary: pd.DataFrame, folder: Path) -> None:
    settings = list(summary.setting.unique())
    panels = [("accuracy", "test accuracy\n(%)", None),
              ("freezing_cost", "cost of freezing\nconv1-4 (points)", REUSE_COST),
              ("cca_conv4", "conv4 CCA\nbefore vs after", REUSE_SIMILARITY),
              ("cka_conv4", "conv4 CKA\nbefore vs after", REUSE_SIMILARITY)]
    fig, axes = new_figure(6.75, 1.2 + 0.22 * summary.groupby("setting").size().max() * len(settings), len(panels))
    colors = {"pytorch": "#D55E00", "finn": "#0072B2"}
    for ax, (col, label, reuse) in zip(axes, panels):
        if reuse is not None:  # the feature-reuse side of the verdict's threshold
            ax.axvline(reuse, color="#999", ls=":", lw=1)
        y = 0
        ticks, names = [], []
        for setting in settings:
            g = summary[summary.setting == setting]
            for r in g.itertuples():
                base = "finn" if r.variant.startswith("finn") else "pytorch"
                value, spread = getattr(r, col, np.nan), getattr(r, f"{col}_spread", np.nan)
                ax.errorbar(value, y, xerr=spread, fmt="o", ms=3.5, color=colors[base], capsize=2, lw=1)
                ticks.append(y)
                names.append(f"{setting.split('_')[1]} {r.variant}")
                y -= 1
            y -= 0.8
        ax.set_xlabel(label, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_yticks(ticks)
        ax.set_yticklabels(names if ax is axes[0] else [], fontsize=6.5)
        ax.grid(axis="x", color="#ddd", lw=0.6)
    folder.mkdir(parents=True, exist_ok=True)
    save_figure(fig, folder, "convention_study", 0.02)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train and measure variants (resumable)")
    t.add_argument("--setting", choices=list(SETTINGS), required=True)
    t.add_argument("--runs", required=True, help="folder for the study's training runs")
    t.add_argument("--data-root")
    t.add_argument("--iterations", type=int, default=1500)
    t.add_argument("--seeds", type=int, nargs="+", default=[0])
    t.add_argument("--variants", nargs="+", help="default: every variant (see --list)")
    t.add_argument("--tasks", type=int, default=600)
    t.add_argument("--similarity-tasks", type=int, default=100)
    t.add_argument("--worker", default="0/1", help="K/N: take every N-th job, starting at K")
    t.add_argument("--quiet", action="store_true")
    r = sub.add_parser("report", help="tables and figure from the measured runs")
    r.add_argument("--runs", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--trajectory", help="also report the long runs measured by 'trajectory' in this folder")
    tr = sub.add_parser("trajectory", help="measure every intermediate checkpoint of long runs (resumable)")
    tr.add_argument("--runs", required=True, help="a folder of run folders written by 'repsim train'")
    tr.add_argument("--data-root")
    tr.add_argument("--tasks", type=int, default=600)
    tr.add_argument("--similarity-tasks", type=int, default=100)
    tr.add_argument("--every", type=_positive, default=2500,
                    help="measure the checkpoints at multiples of this iteration (runs may save more often)")
    ex = sub.add_parser("export", help="copy a variant's final models, weights only, for analysis")
    ex.add_argument("--setting", choices=list(SETTINGS), required=True)
    ex.add_argument("--runs", required=True, help="the folder given to 'train'")
    ex.add_argument("--variant", required=True)
    ex.add_argument("--seeds", type=int, nargs="+", default=[0])
    ex.add_argument("--iterations", type=int, default=1500)
    ex.add_argument("--out", required=True, help="writes OUT/maml-sSEED/model.safetensors")
    ls = sub.add_parser("list", help="the variants of a setting")
    ls.add_argument("--setting", choices=list(SETTINGS), required=True)
    args = p.parse_args(argv)
    try:
        if args.command == "train":
            train_and_measure(args)
        elif args.command == "report":
            report(args)
        elif args.command == "trajectory":
            trajectory(args)
        elif args.command == "export":
            export(args)
        else:
            for name, overrides in variants(args.setting).items():
                print(f"{name}: {overrides}")
    except RepsimError as e:
        print(f"convention_study: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
