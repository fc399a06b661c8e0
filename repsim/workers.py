"""Worker processes that share a CPU's cores out: ``repsim analyze --jobs`` (one checkpoint's part
each) and ``repsim reproduce --jobs`` (one training run each).

On a 2-core CPU they gain little over one process (1.03-1.24x for an analysis, 1.08x for the
quick profile's whole job; docs/BENCHMARKS.md), which already keeps both cores busy: test tasks
run on a thread each, and a training step uses two threads well. They are for more cores than
one process can use.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
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
    with _environment(PYTHONWARNINGS="ignore::UserWarning:multiprocessing.resource_tracker"):
        from multiprocessing import resource_tracker
        resource_tracker.ensure_running()
    spawn = multiprocessing.get_context("spawn")
    stopping = spawn.Event()
    pool = ProcessPoolExecutor(jobs, mp_context=spawn, initializer=_start_worker, initargs=(threads, stopping))
    try:
        with _sigterm_as_interrupt():
            futures = {pool.submit(_call, function, args): i for i, args in enumerate(calls)}
            results = [None] * len(calls)
            for future in tqdm(as_completed(futures), total=len(futures), disable=not progress,
                               desc=f"{desc} in {jobs} processes of {threads} thread{'s' * (threads > 1)}"):
                results[futures[future]] = future.result()
            return results
    except BaseException:
        _stop(pool, stopping)
        raise
    finally:
        pool.shutdown(cancel_futures=True)


_stopping = None  # in a worker: set by the parent when the command stops


def _start_worker(threads: int, stopping) -> None:
    global _stopping
    torch.set_num_threads(threads)
    _stopping = stopping


def _call(function: Callable, args: tuple):
    # the pool hands a worker one more call than it runs, which shutdown cannot take back
    if _stopping.is_set():
        raise KeyboardInterrupt("the command is stopping: this call was not started")
    return function(*args)


def _stop(pool: ProcessPoolExecutor, stopping, grace: float = 60.0) -> None:
    """Stop the workers now rather than after their calls. No further call starts; each worker is
    sent SIGTERM, on which an analysis's part stops at once (unsealed, so not kept) and a training
    run at the end of its iteration, with a checkpoint (at once if it was interrupted already, as
    Ctrl-C interrupts every process of the terminal); one still running after ``grace`` seconds is
    killed. A worker must not outlive the command: it would go on writing into its folder."""
    stopping.set()  # the call a worker already holds is turned away (_call)
    workers = list(pool._processes.values())  # Python 3.14: pool.terminate_workers()
    pool.shutdown(wait=False, cancel_futures=True)
    for worker in workers:
        worker.terminate()
    deadline = time.monotonic() + grace
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            worker.kill()
            worker.join()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (``kill``, a job scheduler) stops the command as Ctrl-C does, so that the workers are
    stopped too rather than left running without it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    def interrupt(_signum, _frame):
        raise KeyboardInterrupt
    before = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


@contextlib.contextmanager
def _environment(**variables):
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
