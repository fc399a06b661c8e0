"""The training script: meta-learning (MAML, FOMAML, ANIL, BOIL), multitask and multiclass.

One loop, readable top to bottom. Iteration ``i`` draws its tasks from (seed, i) alone, so a
run resumed from a checkpoint sees exactly the tasks an uninterrupted run would have seen and
ends in the same state (bit for bit on the CPU).

Run folder layout::

    OUT/config.yaml                       the resolved config
    OUT/metrics.jsonl                     one JSON line per evaluation
    OUT/checkpoints/iter-000500.safetensors   intermediate checkpoints, all kept
    OUT/model.safetensors                 the final model
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from tqdm import tqdm

from repsim.checkpoint import Checkpoint, load_checkpoint, load_weights, save_checkpoint
from repsim.config import Config, from_saved
from repsim.data import load_splits
from repsim.data.episodes import (
    TaskDraw,
    TaskList,
    batch_tasks,
    check_task_shape,
    draw_task,
    rotate_images,
    task_from_draw,
    task_generator,
)
from repsim.errors import NotFiniteError, RepsimError
from repsim.evaluate import resolve_device, score_tasks, test_time_params
from repsim.io import atomic_write_text
from repsim.meta import meta_backward, meta_backward_compiled, meta_loss_vmap, own_inner_loop, training_objective
from repsim.model import model_for
from repsim.results import exclusive

VALIDATION_SEED = 12345  # validation tasks are the same for every run and iteration
# How long to train, how often to save and log, and whether that is the paper's schedule, not
# what is learned (iteration i's tasks depend on (seed, i) alone): a resumed run may change
# them, to train longer or save more often.
SCHEDULE_KEYS = ("iterations", "checkpoint_every", "eval_every", "reduced")


def train(config: Config, out: str | Path, *, device: str = "auto", resume: bool = False,
          progress: bool = True, stop_after: int | None = None,
          time_limit: float | None = None) -> Path:
    """Train ``config`` into the run folder ``out``; returns the final checkpoint's path.

    ``stop_after`` ends the run early after that many iterations of this call,
    ``time_limit`` after the first iteration past that many seconds (to train in pieces), each
    with a checkpoint where it stops; the final model is then not written and that
    checkpoint's path is returned. Ctrl-C (or SIGTERM) stops it the same way, after the
    iteration it interrupts, and then raises KeyboardInterrupt; a second one stops at once.
    One process at a time trains into a run folder (another one gets a clear refusal).
    """
    out = Path(out)
    deadline = None if time_limit is None else time.monotonic() + time_limit
    dev = resolve_device(device)
    splits = training_splits(config, progress)  # bad data is refused before anything is written
    with run_folder_lock(out):
        return _train(config, out, dev, splits, resume=resume, progress=progress, stop_after=stop_after,
                      deadline=deadline)


@contextlib.contextmanager
def run_folder_lock(out: Path):
    """Hold run folder ``out`` for this process. A second process training into it would
    interleave its checkpoints and metrics with the first's, and delete the first's unfinished
    writes as stale; it is refused in one line. The lock file sits beside the run folder, which
    must be empty for a new run."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RepsimError(f"cannot write to {out} ({e.strerror}): choose a writable --out") from None
    with exclusive(out.parent, f"{out.name}.train", doing=f"training into {out}"):
        yield


def _train(config: Config, out: Path, dev: torch.device, splits: dict, *, resume: bool, progress: bool,
           stop_after: int | None, deadline: float | None) -> Path:
    train_split = splits["train"]
    # Multiclass pretraining classifies every (class, rotation) of the training split.
    n_rotations = 4 if train_split.rotate else 1
    head_width = (train_split.num_classes * n_rotations if config.algorithm == "multiclass"
                  else config.ways)

    torch.manual_seed(config.seed)
    model = model_for(config, head_width=head_width).to(dev)
    params = dict(model.named_parameters())
    optimizer = torch.optim.Adam(params.values(), lr=config.outer_lr)

    start, ckpt = prepare_run_folder(out, config, resume)
    final = out / "model.safetensors"
    if start == config.iterations and iteration_of(final) == start:
        return final  # resuming a finished run: nothing to do, and nothing rewritten
    state = RunState(execution=resolve_execution(config, dev), devices=[str(dev)])
    if resume:
        truncate_metrics(out / "metrics.jsonl", start)
    if ckpt is not None:
        load_weights(model, ckpt.params, source=str(ckpt.path))
        load_optimizer(optimizer, params, ckpt.optimizer)
        state = RunState.from_checkpoint(ckpt, state)

    validation = TaskList(splits["val"], config.ways, config.shots, config.queries,
                          config.eval_tasks, VALIDATION_SEED)
    last = config.iterations if stop_after is None else min(config.iterations, start + stop_after)
    if state.execution == "compiled" and progress:
        print("execution: compiled: torch.compile builds the meta-gradient before the first iteration "
              "(minutes; once per process)", flush=True)
    bar = tqdm(range(start + 1, last + 1), initial=start, total=config.iterations,
               desc=f"{config.algorithm} {config.dataset} {config.ways}w{config.shots}s",
               disable=not progress)
    tic = time.perf_counter()
    with StopRequest() as stop:  # Ctrl-C: stop after this iteration, with a checkpoint
        for it in bar:
            optimizer.zero_grad(set_to_none=True)
            loss, acc = _meta_gradient(model, params, config, train_split, it, dev, state.execution)
            _refuse_divergence(loss, params, it, out)
            if config.meta_grad_clip:  # element-wise, as tf.clip_by_value in Finn et al.'s code
                for p in params.values():
                    if p.grad is not None:
                        p.grad.clamp_(-config.meta_grad_clip, config.meta_grad_clip)
            optimizer.step()
            state.add(loss, acc)
            bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.3f}")

            if it % config.eval_every == 0 or it == config.iterations:
                scores = validation_scores(lambda: score_tasks(
                    model, test_time_params(model, params, config.algorithm, config.ways), validation,
                    inner=own_inner_loop(config, model), device=dev, progress=False), validation, it)
                append_jsonl(out / "metrics.jsonl", {"iteration": it, **state.take_window(), **scores})
            out_of_time = deadline is not None and time.monotonic() > deadline
            stopping = "interrupted" if stop.requested else "time limit reached" if out_of_time else None
            stopping = stopping if it < last else None
            if it % config.checkpoint_every == 0 or it == last or stopping:
                state.wall_time_s += time.perf_counter() - tic
                tic = time.perf_counter()
                save_run(out / "checkpoints" / f"iter-{it:06d}.safetensors", config, params,
                         optimizer_tensors(optimizer, params), it, out, state)
            if stopping:
                tqdm.write(f"repsim: {stopping} at iteration {it}, checkpoint saved; --resume continues the run",
                           file=sys.stderr)
                last = it
                break
    bar.close()
    if stop.requested and last < config.iterations:
        raise KeyboardInterrupt  # the CLI says how to resume
    if last < config.iterations:
        return out / "checkpoints" / f"iter-{last:06d}.safetensors"
    save_run(final, config, params, optimizer_tensors(optimizer, params), config.iterations, out, state)
    return final


def training_splits(config: Config, progress: bool = True) -> dict:
    """The data set's splits as ``config`` trains on them, checked to hold the tasks it draws
    for training (multiclass pretraining draws examples, not tasks) and validation."""
    splits = load_splits(config.dataset, config.data_root, split_scheme=config.split_scheme,
                         rotate=config.rotate, seed=config.split_seed,
                         image_resize=config.image_resize, progress=progress)
    if config.algorithm != "multiclass":
        check_task_shape(splits["train"], config.ways, config.shots, config.queries)
    check_task_shape(splits["val"], config.ways, config.shots, config.queries)
    return splits


def _refuse_divergence(loss: float, params, it: int, out: Path) -> None:
    """Stop at a non-finite meta-loss or meta-gradient, naming the last checkpoint before it."""
    if math.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in params.values() if p.grad is not None):
        return
    kept = sorted((out / "checkpoints").glob("iter-*.safetensors"))
    raise RepsimError(f"training diverged at iteration {it} (meta-loss {loss:.4g}, or a "
                      f"non-finite meta-gradient): lower outer_lr or inner_lr; the last "
                      f"checkpoint before it is {kept[-1] if kept else 'none (it diverged at once)'}")


def validation_scores(score, validation: TaskList, it: int, where: str = "") -> dict:
    """A metrics line's validation columns: ``score()``'s mean and CI over the validation tasks,
    or None where the test-time inner loop diverges (training does not, and goes on)."""
    try:
        val = score()
    except NotFiniteError as e:
        tqdm.write(f"repsim: warning: {where}validation at iteration {it}: {e}", file=sys.stderr)
        return {"val_accuracy": None, "val_ci95": None, "val_tasks": validation.num_tasks}
    return {"val_accuracy": val.mean, "val_ci95": val.ci95, "val_tasks": val.tasks}


class StopRequest:
    """SIGINT or SIGTERM while training: the first asks the loop to stop after the iteration it
    interrupts, with a checkpoint (an iteration cut in half cannot be saved, and the work since
    the last checkpoint, up to ``checkpoint_every`` iterations, would be lost); a second stops
    at once. Only the main thread may handle signals; elsewhere nothing changes."""

    def __init__(self):
        self.requested: str | None = None
        self._before: dict = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._before[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        tqdm.write("repsim: stopping after this iteration, with a checkpoint (again: stop at once)",
                   file=sys.stderr)

    def __exit__(self, *_exc) -> None:
        for sig, handler in self._before.items():
            signal.signal(sig, handler)


@dataclass
class RunState:
    """What a checkpoint carries besides weights and optimizer: provenance (devices, wall
    time, execution) and the training-metric sums since the last log line, so that a resumed
    run logs exactly what an unbroken one would."""
    execution: str
    devices: list[str]
    wall_time_s: float = 0.0
    window: list = field(default_factory=lambda: [0.0, 0.0, 0])  # loss sum, accuracy sum, iterations

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint, fresh: "RunState") -> "RunState":
        """The state a checkpoint saved, this process's device added to its list. A run that has
        only run on this kind of device keeps its execution, and ends with the numbers an unbroken
        run would; one that has run elsewhere (a GPU's run finished on a CPU) has numbers that
        differ at float precision anyway, so it takes the execution that is fast here (on a CPU
        the loop can be several times faster than a GPU's vmap: :func:`resolve_execution`)."""
        extra = ckpt.extra
        before = extra.get("devices", [])
        here = torch.device(fresh.devices[0]).type
        moved = any(torch.device(d).type != here for d in before)
        return cls(execution=fresh.execution if moved else extra.get("execution", fresh.execution),
                   devices=list(dict.fromkeys(before + fresh.devices)),
                   wall_time_s=extra.get("wall_time_s", 0.0),
                   window=list(extra.get("window", [0.0, 0.0, 0])))

    def add(self, loss: float, accuracy: float) -> None:
        self.window = [self.window[0] + loss, self.window[1] + accuracy, self.window[2] + 1]

    def take_window(self) -> dict:
        """The mean training loss and accuracy since the last log line; the sums restart."""
        loss, acc, n = self.window
        self.window = [0.0, 0.0, 0]
        return {"train_loss": loss / n, "train_accuracy": 100 * acc / n}

    def to_metadata(self) -> dict:
        return {"devices": self.devices, "wall_time_s": self.wall_time_s, "window": list(self.window),
                "execution": self.execution}


def resolve_execution(config: Config, dev: torch.device) -> str:
    """How a meta-batch runs: ``loop`` (task after task) or ``vmap`` (all tasks as one batch);
    ``compiled`` (the loop, each task's meta-gradient compiled) is only ever asked for, since its
    compilation costs minutes before the first iteration.

    ``auto`` follows side-by-side timings on real Omniglot tasks (``repsim bench train
    --ways W --shots K``; the numbers are in docs/BENCHMARKS.md). On a GPU vmap wins in every
    Omniglot setting: one batched kernel replaces a launch per task. On a CPU vmap wins while
    tasks are small, where it fuses many tiny kernels, and loses once a task's own work
    dominates; the crossover lies between 20-way 1-shot's 40 images and 20-way 5-shot's 200,
    not measured in between, so we switch at 100. Head-only inner loops switch earlier (32),
    because the loop runs the body once per task while vmap runs it at every step.
    """
    if config.execution != "auto":
        return config.execution
    if dev.type == "cuda":
        return "vmap"
    task_images = config.ways * (config.shots + config.queries)
    head_only = config.algorithm == "anil"
    return "loop" if task_images >= (32 if head_only else 100) else "vmap"


def _meta_gradient(model, params, config: Config, split, it: int, dev, execution: str):
    """Backpropagate the loss of iteration ``it`` into ``params``' ``.grad``, the meta-batch run
    as ``execution`` says; return the loss and accuracy. Its tasks (or its batch) depend on
    (seed, it) only."""
    if config.algorithm == "multiclass":
        loss, acc = _multiclass_loss(model, params, split, config, it, dev)
        loss.backward()
        return loss.item(), acc
    first = (it - 1) * config.meta_batch_size
    tasks = [training_task(split, config, first + j).to(dev) for j in range(config.meta_batch_size)]
    objective = training_objective(config, model)
    if execution == "vmap":
        loss, acc = meta_loss_vmap(model, params, batch_tasks(tasks), objective)
        loss.backward()
        return loss.item(), acc
    if execution == "compiled":
        return meta_backward_compiled(model, params, tasks, objective)
    return meta_backward(model, params, tasks, objective)


def training_task(split, config: Config, index: int):
    """Training task number ``index`` of the run (``index`` counts tasks from the start)."""
    return task_from_draw(split, training_draw(split.num_classes, split.examples_per_class,
                                               split.rotate, config, index), config.shots)


def training_draw(num_classes: int, examples_per_class: int, rotate: bool, config: Config,
                  index: int) -> TaskDraw:
    """Which images make training task ``index`` of a split of that size (its classes,
    examples and rotations, :class:`TaskDraw`).

    With a ``task_pool`` of N, task ``index`` is pool task ``index mod N`` (its classes and
    examples), as Finn et al.'s code cycles a list of 200,000 tasks; its rotations are drawn
    afresh, as theirs are each time a task comes round.
    """
    size = (num_classes, examples_per_class, rotate, config.ways, config.shots + config.queries)
    if not config.task_pool:
        return draw_task(*size, task_generator(config.seed, index))
    return draw_task(*size, task_generator(config.seed, index % config.task_pool),
                     rotation_generator=task_generator(config.seed, index, stream=1))


def _multiclass_loss(model, params, split, config: Config, it: int, dev):
    """Standard supervised learning over all (class, rotation) pairs of the training split."""
    g = task_generator(config.seed, it)
    n = config.batch_size
    classes = torch.randint(split.num_classes, (n,), generator=g)
    examples = torch.randint(split.examples_per_class, (n,), generator=g)
    rotations = (torch.randint(4, (n,), generator=g) if split.rotate
                 else torch.zeros(n, dtype=torch.long))
    images = split.images[classes, examples].float() / 255
    images = rotate_images(images, rotations)
    labels = classes * (4 if split.rotate else 1) + rotations
    logits = model(images.to(dev))
    labels = labels.to(dev)
    return F.cross_entropy(logits, labels), (logits.argmax(1) == labels).float().mean().item()


def saved_config(out: Path) -> dict | None:
    """The config a run folder was started with (None if it has none); keys added to Config
    since the run started take their defaults, so older runs still compare equal."""
    config_file = Path(out) / "config.yaml"
    if not config_file.is_file():
        return None
    return from_saved(yaml.safe_load(config_file.read_text()), str(config_file)).resolved().to_dict()


def prepare_run_folder(out: Path, config: Config, resume: bool) -> tuple[int, Checkpoint | None]:
    """Check the folder against ``resume``; return the iteration to start from and the
    checkpoint to start from (None at iteration 0)."""
    for stale in [*out.glob(".*.tmp"), *(out / "checkpoints").glob(".*.tmp")]:
        stale.unlink(missing_ok=True)  # left by a write that was killed before its rename
    existing = sorted((out / "checkpoints").glob("iter-*.safetensors"))
    config_file = out / "config.yaml"
    if resume:
        if not config_file.is_file():
            raise RepsimError(f"nothing to resume in {out}: no config.yaml; start the run without --resume")
        saved = saved_config(out)
        planned = config.to_dict()
        changed = _changed_keys(saved, planned)
        learned = [k for k in changed if k not in SCHEDULE_KEYS]
        if learned:
            raise RepsimError(f"--resume with a different config than {config_file} "
                              f"(changed: {', '.join(learned)}): use the same config (only "
                              f"{', '.join(SCHEDULE_KEYS)} may change) or a new --out")
        start, ckpt = _resume_point(existing, config)
        if start > config.iterations:
            raise RepsimError(f"{out} is already at iteration {start}, past iterations: {config.iterations}: "
                              f"give at least --set iterations={start} to resume it")
        final = out / "model.safetensors"
        if changed and start == config.iterations and iteration_of(final) == start:
            raise RepsimError(f"{out} is finished (iteration {start}): --set {', '.join(changed)} would change "
                              f"its config.yaml but not its checkpoints; train it longer with --set "
                              f"iterations=N (N > {start}), or leave it as it is")
        if changed:  # the run's plan is now the new schedule
            tqdm.write("repsim: resuming with " + ", ".join(f"{k} {saved[k]} -> {planned[k]}" for k in changed),
                       file=sys.stderr)
            atomic_write_text(config_file, yaml.safe_dump(planned, sort_keys=True))
        if start < config.iterations and iteration_of(final) == start:
            # a finished run trained on: its final model is its checkpoint at `start` (kept), and
            # must not pass for the final model of the longer run while that one trains
            final.unlink()
        return start, ckpt
    if existing or (out / "model.safetensors").exists():
        raise RepsimError(f"{out} already holds a run: add --resume to continue it, or choose another --out")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RepsimError(f"{out} is {'a file' if not out.is_dir() else 'not empty'}: choose a new "
                          f"--out folder for the run (or add --resume to continue a run in it)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(config_file, yaml.safe_dump(config.to_dict(), sort_keys=True))
    except OSError as e:
        raise RepsimError(f"cannot write to {out} ({e.strerror}): choose a writable --out") from None
    return 0, None


def _changed_keys(before: dict, after: dict) -> list[str]:
    """The config keys whose values differ between two configs' dicts, sorted."""
    return sorted(k for k in after if before.get(k) != after[k])


def iteration_of(path: Path) -> int | None:
    """The iteration of the checkpoint at ``path``; None if there is none, or it is unreadable."""
    try:
        return load_checkpoint(path, weights=False).iteration if path.is_file() else None
    except RepsimError:
        return None


def _resume_point(existing: list[Path], config: Config) -> tuple[int, Checkpoint | None]:
    """The latest readable checkpoint of the run. One cut short (a crash while the disk was
    full, say) is skipped with a warning; its iterations are trained again."""
    for path in reversed(existing):
        try:
            ckpt = load_checkpoint(path, with_optimizer=True)
        except RepsimError as e:
            tqdm.write(f"repsim: warning: {e}; resuming from the checkpoint before it", file=sys.stderr)
            continue
        changed = [k for k in _changed_keys(ckpt.config.to_dict(), config.to_dict()) if k not in SCHEDULE_KEYS]
        if changed:
            raise RepsimError(f"{path} is not a checkpoint of this run (its config differs: "
                              f"{', '.join(changed)}): move it out of the run folder to resume from the one before")
        return ckpt.iteration, ckpt
    return 0, None


def save_run(path: Path, config, params, optimizer: dict[str, torch.Tensor], it, out: Path,
             state: RunState) -> None:
    """Checkpoint a run at iteration ``it``: weights, Adam's state (:func:`optimizer_tensors`),
    the last metrics line and the run's provenance."""
    last_metrics = _read_last_metrics(out / "metrics.jsonl")
    save_checkpoint(path, Checkpoint(config, {n: p.detach().cpu() for n, p in params.items()}, it,
                                     last_metrics, {k: v.cpu() for k, v in optimizer.items()},
                                     state.to_metadata()))


def optimizer_tensors(optimizer, params) -> dict[str, torch.Tensor]:
    state = optimizer.state_dict()["state"]
    out = {}
    for i, name in enumerate(params):
        for key, value in state.get(i, {}).items():
            out[f"{name}/{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return out


def load_optimizer(optimizer, params, tensors: dict[str, torch.Tensor]) -> None:
    state = optimizer.state_dict()
    per_param: dict[int, dict] = {}
    for i, name in enumerate(params):
        entries = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.split("/", 1)[0] == name}
        if entries:
            per_param[i] = {k: v.to(params[name].device) if k != "step" else v for k, v in entries.items()}
    state["state"] = per_param
    optimizer.load_state_dict(state)


def append_jsonl(path: Path, record: dict) -> None:
    try:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:  # a full disk: the run stops with its last checkpoint, which --resume takes
        raise RepsimError(f"cannot write {path} ({e.strerror}): free space on its disk, then continue the "
                          f"run with --resume") from None


def _read_last_metrics(path: Path) -> dict:
    if not path.is_file():
        return {}
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    return json.loads(lines[-1]) if lines else {}


def truncate_metrics(path: Path, iteration: int) -> None:
    """Drop lines logged after the checkpoint we resume from, so the log matches an unbroken run."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break  # a line cut short by the interruption
        if record.get("iteration", 0) <= iteration:
            kept.append(line)
    atomic_write_text(path, "".join(k + "\n" for k in kept))
