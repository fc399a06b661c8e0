"""The freezing test taken apart (measures.freezing_decomposed, statistics.decompose_freezing),
checked on a network whose frozen features are perfect by construction, and against the
freezing analysis it extends."""

import numpy as np
import pytest
import torch
from torch import nn

from repsim import measures
from repsim.checkpoint import Checkpoint
from repsim.config import load_config
from repsim.data.episodes import Split, TaskList
from repsim.statistics import decompose_freezing
from repsim.study import Study
from repsim.train import train

WAYS = 5


class PerfectBody(nn.Module):
    """A body whose features are the class itself: each class's images carry one faint pixel
    at the class's own place, and the body reads those places (a fixed 0/1 matrix), so the
    penultimate features of class c are s u + v e_c: perfectly separable, whatever the head,
    yet nearly collinear, since every image also carries one bright pixel s u that all share
    (as the meta-learned features of a frozen MAML body are: mean cosine 0.97)."""

    def __init__(self, classes: int):
        super().__init__()
        self.body = nn.Linear(28 * 28, classes + 1, bias=False)
        with torch.no_grad():
            self.body.weight.zero_()
            for c in range(classes + 1):  # the last one reads the shared pixel
                self.body.weight[c, c] = 1.0
        self.head = nn.Linear(classes + 1, WAYS)

    def forward(self, x):
        return self.head(self.body(x.flatten(1)))


def _perfect_tasks(classes=12, examples=6, num_tasks=8):
    images = torch.zeros(classes, examples, 1, 28, 28, dtype=torch.uint8)
    for c in range(classes):
        images[c, :, 0, 0, c] = torch.randint(30, 60, (examples,), generator=torch.Generator().manual_seed(c))
    images[:, :, 0, 0, classes] = 255
    split = Split(images, [f"c{c}" for c in range(classes)], rotate=False, name="perfect")
    return TaskList(split, WAYS, 1, 3, num_tasks, seed=0)


def _decomposed(inner_lr, head_scale, steps=10, algorithm="anil"):
    torch.manual_seed(0)
    model = PerfectBody(12)
    with torch.no_grad():
        model.head.weight.mul_(head_scale)
    ckpt = Checkpoint.from_module(model, "perfect", algorithm=algorithm, dataset="synthetic", ways=WAYS, shots=1,
                                  inner_lr=inner_lr, inner_steps_test=steps, seed=0)
    study = Study(dataset="synthetic", ways=WAYS, shots=1, queries=3, num_tasks=8, device="cpu",
                  progress=False, _tasks=_perfect_tasks())
    rows = measures.freezing_decomposed(study, ckpt)
    return rows, decompose_freezing(rows)


def _value(summary, frozen, quantity):
    return summary[(summary.frozen == frozen) & (summary.quantity == quantity)]["mean"].item()


@pytest.mark.parametrize("algorithm, lr", [("maml", 0.05), ("anil", 0.05), ("anil", 50.0)])
def test_a_perfect_frozen_body_costs_nothing_in_features_whatever_the_inner_steps_do(algorithm, lr):
    # a head fitted to the perfect features classifies every query; prototypes too
    rows, summary = _decomposed(inner_lr=lr, head_scale=10, algorithm=algorithm)
    assert (rows["fitted"] == 1).all() and (rows["prototypes"] == 1).all()
    assert (rows["fitted_meta"] == 1).all()
    assert _value(summary, "body", "cost: features") <= 0


def test_too_large_a_head_step_is_flagged_and_charged_to_head_optimisation():
    # only the head adapts (ANIL): lr x curvature > 2 makes its steps unstable, they fail the
    # support set, and the gap to the fitted head is head optimisation; a small step is stable
    _, unstable = _decomposed(inner_lr=5.0, head_scale=1)
    assert _value(unstable, "body", "lr x curvature") > 2
    assert _value(unstable, "body", "tasks with lr x curvature > 2") == 100
    assert _value(unstable, "body", "support accuracy") < 100
    assert _value(unstable, "body", "cost: head optimisation") > 20
    _, stable = _decomposed(inner_lr=0.5, head_scale=1, steps=100)
    assert _value(stable, "body", "lr x curvature") < 2
    assert _value(stable, "body", "support accuracy") == 100
    assert _value(stable, "body", "paper protocol") == 100
    assert _value(stable, "body", "cost: head optimisation") == 0


def test_the_costs_add_up_and_are_paired_over_the_same_tasks():
    rows, summary = _decomposed(inner_lr=5.0, head_scale=1)
    for frozen in ("none", "body"):
        total, feat, head = (_value(summary, frozen, q) for q in
                             ("cost: total", "cost: features", "cost: head optimisation"))
        assert total == pytest.approx(feat + head)
    full = rows[rows.frozen == "none"].set_index("task")["paper"]
    body = rows[rows.frozen == "body"].set_index("task")
    expected = 100 * (full - body["fitted"])
    got = summary[(summary.frozen == "body") & (summary.quantity == "cost: features")]
    assert got["mean"].item() == pytest.approx(expected.mean())
    assert got["ci95"].item() == pytest.approx(1.96 * expected.std(ddof=1) / np.sqrt(8), rel=0.2)


def test_the_paper_protocol_column_is_the_freezing_analysis(tmp_path):
    # a second implementation of the protocol: score_tasks through Study.score
    settings = ["dataset=synthetic", "ways=5", "shots=1", "queries=3", "filters=8", "meta_batch_size=2",
                "iterations=4", "checkpoint_every=4", "eval_every=4", "eval_tasks=4"]
    path = train(load_config(None, settings), tmp_path / "maml", device="cpu", progress=False)
    study = Study(dataset="synthetic", ways=5, shots=1, queries=5, num_tasks=6, device="cpu", progress=False)
    rows = measures.freezing_decomposed(study, path)
    plain = measures.freezing(study, path)
    for r in plain.itertuples():
        assert 100 * rows[rows.frozen == r.frozen]["paper"].mean() == pytest.approx(r.accuracy, abs=1e-5)
