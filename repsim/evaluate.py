"""Scoring a model on a fixed list of test tasks: mean accuracy with a 95% confidence interval.

Every method and every ablation is scored on the same tasks (a TaskList is fixed by its seed),
so differences between them are not differences between task draws. These are the scoring
primitives; a checkpoint file is scored through a study (:func:`repsim.study.evaluate_checkpoint`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from tqdm import tqdm

from repsim.data.episodes import batch_tasks
from repsim.errors import RepsimError, not_finite
from repsim.meta import InnerLoop, adapt, adapt_and_score, head_input, shared_blocks
from repsim.model import HEAD_PREFIX, is_head
from repsim.names import META_ALGORITHMS
from repsim.statistics import ci95
from repsim.threads import map_tasks

Params = dict[str, torch.Tensor]


@dataclass
class Score:
    mean: float                # mean accuracy over tasks, in percent
    ci95: float                # half-width of the 95% t-interval over tasks, in percent
    tasks: int
    per_task: np.ndarray       # accuracy of every task, in [0, 1]

    def __str__(self) -> str:
        return f"{self.mean:.2f} +- {self.ci95:.2f}% (95% CI, {self.tasks} tasks)"


def mean_ci(per_task) -> Score:
    """Mean accuracy over tasks and its 95% interval (:func:`repsim.statistics.ci95`)."""
    acc = np.asarray(per_task, dtype=np.float64)
    if acc.size < 2:
        raise RepsimError(f"a confidence interval needs at least 2 tasks, got {acc.size}: "
                          "use --tasks 2 or more (the paper uses 600)")
    return Score(100 * acc.mean(), 100 * ci95(acc), acc.size, acc)


def resolve_device(device: str = "auto") -> torch.device:
    """The torch device for ``device`` (auto: a GPU when there is one), checked to exist."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise RepsimError(f"unknown device {device!r}: use auto, cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RepsimError(f"device {device!r} asked for but no CUDA GPU is visible: use --device cpu or auto")
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise RepsimError(f"device {device!r} does not exist: this machine has "
                          f"{torch.cuda.device_count()} GPU(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if dev.type == "cuda":
        # For the whole process, on purpose: plain float32, as on the CPU and in Finn et al.'s
        # code (cuDNN would otherwise run convolutions in TF32, 10-bit mantissas, on Ampere and
        # later), and cuDNN's deterministic algorithms, towards the same numbers from the same
        # seed on the same GPU (not yet checked run against run on a GPU).
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return dev


def fresh_head(model: nn.Module, params: Params, ways: int) -> Params:
    """Replace the head by a zero-initialised one with ``ways`` outputs.

    Used for networks trained without a ``ways``-sized head (multiclass pretraining,
    random features) and for the zeroed-head ablation. Zero is the natural start for a head
    learned from a handful of examples: every class starts equally likely.
    """
    weight = params[HEAD_PREFIX + "weight"]
    out = {n: p for n, p in params.items() if not is_head(n)}
    out[HEAD_PREFIX + "weight"] = weight.new_zeros(ways, weight.shape[1])
    if HEAD_PREFIX + "bias" in params:
        out[HEAD_PREFIX + "bias"] = weight.new_zeros(ways)
    return out


def nil_scores(support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor,
               temperature: float = 1.0) -> torch.Tensor:
    """NIL's classifier on penultimate features: a query's score for class c is

        sum_j a(q, s_j) [y_j = c],   a(q, s_j) = softmax_j cos(f(q), f(s_j)) / T

    cosine similarities weighting the support labels, as in Matching Networks (Raghu et al.
    2020, section 5: T = 1). For 1-shot tasks this is the nearest support point by cosine.
    """
    cos = F.normalize(query, dim=1) @ F.normalize(support, dim=1).T
    ways = int(support_y.max()) + 1
    return (cos / temperature).softmax(dim=1) @ F.one_hot(support_y, ways).to(cos.dtype)


def nil_logits(model: nn.Module, params: Params, task) -> torch.Tensor:
    """NIL testing: no head, no inner loop; :func:`nil_scores` on the body's features."""
    return nil_scores(head_input(model, params, task.support_x), task.support_y,
                      head_input(model, params, task.query_x))


def score_tasks(model: nn.Module, params: Params, tasks, *, inner: InnerLoop | None,
                device: torch.device, nil: bool = False, progress: bool = True,
                desc: str = "evaluating") -> Score:
    """Run the ``inner`` loop on each task's support set (or use NIL, or no adaptation when
    ``inner`` is None), and score its queries (tasks run as :func:`repsim.threads.map_tasks` says)."""
    params = {n: p.detach().to(device) for n, p in params.items()}
    inner = InnerLoop((), 0.0, 0) if inner is None else inner
    for n in inner.names:
        params[n].requires_grad_(True)

    def score(model: nn.Module, task, index: int) -> float:
        if nil:
            with torch.no_grad():
                logits = nil_logits(model, params, task)
            if not torch.isfinite(logits).all():
                raise not_finite(f"NIL's cosine similarities on test task {index}")
            return (logits.argmax(1) == task.query_y).float().mean().item()
        result = adapt_and_score(model, params, task, inner)
        # argmax of NaN logits is class 0: a diverged model would score exactly chance
        if not torch.isfinite(result.loss):
            raise not_finite(f"the query loss of test task {index} after {inner.steps} inner "
                             f"steps of size {inner.lr:g}")
        return result.accuracy

    return mean_ci(map_tasks(score, model, tasks, device=device, progress=progress, desc=desc))


def score_inner_loops(model: nn.Module, params: Params, tasks, loops: dict[str, InnerLoop], *,
                      device: torch.device, progress: bool = True, desc: str = "evaluating") -> dict[str, Score]:
    """:func:`score_tasks` for several inner loops on the same tasks (the freezing test's sets),
    with the same per-task accuracies, tasks outer and loops inner: each task's leading blocks run
    once with ``params`` (:func:`~repsim.meta.shared_blocks`), and every loop starts after the
    blocks it leaves frozen, for its support set and its queries alike. The queries' forward
    passes are most of a 5-way task's work, and each loop used to repeat their frozen part.
    Identical loops (ANIL's, whatever body layers are frozen) run once."""
    params = {n: p.detach().to(device) for n, p in params.items()}
    for inner in loops.values():
        for n in inner.names:
            params[n].requires_grad_(True)

    def score(model: nn.Module, task, index: int) -> dict[str, float]:
        starts, support, query = shared_blocks(model, params, task, loops)
        accuracy = {}
        for label, inner in loops.items():
            if inner not in accuracy:
                k = starts[label]
                fast = adapt(model, params, support[k], task.support_y, inner, start=k)
                with torch.no_grad():
                    logits = functional_call(model, fast, (query[k],), {"start": k} if k else {})
                if not torch.isfinite(logits).all():
                    raise not_finite(f"the query logits of test task {index} after {inner.steps} inner "
                                     f"steps of size {inner.lr:g} ({label})")
                accuracy[inner] = (logits.argmax(1) == task.query_y).float().mean().item()
        return {label: accuracy[inner] for label, inner in loops.items()}

    per_task = map_tasks(score, model, tasks, device=device, progress=progress, desc=desc)
    return {label: mean_ci([task[label] for task in per_task]) for label in loops}


def score_tasks_batched(model: nn.Module, params: Params, tasks, *, inner: InnerLoop | None,
                        device: torch.device, chunk: int = 100, progress: bool = True,
                        desc: str = "evaluating") -> Score:
    """:func:`score_tasks` with ``chunk`` tasks at a time run as one vmapped batch: the same
    inner loop and queries, each task's BatchNorm on its own batch, the same per-task
    accuracies (up to float rounding, which can only move an argmax that is a near tie).
    One large kernel instead of ``chunk`` small ones: faster on a GPU, and on a CPU for small
    tasks. No NIL (use score_tasks)."""
    from repsim.meta import vmap_scores

    params = {n: p.detach().to(device) for n, p in params.items()}
    inner = InnerLoop((), 0.0, 0) if inner is None else inner
    accuracies = []
    starts = range(0, len(tasks), chunk)
    for start in tqdm(starts, desc=desc, disable=not progress, leave=False):
        batch = batch_tasks([tasks[i] for i in range(start, min(start + chunk, len(tasks)))]).to(device)
        with torch.no_grad():
            losses, accs = vmap_scores(model, params, batch, inner)
        bad = (~torch.isfinite(losses)).nonzero()
        if len(bad):
            raise not_finite(f"the query loss of test task {start + int(bad[0])} after {inner.steps} inner "
                             f"steps of size {inner.lr:g}")
        accuracies.extend(accs.tolist())
    return mean_ci(accuracies)


def check_counts(*, tasks: int | None = None, queries: int | None = None,
                 inner_steps: int | None = None) -> None:
    """Refuse test protocols that cannot give a number: fewer than 2 tasks (no CI), no query
    points, a negative number of inner steps. None means "the default", always valid."""
    for flag, value, least in (("--tasks", tasks, 2), ("--queries", queries, 1),
                               ("--inner-steps", inner_steps, 0)):
        if value is not None and value < least:
            raise RepsimError(f"{flag} must be at least {least}, got {value}")


def test_time_params(model: nn.Module, params: Params, algorithm: str, ways: int) -> Params:
    """The starting point of test-time adaptation: regimes that learn no few-shot head
    (multiclass, multitask) get a fresh one; a meta-learned head is its own start."""
    if algorithm not in META_ALGORITHMS:
        return fresh_head(model, params, ways)
    return params
