"""Where measured evidence lives between the processes of a run and across runs.

* ``EvidenceCache``: what is measured about one model (robustness battery, attacks, attention,
  taxonomy) stored once, beside the model cache, keyed by the model (its cache key, or the
  checksum of a checkpoint's weights), the data fingerprint, the measurement settings, the
  device and a hash of the code that measures that kind of evidence, so a rerun, another
  worker or a later calibration reads it instead of measuring again, and a change to that code
  measures it again. Files are ``.npz`` with ``allow_pickle=False`` (a file in a shared cache
  folder never runs code), written atomically, checked on load (a checksum over the arrays and
  the entry's key, which the file carries: a file copied over another entry is another model's
  evidence); a damaged or foreign file is measured again, with a warning. A file without a key
  in its head (written before entries recorded theirs) cannot prove whose evidence it is, so it
  is measured again too.
* ``EvidenceStore``: one run's evidence shared by its pytest-xdist workers and controller
  (``<run>/.workers/evidence``), by model name, in the same checked ``.npz`` format (no pickle:
  nothing a process reads from a folder can run code); deleted with the run's partial folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from pathlib import Path

import numpy as np

from .io import atomic_write_bytes, inside

HERE = Path(__file__).resolve().parent
FORMAT = 2  # 2: Samples carry per-sample Brier scores (files written since carry their key in their head)
def code_hash(kind: str) -> str:
    """A hash of the source that decides ``kind`` (``kinds.Kind.code``: besides the model, the
    data and the settings in its key, the battery's strengths among them): a change to it
    measures that kind again, and the other kinds are still read from the cache."""
    from .kinds import get

    h = hashlib.sha256(kind.encode())
    for rel in get(kind).code:
        path = HERE / rel
        for p in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            h.update(p.relative_to(HERE).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


# ============================================================================ arrays in, arrays out


def pack(obj, prefix: str = "") -> tuple[dict[str, np.ndarray], object]:
    """Evidence -> (arrays, a JSON-able spec of its structure): Samples, dataclasses of arrays,
    dicts of them, lists of strings and numbers; nothing that needs pickle."""
    from .metrics import Samples

    arrays: dict[str, np.ndarray] = {}
    if isinstance(obj, Samples):
        for name in Samples.FIELDS:
            v = getattr(obj, name)
            if name == "num_classes" or v is None:
                continue
            arrays[f"{prefix}{name}"] = np.asarray(v)
        return arrays, {"type": "Samples", "prefix": prefix, "num_classes": obj.num_classes}
    if is_dataclass(obj):
        spec = {"type": "dataclass", "class": f"{type(obj).__module__}:{type(obj).__qualname__}", "fields": {}}
        for f in fields(obj):
            a, s = pack(getattr(obj, f.name), f"{prefix}{f.name}.")
            arrays.update(a)
            spec["fields"][f.name] = s
        return arrays, spec
    if isinstance(obj, dict):
        spec = {"type": "dict", "items": {}}
        for i, (k, v) in enumerate(obj.items()):
            a, s = pack(v, f"{prefix}{i}.")
            arrays.update(a)
            spec["items"][str(k)] = s
        return arrays, spec
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            obj = obj.astype(str)
        arrays[prefix.rstrip(".") or "value"] = obj
        return arrays, {"type": "array", "key": prefix.rstrip(".") or "value"}
    if isinstance(obj, list | tuple):
        return {}, {"type": "list", "value": list(obj)}
    if isinstance(obj, bool | int | float | str) or obj is None:
        return {}, {"type": "scalar", "value": obj}
    raise TypeError(f"cannot store evidence of type {type(obj).__name__} without pickle")


def unpack(arrays, spec):
    from .metrics import Samples

    t = spec["type"]
    if t == "Samples":
        p = spec["prefix"]
        return Samples(*(arrays[f"{p}{n}"] for n in ("labels", "pred", "conf", "nll", "margin", "ids")),
                       spec["num_classes"], arrays[f"{p}rank"], arrays.get(f"{p}brier"), arrays.get(f"{p}probs"))
    if t == "dataclass":
        from . import kinds

        if spec["class"] not in kinds.evidence_classes():  # only what a registered kind stores: no code from a file
            raise ValueError(f"unknown evidence class {spec['class']!r}")
        import importlib

        module, name = spec["class"].split(":")
        cls = getattr(importlib.import_module(module), name)
        return cls(**{k: unpack(arrays, s) for k, s in spec["fields"].items()})
    if t == "dict":
        return {k: unpack(arrays, s) for k, s in spec["items"].items()}
    if t == "array":
        return arrays[spec["key"]]
    if t in ("list", "scalar"):
        return spec["value"]
    raise ValueError(f"unknown evidence spec {t!r}")


def _checksum(arrays: dict[str, np.ndarray], spec_text: str) -> str:
    h = hashlib.sha256(spec_text.encode())
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(k.encode())
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


class EvidenceCache:
    """Measured evidence of models across runs, ``<folder>/<key>.npz`` (see the module)."""

    def __init__(self, folder):
        self.folder = Path(folder)

    @staticmethod
    def key(model_key: str, kind: str, context: dict) -> str:
        blob = json.dumps({"model": model_key, "kind": kind, "code": code_hash(kind), "format": FORMAT, **context},
                          sort_keys=True, default=str)
        return f"{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:24]}"

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.npz"

    def read(self, key: str):
        """(evidence, meta) or None when absent; a damaged file is None, with a warning."""
        path = self._path(key)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files if k != "__spec__"}
                head = json.loads(str(z["__spec__"]))
            if _checksum(arrays, json.dumps(head["spec"], sort_keys=True) + head.get("key", "")) != head["checksum"]:
                raise ValueError("its arrays do not match their checksum")
            if "key" not in head:  # cannot prove whose evidence it is: copied from anywhere, it would be served
                raise ValueError("it records no key (written before entries recorded theirs), so whose evidence "
                                 "it is cannot be checked")
            if head["key"] != key:  # a file copied over another entry: another model's evidence
                raise ValueError(f"it holds the evidence of another entry ({head['key']}), not {key}")
            return unpack(arrays, head["spec"]), head.get("meta") or {}
        except Exception as exc:  # damaged or foreign: measured again
            warnings.warn(f"evidence cache entry {path} is damaged ({type(exc).__name__}: {exc}); measuring again",
                          RuntimeWarning, stacklevel=2)
            return None

    def write(self, key: str, evidence, meta: dict | None = None) -> None:
        arrays, spec = pack(evidence)
        head = {"spec": spec, "meta": meta or {}, "key": key,
                "checksum": _checksum(arrays, json.dumps(spec, sort_keys=True) + key)}
        buf = io.BytesIO()
        np.savez(buf, __spec__=np.asarray(json.dumps(head, default=str)), **arrays)
        atomic_write_bytes(self._path(key), buf.getvalue())

    def get_or_measure(self, key: str, measure: Callable[[], tuple[object, dict]]):
        """(evidence, meta): read, or measured (``measure()`` -> (evidence, meta)) and stored,
        under a lock so that concurrent processes measure it once."""
        from filelock import FileLock

        self.folder.mkdir(parents=True, exist_ok=True)
        locks = self.folder / ".locks"
        locks.mkdir(exist_ok=True)
        with FileLock(str(locks / f"{key}.lock")):
            found = self.read(key)
            if found is not None:
                return found
            evidence, meta = measure()
            self.write(key, evidence, meta)
            return evidence, meta


class EvidenceStore:
    """One run's evidence on disk, ``<folder>/<model>/<kind>.npz``: a process that needs a kind
    takes its lock, reads it if another process measured it, else measures and writes it
    (atomically, checked on read like ``EvidenceCache``'s files). A model's folder must stay
    under ``folder`` (``io.inside``): a model name never leads the run's processes out of it."""

    def __init__(self, folder):
        self.folder = Path(folder)

    def _entries(self, model: str) -> EvidenceCache:
        return EvidenceCache(inside(self.folder, model, "model name"))

    def kinds(self, model: str) -> list[str]:
        d = self._entries(model).folder
        return sorted(p.stem for p in d.glob("*.npz")) if d.is_dir() else []

    def read(self, model: str, kind: str):
        found = self._entries(model).read(kind)
        if found is None:
            raise FileNotFoundError(f"the run's shared evidence holds no readable {kind} of {model}")
        return found[0]

    def get_or_measure(self, model: str, kind: str, measure: Callable[[], object]):
        return self._entries(model).get_or_measure(kind, lambda: (measure(), {}))[0]
