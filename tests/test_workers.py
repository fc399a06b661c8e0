"""repsim.workers.run_in_workers: results in call order, and a command that stops (an error, Ctrl-C,
SIGTERM) leaves no worker running and starts no further call."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from repsim.errors import RepsimError
from repsim.workers import run_in_workers


def _call(folder: str, i: int, seconds: float, fail: bool) -> int:
    """Record that call ``i`` started (with the worker's pid), wait, then fail or record that it
    finished. On SIGTERM it stops early, as a training run does (at the end of its iteration), and
    its worker lives on, free to take another call."""
    (Path(folder) / f".started-{i}").write_text(str(os.getpid()))  # whole, or not there at all:
    os.replace(Path(folder) / f".started-{i}", Path(folder) / f"started-{i}")  # a worker may be killed
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    end = time.monotonic() + seconds
    while time.monotonic() < end and not stop:
        time.sleep(0.05)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if stop:
        raise KeyboardInterrupt
    if fail:
        raise RepsimError(f"call {i} failed")
    (Path(folder) / f"finished-{i}").touch()
    return i * i


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _started(folder: Path) -> dict[int, int]:
    return {int(f.name.split("-")[1]): int(f.read_text()) for f in folder.glob("started-*")}


def test_results_come_back_in_call_order(tmp_path):
    # the later calls finish first
    calls = [(str(tmp_path), i, 0.5 * (3 - i), False) for i in range(4)]
    assert run_in_workers(_call, calls, 2, desc="test", progress=False) == [0, 1, 4, 9]
    assert len(set(_started(tmp_path).values())) == 2  # two worker processes shared them


def test_an_error_stops_every_worker_and_starts_no_further_call(tmp_path):
    calls = [(str(tmp_path), 0, 1.0, True)] + [(str(tmp_path), i, 60.0, False) for i in range(1, 8)]
    with pytest.raises(RepsimError, match="call 0 failed"):
        run_in_workers(_call, calls, 2, desc="test", progress=False)
    started = _started(tmp_path)
    assert 1 in started and all(not _alive(pid) for pid in started.values()), started
    assert not list(tmp_path.glob("finished-*"))
    # two workers, one call each, and at most the one the pool had handed on before the error
    assert len(started) <= 3, started


def test_sigterm_stops_the_command_and_its_workers(tmp_path):
    """``kill PID`` on the command: it stops as on Ctrl-C, and its workers with it."""
    def kill_once_a_call_runs():
        while not list(tmp_path.glob("started-*")):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    threading.Thread(target=kill_once_a_call_runs, daemon=True).start()
    calls = [(str(tmp_path), i, 60.0, False) for i in range(4)]
    with pytest.raises(KeyboardInterrupt):
        run_in_workers(_call, calls, 2, desc="test", progress=False)
    assert all(not _alive(pid) for pid in _started(tmp_path).values())
    assert signal.getsignal(signal.SIGTERM) is before  # restored
