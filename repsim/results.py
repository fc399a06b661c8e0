"""A results folder: one CSV per analysis, with a JSON of its provenance beside it.

    RESULTS/similarity.csv        summary: mean and 95% CI per (algorithm, layer, measure)
    RESULTS/similarity_tasks.csv  the per-task numbers behind it
    RESULTS/similarity_seeds.csv  each seed's mean over tasks (the spread the CI does not show)
    RESULTS/similarity.json       provenance: checkpoints, tasks, seeds, conventions, command

Every summary is made here, where the rows are made (:mod:`repsim.runner`); the report
only reads them.

`repsim report RESULTS` turns a folder of these into tables and figures.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import stdtrit  # Student t quantile: scipy.stats.t.ppf, without scipy.stats' 1 s import

import repsim
from repsim.errors import RepsimError
from repsim.io import atomic_write_bytes, atomic_write_json
from repsim.names import ANALYSES, analysis_name  # noqa: F401  (the report reads them here)

# The layer name of the head in every result table; the other layers are the body.
HEAD = "head"

# Extra summaries an analysis may write beside its table, as NAME_SUFFIX.csv (read by the report).
EXTRA_TABLES = ("seeds", "model_pairs", "pairs")


def result_stem(name: str) -> str:
    """The file name of an analysis' results: ``through-training`` -> ``through_training``."""
    return analysis_name(name).replace("-", "_")


def check_writable(folder: str | Path) -> Path:
    """Fail before any work is done if results cannot be written there."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RepsimError(f"{folder} is a file, not a folder: choose a folder for --out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # a name of its own: processes checking one folder at once must not delete each other's
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".repsim-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise RepsimError(f"cannot write results to {folder} ({e.strerror}): choose a writable --out folder") from None
    return folder


@contextlib.contextmanager
def exclusive(folder: Path, name: str):
    """Hold ``folder``'s lock for analysis ``name`` (a lock file beside its results), so that
    two processes running the same analysis into one folder cannot silently overwrite each
    other's tables. Different analyses may run into one folder side by side. The lock is
    the operating system's (flock): it is released when the process ends, however it ends."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as before
        yield
        return
    path = folder / f".{name}.lock"
    try:  # never through a link: the lock must not write into a file elsewhere
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as e:
        link = ": it is a link" if path.is_symlink() else ""
        raise RepsimError(f"cannot use the lock file {path} ({e.strerror}{link}): remove it, "
                          f"or use another --out") from None
    with os.fdopen(fd, "r+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RepsimError(f"{holder} is running the {name} analysis into {folder}: wait for it "
                              f"to finish, or use another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_result(folder: str | Path, name: str, table: pd.DataFrame, provenance: dict,
                 per_task: pd.DataFrame | None = None, extras: dict[str, pd.DataFrame] | None = None) -> Path:
    """Write NAME.csv (+ NAME_tasks.csv and NAME_SUFFIX.csv for each of ``extras``, suffixes
    from :data:`EXTRA_TABLES`) and NAME.json; the JSON last, so its presence means the
    analysis finished."""
    folder = check_writable(folder)
    (folder / f"{name}.json").unlink(missing_ok=True)  # stale provenance must not outlive its CSVs
    written = {}

    def write(file: str, df: pd.DataFrame) -> None:
        data = df.to_csv(index=False).encode("utf-8", errors="backslashreplace")  # as atomic_write_text
        atomic_write_bytes(folder / file, data)
        written[file] = table_digest(data)

    if per_task is not None:
        write(f"{name}_tasks.csv", per_task)
    for suffix in EXTRA_TABLES:  # an extra this run does not write must not survive from an earlier one
        if suffix in (extras or {}):
            write(f"{name}_{suffix}.csv", extras[suffix])
        else:
            (folder / f"{name}_{suffix}.csv").unlink(missing_ok=True)
    write(f"{name}.csv", table)
    atomic_write_json(folder / f"{name}.json", {
        "analysis": name, **provenance, "tables": written, "repsim_version": repsim.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["repsim"] + sys.argv[1:]) if Path(sys.argv[0]).name == "repsim" else None,
    })
    return folder / f"{name}.csv"


def table_digest(data: bytes) -> str:
    """The SHA-256 of a table file's bytes, which its NAME.json records, so that a table cut
    short or edited after the analysis wrote it is not read as its result."""
    return hashlib.sha256(data).hexdigest()


def ci95(values) -> float:
    """Half-width of the 95% Student-t interval of the mean over tasks:

        t_{0.975, n-1} * s / sqrt(n),    s the sample std (ddof=1).

    At n = 600 this is 1.0033 x the paper code's 1.96 * std / sqrt(n) (population std); at
    n = 5 it is 1.67 x, where the normal interval is too narrow. NaN for fewer than 2 values.
    """
    values = np.asarray(values, dtype=np.float64)
    n = values.size
    if n < 2:
        return float("nan")
    return float(stdtrit(n - 1, 0.975) * values.std(ddof=1) / math.sqrt(n))


def paired_change(values, reference) -> tuple[float, float]:
    """Mean per-task change ``values - reference`` and its 95% t-interval.

    Every condition of an ablation (frozen vs unfrozen, NIL vs inner loop, a head variant
    vs the trained head) is scored on the same tasks, so the change is judged against the
    spread of its per-task differences, which is far narrower than the two marginal CIs
    when tasks vary in difficulty.
    """
    values, reference = np.asarray(values, np.float64), np.asarray(reference, np.float64)
    if values.shape != reference.shape:
        raise ValueError(f"paired values need the same tasks: {values.shape} vs {reference.shape}")
    diff = values - reference
    return float(diff.mean()), ci95(diff)


def summarise(per_task: pd.DataFrame, by=("model", "algorithm", "iteration", "layer", "measure")) -> pd.DataFrame:
    """Mean and 95% CI over tasks, how many tasks (n) and seeds, and the spread over seeds.

    ``model`` is an algorithm (its seeds pooled) or a model with a name of its own
    (repsim.study.Model.unit), so two differently named models are never pooled.

    Every checkpoint is scored on the same tasks, so seeds are averaged per task first: the
    CI is over the n distinct tasks, not over tasks x seeds (which are not independent).
    ``seed_std`` is the sample std of the per-seed means (NaN for one seed): the run-to-run
    variation that the CI over tasks does not show.
    """
    by = [b for b in by if b in per_task.columns]
    per = per_task.groupby(by + ["task"], sort=False)["value"].mean().reset_index()
    out = per.groupby(by, sort=False)["value"].agg(mean="mean", ci95=ci95, n="size").reset_index()
    if "seed" in per_task.columns:
        out["seeds"] = per_task.groupby(by, sort=False)["seed"].nunique().values
        spread = seed_means(per_task, by).groupby(by, sort=False)["mean"].std(ddof=1)  # NaN for one seed
        out["seed_std"] = spread.reindex(pd.MultiIndex.from_frame(out[by]) if len(by) > 1
                                         else out[by[0]]).to_numpy()
    return out


def seed_means(per_task: pd.DataFrame, by=("model", "algorithm", "iteration", "layer", "measure")) -> pd.DataFrame:
    """Each seed's mean over tasks, per :func:`summarise` group: the spread between training
    runs that the CI over tasks hides (the similarity figure draws it as dots). Written as
    NAME_seeds.csv; ``n`` is the number of tasks behind each mean."""
    by = [b for b in by if b in per_task.columns]
    return per_task.groupby(by + ["seed"], sort=False)["value"].agg(mean="mean", n="size").reset_index()


# Cross-model similarity (paper table 3) ------------------------------------------------------
CROSS_PAIRS = ("MAML-MAML", "ANIL-ANIL", "ANIL-MAML")  # table 3's order


def same_seed(seed_a, seed_b) -> bool:
    """Whether two models were trained from one seed. Training seeds the initialisation, so
    ANIL and MAML of one seed start from the same weights (and one algorithm twice is one
    run); the paper's table 3 compares models of different seeds."""
    return float(seed_a) == float(seed_b)


def _in_pair_order(table: pd.DataFrame) -> pd.DataFrame:
    """Models of different seeds first, each in table 3's order; rows of one pair keep their order."""
    def rank(pair, same):
        return bool(same), CROSS_PAIRS.index(pair) if pair in CROSS_PAIRS else len(CROSS_PAIRS), pair
    ranks = [rank(pair, same) for pair, same in zip(table["pair"], table["same_seed"])]
    return table.iloc[sorted(range(len(table)), key=ranks.__getitem__)].reset_index(drop=True)


def cross_layers(per_task: pd.DataFrame) -> pd.DataFrame:
    """cross.csv: mean and 95% CI over tasks per pair of algorithms, ``same_seed``, layer and
    measure; models of different seeds first, in table 3's order."""
    return _in_pair_order(summarise(per_task, by=("pair", "same_seed", "layer", "measure")))


def model_pairs(per_task: pd.DataFrame) -> pd.DataFrame:
    """cross_model_pairs.csv, table 3's unit: one row per pair of models and measure, the
    similarity averaged over tasks t and body layers l (NaN values, from degenerate
    activations, are skipped),

        s(a, b) = mean_{t, l} sim(h_l^a(x_t), h_l^b(x_t)).
    """
    body = per_task[per_task["layer"] != HEAD]
    keys = ["pair", "same_seed", "model_a", "model_b", "seed_a", "seed_b", "measure"]
    return _in_pair_order(body.groupby(keys, sort=False)["value"].mean().reset_index())


def pair_summary(pairs: pd.DataFrame) -> pd.DataFrame:
    """cross_pairs.csv, paper table 3: per pair of algorithms, ``same_seed`` and measure, the
    mean and sample std over model pairs of s(a, b), and how many model pairs. ``pairs`` is
    :func:`model_pairs`' table. Pairs share models, so the std is a spread over pairs, not a
    standard error."""
    return (pairs.groupby(["pair", "same_seed", "measure"], sort=False)["value"]
            .agg(mean="mean", std=lambda v: v.std(ddof=1), model_pairs="size").reset_index())


def cross_extras(per_task: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The cross analysis' summaries beside cross.csv: each pair of models and table 3."""
    pairs = model_pairs(per_task)
    return {"model_pairs": pairs, "pairs": pair_summary(pairs)}


# The freezing test taken apart (measures.freezing_decomposed) ---------------------------------
# What a frozen set's cost is made of: "features" (the full inner loop against a head fitted to
# convergence on the features the frozen inner loop leaves) and "head optimisation" (that fitted
# head against the paper's protocol, the inner loop's own steps); their sum is the paper's cost.
DECOMPOSITION = {  # quantity: (per-task column or difference, scale)
    "paper protocol": ("paper", 100),
    "fitted head": ("fitted", 100),
    "fitted head about the meta-learned head": ("fitted_meta", 100),
    "prototypes": ("prototypes", 100),
    "support accuracy": ("support_accuracy", 100),
    "cost: total": (("full", "paper"), 100),
    "cost: features": (("full", "fitted"), 100),
    "cost: head optimisation": (("fitted", "paper"), 100),
    "lr x curvature": ("lr_curvature", 1),
    "tasks with lr x curvature > 2": ("unstable", 100),
    "support cosine": ("support_cosine", 1),
}
FEATURE_REUSE_POINTS = 2.0  # a frozen body whose features cost at most this many points is reused


def decompose_freezing(per_task: pd.DataFrame) -> pd.DataFrame:
    """Per checkpoint and frozen set, each :data:`DECOMPOSITION` quantity's mean over tasks
    with its 95% CI; the costs are per-task differences against the same tasks' full inner
    loop (frozen none), so their CIs are paired."""
    keys = [k for k in ("model", "algorithm", "seed", "iteration", "checkpoint") if k in per_task]
    rows = []
    for key, g in per_task.groupby(keys, sort=False):
        full = g[g["frozen"] == "none"].set_index("task")["paper"]
        for frozen, f in g.groupby("frozen", sort=False):
            f = f.set_index("task").assign(full=full, unstable=lambda d: d["lr_curvature"] > 2)
            for quantity, (column, scale) in DECOMPOSITION.items():
                v = (f[column[0]] - f[column[1]] if isinstance(column, tuple) else f[column]).astype(float)
                rows.append({**dict(zip(keys, key)), "frozen": frozen, "quantity": quantity,
                             "mean": scale * v.mean(), "ci95": scale * ci95(v), "tasks": len(v)})
    return pd.DataFrame(rows)
