"""A run's report folder: created as ``.NAME.partial``, renamed to ``NAME`` when its report is
complete (``NAME-incomplete`` for an interrupted run), and ``latest`` pointed at it. A reader
never sees a half-written run, and ``latest`` always names a complete one."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
import time
from pathlib import Path

STALE_SECONDS = 24 * 3600


def run_name(dataset: str, profile: str) -> str:
    """A run folder's name: UTC time to the millisecond, dataset, profile, and a random suffix,
    so that two runs started together never share a folder."""
    now = dt.datetime.now(dt.UTC)
    return f"{now:%Y%m%dT%H%M%S}.{now.microsecond // 1000:03d}Z_{dataset}_{profile}_{secrets.token_hex(3)}"


def partial_folder(root: Path, dataset: str, profile: str) -> Path:
    """Where a new run writes until its report is complete (stale partials of killed runs,
    older than a day, are removed first)."""
    remove_stale_partials(root)
    return root / f".{run_name(dataset, profile)}.partial"


def final_folder(partial: Path, complete: bool = True) -> Path:
    final = partial.parent / partial.name[1:].removesuffix(".partial")
    return final if complete else final.with_name(final.name + "-incomplete")


def remove_stale_partials(root: Path, max_age: float = STALE_SECONDS) -> None:
    """Run folders still ``.partial`` after a day belong to runs that were killed: remove them.
    An empty one (a run killed before it wrote anything, by SIGTERM say) goes at once: a live
    run writes its report into a folder it (re)creates then, so it loses nothing."""
    if not root.is_dir():
        return
    now = time.time()
    for p in root.glob(".*.partial"):
        try:
            if not p.is_dir():
                continue
            if not any(p.iterdir()):
                p.rmdir()
            elif now - p.stat().st_mtime > max_age:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass  # gone meanwhile, or filled by its run: left alone


def finish(partial: Path, complete: bool) -> tuple[Path, str | None]:
    """Rename the partial folder to its final name; point ``latest`` at it when complete.
    Returns the folder and why ``latest`` was not moved, if it was not."""
    final = final_folder(partial, complete)
    os.replace(partial, final)
    return final, point_latest(final) if complete else None


def point_latest(run_dir: Path) -> str | None:
    """Point ``latest`` at ``run_dir``; returns why it was not moved (None when it was): a real
    folder named ``latest`` is never replaced."""
    latest = run_dir.parent / "latest"
    if latest.exists() and not latest.is_symlink():
        return (f"{latest} is a real {'folder' if latest.is_dir() else 'file'}, not the link the harness keeps: it was "
                f"left as it is, so it does not point at this run ({run_dir.name}); rename it to restore the link")
    tmp = run_dir.parent / f".latest.{os.getpid()}"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(run_dir.name)
        os.replace(tmp, latest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        return f"{latest} could not be pointed at {run_dir.name}: {exc}"
    return None
