"""analyses/check_figures.py: the CI check that the committed figures are what the code makes."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("check_figures", ROOT / "analyses" / "check_figures.py")
check_figures = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_figures)


def _tables(tmp_path, committed, fresh):
    a, b = tmp_path / "a" / "similarity.csv", tmp_path / "b" / "similarity.csv"
    for path, rows in ((a, committed), (b, fresh)):
        path.parent.mkdir(exist_ok=True)
        pd.DataFrame(rows).to_csv(path, index=False)
    return a, b


def _rows(head_cka, accuracy=50.0):
    return [{"model": "maml", "layer": "conv4", "measure": "cka", "mean": 0.9, "accuracy": accuracy},
            {"model": "maml", "layer": "head", "measure": "cka", "mean": head_cka, "accuracy": accuracy}]


def test_tables_within_tolerance_agree_in_any_row_order(tmp_path):
    a, b = _tables(tmp_path, _rows(0.30), list(reversed(_rows(0.30 + check_figures.SIMILARITY / 2))))
    assert check_figures.compare(a, b) == []


def test_a_similarity_beyond_tolerance_is_stale_and_named(tmp_path):
    fresh = 0.275 + 1.5 * check_figures.SIMILARITY
    a, b = _tables(tmp_path, _rows(0.275), _rows(fresh))
    (line,) = check_figures.compare(a, b)
    assert f"0.275 committed, {fresh:.3f} now" in line and "layer=head" in line


def test_accuracies_get_points_not_similarity_tolerance(tmp_path):
    a, b = _tables(tmp_path, _rows(0.3, 50.0), _rows(0.3, 53.0))
    assert check_figures.compare(a, b) == []
    a, b = _tables(tmp_path, _rows(0.3, 50.0), _rows(0.3, 58.6))
    assert len(check_figures.compare(a, b)) == 1


def test_other_rows_or_columns_are_stale(tmp_path):
    a, b = _tables(tmp_path, _rows(0.3), _rows(0.3)[:1])
    assert "rows committed" in check_figures.compare(a, b)[0]
    extra = [{**r, "seed": 0} for r in _rows(0.3)]
    a, b = _tables(tmp_path, _rows(0.3), extra)
    assert "columns" in check_figures.compare(a, b)[0]


def _capability(env):
    # of NumPy's dispatch targets (X86_V3, X86_V4, AVX512_ICL, ... in NumPy 2.4) none with AVX-512
    # may be on; the CPU's own AVX-512 flags stay set in __cpu_features__, but NumPy runs no loop by them
    code = ("import torch; import numpy._core._multiarray_umath as m; f = m.__cpu_features__; "
            "assert not any(f[k] for k in m.__cpu_dispatch__ if k.startswith(('AVX512', 'X86_V4'))), f; "
            "print(torch.backends.cpu.get_cpu_capability(), torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True,
                         text=True, check=True)
    return out.stdout.split()


def test_portable_numerics_pin_torch_kernels_and_threads():
    capability, threads = _capability(check_figures.PORTABLE_NUMERICS)
    assert threads == "2"
    assert capability in ("AVX2", "DEFAULT", "NO AVX")  # never AVX512, whatever the CPU
    # the pin's name is the one torch reads: set to the scalar kernels, it takes them
    (aten_key,) = [k for k, v in check_figures.PORTABLE_NUMERICS.items() if v == "avx2"]
    assert _capability({**check_figures.PORTABLE_NUMERICS, aten_key: "default"})[0] == "DEFAULT"


def _folder(path, files):
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def test_regenerate_swaps_the_tables_in_whole_and_an_interruption_keeps_the_old_ones(tmp_path, monkeypatch):
    import repsim.report
    results = _folder(tmp_path / "figures" / "results", {"old.csv": "a\n1\n", "old.json": "{}", "report.md": "x"})
    fresh = _folder(tmp_path / "fresh", {"new.csv": "a\n2\n", "new.json": "{}"})
    monkeypatch.setattr(check_figures, "reproduce_portably", lambda: fresh)
    rendered = []
    monkeypatch.setattr(repsim.report, "write_report", lambda folder, **kw: rendered.append(Path(folder)))

    real_copy = check_figures.shutil.copy2
    def copy_then_fail(src, dst):  # interrupted after the first table
        real_copy(src, dst)
        raise KeyboardInterrupt
    monkeypatch.setattr(check_figures.shutil, "copy2", copy_then_fail)
    try:
        check_figures.regenerate(results)
    except KeyboardInterrupt:
        pass
    assert sorted(p.name for p in results.iterdir()) == ["old.csv", "old.json", "report.md"] and not rendered

    monkeypatch.setattr(check_figures.shutil, "copy2", real_copy)
    check_figures.regenerate(results)
    assert sorted(p.name for p in results.iterdir()) == ["new.csv", "new.json"] and rendered == [results]
    assert sorted(p.name for p in results.parent.iterdir()) == ["results"]  # no scratch folder left
