"""Rendered figures kept across runs: a figure is drawn again only when what it shows changed.

A report's figure is a pure function of its inputs (``plan.Drawing``: a function of
``figures.py`` and its arguments, numbers and ``Samples``). ``FigureCache`` keys its PNG by a
hash of those inputs, of the drawing code (``figures.py``, the ``metrics`` helpers it uses)
and of the matplotlib and numpy versions, and stores it as ``<folder>/<key>.png`` (written
atomically). A rerun whose models and evidence come from the caches then copies its figures
instead of rasterising them (about a second each on a small CPU). Inputs it cannot hash
(anything but arrays, numbers, strings, mappings, sequences and ``Samples``) are drawn every
time. The folder keeps the ``KEEP`` most recently used files.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import numpy as np

from ..io import atomic_write_bytes

KEEP = 400


class Unhashable(TypeError):
    """An input of a figure the cache cannot fingerprint: the figure is drawn without it."""


@cache
def _code() -> bytes:
    import matplotlib

    from ..evidence import code_hash  # the drawing code, hashed as the evidence cache hashes measuring code

    return f"{code_hash('figures')} matplotlib {matplotlib.__version__} numpy {np.__version__}".encode()


def _feed(h, obj) -> None:
    from ..metrics import Samples

    if obj is None or isinstance(obj, bool | int | float | str):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
    elif isinstance(obj, np.generic):
        _feed(h, obj.item())
    elif isinstance(obj, np.ndarray):
        a = obj.astype(str) if obj.dtype == object else np.ascontiguousarray(obj)
        h.update(f"array:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    elif isinstance(obj, Samples):
        h.update(b"Samples;")
        for name in Samples.FIELDS:
            _feed(h, getattr(obj, name))
    elif isinstance(obj, Mapping):
        h.update(f"map:{len(obj)};".encode())
        for k, v in obj.items():  # in order: the order is drawn (legends, rows)
            _feed(h, k)
            _feed(h, v)
    elif isinstance(obj, list | tuple):
        h.update(f"seq:{len(obj)};".encode())
        for v in obj:
            _feed(h, v)
    else:
        raise Unhashable(f"cannot fingerprint a {type(obj).__name__}")


def fingerprint(fn, args: tuple, kwargs: dict) -> str:
    """The key of a drawing: its function, its arguments and the drawing code."""
    h = hashlib.sha256(_code())
    h.update(f"{fn.__module__}.{fn.__qualname__};".encode())
    _feed(h, list(args))
    _feed(h, dict(sorted(kwargs.items())))
    return h.hexdigest()[:32]


class FigureCache:
    def __init__(self, folder):
        self.folder = Path(folder)

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.png"

    def read(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if not data.startswith(b"\x89PNG\r\n\x1a\n"):  # damaged: drawn again
            return None
        os.utime(path)  # recently used: kept by ``prune``
        return data

    def write(self, key: str, png: bytes) -> None:
        atomic_write_bytes(self._path(key), png)

    def prune(self, keep: int = KEEP) -> None:
        """Keep the ``keep`` most recently used figures."""
        try:
            files = sorted(self.folder.glob("*.png"), key=lambda p: p.stat().st_mtime, reverse=True)
        except OSError:
            return
        for p in files[keep:]:
            p.unlink(missing_ok=True)
