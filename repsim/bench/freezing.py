"""``repsim bench freezing``: how long the freezing test and its decomposition take on one
checkpoint, side by side in one run.

Both run on the same fixed task list (task seed 0, 15 queries per class) with the analysis'
default frozen sets (none and every prefix of the body: five on conv4). ``freezing`` is the
paper's protocol alone; ``freezing-decomposed`` adds, per frozen set, a head fitted to
convergence, the prototype classifier and the curvature diagnostics. The protocol is also timed
as it ran before the frozen leading blocks were computed once per task and shared by the sets
(``Conv4.frozen_blocks`` patched to 0: every set runs the whole network, for the queries and at
every inner step) and before tasks ran on a thread each (``threads.task_threads`` patched to 1:
one task at a time with all of torch's threads), on the same tasks. Printed: seconds for each,
the speed-up over the old path (issue 33's target: 1.3x), the decomposition's ratio to the
protocol, and its time against issue 32's target (5 sets x 600 tasks on a 5-way 1-shot
checkpoint in under 2 minutes on a 2-core CPU).
"""

from __future__ import annotations

import time
from pathlib import Path
from unittest import mock

from repsim import threads

DEFAULT_CHECKPOINT = Path("checkpoints/omniglot_5w1s_reduced/maml-s0/model.safetensors")
TARGET_S = 120.0


def run(checkpoint=DEFAULT_CHECKPOINT, tasks: int = 600, data_root=None, device: str = "cpu") -> dict:
    """Seconds for ``measures.freezing`` and ``measures.freezing_decomposed`` on ``checkpoint``
    over ``tasks`` test tasks (task images loaded once, before either clock starts)."""
    from repsim import measures
    from repsim.checkpoint import load_checkpoint
    from repsim.model import Conv4
    from repsim.study import Study

    ckpt = load_checkpoint(checkpoint)
    study = Study.for_checkpoint(ckpt, num_tasks=tasks, data_root=data_root, device=device, progress=False)
    study.tasks  # the data set is read and the task list drawn outside the timings
    seconds = {}

    def timed(name, measure):
        tic = time.perf_counter()
        rows = measure(study, ckpt)
        seconds[name] = time.perf_counter() - tic
        return rows

    with (mock.patch.object(Conv4, "frozen_blocks", lambda self, adapted: 0),
          mock.patch.object(threads, "task_threads", lambda device: 1)):
        recomputed = timed("freezing, prefix recomputed", measures.freezing)
    protocol = timed("freezing", measures.freezing)
    rows = timed("freezing-decomposed", measures.freezing_decomposed)
    same = recomputed["accuracy"].round(6).tolist() == protocol["accuracy"].round(6).tolist()
    return {"seconds": seconds, "sets": rows["frozen"].nunique(), "tasks": tasks, "config": ckpt.config,
            "task threads": threads.task_threads(study.dev),
            "same accuracies": same}


def main(checkpoint=None, quick: bool = False, data_root=None, device: str = "cpu") -> None:
    checkpoint = Path(checkpoint or DEFAULT_CHECKPOINT)
    tasks = 60 if quick else 600
    r = run(checkpoint, tasks, data_root, device)
    c, s = r["config"], r["seconds"]
    task_threads = r["task threads"]
    print(f"freezing analyses on {checkpoint} ({c.algorithm}, {c.dataset} {c.ways}-way {c.shots}-shot), "
          f"{r['sets']} frozen sets x {tasks} tasks, {device} ({threads.describe()}):")
    print(f"  freezing, as before              {s['freezing, prefix recomputed']:7.1f} s   (the whole network for "
          f"every set and inner step, one task at a time)")
    print(f"  freezing (paper's protocol)      {s['freezing']:7.1f} s   (frozen blocks once per task, shared; "
          f"{task_threads} task(s) at a time, a thread each: "
          f"{s['freezing, prefix recomputed'] / s['freezing']:.2f}x; target 1.3x; accuracies "
          f"{'identical' if r['same accuracies'] else 'DIFFER'})")
    print(f"  freezing-decomposed              {s['freezing-decomposed']:7.1f} s   "
          f"({s['freezing-decomposed'] / s['freezing']:.2f}x the protocol alone)")
    if tasks == 600:
        print(f"  target: decomposition under {TARGET_S:.0f} s: "
              f"{'met' if s['freezing-decomposed'] < TARGET_S else 'not met'} "
              f"(allowed / taken = {TARGET_S / s['freezing-decomposed']:.2f})")
