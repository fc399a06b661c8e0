"""The trainer, checkpoints and the CLI, as a user drives them."""

import json
import os
import pickle
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from repsim.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from repsim.cli import main as cli
from repsim.config import Config, load_config
from repsim.errors import RepsimError
from repsim.importing import import_weights
from repsim.meta import own_inner_loop
from repsim.model import model_for
from repsim.study import evaluate_checkpoint
from repsim.train import train

TINY = ["dataset=synthetic", "ways=5", "shots=1", "filters=16", "meta_batch_size=2",
        "iterations=6", "checkpoint_every=3", "eval_every=3", "eval_tasks=4"]


def tiny(*extra) -> Config:
    return load_config(None, TINY + list(extra))


def test_unknown_config_key_lists_valid_ones(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("algoritm: maml\n")
    with pytest.raises(RepsimError, match=r"unknown key\(s\) algoritm .*valid keys: algorithm"):
        load_config(path)


def test_set_values_are_typed():
    c = load_config(None, ["inner_lr=0.05", "rotate=false", "ways=20"])
    assert (c.inner_lr, c.rotate, c.ways) == (0.05, False, 20)
    assert c.inner_steps == 5 and c.meta_batch_size == 16  # 20-way defaults from the paper
    with pytest.raises(RepsimError, match="bad value 'five' for ways"):
        load_config(None, ["ways=five"])


def test_checkpoint_roundtrip_and_metadata(tmp_path):
    config = tiny()
    model = model_for(config)
    ckpt = Checkpoint(config, dict(model.state_dict()), 7, {"val_accuracy": 50.0})
    path = save_checkpoint(tmp_path / "c.safetensors", ckpt)
    back = load_checkpoint(path)
    assert back.config == config and back.iteration == 7 and back.metrics["val_accuracy"] == 50.0
    for n, p in model.state_dict().items():
        assert torch.equal(back.params[n], p)


def test_interrupted_checkpoint_write_leaves_the_old_one(tmp_path, monkeypatch):
    config = tiny()
    path = save_checkpoint(tmp_path / "c.safetensors", Checkpoint(config, dict(model_for(config).state_dict()), 1))
    before = path.read_bytes()

    def dies(fd):  # killed after the bytes are written, before the rename
        raise KeyboardInterrupt

    monkeypatch.setattr("repsim.io.os.fsync", dies)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, Checkpoint(config, dict(model_for(config).state_dict()), 2))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]


def test_other_architecture_names_the_mismatching_layers(tmp_path):
    small = tiny()
    path = save_checkpoint(tmp_path / "c.safetensors", Checkpoint(small, dict(model_for(small).state_dict())))
    ckpt = load_checkpoint(path)
    ckpt.config = tiny("filters=32")
    with pytest.raises(RepsimError, match=r"layers conv1, conv2, conv3, conv4, head have other shapes "
                                          r"\(e\.g\. conv1\.bn\.bias \(16,\) vs \(32,\)\)"):
        ckpt.build_model()


class Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def as_overrides(config) -> list[str]:
    """A resolved config as `repsim import --set` arguments."""
    return [f"{k}={v}" for k, v in config.to_dict().items() if v is not None]


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    Exploit.marker = marker
    weights = tmp_path / "evil.pt"
    with open(weights, "wb") as f:
        pickle.dump({"conv1.conv.weight": Exploit()}, f)
    with pytest.raises(RepsimError, match="refusing to load .*evil.pt: it holds pickled Python objects") as err:
        import_weights(weights, tmp_path / "out.safetensors", overrides=as_overrides(tiny()), layout="repsim")
    assert not marker.exists()
    assert not (tmp_path / "out.safetensors").exists()
    assert "\x1b" not in str(err.value) and "can still be loaded" not in str(err.value)  # torch's text


def test_plain_state_dict_from_elsewhere_imports(tmp_path):
    """A conv4 trained by other code: native BatchNorm with running stats, a 'module.' prefix."""
    config = tiny()
    ours = model_for(config)
    torch.manual_seed(3)
    foreign = {}
    for n, p in ours.state_dict().items():
        foreign["module." + n] = torch.randn_like(p)
    for i in range(1, 5):
        foreign[f"module.conv{i}.bn.running_mean"] = torch.zeros(16)
        foreign[f"module.conv{i}.bn.num_batches_tracked"] = torch.tensor(5)
    torch.save(foreign, tmp_path / "w.pt")
    out = import_weights(tmp_path / "w.pt", tmp_path / "imported.safetensors", overrides=as_overrides(config),
                         layout="repsim").path
    back = load_checkpoint(out)
    assert torch.equal(back.params["conv2.conv.weight"], foreign["module.conv2.conv.weight"])
    assert back.extra["imported_from"].endswith("w.pt")


def _params_of(path):
    return {n: t for n, t in load_file(str(path)).items()}


def test_resumed_run_ends_bit_identical(tmp_path):
    # evaluations (every 2) straddle checkpoints (every 3): the running training-metric sums
    # must survive the interruption too
    config = tiny("algorithm=maml", "eval_every=2")
    train(config, tmp_path / "whole", device="cpu", progress=False)
    train(config, tmp_path / "split", device="cpu", progress=False, stop_after=4)  # dies after iter 4
    assert (tmp_path / "split" / "checkpoints" / "iter-000003.safetensors").exists()
    assert not (tmp_path / "split" / "model.safetensors").exists()
    train(config, tmp_path / "split", device="cpu", progress=False, resume=True)
    whole = _params_of(tmp_path / "whole" / "model.safetensors")
    split = _params_of(tmp_path / "split" / "model.safetensors")
    assert whole.keys() == split.keys()
    for n in whole:
        assert torch.equal(whole[n], split[n]), n
    assert (tmp_path / "whole" / "metrics.jsonl").read_text() == (tmp_path / "split" / "metrics.jsonl").read_text()


def _resumes_to_the_unbroken_run(config, tmp_path, stopped):
    train(config, tmp_path / "whole", device="cpu", progress=False)
    train(config, stopped, device="cpu", progress=False, resume=True)
    whole = _params_of(tmp_path / "whole" / "model.safetensors")
    for n, t in _params_of(stopped / "model.safetensors").items():
        assert torch.equal(whole[n], t), n
    assert (tmp_path / "whole" / "metrics.jsonl").read_text() == (stopped / "metrics.jsonl").read_text()


def test_a_time_limit_stops_after_an_iteration_with_a_checkpoint_off_the_grid(tmp_path, capsys):
    config = tiny("algorithm=maml", "eval_every=2")  # checkpoints every 3
    stopped = train(config, tmp_path / "split", device="cpu", progress=False, time_limit=0)
    assert stopped == tmp_path / "split" / "checkpoints" / "iter-000001.safetensors"
    assert load_checkpoint(stopped).iteration == 1
    assert "time limit reached at iteration 1" in capsys.readouterr().err
    _resumes_to_the_unbroken_run(config, tmp_path, tmp_path / "split")


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_ctrl_c_stops_after_the_iteration_with_a_checkpoint_and_resumes(tmp_path, monkeypatch, capsys, sig):
    # without it, Ctrl-C lost every iteration since the last checkpoint (up to checkpoint_every)
    import signal

    import repsim.train as trainer

    config = tiny("algorithm=maml", "eval_every=2")  # checkpoints every 3
    meta_gradient = trainer._meta_gradient

    def interrupted_at_4(model, params, config, split, it, *rest):
        if it == 4:  # the signal arrives in the middle of iteration 4
            os.kill(os.getpid(), getattr(signal, sig))
        return meta_gradient(model, params, config, split, it, *rest)

    monkeypatch.setattr(trainer, "_meta_gradient", interrupted_at_4)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "split", device="cpu", progress=False)
    assert signal.getsignal(signal.SIGINT) is handler  # the user's handler is back
    assert load_checkpoint(tmp_path / "split" / "checkpoints" / "iter-000004.safetensors").iteration == 4
    assert not (tmp_path / "split" / "model.safetensors").exists()
    assert "interrupted at iteration 4, checkpoint saved" in capsys.readouterr().err
    monkeypatch.setattr(trainer, "_meta_gradient", meta_gradient)
    _resumes_to_the_unbroken_run(config, tmp_path, tmp_path / "split")


def test_cli_ctrl_c_during_training_exits_130_saying_how_to_resume(tmp_path):
    """The command as a user runs it: SIGINT once its first checkpoint is written. Meanwhile a
    second trainer into its folder (a second --resume, a second reproduce) is refused, touching
    nothing: it would interleave its checkpoints and metrics with the first's."""
    import signal
    import time

    out = tmp_path / "run"
    sets = TINY[:5] + ["iterations=100000", "checkpoint_every=2", "eval_every=1000"]
    cmd = [sys.executable, "-m", "repsim", "train", "--quiet", "--out", str(out)] + [
        a for item in sets for a in ("--set", item)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not list(out.glob("checkpoints/iter-*.safetensors")) and time.monotonic() < deadline:
        time.sleep(0.2)
    with pytest.raises(RepsimError, match=rf"^process {proc.pid} is training into {out}: wait for it to finish"):
        train(load_config(None, sets), out, device="cpu", progress=False, resume=True, stop_after=1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "checkpoint saved" in err and "--resume" in err and "Traceback" not in err
    last = sorted(out.glob("checkpoints/iter-*.safetensors"))[-1]
    assert load_checkpoint(last).iteration == int(last.stem.split("-")[1]) >= 2


def test_resuming_a_finished_run_rewrites_nothing(tmp_path):
    config = tiny("iterations=3")
    final = train(config, tmp_path / "r", device="cpu", progress=False)
    before = final.read_bytes()
    assert train(config, tmp_path / "r", device="cpu", progress=False, resume=True) == final
    assert final.read_bytes() == before


def test_a_resumed_run_may_train_longer_and_save_more_often(tmp_path, capsys):
    """Iteration i's tasks depend on (seed, i) alone, so a run trained to 4 and extended to 6,
    with another checkpoint and evaluation cadence, ends where a run trained to 6 at once does."""
    whole = train(tiny("algorithm=maml", "iterations=6", "checkpoint_every=3", "eval_every=2"),
                  tmp_path / "whole", device="cpu", progress=False)
    train(tiny("algorithm=maml", "iterations=4", "checkpoint_every=2", "eval_every=4"),
          tmp_path / "r", device="cpu", progress=False)
    longer = tiny("algorithm=maml", "iterations=6", "checkpoint_every=3", "eval_every=2")
    final = train(longer, tmp_path / "r", device="cpu", progress=False, resume=True)
    ours, theirs = _params_of(final), _params_of(whole)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[n], theirs[n]) for n in ours)
    assert sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir()) == [
        "iter-000002.safetensors", "iter-000004.safetensors", "iter-000006.safetensors"]
    assert load_config(tmp_path / "r" / "config.yaml") == longer  # the plan is the new schedule
    only = "only iterations, checkpoint_every, eval_every, reduced may change"
    with pytest.raises(RepsimError, match=r"changed: inner_lr\): .*" + only):
        train(tiny("algorithm=maml", "iterations=8", "inner_lr=0.2"), tmp_path / "r", device="cpu",
              progress=False, resume=True)
    with pytest.raises(RepsimError, match=r"already at iteration 6.*iterations=6"):
        train(tiny("algorithm=maml", "iterations=5"), tmp_path / "r", device="cpu", progress=False, resume=True)
    # the command line resumes with the run's own config, a longer schedule given by --set alone
    assert cli(["train", "--out", str(tmp_path / "r"), "--resume", "--set", "iterations=7",
                "--device", "cpu", "--quiet"]) == 0
    assert load_checkpoint(tmp_path / "r" / "model.safetensors").iteration == 7


def test_an_extension_cut_short_leaves_no_stale_final_model(tmp_path):
    """While a finished run trains on, its old final model must not pass for the run's final
    one (evaluate RUN would score it); the extension, resumed, ends where a whole run does."""
    from repsim.checkpoint import latest_in
    whole = train(tiny("algorithm=maml", "iterations=8", "checkpoint_every=2"), tmp_path / "whole",
                  device="cpu", progress=False)
    train(tiny("algorithm=maml", "iterations=4", "checkpoint_every=2"), tmp_path / "r", device="cpu", progress=False)
    longer = tiny("algorithm=maml", "iterations=8", "checkpoint_every=2")
    train(longer, tmp_path / "r", device="cpu", progress=False, resume=True, stop_after=2)
    assert not (tmp_path / "r" / "model.safetensors").exists()
    assert latest_in(tmp_path / "r").name == "iter-000006.safetensors"
    final = train(longer, tmp_path / "r", device="cpu", progress=False, resume=True)
    ours, theirs = _params_of(final), _params_of(whole)
    assert all(torch.equal(ours[n], theirs[n]) for n in theirs)


def test_cli_resume_reads_an_old_runs_config_as_it_trained(tmp_path):
    """A run folder written before the convention keys existed was trained with the pytorch
    set; `train --out RUN --resume` (no --config) must not read it with today's defaults."""
    import yaml

    from repsim.config import CONVENTION_KEYS
    train(tiny("iterations=3", "conventions=pytorch"), tmp_path / "r", device="cpu", progress=False, stop_after=1)
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    for key in ("conventions",) + CONVENTION_KEYS:
        saved.pop(key)
    (tmp_path / "r" / "config.yaml").write_text(yaml.safe_dump(saved))
    assert cli(["train", "--out", str(tmp_path / "r"), "--resume", "--device", "cpu", "--quiet"]) == 0
    done = load_checkpoint(tmp_path / "r" / "model.safetensors")
    assert done.iteration == 3 and done.config.conventions == "pytorch"
    assert cli(["train", "--out", str(tmp_path / "r"), "--resume", "--data-root", "x", "--set", "data_root=y",
                "--device", "cpu", "--quiet"]) == 2  # two names for one folder


def test_resume_accepts_a_run_started_before_a_config_key_existed_and_names_real_changes(tmp_path):
    import yaml

    from repsim.config import CONVENTION_KEYS
    # a run folder written before the convention keys existed was trained with the pytorch set
    config = tiny("iterations=3", "conventions=pytorch")
    train(config, tmp_path / "r", device="cpu", progress=False, stop_after=1)
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    for key in ("conventions",) + CONVENTION_KEYS:  # written by a repsim without these keys
        saved.pop(key)
    (tmp_path / "r" / "config.yaml").write_text(yaml.safe_dump(saved))
    final = train(config, tmp_path / "r", device="cpu", progress=False, resume=True)
    assert final.is_file()
    from repsim.reproduce import _finished  # `repsim reproduce` reuses it the same way
    (tmp_path / "r" / "config.yaml").write_text(yaml.safe_dump(saved))
    assert _finished(config, tmp_path / "r") == final
    with pytest.raises(RepsimError, match=r"different config .*\(changed: adapt_batchnorm, inner_lr\)"):
        train(tiny("iterations=3", "inner_lr=0.2", "adapt_batchnorm=false", "conventions=pytorch"),
              tmp_path / "r", device="cpu", progress=False, resume=True)
    with pytest.raises(RepsimError, match=r"different config .*changed: .*conventions.*inner_loss"):
        train(tiny("iterations=3"), tmp_path / "r", device="cpu", progress=False, resume=True)


@pytest.mark.parametrize("setting", ["meta_batch_size=0", "inner_steps=-2", "queries=0", "inner_lr=-1", "eval_tasks=1"])
def test_impossible_settings_are_refused(setting):
    with pytest.raises(RepsimError, match=setting.split("=")[0]):
        tiny(setting)


def test_existing_run_needs_resume(tmp_path):
    config = tiny("iterations=3")
    train(config, tmp_path / "r", device="cpu", progress=False)
    with pytest.raises(RepsimError, match="add --resume"):
        train(config, tmp_path / "r", device="cpu", progress=False)


@pytest.mark.parametrize("algorithm", ["fomaml", "anil", "boil", "multiclass", "multitask"])
def test_every_algorithm_trains_and_evaluates(tmp_path, algorithm):
    config = tiny(f"algorithm={algorithm}", "iterations=3", "batch_size=16")
    final = train(config, tmp_path / algorithm, device="cpu", progress=False)
    record = evaluate_checkpoint(final, tasks=5, device="cpu", progress=False)
    assert record["algorithm"] == algorithm and 0 <= record["accuracy"] <= 100
    lines = (tmp_path / algorithm / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["iteration"] == 3


def test_batchnorm_convention_travels_with_the_checkpoint(tmp_path):
    """A run trained with BatchNorm outside the inner loop is tested the same way, and its
    outer loop still learns BatchNorm's weight and bias."""
    config = tiny("iterations=2", "adapt_batchnorm=false")
    final = train(config, tmp_path / "r", device="cpu", progress=False)
    ckpt = load_checkpoint(final)
    model = ckpt.build_model()
    assert ckpt.config.adapt_batchnorm is False
    names = own_inner_loop(ckpt.config, model).names
    assert "conv4.conv.weight" in names and not any(".bn." in n for n in names)
    assert ckpt.params["conv1.bn.bias"].abs().max() > 0  # initialised at zero, moved by Adam


def test_cli_train_and_evaluate(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--out", str(out), "--device", "cpu", "--quiet"]
    for item in [t for t in TINY if not t.startswith("iterations=")] + ["iterations=2"]:
        args += ["--set", item]  # each key once: the command line refuses one given twice
    assert cli(args) == 0
    assert cli(["evaluate", str(out), "--tasks", "10", "--device", "cpu", "--quiet",
                "--json", str(tmp_path / "e.json"), "--csv", str(tmp_path / "e.csv")]) == 0
    *_, line, queries = capsys.readouterr().out.strip().splitlines()
    assert "95% CI over 10 test tasks" in line
    assert queries.startswith("1 query point per class: BatchNorm normalises each task's query batch of 5")
    record = json.loads((tmp_path / "e.json").read_text())
    assert record["tasks"] == 10 and f"{record['accuracy']:.2f}" in line
    assert (tmp_path / "e.csv").read_text().splitlines()[0].startswith("checkpoint,")
    (out / "model.safetensors").unlink()  # as if the run were still going: its latest checkpoint
    assert cli(["evaluate", str(out), "--tasks", "2", "--device", "cpu", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "intermediate checkpoint" in printed and "iter-000002.safetensors (iteration 2)" in printed


def test_same_seed_same_numbers(tmp_path):
    config = tiny("iterations=2")
    final = train(config, tmp_path / "a", device="cpu", progress=False)
    a, b, c = (evaluate_checkpoint(final, tasks=30, queries=4, device="cpu", progress=False, seed=s)
               for s in (4, 4, 5))
    assert a["accuracy"] == b["accuracy"]
    assert a["accuracy"] != c["accuracy"] or a["ci95"] != c["ci95"]


@pytest.mark.parametrize("args, message", [
    (["train", "--out", "X", "--set", "algoritm=maml"], "unknown key(s) algoritm"),
    (["train", "--out", "X", "--set", "ways=5000"], "ways"),
    (["train", "--out", "X", "--device", "tpu"], "unknown device 'tpu'"),
    (["train", "--out", "X", "--set", "dataset=omniglot", "--set", "data_root=/nonexistent"], "/nonexistent"),
    (["evaluate", "/nonexistent.safetensors"], "not found"),
])
def test_cli_bad_input_is_one_line_and_nonzero(tmp_path, args, message):
    args = [a.replace("X", str(tmp_path / "out")) for a in args]
    result = subprocess.run([sys.executable, "-m", "repsim.cli", *args], capture_output=True, text=True)
    assert result.returncode == 2
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("repsim: error:") and message in err[0], result.stderr
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_execution_auto_follows_the_measured_rule_and_an_explicit_choice_wins():
    from repsim.train import resolve_execution
    cpu, cuda = torch.device("cpu"), torch.device("cuda")

    def auto(algorithm, ways, shots, dev, *extra):
        return resolve_execution(load_config(None, [f"algorithm={algorithm}", f"ways={ways}",
                                                    f"shots={shots}", "dataset=omniglot", *extra]), dev)
    for ways, shots in ((5, 1), (20, 1), (20, 5)):
        assert auto("maml", ways, shots, cuda) == auto("anil", ways, shots, cuda) == "vmap"
        assert auto("maml", ways, shots, cuda, "execution=loop") == "loop"
        assert auto("maml", ways, shots, cpu, "execution=vmap") == "vmap"
    # CPU: vmap for small tasks; the loop once a task's own work dominates (earlier for head-only
    # inner loops, where the loop runs the body once per task)
    assert auto("maml", 5, 1, cpu) == auto("maml", 20, 1, cpu) == auto("anil", 5, 1, cpu) == "vmap"
    assert auto("maml", 20, 5, cpu) == auto("anil", 20, 1, cpu) == auto("anil", 20, 5, cpu) == "loop"


def test_a_resumed_run_keeps_its_execution_on_its_kind_of_device_and_not_elsewhere():
    # a GPU run (vmap) finished on a CPU takes the CPU's execution: its numbers change at float
    # precision anyway, and vmap is the slow choice there for 20-way 5-shot
    from types import SimpleNamespace

    from repsim.train import RunState

    def resumed(devices, execution, here, fresh_execution):
        ckpt = SimpleNamespace(extra={"devices": devices, "execution": execution, "wall_time_s": 7.0})
        return RunState.from_checkpoint(ckpt, RunState(execution=fresh_execution, devices=[here]))

    moved = resumed(["cuda:0"], "vmap", "cpu", "loop")
    assert (moved.execution, moved.devices, moved.wall_time_s) == ("loop", ["cuda:0", "cpu"], 7.0)
    assert resumed(["cpu"], "vmap", "cpu", "loop").execution == "vmap"  # bit-identical resume
    assert resumed(["cuda:0"], "loop", "cuda:1", "vmap").execution == "loop"  # cuda:1 is a GPU too
    assert resumed(["cuda:0", "cpu"], "vmap", "cpu", "loop").execution == "loop"  # moved once: for good
    assert resumed([], "loop", "cpu", "vmap").execution == "loop"  # devices not recorded: as saved


def test_bench_train_times_every_method_on_the_requested_setting():
    # what `repsim bench train --ways 5 --shots 1` prints its ratios from (timings are not asserted)
    from repsim.bench.train import _setting, _tasks, run
    setting = _setting(5, 1)
    tasks = _tasks(setting, torch.device("cpu"))
    assert len(tasks) == setting.meta_batch_size == 32 and tasks[0].support_x.shape[0] == 5
    times, flops, compiling = run("cpu", quick=True, ways=5, shots=1)
    methods = {f"repsim {a} {e}" for a in ("maml", "anil") for e in ("loop", "vmap")}
    assert methods <= set(times) and all(t > 0 for t in times.values()) and compiling == {}
    # a second-order MAML step does more than ANIL's, whose body's backward stops at the head
    assert flops["repsim maml loop"] > 2 * flops["repsim anil loop"] > 0


def test_step_flops_counts_a_conv4_forward_as_the_closed_form_says():
    # the GFLOP/s that repsim bench train prints divide this count: 2 * outputs * (inputs * 3 * 3)
    # per convolution (stride 2, padding 1: 28 -> 14 -> 7 -> 4 -> 2) and 2 * ways * 64 for the head
    from repsim.bench.train import step_flops
    from repsim.model import conv4_for
    model, n = conv4_for("omniglot", 5), 10
    x = torch.rand(n, 1, 28, 28)
    sides, channels = [14, 7, 4, 2], [1, 64, 64, 64]
    expected = sum(2 * n * 64 * s * s * c * 9 for s, c in zip(sides, channels)) + 2 * n * 5 * 64
    with torch.no_grad():
        assert step_flops(lambda: model(x)) == expected
