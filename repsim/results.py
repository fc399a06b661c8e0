"""A results folder: one CSV per analysis, with a JSON of its provenance beside it.

    RESULTS/similarity.csv        summary: mean and 95% CI per (algorithm, layer, measure)
    RESULTS/similarity_tasks.csv  the per-task numbers behind it
    RESULTS/similarity.json       provenance: checkpoints, tasks, seeds, conventions, command

`repsim report RESULTS` turns a folder of these into tables and figures.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

import repsim
from repsim.errors import RepsimError
from repsim.io import atomic_write_json, atomic_write_text

# The analyses, as the command line spells them; their result files use ``_`` (result_stem).
# runner.REGISTRY holds how each is computed; this list is here so the report reads it without torch.
ANALYSES = ("similarity", "freezing", "accuracy", "cross", "heads", "regimes", "through-training",
            "weight-change")


def analysis_name(name: str) -> str:
    """The one spelling of an analysis (``through-training``); ``through_training``, the name
    of its result files, is accepted too."""
    spelled = name.replace("_", "-")
    if spelled not in ANALYSES:
        raise RepsimError(f"unknown analysis {name!r}: choose one of {', '.join(ANALYSES)}")
    return spelled


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
        probe = folder / ".repsim-write-test"
        probe.write_text("")
        probe.unlink()
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
    with open(path, "a+") as handle:
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
                 per_task: pd.DataFrame | None = None) -> Path:
    """Write NAME.csv (+ NAME_tasks.csv) and NAME.json; the JSON last, so its presence means
    the analysis finished."""
    folder = check_writable(folder)
    (folder / f"{name}.json").unlink(missing_ok=True)  # stale provenance must not outlive its CSVs
    if per_task is not None:
        atomic_write_text(folder / f"{name}_tasks.csv", per_task.to_csv(index=False))
    atomic_write_text(folder / f"{name}.csv", table.to_csv(index=False))
    atomic_write_json(folder / f"{name}.json", {
        "analysis": name, **provenance, "repsim_version": repsim.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["repsim"] + sys.argv[1:]) if Path(sys.argv[0]).name == "repsim" else None,
    })
    return folder / f"{name}.csv"


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
    return float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n))


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
        per_seed = per_task.groupby(by + ["seed"], sort=False)["value"].mean().reset_index()
        spread = per_seed.groupby(by, sort=False)["value"].std(ddof=1)  # NaN for one seed
        out["seed_std"] = spread.reindex(pd.MultiIndex.from_frame(out[by]) if len(by) > 1
                                         else out[by[0]]).to_numpy()
    return out
