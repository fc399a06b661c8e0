"""Recipe: check that the committed figures (figures/results, the README's) are what the code makes.

    python analyses/check_figures.py [--results figures/results] [--fresh DIR]
    python analyses/check_figures.py --regenerate      # remake the committed figures

Runs `repsim reproduce` (quick profile, built-in data set) into a fresh folder, or reads one
made before (``--fresh``), and compares every number of its result tables with the committed
ones, row by row on their identifying columns. A table with other rows, other columns or larger
differences than ACCURACY points (accuracies) or SIMILARITY (CCA, CKA, relative weight change)
means the committed figures are stale: remake them with ``--regenerate``.

Both run reproduce with PORTABLE_NUMERICS: two threads, and the CPU kernels of torch, NumPy and
OpenBLAS pinned to one instruction set. Unpinned, each CPU sums in its own order (MKL picks kernels
by vendor; oneDNN, ATen and NumPy's sin and cos by AVX2 or AVX-512), and 500 training iterations
carry that rounding into the weights: the head's CKA of one seed moved by 0.10 between this
project's machines and CI's. Pinned, the weights after 10 iterations were bit-identical on an
Intel Haswell and an AMD EPYC-Rome, both emulated by qemu-x86_64 (unpinned they differed). On real
CPUs the pins do not make them agree: on an Intel Xeon with AVX-512 and AMX (2026-12-07) every table
differed from those the AMD EPYC Zen 2 made, by up to 3.6 points in an accuracy (heads.csv's
change) and 0.076 in a similarity (one seed's head CKA), though no code had changed (oneDNN's
convolutions, whose blocking follows the caches' sizes, are the likely rest). The tolerances sit
above those differences.

Exits 1 with one line per difference when they are stale. CI runs it after the tests.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ACCURACY = 5.0     # points, for accuracies in percent
SIMILARITY = 0.1   # for CCA, CKA and relative weight change (0.05 failed between two real CPUs: above)
# columns that say what a row is, not what was measured
KEYS = ("model", "algorithm", "regime", "seed", "iteration", "frozen", "quantity", "mode", "variant", "metric",
        "layer", "measure", "pair", "same_seed", "checkpoint", "model_a", "model_b", "task")
MEASURED = ("accuracy", "mean", "change", "low", "high")  # low, high: the lowest and highest seed
# how the committed figures are made, on any x86-64 CPU with AVX2 (see the module's docstring)
PORTABLE_NUMERICS = {
    "OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE",  # a thread count is a summation order
    "MKL_CBWR": "COMPATIBLE",                               # MKL: the same code path on every vendor
    "MKL_DYNAMIC": "FALSE",                                 # ... and the threads asked for, always
    "ATEN_CPU_CAPABILITY": "avx2",                          # torch's own kernels: AVX2, never AVX-512
    "ONEDNN_MAX_CPU_ISA": "AVX2",                           # convolutions (oneDNN): likewise
    "OPENBLAS_CORETYPE": "Haswell",                         # NumPy's and SciPy's BLAS
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",  # NumPy's own AVX-512 loops (sin, cos)
}
TITLE = "repsim reproduction: synthetic, quick profile"


def compare(committed: Path, fresh: Path) -> list[str]:
    """The differences between two tables of one analysis (empty: they agree)."""
    a, b = pd.read_csv(committed), pd.read_csv(fresh)
    name = committed.name
    if list(a.columns) != list(b.columns):
        return [f"{name}: columns {list(a.columns)} committed, {list(b.columns)} now"]
    keys = [k for k in KEYS if k in a.columns]
    if len(a) != len(b):
        return [f"{name}: {len(a)} rows committed, {len(b)} now"]
    a, b = a.sort_values(keys).reset_index(drop=True), b.sort_values(keys).reset_index(drop=True)
    if not a[keys].astype(str).equals(b[keys].astype(str)):
        return [f"{name}: other rows (by {', '.join(keys)})"]
    out = []
    for column in (c for c in MEASURED if c in a.columns):
        tolerance = ACCURACY if _percent(a, column) else SIMILARITY
        diff = (a[column] - b[column]).abs()
        if (diff > tolerance).any():
            i = int(diff.idxmax())
            what = ", ".join(f"{k}={a.loc[i, k]}" for k in keys)
            out.append(f"{name}: {column} {a.loc[i, column]:.3f} committed, {b.loc[i, column]:.3f} now ({what}; "
                       f"{int((diff > tolerance).sum())} rows differ by more than {tolerance:g})")
    return out


def _percent(table: pd.DataFrame, column: str) -> bool:
    """Whether a column holds accuracies in percent (its values reach beyond 1)."""
    values = table[column].to_numpy(dtype=np.float64)
    return column in ("accuracy", "change") or np.nanmax(np.abs(values)) > 1.5


def reproduce_portably() -> Path:
    """A fresh `repsim reproduce` (quick profile) made with PORTABLE_NUMERICS; its results folder."""
    out = Path(tempfile.mkdtemp()) / "reproduction"
    env = {**os.environ, **PORTABLE_NUMERICS}
    subprocess.run([sys.executable, "-m", "repsim.cli", "reproduce", "--out", str(out), "--quiet"],
                   check=True, env=env)
    return out / "results"


def regenerate(results: Path) -> None:
    """Replace the committed tables with a fresh portable run's and re-render the figures."""
    from repsim.report import write_report
    fresh = reproduce_portably()
    # staged beside the committed folder and swapped in whole: an interruption leaves either the
    # old tables or the new ones, never a mix (the report is rendered from them afterwards)
    staged, retired = results.with_name(f".{results.name}.new"), results.with_name(f".{results.name}.old")
    for scratch in (staged, retired):
        shutil.rmtree(scratch, ignore_errors=True)
    staged.mkdir()
    for new in [*fresh.glob("*.csv"), *fresh.glob("*.json")]:
        shutil.copy2(new, staged / new.name)
    results.rename(retired)
    staged.rename(results)
    shutil.rmtree(retired)
    write_report(str(results), figures_dir=str(results.parent), title=TITLE)
    print(f"regenerated {results} and its figures from {fresh}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=Path("figures/results"))
    p.add_argument("--fresh", type=Path, help="a results folder of `repsim reproduce` (default: run it now)")
    p.add_argument("--regenerate", action="store_true",
                   help="remake the committed tables and figures instead of checking them")
    args = p.parse_args(argv)
    if args.regenerate:
        regenerate(args.results)
        return 0
    fresh = args.fresh or reproduce_portably()
    committed = sorted(p for p in args.results.glob("*.csv"))
    made = {p.name for p in fresh.glob("*.csv")}
    problems = [f"{p.name}: committed, but reproduce no longer writes it" for p in committed if p.name not in made]
    new = sorted(made - {p.name for p in committed})
    problems += [f"{n}: reproduce writes it, but it is not committed" for n in new]
    for table in committed:
        if table.name in made:
            problems += compare(table, fresh / table.name)
    for line in problems:
        print(f"stale: {line}")
    print(f"{len(committed)} committed tables checked against {fresh}: "
          + ("they agree" if not problems else f"{len(problems)} differences"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
