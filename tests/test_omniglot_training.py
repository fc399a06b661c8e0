"""A short meta-training run on real Omniglot must learn: far above chance, better with time."""

import json

import pytest

from repsim.config import load_config
from repsim.study import evaluate_checkpoint
from repsim.train import train


@pytest.mark.slow
def test_short_maml_run_on_real_omniglot_beats_chance_and_improves(omniglot_root, omniglot_cache, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setenv("REPSIM_CACHE_DIR", str(omniglot_cache))
    # PyTorch's conventions learn fast from the start; Finn et al.'s N(0, 1) head and summed
    # support loss take hundreds of iterations to get going (analyses/convention_study.py)
    config = load_config(None, [
        "conventions=pytorch",
        "dataset=omniglot", f"data_root={omniglot_root}", "algorithm=maml", "ways=5", "shots=1",
        "queries=5", "filters=32", "meta_batch_size=8", "iterations=150", "eval_every=25",
        "checkpoint_every=150", "eval_tasks=100"])
    final = train(config, tmp_path / "run", device="cpu", progress=False)
    curve = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first, last = curve[0], curve[-1]
    assert (first["iteration"], last["iteration"]) == (25, 150)
    # improvement larger than both confidence intervals together
    assert last["val_accuracy"] - first["val_accuracy"] > first["val_ci95"] + last["val_ci95"]
    test = evaluate_checkpoint(final, tasks=200, device="cpu", progress=False)
    assert test["accuracy"] - test["ci95"] > 2 * 20  # 5-way chance is 20%


@pytest.mark.slow
def test_meta_learning_on_the_builtin_set_beats_random_features_widely(tmp_path):
    """The built-in data set must reward learned features: ANIL's NIL accuracy after a short
    run is far above the NIL accuracy of the same network at random initialisation."""
    from repsim import measures
    from repsim.checkpoint import load_checkpoint

    config = load_config(None, ["dataset=synthetic", "algorithm=anil", "ways=5", "shots=1",
                                "queries=5", "filters=32", "meta_batch_size=8", "iterations=150",
                                "eval_every=150", "checkpoint_every=150", "eval_tasks=10"])
    final = train(config, tmp_path / "run", device="cpu", progress=False)
    study = measures.Study.for_checkpoint(load_checkpoint(final), num_tasks=100, device="cpu",
                                          progress=False)
    table = measures.regimes(study, [final]).set_index("regime")
    learned, random = table.loc["anil"], table.loc["random features"]
    assert learned.accuracy - learned.ci95 > random.accuracy + random.ci95 + 15
