"""How many CPU threads torch uses, and how they wait: chosen once per command, before torch
starts its OpenMP runtime (which reads these settings only then).

Measured on a 2-core machine (``repsim bench threads``, docs/BENCHMARKS.md): alone on the
machine, two threads whose waits spin for a bounded time (libgomp's ``GOMP_SPINCOUNT``) run a
meta-training step 1.4-1.8x faster than one thread, while two threads that sleep between
kernels gain 1.4x on 5-way tasks and *lose* (0.6x) on 20-way ones; beside another busy process,
spinning threads run 2-5x slower than one thread, which is then the fastest. So: every core
that is free when the command starts, spinning briefly; one sleeping thread on a busy machine.
A setting the user made (OMP_NUM_THREADS, OMP_WAIT_POLICY, GOMP_SPINCOUNT) always stands.
"""

from __future__ import annotations

import os

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
