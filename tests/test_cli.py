"""The command line as a user meets it: help, version, one spelling per flag, readable output."""

import re
import shlex

import pandas as pd
import pytest

import repsim
from repsim.cli import EXAMPLES, build_parser, main
from repsim.config import load_config
from repsim.train import train

COMMANDS = ("train", "evaluate", "import", "analyze", "probe", "reproduce", "report", "bench")


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    text = capsys.readouterr().out
    assert done.value.code == 0 and all(command in text for command in COMMANDS)


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"repsim {repsim.__version__}"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_shows_its_defaults_and_a_runnable_example(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    assert "examples:" in text and EXAMPLES[command].splitlines()[0] in text
    text = " ".join(text.split())  # help wraps lines anywhere
    assert "(default: None)" not in text
    if "--device" in text:
        assert "(default: auto)" in text
    # every example parses: no example names a flag the command does not have
    parser = build_parser()
    for line in EXAMPLES[command].splitlines():
        parser.parse_args(shlex.split(line.split("#")[0])[1:])  # as a shell would split it


def test_shared_flags_have_one_meaning_and_one_default_across_commands():
    parser = build_parser()
    subs = parser._subparsers._group_actions[0].choices
    seen = {}
    for name in ("evaluate", "analyze", "probe"):
        for action in subs[name]._actions:
            if action.option_strings and action.dest in ("seed", "device", "quiet", "data_root", "set"):
                seen.setdefault(action.dest, set()).add(action.default)
    assert all(len(defaults) == 1 for defaults in seen.values()), seen
    tasks = {name: next(a.default for a in subs[name]._actions if a.dest == "tasks")
             for name in ("evaluate", "analyze")}
    assert tasks == {"evaluate": 600, "analyze": 600}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    config = load_config(None, ["dataset=synthetic", "ways=5", "shots=1", "queries=3", "filters=8",
                                "meta_batch_size=2", "iterations=4", "checkpoint_every=2",
                                "eval_every=2", "eval_tasks=3"])
    return train(config, tmp_path_factory.mktemp("run") / "maml", device="cpu", progress=False)


def test_analyze_takes_either_spelling_and_prints_a_readable_table(run, tmp_path, capsys):
    out = tmp_path / "results"
    code = main(["analyze", "through_training", str(run.parent), "--out", str(out), "--tasks", "3",
                 "--queries", "3", "--quiet"])
    assert code == 0 and (out / "through_training.csv").is_file()
    capsys.readouterr()
    code = main(["analyze", "similarity", str(run), "--out", str(out), "--tasks", "3", "--queries", "3",
                 "--layers", "conv1,conv2", "head", "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0
    table = pd.read_csv(out / "similarity.csv")
    assert set(table.layer) == {"conv1", "conv2", "head"}  # commas and spaces alike
    assert "," not in printed.splitlines()[0] and "model" in printed.splitlines()[0]
    assert not re.search(r"\d\.\d{4,}", printed)  # no 15-digit floats on the terminal
    assert "'repsim report" in printed


def test_analyze_cross_prints_table_3_below_its_layers(run, tmp_path, capsys):
    """Two checkpoints of one run (one seed): one model pair, shown as table 3's row too."""
    steps = sorted((run.parent / "checkpoints").glob("iter-*.safetensors"))
    out = tmp_path / "results"
    assert main(["analyze", "cross", str(steps[0]), str(steps[-1]), "--out", str(out), "--tasks", "3",
                 "--queries", "3", "--quiet"]) == 0
    printed = capsys.readouterr().out
    layers, table3 = printed.split("body layers averaged, mean and std over model pairs (cross_pairs.csv):")
    assert "same_seed" in layers.splitlines()[0] and "conv4" in layers
    header, *rows = table3.strip().splitlines()[:-1]  # the last line says what was written
    assert header.split() == ["pair", "same_seed", "measure", "mean", "std", "model_pairs"]
    assert [r.split()[:3] for r in rows] == [["MAML-MAML", "True", "cca"], ["MAML-MAML", "True", "cka"]]
    assert all(r.split()[4] == "-" and r.split()[5] == "1" for r in rows)  # one pair: no spread


def test_analyze_refuses_an_unknown_analysis_naming_the_choices(capsys):
    with pytest.raises(SystemExit) as done:
        main(["analyze", "freezng", "x.safetensors", "--out", "r"])
    assert done.value.code == 2 and "through-training" in capsys.readouterr().err


def test_python_m_repsim_and_the_report_use_the_cli_spelling(run, tmp_path, capsys):
    from repsim.report import write_report
    out = tmp_path / "results"
    assert main(["analyze", "accuracy", str(run), "--out", str(out), "--tasks", "3", "--quiet"]) == 0
    report = write_report(out).read_text()
    assert "through-training" in report and "through_training:" not in report


def test_the_thread_policy_uses_free_cores_and_respects_the_users_settings(monkeypatch):
    from repsim import threads
    assert threads.policy(cores=2, load=0.1) == {"OMP_NUM_THREADS": "2", "GOMP_SPINCOUNT": threads.SPIN}
    assert threads.policy(cores=2, load=1.2) == {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    assert threads.policy(cores=16, load=5.0)["OMP_NUM_THREADS"] == "11"
    assert threads.policy(cores=4, load=9.0)["OMP_NUM_THREADS"] == "1"
    for key in threads.USER_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.apply() == {} and "GOMP_SPINCOUNT" not in __import__("os").environ


def test_benchmarks_print_the_thread_count_they_ran_with(monkeypatch):
    import torch

    from repsim import threads
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    try:
        for count, said in ((1, "1 thread,"), (2, "2 threads,")):
            torch.set_num_threads(count)
            assert threads.describe() == f"{said} OMP_WAIT_POLICY=PASSIVE, GOMP_SPINCOUNT=unset"
    finally:
        torch.set_num_threads(before)
