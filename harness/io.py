"""Atomic files: a reader sees a whole file or none, never half of one.

Every writer here writes a temporary file in the target's folder, fsyncs it, then renames it
over the target (``os.replace``, atomic on POSIX). Used by measurement (shared evidence,
calibration results), the model cache's callers and the report alike.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
from pathlib import Path

import numpy as np


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_savez(path: str | Path, **arrays: np.ndarray) -> Path:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())


# ============================================================================ names and paths from users

# A name a user gives (a recipe, a checkpoint's model) becomes part of file paths: letters,
# digits, '.', '_', '+', '-', starting with a letter or digit, no '..'. '@' is the harness's own
# mark ("baseline@s43": a seed; "baseline@int8": a deployed form), so a user's name cannot take
# the name of a model the harness derives.
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")


class UnsafeNameError(ValueError):
    pass


def plain_name(name, what: str) -> str:
    """``name`` when it is a plain name (see ``_PLAIN``), else ``UnsafeNameError`` saying what
    ``what`` (e.g. "recipe file x.toml: name") must be."""
    if not isinstance(name, str) or not _PLAIN.fullmatch(name) or ".." in name:
        raise UnsafeNameError(
            f"{what} = {name!r} is not a plain name: use 1-64 letters, digits, '.', '_', '+' or '-', starting "
            "with a letter or digit, without '..' (it names files of the run; '@' marks the harness's own "
            "seed and deployed-form models, '/' and '..' would lead out of the run's folder)")
    return name


def inside(root: str | Path, relative: str | Path, what: str) -> Path:
    """``root / relative`` when it stays under ``root`` (after resolving '..' and links), else
    ``UnsafeNameError``: a path a file or a user names never leads out of its folder."""
    root = Path(root).resolve()
    path = (root / relative).resolve()
    if path != root and root not in path.parents:
        raise UnsafeNameError(f"{what} {str(relative)!r} leads out of {root}: refused")
    return path
