"""Worker processes that share a CPU's cores out: ``repsim analyze --jobs`` (one checkpoint's part
each) and ``repsim reproduce --jobs`` (one training run each).

Two one-thread processes beat one process with two threads on a 2-core CPU (docs/BENCHMARKS.md):
torch's intra-op parallelism on these small convolutions is poor, and a process waits on no other.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable

import torch
from tqdm import tqdm


def run_in_workers(function: Callable, calls: list[tuple], jobs: int, *, desc: str, progress: bool) -> list[Any]:
    """``[function(*args) for args in calls]``, computed in ``jobs`` worker processes, each with
    its share of torch's threads (so the numbers are those of one process with a worker's thread
    count). ``function`` must be importable by name. The first error (a RepsimError: one line) is
    raised here and stops the other workers at once, as does Ctrl-C. Spawned, not forked: a fork
    would copy torch's OpenMP runtime in whatever state it is in."""
    jobs = max(1, min(jobs, len(calls)))
    threads = max(1, torch.get_num_threads() // jobs)
    # the workers stopped on Ctrl-C hold the pool's semaphores, and multiprocessing's resource
    # tracker (started here, with this environment) would warn about them as "leaked" at exit
    with environment(PYTHONWARNINGS="ignore::UserWarning:multiprocessing.resource_tracker"):
        from multiprocessing import resource_tracker
        resource_tracker.ensure_running()
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=torch.set_num_threads, initargs=(threads,))
    try:
        futures = {pool.submit(function, *args): i for i, args in enumerate(calls)}
        results = [None] * len(calls)
        for future in tqdm(as_completed(futures), total=len(futures), disable=not progress,
                           desc=f"{desc} in {jobs} processes of {threads} thread{'s' * (threads > 1)}"):
            results[futures[future]] = future.result()
        return results
    except BaseException:
        # stop the other workers now rather than after their calls: work cut short is written
        # so that it is not kept (a part's seal, a run's checkpoint, is written last)
        for process in list(pool._processes.values()):  # Python 3.14: pool.terminate_workers()
            process.terminate()
        raise
    finally:
        pool.shutdown(cancel_futures=True)


@contextlib.contextmanager
def environment(**variables):
    """Environment variables set for the processes started inside, and restored after."""
    before = {k: os.environ.get(k) for k in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                del os.environ[k]
            else:
                os.environ[k] = v
