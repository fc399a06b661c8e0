"""The training conventions (repsim.config): each one against an independent truth, the named
sets, and that a convention reaches every inner loop (training, evaluation, analyses)."""

import io
import math

import higher
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import stats

from repsim.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from repsim.config import CONVENTION_KEYS, convention_set, load_config
from repsim.data.episodes import Task, batch_tasks
from repsim.errors import RepsimError
from repsim.meta import InnerLoop, MetaObjective, adapt, inner_loop_names, meta_loss, meta_loss_vmap, task_loss
from repsim.model import Conv4, ConvBlock, model_for, same_padding
from repsim.study import evaluate_checkpoint
from repsim.train import train, training_task

FINN = dict(padding="same", bn_eps=1e-3, bn_scale=False, conv_init="xavier_uniform", head_init="normal")
TINY = ["dataset=synthetic", "ways=5", "shots=1", "filters=16", "meta_batch_size=2",
        "iterations=2", "checkpoint_every=2", "eval_every=2", "eval_tasks=4"]


def _tasks(n_tasks=2, ways=5, shots=2, queries=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [Task(support_x=torch.rand(ways * shots, 1, 28, 28, generator=g, dtype=torch.float64),
                 support_y=torch.arange(ways).repeat_interleave(shots),
                 query_x=torch.rand(ways * queries, 1, 28, 28, generator=g, dtype=torch.float64),
                 query_y=torch.arange(ways).repeat_interleave(queries), classes=torch.arange(ways))
            for _ in range(n_tasks)]


def _finn_model(filters=8, ways=5):
    torch.manual_seed(0)
    return Conv4(1, ways, filters=filters, **FINN).double()


# the support loss -------------------------------------------------------------------------
def test_summed_support_loss_is_ways_times_the_mean():
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(20, 5, generator=g, dtype=torch.float64), torch.arange(5).repeat(4)
    assert task_loss(logits, y, "sum_div_shots") == pytest.approx(5 * task_loss(logits, y, "mean").item(), rel=1e-12)


def test_summed_inner_step_equals_the_mean_step_with_lr_times_ways():
    model, task = _finn_model(), _tasks()[0]
    params = dict(model.named_parameters())
    names = inner_loop_names("maml", model, adapt_batchnorm=False)
    summed = adapt(model, params, task.support_x, task.support_y, InnerLoop(names, 0.4, 2, "sum_div_shots"))
    mean = adapt(model, params, task.support_x, task.support_y, InnerLoop(names, 0.4 * 5, 2, "mean"))
    for n in names:
        assert torch.allclose(summed[n], mean[n], rtol=1e-10, atol=1e-12), n
    assert not torch.allclose(summed["head.weight"], params["head.weight"])


def test_summed_head_step_has_the_closed_form_of_finns_xent():
    """A head step on sum_i CE_i / K is W - lr (P - Y)^T F / K (softmax regression's gradient)."""
    model, task = _finn_model(), _tasks(shots=3)[0]
    params = {n: p.detach().requires_grad_(n.startswith("head.")) for n, p in model.named_parameters()}
    fast = adapt(model, params, task.support_x, task.support_y,
                 InnerLoop(["head.weight", "head.bias"], 0.1, 1, "sum_div_shots"))
    with torch.no_grad():
        features = model.features(task.support_x)
        residual = (features @ params["head.weight"].T + params["head.bias"]).softmax(1) - F.one_hot(task.support_y, 5)
        assert torch.allclose(fast["head.weight"], params["head.weight"] - 0.1 * residual.T @ features / 3)
        assert torch.allclose(fast["head.bias"], params["head.bias"] - 0.1 * residual.sum(0) / 3)


# the meta-gradient under Finn's set, against a peer library -------------------------------
def _higher_finn_grad(model, tasks, algorithm, lr=0.4, steps=2):
    names = set(inner_loop_names(algorithm, model, adapt_batchnorm=False))
    model.zero_grad()
    for task in tasks:
        shots = len(task.support_y) // 5
        inner_opt = torch.optim.SGD([p for n, p in model.named_parameters() if n in names], lr=lr)
        with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False) as (fmodel, diffopt):
            for _ in range(steps):  # Finn et al.'s xent: per-point cross-entropy / K, summed
                diffopt.step(F.cross_entropy(fmodel(task.support_x), task.support_y, reduction="sum") / shots)
            query = F.cross_entropy(fmodel(task.query_x), task.query_y, reduction="sum") / shots
            (query / len(tasks)).backward()  # reduce_sum over the meta-batch / meta_batch_size
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                      for p in model.parameters()])


@pytest.mark.parametrize("algorithm", ["maml", "anil"])
def test_finn_meta_gradient_matches_higher_in_float64(algorithm):
    model, tasks = _finn_model(), _tasks()
    params = dict(model.named_parameters())
    objective = MetaObjective.of(algorithm, model, 0.4, 2, adapt_batchnorm=False,
                                 inner_loss="sum_div_shots", outer_loss="sum_div_shots")
    loss, _ = meta_loss(model, params, tasks, objective)
    ours = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(params.values()))])
    peer = _higher_finn_grad(model, tasks, algorithm)
    assert ((ours - peer).norm() / peer.norm()).item() < 1e-5
    batched, _ = meta_loss_vmap(model, params, batch_tasks(tasks), objective)
    assert batched.item() == pytest.approx(loss.item(), rel=1e-9)


# the model ------------------------------------------------------------------------------
def test_initialisations_have_the_stated_statistics():
    torch.manual_seed(0)
    finn = Conv4(1, 20, filters=64, **FINN)
    head = finn.head.weight.detach().numpy().ravel()  # N(0, 1): tf.random_normal
    assert stats.kstest(head, "norm").pvalue > 1e-3 and not finn.head.bias.detach().any()
    conv = finn.conv2.conv.weight.detach().numpy().ravel()  # Xavier uniform, fan 9 * 64 each way
    bound = math.sqrt(6 / (9 * 64 + 9 * 64))
    assert np.abs(conv).max() <= bound and stats.kstest(conv, "uniform", (-bound, 2 * bound)).pvalue > 1e-3
    assert not any(getattr(finn, f"conv{i}").conv.bias.detach().any() for i in range(1, 5))
    torch.manual_seed(0)
    plain = Conv4(1, 20, filters=64)  # PyTorch's Linear default: U(-1/sqrt(64), 1/sqrt(64))
    weights = plain.head.weight.detach().numpy().ravel()
    assert stats.kstest(weights, "uniform", (-1 / 8, 2 / 8)).pvalue > 1e-3
    # the N(0, 1) head is about 14x the default's scale (std 1 against 1/8/sqrt(3))
    assert 12 < head.std() / weights.std() < 16


def test_batchnorm_without_scale_has_no_gamma_and_its_beta_stays_out_of_the_inner_loop():
    model, task = _finn_model(), _tasks()[0]
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.endswith("bn.weight") for n in names) and "conv1.bn.bias" in names
    assert model.conv1.bn.eps == 1e-3
    params = dict(model.named_parameters())
    fast = adapt(model, params, task.support_x, task.support_y,
                 InnerLoop(inner_loop_names("maml", model, adapt_batchnorm=False), 0.4, 3, "sum_div_shots"))
    assert all(fast[n] is params[n] for n in names if ".bn." in n)  # beta never moves
    assert not torch.equal(fast["conv1.conv.weight"], params["conv1.conv.weight"])
    loss, _ = meta_loss(model, params, [task], MetaObjective.of("maml", model, 0.4, 1, adapt_batchnorm=False,
                                                                 inner_loss="sum_div_shots",
                                                                 outer_loss="sum_div_shots"))
    assert torch.autograd.grad(loss, params["conv2.bn.bias"])[0].abs().sum() > 0  # the outer loop learns it
    # with no scale, each channel comes out with batch mean beta and variance var/(var+eps)
    x = torch.randn(50, 8, 5, 5, dtype=torch.float64)
    y = model.conv1.bn(x)
    var = x.var(dim=(0, 2, 3), unbiased=False)
    assert torch.allclose(y.var(dim=(0, 2, 3), unbiased=False), var / (var + 1e-3))


def test_same_padding_samples_the_pixels_tensorflow_samples():
    """A kernel with a single 1 in its top-left corner copies x[s*i + offset] to output i: TF's
    SAME (padding at the end) starts on pixel 0, symmetric padding one pixel before it."""
    assert [same_padding(n, 2) for n in (28, 14, 7, 4)] == [(0, 1), (0, 1), (1, 1), (0, 1)]
    assert same_padding(84, 1) == (1, 1)  # stride 1 (MiniImageNet): SAME is symmetric
    x = torch.randn(1, 1, 28, 28)
    for padding, expected in (("same", x[0, 0, 0::2, 0::2]),
                              ("symmetric", F.pad(x, (1, 0, 1, 0))[0, 0, 0:28:2, 0:28:2])):
        block = ConvBlock(1, 1, 2, False, padding=padding)
        with torch.no_grad():
            block.conv.weight.zero_()
            block.conv.weight[0, 0, 0, 0] = 1
            block.conv.bias.zero_()
        out = []
        block.conv.register_forward_hook(lambda _m, _i, o: out.append(o))
        block(x)
        assert torch.equal(out[0][0, 0], expected), padding
    sizes = []
    model = Conv4(1, 5, filters=4, padding="same")
    for i in range(1, 5):
        getattr(model, f"conv{i}").register_forward_hook(lambda _m, _i, o: sizes.append(o.shape[-1]))
    model(torch.randn(2, 1, 28, 28))
    assert sizes == [14, 7, 4, 2]  # ceil(size / 2), as TensorFlow's


# the data -------------------------------------------------------------------------------
def test_nearest_resize_is_what_pil_does_to_finns_one_bit_pngs():
    """Finn et al.'s resize_images.py asked for LANCZOS, which PIL ignores for mode-1 images."""
    from repsim.data.omniglot import _decode
    rng = np.random.default_rng(0)
    drawing = Image.fromarray(rng.random((105, 105)) > 0.3).convert("1")
    png = io.BytesIO()
    drawing.save(png, format="PNG")
    theirs = 255 - np.asarray(Image.open(io.BytesIO(png.getvalue())).resize((28, 28), Image.LANCZOS).convert("L"))
    ours = _decode(png.getvalue(), 28, "nearest")
    assert np.array_equal(ours, theirs) and set(np.unique(ours)) <= {0, 255}
    assert len(np.unique(_decode(png.getvalue(), 28, "lanczos"))) > 2  # antialiased grey levels


def test_task_pool_cycles_classes_and_examples_with_fresh_rotations():
    from repsim.data import load_splits
    split = load_splits("synthetic", seed=0)["train"]
    pooled = load_config(None, TINY + ["task_pool=3"])
    fresh = load_config(None, TINY + ["task_pool=0"])
    rotations_differ = False
    for i in range(3):
        a, b = training_task(split, pooled, i), training_task(split, pooled, i + 3)
        assert torch.equal(a.classes, b.classes) and torch.equal(a.examples, b.examples)
        rotations_differ |= not torch.equal(a.rotations, b.rotations)
        assert not torch.equal(training_task(split, fresh, i).classes, training_task(split, fresh, i + 3).classes)
    assert rotations_differ


# the named sets -------------------------------------------------------------------------
def test_named_sets_and_single_key_overrides():
    c = load_config(None, ["dataset=omniglot", "ways=20"])
    assert c.conventions == "finn"
    assert (c.inner_loss, c.head_init, c.conv_init, c.batchnorm_scale, c.batchnorm_eps) == \
        ("sum_div_shots", "normal", "xavier_uniform", False, 1e-3)
    assert (c.adapt_batchnorm, c.conv_padding, c.image_resize, c.task_pool) == (False, "same", "nearest", 200_000)
    assert (c.inner_lr, c.inner_steps_test, c.meta_grad_clip) == (0.1, 10, 0.0)
    assert load_config(None, ["dataset=omniglot", "ways=5"]).inner_steps_test == 10  # main.py: 10 for Omniglot
    mini = load_config(None, ["dataset=miniimagenet"])
    assert (mini.head_init, mini.meta_grad_clip, mini.queries, mini.test_queries) == ("xavier_uniform", 10.0, 15, 1)
    plain = load_config(None, ["dataset=omniglot", "conventions=pytorch"])
    assert (plain.inner_loss, plain.batchnorm_scale, plain.adapt_batchnorm, plain.inner_steps_test) == \
        ("mean", True, True, 3)
    mixed = load_config(None, ["dataset=omniglot", "inner_loss=mean", "batchnorm_eps=1e-5"])
    assert mixed.describe_conventions() == "finn conventions except inner_loss=mean, batchnorm_eps=1e-05"
    assert set(mixed.conventions_used()) == {"conventions", *CONVENTION_KEYS}
    with pytest.raises(RepsimError, match="unknown conventions 'tf': choose one of finn, pytorch"):
        load_config(None, ["conventions=tf"])
    with pytest.raises(RepsimError, match="unknown head_init 'zero': choose one of pytorch, normal, xavier_uniform"):
        load_config(None, ["head_init=zero"])


def test_checkpoint_from_before_the_conventions_loads_as_what_it_was_trained_with(tmp_path):
    import json

    from safetensors.torch import load_file, save
    config = load_config(None, TINY + ["conventions=pytorch"])
    path = save_checkpoint(tmp_path / "c.safetensors",
                           Checkpoint(config, dict(model_for(config).state_dict()), 1))
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["repsim"])
    for key in ("conventions",) + CONVENTION_KEYS:  # what a repsim of before wrote, but for
        if key not in ("adapt_batchnorm", "inner_steps_test"):  # these two, which it had
            del meta["config"][key]
    (tmp_path / "old.safetensors").write_bytes(save(load_file(str(path)), metadata={"repsim": json.dumps(meta)}))
    old = load_checkpoint(tmp_path / "old.safetensors")
    assert old.config == config and old.config.conventions == "pytorch"
    assert "conv1.bn.weight" in dict(old.build_model().named_parameters())
    record = evaluate_checkpoint(old, tasks=4, device="cpu", progress=False)
    assert record["conventions"] == "pytorch" and record["inner_loss"] == "mean"


# a convention reaches every inner loop --------------------------------------------------
def test_the_support_loss_convention_reaches_evaluation_and_analyses(tmp_path):
    """Weights tested with Finn's summed loss at lr must score as with the mean loss at
    lr x ways, in evaluate and in the analyses; the mean loss at lr must not."""
    from repsim import measures
    summed = load_config(None, TINY + ["inner_loss=sum_div_shots", "inner_lr=0.3"])
    final = train(summed, tmp_path / "run", device="cpu", progress=False)
    ckpt = load_checkpoint(final)
    variants = {}
    for name, changes in (("mean x ways", dict(inner_loss="mean", inner_lr=0.3 * 5)),
                          ("mean", dict(inner_loss="mean", inner_lr=0.3))):
        config = load_config(None, TINY + [f"{k}={v}" for k, v in changes.items()])
        variants[name] = save_checkpoint(tmp_path / f"{name}.safetensors", Checkpoint(config, ckpt.params, 2))

    def scores(path):
        acc = evaluate_checkpoint(path, tasks=20, queries=5, device="cpu", progress=False)["accuracy"]
        study = measures.Study.for_checkpoint(load_checkpoint(path), num_tasks=3, device="cpu", progress=False)
        sim = measures.layer_similarity(study, [path], layers=["conv4", "head"]).value.to_numpy()
        return acc, sim

    acc, sim = scores(final)
    same_acc, same_sim = scores(variants["mean x ways"])
    assert acc == same_acc and np.allclose(sim, same_sim, atol=1e-4)
    other_acc, other_sim = scores(variants["mean"])
    assert not np.allclose(sim, other_sim, atol=1e-3)


def test_meta_gradient_clipping_bounds_what_adam_sees(tmp_path):
    """tf.clip_by_value on the meta-gradient: Adam's first moment after one step is 0.1 g."""
    clip = 1e-5
    clipped = train(load_config(None, TINY + ["iterations=1", "checkpoint_every=1", "eval_every=1",
                                              f"meta_grad_clip={clip}"]), tmp_path / "a", device="cpu",
                    progress=False)
    free = train(load_config(None, TINY + ["iterations=1", "checkpoint_every=1", "eval_every=1"]),
                 tmp_path / "b", device="cpu", progress=False)

    def first_moment(path):
        state = load_checkpoint(path, with_optimizer=True).optimizer
        return max(t.abs().max().item() for n, t in state.items() if n.endswith("/exp_avg"))
    assert first_moment(clipped) <= 0.1 * clip * (1 + 1e-6)
    assert first_moment(free) > 100 * 0.1 * clip


# the convention study recipe ------------------------------------------------------------
def test_each_study_variant_switches_exactly_its_key(recipe):
    study = recipe("convention_study")
    table = study.variants("omniglot_20w1s")
    keys = study.switches("omniglot_20w1s")
    assert "inner_steps_test" not in keys and "inner_loss" in keys  # 20-way: 10 test steps in both sets
    assert len(table) == 2 + 2 * len(keys) + 1  # + Finn's set with his MiniImageNet head
    xavier = study.run_config("omniglot_20w1s", table["finn with head_init: xavier_uniform"], 0, 10)
    assert {k for k, v in xavier.conventions_used().items()
            if v != study.run_config("omniglot_20w1s", table["finn"], 0, 10).conventions_used()[k]} == {"head_init"}
    assert xavier.head_init == convention_set("finn", load_config(None, ["dataset=miniimagenet"]))["head_init"]
    base = {name: study.run_config("omniglot_20w1s", table[name], 0, 10).conventions_used()
            for name in ("pytorch", "finn")}
    for key in keys:
        plus = study.run_config("omniglot_20w1s", table[f"pytorch + {key}"], 0, 10).conventions_used()
        minus = study.run_config("omniglot_20w1s", table[f"finn - {key}"], 0, 10).conventions_used()
        assert {k for k in plus if plus[k] != base["pytorch"][k]} == {key}
        assert {k for k in minus if minus[k] != base["finn"][k]} == {key}
        assert plus[key] == base["finn"][key] and minus[key] == base["pytorch"][key]


def test_convention_study_end_to_end_shares_runs_that_differ_only_at_test_time(recipe, tmp_path, capsys):
    study = recipe("convention_study")
    args = ["train", "--setting", "synthetic_5w1s", "--runs", str(tmp_path / "runs"), "--iterations", "3",
            "--tasks", "6", "--similarity-tasks", "2", "--quiet",
            "--variants", "pytorch", "pytorch + inner_steps_test", "pytorch + inner_loss"]
    assert study.main(args) == 0
    folders = sorted(p for p in (tmp_path / "runs" / "synthetic_5w1s").iterdir() if p.is_dir())  # not the locks
    assert len(folders) == 2  # the test-time variant reused the pytorch run
    records = sorted((tmp_path / "runs").glob("*/*/study-*.json"))
    assert len(records) == 3
    capsys.readouterr()
    assert study.main(args) == 0  # measured before: nothing is trained or measured again
    assert "measuring" not in capsys.readouterr().out
    assert study.main(["report", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    runs = pd.read_csv(tmp_path / "out" / "convention_study_runs.csv").set_index("variant")
    assert np.allclose(runs.freezing_cost, runs.accuracy - runs.frozen_accuracy)
    assert runs.loc["pytorch", "accuracy"] != runs.loc["pytorch + inner_steps_test", "accuracy"] or \
        runs.loc["pytorch", "cca_conv4"] != runs.loc["pytorch + inner_steps_test", "cca_conv4"]
    assert (tmp_path / "out" / "figures" / "convention_study.png").stat().st_size > 10_000
    assert "| pytorch + inner_loss | 0 |" in (tmp_path / "out" / "report.md").read_text()
    # a variant's final models exported weights-only, for `repsim analyze` and for committing
    models = tmp_path / "models"
    assert study.main(["export", "--setting", "synthetic_5w1s", "--runs", str(tmp_path / "runs"), "--variant",
                       "pytorch + inner_loss", "--iterations", "3", "--out", str(models)]) == 0
    exported = load_checkpoint(models / "maml-s0" / "model.safetensors", with_optimizer=True)
    trained = load_checkpoint(next(f for f in folders if f.name != runs.loc["pytorch", "run"]) / "model.safetensors")
    assert exported.config == trained.config and exported.config.inner_loss == "sum_div_shots"
    assert all(torch.equal(exported.params[k], trained.params[k]) for k in trained.params)
    assert not exported.optimizer and exported.iteration == 3
    capsys.readouterr()
    assert study.main(["export", "--setting", "synthetic_5w1s", "--runs", str(tmp_path / "runs"), "--variant",
                       "pytorch", "--seeds", "1", "--iterations", "3", "--out", str(models)]) == 2
    assert "pytorch seed 1 has no final model" in capsys.readouterr().err
    assert not (models / "maml-s1").exists()
    # longer runs, measured at each intermediate checkpoint
    long = tmp_path / "long" / "synthetic"
    for conventions in ("finn", "pytorch"):
        train(load_config(None, TINY + [f"conventions={conventions}", "iterations=4", "checkpoint_every=1"]),
              long / conventions, device="cpu", progress=False)
    assert study.main(["trajectory", "--runs", str(long), "--tasks", "4", "--similarity-tasks", "2",
                       "--every", "2"]) == 0
    assert len(list(long.glob("*/trajectory-*.json"))) == 4  # 2 runs x checkpoints 2 and 4 of 1-4
    assert study.main(["report", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out"),
                       "--trajectory", str(long)]) == 0
    steps = pd.read_csv(tmp_path / "out" / "convention_trajectory.csv")
    assert sorted(zip(steps.run, steps.iteration)) == [("finn", 2), ("finn", 4), ("pytorch", 2), ("pytorch", 4)]
    assert "## Longer training" in (tmp_path / "out" / "report.md").read_text()


def test_finns_set_draws_his_head_only_for_the_few_shot_head():
    """His code has no multiclass or multitask pretraining: their class-per-output heads take
    PyTorch's default (N(0, 1) over 4,800 classes leaves multiclass training at chance)."""
    for algorithm, expected in (("maml", "normal"), ("anil", "normal"), ("multiclass", "pytorch"),
                                ("multitask", "pytorch")):
        c = load_config(None, ["dataset=omniglot", f"algorithm={algorithm}", "ways=20"])
        assert c.head_init == expected and c.describe_conventions() == "finn conventions"
    assert load_config(None, ["dataset=miniimagenet", "algorithm=maml"]).head_init == "xavier_uniform"
    explicit = load_config(None, ["dataset=omniglot", "algorithm=multiclass", "head_init=normal"])
    assert explicit.head_init == "normal" and "head_init=normal" in explicit.describe_conventions()
