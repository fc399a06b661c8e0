"""Runs trained together (repsim.batched) against the same runs trained one by one (repsim.train)."""

import json

import pytest
import torch

from repsim.batched import check_together, draw_iterations, gather_tasks, image_bank, train_runs
from repsim.checkpoint import load_checkpoint
from repsim.config import load_config
from repsim.data import load_splits
from repsim.data.episodes import task_from_draw
from repsim.errors import RepsimError
from repsim.evaluate import score_tasks, score_tasks_batched
from repsim.meta import own_inner_loop
from repsim.model import model_for
from repsim.train import train, training_draw

TINY = ["dataset=synthetic", "ways=3", "shots=1", "queries=2", "filters=8", "meta_batch_size=2",
        "iterations=6", "checkpoint_every=3", "eval_every=3", "eval_tasks=4", "task_pool=5"]


def tiny(*extra):
    return load_config(None, TINY + list(extra))


def _params(path):
    return load_checkpoint(path).params


def _close(a, b, tol=1e-5):
    """Equal weights, up to float rounding. Not the convolutions' biases: BatchNorm subtracts
    them, so their true meta-gradient is 0 and its rounding noise (1e-8 to 1e-6, different
    for a batched and a looped computation) is what Adam normalises into steps of +-lr; they
    do not change what the network computes."""
    return all(torch.allclose(a[n], b[n], rtol=tol, atol=tol) for n in a if not n.endswith("conv.bias"))


@pytest.mark.parametrize("algorithm", ["maml", "anil"])
def test_runs_trained_together_end_where_each_alone_does(tmp_path, algorithm):
    # three runs: two seeds, and seed 0 again with another head initialisation
    configs = [tiny(f"algorithm={algorithm}", "seed=0"), tiny(f"algorithm={algorithm}", "seed=1"),
               tiny(f"algorithm={algorithm}", "seed=0", "head_init=pytorch")]
    together = train_runs(configs, [tmp_path / f"together{r}" for r in range(3)], device="cpu", progress=False)
    for r, c in enumerate(configs):
        alone = train(c, tmp_path / f"alone{r}", device="cpu", progress=False)
        a, b = _params(together[r]), _params(alone)
        assert _close(a, b), f"run {r}"
        for other in range(3):  # and not like any other run
            if other != r:
                assert not _close(a, _params(together[other]))
        # the same log, validation included
        lines = [json.loads(x) for x in (tmp_path / f"together{r}" / "metrics.jsonl").read_text().splitlines()]
        alone_lines = [json.loads(x) for x in (tmp_path / f"alone{r}" / "metrics.jsonl").read_text().splitlines()]
        assert [x["iteration"] for x in lines] == [x["iteration"] for x in alone_lines] == [3, 6]
        for x, y in zip(lines, alone_lines):
            assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-4)
            assert x["val_accuracy"] == pytest.approx(y["val_accuracy"], abs=1e-6)


def test_a_batched_run_stopped_early_is_resumed_by_the_ordinary_trainer(tmp_path):
    configs = [tiny("seed=0"), tiny("seed=1")]
    outs = [tmp_path / "s0", tmp_path / "s1"]
    stopped = train_runs(configs, outs, device="cpu", progress=False, stop_after=4)
    assert [load_checkpoint(p).iteration for p in stopped] == [4, 4]
    assert not (outs[0] / "model.safetensors").exists()
    resumed = train(configs[1], outs[1], device="cpu", resume=True, progress=False)
    straight = train(configs[1], tmp_path / "straight", device="cpu", progress=False)
    assert _close(_params(resumed), _params(straight))
    # and both runs together, from where they stopped
    assert _close(_params(train_runs(configs[:1], outs[:1], device="cpu", resume=True, progress=False)[0]),
                  _params(train(configs[0], tmp_path / "straight0", device="cpu", progress=False)))


def test_a_run_folder_another_process_trains_into_is_refused_before_any_run_starts(tmp_path):
    import os

    from repsim.train import run_folder_lock
    configs = [tiny("seed=0"), tiny("seed=1")]
    outs = [tmp_path / "s0", tmp_path / "s1"]
    with run_folder_lock(outs[1]):  # held, as by `repsim train` still running
        with pytest.raises(RepsimError, match=rf"^process {os.getpid()} is training into {outs[1]}: wait"):
            train_runs(configs, outs, device="cpu", progress=False, stop_after=1)
    assert not outs[0].exists() and not outs[1].exists()  # neither run started
    assert [load_checkpoint(p).iteration for p in train_runs(configs, outs, device="cpu", progress=False,
                                                              stop_after=1)] == [1, 1]  # released


def test_a_time_limit_stops_with_a_checkpoint_that_resumes(tmp_path):
    configs = [tiny("seed=0"), tiny("seed=1")]
    outs = [tmp_path / "s0", tmp_path / "s1"]
    stopped = train_runs(configs, outs, device="cpu", progress=False, time_limit=0)
    assert [load_checkpoint(p).iteration for p in stopped] == [1, 1]
    finals = train_runs(configs, outs, device="cpu", progress=False, resume=True)
    assert _close(_params(finals[0]), _params(train(configs[0], tmp_path / "straight", device="cpu",
                                                    progress=False)))


def test_ctrl_c_stops_the_runs_after_the_iteration_with_checkpoints_that_resume(tmp_path, monkeypatch):
    import os
    import signal

    import repsim.batched as batched

    configs = [tiny("seed=0"), tiny("seed=1")]
    outs = [tmp_path / "s0", tmp_path / "s1"]
    call, calls = batched.BatchedStep.__call__, []

    def interrupted_in_the_second(self, *draw):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return call(self, *draw)

    monkeypatch.setattr(batched.BatchedStep, "__call__", interrupted_in_the_second)
    with pytest.raises(KeyboardInterrupt):
        train_runs(configs, outs, device="cpu", progress=False)
    assert [load_checkpoint(o / "checkpoints" / "iter-000002.safetensors").iteration for o in outs] == [2, 2]
    monkeypatch.setattr(batched.BatchedStep, "__call__", call)
    finals = train_runs(configs, outs, device="cpu", progress=False, resume=True)
    assert _close(_params(finals[1]), _params(train(configs[1], tmp_path / "straight", device="cpu",
                                                    progress=False)))


def test_the_image_bank_gathers_the_tasks_task_from_draw_builds():
    config = tiny("ways=4", "shots=2", "queries=3", "meta_batch_size=3")
    split = load_splits("synthetic", None, seed=0)["train"]
    sizes = (split.num_classes, split.examples_per_class, split.rotate)
    classes, rotations, examples = (torch.from_numpy(a) for a in draw_iterations(sizes, config, 5, 6))
    assert split.rotate and rotations.unique().numel() > 1  # rotations are exercised
    support, query = gather_tasks(image_bank(split, torch.device("cpu")), classes, rotations, examples, 2)
    for i, it in enumerate((5, 6)):
        for j in range(3):
            task = task_from_draw(split, training_draw(*sizes, config, (it - 1) * 3 + j), 2)
            assert torch.equal(support[i, j], task.support_x) and torch.equal(query[i, j], task.query_x)


def test_runs_that_differ_in_what_they_learn_are_refused():
    with pytest.raises(RepsimError, match="may differ only in seed, head_init, conv_init, not in inner_lr"):
        check_together([tiny(), tiny("inner_lr=0.1")])
    with pytest.raises(RepsimError, match="batched training covers maml"):
        check_together([tiny("algorithm=multiclass")])


def test_runs_at_different_iterations_are_refused(tmp_path):
    configs = [tiny("seed=0"), tiny("seed=1")]
    train(configs[0], tmp_path / "s0", device="cpu", progress=False, stop_after=3)
    train(configs[1], tmp_path / "s1", device="cpu", progress=False)
    with pytest.raises(RepsimError, match="different iterations"):
        train_runs(configs, [tmp_path / "s0", tmp_path / "s1"], device="cpu", resume=True, progress=False)


@pytest.mark.parametrize("algorithm", ["maml", "anil"])
def test_batched_scoring_gives_each_tasks_accuracy(algorithm):
    config = tiny(f"algorithm={algorithm}", "queries=5")
    split = load_splits("synthetic", None, seed=0)["test"]
    from repsim.data.episodes import TaskList
    tasks = TaskList(split, 3, 1, 5, 9, seed=3)
    torch.manual_seed(0)
    model = model_for(config).double()
    params = {n: p.detach() for n, p in model.named_parameters()}
    inner = own_inner_loop(config, model)
    tasks64 = [t for t in tasks]
    for t in tasks64:
        t.support_x, t.query_x = t.support_x.double(), t.query_x.double()
    one_by_one = score_tasks(model, params, tasks64, inner=inner, device=torch.device("cpu"), progress=False)
    batched = score_tasks_batched(model, params, tasks64, inner=inner, device=torch.device("cpu"),
                                  chunk=4, progress=False)
    assert batched.per_task.tolist() == one_by_one.per_task.tolist()
    assert len(set(batched.per_task.tolist())) > 1  # not all tasks alike
