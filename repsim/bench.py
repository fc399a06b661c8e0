"""``repsim bench train``: meta-training speed, ours against a peer library, side by side.

Setting: Omniglot 20-way 1-shot (1 query per class), 5 inner steps of 0.1, meta-batch 16,
second-order meta-gradients; one iteration = meta-batch forward + meta-gradient + Adam step.
The peer is ``higher`` (monkey-patched modules, the usual way MAML was written in PyTorch),
running the standard torch conv4 (nn.BatchNorm2d on batch statistics) with the same tasks.

Printed: seconds per iteration (median of a few), iterations per second, and the ratios the
targets are stated in: repsim vs higher (target >= 2x), ANIL vs MAML (target >= 3x), and
task-batched (vmap) vs per-task loop, from which ``execution="auto"`` picks per device.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from repsim.data.episodes import Task, batch_tasks
from repsim.evaluate import resolve_device
from repsim.meta import meta_loss, meta_loss_vmap
from repsim.model import conv4_for

WAYS, SHOTS, QUERIES, STEPS, LR, META_BATCH = 20, 1, 1, 5, 0.1, 16


class TorchConv4(nn.Module):
    """The textbook PyTorch conv4 a peer-library user would write (native BatchNorm)."""

    def __init__(self, ways: int):
        super().__init__()
        layers, c = [], 1
        for _ in range(4):
            layers += [nn.Conv2d(c, 64, 3, stride=2, padding=1),
                       nn.BatchNorm2d(64, track_running_stats=False), nn.ReLU()]
            c = 64
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(64, ways)

    def forward(self, x):
        return self.head(self.body(x).mean(dim=(2, 3)))


def _tasks(device, data_root=None) -> list[Task]:
    """The meta-batch every method runs: real Omniglot training tasks when ``data_root`` is
    given, else uniform noise (the loop's speed depends on the data: on real Omniglot it is
    about 15% slower than on noise, while vmap's is not)."""
    g = torch.Generator().manual_seed(0)
    if data_root is not None:
        from repsim.data import load_splits
        from repsim.data.episodes import sample_task
        train = load_splits("omniglot", data_root, progress=False)["train"]
        return [sample_task(train, WAYS, SHOTS, QUERIES, g).to(device) for _ in range(META_BATCH)]
    return [Task(torch.rand(WAYS * SHOTS, 1, 28, 28, generator=g), torch.arange(WAYS).repeat(SHOTS),
                 torch.rand(WAYS * QUERIES, 1, 28, 28, generator=g), torch.arange(WAYS).repeat(QUERIES),
                 torch.arange(WAYS)).to(device) for _ in range(META_BATCH)]


def _repsim_step(algorithm: str, batched: bool, device, tasks):
    torch.manual_seed(0)
    model = conv4_for("omniglot", WAYS).to(device)
    params = dict(model.named_parameters())
    opt = torch.optim.Adam(params.values(), lr=1e-3)
    stacked = batch_tasks(tasks)

    def step():
        if batched:
            loss, _ = meta_loss_vmap(model, params, stacked, algorithm, LR, STEPS)
        else:
            loss, _ = meta_loss(model, params, tasks, algorithm, LR, STEPS)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def _higher_step(algorithm: str, device, tasks):
    import higher

    torch.manual_seed(0)
    model = TorchConv4(WAYS).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    inner = list(model.head.parameters()) if algorithm == "anil" else list(model.parameters())

    def step():
        opt.zero_grad()
        for t in tasks:
            inner_opt = torch.optim.SGD(inner, lr=LR)
            with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False) as (fmodel, diffopt):
                for _ in range(STEPS):
                    diffopt.step(F.cross_entropy(fmodel(t.support_x), t.support_y))
                (F.cross_entropy(fmodel(t.query_x), t.query_y) / len(tasks)).backward()
        opt.step()
    return step


def _config(algorithm: str):
    from repsim.config import Config
    return Config(algorithm=algorithm, dataset="omniglot", ways=WAYS, shots=SHOTS, queries=QUERIES)


def _seconds(step, repeats: int, device) -> float:
    step()  # warm-up: allocations, kernel selection
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run(device: str = "auto", quick: bool = False, data_root=None) -> dict[str, float]:
    dev = resolve_device(device)
    repeats = 1 if quick else 3
    tasks = _tasks(dev, data_root)
    times = {}
    for algorithm in ("maml", "anil"):
        times[f"repsim {algorithm} loop"] = _seconds(_repsim_step(algorithm, False, dev, tasks), repeats, dev)
        times[f"repsim {algorithm} vmap"] = _seconds(_repsim_step(algorithm, True, dev, tasks), repeats, dev)
        try:
            times[f"higher {algorithm}"] = _seconds(_higher_step(algorithm, dev, tasks), repeats, dev)
        except ImportError:
            pass
    return times


def main(device: str = "auto", quick: bool = False, data_root=None) -> dict[str, float]:
    from repsim.train import resolve_execution

    dev = resolve_device(device)
    print(f"meta-training speed on {dev} ({torch.get_num_threads()} threads): Omniglot "
          f"{WAYS}-way {SHOTS}-shot, {STEPS} inner steps, meta-batch {META_BATCH}, second order, "
          + ("real Omniglot training tasks" if data_root else "noise images (--data-root for real tasks)"))
    times = run(device, quick, data_root)
    print(f"{'method':<22}{'s/iter':>10}{'iter/s':>10}")
    for name, s in times.items():
        print(f"{name:<22}{s:>10.3f}{1 / s:>10.3f}")
    print("ratios (higher is better for the first named):")
    for alg in ("maml", "anil"):
        ours = min(times[f"repsim {alg} loop"], times[f"repsim {alg} vmap"])
        best = "loop" if times[f"repsim {alg} loop"] <= times[f"repsim {alg} vmap"] else "vmap"
        print(f"  {alg}: vmap vs loop speed-up {times[f'repsim {alg} loop'] / times[f'repsim {alg} vmap']:.2f}x "
              f"(auto picks {resolve_execution(_config(alg), dev)}; fastest here: {best})")
        if f"higher {alg}" in times:
            print(f"  {alg}: repsim ({best}) vs higher {times[f'higher {alg}'] / ours:.2f}x (target >= 2x)")
    maml = min(times["repsim maml loop"], times["repsim maml vmap"])
    anil = min(times["repsim anil loop"], times["repsim anil vmap"])
    print(f"  ANIL vs MAML per iteration: {maml / anil:.2f}x (target >= 3x; paper 1.7x)")
    return times


def similarity_main(device: str = "auto", quick: bool = False) -> None:
    from repsim.bench_similarity import main as similarity_bench
    similarity_bench(["--device", str(resolve_device(device))] + (["--quick"] if quick else []))
