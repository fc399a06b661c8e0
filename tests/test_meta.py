"""The inner loop and the meta-gradients, checked against a peer library and finite differences."""

import time
from unittest import mock

import higher
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from repsim.data.episodes import Task, batch_tasks
from repsim.errors import RepsimError
from repsim.meta import (
    InnerLoop,
    MetaObjective,
    adapt,
    block_outputs,
    inner_loop_names,
    meta_backward,
    meta_backward_compiled,
    meta_loss,
    meta_loss_runs,
    meta_loss_vmap,
)
from repsim.model import Conv4, norm_param_names, split_body_head


def _tasks(n_tasks=3, ways=5, shots=1, queries=2, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    tasks = []
    for _ in range(n_tasks):
        tasks.append(Task(
            support_x=torch.rand(ways * shots, 1, 28, 28, generator=g, dtype=dtype),
            support_y=torch.arange(ways).repeat(shots),
            query_x=torch.rand(ways * queries, 1, 28, 28, generator=g, dtype=dtype),
            query_y=torch.arange(ways).repeat(queries), classes=torch.arange(ways)))
    return tasks


@pytest.fixture
def model64():
    torch.manual_seed(0)
    return Conv4(1, 5, filters=8).double()


def _flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


def _meta_grad(model, tasks, algorithm, lr=0.4, steps=2, adapt_batchnorm=True):
    params = dict(model.named_parameters())
    loss, _ = meta_loss(model, params, tasks, MetaObjective.of(algorithm, model, lr, steps,
                                                               adapt_batchnorm=adapt_batchnorm))
    return _flat(torch.autograd.grad(loss, list(params.values())))


def _higher_grad(model, tasks, algorithm, lr=0.4, steps=2, adapt_batchnorm=True):
    """The same meta-gradient computed by the `higher` library (monkey-patched modules)."""
    names = set(inner_loop_names(algorithm, model, adapt_batchnorm=adapt_batchnorm))
    model.zero_grad()
    first_order = [torch.zeros_like(p) for p in model.parameters()]
    for task in tasks:
        inner_opt = torch.optim.SGD([p for n, p in model.named_parameters() if n in names], lr=lr)
        with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False,
                                  track_higher_grads=algorithm != "fomaml") as (fmodel, diffopt):
            for _ in range(steps):
                diffopt.step(F.cross_entropy(fmodel(task.support_x), task.support_y))
            query_loss = F.cross_entropy(fmodel(task.query_x), task.query_y) / len(tasks)
            if algorithm == "fomaml":  # higher's first order: gradient at the adapted weights
                for acc, g in zip(first_order, torch.autograd.grad(query_loss, list(fmodel.parameters()))):
                    acc += g
            else:
                query_loss.backward()
    if algorithm == "fomaml":
        return _flat(first_order)
    return _flat([p.grad if p.grad is not None else torch.zeros_like(p) for p in model.parameters()])


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "anil", "boil"])
def test_meta_gradient_matches_higher_in_float64(model64, algorithm):
    tasks = _tasks()
    ours = _meta_grad(model64, tasks, algorithm)
    peer = _higher_grad(model64, tasks, algorithm)
    assert _rel(ours, peer) < 1e-5


def test_batchnorm_outside_the_inner_loop(model64):
    """Finn et al.'s convention: the inner loop leaves BatchNorm alone, the outer loop learns it.
    The meta-gradient matches higher's with an inner optimiser over the other parameters."""
    bn = [f"conv{i}.bn.{w}" for i in range(1, 5) for w in ("weight", "bias")]
    assert sorted(norm_param_names(model64)) == sorted(bn)
    names = inner_loop_names("maml", model64, adapt_batchnorm=False)
    assert set(names) == {n for n, _ in model64.named_parameters()} - set(bn)
    task = _tasks(n_tasks=1)[0]
    params = dict(model64.named_parameters())
    fast = adapt(model64, params, task.support_x, task.support_y, InnerLoop(names, 0.4, 2))
    assert all(torch.equal(fast[n], params[n]) for n in bn)
    assert not torch.equal(fast["conv4.conv.weight"], params["conv4.conv.weight"])
    tasks = _tasks()
    ours = _meta_grad(model64, tasks, "maml", adapt_batchnorm=False)
    assert _rel(ours, _higher_grad(model64, tasks, "maml", adapt_batchnorm=False)) < 1e-5
    assert _rel(ours, _meta_grad(model64, tasks, "maml")) > 1e-3  # a different meta-gradient


def test_norm_params_of_a_user_model():
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    assert norm_param_names(model) == ["1.weight", "1.bias", "2.weight", "2.bias"]


def test_second_order_maml_matches_finite_differences(model64):
    tasks = _tasks(n_tasks=2)
    params = dict(model64.named_parameters())
    grad = _meta_grad(model64, tasks, "maml")
    g = torch.Generator().manual_seed(1)
    direction = {n: torch.randn(p.shape, generator=g, dtype=p.dtype) for n, p in params.items()}

    def loss_at(t):
        moved = {n: (p + t * direction[n]).detach().requires_grad_() for n, p in params.items()}
        return meta_loss(model64, moved, tasks, MetaObjective.of("maml", model64, 0.4, 2))[0].item()

    eps = 1e-7  # small enough not to cross ReLU kinks, large enough for float64 rounding
    numeric = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    analytic = (grad * _flat(direction.values())).sum().item()
    assert analytic == pytest.approx(numeric, rel=1e-4, abs=1e-7)


def test_first_order_differs_from_second_order(model64):
    tasks = _tasks()
    second, first = _meta_grad(model64, tasks, "maml"), _meta_grad(model64, tasks, "fomaml")
    assert _rel(first, second) > 1e-3


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "anil", "boil"])
def test_task_batched_execution_equals_the_loop(model64, algorithm):
    tasks = _tasks()
    params = dict(model64.named_parameters())
    objective = MetaObjective.of(algorithm, model64, 0.4, 2)
    loop = meta_loss(model64, params, tasks, objective)[0]
    batched = meta_loss_vmap(model64, params, batch_tasks(tasks), objective)[0]
    g_loop = _flat(torch.autograd.grad(loop, list(params.values())))
    g_vmap = _flat(torch.autograd.grad(batched, list(params.values())))
    assert loop.item() == pytest.approx(batched.item(), rel=1e-10)
    assert _rel(g_vmap, g_loop) < 1e-8


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "anil", "boil"])
def test_runs_batched_each_get_their_own_meta_gradient(algorithm):
    # three runs (different initial weights, different tasks) in one vmap over runs: each run's
    # loss and meta-gradient equal the task loop's on that run alone, in float64
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(Conv4(1, 5, filters=8).double())
    runs = [_tasks(seed=seed) for seed in range(3)]
    conventions = dict(adapt_batchnorm=False, inner_loss="sum_div_shots", outer_loss="sum_div_shots")
    names = [n for n, _ in models[0].named_parameters()]
    stacked = {n: torch.stack([dict(m.named_parameters())[n].detach() for m in models]).requires_grad_()
               for n in names}
    batched = [batch_tasks(tasks) for tasks in runs]
    losses, accs = meta_loss_runs(models[0], stacked, *(torch.stack([getattr(b, f) for b in batched])
                                                        for f in ("support_x", "support_y", "query_x", "query_y")),
                                  MetaObjective.of(algorithm, models[0], 0.4, 2, **conventions))
    assert losses.shape == accs.shape == (3,)
    grads = torch.autograd.grad(losses.sum(), [stacked[n] for n in names])
    for r, (model, tasks) in enumerate(zip(models, runs)):
        params = dict(model.named_parameters())
        loss, acc = meta_loss(model, params, tasks, MetaObjective.of(algorithm, model, 0.4, 2, **conventions))
        own = _flat(torch.autograd.grad(loss, list(params.values())))
        assert losses[r].item() == pytest.approx(loss.item(), rel=1e-10)
        assert accs[r].item() == pytest.approx(acc)
        assert _rel(_flat([g[r] for g in grads]), own) < 1e-8


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "anil"])
def test_task_by_task_backward_accumulates_the_same_meta_gradient(model64, algorithm):
    # what training runs in loop execution: the meta-gradient one task at a time
    tasks = _tasks()
    params = dict(model64.named_parameters())
    model64.zero_grad()
    objective = MetaObjective.of(algorithm, model64, 0.4, 2)
    loss, accuracy = meta_backward(model64, params, tasks, objective)
    accumulated = _flat([p.grad for p in params.values()])
    whole, whole_accuracy = meta_loss(model64, params, tasks, objective)
    assert loss == pytest.approx(whole.item(), rel=1e-12) and accuracy == whole_accuracy
    assert _rel(accumulated, _higher_grad(model64, tasks, algorithm)) < 1e-8


def test_anil_inner_loop_leaves_body_unchanged_and_boil_leaves_head(model64):
    task = _tasks(1)[0]
    params = dict(model64.named_parameters())
    body, head = split_body_head(model64)
    for algorithm, frozen, moved in (("anil", body, head), ("boil", head, body)):
        fast = adapt(model64, params, task.support_x, task.support_y,
                     InnerLoop(inner_loop_names(algorithm, model64), 0.4, 3))
        for n in frozen:
            assert torch.equal(fast[n], params[n]), f"{algorithm} changed {n}"
        assert any(not torch.equal(fast[n], params[n]) for n in moved)


class TinyNet(nn.Module):
    """Not conv4: the meta-learning code must only need a body and a module named head."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 16), nn.Tanh())
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        return self.head(self.encoder(x))


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "anil", "boil"])
def test_any_model_with_a_head_works(algorithm):
    torch.manual_seed(0)
    model = TinyNet().double()
    tasks = _tasks()
    assert _rel(_meta_grad(model, tasks, algorithm), _higher_grad(model, tasks, algorithm)) < 1e-5


def test_model_without_head_is_refused():
    with pytest.raises(RepsimError, match="named 'head"):
        split_body_head(nn.Sequential(nn.Linear(2, 2)))


def _frozen(params, k):
    """The names an inner loop adapts with conv1..conv{k} frozen."""
    return [n for n in params if not any(n.startswith(f"conv{i}.") for i in range(1, k + 1))]


@pytest.mark.parametrize("frozen", [1, 2, 3, 4])
def test_a_frozen_prefix_computed_once_adapts_as_the_whole_network_does(model64, frozen):
    # the inner loop with conv1..conv{frozen} left frozen runs only the blocks after them, from
    # their output computed once (by adapt itself, or handed in as block_outputs' entry); the
    # adapted weights are those of the loop through the whole network
    task = _tasks(1, queries=3)[0]
    params = dict(model64.named_parameters())
    inner = InnerLoop(_frozen(params, frozen), 0.4, 3, "sum_div_shots")
    fast = adapt(model64, params, task.support_x, task.support_y, inner)
    entered = adapt(model64, params, block_outputs(model64, params, task.support_x, frozen)[frozen],
                    task.support_y, inner, start=frozen)
    model64.register_forward_pre_hook(lambda module, args: None)  # a hook: the shortcut is not taken
    whole = adapt(model64, params, task.support_x, task.support_y, inner)
    assert model64.frozen_blocks(inner.names) == frozen
    for n in params:
        assert torch.allclose(fast[n], whole[n], rtol=1e-12, atol=1e-12), n
        assert torch.allclose(entered[n], whole[n], rtol=1e-12, atol=1e-12), n
    assert not torch.equal(fast["head.weight"], params["head.weight"])  # it did adapt


@pytest.mark.parametrize("hooked", [False, True])
def test_inner_loops_sharing_a_tasks_frozen_blocks_score_as_each_loop_alone(model64, hooked):
    # the freezing test's sets, tasks outer and loops inner with the frozen blocks run once per task
    # (for supports and queries), against score_tasks run once per loop through the whole network.
    # With an input hook the blocks cannot be entered part-way: every loop runs whole.
    from repsim.evaluate import score_inner_loops, score_tasks

    if hooked:
        model64.register_forward_pre_hook(lambda module, args: None)
    tasks = _tasks(6, queries=12)
    params = dict(model64.named_parameters())
    loops = {k: InnerLoop(_frozen(params, k), 0.4, 3, "sum_div_shots") for k in range(5)}
    shared = score_inner_loops(model64, params, tasks, loops, device=torch.device("cpu"), progress=False)
    alone = {k: score_tasks(model64, params, tasks, inner=loop, device=torch.device("cpu"), progress=False)
             for k, loop in loops.items()}
    for k in loops:
        assert list(shared[k].per_task) == list(alone[k].per_task), k
    assert len({tuple(s.per_task) for s in alone.values()}) > 2  # the loops score differently


def test_identical_inner_loops_among_the_sets_run_once_per_task(model64):
    # ANIL's frozen sets all adapt the head alone: one inner loop per task, whatever the labels say
    from repsim import evaluate

    tasks = _tasks(4, queries=3)
    params = dict(model64.named_parameters())
    head = InnerLoop(["head.weight", "head.bias"], 0.4, 3, "sum_div_shots")
    loops = {"none": head, "conv1": head, "conv1-conv2": head, "all": InnerLoop(list(params), 0.4, 3)}
    with mock.patch.object(evaluate, "adapt", wraps=evaluate.adapt) as adapt_calls:
        scores = evaluate.score_inner_loops(model64, params, tasks, loops, device=torch.device("cpu"),
                                            progress=False)
    assert adapt_calls.call_count == 2 * len(tasks)
    alone = evaluate.score_tasks(model64, params, tasks, inner=head, device=torch.device("cpu"), progress=False)
    for label in ("none", "conv1", "conv1-conv2"):
        assert list(scores[label].per_task) == list(alone.per_task)


def _adapted_logits(model, params, inner):
    def measure(model, task, index):
        fast = adapt(model, params, task.support_x, task.support_y, inner)
        return index, torch.get_num_threads(), functional_call(model, fast, (task.query_x,)).detach()
    return measure


def test_tasks_on_several_threads_give_one_threads_numbers_in_task_order(model64):
    # map_tasks runs CPU tasks on as many Python threads as torch has threads, each task on one
    # torch thread and a model copy of its own: the numbers are those of one thread, bit for bit
    from repsim.threads import map_tasks

    tasks = _tasks(12, queries=4)
    params = {n: p.detach().requires_grad_() for n, p in model64.named_parameters()}
    measure = _adapted_logits(model64, params, InnerLoop(list(params), 0.4, 3, "sum_div_shots"))
    cpu = torch.device("cpu")
    one = map_tasks(measure, model64, tasks, device=cpu, progress=False)
    torch.set_num_threads(3)
    try:
        three = map_tasks(measure, model64, tasks, device=cpu, progress=False)
        assert torch.get_num_threads() == 3  # given back
    finally:
        torch.set_num_threads(1)
    assert [i for i, _, _ in three] == list(range(len(tasks)))
    assert {threads for _, threads, _ in one + three} == {1}
    for (_, _, a), (_, _, b) in zip(one, three):
        assert torch.equal(a, b)
    assert not torch.equal(one[0][2], one[1][2])


def test_an_error_in_a_task_stops_the_threads_and_gives_torchs_threads_back(model64):
    from repsim.threads import map_tasks

    ran = []

    def measure(model, task, index):
        ran.append(index)
        if index == 2:
            raise RepsimError("task 2 is bad")
        time.sleep(0.01)
        return index

    torch.set_num_threads(2)
    try:
        with pytest.raises(RepsimError, match="task 2 is bad"):
            map_tasks(measure, model64, _tasks(200, queries=1), device=torch.device("cpu"), progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    assert len(ran) < 50  # the tasks not yet started were dropped


def test_compiled_meta_gradient_equals_the_eager_one_in_float64():
    # execution: compiled runs each task's inner loop and meta-gradient as one Inductor graph; the
    # eager task-by-task backward (itself checked against higher above) is the truth. A 2-block
    # network and one inner step (second order already) keep the compilation short.
    torch.manual_seed(0)
    model = Conv4(1, 5, filters=4, blocks=2).double()
    tasks = _tasks(n_tasks=2)
    params = dict(model.named_parameters())
    objective = MetaObjective.of("maml", model, 0.4, 1, inner_loss="sum_div_shots")
    loss, accuracy = meta_backward(model, params, tasks, objective)
    eager = _flat([p.grad for p in params.values()])
    model.zero_grad()
    compiled_loss, compiled_accuracy = meta_backward_compiled(model, params, tasks, objective)
    assert compiled_loss == pytest.approx(loss, rel=1e-12) and compiled_accuracy == accuracy
    assert _rel(_flat([p.grad for p in params.values()]), eager) < 1e-10
    # and it is the second-order gradient, not the first-order one that drops the inner loop's Hessian
    first_order = MetaObjective.of("fomaml", model, 0.4, 1, inner_loss="sum_div_shots")
    model.zero_grad()
    meta_backward(model, params, tasks, first_order)
    assert _rel(_flat([p.grad for p in params.values()]), eager) > 1e-3
