"""Atomic file writes: a reader (or a crash) never sees half a file."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path

from repsim.errors import RepsimError


def _umask() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old


_UMASK = _umask()


def shareable(path: str | Path) -> None:
    """Give a file made by mkstemp (mode 0600) the permissions of an ordinary new file."""
    os.chmod(path, 0o666 & ~_UMASK)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    check_file_target(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise RepsimError(f"cannot write {path} ({e.strerror}): choose a writable output folder") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        shareable(tmp)
        os.replace(tmp, path)
    except OSError as e:  # a full disk, a quota: the old file stays, the half-written one goes
        Path(tmp).unlink(missing_ok=True)
        kept = "the file there is unchanged" if path.exists() else "nothing was written"
        fix = ("free space on its disk, or choose another output folder"
               if e.errno in (errno.ENOSPC, errno.EDQUOT) else "choose a writable output folder")
        raise RepsimError(f"cannot write {path} ({e.strerror}): {fix}; {kept}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_file_target(path: str | Path, example: str = "result.json") -> Path:
    """Fail early when ``path`` cannot become a file: it is a folder."""
    path = Path(path)
    if path.is_dir():
        raise RepsimError(f"{path} is a folder: give a file name, e.g. {path / example}")
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    # paths with bytes that are not UTF-8 (Python's surrogate escapes) are written escaped
    return atomic_write_bytes(path, text.encode("utf-8", errors="backslashreplace"))


def atomic_write_json(path: str | Path, record) -> Path:
    return atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")


def where(path: Path) -> str:
    """``path`` as a user can find it in a message: a relative one (a data folder a checkpoint
    recorded, say) is read from the current folder, which is named."""
    return str(path) if Path(path).is_absolute() else f"{path} (from {Path.cwd()})"
