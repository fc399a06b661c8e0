"""Probing: every layer's activations on a task's points, before and after the inner loop.

The layers are a model's direct children that hold parameters, in order (conv4: ``conv1``..
``conv4``, ``head``). Activations are taken on the query points by default (the paper's
protocol: 5-way, 15 queries per class, 75 points), or on the support points on request, with
BatchNorm using that batch's statistics as everywhere else. Probes are produced one task at a
time, so an analysis over 600 tasks holds one task's activations in memory, never all of them.

Saved probes (``save_probes``) are a folder with ``meta.json`` (checkpoint, layers, steps,
points, task-list description, repsim version) and one ``task-NNNN.safetensors`` per task whose
tensors are named ``step{k}/{layer}``, k the inner steps taken: ``step0`` before adaptation,
``stepK`` after the K steps of the inner loop (and every step between with ``every_step``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import save
from torch import nn
from torch.func import functional_call

import repsim
from repsim.errors import RepsimError, not_finite
from repsim.io import atomic_write_bytes, atomic_write_json
from repsim.meta import InnerLoop, adapt

Params = dict[str, torch.Tensor]


def probe_layers(model: nn.Module) -> list[str]:
    """Names of the model's direct children that have parameters, in forward order."""
    return [name for name, child in model.named_children() if any(True for _ in child.parameters())]


def check_layers(model: nn.Module, layers) -> list[str]:
    """``layers`` checked: each a module of ``model`` that holds parameters, named as
    ``named_modules`` names it (``conv4``, or dotted, ``layer3.0.conv1``, in a model of one's own)."""
    valid = {name for name, module in model.named_modules()
             if name and any(True for _ in module.parameters())}
    unknown = [layer for layer in layers if layer not in valid]
    if unknown:
        raise RepsimError(f"unknown layer(s) {', '.join(unknown)}: valid layers are "
                          f"{', '.join(probe_layers(model))} and their parameterised sub-modules "
                          f"(dotted names, e.g. {next(iter(sorted(valid - set(probe_layers(model)))), 'conv1.conv')})")
    return list(layers)


def in_layers(param: str, layers) -> bool:
    """Whether parameter ``param`` (e.g. ``layer1.conv1.weight``) belongs to one of ``layers``."""
    return any(param.startswith(layer + ".") for layer in layers)


@torch.no_grad()
def layer_outputs(model: nn.Module, params: Params, x: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
    """Each named layer's output on ``x`` under ``params`` (one forward pass, hooks)."""
    modules = dict(model.named_modules())
    outputs: dict[str, torch.Tensor] = {}
    handles = [modules[name].register_forward_hook(
        lambda _m, _i, out, name=name: outputs.__setitem__(name, out.detach()))
        for name in layers]
    try:
        functional_call(model, params, (x,))
    finally:
        for h in handles:
            h.remove()
    for name, value in outputs.items():
        if not torch.isfinite(value).all():
            raise not_finite(f"layer {name}'s output")
    return outputs


@dataclass
class Probe:
    task_index: int
    steps: list[dict[str, torch.Tensor]]  # steps[0]: before the inner loop; steps[-1]: after
    params: list[Params]                   # the adapted parameters at the same steps
    at: list[int] = field(default_factory=list)  # how many inner steps each of them had taken

    @property
    def before(self) -> dict[str, torch.Tensor]:
        return self.steps[0]

    @property
    def after(self) -> dict[str, torch.Tensor]:
        return self.steps[-1]


def probe_task(model: nn.Module, params: Params, task, *, inner: InnerLoop,
               layers: list[str], points: str = "query", every_step: bool = False,
               task_index: int = 0) -> Probe:
    """Activations of ``layers`` on the task's ``points`` before and after the ``inner`` loop."""
    if points not in ("query", "support"):
        raise RepsimError(f"points must be 'query' or 'support', not {points!r}")
    x = task.query_x if points == "query" else task.support_x
    names, steps, one_step = inner.names, inner.steps, inner.but(steps=1)
    current = {n: p.detach().requires_grad_(n in names) for n, p in params.items()}
    record_at = range(steps + 1) if every_step else (0, steps)
    snapshots, kept = [], []
    for step in range(steps + 1):
        if step in record_at:
            snapshots.append(layer_outputs(model, current, x, layers))
            kept.append({n: p.detach() for n, p in current.items()})
        if step < steps:
            current = adapt(model, current, task.support_x, task.support_y, one_step)
            current = {n: p.detach().requires_grad_(n in names) for n, p in current.items()}
    return Probe(task_index, snapshots, kept, [s for s in range(steps + 1) if s in record_at])


def iter_probes(model: nn.Module, params: Params, tasks, *, device: torch.device,
                **kwargs) -> Iterator[Probe]:
    """Probe every task of ``tasks`` in turn (see :func:`probe_task` for the keywords)."""
    params = {n: p.detach().to(device) for n, p in params.items()}
    for i, task in enumerate(tasks):
        yield probe_task(model, params, task.to(device), task_index=i, **kwargs)


def save_probes(folder: str | Path, probes, meta: dict) -> Path:
    """Write probes task by task (each file atomic), then ``meta.json`` last: a folder with a
    meta.json is complete."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "meta.json").unlink(missing_ok=True)  # until rewritten, the folder reads as unfinished
    for old in folder.glob("task-*.safetensors"):
        old.unlink()
    count = 0
    for probe in probes:
        taken = probe.at or range(len(probe.steps))
        tensors = {f"step{s}/{layer}": acts.cpu().contiguous()
                   for s, step in zip(taken, probe.steps) for layer, acts in step.items()}
        atomic_write_bytes(folder / f"task-{probe.task_index:04d}.safetensors", save(tensors))
        count += 1
    atomic_write_json(folder / "meta.json", {**meta, "tasks": count,
                                             "repsim_version": repsim.__version__})
    return folder
