"""Helpers shared by the bad-input tests (test_bad_input.py, test_bad_input_2.py): a tiny
synthetic run's config, repsim run as a user runs it (a new process, or main() in this one), and
the one-line error every bad input must give."""

import subprocess
import sys
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save

from repsim.config import load_config
from repsim.train import train

SETUP = ["dataset=synthetic", "filters=8", "iterations=5", "checkpoint_every=5", "eval_every=5",
         "eval_tasks=4", "meta_batch_size=2"]


def config(*extra):
    return load_config(None, SETUP + list(extra))


def train_run(folder: Path) -> Path:
    """The 5-iteration synthetic MAML run with 8 filters of the issues' examples."""
    out = folder / "run"
    train(config(), out, device="cpu", progress=False)
    return out


def repsim(*args, cwd=None):
    result = subprocess.run([sys.executable, "-m", "repsim.cli", *map(str, args)], capture_output=True,
                            encoding="utf-8", errors="backslashreplace", cwd=cwd)
    return result.returncode, result.stdout, result.stderr.strip().splitlines()


def in_cli(capsys, *args):
    """``repsim`` run in this process (main() as the console script runs it): exit code,
    stdout and stderr lines, without the seconds a new interpreter takes to import torch."""
    from repsim.cli import main
    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip().splitlines()


def one_line(err, *needles):
    assert len(err) == 1 and err[0].startswith("repsim: error:"), err
    for needle in needles:
        assert needle in err[0], err[0]


def with_metadata(src: Path, dst: Path, edit) -> Path:
    """A copy of checkpoint ``src`` whose repsim metadata string is ``edit(metadata string)``."""
    with safe_open(str(src), framework="pt") as f:
        raw = f.metadata()["repsim"]
    dst.write_bytes(save(load_file(str(src)), metadata={"repsim": edit(raw)}))
    return dst
