"""Inner loop and meta-objective of MAML, first-order MAML, ANIL and BOIL.

Everything here is functional: parameters live in a dict ``{name: tensor}`` and the model is
run with ``torch.func.functional_call``, so the inner loop never mutates a module. The
algorithms differ only in *which* parameters the inner loop adapts:

==========  ==========================  =================================
algorithm   inner loop adapts           meta-gradient through inner loop
==========  ==========================  =================================
maml        body and head               second order
fomaml      body and head               first order (inner grads detached)
anil        head only                   second order
boil        body only                   second order
==========  ==========================  =================================

Multiclass pretraining and multitask training have no inner loop at training time; at test
time they (like ANIL) adapt a fresh head.

The loss a step descends is a convention (:func:`task_loss`): PyTorch code takes the mean
cross-entropy over the support set; Finn et al.'s TensorFlow MAML sums it and divides by the
shots, which makes every step ``ways`` times larger for the same learning rate.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from repsim.model import HEAD_PREFIX, Conv4, is_head, norm_param_names, split_body_head
from repsim.names import LOSSES

Params = dict[str, torch.Tensor]



def task_loss(logits: torch.Tensor, y: torch.Tensor, kind: str = "mean",
              shots: int | float | None = None) -> torch.Tensor:
    """Cross-entropy of one task's labelled points, reduced by convention ``kind``:

        mean:           L = 1/n  sum_i CE_i                    (PyTorch code)
        sum_div_shots:  L = 1/K  sum_i CE_i  = n/K * mean      (Finn et al.: ``xent`` / K,
                                                                summed by ``tf.gradients``)

    K is the task's shots per class (``shots``; by default n / ways, the support set's), so on
    a support set of N classes x K shots ``sum_div_shots`` is N times the mean, and so is
    every inner step taken on it.
    """
    if kind == "mean":
        return F.cross_entropy(logits, y)
    if kind == "sum_div_shots":
        k = y.shape[-1] / logits.shape[-1] if shots is None else shots
        return F.cross_entropy(logits, y, reduction="sum") / k
    raise ValueError(f"unknown loss {kind!r}: choose one of {', '.join(LOSSES)}")


@dataclass(frozen=True)
class InnerLoop:
    """One inner loop: ``steps`` SGD steps of size ``lr`` on the support loss ``loss``, adapting
    the parameters ``names`` (the others keep their meta-learned values)."""
    names: tuple[str, ...]
    lr: float
    steps: int
    loss: str = "mean"

    def __post_init__(self):
        object.__setattr__(self, "names", tuple(self.names))
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}: choose one of {', '.join(LOSSES)}")

    def but(self, **changes) -> "InnerLoop":
        """The same inner loop with some fields changed (fewer names when freezing, other steps)."""
        return replace(self, **changes)


def inner_loop_names(algorithm: str, model: nn.Module, *, adapt_batchnorm: bool = True) -> list[str]:
    """The parameters the inner loop adapts for ``algorithm`` (at training and test time).

    ``adapt_batchnorm=False`` keeps normalisation layers' weight and bias out of the inner
    loop, so that the outer loop alone learns them: the convention of Finn et al.'s TensorFlow
    MAML, whose BatchNorm variables were not among the fast weights.
    """
    body, head = split_body_head(model)
    if algorithm in ("maml", "fomaml"):
        names = body + head
    elif algorithm == "boil":
        names = body
    else:
        names = head  # anil, and the no-inner-loop regimes, which adapt a fresh head at test time
    if not adapt_batchnorm:
        norms = set(norm_param_names(model))
        names = [n for n in names if n not in norms]
    return names


def own_inner_loop(config, model: nn.Module, steps: int | None = None) -> InnerLoop:
    """The inner loop a checkpoint was trained with, as run at test time: its parameters
    (MAML: everything, ANIL: the head, BOIL: the body; BatchNorm as ``adapt_batchnorm``
    says), its step size and support loss, and ``steps`` steps (default: the config's
    test-time steps). Every analysis starts from this one, so conventions apply everywhere."""
    names = inner_loop_names(config.algorithm, model, adapt_batchnorm=config.adapt_batchnorm)
    return InnerLoop(names, config.inner_lr,
                     config.inner_steps_test if steps is None else steps, config.inner_loss)


@dataclass(frozen=True)
class MetaObjective:
    """What a meta-training step minimises: each task's query loss (of kind ``outer_loss``,
    whose K is the support set's shots, as in Finn et al.'s code) after the ``inner`` loop on
    its support set, differentiated through the inner loop (``second_order``) or with the inner
    gradients taken as constants (first order)."""
    inner: InnerLoop
    second_order: bool = True
    outer_loss: str = "mean"

    @classmethod
    def of(cls, algorithm: str, model: nn.Module, lr: float, steps: int, *,
           adapt_batchnorm: bool = True, inner_loss: str = "mean", outer_loss: str = "mean") -> "MetaObjective":
        """``algorithm``'s objective (the table above): which parameters adapt, and its order."""
        names = inner_loop_names(algorithm, model, adapt_batchnorm=adapt_batchnorm)
        return cls(InnerLoop(names, lr, steps, inner_loss), algorithm != "fomaml", outer_loss)


def training_objective(config, model: nn.Module) -> MetaObjective:
    """The objective a run's config trains: its algorithm, step size, training inner steps and
    loss conventions. Multitask training has no inner loop: one shared head learns every task."""
    steps = 0 if config.algorithm == "multitask" else config.inner_steps
    return MetaObjective.of(config.algorithm, model, config.inner_lr, steps,
                            adapt_batchnorm=config.adapt_batchnorm, inner_loss=config.inner_loss,
                            outer_loss=config.outer_loss)


def sgd_step(params: Params, grads: Params, lr: float) -> Params:
    """The inner loop's update rule, the one every inner loop here takes:

        theta[n] <- theta[n] - lr * g[n]   for n in grads (the others unchanged).
    """
    return {**params, **{n: params[n] - lr * g for n, g in grads.items()}}


def head_input(model: nn.Module, params: Params, x: torch.Tensor, start: int = 0) -> torch.Tensor:
    """The body's output on ``x``: what the module named ``head`` receives (``start`` = k:
    ``x`` is conv{k}'s output, :func:`block_outputs`).

    Captured with a forward pre-hook so that any model whose last layer is called ``head``
    works, not just conv4.
    """
    captured = []

    def grab(_module, args):
        captured.append(args[0])

    handle = model.head.register_forward_pre_hook(grab)
    try:
        functional_call(model, params, (x,), {"start": start} if start else {})
    finally:
        handle.remove()
    return captured[0]


def head_logits(model: nn.Module, params: Params, features: torch.Tensor) -> torch.Tensor:
    """The head, with the head's part of ``params``, applied to features (:func:`head_input`'s)."""
    head = {n[len(HEAD_PREFIX):]: p for n, p in params.items() if is_head(n)}
    return functional_call(model.head, head, (features,))


def frozen_prefix(model: nn.Module, names) -> int:
    """How many leading blocks an inner loop adapting ``names`` leaves frozen and may start
    after (``Conv4.forward``'s ``start``): conv4's, unless an input hook would see activations
    as images; 0 for any other model, which is always run whole."""
    if isinstance(model, Conv4) and not model._forward_pre_hooks:
        return model.frozen_blocks(names)
    return 0


def block_outputs(model: Conv4, params: Params, x: torch.Tensor, blocks: int) -> list[torch.Tensor]:
    """``[x, conv1(x), ..., conv{blocks}(...)]`` with ``params``: entry k is where an inner loop
    that leaves conv1..conv{k} frozen starts (:func:`adapt`'s ``start``), for its support set and
    its queries alike. Several such loops on one task share these passes."""
    outputs = [x]
    for k in range(blocks):
        outputs.append(functional_call(model, params, (outputs[-1],), {"start": k, "stop": k + 1}))
    return outputs


def shared_blocks(model: nn.Module, params: Params, task, loops: dict[str, InnerLoop]):
    """What several inner loops on one task share: each loop's first adapted block
    (``starts``, by label, :func:`frozen_prefix`) and the task's support and query images run
    once through the leading blocks that the loops leave frozen (:func:`block_outputs`, with
    ``params``, no gradient). Loop ``label`` adapts from ``support[starts[label]]`` and scores
    ``query[starts[label]]``, both with ``start=starts[label]``."""
    starts = {label: frozen_prefix(model, inner.names) for label, inner in loops.items()}
    with torch.no_grad():
        support, query = (block_outputs(model, params, x, max(starts.values()))
                          for x in (task.support_x, task.query_x))
    return starts, support, query


def adapt(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, inner: InnerLoop, *,
          create_graph: bool = False, start: int = 0) -> Params:
    """The ``inner`` loop on the support set (x, y): ``inner.steps`` :func:`sgd_step` steps of
    size ``inner.lr`` on its :func:`task_loss` of kind ``inner.loss``, for ``inner.names`` only.

    With ``create_graph`` the returned parameters are differentiable functions of ``params``
    (second-order meta-gradient); without it the inner gradients are constants (first order).
    What the adapted parameters cannot change is computed once, not at every step: the body's
    output when only the head adapts (ANIL, frozen bodies, fresh heads), the leading blocks
    that the loop leaves frozen (conv4, :func:`frozen_prefix`). ``start`` = k says that ``x``
    is already conv{k}'s output (:func:`block_outputs`), for callers that share a task's frozen
    blocks among several inner loops.
    """
    names = list(inner.names)
    if inner.steps == 0 or not names:
        return dict(params)
    if all(is_head(n) for n in names) and not start:
        x = head_input(model, params, x)

        def forward(p, h):
            return head_logits(model, p, h)
    else:
        frozen = frozen_prefix(model, names)
        if frozen < start:
            raise ValueError(f"x is conv{start}'s output, but the inner loop adapts conv{frozen + 1}")
        if frozen > start:
            x = functional_call(model, params, (x,), {"start": start, "stop": frozen})

        def forward(p, h):
            return functional_call(model, p, (h,), {"start": frozen} if frozen else {})
    fast = dict(params)
    for _ in range(inner.steps):
        support_loss = task_loss(forward(fast, x), y, inner.loss)
        grads = torch.autograd.grad(support_loss, [fast[n] for n in names], create_graph=create_graph)
        fast = sgd_step(fast, dict(zip(names, grads)), inner.lr)
    return fast


@dataclass
class TaskResult:
    loss: torch.Tensor   # query loss after adaptation (differentiable for meta-training)
    accuracy: float      # query accuracy after adaptation


def adapt_and_score(model: nn.Module, params: Params, task, inner: InnerLoop, *,
                    create_graph: bool = False, outer_loss: str = "mean") -> TaskResult:
    """Adapt on the task's support set, then score on its query set (loss of kind
    ``outer_loss``, whose K is the support set's shots, as in Finn et al.'s code)."""
    fast = adapt(model, params, task.support_x, task.support_y, inner, create_graph=create_graph)
    if all(is_head(n) for n in inner.names):
        # ANIL-style: the body is unchanged, so the query's body pass needs no head twice.
        logits = head_logits(model, fast, head_input(model, fast, task.query_x))
    else:
        logits = functional_call(model, fast, (task.query_x,))
    shots = task.support_y.shape[-1] / logits.shape[-1]
    loss = task_loss(logits, task.query_y, outer_loss, shots)
    accuracy = (logits.argmax(1) == task.query_y).float().mean().item()
    return TaskResult(loss, accuracy)


def _adapted_tasks(model: nn.Module, params: Params, tasks, objective: MetaObjective):
    """Each task's inner loop and query score, one task at a time (a generator, so that a
    caller can free a task's graph before the next is built)."""
    for t in tasks:
        yield adapt_and_score(model, params, t, objective.inner, create_graph=objective.second_order,
                              outer_loss=objective.outer_loss)


def meta_loss(model: nn.Module, params: Params, tasks, objective: MetaObjective) -> tuple[torch.Tensor, float]:
    """Mean query loss over a meta-batch after each task's inner loop, and mean accuracy.

    Backpropagating the loss gives the ``objective``'s meta-gradient with respect to ``params``.
    """
    results = list(_adapted_tasks(model, params, tasks, objective))
    loss = torch.stack([r.loss for r in results]).mean()
    return loss, sum(r.accuracy for r in results) / len(results)


def meta_backward(model: nn.Module, params: Params, tasks, objective: MetaObjective) -> tuple[float, float]:
    """Backpropagate :func:`meta_loss` task by task; return its mean query loss and accuracy.

    The same meta-gradient, accumulated into ``params``' ``.grad``, but only one task's
    second-order graph is alive at a time instead of the whole meta-batch's: a sixth of the
    memory, and faster on a CPU, where the larger graph's memory has to be mapped afresh at
    every iteration (docs/BENCHMARKS.md).
    """
    loss = accuracy = 0.0
    for r in _adapted_tasks(model, params, tasks, objective):
        (r.loss / len(tasks)).backward()
        loss, accuracy = loss + r.loss.item(), accuracy + r.accuracy
    return loss / len(tasks), accuracy / len(tasks)


def meta_backward_compiled(model: nn.Module, params: Params, tasks, objective: MetaObjective) -> tuple[float, float]:
    """:func:`meta_backward` with each task's meta-gradient compiled by ``torch.compile``.

    The task's query loss after its inner loop (:func:`_inner_loop`, torch.func) is
    differentiated by ``torch.func.grad`` and the whole (inner loop, query loss, meta-gradient)
    compiled as one graph, so Inductor fuses the second-order backward that eager autograd runs
    op by op. The first call compiles (minutes on a small CPU; docs/BENCHMARKS.md), the graph is
    kept per model and objective, and tasks of one shape reuse it. The same meta-gradient as
    :func:`meta_backward` to float rounding (tests/test_meta.py checks it in float64).
    """
    task_gradient = _compiled_task_gradient(model, objective)
    fixed = {n: p.detach() for n, p in params.items()}
    loss = accuracy = 0.0
    for t in tasks:
        grads, (task_loss_, task_accuracy) = task_gradient(fixed, t.support_x, t.support_y, t.query_x, t.query_y)
        for n, g in grads.items():
            g = g / len(tasks)
            params[n].grad = g if params[n].grad is None else params[n].grad + g
        loss, accuracy = loss + task_loss_.item(), accuracy + task_accuracy.item()
    return loss / len(tasks), accuracy / len(tasks)


_COMPILED: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def _compiled_task_gradient(model: nn.Module, objective: MetaObjective):
    """One task's (meta-gradient, (query loss, accuracy)), compiled once per model and objective."""
    from torch.func import grad

    def query_loss(params, support_x, support_y, query_x, query_y):
        loss, accuracy = _task_query_loss(model, params, objective, support_x, support_y, query_x, query_y)
        return loss, (loss.detach(), accuracy)

    by_objective = _COMPILED.setdefault(model, {})
    if objective not in by_objective:
        # Inductor's channels-last layout change costs more than it saves on these small convs
        # (docs/BENCHMARKS.md)
        by_objective[objective] = torch.compile(grad(query_loss, has_aux=True), dynamic=False,
                                                options={"layout_optimization": False})
    return by_objective[objective]


def meta_loss_vmap(model: nn.Module, params: Params, tasks, objective: MetaObjective) -> tuple[torch.Tensor, float]:
    """Same as :func:`meta_loss`, with the meta-batch run as one batched computation.

    ``tasks`` is a batched task (leading task dimension). torch.func.vmap turns per-task
    parameters into grouped convolutions: slower than the loop on a small CPU, faster on a
    GPU, where one large kernel beats many small ones.
    """
    losses, accs = _meta_batch(model, params, tasks.support_x, tasks.support_y, tasks.query_x,
                               tasks.query_y, objective)
    return losses.mean(), accs.mean().item()


def meta_loss_runs(model: nn.Module, stacked: Params, support_x, support_y, query_x, query_y,
                   objective: MetaObjective) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`meta_loss_vmap` of R runs at once: ``stacked`` holds every parameter with a
    leading run dimension (R, ...), the tasks have shape (R, meta-batch, ...). Returns each
    run's meta-loss and query accuracy, both of shape (R,), as tensors (no host sync).

    Run r's loss depends on run r's parameters alone, so backpropagating the sum of the R
    losses gives every run its own meta-gradient (repsim.batched trains several seeds so).
    """
    from torch.func import vmap

    def one_run(params, sx, sy, qx, qy):
        losses, accs = _meta_batch(model, params, sx, sy, qx, qy, objective)
        return losses.mean(), accs.mean()

    return vmap(one_run)(stacked, support_x, support_y, query_x, query_y)


def _inner_loop(model, params: Params, objective: MetaObjective, support_x, support_y) -> Params:
    """One task's inner loop written with torch.func.grad, so that it can run under vmap: the
    loop of :func:`adapt` (the whole model at every step); returns the adapted parameters."""
    from torch.func import grad

    inner = objective.inner

    def support_loss(adapted, fixed, x, y):
        return task_loss(functional_call(model, {**fixed, **adapted}, (x,)), y, inner.loss)

    adapted = {n: params[n] for n in inner.names}
    fixed = {n: p for n, p in params.items() if n not in adapted}
    for _ in range(inner.steps if inner.names else 0):
        g = grad(support_loss)(adapted, fixed, support_x, support_y)
        if not objective.second_order:
            g = {n: v.detach() for n, v in g.items()}
        adapted = sgd_step(adapted, g, inner.lr)
    return {**fixed, **adapted}


def _meta_batch(model, params, support_x, support_y, query_x, query_y, objective: MetaObjective):
    """Every task's query loss and accuracy after its inner loop, the tasks as one vmap."""
    from torch.func import vmap

    def one_task(sx, sy, qx, qy):
        return _task_query_loss(model, params, objective, sx, sy, qx, qy)

    return vmap(one_task)(support_x, support_y, query_x, query_y)


def _task_query_loss(model, params: Params, objective: MetaObjective, support_x, support_y, query_x, query_y):
    """One task's query loss (of kind ``outer_loss``, K the support set's shots) and accuracy after
    its inner loop (:func:`_inner_loop`), as tensors: what vmap and the compiled step both run."""
    logits = functional_call(model, _inner_loop(model, params, objective, support_x, support_y), (query_x,))
    loss = task_loss(logits, query_y, objective.outer_loss, support_y.shape[-1] / logits.shape[-1])
    return loss, (logits.argmax(-1) == query_y).float().mean()


def vmap_scores(model: nn.Module, params: Params, tasks, inner: InnerLoop) -> tuple[torch.Tensor, torch.Tensor]:
    """Each task's query loss (mean cross-entropy) and accuracy after the test-time ``inner``
    loop (first order), the tasks (a batched task) as one vmap: what :func:`adapt_and_score`
    gives task by task."""
    return _meta_batch(model, params, tasks.support_x, tasks.support_y, tasks.query_x, tasks.query_y,
                       MetaObjective(inner, second_order=False))
