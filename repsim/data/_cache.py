"""Where prepared data sets live, how their cache keys are made, and how they are written.

Preparing a data set (decoding tens of thousands of images) takes far longer than loading one
prepared array, so each prepared form is stored once as an .npz. The file name carries a key
derived from the source files' sizes and modification times: replacing or editing the source
gives a new key, hence a fresh preparation, without anyone having to clear a cache by hand.
Files are written to a temporary name and renamed, so an interrupted run never leaves a
half-written cache that a later run would trust.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np

from repsim.errors import RepsimError

DATA_ROOT_ENV = "REPSIM_DATA_ROOT"
CACHE_DIR_ENV = "REPSIM_CACHE_DIR"


def data_root(explicit: str | os.PathLike | None, dataset: str) -> Path:
    """The folder given, else $REPSIM_DATA_ROOT; with neither there is nothing to search."""
    root = explicit if explicit is not None else os.environ.get(DATA_ROOT_ENV)
    if not root:
        raise RepsimError(
            f"no data folder given for {dataset}: pass --data-root DIR (data_root=...) or set {DATA_ROOT_ENV}"
        )
    return Path(root).expanduser()


def cache_dir(explicit: str | os.PathLike | None) -> Path:
    """The cache folder given, else $REPSIM_CACHE_DIR, else ~/.cache/repsim."""
    if explicit is not None:
        return Path(explicit).expanduser()
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "repsim"


def source_key(sources: list[tuple[str, Path]], extra: dict) -> str:
    """A short hash of the sources' names, sizes and mtimes plus the preparation settings.

    Sources are (name, path) pairs; the name, not the absolute path, goes into the key, so the
    same files moved elsewhere still match their cache.
    """
    h = hashlib.sha256(json.dumps(extra, sort_keys=True).encode())
    for name, path in sources:
        st = path.stat()
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def load_npz(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file, or None when it is missing or unreadable (then we rebuild)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
        warnings.warn(f"ignoring unreadable cache {path} ({err}); preparing the data again", stacklevel=3)
        return None


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write a cache atomically (:func:`repsim.io.atomic_write_bytes`): all of it under its
    final name, or nothing.

    A cache that cannot be written (read-only home, full disk) only costs time on the next run,
    so it warns rather than fails.
    """
    from repsim.io import atomic_write_bytes

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except (OSError, RepsimError) as err:
        warnings.warn(
            f"could not write the data cache {path} ({err}); continuing without it - "
            f"set {CACHE_DIR_ENV} or pass cache_dir to a writable folder",
            stacklevel=3,
        )

