"""Reading and writing run folders: atomic files, strict JSON, predictions, Grad-CAM arrays.

Every file is written atomically (``harness.io``), so a reader never sees half a file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ..io import atomic_savez, atomic_write_text, inside
from ..metrics import Samples

RESULTS = "results.json"
SUMMARY = "summary.md"
INDEX = "index.html"
GRADCAM = "gradcam.npz"
FAILURE_MODES = "failure_modes.npz"
LEAKAGE = "leakage_pairs.npz"
SEGMENTS = "weak_segments.npz"
JUNIT = "junit.xml"


class ReportError(RuntimeError):
    """A run directory that cannot be reported on (no results.json, unreadable record)."""


# ============================================================================ JSON


def jsonable(obj):
    """A JSON-safe deep copy: numpy scalars/arrays to Python, tuples to lists, NaN/inf to None."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.bool_ | bool):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating | float):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, str | int):
        return obj
    return str(obj)


def dumps(record: dict) -> str:
    """Strict JSON (no NaN tokens), indented."""
    return json.dumps(jsonable(record), indent=2, allow_nan=False) + "\n"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def load_results(run: str | Path) -> tuple[dict, Path]:
    """The record of a run directory (or of its results.json); follows ``reports/latest``."""
    p = Path(run).expanduser()
    if p.is_dir() or not p.name.endswith(".json"):
        p = p / RESULTS
    if not p.is_file():
        raise ReportError(f"no {RESULTS} in {Path(run)}: not a run directory (a run's report folder, e.g. reports/latest)")
    try:
        record = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReportError(f"cannot read {p}: {exc}") from exc
    if not isinstance(record, dict):
        raise ReportError(f"cannot read {p}: it does not hold a run record (a JSON object)")
    wrong = [f"{k} ({kind.__name__})" for k, kind in (("run", dict), ("models", dict), ("gates", list))
             if not isinstance(record.get(k), kind)]
    if wrong:
        raise ReportError(f"cannot read {p}: not a run record of this harness (missing or malformed: "
                          f"{', '.join(wrong)}); rerun the suite to write it again")
    gated = {g.get("model") for g in record["gates"] if isinstance(g, dict)}
    hollow = sorted(str(m) for m in gated | set(record["models"])
                    if m is not None and m not in record.get("diverged", {})
                    and not isinstance((record["models"].get(m) or {}).get("metrics"), dict))
    if hollow:
        raise ReportError(f"cannot read {p}: model(s) {', '.join(hollow)} have no metrics in it although the run "
                          "measured them (an edited or truncated record): a page without them would hide what they "
                          "showed; rerun the suite to write it again")
    return record, p.resolve().parent


def list_files(run_dir: Path, extra: tuple[str, ...] = ()) -> list[str]:
    found = {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*")
             if p.is_file() and not p.name.startswith(".")}
    return sorted(found | set(extra))


# ============================================================================ record helpers


def _stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"


def stems(names: list[str]) -> dict[str, str]:
    """A file-name-safe, unique stem per model name."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for n in names:
        s, i = _stem(n), 2
        while s in used:
            s, i = f"{_stem(n)}-{i}", i + 1
        used.add(s)
        out[n] = s
    return out


def model_order(record: dict) -> list[str]:
    """Model names, the baseline first, then the record's order."""
    names = list(record.get("models") or {})
    base = record.get("baseline")
    return ([base] if base in names else []) + [n for n in names if n != base]


def candidates(record: dict) -> list[str]:
    base = record.get("baseline")
    return [m for m in model_order(record) if m != base] if base in (record.get("models") or {}) else []


def record_classes(record: dict, k: int | None = None) -> list[str]:
    classes = list(record.get("classes") or [])
    if k is not None and len(classes) != k:
        classes = classes + [str(i) for i in range(len(classes), k)] if len(classes) < k else classes[:k]
    return classes


# ============================================================================ predictions


@dataclass
class ModelData:
    """A model's saved test predictions."""

    logits: np.ndarray
    labels: np.ndarray
    ids: np.ndarray

    @property
    def samples(self) -> Samples:
        if not hasattr(self, "_samples"):
            self._samples = Samples.from_logits(self.logits, self.labels, self.ids)
        return self._samples


def contradictions(record: dict) -> list[str]:
    """Where a record contradicts itself (a hand-edited results.json): a gate whose status does
    not follow from its value and bound, a gate's value that is not the model's metric, a verdict
    that does not follow from the gates. Empty for a record the suite wrote."""
    out = []
    models = record.get("models") or {}
    failing = 0
    for g in record.get("gates") or []:
        if not isinstance(g, dict):
            continue
        status, kind, value, bound = g.get("status"), g.get("kind"), g.get("value"), g.get("bound")
        failing += status in ("failed", "xpass")
        label = f"[{g['label']}]" if g.get("label") else ""
        what = f"{g.get('model')}: {g.get('metric')}{label}_{kind}"
        if kind in ("min", "max") and status in ("passed", "failed", "xfail", "xpass") and \
                isinstance(value, int | float) and isinstance(bound, int | float):
            fails = value < bound if kind == "min" else value > bound
            if fails != (status in ("failed", "xfail")):
                out.append(f"{what} = {value:g} is {status!r} against {kind} {bound:g}")
        metric = (models.get(g.get("model")) or {}).get("metrics", {}).get(g.get("metric"))
        if not g.get("label") and kind in ("min", "max") and isinstance(metric, int | float) and \
                isinstance(value, int | float) and not math.isclose(metric, value, rel_tol=1e-9, abs_tol=1e-12) and \
                "mean over" not in str(g.get("message") or ""):
            out.append(f"{what} checked {value:g}, but the model's {g.get('metric')} is {metric:g}")
    v = record.get("verdict") or {}
    if v.get("status") == "pass" and failing:
        out.append(f"the verdict says pass beside {failing} failed gate(s)")
    if v.get("status") == "fail" and not failing and not v.get("reasons"):
        out.append("the verdict says fail with no failed gate and no reason")
    return out


def write_predictions(run_dir: Path, stem: str, arr: Mapping, classes: list[str]) -> tuple[str, str, ModelData]:
    logits = np.asarray(arr["logits"], dtype=np.float32)
    labels = np.asarray(arr["labels"]).astype(np.int64)
    ids = np.asarray(arr["ids"] if arr.get("ids") is not None else np.arange(len(labels))).astype(np.int64)
    if logits.ndim != 2 or labels.shape != (len(logits),) or ids.shape != labels.shape:
        raise ValueError(f"logits {logits.shape}, labels {labels.shape} and ids {ids.shape} do not match")
    if not np.isfinite(logits).all():
        raise ValueError("logits hold NaN or infinite values")
    npz = f"predictions/{stem}.npz"
    atomic_savez(run_dir / npz, ids=ids, labels=labels, logits=logits)
    data = ModelData(logits, labels, ids)
    csv_rel = write_predictions_csv(run_dir, stem, data, classes)
    return npz, csv_rel, data


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet reads as the start of a formula


def csv_cell(value):
    """A text cell a spreadsheet shows as text: one that would start a formula (a class named
    ``=HYPERLINK(...)``, ``@SUM``, ``-cmd``) gets a leading apostrophe (OWASP's CSV injection
    advice); numbers, signed ones too, are left as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_START) and value != "-":  # "-": a missing value
        try:
            float(value.rstrip("%"))  # a signed number ("-0.012", "+1.5%") is data, not a formula
            return value
        except ValueError:
            return "'" + value
    return value


def write_predictions_csv(run_dir: Path, stem: str, data: ModelData, classes: list[str]) -> str:
    s = data.samples
    names = record_classes({"classes": classes}, s.num_classes)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "label", "label_name", "pred", "pred_name", "confidence", "correct"])
    for i, y, p, c in zip(s.ids.tolist(), s.labels.tolist(), s.pred.tolist(), s.conf.tolist()):
        w.writerow([i, y, csv_cell(names[y]), p, csv_cell(names[p]), f"{c:.6f}", int(y == p)])
    rel = f"predictions/{stem}.csv"
    atomic_write_text(run_dir / rel, buf.getvalue())
    return rel


def load_predictions(record: dict, run_dir: Path) -> tuple[dict[str, ModelData], list[str]]:
    data, problems = {}, []
    for m in model_order(record):
        rel = (record["models"][m] or {}).get("predictions")
        if not rel:
            problems.append(f"model {m!r} has no predictions file in the record")
            continue
        try:
            with np.load(inside(run_dir, rel, f"the predictions file of {m!r}"), allow_pickle=False) as z:
                data[m] = ModelData(z["logits"], z["labels"].astype(np.int64), z["ids"].astype(np.int64))
        except Exception as exc:  # noqa: BLE001 - reported, the rest of the report goes on
            problems.append(f"predictions of {m!r} ({rel}): {type(exc).__name__}: {exc}")
    return data, problems


# ============================================================================ Grad-CAM gallery


def write_gradcam(run_dir: Path, g: Mapping) -> None:
    models = list(g["cams"])
    out = {
        "images": np.asarray(g["images"], dtype=np.float32),
        "ids": np.asarray(g["ids"]).astype(np.int64),
        "labels": np.asarray(g["labels"]).astype(np.int64),
        "models": np.asarray(models, dtype=str),
    }
    for i, m in enumerate(models):
        out[f"cam_{i}"] = np.asarray(g["cams"][m], dtype=np.float32)
        out[f"pred_{i}"] = np.asarray(g["preds"][m]).astype(np.int64)
        out[f"conf_{i}"] = np.asarray(g["confidences"][m], dtype=np.float32)
    atomic_savez(run_dir / GRADCAM, **out)


def load_gradcam(run_dir: Path) -> dict | None:
    path = run_dir / GRADCAM
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        models = [str(m) for m in z["models"]]
        return {
            "images": z["images"], "ids": z["ids"], "labels": z["labels"],
            "cams": {m: z[f"cam_{i}"] for i, m in enumerate(models)},
            "preds": {m: z[f"pred_{i}"] for i, m in enumerate(models)},
            "confidences": {m: z[f"conf_{i}"] for i, m in enumerate(models)},
        }


# ============================================================================ failure-mode examples


FAILURE_MODE_KEYS = ("images", "ids", "labels", "preds", "confidences", "modes")
SEGMENT_KEYS = ("images", "ids", "segment")


def _write_per_model(path: Path, per_model: Mapping, keys: tuple[str, ...], text: tuple[str, ...] = ()) -> None:
    """Arrays per model in one .npz: ``models`` and ``<key>_<i>`` (``text`` keys as strings)."""
    models = list(per_model)
    out = {"models": np.asarray(models, dtype=str)}
    for i, m in enumerate(models):
        for key in keys:
            v = np.asarray(per_model[m][key])
            out[f"{key}_{i}"] = v.astype(str) if key in text else v
    atomic_savez(path, **out)


def _load_per_model(path: Path, keys: tuple[str, ...]) -> dict | None:
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        models = [str(m) for m in z["models"]]
        return {m: {k: z[f"{k}_{i}"] for k in keys} for i, m in enumerate(models)}


def write_failure_modes(run_dir: Path, per_model: Mapping) -> None:
    _write_per_model(run_dir / FAILURE_MODES, per_model, FAILURE_MODE_KEYS, text=("modes",))


def load_failure_modes(run_dir: Path) -> dict | None:
    return _load_per_model(run_dir / FAILURE_MODES, FAILURE_MODE_KEYS)


# ============================================================================ leakage pairs


def write_leakage(run_dir: Path, pairs: Mapping) -> None:
    atomic_savez(run_dir / LEAKAGE, **{k: np.asarray(v) for k, v in pairs.items()})


def load_leakage(run_dir: Path) -> dict | None:
    path = run_dir / LEAKAGE
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# ============================================================================ weak-segment examples


def write_segments(run_dir: Path, per_model: Mapping) -> None:
    """Each model's example images of its weak segments (``harness/kinds/segments.py``)."""
    _write_per_model(run_dir / SEGMENTS, per_model, SEGMENT_KEYS)


def load_segments(run_dir: Path) -> dict | None:
    return _load_per_model(run_dir / SEGMENTS, SEGMENT_KEYS)
