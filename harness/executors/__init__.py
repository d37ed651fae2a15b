"""Where trainings and measurements run: here (the default: lazily, in this process, or in
pytest-xdist workers sharing the caches), or on a Ray cluster (``ray_executor``). A training or
a measurement is a pure function of its key returning bytes; wherever it runs, the driver
writes what comes back into its own caches."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Origin:
    """Where a cache entry was made (a sidecar beside it: ``<entry>.origin.json``)."""

    executor: str
    node: str
    pid: int
    threads: int
    seconds: float


def origin_path(entry: Path) -> Path:
    return entry.with_name(entry.name + ".origin.json")


def read_origin(entry: Path) -> dict | None:
    """Where a cache entry was made, when an executor other than this process made it."""
    p = origin_path(entry)
    return json.loads(p.read_text()) if p.exists() else None
