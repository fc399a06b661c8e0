"""``repsim bench batched``: seconds per training iteration of R runs trained together.

Side by side in one process, on real Omniglot training tasks of the paper's settings (the
recipe's inner loop, meta-batch and Finn et al.'s conventions): the batched step of
repsim.batched run eagerly with one run (what repsim.train's vmap step does per iteration, plus
the gather from the image bank), the same captured as a CUDA graph, and R runs in one graph.
Printed per setting: seconds per iteration of the whole step, seconds per run-iteration, and
the speed-ups over one eager run; with them, how long the paper's 60,000 iterations of R runs
would take at that rate.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

import numpy as np
import torch

from repsim.batched import BatchedStep, draw_iterations, image_bank, stack_runs
from repsim.config import Config
from repsim.data import load_splits
from repsim.evaluate import resolve_device


def time_step(config: Config, runs: int, graphs: bool, split, bank, device, iterations: int = 20) -> float:
    """Median seconds per iteration of ``runs`` runs of ``config`` in one BatchedStep, after
    its warm-up (and capture) iterations."""
    configs = [replace(config, seed=s) for s in range(runs)]
    model, params = stack_runs(configs, device)
    optimizer = torch.optim.Adam(params.values(), lr=config.outer_lr, capturable=graphs)
    step = BatchedStep(model, params, optimizer, bank, config, runs, graphs)
    sizes = (split.num_classes, split.examples_per_class, split.rotate)
    total = BatchedStep.WARMUP + 2 + iterations
    per_seed = [draw_iterations(sizes, c, 1, total) for c in configs]
    draws = [torch.from_numpy(np.stack([d[i] for d in per_seed], axis=1)).long().to(device) for i in range(3)]
    times = []
    for i in range(total):
        _sync(device)
        tic = time.perf_counter()
        step(draws[0][i], draws[1][i], draws[2][i])
        _sync(device)
        times.append(time.perf_counter() - tic)
    return statistics.median(times[BatchedStep.WARMUP + 2:])


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(device: str = "auto", data_root=None, settings=((5, 1, "maml", 4), (20, 1, "maml", 3)),
         iterations: int = 20, graphs: bool | None = None) -> list[dict]:
    dev = resolve_device(device)
    graphs = dev.type == "cuda" if graphs is None else graphs
    rows = []
    split = None
    print(f"batched training steps on {torch.cuda.get_device_name(dev) if graphs else dev}: "
          f"Omniglot, Finn et al.'s conventions, the paper's inner loops; median of {iterations} iterations")
    print(f"{'setting':<22}{'runs':>5}{'mode':>8}{'s/iter':>10}{'s/run-iter':>12}{'speed-up':>10}{'60k iters':>11}")
    for ways, shots, algorithm, runs in settings:
        config = Config(algorithm=algorithm, dataset="omniglot", ways=ways, shots=shots,
                        data_root=data_root).resolved()
        if split is None:
            split = load_splits("omniglot", data_root, split_scheme=config.split_scheme, rotate=config.rotate,
                                seed=config.split_seed, image_resize=config.image_resize, progress=False)["train"]
            bank = image_bank(split, dev)
        modes = [(1, False)] + ([(1, True), (runs, True)] if graphs else [(runs, False)])
        base = None
        for r, g in modes:
            t = time_step(config, r, g, split, bank, dev, iterations)
            base = base or t
            row = dict(setting=f"{ways}-way {shots}-shot {algorithm}", runs=r, mode="graph" if g else "eager",
                       s_per_iter=t, s_per_run_iter=t / r, speedup=base / (t / r), hours_60k=60000 * t / 3600)
            rows.append(row)
            print(f"{row['setting']:<22}{r:>5}{row['mode']:>8}{t:>10.4f}{t / r:>12.4f}"
                  f"{row['speedup']:>9.1f}x{row['hours_60k']:>10.2f}h", flush=True)
    return rows
