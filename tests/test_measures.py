"""Analyses and probing, checked against what the algorithms guarantee by construction."""

import dataclasses
import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from repsim import measures, statistics
from repsim.checkpoint import load_checkpoint
from repsim.config import load_config
from repsim.data.episodes import Task
from repsim.errors import RepsimError
from repsim.evaluate import nil_logits
from repsim.meta import InnerLoop
from repsim.probe import iter_probes, probe_task, save_probes
from repsim.runner import run_analysis
from repsim.statistics import through_training_body, through_training_summary
from repsim.study import Study, TestProtocol
from repsim.train import train

SETTINGS = ["dataset=synthetic", "ways=5", "shots=1", "queries=3", "filters=16",
            "meta_batch_size=4", "iterations=20", "checkpoint_every=10", "eval_every=10",
            "eval_tasks=4"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Small MAML, ANIL and BOIL runs, trained once for this module."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for algorithm in ("maml", "anil", "boil"):
        config = load_config(None, SETTINGS + [f"algorithm={algorithm}"])
        out[algorithm] = train(config, root / algorithm, device="cpu", progress=False)
    return out


def study_for(path, **kwargs):
    return Study.for_checkpoint(load_checkpoint(path), device="cpu", progress=False,
                                **{"num_tasks": 6, "queries": 5, **kwargs})


def test_anil_body_is_identical_before_and_after_the_inner_loop(runs):
    per_task = measures.layer_similarity(study_for(runs["anil"]), [runs["anil"]])
    body = per_task[per_task.layer != "head"]
    head = per_task[per_task.layer == "head"]
    assert body.value.min() > 1 - 1e-6  # ANIL's inner loop never touches the body
    assert head.value.max() < 1 - 1e-3  # ... but does change the head's outputs


def test_boil_head_weights_do_not_move_and_anil_body_weights_do_not(runs):
    for algorithm, still in (("boil", {"head"}), ("anil", {"conv1", "conv2", "conv3", "conv4"})):
        table = measures.weight_change(study_for(runs[algorithm]), [runs[algorithm]])
        moved = table.groupby("layer").value.max()
        for layer, value in moved.items():
            assert (value == 0) == (layer in still), (algorithm, layer, value)


def test_freezing_nothing_equals_plain_evaluation_and_freezing_all_anil_body_changes_nothing(runs):
    study = study_for(runs["maml"])
    table = measures.freezing(study, runs["maml"])
    assert list(table.frozen) == ["none", "conv1", "conv1,conv2", "conv1,conv2,conv3",
                                  "conv1,conv2,conv3,conv4"]
    m = study.load(runs["maml"])
    plain = study.score(m)
    assert table.accuracy.iloc[0] == pytest.approx(plain.mean)
    anil = measures.freezing(study_for(runs["anil"]), runs["anil"])
    assert anil.accuracy.nunique() == 1  # ANIL adapts only the head: freezing the body is a no-op


def test_every_step_probe_records_each_inner_step(runs):
    study = study_for(runs["maml"])
    m = study.load(runs["maml"])
    probe = probe_task(m.model, m.params, study.tasks[0], inner=InnerLoop(list(m.params), 0.4, 3),
                       layers=["conv1", "head"], every_step=True)
    assert len(probe.steps) == 4 and set(probe.after) == {"conv1", "head"}
    assert probe.steps[0]["conv1"].shape == (25, 16, 14, 14)
    assert not torch.equal(probe.steps[0]["head"], probe.steps[3]["head"])


def test_saved_probes_have_documented_layout(runs, tmp_path):
    study = study_for(runs["maml"], num_tasks=3)
    m = study.load(runs["maml"])
    probes = iter_probes(m.model, m.params, study.tasks, device=torch.device("cpu"),
                         inner=InnerLoop(list(m.params), 0.4, 1), layers=["conv4", "head"])
    folder = save_probes(tmp_path / "probes", probes, {"checkpoint": str(runs["maml"])})
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["tasks"] == 3
    from safetensors.torch import load_file
    tensors = load_file(str(folder / "task-0002.safetensors"))
    assert set(tensors) == {"step0/conv4", "step0/head", "step1/conv4", "step1/head"}


def test_nil_is_cosine_weighted_vote_of_support_labels():
    """With an identity body, NIL must pick the support example most aligned with the query."""
    class Identity(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Flatten()
            self.head = torch.nn.Linear(3, 2)

        def forward(self, x):
            return self.head(self.body(x))

    model = Identity()
    support = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    query = torch.tensor([[2.0, 0.1, 0], [0.1, 5.0, 0], [1.0, 1.2, 0]])
    task = Task(support, torch.tensor([0, 1]), query, torch.tensor([0, 1, 1]), torch.arange(2))
    logits = nil_logits(model, dict(model.named_parameters()), task)
    # Matching-Networks attention: softmax over the cosines (the support rows are unit vectors)
    expected = (torch.nn.functional.normalize(query, dim=1) @ support.T).softmax(dim=1)
    assert torch.allclose(logits, expected)
    assert logits.argmax(1).tolist() == [0, 1, 1]


def test_checkpoints_of_another_split_are_refused(runs, tmp_path):
    """A checkpoint trained on another class split may have seen the study's test classes."""
    from repsim.checkpoint import save_checkpoint
    other = load_checkpoint(runs["anil"])
    other.config.split_seed = 1
    path = save_checkpoint(tmp_path / "other.safetensors", other)
    with pytest.raises(RepsimError, match="split_seed=1.*one split together"):
        measures.accuracy(study_for(runs["maml"]), [runs["maml"], path])


def test_cross_similarity_of_a_model_with_itself_is_one(runs):
    table = measures.cross_similarity(study_for(runs["maml"]), [runs["maml"], runs["maml"]])
    assert table.value.min() > 1 - 1e-6 and set(table.pair) == {"MAML-MAML"}


def test_cross_analysis_writes_table_3_with_seeds_apart_and_the_report_only_reads_it(runs, tmp_path):
    """MAML and ANIL of seed 0 share their initial weights; a copy of the MAML with conv4's channels
    permuted, recorded as seed 1, is a model of another seed (other weights, the same function up
    to that permutation, to which CKA is blind: similar to MAML-s0 at exactly 1; the very same
    weights are refused as one model listed twice). Table 3's numbers, recomputed here from the
    per-task rows by hand, are what cross_pairs.csv holds."""
    from repsim.checkpoint import save_checkpoint
    from repsim.report import SAME_SEED, cross_summary_of, load_result
    other = load_checkpoint(runs["maml"])
    other.config.seed = 1
    order = torch.randperm(other.params["conv4.conv.bias"].numel(), generator=torch.Generator().manual_seed(0))
    for name in [n for n in other.params if n.startswith("conv4.")]:
        other.params[name] = other.params[name][order]
    other.params["head.weight"] = other.params["head.weight"][:, order]
    copy = save_checkpoint(tmp_path / "maml-seed1.safetensors", other)
    run_analysis("cross", [runs["maml"], runs["anil"], copy], tmp_path / "r",
                 TestProtocol(tasks=3, queries=5, device="cpu"), progress=False)
    rows = pd.read_csv(tmp_path / "r" / "cross_tasks.csv")
    assert {(a.split("-")[0], sa, b.split("-")[0], sb, same) for a, b, sa, sb, same in
            zip(rows.model_a, rows.model_b, rows.seed_a, rows.seed_b, rows.same_seed)} == {
        ("maml", 0, "anil", 0, True), ("maml", 0, "maml", 1, False), ("anil", 0, "maml", 1, False)}
    pairs = pd.read_csv(tmp_path / "r" / "cross_pairs.csv")
    for (pair, same, measure), g in rows.groupby(["pair", "same_seed", "measure"]):
        per_model_pair = [v.value.mean() for _, v in g.groupby(["model_a", "model_b"])]
        written = pairs[(pairs.pair == pair) & (pairs.same_seed == same) & (pairs.measure == measure)]
        assert written["mean"].item() == pytest.approx(sum(per_model_pair) / len(per_model_pair))
        assert written["model_pairs"].item() == len(per_model_pair)
    maml_maml = pairs[(pairs.pair == "MAML-MAML") & (pairs.measure == "cka")]
    assert maml_maml["mean"].item() == pytest.approx(1.0)
    summary = cross_summary_of(load_result(tmp_path / "r", "cross"))
    assert [(r["pair"], r["seeds"], len(r["models"])) for r in summary] == [
        ("MAML-MAML", "different", 1), ("ANIL-MAML", "different", 1), ("ANIL-MAML", SAME_SEED, 1)]


def test_unknown_layer_lists_the_valid_ones(runs):
    with pytest.raises(RepsimError, match="valid layers are conv1, conv2, conv3, conv4, head"):
        measures.layer_similarity(study_for(runs["maml"]), [runs["maml"]], layers=["conv9"])


def test_one_task_is_not_enough_for_a_confidence_interval(runs):
    study = study_for(runs["maml"], num_tasks=1)
    assert len(study.tasks) == 1  # enough to probe
    with pytest.raises(RepsimError, match="at least 2 tasks"):
        study.score(study.load(runs["maml"]))


def test_unwritable_results_folder_fails_before_any_work(runs, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RepsimError, match="cannot write results"):
        run_analysis("accuracy", [runs["maml"]], blocker / "results", TestProtocol(tasks=4, device="cpu"),
                     progress=False)


def test_run_analysis_writes_tables_and_provenance(runs, tmp_path):
    path = run_analysis("similarity", [runs["maml"], runs["anil"]], tmp_path,
                        TestProtocol(tasks=4, queries=5, device="cpu"), progress=False)
    table = pd.read_csv(path)
    assert set(table.algorithm) == {"maml", "anil"} and set(table.measure) == {"cca", "cka"}
    meta = json.loads((tmp_path / "similarity.json").read_text())
    assert meta["study"]["tasks"] == 4 and meta["study"]["task_seed"] == 0
    assert "spatial" in meta["study"]["conventions"]
    per_task = pd.read_csv(tmp_path / "similarity_tasks.csv")
    assert len(per_task) == 2 * 5 * 2 * 4
    # each seed's mean over tasks, beside the table (the figure's dots): a groupby of the rows
    seeds = pd.read_csv(tmp_path / "similarity_seeds.csv")
    for r in seeds.itertuples():
        these = per_task[(per_task.algorithm == r.algorithm) & (per_task.layer == r.layer)
                         & (per_task.measure == r.measure) & (per_task.seed == r.seed)]
        assert r.mean == pytest.approx(these.value.mean()) and r.n == len(these) == 4
    assert len(seeds) == 2 * 5 * 2


def _through_training(study, run_dir):
    """Every intermediate checkpoint of a run, measured one after another (what the runner's parts add up to)."""
    return pd.concat([measures.through_training(study, path) for path in measures.run_checkpoints(run_dir)],
                     ignore_index=True)


def test_through_training_reads_intermediate_checkpoints(runs, tmp_path):
    run_dir = runs["maml"].parent
    table = _through_training(study_for(runs["maml"], num_tasks=3), run_dir)
    assert sorted(table.iteration.unique()) == [10, 20]
    # the whole body frozen, in the protocol and with a fitted head: freezing_decomposed's own numbers
    last = measures.freezing_decomposed(study_for(runs["maml"], num_tasks=3), run_dir / "checkpoints" /
                                        "iter-000020.safetensors", frozen_sets=[["conv1", "conv2", "conv3", "conv4"]])
    body = last[last.frozen != "none"].sort_values("task")
    at20 = table[table.iteration == 20]
    for metric, column in (("accuracy (body frozen)", "paper"), ("accuracy (body frozen, fitted head)", "fitted")):
        assert at20[at20.metric == metric].value.tolist() == pytest.approx((100 * body[column]).tolist())


def test_regimes_include_random_features(runs):
    table = measures.regimes(study_for(runs["maml"]), [runs["maml"], runs["anil"]])
    assert list(table.regime) == ["maml", "anil", "random features"]


def _tiny_profile(monkeypatch, runs) -> dict:
    """A reproduce profile of a few seconds, as "tiny": the runs given, 4 iterations, 3 test tasks."""
    from repsim import reproduce as rp
    tiny = dict(settings=dict(ways=5, shots=1, queries=3, filters=8, meta_batch_size=2, iterations=4,
                              checkpoint_every=2, eval_every=2, eval_tasks=3, batch_size=16, reduced=True),
                runs=runs, tasks=3)
    monkeypatch.setitem(rp.PROFILES, "tiny", tiny)
    return tiny


def test_reproduce_pipeline_end_to_end_and_reuses_runs(tmp_path, monkeypatch, capsys):
    """The main job, with a tiny profile: trains, analyses, reports; a second call retrains nothing."""
    from repsim import reproduce as rp

    _tiny_profile(monkeypatch, rp.RUNS)
    report = rp.reproduce(profile="tiny", out=tmp_path / "repro", device="cpu", progress=False)
    assert report.is_file() and (report.parent / "report.html").is_file()
    for name in ("accuracy", "similarity", "freezing", "cross", "heads", "regimes",
                 "through_training", "weight_change"):
        assert (tmp_path / "repro" / "results" / f"{name}.json").is_file(), name
    # what the report shows of several seeds, written by the runner beside each table of one row per seed
    from repsim.names import DECLARATIONS
    results = tmp_path / "repro" / "results"
    for d in (d for d in DECLARATIONS if d.over_seeds):
        again = statistics.over_seeds(pd.read_csv(results / f"{d.stem}.csv"), d.over_seeds, d.value)
        pd.testing.assert_frame_equal(pd.read_csv(results / f"{d.stem}_over_seeds.csv"),
                                      pd.read_csv(io.StringIO(again.to_csv(index=False))), obj=d.stem)
    capsys.readouterr()
    rp.reproduce(profile="tiny", out=tmp_path / "repro", device="cpu", progress=False)
    assert capsys.readouterr().out.count("reusing") == len(rp.RUNS)


def test_reproduce_with_jobs_trains_and_measures_as_one_process_would(tmp_path, monkeypatch, capsys):
    """--jobs 2 trains the runs in two spawned workers and measures in two: the same weights, bit for
    bit, and the same tables as one process with a worker's thread count (one here); a run that is
    finished is reused, not sent to a worker."""
    from safetensors.torch import load_file

    from repsim import reproduce as rp

    tiny = _tiny_profile(monkeypatch, rp.RUNS[:3])
    every_analysis = rp.analysis_plan  # two of them are enough here (a pool each, spawned)
    monkeypatch.setattr(rp, "analysis_plan", lambda *a: [p for p in every_analysis(*a)
                                                         if p[0] in ("accuracy", "similarity")])
    one, two = tmp_path / "one", tmp_path / "two"
    rp.reproduce(profile="tiny", out=one, device="cpu", progress=False)
    (two / "runs").mkdir(parents=True)
    shutil.copytree(one / "runs" / "anil-s0", two / "runs" / "anil-s0")  # finished before
    capsys.readouterr()
    rp.reproduce(profile="tiny", out=two, device="cpu", progress=False, jobs=2)
    printed = capsys.readouterr().out
    assert "reusing" in printed and "anil-s0" in printed and "maml-s0, maml-s1" in printed, printed
    for run in tiny["runs"]:
        a, b = (load_file(str(o / "runs" / run.name / "model.safetensors")) for o in (one, two))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), run.name
    for table in ("accuracy", "similarity"):
        a, b = (pd.read_csv(o / "results" / f"{table}.csv") for o in (one, two))
        pd.testing.assert_frame_equal(a, b, obj=table)
    with pytest.raises(RepsimError, match="--jobs must be at least 1"):
        rp.reproduce(profile="tiny", out=tmp_path / "three", device="cpu", progress=False, jobs=0)


def _cli(*args):
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "repsim.cli", *map(str, args)], capture_output=True, text=True)


def test_cli_analyze_refuses_a_corrupt_checkpoint_in_one_line(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 100)
    result = _cli("analyze", "freezing", bad, "--out", tmp_path / "results", "--quiet")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "bad.safetensors" in lines[0] and lines[0].startswith("repsim: error:")
    assert not any((tmp_path / "results").glob("*.csv"))


def test_cli_probe_saves_every_step(runs, tmp_path):
    result = _cli("probe", runs["maml"], "--out", tmp_path / "p", "--tasks", 2, "--every-step",
                  "--inner-steps", 2, "--layers", "conv4", "head", "--device", "cpu", "--quiet")
    assert result.returncode == 0, result.stderr
    meta = json.loads((tmp_path / "p" / "meta.json").read_text())
    assert meta["tasks"] == 2 and meta["layers"] == ["conv4", "head"]
    from safetensors.torch import load_file
    assert sorted(load_file(str(tmp_path / "p" / "task-0001.safetensors"))) == [
        "step0/conv4", "step0/head", "step1/conv4", "step1/head", "step2/conv4", "step2/head"]
    trained = load_checkpoint(runs["maml"]).config
    assert meta["conventions"] == trained.conventions  # the training set, not the CCA/CKA text
    assert meta["inner_loss"] == trained.conventions_used()["inner_loss"]
    result = _cli("probe", runs["maml"], "--out", tmp_path / "one", "--tasks", 1, "--device", "cpu", "--quiet")
    assert result.returncode == 0, result.stderr  # a probe needs no confidence interval
    assert json.loads((tmp_path / "one" / "meta.json").read_text())["tasks"] == 1


def test_publishing_reference_checkpoints_again_rescores_only_what_changed(runs, tmp_path, monkeypatch, recipe):
    publisher = recipe("reference_checkpoints")
    root = runs["maml"].parent.parent
    out = tmp_path / "ref"
    rows = publisher.publish(root, out, 4, None)
    assert [(r["run"], r["iteration"]) for r in rows] == [
        (a, i) for a in ("anil", "boil", "maml") for i in (10, 20)]
    manifest = (out / "MANIFEST.csv").read_text()

    scored = []
    real = publisher.evaluate_checkpoint
    monkeypatch.setattr(publisher, "evaluate_checkpoint",
                        lambda path, **kw: scored.append(str(path)) or real(path, **kw))
    assert publisher.publish(root, out, 4, None) == rows  # nothing changed: nothing scored
    assert scored == [] and (out / "MANIFEST.csv").read_text() == manifest

    # a published checkpoint that no longer matches its run is published and scored again
    stale = out / "boil" / "checkpoints" / "iter-000010.safetensors"
    ckpt = load_checkpoint(stale)
    publisher.save_checkpoint(stale, publisher.Checkpoint(ckpt.config, {n: p + 1 for n, p in ckpt.params.items()},
                                                          ckpt.iteration))
    assert publisher.publish(root, out, 4, None) == rows
    assert scored == [str(stale)] * 2  # inner loop and NIL
    assert (out / "MANIFEST.csv").read_text() == manifest


def test_a_run_trained_on_is_published_with_its_new_final_model_only(tmp_path, recipe):
    """Its checkpoints up to the first plan record fewer planned iterations: the one that
    was final then must not be listed as the run's model.safetensors."""
    publisher = recipe("reference_checkpoints")
    base = SETTINGS + ["algorithm=maml", "checkpoint_every=1"]
    train(load_config(None, base + ["iterations=2"]), tmp_path / "runs" / "maml-s0", device="cpu", progress=False)
    train(load_config(None, base + ["iterations=3"]), tmp_path / "runs" / "maml-s0", device="cpu", progress=False,
          resume=True)
    rows = publisher.publish(tmp_path / "runs", tmp_path / "ref", 2, None)
    finals = [r for r in rows if r["path"].endswith("model.safetensors")]
    assert [(r["iteration"], r["iterations_planned"]) for r in finals] == [(3, 3)]
    assert sorted(r["iteration"] for r in rows) == [1, 2, 3]


def test_an_interrupted_publish_resumes_without_scoring_again(runs, tmp_path, monkeypatch, recipe):
    publisher = recipe("reference_checkpoints")
    root, out = runs["maml"].parent.parent, tmp_path / "ref"
    real, scored = publisher.evaluate_checkpoint, []

    def interrupted(path, **kw):  # Ctrl-C while scoring the third checkpoint
        if len(scored) == 4:
            raise KeyboardInterrupt
        scored.append(str(path))
        return real(path, **kw)
    monkeypatch.setattr(publisher, "evaluate_checkpoint", interrupted)
    with pytest.raises(KeyboardInterrupt):
        publisher.publish(root, out, 4, None)
    kept = pd.read_csv(out / "MANIFEST.csv")
    assert list(kept.path) == sorted(set(scored))  # the two checkpoints scored before it

    monkeypatch.setattr(publisher, "evaluate_checkpoint",
                        lambda path, **kw: scored.append(str(path)) or real(path, **kw))
    rows = publisher.publish(root, out, 4, None)
    assert len(rows) == 6 and len(scored) == 12  # each checkpoint scored once (inner loop and NIL)
    assert sorted(set(scored)) == sorted(r["path"] for r in rows)
    # the same numbers as an uninterrupted publish
    fresh = publisher.publish(root, tmp_path / "fresh", 4, None)
    assert [r["test_accuracy"] for r in rows] == [r["test_accuracy"] for r in fresh]


def test_publishing_with_manifest_only_scores_every_checkpoint_and_analyses_nothing(runs, tmp_path, recipe):
    root, out = runs["maml"].parent.parent, tmp_path / "ref"
    assert recipe("reference_checkpoints").main([str(root), "--out", str(out), "--tasks", "4",
                                                  "--manifest-only"]) == 0
    manifest = pd.read_csv(out / "MANIFEST.csv")
    assert len(manifest) == 6 and manifest.test_accuracy.between(0, 100).all()
    assert (out / "maml" / "model.safetensors").is_file() and not (out / "results").exists()


def test_reference_checkpoints_runs_only_the_named_analyses_and_reports_all_results(runs, tmp_path, recipe):
    root, out = runs["maml"].parent.parent, tmp_path / "ref"
    publisher = recipe("reference_checkpoints")
    for only in (["accuracy"], ["freezing", "regimes"]):
        assert publisher.main([str(root), "--out", str(out), "--tasks", "4", "--analysis-tasks", "4",
                               "--analyses", *only]) == 0
    made = sorted(p.stem for p in (out / "results").glob("*.json"))
    assert made == ["accuracy", "freezing", "regimes"]
    report = (out / "results" / "report.md").read_text()
    # the second run's report still has the first run's result, and nothing it did not run
    assert "## Accuracy with the inner loop and with NIL" in report
    assert "## Freezing layers at test time" in report and "## Training regimes" in report
    assert "## Similarity between models" not in report
    with pytest.raises(SystemExit):
        publisher.main([str(root), "--out", str(out), "--analyses", "accuracyy"])


def test_reproduction_table_averages_final_checkpoints_over_seeds(tmp_path, recipe):
    rows = ["path,run,algorithm,dataset,ways,shots,seed,iteration,iterations_planned,reduced_schedule,"
            "conventions,test_accuracy,test_ci95,nil_accuracy,nil_ci95"]
    for seed, acc in enumerate((90.0, 92.0, 94.0)):
        rows.append(f"p,anil-s{seed},anil,omniglot,20,1,{seed},1500,1500,True,finn conventions,{acc},0.5,{acc + 1},0.5")
        # and an intermediate checkpoint, not the final one
        rows.append(f"p,anil-s{seed},anil,omniglot,20,1,{seed},250,1500,True,finn conventions,10.0,0.5,10.0,0.5")
    # a control run: the same algorithm trained with one convention changed, never pooled with the seeds
    rows.append('p,anil-init-s0,anil,omniglot,20,1,0,1500,1500,True,"finn conventions except head_init=pytorch",'
                '50.0,0.7,51.0,0.7')
    (tmp_path / "MANIFEST.csv").write_text("\n".join(rows) + "\n")
    out = recipe("reproduction_table").table([tmp_path])
    # mean and sample std over the three seeds; the paper's ANIL 96.2 (table 2) and NIL 96.7 (table 4)
    assert ("| Omniglot 20w1s | ANIL | finn | 0, 1, 2 | 1500 (reduced) | 92.00 ± 2.00 | 96.2 ± 0.5 (table 2) | -4.2 |"
            in out)
    assert ("| NIL after ANIL training | finn | 0, 1, 2 | 1500 (reduced) | 93.00 ± 2.00 | 96.7 ± 0.3 (table 4) | -3.7 |"
            in out)
    assert ("| Omniglot 20w1s | ANIL | finn except head_init=pytorch | 0 | 1500 (reduced) | 50.00 ± 0.70 (CI) | "
            "96.2 ± 0.5 (table 2) | -46.2 |" in out)
    # the paper's other Omniglot entries of tables 2 and 4 are listed as gaps, not left out
    assert "| Omniglot 20w1s | MAML | — | — | not trained | — | 93.7 ± 0.7 (table 2); Finn et al.: 95.8 | — |" in out
    assert "| Omniglot 20w5s | NIL after ANIL training | — | — | not trained | — | 98.0 ± 0.04 (table 4) | — |" in out
    assert out.count("not trained") == 4  # 20w1s MAML; 20w5s MAML, ANIL, NIL

def test_reproduction_table_refuses_a_manifest_without_what_it_reads(tmp_path, recipe, capsys):
    """A MANIFEST without its conventions (the first repsims') is refused in one line naming
    the file, the column and the fix, and nothing is printed to standard output."""
    (tmp_path / "MANIFEST.csv").write_text(
        "path,run,algorithm,dataset,ways,shots,seed,iteration,iterations_planned,reduced_schedule,"
        "test_accuracy,test_ci95,nil_accuracy,nil_ci95\np,anil-s0,anil,omniglot,20,1,0,1500,1500,True,90,0.5,91,0.5\n")
    assert recipe("reproduction_table").main([str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.strip() == (f"reproduction_table: error: {tmp_path / 'MANIFEST.csv'} has no column "
                                         "conventions: regenerate it with analyses/reference_checkpoints.py")
    assert recipe("reproduction_table").main([str(tmp_path / "absent")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_nil_diagnostics_classifiers_agree_on_one_shot_and_differ_as_designed_on_five(recipe):
    diagnostics = recipe("nil_diagnostics")
    g = torch.Generator().manual_seed(0)
    one_shot = torch.randn(5, 8, generator=g), torch.arange(5)
    query = torch.randn(30, 8, generator=g)
    # one support point per class: every cosine classifier is the nearest-neighbour rule
    picks = [f(*one_shot, query).argmax(1) for f in diagnostics.CLASSIFIERS.values()]
    assert all(torch.equal(p, picks[0]) for p in picks)

    support, labels = torch.randn(25, 8, generator=g), torch.arange(5).repeat(5)
    # cosines see directions only: rescaling any feature vector changes no score
    scale = torch.rand(25, 1, generator=g) + 0.1
    for f in diagnostics.CLASSIFIERS.values():
        assert torch.allclose(f(support, labels, query), f(support * scale, labels, query * 3), atol=1e-6)
    # NIL's softmax sharpens into the nearest support point as its temperature goes to 0
    assert torch.equal(diagnostics.nil_scores(support, labels, query, temperature=1e-4).argmax(1),
                       diagnostics.nearest_support(support, labels, query).argmax(1))
    # the prototype of a class is the direction of its support points' mean direction
    normed = torch.nn.functional.normalize(support, dim=1)
    means = torch.stack([normed[labels == c].mean(0) for c in range(5)])
    expected = torch.nn.functional.cosine_similarity(query[:, None], means[None], dim=2)
    assert torch.allclose(diagnostics.cosine_prototype(support, labels, query), expected, atol=1e-6)


def test_nil_diagnostics_reproduces_the_manifest_nil_score(runs, tmp_path, recipe):
    """The recipe's NIL row is the NIL of the MANIFEST: same tasks, same classifier."""
    root, ref = runs["maml"].parent.parent, tmp_path / "ref"
    recipe("reference_checkpoints").main([str(root), "--out", str(ref), "--tasks", "4", "--manifest-only"])
    assert recipe("nil_diagnostics").main(["--ref", str(ref), "--tasks", "4"]) == 0
    table = pd.read_csv(ref / "results" / "nil_diagnostics.csv")
    manifest = pd.read_csv(ref / "MANIFEST.csv").query("iteration == iterations_planned")
    nil = table[table.classifier.str.startswith("NIL (paper")].set_index("run").accuracy
    own = table[table.classifier.str.startswith("own inner loop")].set_index("run").accuracy
    assert sorted(nil.index) == ["anil", "boil", "maml"]
    for row in manifest.itertuples():
        assert nil[row.run] == pytest.approx(row.nil_accuracy, abs=0.01)
        assert own[row.run] == pytest.approx(row.test_accuracy, abs=0.01)
    assert (ref / "results" / "nil_diagnostics.md").read_text().startswith("# Is NIL's gap")


def test_analysis_parts_are_reused_only_for_unchanged_checkpoints(runs, tmp_path, monkeypatch):
    """An analysis run again with one more checkpoint analyses only that one, and writes the
    same tables as a run from scratch; changed weights are analysed again."""
    import shutil

    from repsim.checkpoint import save_checkpoint

    maml = tmp_path / "maml.safetensors"
    shutil.copy(runs["maml"], maml)
    analysed = []
    real = measures.freezing
    monkeypatch.setattr(measures, "freezing",
                        lambda study, c, **kw: analysed.append(Path(c).name) or real(study, c, **kw))
    protocol = TestProtocol(tasks=3, queries=5, device="cpu")

    run_analysis("freezing", [maml], tmp_path / "resumed", protocol, progress=False)
    run_analysis("freezing", [maml, runs["anil"]], tmp_path / "resumed", protocol, progress=False)
    assert analysed == ["maml.safetensors", "model.safetensors"]  # maml's part was reused
    run_analysis("freezing", [maml, runs["anil"]], tmp_path / "fresh", protocol, progress=False)
    resumed, fresh = ((tmp_path / d / "freezing.csv").read_text() for d in ("resumed", "fresh"))
    assert resumed == fresh
    direct = pd.concat([real(study_for(c, num_tasks=3), c) for c in (maml, runs["anil"])])
    assert fresh == direct.to_csv(index=False)  # the CSV round trip of the parts loses nothing

    # other tasks, another inner loop or changed weights: analysed again
    for changed in (dict(tasks=4), dict(queries=3), dict(steps=1)):
        analysed.clear()
        run_analysis("freezing", [maml], tmp_path / "resumed", dataclasses.replace(protocol, **changed),
                     replace=True, progress=False)
        assert analysed == ["maml.safetensors"], changed
    ckpt = load_checkpoint(maml)
    ckpt.params["head.bias"] = ckpt.params["head.bias"] + 1.0
    save_checkpoint(maml, ckpt)
    analysed.clear()
    run_analysis("freezing", [maml, runs["anil"]], tmp_path / "resumed", protocol, replace=True, progress=False)
    assert analysed == ["maml.safetensors"]


def test_an_analysis_run_again_with_other_options_is_refused_not_silently_replaced(runs, tmp_path):
    """Rows made with other tasks (or leaving models out) must not replace a table unseen;
    more models with the same options are added; --replace overwrites on purpose."""
    out = tmp_path / "results"
    protocol = TestProtocol(tasks=3, queries=5, device="cpu")
    common = dict(progress=False, frozen_sets=[["conv1"]])
    run_analysis("freezing", [runs["maml"]], out, protocol, **common)
    first = (out / "freezing.csv").read_text()
    with pytest.raises(RepsimError, match=r"tasks=3, this run has tasks=4: use another --out, or --replace"):
        run_analysis("freezing", [runs["maml"]], out, dataclasses.replace(protocol, tasks=4), **common)
    with pytest.raises(RepsimError, match=r"inner_lr=0.1"):  # how the models are tested is an option too
        run_analysis("freezing", [runs["maml"]], out, dataclasses.replace(protocol, overrides={"inner_lr": "0.1"}),
                     **common)
    assert (out / "freezing.csv").read_text() == first
    run_analysis("freezing", [runs["maml"], runs["anil"]], out, protocol, **common)  # a model added
    assert len(pd.read_csv(out / "freezing.csv")) == 2
    with pytest.raises(RepsimError, match=r"also holds .*which this run leaves out"):
        run_analysis("freezing", [runs["anil"]], out, protocol, **common)
    run_analysis("freezing", [runs["maml"]], out, dataclasses.replace(protocol, tasks=4), replace=True, **common)
    table = pd.read_csv(out / "freezing.csv")
    assert len(table) == 1 and table.tasks.iloc[0] == 4


def test_test_time_overrides_change_the_inner_loop_and_are_recorded(runs, tmp_path):
    """Testing with Finn's summed support loss at step size lr equals testing with the mean
    loss at lr x ways (closed form: sum/shots = ways x mean); keys fixed by training are refused."""
    from repsim.study import evaluate_checkpoint

    common = dict(tasks=3, queries=5, device="cpu", progress=False)
    c = load_checkpoint(runs["maml"]).config
    summed = evaluate_checkpoint(runs["maml"], overrides=["inner_loss=sum_div_shots", "inner_lr=0.05"], **common)
    mean = evaluate_checkpoint(runs["maml"], overrides=["inner_loss=mean", f"inner_lr={0.05 * c.ways}"], **common)
    small = evaluate_checkpoint(runs["maml"], overrides=["inner_loss=mean", "inner_lr=0.05"], **common)
    assert summed["accuracy"] == pytest.approx(mean["accuracy"])
    assert summed["test_overrides"] == "inner_loss=sum_div_shots inner_lr=0.05" and summed["inner_lr"] == 0.05
    assert small["inner_lr"] == 0.05 and small["inner_loss"] == "mean"
    with pytest.raises(RepsimError, match="filters is fixed by its training"):
        evaluate_checkpoint(runs["maml"], overrides=["filters=8"], **common)
    path = run_analysis("accuracy", [runs["maml"]], tmp_path,
                        TestProtocol(tasks=3, queries=5, device="cpu", overrides=["inner_lr=0.05"]), progress=False)
    made = json.loads(path.with_suffix(".json").read_text())
    assert made["study"]["test_overrides"] == "inner_lr=0.05" and made["checkpoints"][0]["inner_lr"] == 0.05


def test_through_training_keeps_one_part_per_intermediate_checkpoint(runs, tmp_path, monkeypatch):
    """Through-training's parts are its intermediate checkpoints; rows with an empty layer
    (the accuracies) come back from them unchanged."""
    run_dir = runs["maml"].parent
    protocol = TestProtocol(tasks=3, queries=5, device="cpu")
    first = pd.read_csv(run_analysis("through-training", [run_dir], tmp_path, protocol, progress=False))
    real, analysed = measures.through_training, []
    monkeypatch.setattr(measures, "through_training",
                        lambda study, c, **kw: analysed.append(c) or real(study, c, **kw))
    again = pd.read_csv(run_analysis("through-training", [run_dir], tmp_path, protocol, progress=False))
    assert analysed == []
    direct = _through_training(study_for(runs["maml"], num_tasks=3), run_dir)
    pd.testing.assert_frame_equal(first, again)
    # the per-task rows are kept beside the table (they were summarised away inside the measure)
    assert (tmp_path / "through_training_tasks.csv").read_text() == direct.to_csv(index=False)
    assert (tmp_path / "through_training.csv").read_text() == through_training_summary(direct).to_csv(index=False)
    body = through_training_body(through_training_summary(direct))  # what the report shows of the body
    assert (tmp_path / "through_training_body.csv").read_text() == body.to_csv(index=False)
    for r in first.itertuples():  # each row: the plain mean over its tasks
        these = direct[(direct.iteration == r.iteration) & (direct.metric == r.metric)
                       & (direct.layer.fillna("") == ("" if pd.isna(r.layer) else r.layer))]
        assert r.n == len(these) == 3 and r.mean == pytest.approx(these.value.mean())
    assert len(list((tmp_path / ".partial" / "through-training").glob("*.csv"))) == 2  # iterations 10, 20


def test_a_run_published_from_another_folder_joins_the_manifest(runs, tmp_path, recipe):
    """A seed trained elsewhere is published beside the runs already there, which keep their rows."""
    import shutil

    publisher = recipe("reference_checkpoints")
    first, later, out = tmp_path / "first", tmp_path / "later", tmp_path / "ref"
    for folder, names in ((first, ("anil", "maml")), (later, ("boil",))):
        for name in names:
            shutil.copytree(runs[name].parent, folder / name)
    before = publisher.publish(first, out, 4, None)
    rows = publisher.publish(later, out, 4, None)
    assert [(r["run"], r["iteration"]) for r in rows] == [
        (a, i) for a in ("anil", "boil", "maml") for i in (10, 20)]
    assert [r for r in rows if r["run"] != "boil"] == before
    assert pd.read_csv(out / "MANIFEST.csv").run.tolist() == [r["run"] for r in rows]

    shutil.rmtree(out / "anil")  # a kept row whose checkpoint is gone is an error, not a silent drop
    with pytest.raises(RepsimError, match="delete anil's rows"):
        publisher.publish(later, out, 4, None)


def test_parts_measured_in_worker_processes_make_the_single_process_result(runs, tmp_path, monkeypatch):
    """--jobs 2: each checkpoint's part is measured in a spawned worker (which imports repsim
    afresh, so this process' patch cannot reach it); this process measures nothing and writes the
    tables one process writes, byte for byte."""
    protocol = TestProtocol(tasks=3, queries=5, device="cpu")
    checkpoints = [runs["maml"], runs["boil"], runs["anil"]]
    alone = run_analysis("freezing-decomposed", checkpoints, tmp_path / "one", protocol, progress=False)
    monkeypatch.setattr(measures, "freezing_decomposed", lambda *a, **k: pytest.fail("measured in the parent"))
    workers = run_analysis("freezing-decomposed", checkpoints, tmp_path / "two", protocol, progress=False, jobs=2)
    for table in ("freezing_decomposed.csv", "freezing_decomposed_tasks.csv", "freezing_decomposed_over_seeds.csv"):
        assert (workers.parent / table).read_bytes() == (alone.parent / table).read_bytes(), table
    assert len(list((tmp_path / "two" / ".partial" / "freezing-decomposed").glob("*.csv"))) == 3
    with pytest.raises(RepsimError, match="--jobs must be at least 1"):
        run_analysis("freezing", checkpoints, tmp_path / "three", protocol, progress=False, jobs=0)


def test_an_analysis_part_with_no_rows_is_not_kept(runs, tmp_path):
    out = tmp_path / "results"
    for _ in range(2):  # the second run must not trip over a part the first one left
        run_analysis("freezing", [runs["maml"]], out, TestProtocol(tasks=3, queries=5, device="cpu"), frozen_sets=[],
                     progress=False)
    assert not list(out.glob(".partial/freezing/*.csv"))


def test_kept_parts_are_keyed_on_the_code_the_numbers_come_from_not_its_comments(tmp_path):
    """The parts' code digest covers every module the runner imports, at any depth and inside
    functions, as syntax without docstrings: a comment, a docstring, a reflowed line or a change
    to the report or the training script keeps it; a changed number in the code does not."""
    import shutil

    import repsim
    from repsim.runner import code_digest

    package = tmp_path / "repsim"
    shutil.copytree(Path(repsim.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    before = code_digest(package)

    def edited(relative: str, old: str, new: str) -> str:
        path = package / relative
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new, 1))
        return code_digest(package)

    assert edited("measures.py", '"""The paper', '"""Reworded: the paper') == before  # a docstring
    assert edited("statistics.py", "\nimport", "\n# a comment\nimport") == before
    assert edited("report/figures.py", "def ", "def _new():\n    return 1\n\n\ndef ") == before
    assert edited("train.py", "def ", "def _new():\n    return 1\n\n\ndef ") == before
    changed = edited("statistics.py", "stdtrit(n - 1, 0.975)", "stdtrit(n - 1, 0.95)")  # every CI
    assert changed != before
    # a module reached only through an import inside a function counts too
    (package / "extra.py").write_text("SCALE = 1\n")
    edited("measures.py", "def freezing(", "def _scale():\n    from repsim.extra import SCALE\n    return SCALE\n\n\n"
                                           "def freezing(")
    with_extra = code_digest(package)
    (package / "extra.py").write_text("SCALE = 2\n")
    assert code_digest(package) != with_extra


def test_ablation_changes_are_paired_over_the_same_tasks(runs):
    """Each freezing row's change is its per-task accuracy minus the unfrozen inner loop's,
    with scipy's paired t-interval; NIL's change in ``accuracy`` is NIL - inner loop."""
    from scipy import stats

    study = study_for(runs["maml"])
    m = study.load(runs["maml"])
    table = measures.freezing(study, runs["maml"], frozen_sets=[["conv1", "conv2"]])
    assert list(table.frozen) == ["conv1,conv2"]  # the unfrozen reference is scored, not listed
    unfrozen = study.score(m)
    adapted = [n for n in measures.own_inner_loop(m.ckpt.config, m.model).names
               if not n.startswith(("conv1.", "conv2."))]
    frozen = study.score(m, names=adapted)
    lo, hi = stats.ttest_rel(100 * frozen.per_task, 100 * unfrozen.per_task).confidence_interval(0.95)
    row = table.iloc[0]
    assert row.change == pytest.approx(frozen.mean - unfrozen.mean)
    assert row.change_ci95 == pytest.approx((hi - lo) / 2)

    acc = measures.accuracy(study, [runs["maml"]]).set_index("mode")
    assert acc.loc["inner-loop", "change"] == 0
    assert acc.loc["nil", "change"] == pytest.approx(acc.loc["nil", "accuracy"] - acc.loc["inner-loop", "accuracy"])


def test_probe_names_the_after_tensors_by_the_steps_taken(runs, tmp_path):
    # they were "step1" after a 10-step inner loop (issue 35)
    result = _cli("probe", runs["maml"], "--out", tmp_path / "p", "--tasks", 2, "--inner-steps", 3,
                  "--layers", "head", "--device", "cpu", "--quiet")
    assert result.returncode == 0, result.stderr
    from safetensors.torch import load_file
    assert sorted(load_file(str(tmp_path / "p" / "task-0000.safetensors"))) == ["step0/head", "step3/head"]


def test_bench_freezing_times_the_protocol_and_its_decomposition_on_the_same_frozen_sets(runs):
    # what `repsim bench freezing` prints its ratio from (timings are not asserted)
    from repsim.bench.freezing import run

    r = run(runs["maml"], tasks=3, device="cpu")
    assert set(r["seconds"]) == {"freezing, prefix recomputed", "freezing", "freezing-decomposed"}
    assert all(s > 0 for s in r["seconds"].values())
    # the old path (frozen blocks recomputed at every inner step) scores the same tasks alike
    assert r["same accuracies"]
    # none and the four prefixes of conv4's body, as `repsim analyze freezing-decomposed` runs
    assert r["sets"] == 5 and r["tasks"] == 3


def test_bench_scoring_times_one_task_at_a_time_against_tasks_in_threads(runs):
    # what `repsim bench scoring` prints its ratio from (timings are not asserted): with two torch
    # threads, two tasks at a time on a thread each score every task as one at a time does
    import torch

    from repsim.bench.scoring import run

    torch.set_num_threads(2)
    try:
        r = run(runs["maml"], tasks=4, device="cpu")
    finally:
        torch.set_num_threads(1)
    assert set(r["seconds"]) == {"one task at a time", "tasks in threads"}
    assert r["task threads"] == 2 and r["same accuracies"] and r["tasks"] == 4


def test_a_study_takes_its_test_changes_as_a_dict_or_as_command_line_strings():
    as_text = Study(dataset="synthetic", ways=5, shots=1, overrides=("inner_lr=0.1", "inner_loss=mean"))
    as_dict = Study(dataset="synthetic", ways=5, shots=1, overrides={"inner_lr": "0.1", "inner_loss": "mean"})
    assert as_text.overrides == as_dict.overrides
    assert as_text.provenance()["test_overrides"] == "inner_lr=0.1 inner_loss=mean"
    with pytest.raises(RepsimError, match="given twice"):
        Study(dataset="synthetic", ways=5, shots=1, overrides=("inner_lr=0.1", "inner_lr=0.2"))


def test_a_run_told_apart_by_its_folder_keeps_one_name_through_training(runs, tmp_path):
    """Two runs of one algorithm and seed (a control with another head init, say): where their
    default labels collide, every checkpoint of a run takes its folder's name, its off-grid
    checkpoints included, and the run is one model through training (it used to pool its
    uncollided checkpoint with the other run's, labelled as that run)."""
    import shutil

    from repsim.checkpoint import save_checkpoint
    from repsim.study import assign_labels

    control = tmp_path / "maml-control"
    shutil.copytree(runs["maml"].parent, control)
    for path in sorted((control / "checkpoints").glob("iter-*.safetensors")) + [control / "model.safetensors"]:
        ckpt = load_checkpoint(path, with_optimizer=True)
        ckpt.params["head.bias"] = ckpt.params["head.bias"] + 0.5  # other weights than the run it copies
        save_checkpoint(path, ckpt)
    off_grid = load_checkpoint(control / "checkpoints" / "iter-000010.safetensors", with_optimizer=True)
    off_grid.iteration, off_grid.params["head.bias"] = 15, off_grid.params["head.bias"] + 0.5
    save_checkpoint(control / "checkpoints" / "iter-000015.safetensors", off_grid)

    files = measures.run_checkpoints(runs["maml"].parent) + measures.run_checkpoints(control)
    labels = assign_labels(files)
    assert [labels[str(f.resolve())] for f in measures.run_checkpoints(control)] == [
        "maml-control-it10", "maml-control-it15", "maml-control-it20"]
    assert [labels[str(f.resolve())] for f in measures.run_checkpoints(runs["maml"].parent)] == [
        "maml-it10", "maml-it20"]  # the fixture's run folder is named after its algorithm
    study = Study.for_checkpoint(load_checkpoint(files[0]), device="cpu", progress=False, labels=labels)
    assert {study.load(f).unit for f in measures.run_checkpoints(control)} == {"maml-control"}
    assert {study.load(f).unit for f in measures.run_checkpoints(runs["maml"].parent)} == {"maml"}


def test_a_run_of_other_conventions_never_pools_with_the_seeds_whatever_its_seed(runs, tmp_path):
    """Three seeds of one set of conventions and a control of another (PyTorch's head init):
    the seeds pool as the algorithm, the control is a model of its own, through training too,
    whether its seed collides with a seed's (it used to take seed 0's name away, leaving the
    pooled "maml" with seeds 1-2 only) or not (seed 3 used to pool as a fourth seed). With no
    most common set (one run each), neither pools."""
    from repsim.checkpoint import save_checkpoint
    from repsim.study import assign_labels

    made = []

    def copy_run(name, **config):
        folder = tmp_path / name
        made.append(folder)
        for source in measures.run_checkpoints(runs["maml"].parent):
            ckpt = load_checkpoint(source, with_optimizer=True)
            ckpt.config = dataclasses.replace(ckpt.config, **config)
            ckpt.params["head.bias"] = ckpt.params["head.bias"] + len(made)  # weights of its own
            target = folder / source.relative_to(runs["maml"].parent)
            save_checkpoint(target, ckpt)
        return folder

    seeds = [copy_run(f"finn-s{seed}", seed=seed) for seed in (0, 1, 2)]
    for control_seed in (0, 3):
        control = copy_run(f"control-s{control_seed}", seed=control_seed, head_init="pytorch")
        for folders in ([*seeds, control], [seeds[1], control]):
            files = [f for folder in folders for f in measures.run_checkpoints(folder)]
            labels = assign_labels(files)
            study = Study.for_checkpoint(load_checkpoint(files[0]), device="cpu", progress=False, labels=labels)
            units = {folder.name: {study.load(f).unit for f in measures.run_checkpoints(folder)}
                     for folder in folders}
            expected = ({**{s.name: {"maml"} for s in seeds}, control.name: {control.name}} if len(folders) == 4
                        else {seeds[1].name: {seeds[1].name}, control.name: {control.name}})
            assert units == expected, control_seed
    # table 3 pairs the seeds with each other, and the control apart (it used to count as a MAML seed)
    finals = [run / "checkpoints" / "iter-000020.safetensors" for run in [*seeds, control]]
    study = Study.for_checkpoint(load_checkpoint(finals[0]), device="cpu", progress=False, num_tasks=2,
                                 queries=5, labels=assign_labels(finals))
    pairs = set(measures.cross_similarity(study, finals, layers=["conv4"])["pair"])
    assert pairs == {"MAML-MAML", f"MAML vs {control.name}"}
