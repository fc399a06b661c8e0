"""``repsim bench jobs``: an analysis of several checkpoints in one process against ``--jobs``
worker processes, side by side in one run.

The freezing decomposition (``repsim analyze freezing-decomposed``) of the published 5-way
1-shot MAML and ANIL references (six checkpoints, seeds 0-2), each way into its own fresh
results folder: one process with every thread torch was given, then ``jobs`` processes (default:
one per core) sharing those threads. Printed: seconds for each, their ratio, whether the per-task
accuracies are identical, and the largest difference of the other numbers. The parent reads the
workers' parts back in its own order, so its tables are those of one process with a worker's
thread count, byte for byte; and since each task is scored on one torch thread however many
the process has (repsim.threads.map_tasks), the one process's tables are the same too.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pandas as pd

from repsim import threads

DEFAULT_CHECKPOINTS = [Path(f"checkpoints/omniglot_5w1s_reduced/{a}-s{s}/model.safetensors")
                       for a in ("maml", "anil") for s in range(3)]
ACCURACIES = ("paper", "support_accuracy", "fitted", "fitted_meta", "prototypes")


def run(checkpoints, tasks: int, jobs: int, data_root=None, device: str = "cpu") -> dict:
    """Seconds of ``freezing-decomposed`` on ``checkpoints`` with one process and with ``jobs``."""
    from repsim.runner import run_analysis
    from repsim.study import TestProtocol

    protocol = TestProtocol(tasks=tasks, data_root=data_root, device=device)
    seconds, rows = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, jobs):
            tic = time.perf_counter()
            path = run_analysis("freezing-decomposed", checkpoints, Path(tmp) / f"jobs{n}", protocol,
                                progress=False, jobs=n)
            seconds[n] = time.perf_counter() - tic
            rows[n] = pd.read_csv(path.parent / "freezing_decomposed_tasks.csv")
    one, workers = rows[1], rows[jobs]
    floats = [c for c in one.select_dtypes("number").columns if c not in ACCURACIES]
    return {"seconds": seconds, "same accuracies": one[list(ACCURACIES)].equals(workers[list(ACCURACIES)]),
            "largest float difference": float((one[floats] - workers[floats]).abs().max().max())}


def main(checkpoints=None, quick: bool = False, data_root=None, device: str = "cpu", jobs: int | None = None) -> None:
    checkpoints = [Path(c) for c in checkpoints or DEFAULT_CHECKPOINTS]
    jobs = jobs or os.cpu_count() or 2
    tasks = 60 if quick else 200
    r = run(checkpoints, tasks, jobs, data_root, device)
    s = r["seconds"]
    print(f"freezing-decomposed on {len(checkpoints)} checkpoints x {tasks} tasks, {device} "
          f"({threads.describe()}):")
    print(f"  one process                      {s[1]:7.1f} s")
    print(f"  --jobs {jobs:<2d}                        {s[jobs]:7.1f} s   ({s[1] / s[jobs]:.2f}x, each worker's "
          f"start, data and task list included)")
    print(f"  per-task accuracies {'identical' if r['same accuracies'] else 'DIFFER'}; largest difference "
          f"elsewhere {r['largest float difference']:.1g} (0: each task on one torch thread either way)")
