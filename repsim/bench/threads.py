"""``repsim bench threads``: how torch's CPU threads should wait, measured side by side.

torch's CPU kernels run on OpenMP threads (GNU libgomp in the pip wheels). Between two kernels a
waiting thread spins (OMP_WAIT_POLICY=ACTIVE, libgomp's default for a while) or sleeps
(PASSIVE). Spinning makes one process on an otherwise idle machine fast, and every process
beside another busy one slow (they burn the cores the other needs); sleeping costs a wake-up
per kernel, and a meta-learning step is thousands of small kernels. libgomp's GOMP_SPINCOUNT
bounds the spin: a thread spins that many times, then sleeps.

Each policy is timed in a fresh process (the variables are read when the OpenMP runtime
starts), on one meta-training step of real-shaped tasks, alone and beside a busy process
(a second Python process doing dense matrix products on one thread), and printed as seconds
per iteration with the speed-up over one thread.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

POLICIES = {  # name: (threads, environment)
    "1 thread": (1, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "2 threads, passive": (2, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "2 threads, spin 20k": (2, {"GOMP_SPINCOUNT": "20000"}),
    "2 threads, spinning": (2, {"OMP_WAIT_POLICY": "ACTIVE"}),
}

_STEP = """
import json, statistics, sys, time, torch
from repsim.bench.train import _repsim_step, _setting, _tasks
ways, shots, algorithm, batched, repeats = json.loads(sys.argv[1])
torch.set_num_threads(int(sys.argv[2]))
setting = _setting(ways, shots, algorithm)
step = _repsim_step(algorithm, batched, torch.device("cpu"), _tasks(setting, torch.device("cpu")), setting)
step()
times = []
for _ in range(repeats):
    t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
print(json.dumps(statistics.median(times)))
"""

_BUSY = "import numpy as np, os\nos.environ['OMP_NUM_THREADS'] = '1'\na = np.random.rand(600, 600)\nwhile True: a @ a\n"


def time_policy(name: str, setting: tuple, repeats: int, busy: bool) -> float:
    threads, env = POLICIES[name]
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    other = (subprocess.Popen([sys.executable, "-c", _BUSY], env={**clean, "OMP_NUM_THREADS": "1"})
             if busy else None)
    try:
        if other:
            time.sleep(0.5)
        out = subprocess.run([sys.executable, "-c", _STEP, json.dumps([*setting, repeats]), str(threads)],
                             env={**clean, **env}, capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        if other:
            other.kill()
            other.wait()


def main(settings=((5, 1, "maml", True), (20, 1, "maml", False)), repeats: int = 5) -> list[dict]:
    rows = []
    print("meta-training step, seconds per iteration (median), each policy in a fresh process; "
          "'beside a busy process': one other process multiplying matrices on one thread")
    print(f"{'setting':<26}{'policy':<22}{'alone':>9}{'speed-up':>10}{'beside busy':>13}{'speed-up':>10}")
    for setting in settings:
        label = f"{setting[0]}-way {setting[1]}-shot {setting[2]} ({'vmap' if setting[3] else 'loop'})"
        base = {}
        for name in POLICIES:
            alone = time_policy(name, setting, repeats, busy=False)
            loaded = time_policy(name, setting, repeats, busy=True)
            base = base or {"alone": alone, "busy": loaded}
            rows.append(dict(setting=label, policy=name, alone=alone, busy=loaded))
            print(f"{label:<26}{name:<22}{alone:>9.3f}{base['alone'] / alone:>9.2f}x{loaded:>13.3f}"
                  f"{base['busy'] / loaded:>9.2f}x", flush=True)
    return rows


if __name__ == "__main__":
    main()
