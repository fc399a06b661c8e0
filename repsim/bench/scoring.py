"""``repsim bench scoring``: test tasks scored one at a time with all of torch's threads, as
before, against several at a time on one thread each (:func:`repsim.threads.map_tasks`), side
by side in one run.

Both score the same fixed task list (task seed 0, 15 queries per class) with the checkpoint's
own inner loop (``repsim evaluate``'s work); "as before" is ``threads.task_threads`` patched to
1. Printed: seconds for each, the ratio (issue 33's target for 5-way 1-shot: 1.5x), and whether
the per-task accuracies are identical.
"""

from __future__ import annotations

import time
from pathlib import Path
from unittest import mock

from repsim import threads

DEFAULT_CHECKPOINTS = [Path(f"checkpoints/omniglot_{s}/maml-s0/model.safetensors") for s in ("5w1s_reduced", "20w1s")]


def run(checkpoint, tasks: int, data_root=None, device: str = "cpu") -> dict:
    """Seconds to score ``tasks`` test tasks of ``checkpoint``, a task at a time and in threads."""
    from repsim import threads
    from repsim.checkpoint import load_checkpoint
    from repsim.study import Study

    ckpt = load_checkpoint(checkpoint)
    study = Study.for_checkpoint(ckpt, num_tasks=tasks, data_root=data_root, device=device, progress=False)
    m = study.load(ckpt)
    study.tasks  # the data set is read and the task list drawn outside the timings
    seconds, scores = {}, {}
    for name, how_many in (("one task at a time", lambda device: 1), ("tasks in threads", threads.task_threads)):
        with mock.patch.object(threads, "task_threads", how_many):
            tic = time.perf_counter()
            scores[name] = study.score(m)
            seconds[name] = time.perf_counter() - tic
    return {"seconds": seconds, "config": ckpt.config, "tasks": tasks,
            "task threads": threads.task_threads(study.dev),
            "same accuracies": list(scores["one task at a time"].per_task) == list(scores["tasks in threads"].per_task)}


def main(checkpoints=None, quick: bool = False, data_root=None, device: str = "cpu") -> None:
    from repsim.checkpoint import load_checkpoint

    checkpoints = [Path(c) for c in checkpoints] if checkpoints else DEFAULT_CHECKPOINTS
    print(f"scoring test tasks with each checkpoint's inner loop, {device} ({threads.describe()}):")
    for checkpoint in checkpoints:
        c = load_checkpoint(checkpoint).config
        tasks = (100 if quick else 600) if c.ways <= 5 else (20 if quick else 100)
        r = run(checkpoint, tasks, data_root, device)
        s, n = r["seconds"], r["task threads"]
        print(f"  {checkpoint} ({c.algorithm}, {c.ways}-way {c.shots}-shot), {tasks} tasks:")
        print(f"    {'one task at a time, ' + str(n) + ' torch thread' + 's' * (n > 1):<36s}"
              f"{s['one task at a time']:7.1f} s")
        print(f"    {str(n) + ' task' + 's' * (n > 1) + ' at a time, 1 thread each':<36s}{s['tasks in threads']:7.1f} s"
              f"   ({s['one task at a time'] / s['tasks in threads']:.2f}x; accuracies "
              f"{'identical' if r['same accuracies'] else 'DIFFER'})")
    if n == 1:
        print("  (one torch thread: both ways are the same; the comparison needs 2 or more, e.g. OMP_NUM_THREADS=2)")
