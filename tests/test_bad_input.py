"""Bad input and faults, as a careful user meets them (issue: "the 18 bad-input cases"): each
gets one line naming the problem and the fix, a non-zero exit, and nothing half-written or
overwritten. Case numbers refer to docs/BAD_INPUT.md."""

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from bad_input_helpers import SETUP, config, in_cli, one_line, repsim, train_run, with_metadata
from repsim import runner
from repsim.checkpoint import Checkpoint, load_checkpoint, read_metadata, save_checkpoint
from repsim.config import load_config
from repsim.errors import RepsimError
from repsim.model import model_for
from repsim.study import TestProtocol
from repsim.train import train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_run(tmp_path_factory.mktemp("bad"))


# wrong numbers with exit 0 ----------------------------------------------------------------
def test_01_two_checkpoints_with_one_label_are_told_apart_or_refused_never_pooled(run, tmp_path):
    """Two runs of one algorithm, seed and iteration are labelled by their run folders and
    give rows of their own; where even those agree, the analysis is refused."""
    other = tmp_path / "other"
    train(config("split_seed=0", "outer_lr=0.002"), other, device="cpu", progress=False)
    code, _, err = repsim("analyze", "similarity", run / "model.safetensors", other / "model.safetensors",
                          "--out", tmp_path / "res", "--tasks", 3, "--device", "cpu", "--quiet")
    assert code == 0, err
    table = pd.read_csv(tmp_path / "res" / "similarity.csv")
    assert set(table["model"]) == {run.name, "other"}
    assert len(table) == 2 * len(table[table["model"] == "other"])

    twin = tmp_path / "elsewhere" / run.name
    twin.mkdir(parents=True)
    (twin / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    code, _, err = repsim("analyze", "similarity", run / "model.safetensors", twin / "model.safetensors",
                          "--out", tmp_path / "res2", "--tasks", 3, "--device", "cpu", "--quiet")
    assert code == 2
    one_line(err, f"would both be labelled '{run.name}'", "distinct names")
    assert not (tmp_path / "res2" / "similarity.csv").exists()

    # one model under two names: the run's final model and its last checkpoint
    code, _, err = repsim("analyze", "similarity", run / "checkpoints" / "iter-000005.safetensors",
                          run / "model.safetensors", "--out", tmp_path / "res3", "--tasks", 3,
                          "--device", "cpu", "--quiet")
    assert code == 2 and not (tmp_path / "res3" / "similarity.csv").exists()
    one_line(err, "hold the same weights", "list one of them")


def test_02_a_damaged_analysis_part_is_computed_again(run, tmp_path):
    protocol = TestProtocol(tasks=3, device="cpu")
    runner.run_analysis("freezing", [run / "model.safetensors"], tmp_path / "res", protocol, progress=False)
    good = pd.read_csv(tmp_path / "res" / "freezing.csv")
    part = next((tmp_path / "res" / ".partial" / "freezing").glob("*.csv"))
    for damage in (lambda b: b[: len(b) // 2], lambda b: b"garbage\n1,2\n"):
        part.write_bytes(damage(part.read_bytes()))
        runner.run_analysis("freezing", [run / "model.safetensors"], tmp_path / "res", protocol, progress=False)
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "res" / "freezing.csv"), good)


def test_03_a_head_of_other_width_than_the_configs_ways_is_refused_at_import(run, tmp_path):
    state = load_checkpoint(run / "model.safetensors").params
    wide = model_for(config("ways=20"))
    state = {**state, "head.weight": wide.head.weight.detach(), "head.bias": wide.head.bias.detach()}
    torch.save(state, tmp_path / "w.pt")
    (tmp_path / "c.yaml").write_text("dataset: synthetic\nfilters: 8\nways: 5\nconventions: finn\n")
    code, _, err = repsim("import", tmp_path / "w.pt", "--config", tmp_path / "c.yaml",
                          "--out", tmp_path / "x.safetensors")
    assert code == 2
    one_line(err, "20-way head", "ways: 5", "--set ways=20")
    assert not (tmp_path / "x.safetensors").exists()


def test_04_divergence_stops_training_and_nan_weights_are_refused(run, tmp_path):
    with pytest.raises(RepsimError, match="bad value '.inf' for outer_lr: expected a number"):
        config("outer_lr=.inf")  # --set reads plain numbers only (docs/BAD_INPUT.md, case 42)
    from repsim.config import from_dict
    with pytest.raises(RepsimError, match="outer_lr must be a positive finite number"):
        from_dict({**dict(p.split("=") for p in SETUP), "outer_lr": float("inf")}).resolved()
    with pytest.raises(RepsimError, match=r"training diverged at iteration \d+ .*lower outer_lr"):
        train(config("outer_lr=1e30", "iterations=20", "checkpoint_every=1", "eval_every=20"),
              tmp_path / "r", device="cpu", progress=False)
    kept = sorted((tmp_path / "r" / "checkpoints").glob("iter-*.safetensors"))
    for path in kept:  # whatever was saved is finite: the last good state
        assert all(torch.isfinite(t).all() for t in load_file(str(path)).values())
    ckpt = load_checkpoint(run / "model.safetensors")
    ckpt.params = {n: torch.full_like(p, float("nan")) for n, p in ckpt.params.items()}
    nan = save_checkpoint(tmp_path / "nan.safetensors", ckpt)
    code, out, err = repsim("evaluate", nan, "--tasks", 4, "--device", "cpu", "--quiet")
    assert code == 2 and "20.00" not in out
    one_line(err, "NaN or infinite weights", "use an earlier checkpoint")


@pytest.mark.parametrize("args, needle", [
    (["evaluate", "{ckpt}", "--queries", "0"], "--queries must be at least 1, got 0"),
    (["evaluate", "{ckpt}", "--inner-steps", "-1"], "--inner-steps must be at least 0, got -1"),
    (["analyze", "freezing", "{ckpt}", "--out", "{tmp}/res", "--queries", "0"], "--queries must be at least 1"),
])
def test_05_impossible_test_protocols_are_refused(run, tmp_path, args, needle):
    args = [a.format(ckpt=run / "model.safetensors", tmp=tmp_path) for a in args]
    code, _, err = repsim(*args, "--device", "cpu", "--quiet")
    assert code == 2
    one_line(err, needle)
    assert not (tmp_path / "res" / "freezing.csv").exists()


def test_05_metadata_with_a_non_integer_iteration_is_refused(run, tmp_path):
    bad = with_metadata(run / "model.safetensors", tmp_path / "c.safetensors",
                        lambda raw: raw.replace('"iteration": 5', '"iteration": "five"'))
    with pytest.raises(RepsimError, match="damaged repsim metadata .*iteration 'five'"):
        load_checkpoint(bad)


def test_06_two_processes_running_one_analysis_into_one_folder(run, tmp_path):
    from repsim.results import exclusive
    (tmp_path / "res").mkdir()
    with exclusive(tmp_path / "res", "freezing"):  # held, as by a process still running
        code, _, err = repsim("analyze", "freezing", run / "model.safetensors", "--out", tmp_path / "res",
                              "--tasks", 3, "--device", "cpu", "--quiet")
        assert code == 2
        one_line(err, f"process {os.getpid()} is running the freezing analysis", "another --out")
        # another analysis may share the folder
        runner.run_analysis("accuracy", [run / "model.safetensors"], tmp_path / "res",
                            TestProtocol(tasks=3, device="cpu"), progress=False)
    assert not (tmp_path / "res" / "freezing.csv").exists()


# refused without reason, or with the wrong advice -------------------------------------------
def test_07_exponent_notation_is_a_number():
    assert config("outer_lr=1e-3").outer_lr == 0.001


def test_08_a_negative_seed_is_refused_before_a_run_folder_exists(tmp_path):
    code, _, err = repsim("train", "--set", "seed=-1", "--out", tmp_path / "r")
    assert code == 2
    one_line(err, "seed must be at least 0, got -1")
    assert not (tmp_path / "r").exists()


def test_09_a_truncated_latest_checkpoint_is_skipped_on_resume(tmp_path):
    c = config("iterations=6", "checkpoint_every=3", "eval_every=3")
    train(c, tmp_path / "whole", device="cpu", progress=False)
    train(c, tmp_path / "r", device="cpu", progress=False, stop_after=6)
    (tmp_path / "r" / "model.safetensors").unlink(missing_ok=True)
    latest = tmp_path / "r" / "checkpoints" / "iter-000006.safetensors"
    latest.write_bytes(latest.read_bytes()[:1000])
    final = train(c, tmp_path / "r", device="cpu", progress=False, resume=True)
    ours, whole = load_file(str(final)), load_file(str(tmp_path / "whole" / "model.safetensors"))
    assert all(torch.equal(ours[n], whole[n]) for n in whole)  # resumed from iteration 3


@pytest.mark.parametrize("scale", [1e-30])
def test_10_tiny_float32_activations_and_two_points(scale):
    import numpy as np

    from repsim.similarity import debiased_cka, linear_cka
    r = np.random.default_rng(0)
    X = r.standard_normal((40, 6)).astype(np.float32)
    assert linear_cka(X * np.float32(scale), X * np.float32(scale)) == pytest.approx(1.0)
    assert debiased_cka(X * np.float32(scale), X * np.float32(scale)) == pytest.approx(1.0)
    with pytest.raises(RepsimError, match="at least 3 data points"):
        linear_cka(X[:2], X[:2])


def test_11_ctrl_c_hint_suggests_resume_only_when_there_is_something_to_resume(tmp_path):
    from repsim import cli as cli_module
    args = cli_module.build_parser().parse_args(["train", "--out", str(tmp_path / "r")])
    assert "start the run again (without --resume)" in cli_module._resume_hint(args)
    (tmp_path / "r" / "checkpoints").mkdir(parents=True)
    (tmp_path / "r" / "checkpoints" / "iter-000003.safetensors").write_bytes(b"")
    assert "--resume" in cli_module._resume_hint(args) and "without" not in cli_module._resume_hint(args)
    analyze = cli_module.build_parser().parse_args(["analyze", "freezing", "m.safetensors", "--out", "res"])
    assert "the same command continues it" in cli_module._resume_hint(analyze)


# tracebacks instead of one line -------------------------------------------------------------
@pytest.mark.parametrize("edit, needle", [
    (lambda raw: raw[:-10], "not JSON"),
    (lambda raw: "[1, 2]", "a JSON list"),
    (lambda raw: json.dumps({k: v for k, v in json.loads(raw).items() if k != "config"}), "no config"),
    (lambda raw: json.dumps({**json.loads(raw), "config": None}), "no config"),
])
def test_12_tampered_metadata_is_one_line_in_every_command(run, tmp_path, edit, needle, capsys):
    bad = with_metadata(run / "model.safetensors", tmp_path / "c.safetensors", edit)
    for args in (["evaluate", bad], ["analyze", "accuracy", bad, "--out", tmp_path / "res"],
                 ["probe", bad, "--out", tmp_path / "probes"]):
        code, _, err = in_cli(capsys, *args, "--device", "cpu", "--quiet")
        assert code == 2
        one_line(err, "damaged repsim metadata", needle)


def test_13_a_checkpoint_of_another_run_placed_as_the_latest_is_named(tmp_path):
    c = config("iterations=6", "checkpoint_every=3", "eval_every=3")
    train(c, tmp_path / "r", device="cpu", progress=False, stop_after=3)
    other = config("filters=16")
    save_checkpoint(tmp_path / "r" / "checkpoints" / "iter-000004.safetensors",
                    Checkpoint(other, dict(model_for(other).state_dict()), 4))
    with pytest.raises(RepsimError,
                       match=r"iter-000004.safetensors is not a checkpoint of this run .*filters.*move it out"):
        train(c, tmp_path / "r", device="cpu", progress=False, resume=True)


@pytest.mark.parametrize("target", ["file", "proc"])
def test_14_probe_into_a_file_or_an_impossible_folder(run, tmp_path, target):
    out = {"file": tmp_path / "f.txt", "proc": Path("/proc/repsim-probes")}[target]
    if target == "file":
        out.write_text("mine")
    code, _, err = repsim("probe", run / "model.safetensors", "--out", out, "--tasks", 2, "--device", "cpu", "--quiet")
    assert code == 2
    one_line(err, str(out))
    if target == "file":
        assert out.read_text() == "mine"


def test_15_file_outputs_that_are_folders(run, tmp_path, capsys):
    (tmp_path / "d").mkdir()
    code, _, err = in_cli(capsys, "evaluate", run / "model.safetensors", "--json", tmp_path / "d", "--tasks", 2,
                                  "--device", "cpu", "--quiet")
    assert code == 2
    one_line(err, "is a folder: give a file name")
    torch.save(load_checkpoint(run / "model.safetensors").params, tmp_path / "w.pt")
    code, _, err = in_cli(capsys, "import", tmp_path / "w.pt", "--set", "filters=8", "--set", "dataset=synthetic",
                                  "--out", tmp_path / "d")
    assert code == 2
    one_line(err, str(tmp_path / "d"))


def test_16_paths_that_are_not_utf8_get_a_report(run, tmp_path):
    """The command line (recorded in the provenance) and the checkpoint's path carry a byte
    that is not UTF-8: the report is written in full, with those names escaped."""
    import shutil
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/m\xffdels"))  # a name no UTF-8 decoder accepts
    odd.mkdir()
    (odd / "model.safetensors").write_bytes((run / "model.safetensors").read_bytes())
    res = Path(os.fsdecode(bytes(tmp_path) + b"/r\xffsults"))
    command = [shutil.which("repsim") or "repsim", "analyze", "accuracy", odd / "model.safetensors",
               "--out", res, "--tasks", "3", "--device", "cpu", "--quiet"]
    assert subprocess.run(command, capture_output=True).returncode == 0
    code, _, err = repsim("report", res)
    assert code == 0, err
    text = (res / "report.md").read_text()
    assert "m\\udcffdels" in text and (res / "report.html").is_file()


# overwrites without asking ----------------------------------------------------------------
def test_17_no_command_overwrites_a_file_it_did_not_write(run, tmp_path, capsys):
    torch.save(load_checkpoint(run / "model.safetensors").params, tmp_path / "w.pt")
    target = tmp_path / "trained.safetensors"
    target.write_bytes((run / "model.safetensors").read_bytes())
    code, _, err = in_cli(capsys, "import", tmp_path / "w.pt", "--set", "filters=8", "--out", target)
    assert code == 2 and target.read_bytes() == (run / "model.safetensors").read_bytes()
    one_line(err, "already exists")

    config_yaml = (run / "config.yaml").read_text()
    code, _, err = in_cli(capsys, "evaluate", run / "model.safetensors", "--json", run / "config.yaml", "--tasks", 2,
                                  "--device", "cpu", "--quiet")
    assert code == 2 and (run / "config.yaml").read_text() == config_yaml
    one_line(err, "not an earlier 'repsim evaluate' result")
    for _ in range(2):  # its own result it replaces
        code, _, _ = in_cli(capsys, "evaluate", run / "model.safetensors", "--json", tmp_path / "e.json", "--tasks", 2,
                                    "--device", "cpu", "--quiet")
        assert code == 0

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "metrics.jsonl").write_text('{"my": "notes"}\n')
    with pytest.raises(RepsimError, match="is not empty: choose a new --out"):
        train(config(), tmp_path / "mine", device="cpu", progress=False)
    assert (tmp_path / "mine" / "metrics.jsonl").read_text() == '{"my": "notes"}\n'


def test_18_temporary_files_of_killed_writes_are_cleaned_when_the_run_resumes(tmp_path):
    c = config("iterations=6", "checkpoint_every=3", "eval_every=3")
    train(c, tmp_path / "r", device="cpu", progress=False, stop_after=3)
    for i in range(12):
        (tmp_path / "r" / "checkpoints" / f".iter-000006.safetensors.{i}.tmp").write_bytes(b"half")
    train(c, tmp_path / "r", device="cpu", progress=False, resume=True)
    assert not list((tmp_path / "r").rglob("*.tmp"))





# found by a usability audit (docs/BAD_INPUT.md, "Found later") ------------------------------
def test_19_a_diverging_test_time_inner_loop_is_refused_not_scored_as_chance(run, tmp_path, capsys):
    ckpt = run / "model.safetensors"
    code, out, err = in_cli(capsys, "evaluate", ckpt, "--tasks", 3, "--set", "inner_lr=1e30",
                            "--device", "cpu", "--quiet")
    assert code == 2 and "20.00" not in out  # NaN logits argmax to class 0: exactly chance
    one_line(err, "is NaN or inf", "inner loop diverged", "lower --set inner_lr")
    code, _, err = in_cli(capsys, "analyze", "accuracy", ckpt, "--tasks", 3, "--set", "inner_lr=1e30",
                          "--out", tmp_path / "res", "--device", "cpu", "--quiet")
    assert code == 2 and not (tmp_path / "res" / "accuracy.csv").exists()
    one_line(err, "inner loop diverged")
    code, out, _ = in_cli(capsys, "evaluate", ckpt, "--tasks", 3, "--device", "cpu", "--quiet")
    assert code == 0  # the step size it was trained with still scores


def test_20_a_meta_learned_head_of_another_width_than_ways_is_refused(run, tmp_path, capsys):
    from repsim.study import Study
    five_way = load_checkpoint(run / "model.safetensors").build_model()
    mine = Checkpoint.from_module(five_way, "mine", dataset="synthetic", filters=8, ways=20)
    with pytest.raises(RepsimError, match=r"has a 5-way head but its config says ways: 20: .*ways=5"):
        Study.for_checkpoint(mine, num_tasks=2, device="cpu", progress=False).load(mine)
    # a study's tasks must be as wide as the head the inner loop starts from
    five = load_checkpoint(run / "model.safetensors")
    twenty_way_tasks = Study(dataset="synthetic", ways=20, shots=1, queries=2, num_tasks=2, device="cpu",
                             progress=False)
    with pytest.raises(RepsimError, match=r"has a 5-way head but the study's tasks are 20-way: .*--ways 5"):
        twenty_way_tasks.load(five)
    wrong = with_metadata(run / "model.safetensors", tmp_path / "w.safetensors",
                          lambda raw: raw.replace('"ways": 5', '"ways": 20'))
    code, out, err = in_cli(capsys, "evaluate", wrong, "--tasks", 2, "--device", "cpu", "--quiet")
    assert code == 2 and "%" not in out
    one_line(err, "5-way head", "ways: 20")


@pytest.mark.parametrize("args, needle", [
    (["--inner-steps", "3", "--set", "inner_steps_test=5"], "--inner-steps and --set inner_steps_test"),
    (["--queries", "3", "--set", "test_queries=5"], "--queries and --set test_queries"),
    (["--nil", "--inner-steps", "5"], "--nil tests without an inner loop"),
    (["--set", "inner_lr=0.1", "--set", "inner_lr=0.2"], "--set inner_lr=... is given twice"),
])
def test_21_two_options_that_say_one_thing_are_refused(run, tmp_path, args, needle, capsys):
    """The flag used to win unseen while the record named the --set value."""
    code, out, err = in_cli(capsys, "evaluate", run / "model.safetensors", "--tasks", 2, *args,
                            "--json", tmp_path / "e.json", "--device", "cpu", "--quiet")
    assert code == 2 and not (tmp_path / "e.json").exists()
    one_line(err, needle)
    if "--nil" not in args:
        code, _, err = in_cli(capsys, "analyze", "accuracy", run / "model.safetensors", "--tasks", 2, *args,
                              "--out", tmp_path / "res", "--device", "cpu", "--quiet")
        assert code == 2 and not (tmp_path / "res" / "accuracy.csv").exists()
        one_line(err, "not --set test_queries" if "test_queries=5" in args else needle)  # analyze: --queries only


def test_22_a_config_that_is_not_utf8_or_gives_a_key_twice_is_refused(tmp_path, capsys):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("ways: 5\n# caf\xe9\n".encode("latin-1"))
    code, _, err = in_cli(capsys, "train", "--config", bad, "--out", tmp_path / "r")
    assert code == 2 and not (tmp_path / "r").exists()
    one_line(err, "not UTF-8 text", "save it as UTF-8")
    twice = tmp_path / "twice.yaml"
    twice.write_text("dataset: synthetic\nways: 5\nways: 20\n")  # PyYAML alone keeps 20
    with pytest.raises(RepsimError, match=r"twice.yaml is not valid YAML \(key 'ways' is given twice\)"):
        load_config(twice)
    code, _, err = in_cli(capsys, "train", "--set", "dataset=synthetic", "--set", "ways=5", "--set", "ways=20",
                          "--out", tmp_path / "r2")
    assert code == 2 and not (tmp_path / "r2").exists()
    one_line(err, "--set ways=... is given twice")
    assert load_config(None, ["dataset=synthetic", "ways=5", "ways=20"]).ways == 20  # Python lists compose
    (tmp_path / "good.yaml").write_text("dataset: synthetic\n")
    with pytest.raises(RepsimError, match=r"unknown key\(s\) foo in --set; valid keys: algorithm"):
        load_config(tmp_path / "good.yaml", ["foo=1"])  # not "in good.yaml"
    from repsim.config import tested_with
    with pytest.raises(RepsimError, match=r"unknown key foo in --set: at test time"):  # not "fixed by its training"
        tested_with(load_config(None, ["dataset=synthetic"]), {"foo": "1"})


def test_29_a_result_table_cut_short_or_edited_is_not_reported(run, tmp_path, capsys):
    runner.run_analysis("similarity", [run / "model.safetensors"], tmp_path / "res",
                        TestProtocol(tasks=3, device="cpu"), progress=False)
    table = tmp_path / "res" / "similarity.csv"
    whole = table.read_bytes()
    assert in_cli(capsys, "report", tmp_path / "res")[0] == 0
    table.write_bytes(whole[: len(whole) - 7])  # cut mid-row: pandas would read NaN cells
    code, _, err = in_cli(capsys, "report", tmp_path / "res")
    assert code == 2
    one_line(err, "similarity.csv is not the table its analysis wrote", "re-run the analysis")
    table.write_bytes(whole)
    assert in_cli(capsys, "report", tmp_path / "res")[0] == 0
    # a table its analysis did not record writing (no digests: an earlier repsim's) is refused too
    meta = tmp_path / "res" / "similarity.json"
    record = json.loads(meta.read_text())
    del record["tables"]
    meta.write_text(json.dumps(record))
    code, _, err = in_cli(capsys, "report", tmp_path / "res")
    assert code == 2
    one_line(err, "similarity.csv is not among the tables its analysis recorded writing", "re-run the analysis")


@pytest.mark.parametrize("checkpoints", [["maml-s0-it500"], [{"algorithm": "maml"}]])
def test_29b_an_earlier_result_that_does_not_label_its_models_is_refused_not_extended(run, tmp_path, capsys,
                                                                                     checkpoints):
    """Which models an earlier result holds is checked before an analysis adds to it; a
    NAME.json whose checkpoints are damaged or carry no labels cannot say, so it is refused
    in one line (it was a traceback) and --replace overwrites it."""
    args = ("analyze", "accuracy", run / "model.safetensors", "--out", tmp_path / "res", "--tasks", 2,
            "--device", "cpu", "--quiet")
    assert in_cli(capsys, *args)[0] == 0
    meta = tmp_path / "res" / "accuracy.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "checkpoints": checkpoints}))
    code, _, err = in_cli(capsys, *args)
    assert code == 2
    one_line(err, "accuracy.json does not label the models it holds", "use --replace")
    assert in_cli(capsys, *args, "--replace")[0] == 0


@pytest.mark.parametrize("analysis, args, needle", [
    ("similarity", ["--frozen", "none", "conv1"], "analyze similarity does not use --frozen: leave it out "
                                                  "(it applies to freezing, freezing-decomposed)"),
    ("freezing", ["--layers", "conv1"], "analyze freezing does not use --layers"),
    ("regimes", ["--inner-steps", "3"], "analyze regimes does not use --inner-steps"),
])
def test_30_an_option_the_analysis_does_not_use_is_refused(run, tmp_path, analysis, args, needle, capsys):
    """They were accepted and ignored, so the user believed they had been applied."""
    code, _, err = in_cli(capsys, "analyze", analysis, run / "model.safetensors", *args, "--out", tmp_path / "res",
                          "--tasks", 2, "--device", "cpu", "--quiet")
    assert code == 2 and not (tmp_path / "res").exists()
    one_line(err, needle)


def test_31_a_refused_analysis_leaves_no_results_folder_behind(run, tmp_path, capsys):
    code, _, err = in_cli(capsys, "analyze", "freezing", run / "model.safetensors", "--shots", 30, "--out",
                          tmp_path / "res", "--tasks", 2, "--device", "cpu", "--quiet")
    assert code == 2 and not (tmp_path / "res").exists()  # it held only the analysis' lock file
    (tmp_path / "mine").mkdir()
    code, _, _ = in_cli(capsys, "analyze", "freezing", run / "model.safetensors", "--frozen", "conv9", "--out",
                        tmp_path / "mine", "--tasks", 2, "--device", "cpu", "--quiet")
    assert code == 2 and (tmp_path / "mine").is_dir()  # a folder it did not create is left alone


def test_32_messages_that_named_the_wrong_fix(run, tmp_path, capsys):
    # importing a repsim checkpoint: it needs no import (the message was about layouts and --rename)
    code, _, err = in_cli(capsys, "import", run / "model.safetensors", "--out", tmp_path / "x.safetensors")
    assert code == 2 and not (tmp_path / "x.safetensors").exists()
    one_line(err, "is already a repsim checkpoint", "no import needed")
    # a results folder with a table but not its provenance (the message listed every table as absent)
    runner.run_analysis("accuracy", [run / "model.safetensors"], tmp_path / "res",
                        TestProtocol(tasks=2, device="cpu"), progress=False)
    (tmp_path / "res" / "accuracy.json").unlink()
    code, _, err = in_cli(capsys, "report", tmp_path / "res")
    assert code == 2
    one_line(err, "accuracy.csv without accuracy.json")


def test_38_a_changed_byte_in_a_checkpoints_weights_is_refused(run, tmp_path, capsys):
    """A flipped bit inside a weight leaves a well-formed file with other weights; the SHA-256
    written with the tensors catches it. Checkpoints written before digests load as they are."""
    data = bytearray((run / "model.safetensors").read_bytes())
    header = int.from_bytes(data[:8], "little")
    start, end = json.loads(data[8:8 + header])["conv1.conv.weight"]["data_offsets"]
    data[8 + header + (start + end) // 2] ^= 0x10  # a bit of a weight the network uses
    (tmp_path / "flipped.safetensors").write_bytes(bytes(data))
    for args in (["evaluate", tmp_path / "flipped.safetensors", "--tasks", 2],
                 ["analyze", "accuracy", tmp_path / "flipped.safetensors", "--out", tmp_path / "res", "--tasks", 2]):
        code, _, err = in_cli(capsys, *args, "--device", "cpu", "--quiet")
        assert code == 2
        one_line(err, "flipped.safetensors is corrupt", "SHA-256")
    assert not (tmp_path / "res").exists()
    assert load_checkpoint(run / "model.safetensors").iteration == 5  # the file as written loads
    # a file written before digests: the same weights, no digest
    old = with_metadata(run / "model.safetensors", tmp_path / "old.safetensors",
                        lambda raw: json.dumps({k: v for k, v in json.loads(raw).items() if k != "tensors_sha256"}))
    assert "tensors_sha256" not in read_metadata(old)
    assert torch.equal(load_checkpoint(old).params["conv1.conv.weight"],
                       load_checkpoint(run / "model.safetensors").params["conv1.conv.weight"])
    # and a digest damaged in the metadata is damaged metadata, not changed tensors
    bad = with_metadata(run / "model.safetensors", tmp_path / "bad.safetensors",
                        lambda raw: json.dumps({**json.loads(raw), "tensors_sha256": None}))
    with pytest.raises(RepsimError, match="damaged repsim metadata .tensors_sha256 is not a SHA-256"):
        load_checkpoint(bad)


def test_39_an_import_named_after_an_algorithm_is_not_pooled_with_repsims_runs(run, tmp_path, capsys):
    """maml.pt imports as a model named "maml", the unit repsim's own MAML runs are reported
    under: its rows must stay its own, and repsim's rows must not read "imported"."""
    torch.save({n: p + 0.01 for n, p in load_checkpoint(run / "model.safetensors").params.items()},
               tmp_path / "maml.pt")
    trained_as = [line for line in (run / "config.yaml").read_text().splitlines() if not line.startswith("seed:")]
    (tmp_path / "c.yaml").write_text("\n".join(trained_as) + "\n")  # how it was trained, its seed untold
    assert in_cli(capsys, "import", tmp_path / "maml.pt", "--config", tmp_path / "c.yaml",
                  "--out", tmp_path / "maml.safetensors")[0] == 0
    assert in_cli(capsys, "analyze", "freezing", run / "model.safetensors", tmp_path / "maml.safetensors",
                  "--out", tmp_path / "res", "--tasks", 2, "--frozen", "none", "--device", "cpu", "--quiet")[0] == 0
    assert sorted(set(pd.read_csv(tmp_path / "res" / "freezing.csv")["model"])) == ["maml", "maml (imported)"]
    assert in_cli(capsys, "report", tmp_path / "res")[0] == 0
    lines = (tmp_path / "res" / "report.md").read_text().splitlines()
    own = [r for r in lines if r.startswith("| MAML | ")]
    imported = [r for r in lines if r.startswith("| maml (imported) | ")]
    assert len(own) == len(imported) == 1
    assert "| 5 | none | 0 |" in own[0] and "| imported | none | unknown |" in imported[0]


def test_35_analyze_takes_query_points_from_queries_not_test_queries(run, tmp_path, capsys):
    code, _, err = in_cli(capsys, "analyze", "accuracy", run / "model.safetensors", "--tasks", 2,
                          "--set", "test_queries=5", "--out", tmp_path / "res", "--device", "cpu", "--quiet")
    assert code == 2 and not (tmp_path / "res").exists()
    one_line(err, "analyze tests every model on --queries query points per class (15 now)", "not --set test_queries")


def test_36_a_validation_whose_inner_loop_diverges_is_logged_and_training_goes_on(tmp_path, monkeypatch):
    """Validation runs the test-time inner loop (often more steps than training's); its NaN
    must not end a run whose meta-gradients are finite."""
    from repsim import train as train_module
    from repsim.errors import not_finite
    monkeypatch.setattr(train_module, "score_tasks", lambda *a, **k: (_ for _ in ()).throw(not_finite("x")))
    final = train(config(), tmp_path / "r", device="cpu", progress=False)
    assert final.is_file()
    logged = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert logged and all(m["val_accuracy"] is None for m in logged)
