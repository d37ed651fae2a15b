"""The on-disk model cache: one file per trained model, keyed by everything that decides it.

key = sha256(recipe's training fields, profile, data fingerprint, training-code hash,
cache format, device type). The training-code hash covers the source of the modules that
decide what a trained model computes (``CODE_FILES``: models, augmentation, the training
loop, evaluation), so a code change can never serve a stale model; editing them retrains.

Entries are written to a temporary file in the same folder and renamed (atomic), read with
``torch.load(weights_only=True)`` (no pickled code runs), and verified against a sha256
over the weights, the stored predictions and the metadata; a damaged entry raises
``CacheError`` and the caller retrains.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

CACHE_ENV = "CNN_STRESS_CACHE"
CACHE_FORMAT = 3
HERE = Path(__file__).resolve().parent
CODE_FILES = ("models.py", "augment.py", "train.py", "runtime.py", "losses.py", "evaluate.py")
LOGIT_SPLITS = ("val", "test", "train_sample")


class CacheError(RuntimeError):
    pass


def default_cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnn-stress" / "models"


@functools.cache
def code_hash() -> str:
    """sha256 of the training code's source (``CODE_FILES``), 16 hex digits."""
    h = hashlib.sha256()
    for name in CODE_FILES:
        h.update(name.encode())
        h.update((HERE / name).read_bytes())
    return h.hexdigest()[:16]


def key(training_fields: dict, profile: str, data_fingerprint: str, device_type: str) -> str:
    blob = json.dumps(
        {
            "recipe": training_fields,
            "profile": profile,
            "data": data_fingerprint,
            "code": code_hash(),
            "format": CACHE_FORMAT,
            "device": device_type,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _state_checksum(state: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


CHECKED_FIELDS = ("key", "recipe", "profile", "data_fingerprint", "code", "history", "best_epoch", "train_seconds",
                  "train_size", "train_sample_ids")


def checksum(payload: dict) -> str:
    """sha256 over the weights, the stored predictions and the metadata: torch's zip reader
    does not verify its CRCs, so flipped bits anywhere must be caught here."""
    h = hashlib.sha256(_state_checksum(payload["state_dict"]).encode())
    for split in LOGIT_SPLITS:
        z = payload[f"{split}_logits"].detach().cpu().contiguous()
        h.update(str((z.dtype, tuple(z.shape))).encode())
        h.update(z.reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(json.dumps({k: payload.get(k) for k in CHECKED_FIELDS}, sort_keys=True, default=str).encode())
    return h.hexdigest()


def seal(payload: dict) -> dict:
    """A cache entry: the payload with this version's format, code hash and checksum."""
    payload = {**payload, "format": CACHE_FORMAT, "code": code_hash()}
    payload["checksum"] = checksum(payload)
    return payload


def save_entry(path: Path, payload: dict) -> None:
    """Write atomically: a temporary file in the same folder, fsync, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


STALE_TMP_SECONDS = 24 * 3600


@contextlib.contextmanager
def training_lock(path: Path, on_wait=None, poll: float = 0.5):
    """Hold ``.locks/<entry>.lock`` while an entry is looked up and, if missing, trained and saved:
    every process (pytest-xdist workers, runs on other machines sharing the folder over a
    file system with working ``flock``) trains a model once; the others wait, then load it.
    An OS file lock (``filelock``): the kernel releases it when its holder dies, so a killed
    worker leaves no stale lock. ``on_wait()`` is called once if another process holds it."""
    from filelock import FileLock, Timeout

    locks = path.parent / ".locks"  # out of the way of the entries (a lock file outlives its lock, harmlessly)
    locks.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(locks / f"{path.name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if on_wait is not None:
            on_wait()
        lock.acquire(poll_interval=poll)
    try:
        yield
    finally:
        lock.release()


def remove_stale_temporaries(folder: Path, max_age: float = STALE_TMP_SECONDS) -> list[Path]:
    """Delete ``*.tmp`` files older than ``max_age`` seconds (left by a writer that was killed
    mid-save); younger ones may belong to a save in progress."""
    import time

    removed = []
    if not folder.is_dir():
        return removed
    now = time.time()
    for p in folder.glob("*.tmp"):
        try:
            if now - p.stat().st_mtime > max_age:
                p.unlink()
                removed.append(p)
        except FileNotFoundError:
            pass
    return removed


def load_entry(path: Path, expected_key: str, expected: dict | None = None) -> dict:
    """Load and verify a cache entry; raise CacheError saying what is wrong. ``expected``:
    fields the entry must hold exactly (the requested recipe, profile, data fingerprint)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        import re

        text = str(exc)
        blocked = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"Unsupported global: ([\w.]+)", text)
        if blocked:
            raise CacheError(f"refused: it references the Python global {blocked.group(1)}, which a weights-only "
                             "load does not allow (loading it could run code)") from exc
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()] or [""]
        raise CacheError(f"unreadable ({type(exc).__name__}: {lines[-1][:300]})") from exc
    if not isinstance(payload, dict) or payload.get("format") != CACHE_FORMAT:
        raise CacheError("not a cache entry of this harness version")
    if payload.get("key") != expected_key:
        raise CacheError(f"holds key {payload.get('key')!r}, expected {expected_key!r}")
    if not isinstance(payload.get("state_dict"), dict):
        raise CacheError("no weights")
    for split in LOGIT_SPLITS:
        z = payload.get(f"{split}_logits")
        if not isinstance(z, torch.Tensor) or z.ndim != 2 or not torch.isfinite(z).all():
            raise CacheError(f"{split} predictions missing or not finite")
    if checksum(payload) != payload.get("checksum"):
        raise CacheError("contents (weights, predictions or history) do not match their checksum")
    for field, want in (expected or {}).items():
        have = payload.get(field)
        if have != want:
            if isinstance(want, dict) and isinstance(have, dict):
                diff = [f"{k}: stored {have.get(k)!r}, asked {want.get(k)!r}" for k in sorted(set(want) | set(have))
                        if have.get(k) != want.get(k)]
                detail = "; ".join(diff[:5])
            else:
                detail = f"stored {have!r}, asked {want!r}"
            raise CacheError(f"its {field} is not the one asked for ({detail})")
    return payload
