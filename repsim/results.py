"""A results folder: one CSV per analysis, with a JSON of its provenance beside it.

    RESULTS/similarity.csv        summary: mean and 95% CI per (algorithm, layer, measure)
    RESULTS/similarity_tasks.csv  the per-task numbers behind it
    RESULTS/similarity_seeds.csv  each seed's mean over tasks (the spread the CI does not show)
    RESULTS/freezing_over_seeds.csv  a table of one row per seed, pooled over seeds
    RESULTS/similarity.json       provenance: checkpoints, tasks, seeds, conventions, command

Every summary is made where the rows are made (:mod:`repsim.runner`, with the functions of
:mod:`repsim.statistics`); the report only reads them.

`repsim report RESULTS` turns a folder of these into tables and figures.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd

import repsim
from repsim.errors import RepsimError
from repsim.io import atomic_write_bytes, atomic_write_json
from repsim.names import DECLARATIONS

# Every further summary an analysis writes beside its table, as NAME_SUFFIX.csv (each one's own: names.DECLARATIONS)
EXTRA_TABLES = tuple(dict.fromkeys(s for d in DECLARATIONS for s in d.extra_tables))
FORMAT = "repsim-results-2"  # what a NAME.json says its folder's files are, read back and checked
# (1 had no NAME_over_seeds.csv: the report pooled the seeds itself)


def check_writable(folder: str | Path) -> Path:
    """Fail before any work is done if results cannot be written there."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RepsimError(f"{folder} is a file, not a folder: choose a folder for --out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # a name of its own: processes checking one folder at once must not delete each other's
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".repsim-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise RepsimError(f"cannot write results to {folder} ({e.strerror}): choose a writable --out folder") from None
    return folder


@contextlib.contextmanager
def exclusive(folder: Path, name: str, doing: str | None = None):
    """Hold ``folder``'s lock for analysis ``name`` (a lock file beside its results), so that
    two processes running the same analysis into one folder cannot silently overwrite each
    other's tables. Different analyses may run into one folder side by side. The lock is
    the operating system's (flock): it is released when the process ends, however it ends.
    ``doing``: what the holder is doing, for the refusal (default: running the analysis)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as before
        yield
        return
    path = folder / f".{name}.lock"
    try:  # never through a link: the lock must not write into a file elsewhere
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as e:
        link = ": it is a link" if path.is_symlink() else ""
        raise RepsimError(f"cannot use the lock file {path} ({e.strerror}{link}): remove it, "
                          f"or use another --out") from None
    with os.fdopen(fd, "r+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            doing = doing or f"running the {name} analysis into {folder}"
            raise RepsimError(f"{holder} is {doing}: wait for it to finish, or use another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_result(folder: str | Path, name: str, table: pd.DataFrame, provenance: dict,
                 per_task: pd.DataFrame | None = None, extras: dict[str, pd.DataFrame] | None = None) -> Path:
    """Write NAME.csv (+ NAME_tasks.csv and NAME_SUFFIX.csv for each of ``extras``, suffixes
    from :data:`EXTRA_TABLES`) and NAME.json; the JSON last, so its presence means the
    analysis finished."""
    folder = check_writable(folder)
    (folder / f"{name}.json").unlink(missing_ok=True)  # stale provenance must not outlive its CSVs
    written = {}

    def write(file: str, df: pd.DataFrame) -> None:
        data = df.to_csv(index=False).encode("utf-8", errors="backslashreplace")  # as atomic_write_text
        atomic_write_bytes(folder / file, data)
        written[file] = table_digest(data)

    if per_task is not None:
        write(f"{name}_tasks.csv", per_task)
    for suffix in EXTRA_TABLES:  # an extra this run does not write must not survive from an earlier one
        if suffix in (extras or {}):
            write(f"{name}_{suffix}.csv", extras[suffix])
        else:
            (folder / f"{name}_{suffix}.csv").unlink(missing_ok=True)
    write(f"{name}.csv", table)
    atomic_write_json(folder / f"{name}.json", {
        "analysis": name, "format": FORMAT, **provenance, "tables": written, "repsim_version": repsim.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["repsim"] + sys.argv[1:]) if Path(sys.argv[0]).name == "repsim" else None,
    })
    return folder / f"{name}.csv"


def table_digest(data: bytes) -> str:
    """The SHA-256 of a table file's bytes, which its NAME.json records, so that a table cut
    short or edited after the analysis wrote it is not read as its result."""
    return hashlib.sha256(data).hexdigest()
