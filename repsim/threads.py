"""How many CPU threads torch uses, and how they wait: chosen once per command, before torch
starts its OpenMP runtime (which reads these settings only then).

Measured on a 2-core machine (``repsim bench threads``, docs/BENCHMARKS.md): alone on the
machine, two threads whose waits spin for a bounded time (libgomp's ``GOMP_SPINCOUNT``) run a
meta-training step 1.4-1.8x faster than one thread, while two threads that sleep between
kernels gain 1.4x on 5-way tasks and *lose* (0.6x) on 20-way ones; beside another busy process,
spinning threads run 2-5x slower than one thread, which is then the fastest. So: every core
that is free when the command starts, spinning briefly; one sleeping thread on a busy machine.
A setting the user made (OMP_NUM_THREADS, OMP_WAIT_POLICY, GOMP_SPINCOUNT) always stands.

Test tasks share the threads by running side by side (:func:`map_tasks`), each on one torch
thread: scoring, the freezing sets and their decomposition go through it. (Not training: a
meta-batch of small tasks runs fastest as one vmapped batch, and large tasks' second-order
graphs run slower two at a time than one at a time on both threads: 20-way 5-shot MAML, 7.96
against 6.71 s per iteration.) torch is imported inside the functions, since :func:`apply`
must run before torch starts.
"""

from __future__ import annotations

import copy
import os
import threading
from concurrent.futures import ThreadPoolExecutor

SPIN = "20000"  # libgomp spins this many times before a waiting thread sleeps (microseconds)
USER_KEYS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def policy(cores: int | None = None, load: float | None = None) -> dict[str, str]:
    """The settings for a machine of ``cores`` cores whose 1-minute load average is ``load``
    (both read from the machine by default): the free cores, spinning briefly; one sleeping
    thread when no more than one core is free."""
    cores = cores or os.cpu_count() or 1
    load = os.getloadavg()[0] if load is None else load
    free = max(1, min(cores, round(cores - load)))
    if free == 1:
        return {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    return {"OMP_NUM_THREADS": str(free), "GOMP_SPINCOUNT": SPIN}


def apply() -> dict[str, str]:
    """Set :func:`policy`'s variables for this process, unless the user set any of them;
    returns what was set. Call it before torch is imported."""
    if any(key in os.environ for key in USER_KEYS):
        return {}
    chosen = policy()
    os.environ.update(chosen)
    return chosen


def describe() -> str:
    """How torch's CPU threads are set, as a benchmark prints it beside every timing."""
    import torch

    threads = torch.get_num_threads()
    return (f"{threads} thread{'s' if threads != 1 else ''}, OMP_WAIT_POLICY="
            f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}, GOMP_SPINCOUNT="
            f"{os.environ.get('GOMP_SPINCOUNT', 'unset')}")


def task_threads(device) -> int:
    """How many tasks :func:`map_tasks` runs at a time: torch's CPU threads on a CPU, else 1."""
    import torch

    return torch.get_num_threads() if device.type == "cpu" else 1


def map_tasks(measure, model, tasks, *, device, progress: bool = True, desc: str = "evaluating") -> list:
    """``measure(model, task, index)`` for every task, in task order, ``task`` on ``device``.

    On a CPU the tasks run on as many Python threads as torch has CPU threads, one task per
    thread at a time and each task on one torch thread, so a task's numbers are those of a
    one-thread process however many cores there are. Why: a 5-way task's convolutions are too
    small for torch's threads to share (two threads score 5-way 1-shot tasks about 1.2x faster
    than one), while two tasks at a time are 1.8x (docs/BENCHMARKS.md). Each thread has its
    own copy of ``model``, because functional_call puts the parameters into the module it is
    given; ``measure`` must use the model it is handed, and hooks on it run on several threads.
    On a GPU the tasks run one after another.
    """
    import torch
    from tqdm import tqdm

    threads = task_threads(device)
    with tqdm(total=len(tasks), desc=desc, disable=not progress, leave=False) as bar:
        if threads == 1:
            results = []
            for index in range(len(tasks)):
                results.append(measure(model, tasks[index].to(device), index))
                bar.update()
            return results
        own = threading.local()

        def run(index: int):
            if not hasattr(own, "model"):
                own.model = copy.deepcopy(model)
            return measure(own.model, tasks[index].to(device), index)

        torch.set_num_threads(1)  # for the threads the pool starts: torch's setting is per process
        pool = ThreadPoolExecutor(threads, thread_name_prefix="repsim-task")
        try:
            results = []
            for future in [pool.submit(run, index) for index in range(len(tasks))]:
                results.append(future.result())
                bar.update()
            return results
        finally:
            # an error or Ctrl-C: drop the tasks not started, let the running ones end
            pool.shutdown(wait=True, cancel_futures=True)
            torch.set_num_threads(threads)
