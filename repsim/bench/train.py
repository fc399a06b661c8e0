"""``repsim bench train``: meta-training speed, ours against a peer library, side by side.

Setting: Omniglot 20-way 1-shot by default (``--ways``/``--shots`` for the others), with the
paper's inner loop and meta-batch for that setting (20-way: 5 inner steps of 0.1, meta-batch 16;
5-way: 1 step of 0.4, meta-batch 32) and as many queries per class as shots; second-order
meta-gradients; one iteration = meta-batch forward + meta-gradient + Adam step.
The peer is ``higher`` (monkey-patched modules, the usual way MAML was written in PyTorch),
running the standard torch conv4 (nn.BatchNorm2d on batch statistics) with the same tasks.

Printed: seconds per iteration (median of a few), iterations per second, the step's rate in
GFLOP/s (its convolutions' and products' floating-point operations, counted by torch's
FlopCounterMode on the eager step, over its time) beside this machine's own rates on a large
matrix product and on the model's convolution, and the ratios the targets are stated in:
repsim vs higher (target >= 2x), ANIL vs MAML (target >= 3x), and task-batched (vmap) vs
per-task loop, from which ``execution="auto"`` picks per device. ``--compiled`` also times
``execution: compiled`` (each task's meta-gradient compiled by torch.compile) and its
compilation.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from repsim import threads
from repsim.data.episodes import Task, batch_tasks
from repsim.evaluate import resolve_device
from repsim.meta import MetaObjective, meta_backward, meta_backward_compiled, meta_loss_vmap
from repsim.model import conv4_for


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


def _setting(ways: int, shots: int, algorithm: str = "maml"):
    """The paper's Omniglot configuration for ``ways``-way ``shots``-shot (inner loop, meta-batch)."""
    from repsim.config import Config
    return Config(algorithm=algorithm, dataset="omniglot", ways=ways, shots=shots).resolved()


def _tasks(setting, device, data_root=None) -> list[Task]:
    """The meta-batch every method runs: real Omniglot training tasks when ``data_root`` is
    given, else uniform noise (the loop's speed depends on the data: on real Omniglot it is
    about 15% slower than on noise, while vmap's is not)."""
    c, g = setting, torch.Generator().manual_seed(0)
    if data_root is not None:
        from repsim.data import load_splits
        from repsim.data.episodes import sample_task
        train = load_splits("omniglot", data_root, progress=False)["train"]
        return [sample_task(train, c.ways, c.shots, c.queries, g).to(device)
                for _ in range(c.meta_batch_size)]
    return [Task(torch.rand(c.ways * c.shots, 1, 28, 28, generator=g), torch.arange(c.ways).repeat(c.shots),
                 torch.rand(c.ways * c.queries, 1, 28, 28, generator=g), torch.arange(c.ways).repeat(c.queries),
                 torch.arange(c.ways)).to(device) for _ in range(c.meta_batch_size)]


def _repsim_step(algorithm: str, batched: bool | str, device, tasks, setting):
    """One training iteration of repsim, its meta-batch run as ``batched`` says: True (vmap),
    False (the per-task loop) or "compiled" (the loop, each task's meta-gradient compiled)."""
    c = setting
    torch.manual_seed(0)
    model = conv4_for("omniglot", c.ways).to(device)
    params = dict(model.named_parameters())
    opt = torch.optim.Adam(params.values(), lr=1e-3)
    stacked = batch_tasks(tasks)
    objective = MetaObjective.of(algorithm, model, c.inner_lr, c.inner_steps)

    def step():  # what one training iteration does (repsim.train)
        opt.zero_grad()
        if batched == "compiled":
            meta_backward_compiled(model, params, tasks, objective)
        elif batched:
            loss, _ = meta_loss_vmap(model, params, stacked, objective)
            loss.backward()
        else:
            meta_backward(model, params, tasks, objective)
        opt.step()
    return step


def step_flops(step) -> int:
    """Floating-point operations of one call of ``step`` (convolutions and matrix products, their
    backward and double backward included), as torch's FlopCounterMode counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def machine_rates(device, ways: int) -> dict[str, float]:
    """This device's GFLOP/s on a large float32 matrix product (4096 x 4096) and on the model's
    own convolution (64 -> 64 channels, 3x3, stride 2, on a 14 x 14 map of ``ways`` images x 16
    tasks), forward only: the ceilings a training step's rate is read against."""
    def rate(fn, flops: float) -> float:
        return flops / _seconds(fn, 5, device) / 1e9

    a = torch.rand(4096, 4096, device=device)
    x, w = torch.rand(ways * 16, 64, 14, 14, device=device), torch.rand(64, 64, 3, 3, device=device)
    out = F.conv2d(x, w, stride=2, padding=1)
    conv_flops = 2 * out.numel() * 64 * 9
    return {"matrix product": rate(lambda: a @ a, 2 * 4096 ** 3),
            "conv 64->64 3x3": rate(lambda: F.conv2d(x, w, stride=2, padding=1), conv_flops)}


def _require_higher() -> None:
    """Before any timing: the benchmark is a comparison, so without its peer it is refused."""
    try:
        import higher  # noqa: F401
    except ImportError:
        from repsim.errors import RepsimError
        raise RepsimError("repsim bench train times repsim against the higher package, which is not "
                          "installed: pip install -e \".[bench]\" (or pip install higher==0.2.1)") from None


def _higher_step(algorithm: str, device, tasks, setting):
    import higher

    c = setting
    torch.manual_seed(0)
    model = TorchConv4(c.ways).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    inner = list(model.head.parameters()) if algorithm == "anil" else list(model.parameters())

    def step():
        opt.zero_grad()
        for t in tasks:
            inner_opt = torch.optim.SGD(inner, lr=c.inner_lr)
            with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False) as (fmodel, diffopt):
                for _ in range(c.inner_steps):
                    diffopt.step(F.cross_entropy(fmodel(t.support_x), t.support_y))
                (F.cross_entropy(fmodel(t.query_x), t.query_y) / len(tasks)).backward()
        opt.step()
    return step


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


def run(device: str = "auto", quick: bool = False, data_root=None,
        ways: int = 20, shots: int = 1, compiled: bool = False
        ) -> tuple[dict[str, float], dict[str, int], dict[str, float]]:
    """Seconds per iteration of each method, the FLOPs of its iteration (the eager step's), and
    the seconds compiling took per algorithm (``compiled`` only)."""
    _require_higher()
    dev = resolve_device(device)
    repeats = 1 if quick else 3
    setting = _setting(ways, shots)
    tasks = _tasks(setting, dev, data_root)
    times, flops, compiling = {}, {}, {}
    for algorithm in ("maml", "anil"):
        eager = step_flops(_repsim_step(algorithm, False, dev, tasks, setting))
        for name, batched in (("loop", False), ("vmap", True)) + ((("compiled", "compiled"),) if compiled else ()):
            step = _repsim_step(algorithm, batched, dev, tasks, setting)
            if batched == "compiled":
                tic = time.perf_counter()
                step()  # the compilation
                compiling[algorithm] = time.perf_counter() - tic
            times[f"repsim {algorithm} {name}"] = _seconds(step, repeats, dev)
            flops[f"repsim {algorithm} {name}"] = eager
        higher_step = _higher_step(algorithm, dev, tasks, setting)
        flops[f"higher {algorithm}"] = step_flops(higher_step)
        times[f"higher {algorithm}"] = _seconds(higher_step, repeats, dev)
    return times, flops, compiling


def main(device: str = "auto", quick: bool = False, data_root=None,
         ways: int = 20, shots: int = 1, compiled: bool = False) -> dict[str, float]:
    from repsim.train import resolve_execution

    dev, c = resolve_device(device), _setting(ways, shots)
    print(f"meta-training speed on {dev} ({threads.describe()}): Omniglot "
          f"{c.ways}-way {c.shots}-shot, {c.inner_steps} inner steps of {c.inner_lr}, "
          f"meta-batch {c.meta_batch_size}, second order, "
          + ("real Omniglot training tasks" if data_root else "noise images (--data-root for real tasks)"))
    times, flops, compiling = run(device, quick, data_root, ways, shots, compiled)
    rates = machine_rates(dev, c.ways)
    print(f"{'method':<24}{'s/iter':>10}{'iter/s':>10}{'GFLOP':>8}{'GFLOP/s':>9}")
    for name, s in times.items():
        print(f"{name:<24}{s:>10.3f}{1 / s:>10.3f}{flops[name] / 1e9:>8.2f}{flops[name] / 1e9 / s:>9.1f}")
    print("this device, forward only: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in rates.items()))
    for alg, s in compiling.items():
        print(f"compiling the {alg} step (once per process, before its first iteration): {s:.0f} s")
    print("ratios (higher is better for the first named):")
    for alg in ("maml", "anil"):
        ours = min(times[f"repsim {alg} loop"], times[f"repsim {alg} vmap"])
        best = "loop" if times[f"repsim {alg} loop"] <= times[f"repsim {alg} vmap"] else "vmap"
        print(f"  {alg}: vmap vs loop speed-up {times[f'repsim {alg} loop'] / times[f'repsim {alg} vmap']:.2f}x "
              f"(auto picks {resolve_execution(_setting(ways, shots, alg), dev)}; fastest here: {best})")
        if compiled:
            print(f"  {alg}: compiled vs the fastest eager ({best}) {ours / times[f'repsim {alg} compiled']:.2f}x")
        if f"higher {alg}" in times:
            print(f"  {alg}: repsim ({best}) vs higher {times[f'higher {alg}'] / ours:.2f}x (target >= 2x)")
    maml = min(times["repsim maml loop"], times["repsim maml vmap"])
    anil = min(times["repsim anil loop"], times["repsim anil vmap"])
    from repsim.paper import SPEED
    print(f"  ANIL vs MAML per iteration: {maml / anil:.2f}x (target >= 3x; paper "
          f"{SPEED['ANIL vs MAML training iteration']}x)")
    return times
