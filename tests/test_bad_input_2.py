"""Bad input and faults, round 2 (issue 31: wrong numbers with exit 0, lost results and
tracebacks): each case a one-line error with the fix, a non-zero exit and nothing
half-written; case numbers refer to docs/BAD_INPUT.md (41 on)."""

import pytest

from bad_input_helpers import config, in_cli, one_line, train_run, with_metadata
from repsim.config import load_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_run(tmp_path_factory.mktemp("bad2"))


MINE = ("--layout", "repsim", "--set", "dataset=synthetic", "--set", "conventions=finn")  # the run's weights as a file


# 41: --set without a value ------------------------------------------------------------------
@pytest.mark.parametrize("value", ["", "null", "~", "None"])
def test_41_a_set_without_a_value_is_refused_not_read_as_the_default(run, tmp_path, capsys, value):
    # it replaced the checkpoint's inner_lr by the paper's default, and exited 0 with another accuracy
    code, out, err = in_cli(capsys, "evaluate", run / "model.safetensors", "--tasks", 2, "--set",
                            f"inner_lr={value}", "--device", "cpu", "--quiet")
    assert code == 2 and "%" not in out
    one_line(err, f"--set inner_lr={value} gives inner_lr no value", "leave inner_lr out for its default")
    # training: it was a TypeError traceback after the run folder was made
    code, _, err = in_cli(capsys, "train", "--set", "dataset=synthetic", "--set", "iterations=2",
                          "--set", f"inner_lr={value}", "--out", tmp_path / "r", "--quiet")
    assert code == 2 and not (tmp_path / "r").exists()
    one_line(err, "gives inner_lr no value")


# 42: YAML 1.1 numbers in --set ---------------------------------------------------------------
def test_42_set_numbers_are_read_as_written_not_as_yaml_1_1():
    assert load_config(None, ["iterations=010"]).iterations == 10      # YAML 1.1: octal 8
    with pytest.raises(Exception, match="bad value '1:0' for checkpoint_every: expected an integer"):
        load_config(None, ["checkpoint_every=1:0"])                     # YAML 1.1: base 60, 60
    with pytest.raises(Exception, match="bad value 'nan' for inner_lr"):
        load_config(None, ["inner_lr=nan"])
    assert load_config(None, ["inner_lr=1e-3", "rotate=False"]).inner_lr == 0.001


# 43: a test-time --set of an unknown key lists the keys it may set ------------------------------
def test_43_an_unknown_test_key_lists_only_the_test_keys(run, capsys):
    code, _, err = in_cli(capsys, "evaluate", run / "model.safetensors", "--tasks", 2, "--set", "bogus=1",
                          "--device", "cpu", "--quiet")
    assert code == 2
    one_line(err, "unknown key bogus in --set: at test time --set takes only inner_lr, inner_loss, "
                  "adapt_batchnorm, inner_steps_test, test_queries")
    assert "algorithm" not in err[0]


# 44: probes into one folder ------------------------------------------------------------------
def test_44_probe_refuses_a_folder_of_someone_elses_files_and_a_second_probe(run, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "meta.json").write_text('{"my": "notes"}')
    (mine / "task-0000.safetensors").write_bytes(b"my own")
    code, _, err = in_cli(capsys, "probe", run / "model.safetensors", "--tasks", 2, "--out", mine,
                          "--device", "cpu", "--quiet")
    assert code == 2
    one_line(err, "holds files repsim probe did not write", "choose an empty --out")
    assert (mine / "task-0000.safetensors").read_bytes() == b"my own"  # deleted before
    # an earlier probe's folder is rewritten; a probe running into it refuses a second one
    out = tmp_path / "probes"
    assert in_cli(capsys, "probe", run / "model.safetensors", "--tasks", 2, "--out", out, "--device", "cpu",
                  "--quiet")[0] == 0
    assert in_cli(capsys, "probe", run / "model.safetensors", "--tasks", 3, "--out", out, "--device", "cpu",
                  "--quiet")[0] == 0
    assert sorted(p.name for p in out.glob("task-*")) == ["task-0000.safetensors", "task-0001.safetensors",
                                                        "task-0002.safetensors"]
    import fcntl
    with open(out / ".probe.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        code, _, err = in_cli(capsys, "probe", run / "model.safetensors", "--tasks", 2, "--out", out,
                              "--device", "cpu", "--quiet")
    assert code == 2
    one_line(err, "is running the probe analysis into")
    assert len(list(out.glob("task-*"))) == 3


# 45: a results folder whose provenance is missing or damaged ----------------------------------
@pytest.mark.parametrize("damage", ["missing", "damaged"])
def test_45_a_table_without_readable_provenance_is_not_silently_cut_to_a_subset(run, tmp_path, capsys, damage):
    from repsim.runner import run_analysis
    from repsim.study import TestProtocol
    from repsim.train import train
    other = train(config("seed=1"), tmp_path / "other", device="cpu", progress=False)
    res = tmp_path / "res"
    run_analysis("accuracy", [run / "model.safetensors", other], res, TestProtocol(tasks=2, device="cpu"),
                 progress=False)
    if damage == "missing":
        (res / "accuracy.json").unlink()
    else:
        (res / "accuracy.json").write_text('{"checkpoints": 3')
    code, _, err = in_cli(capsys, "analyze", "accuracy", run / "model.safetensors", "--tasks", 2, "--out", res,
                          "--device", "cpu", "--quiet")
    assert code == 2
    one_line(err, "accuracy.csv has no readable provenance", f"accuracy.json is {damage}", "--replace")
    assert "s1" in (res / "accuracy.csv").read_text()  # the other model's rows are still there
    assert in_cli(capsys, "analyze", "accuracy", run / "model.safetensors", "--tasks", 2, "--out", res,
                  "--device", "cpu", "--quiet", "--replace")[0] == 0


# 46: the lock file of an analysis never writes through a link ---------------------------------
def test_46_a_lock_file_that_is_a_link_is_refused_and_its_target_untouched(run, tmp_path, capsys):
    res = tmp_path / "res"
    res.mkdir()
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (res / ".accuracy.lock").symlink_to(target)
    code, _, err = in_cli(capsys, "analyze", "accuracy", run / "model.safetensors", "--tasks", 2, "--out", res,
                          "--device", "cpu", "--quiet")
    assert code == 2
    one_line(err, "cannot use the lock file", "it is a link", "remove it")
    assert target.read_text() == "keep me"


# 47: writable checks of processes side by side ----------------------------------------------
def test_47_concurrent_writable_checks_do_not_collide(tmp_path, monkeypatch):
    # two processes checked with one file name: one deleted the other's, which then failed (a
    # finished analysis was thrown away at its last write). Each check now has a name of its own.
    import repsim.results as results
    made = []
    real = results.tempfile.mkstemp

    def spy(*args, **kwargs):
        fd, path = real(*args, **kwargs)
        made.append(path)
        return fd, path
    monkeypatch.setattr(results.tempfile, "mkstemp", spy)
    results.check_writable(tmp_path)
    results.check_writable(tmp_path)
    assert len(set(made)) == 2 and not any(tmp_path.iterdir())


# 48: a frozen set or layer given twice ------------------------------------------------------
def test_48_a_frozen_set_or_layer_given_twice_is_refused_before_the_work(run, tmp_path, capsys):
    code, _, err = in_cli(capsys, "analyze", "freezing", run / "model.safetensors", "--frozen", "none", "conv1",
                          "conv1", "--tasks", 2, "--out", tmp_path / "r", "--device", "cpu", "--quiet")
    assert code == 2 and not (tmp_path / "r").exists()
    one_line(err, "--frozen gives conv1 more than once")
    code, _, err = in_cli(capsys, "analyze", "similarity", run / "model.safetensors", "--layers", "conv1,conv1",
                          "--tasks", 2, "--out", tmp_path / "r", "--device", "cpu", "--quiet")
    assert code == 2
    one_line(err, "--layers gives conv1 more than once")


def test_48b_layers_that_name_no_layer_are_refused_not_read_as_every_layer(run, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        in_cli(capsys, "analyze", "similarity", run / "model.safetensors", "--layers", ",", "--tasks", 2,
               "--out", tmp_path / "r")
    assert exit_.value.code == 2
    assert "',' names no layer" in capsys.readouterr().err


# 49: two tensors' byte ranges swapped in a checkpoint's header --------------------------------
def test_49_a_header_that_swaps_two_tensors_is_refused(run, tmp_path):
    import json as json_

    from repsim.checkpoint import load_checkpoint, save_checkpoint
    path = save_checkpoint(tmp_path / "c.safetensors", load_checkpoint(run / "model.safetensors"))
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json_.loads(data[8:8 + size])
    a, b = "conv2.conv.weight", "conv3.conv.weight"  # same dtype and shape: the bytes' digest is blind to it
    header[a]["data_offsets"], header[b]["data_offsets"] = header[b]["data_offsets"], header[a]["data_offsets"]
    text = json_.dumps(header, separators=(",", ":")).encode()
    text += b" " * (size - len(text))
    assert len(text) == size
    path.write_bytes(data[:8] + text + data[8 + size:])
    with pytest.raises(Exception, match="corrupt .its tensor index"):
        load_checkpoint(path)


# 50: one model imported under two names ------------------------------------------------------
def test_50_the_same_weights_under_two_names_are_one_model(run, tmp_path, capsys):
    import torch

    from repsim.checkpoint import load_checkpoint
    torch.save(load_checkpoint(run / "model.safetensors").params, tmp_path / "w.pt")
    for name in ("first", "second"):
        assert in_cli(capsys, "import", tmp_path / "w.pt", *MINE,
                      "--name", name, "--out", tmp_path / f"{name}.safetensors")[0] == 0
    code, _, err = in_cli(capsys, "analyze", "cross", tmp_path / "first.safetensors", tmp_path / "second.safetensors",
                          "--tasks", 2, "--out", tmp_path / "res", "--device", "cpu", "--quiet")
    assert code == 2 and not (tmp_path / "res" / "cross.csv").exists()  # it gave table 3 a CCA of 1.000
    one_line(err, "hold the same weights", "list one of them")


# 51: --rename onto a name another tensor has --------------------------------------------------
def test_51_a_rename_that_maps_two_tensors_onto_one_name_is_refused(run, tmp_path, capsys):
    import torch

    from repsim.checkpoint import load_checkpoint
    params = load_checkpoint(run / "model.safetensors").params
    torch.save({**params, "classifier.weight": params["head.weight"] + 1}, tmp_path / "w.pt")
    code, _, err = in_cli(capsys, "import", tmp_path / "w.pt", *MINE,
                          "--rename", "^classifier\\.=head.", "--out", tmp_path / "x.safetensors")
    assert code == 2 and not (tmp_path / "x.safetensors").exists()
    one_line(err, "maps head.weight and classifier.weight both onto head.weight")


# 52: weights no network holds, and a checkpoint of a future format ---------------------------
@pytest.mark.parametrize("spoil, needle", [
    (lambda p: {**p, "conv1.conv.weight": p["conv1.conv.weight"].to(__import__("torch").complex64)},
     "conv1.conv.weight holds complex64 values, not real numbers"),
    (lambda p: {**p, "head.bias": p["head.bias"] * float("nan")}, "head.bias holds NaN or infinite values"),
    (lambda p: {**p, "head.weight": p["head.weight"].to_sparse()}, "head.weight is a sparse_coo tensor"),
    (lambda p: {**{i: t for i, t in enumerate(p.values())}}, "names a tensor by 0 (int), not by a string"),
])
def test_52_weights_that_are_not_a_networks_are_refused_at_import(run, tmp_path, capsys, spoil, needle):
    import torch

    from repsim.checkpoint import load_checkpoint
    torch.save(spoil(load_checkpoint(run / "model.safetensors").params), tmp_path / "w.pt")
    code, _, err = in_cli(capsys, "import", tmp_path / "w.pt", *MINE,
                          "--out", tmp_path / "x.safetensors")
    assert code == 2 and not (tmp_path / "x.safetensors").exists()
    one_line(err, needle)


def test_52b_npz_text_arrays_and_a_checkpoint_of_a_future_format(run, tmp_path, capsys):
    import json as json_

    import numpy as np

    from repsim.checkpoint import load_checkpoint
    params = {k: v.numpy() for k, v in load_checkpoint(run / "model.safetensors").params.items()}
    np.savez(tmp_path / "w.npz", **params, note=np.array(["trained by me"]))
    code, _, err = in_cli(capsys, "import", tmp_path / "w.npz", *MINE,
                          "--out", tmp_path / "x.safetensors")
    assert code == 2
    one_line(err, "note holds <U13 values, not numbers")

    def future(raw):
        meta = json_.loads(raw)
        meta["format"] = "repsim-checkpoint-2"
        return json_.dumps(meta)
    ckpt = with_metadata(run / "model.safetensors", tmp_path / "future.safetensors", future)
    code, _, err = in_cli(capsys, "evaluate", ckpt, "--tasks", 2, "--device", "cpu", "--quiet")
    assert code == 2
    one_line(err, "format 'repsim-checkpoint-2', which this repsim", "does not know")
    # the first repsims wrote no format field: none of their checkpoints is kept, and one is refused
    ckpt = with_metadata(run / "model.safetensors", tmp_path / "first.safetensors",
                         lambda raw: json_.dumps({k: v for k, v in json_.loads(raw).items() if k != "format"}))
    code, _, err = in_cli(capsys, "evaluate", ckpt, "--tasks", 2, "--device", "cpu", "--quiet")
    assert code == 2
    one_line(err, "first.safetensors is a checkpoint without a format field, which this repsim", "does not know",
             "re-train it with 'repsim train'")


# 53: tracebacks -------------------------------------------------------------------------------
def test_53_a_seed_beyond_64_bits_is_refused_before_the_run_folder(tmp_path, capsys):
    code, _, err = in_cli(capsys, "train", "--set", "dataset=synthetic", "--set", "seed=99999999999999999999",
                          "--out", tmp_path / "r", "--quiet")
    assert code == 2 and not (tmp_path / "r").exists()  # it was an overflow traceback in torch.manual_seed
    one_line(err, "seed must be below 2**63")


def test_53b_a_full_disk_is_one_line_and_leaves_the_old_file(run, tmp_path, monkeypatch):
    import errno

    from repsim.errors import RepsimError
    from repsim.io import atomic_write_text
    target = tmp_path / "result.json"
    target.write_text("old")
    real = __import__("os").fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr("repsim.io.os.fdopen", lambda fd, mode: Full(real(fd, mode)))
    with pytest.raises(RepsimError, match="No space left on device.*free space on its disk.*file there is unchanged"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_53c_help_and_version_import_no_torch_and_a_closed_pipe_is_quiet(run):
    import subprocess
    import sys
    code = ("import sys; from repsim.cli import build_parser; build_parser(); "
            "print('torch' in sys.modules, 'pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.split()
    assert out == ["False", "False"]  # --help and --version took 2.5-4 s, and Ctrl-C then was a traceback
    head = subprocess.run(f"{sys.executable} -m repsim.cli train --help | head -1", shell=True,
                          capture_output=True, text=True)
    assert head.stdout.startswith("usage:") and "Traceback" not in head.stderr and "BrokenPipe" not in head.stderr


def test_53d_metadata_and_provenance_of_wrong_types_are_one_line(run, tmp_path, capsys):
    import json as json_


    def devices(raw):
        meta = json_.loads(raw)
        meta["extra"]["devices"] = 5
        return json_.dumps(meta)
    ckpt = with_metadata(run / "model.safetensors", tmp_path / "c.safetensors", devices)
    code, _, err = in_cli(capsys, "evaluate", ckpt, "--tasks", 2, "--device", "cpu", "--quiet")
    assert code == 2
    one_line(err, "extra.devices is 5, not a list of devices")

    from repsim.runner import run_analysis
    from repsim.study import TestProtocol
    run_analysis("accuracy", [run / "model.safetensors"], tmp_path / "res", TestProtocol(tasks=2, device="cpu"),
                 progress=False)
    meta = tmp_path / "res" / "accuracy.json"
    record = json_.loads(meta.read_text())
    record["checkpoints"][0]["iteration"] = "five"
    meta.write_text(json_.dumps(record))
    code, _, err = in_cli(capsys, "report", tmp_path / "res")
    assert code == 2
    one_line(err, "checkpoint 0's iteration is 'five', not an integer", "re-run the analysis")


def test_53e_a_name_that_is_not_utf8_and_an_empty_logits_batch(run, tmp_path, capsys):
    import torch

    from repsim.checkpoint import load_checkpoint
    torch.save(load_checkpoint(run / "model.safetensors").params, tmp_path / "w.pt")
    code, _, err = in_cli(capsys, "import", tmp_path / "w.pt", *MINE,
                          "--name", "caf\udce9", "--out", tmp_path / "x.safetensors")
    assert code == 2 and not (tmp_path / "x.safetensors").exists()
    one_line(err, "is not UTF-8 text", "--name")
    torch.save(torch.zeros(0, 1, 28, 28), tmp_path / "x.pt")
    torch.save(torch.zeros(0, 5), tmp_path / "y.pt")
    code, _, err = in_cli(capsys, "import", tmp_path / "w.pt", *MINE,
                          "--check-logits", tmp_path / "x.pt", tmp_path / "y.pt", "--out", tmp_path / "x.safetensors")
    assert code == 2
    one_line(err, "holds no images (an empty batch)")


# 54: misleading messages ----------------------------------------------------------------------
def test_54_nan_logits_are_called_nan_not_a_difference(run, tmp_path, capsys):
    import torch

    from repsim.checkpoint import load_checkpoint
    torch.save(load_checkpoint(run / "model.safetensors").params, tmp_path / "w.pt")
    torch.save(torch.rand(4, 1, 28, 28), tmp_path / "x.pt")
    torch.save(torch.full((4, 5), float("nan")), tmp_path / "y.pt")
    code, _, err = in_cli(capsys, "import", tmp_path / "w.pt", *MINE,
                          "--check-logits", tmp_path / "x.pt", tmp_path / "y.pt", "--out", tmp_path / "x.safetensors")
    assert code == 2
    one_line(err, "the logits are NaN or infinite")
    assert "differ" not in err[0]


def test_54b_a_bad_value_in_a_checkpoints_config_names_the_file(run, tmp_path, capsys):
    import json as json_


    def bad(raw):
        meta = json_.loads(raw)
        meta["config"]["inner_lr"] = -1.0
        return json_.dumps(meta)
    ckpt = with_metadata(run / "model.safetensors", tmp_path / "c.safetensors", bad)
    code, _, err = in_cli(capsys, "evaluate", ckpt, "--tasks", 2, "--device", "cpu", "--quiet")
    assert code == 2
    one_line(err, str(ckpt), "inner_lr must be a positive finite number")


def test_54c_a_data_root_for_the_built_in_data_is_refused_not_ignored(run, tmp_path, capsys):
    code, _, err = in_cli(capsys, "train", "--set", "dataset=synthetic", "--set", "iterations=2", "--data-root",
                          tmp_path, "--out", tmp_path / "r", "--quiet")
    assert code == 2 and not (tmp_path / "r").exists()
    one_line(err, "synthetic data set is built in", "leave out")
    code, _, err = in_cli(capsys, "evaluate", run / "model.safetensors", "--tasks", 2, "--data-root", tmp_path,
                          "--device", "cpu", "--quiet")
    assert code == 2
    one_line(err, "synthetic data set is built in", "leave out --data-root")


def test_54d_resuming_a_finished_run_with_a_new_schedule_key_is_refused(run, tmp_path, capsys):
    import shutil
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = (copy / "config.yaml").read_text()
    code, _, err = in_cli(capsys, "train", "--out", copy, "--resume", "--set", "reduced=true", "--quiet")
    assert code == 2
    one_line(err, "is finished (iteration 5)", "--set reduced", "train it longer with --set iterations=N")
    assert (copy / "config.yaml").read_text() == before  # it was rewritten, the checkpoints not


def test_55_a_results_folder_of_a_future_format_is_refused_by_the_report(run, tmp_path, capsys):
    import json as json_

    from repsim.runner import run_analysis
    from repsim.study import TestProtocol
    run_analysis("accuracy", [run / "model.safetensors"], tmp_path / "res", TestProtocol(tasks=2, device="cpu"),
                 progress=False)
    meta = tmp_path / "res" / "accuracy.json"
    record = json_.loads(meta.read_text())
    assert record["format"] == "repsim-results-2"
    for other in ("repsim-results-3", "repsim-results-1"):  # a newer repsim's, or one before NAME_over_seeds.csv
        record["format"] = other
        meta.write_text(json_.dumps(record))
        code, _, err = in_cli(capsys, "report", tmp_path / "res")
        assert code == 2
        one_line(err, f"of format '{other}', which this repsim does not read (it reads 'repsim-results-2'): "
                      f"re-run 'repsim analyze' into")
