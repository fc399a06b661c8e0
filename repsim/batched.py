"""Several runs of one recipe trained as one: R seeds (or initialisations) in one batched step.

A meta-training iteration of conv4 is thousands of small kernels, and a GPU runs them faster
than Python issues them (docs/BENCHMARKS.md: an H200 at about 2% of its float32 rate). Two
changes take the launches out of the way:

1. *Runs batched*: the R runs' parameters are stacked along a leading run dimension, and every
   run's meta-gradient comes out of one torch.func.vmap over runs (and, inside, over tasks):
   R times the work per kernel for the same number of kernels.
2. *CUDA graph* (opt-in, ``graphs=True``; not yet verified): on a GPU the whole iteration
   (gathering the tasks' images from a bank kept on the GPU, the inner loops, the
   meta-gradient, clipping, Adam) is captured once and replayed; per iteration the host only
   copies the next task indices. On the one lent H200 so far (2026-12-04, torch 2.11) the
   weights after 8 iterations differed from the eager step's by more than that check allowed
   (which did not separate a capture fault from run-to-run noise); until a GPU check shows
   the replayed losses equal the eager ones, it stays off.

Tasks are drawn ahead, in worker processes when asked, exactly as
:func:`repsim.train.training_draw` draws them, and gathered on the device from an image bank.

Each run is the run :func:`repsim.train.train` would make: the same initial weights, the same
tasks, the same Adam (Adam is element-wise, so Adam on stacked tensors is each run's own), and
its own run folder in train()'s layout, so ``repsim train --resume`` continues it on any device.
Runs may differ only in their seed and initialisations (:data:`INIT_KEYS`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from repsim.checkpoint import load_weights
from repsim.config import Config
from repsim.data.episodes import Split, TaskList
from repsim.errors import RepsimError
from repsim.evaluate import resolve_device, score_tasks_batched
from repsim.meta import meta_loss_runs, own_inner_loop, training_objective
from repsim.model import model_for
from repsim.names import META_ALGORITHMS
from repsim.train import (
    VALIDATION_SEED,
    RunState,
    StopRequest,
    append_jsonl,
    iteration_of,
    load_optimizer,
    prepare_run_folder,
    run_folder_lock,
    save_run,
    training_draw,
    training_splits,
    truncate_metrics,
    validation_scores,
)

INIT_KEYS = ("seed", "head_init", "conv_init")  # what runs trained together may differ in
CHUNK = 200  # iterations of task draws made at a time (and the divergence check's period)


def check_together(configs: list[Config]) -> None:
    """Refuse runs that cannot share one step: another algorithm, task shape, schedule or
    convention changes the computation, not just the numbers in it."""
    if not configs:
        raise RepsimError("no runs to train: give at least one config")
    first = {k: v for k, v in configs[0].to_dict().items() if k not in INIT_KEYS}
    for c in configs[1:]:
        other = {k: v for k, v in c.to_dict().items() if k not in INIT_KEYS}
        changed = sorted(k for k in first if first[k] != other.get(k))
        if changed:
            raise RepsimError(f"runs trained together may differ only in {', '.join(INIT_KEYS)}, "
                              f"not in {', '.join(changed)}: train those runs separately")
    if configs[0].algorithm not in META_ALGORITHMS:
        raise RepsimError(f"batched training covers {', '.join(META_ALGORITHMS)}, not "
                          f"{configs[0].algorithm}: train it with repsim train, one run at a time")


def image_bank(split: Split, device: torch.device) -> torch.Tensor:
    """Every image of ``split`` in each of its rotations, as floats in [0, 1] on ``device``:
    ``bank[c, k, e]`` is example e of class c turned k quarter turns (k = 0 only, without
    rotations), the image :func:`repsim.data.episodes.task_from_draw` would build."""
    images = split.images.to(device)
    turns = range(4) if split.rotate else range(1)
    return torch.stack([torch.rot90(images, k, dims=(-2, -1)) for k in turns], dim=1).float().div_(255.0)


def gather_tasks(bank: torch.Tensor, classes: torch.Tensor, rotations: torch.Tensor,
                 examples: torch.Tensor, shots: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The support and query images of draws with leading dimensions (R runs, T tasks):
    classes and rotations (R, T, N), examples (R, T, N, shots + queries) give support images
    (R, T, N * shots, C, H, W) and query images (R, T, N * queries, C, H, W), class by class."""
    images = bank[classes[..., None], rotations[..., None], examples]  # (R, T, N, P, C, H, W)
    runs, tasks, ways, per_class = examples.shape
    shape = images.shape[4:]
    return (images[:, :, :, :shots].reshape(runs, tasks, ways * shots, *shape),
            images[:, :, :, shots:].reshape(runs, tasks, ways * (per_class - shots), *shape))


def draw_iterations(sizes: tuple[int, int, bool], config: Config, first: int, last: int) -> tuple[np.ndarray, ...]:
    """Task draws of iterations ``first``..``last`` of a run (``sizes``: the training split's
    classes, examples per class and rotation): classes and rotations (I, T, N), examples
    (I, T, N, shots + queries), with I iterations of T tasks."""
    T = config.meta_batch_size
    draws = [training_draw(*sizes, config, (it - 1) * T + j)
             for it in range(first, last + 1) for j in range(T)]
    iterations = last - first + 1
    return tuple(torch.stack([getattr(d, f) for d in draws]).numpy().reshape(iterations, T, *shape)
                 for f, shape in (("classes", (config.ways,)), ("rotations", (config.ways,)),
                                  ("examples", (config.ways, config.shots + config.queries))))


class TaskDraws:
    """The runs' task draws, iteration after iteration, made ahead in chunks of :data:`CHUNK`
    iterations (in ``workers`` processes when there are any). Runs that share a seed share
    tasks, whatever their initialisation."""

    def __init__(self, split: Split, configs: list[Config], first: int, last: int, workers: int = 0):
        self.sizes = (split.num_classes, split.examples_per_class, split.rotate)
        self.configs = {c.seed: c for c in configs}
        self.run_seeds = [c.seed for c in configs]
        self.chunks = [(a, min(a + CHUNK - 1, last)) for a in range(first, last + 1, CHUNK)]
        self.pool = (ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=torch.set_num_threads, initargs=(1,))
                     if workers else None)

    def __iter__(self):
        """Yields (first iteration, (classes, rotations, examples)) per chunk, each array of
        shape (iterations, R, T, ...)."""
        pending = []
        ahead = 2 * (self.pool._max_workers if self.pool else 0)
        todo = iter(self.chunks)
        try:
            for chunk in todo:
                pending.append((chunk, self._submit(chunk)))
                while len(pending) > ahead:
                    (a, _), parts = pending.pop(0)
                    yield a, self._stack(parts)
            for (a, _), parts in pending:
                yield a, self._stack(parts)
        finally:
            if self.pool:
                self.pool.shutdown(cancel_futures=True)

    def _submit(self, chunk):
        if self.pool:
            return {s: self.pool.submit(draw_iterations, self.sizes, c, *chunk) for s, c in self.configs.items()}
        return {s: draw_iterations(self.sizes, c, *chunk) for s, c in self.configs.items()}

    def _stack(self, parts):
        parts = {s: (p.result() if hasattr(p, "result") else p) for s, p in parts.items()}
        return tuple(torch.from_numpy(np.stack([parts[s][i] for s in self.run_seeds], axis=1))
                     for i in range(3))


class BatchedStep:
    """One training iteration of R runs: gather the tasks, every run's meta-gradient, clip,
    Adam. With ``graphs`` (a GPU) the first iterations run eagerly on a side stream (what
    capture needs), then one is captured as a CUDA graph, which every later call replays.

    Each run's loss and accuracy are summed on the device (``window``) and non-finite losses or
    gradients recorded (``finite``), so no iteration waits for the host."""

    WARMUP = 3

    def __init__(self, model, params: dict[str, torch.Tensor], optimizer, bank: torch.Tensor,
                 config: Config, runs: int, graphs: bool):
        self.model, self.params, self.optimizer, self.bank, self.config = model, params, optimizer, bank, config
        dev = bank.device
        T, N, K, Q = config.meta_batch_size, config.ways, config.shots, config.queries
        self.classes = torch.zeros(runs, T, N, dtype=torch.long, device=dev)
        self.rotations = torch.zeros(runs, T, N, dtype=torch.long, device=dev)
        self.examples = torch.zeros(runs, T, N, K + Q, dtype=torch.long, device=dev)
        labels = torch.arange(N, device=dev)
        self.support_y = labels.repeat_interleave(K).expand(runs, T, -1).contiguous()
        self.query_y = labels.repeat_interleave(Q).expand(runs, T, -1).contiguous()
        self.window = torch.zeros(runs, 2, dtype=torch.float64, device=dev)  # loss, accuracy sums
        self.finite = torch.ones(runs, dtype=torch.bool, device=dev)
        self.graphs, self.graph, self.eager_left = graphs, None, self.WARMUP

    def _iteration(self) -> None:
        c = self.config
        support_x, query_x = gather_tasks(self.bank, self.classes, self.rotations, self.examples, c.shots)
        losses, accs = meta_loss_runs(self.model, self.params, support_x, self.support_y, query_x,
                                      self.query_y, training_objective(c, self.model))
        losses.sum().backward()  # run r's loss depends on run r's weights alone
        grads = [p.grad for p in self.params.values()]
        finite = torch.isfinite(losses)
        for g in grads:
            finite &= torch.isfinite(g).flatten(1).all(1)
        self.finite &= finite
        if c.meta_grad_clip:  # element-wise, as tf.clip_by_value in Finn et al.'s code
            for g in grads:
                g.clamp_(-c.meta_grad_clip, c.meta_grad_clip)
        self.window += torch.stack([losses.detach(), accs.detach()], 1).double()
        self.optimizer.step()

    def __call__(self, classes: torch.Tensor, rotations: torch.Tensor, examples: torch.Tensor) -> None:
        self.classes.copy_(classes, non_blocking=True)
        self.rotations.copy_(rotations, non_blocking=True)
        self.examples.copy_(examples, non_blocking=True)
        if self.graph is not None:
            self.graph.replay()
            return
        self.optimizer.zero_grad(set_to_none=True)
        if not self.graphs:
            self._iteration()
            return
        if self.eager_left:  # warm-up: real iterations, on a side stream as capture requires
            self.eager_left -= 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self._iteration()
            torch.cuda.current_stream().wait_stream(side)
            return
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._iteration()
        self.graph.replay()  # capturing records this iteration without running it


def stack_runs(configs: list[Config], device: torch.device, checkpoints=None):
    """A model of the runs' architecture and the runs' weights stacked along a leading run
    dimension (leaf tensors on ``device``): each run's weights as train() starts them (its
    seed's draw), or as its checkpoint holds them."""
    models = []
    for r, c in enumerate(configs):
        torch.manual_seed(c.seed)
        model = model_for(c, head_width=c.ways)
        if checkpoints and checkpoints[r] is not None:
            load_weights(model, checkpoints[r].params, source=str(checkpoints[r].path))
        models.append(model)
    names = [n for n, _ in models[0].named_parameters()]
    stacked = {n: torch.stack([dict(m.named_parameters())[n].detach() for m in models]).to(device).requires_grad_()
               for n in names}
    return models[0].to(device), stacked  # after stacking: .to moves the module's own weights


def train_runs(configs: list[Config], outs: list[str | Path], *, device: str = "auto",
               resume: bool = False, progress: bool = True, graphs: bool = False,
               workers: int = 0, stop_after: int | None = None,
               time_limit: float | None = None) -> list[Path]:
    """Train the runs ``configs`` into the run folders ``outs`` as one batched run; return
    each run's final checkpoint (or, stopped early, its last one).

    ``graphs`` replays a CUDA graph of the iteration (a GPU only; unverified, above). ``workers`` draws
    the tasks in that many processes (on a fast GPU the draws are the host's bottleneck).
    ``stop_after`` and ``time_limit`` stop early as in :func:`repsim.train.train`, with a
    checkpoint of every run where they stop; ``--resume`` continues all of them (or each on
    its own, with repsim train). One process at a time trains into a run folder.
    """
    check_together(configs)
    if len(outs) != len(configs) or len({Path(o).resolve() for o in outs}) != len(outs):
        raise RepsimError(f"{len(configs)} runs need {len(configs)} different run folders, got {len(outs)} "
                          f"({len({Path(o).resolve() for o in outs})} different)")
    outs = [Path(o) for o in outs]
    with contextlib.ExitStack() as locks:
        for out in outs:
            locks.enter_context(run_folder_lock(out))
        return _train_runs(configs, outs, device=device, resume=resume, progress=progress, graphs=graphs,
                           workers=workers, stop_after=stop_after, time_limit=time_limit)


def _train_runs(configs: list[Config], outs: list[Path], *, device: str, resume: bool, progress: bool,
                graphs: bool, workers: int, stop_after: int | None, time_limit: float | None) -> list[Path]:
    deadline = None if time_limit is None else time.monotonic() + time_limit
    config = configs[0]
    dev = resolve_device(device)
    if graphs and dev.type != "cuda":
        raise RepsimError("CUDA graphs need a GPU: train on --device cuda, or without graphs")
    splits = training_splits(config, progress)
    start, points = _resume_points(configs, outs, resume)
    finals = [o / "model.safetensors" for o in outs]
    if start == config.iterations and all(iteration_of(f) == start for f in finals):
        return finals  # finished: nothing to do, and nothing rewritten

    model, params = stack_runs(configs, dev, [ckpt for _, ckpt in points])
    states = []
    for o, (_, ckpt) in zip(outs, points):
        state = RunState(execution="vmap", devices=[str(dev)])
        states.append(state if ckpt is None else RunState.from_checkpoint(ckpt, state))
        if resume:
            truncate_metrics(o / "metrics.jsonl", start)
    optimizer = torch.optim.Adam(params.values(), lr=config.outer_lr, capturable=graphs)
    if start:
        load_optimizer(optimizer, params, _stacked_optimizer([ckpt.optimizer for _, ckpt in points]))

    step = BatchedStep(model, params, optimizer, image_bank(splits["train"], dev), config, len(configs), graphs)
    validation = TaskList(splits["val"], config.ways, config.shots, config.queries, config.eval_tasks,
                          VALIDATION_SEED)
    last = config.iterations if stop_after is None else min(config.iterations, start + stop_after)
    bar = tqdm(total=config.iterations, initial=start, disable=not progress,
               desc=f"{len(configs)} x {config.algorithm} {config.dataset} {config.ways}w{config.shots}s")
    window_start, tic = start, time.perf_counter()
    it = start
    draws = TaskDraws(splits["train"], configs, start + 1, last, workers)
    with StopRequest() as stop:  # Ctrl-C: stop after this iteration, with checkpoints
        for first, (classes, rotations, examples) in draws:
            chunk = [t.to(dev, non_blocking=True) for t in (classes.long(), rotations.long(), examples.long())]
            for i in range(len(classes)):
                it = first + i
                step(chunk[0][i], chunk[1][i], chunk[2][i])
                logs = it % config.eval_every == 0 or it == config.iterations
                out_of_time = (stop.requested or deadline is not None and time.monotonic() > deadline) and it < last
                saves = it % config.checkpoint_every == 0 or it == last or out_of_time
                if logs or saves or i == len(classes) - 1:
                    _check_finite(step, outs, window_start, it, config)
                if logs:
                    _log(step, states, configs, outs, model, params, validation, dev, it, it - window_start)
                    window_start = it
                if saves:
                    wall = time.perf_counter() - tic
                    tic = time.perf_counter()
                    for state in states:
                        state.wall_time_s += wall  # the runs shared it
                    _save_runs(f"checkpoints/iter-{it:06d}.safetensors", configs, outs, states, params,
                               optimizer, it)
                if out_of_time:
                    break
            bar.update(it - bar.n)
            if out_of_time:
                why = "interrupted" if stop.requested else "time limit reached"
                tqdm.write(f"repsim: {why} at iteration {it}, checkpoints saved; --resume continues the runs",
                           file=sys.stderr)
                last = it
                break
    bar.close()
    if stop.requested and last < config.iterations:
        raise KeyboardInterrupt  # the CLI says how to resume
    if last < config.iterations:
        return [o / "checkpoints" / f"iter-{last:06d}.safetensors" for o in outs]
    _save_runs("model.safetensors", configs, outs, states, params, optimizer, config.iterations)
    return finals


def _resume_points(configs: list[Config], outs: list[Path], resume: bool) -> tuple[int, list]:
    """Each run folder prepared (:func:`repsim.train.prepare_run_folder`): the iteration they
    all stand at and each one's (start, checkpoint). Runs at different iterations cannot share
    a step."""
    points = [prepare_run_folder(o, c, resume) for o, c in zip(outs, configs)]
    if len({start for start, _ in points}) > 1:
        raise RepsimError("the runs stand at different iterations ("
                          + ", ".join(f"{o}: {s}" for o, (s, _) in zip(outs, points))
                          + "): resume each with repsim train, or train them together from the start")
    return points[0][0], points


def _save_runs(name: str, configs, outs, states, params, optimizer, it: int) -> None:
    """Each run's weights and Adam state as its own checkpoint, ``name`` in its run folder."""
    for r, (c, o, state) in enumerate(zip(configs, outs, states)):
        save_run(o / name, c, _run(params, r), _run_optimizer(optimizer, params, r), it, o, state)


def _check_finite(step: BatchedStep, outs, since: int, it: int, config: Config) -> None:
    bad = (~step.finite).nonzero().flatten().tolist()
    if bad:
        raise RepsimError(f"training diverged between iterations {since + 1} and {it} in "
                          f"{', '.join(str(outs[r]) for r in bad)} (a non-finite meta-loss or "
                          f"meta-gradient): lower outer_lr or inner_lr; each run's last checkpoint "
                          f"before it is in its checkpoints/ folder")


def _log(step, states, configs, outs, model, params, validation, dev, it: int, window: int) -> None:
    sums = (step.window / max(window, 1)).tolist()
    step.window.zero_()
    for r, (c, o, state) in enumerate(zip(configs, outs, states)):
        state.window = [0.0, 0.0, 0]
        scores = validation_scores(lambda: score_tasks_batched(
            model, _run(params, r), validation, inner=own_inner_loop(c, model), device=dev, progress=False),
            validation, it, where=f"{o}: ")
        append_jsonl(o / "metrics.jsonl", {"iteration": it, "train_loss": sums[r][0],
                                           "train_accuracy": 100 * sums[r][1], **scores})


def _run(params: dict[str, torch.Tensor], r: int) -> dict[str, torch.Tensor]:
    return {n: p[r].detach() for n, p in params.items()}


def _run_optimizer(optimizer, params, r: int) -> dict[str, torch.Tensor]:
    """Run r's Adam state in the layout of repsim.train.optimizer_tensors."""
    out = {}
    for name, p in params.items():
        for key, value in optimizer.state[p].items():
            out[f"{name}/{key}"] = value.detach().cpu().float() if key == "step" else value[r].detach()
    return out


def _stacked_optimizer(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The runs' saved Adam states stacked as the batched step holds them (one shared step)."""
    out = {}
    for key in states[0]:
        values = [s[key] for s in states]
        if key.endswith("/step"):
            if len({float(v) for v in values}) > 1:
                raise RepsimError(f"the runs' optimizers stand at different steps ({key}): resume them one by one")
            out[key] = values[0]
        else:
            out[key] = torch.stack(values)
    return out
