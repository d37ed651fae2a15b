"""Run record -> report files: predictions, figures, summary.md, index.html, results.json.

``write_run(record, run_dir, arrays)`` is called once at the end of a pytest session (by the
plugin in ``fixtures/``); ``rebuild(run_dir)`` re-renders everything of a finished run from
its ``results.json`` and ``predictions/*.npz`` (``python -m harness report RUN_DIR``);
``compare_runs(a, b)`` prints what changed between two runs (``python -m harness compare``).

What a run directory holds::

    results.json          the run record + "figures" (path, ok, error, caption) + "report"
    summary.md            the tables, GitHub markdown (tabulate)
    index.html            every table and figure on one page; no external resources
    predictions/M.npz     ids, labels, logits of model M on the test split (every number in
    predictions/M.csv     the report can be recomputed from these)
    gradcam.npz           the Grad-CAM gallery's images and CAMs (re-render without models)
    figures/*.png         matplotlib, Agg
    junit.xml             written by pytest itself, linked when present

Rules: every file is written atomically (temporary file in the same folder, then
``os.replace``), so a reader never sees half a file; and a report never breaks or hides the
run: a figure that raises is recorded with ``ok: false`` and its error (and shown as a
failure box in the page), the other files are still written.
"""

from __future__ import annotations

import contextlib
import csv
import html
import io
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from tabulate import tabulate

from . import figures, metrics
from .evaluate import softmax

RESULTS = "results.json"
SUMMARY = "summary.md"
INDEX = "index.html"
GRADCAM = "gradcam.npz"
JUNIT = "junit.xml"
DASH = "—"


class ReportError(RuntimeError):
    """A run directory that cannot be reported on (no results.json, unreadable record)."""


# ============================================================================ atomic files


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


def atomic_savefig(path: str | Path, fig) -> Path:
    return atomic_write_bytes(path, figures.render_png(fig))


# ============================================================================ JSON


def _jsonable(obj):
    """A JSON-safe deep copy: numpy scalars/arrays to Python, tuples to lists, NaN/inf to None."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
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


def _dumps(record: dict) -> str:
    return json.dumps(_jsonable(record), indent=2, allow_nan=False) + "\n"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ============================================================================ record helpers


def _stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"


def _stems(names: list[str]) -> dict[str, str]:
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


def _candidates(record: dict) -> list[str]:
    base = record.get("baseline")
    return [m for m in model_order(record) if m != base] if base in (record.get("models") or {}) else []


def _classes(record: dict, k: int | None = None) -> list[str]:
    classes = list(record.get("classes") or [])
    if k is not None and len(classes) != k:
        classes = classes + [str(i) for i in range(len(classes), k)] if len(classes) < k else classes[:k]
    return classes


def _is_num(v) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool) and math.isfinite(float(v))


@dataclass
class ModelData:
    logits: np.ndarray
    labels: np.ndarray
    ids: np.ndarray

    @property
    def probs(self) -> np.ndarray:
        if not hasattr(self, "_probs"):
            self._probs = softmax(self.logits)
        return self._probs


def _write_predictions(run_dir: Path, stem: str, arr: Mapping, classes: list[str]) -> tuple[str, str, ModelData]:
    logits = np.asarray(arr["logits"], dtype=np.float32)
    labels = np.asarray(arr["labels"]).astype(np.int64)
    ids = np.asarray(arr["ids"] if arr.get("ids") is not None else np.arange(len(labels))).astype(np.int64)
    if logits.ndim != 2 or labels.shape != (len(logits),) or ids.shape != labels.shape:
        raise ValueError(f"logits {logits.shape}, labels {labels.shape} and ids {ids.shape} do not match")
    npz = f"predictions/{stem}.npz"
    atomic_savez(run_dir / npz, ids=ids, labels=labels, logits=logits)
    data = ModelData(logits, labels, ids)
    csv_rel = _write_predictions_csv(run_dir, stem, data, classes)
    return npz, csv_rel, data


def _write_predictions_csv(run_dir: Path, stem: str, data: ModelData, classes: list[str]) -> str:
    probs = data.probs
    pred = probs.argmax(1)
    conf = probs.max(1)
    names = _classes({"classes": classes}, probs.shape[1])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "label", "label_name", "pred", "pred_name", "confidence", "correct"])
    for i, y, p, c in zip(data.ids.tolist(), data.labels.tolist(), pred.tolist(), conf.tolist()):
        w.writerow([i, y, names[y], p, names[p], f"{c:.6f}", int(y == p)])
    rel = f"predictions/{stem}.csv"
    atomic_write_text(run_dir / rel, buf.getvalue())
    return rel


def _fill_missing_metrics(entry: dict, data: ModelData) -> None:
    """Fill what the plugin left out from the predictions (never overwrite its numbers)."""
    m = entry.setdefault("metrics", {})
    wanted = ("accuracy", "loss", "errors", "mean_confidence_wrong", "ece", "mce", "aurc", "confident_errors_90",
              "confident_errors_99", "confident_error_share_90", "confident_error_share_99",
              "selective_coverage", "selective_accuracy", "worst_class_accuracy")
    if any(k not in m for k in wanted):
        for k, v in metrics.summary(data.probs, data.labels).items():
            m.setdefault(k, v)
    if not entry.get("per_class_accuracy"):
        entry["per_class_accuracy"] = metrics.per_class_accuracy(data.probs, data.labels).tolist()


def _load_predictions(record: dict, run_dir: Path) -> tuple[dict[str, ModelData], list[str]]:
    data, problems = {}, []
    for m in model_order(record):
        rel = (record["models"][m] or {}).get("predictions")
        if not rel:
            problems.append(f"model {m!r} has no predictions file in the record")
            continue
        try:
            with np.load(run_dir / rel, allow_pickle=False) as z:
                data[m] = ModelData(z["logits"], z["labels"].astype(np.int64), z["ids"].astype(np.int64))
        except Exception as exc:  # noqa: BLE001 - reported, the rest of the report goes on
            problems.append(f"predictions of {m!r} ({rel}): {type(exc).__name__}: {exc}")
    return data, problems


def _write_gradcam(run_dir: Path, g: Mapping) -> None:
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


def _load_gradcam(run_dir: Path) -> dict | None:
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


# ============================================================================ figures


@dataclass
class FigureSpec:
    name: str
    caption: str
    section: str
    make: Callable[[], object]


SECTIONS = {
    "training": "Training",
    "confidence": "Confidence and calibration",
    "classes": "Per-class behaviour",
    "failures": "Failure cases",
}


def figure_plan(record: dict, data: dict[str, ModelData], gradcam: dict | None) -> list[FigureSpec]:
    """The figures a run gets. Each ``make`` looks its function up in ``figures`` when called."""
    specs: list[FigureSpec] = []
    models = record.get("models") or {}
    order = model_order(record)
    stems = _stems(order)
    base = record.get("baseline")
    histories = {m: models[m].get("history") or [] for m in order}
    if any(histories.values()):
        specs.append(FigureSpec(
            "training_curves",
            "Training and validation loss (left) and accuracy (right) per epoch for every model; the star marks "
            "the epoch whose checkpoint was kept (best validation accuracy).",
            "training",
            lambda: figures.training_curves(histories, {m: models[m].get("best_epoch") for m in order}),
        ))
    pairs = {m: (d.probs, d.labels) for m, d in data.items()}
    if pairs:
        specs.append(FigureSpec(
            "confident_errors",
            "Wrong predictions made with confidence at or above each threshold: the higher the threshold, the more "
            "dangerous the error.",
            "confidence", lambda: figures.confident_errors(pairs),
        ))
        specs.append(FigureSpec(
            "confidence_histograms",
            "Confidence of wrong (left) and correct (right) predictions. A well-behaved model is unsure when it "
            "is wrong and sure when it is right.",
            "confidence", lambda: figures.confidence_histograms(pairs),
        ))
        for m, d in data.items():
            mm = models[m].get("metrics") or {}
            specs.append(FigureSpec(
                f"reliability_{stems[m]}",
                f"Reliability diagram of {m}: accuracy vs mean confidence in 15 equal-width bins (the ECE bins); "
                "bars below the diagonal are over-confident. Bottom: images per bin (log scale).",
                "confidence",
                lambda m=m, d=d, mm=mm: figures.reliability_diagram(m, d.probs, d.labels, mm.get("ece"), mm.get("mce")),
            ))
        specs.append(FigureSpec(
            "risk_coverage",
            "Risk-coverage: error rate of the predictions kept when the least confident are rejected; the area "
            "under each curve is its AURC (lower is better).",
            "confidence",
            lambda: figures.risk_coverage(pairs, {m: (models[m].get("metrics") or {}).get("aurc") for m in data}),
        ))
    if base in data:
        for c in (c for c in _candidates(record) if c in data):
            b, d = data[base], data[c]
            specs.append(FigureSpec(
                f"class_delta_{stems[c]}",
                f"Per-class accuracy change, {c} minus {base}, sorted. Green: improved, red: regressed.",
                "classes",
                lambda b=b, d=d, c=c: figures.class_accuracy_change(
                    _classes(record, b.probs.shape[1]),
                    metrics.per_class_accuracy(b.probs, b.labels), metrics.per_class_accuracy(d.probs, d.labels),
                    base, c),
            ))
    for m, d in data.items():
        specs.append(FigureSpec(
            f"confusion_{stems[m]}",
            f"Confusion matrix of {m} on the test split, normalised by true class (rows).",
            "classes",
            lambda m=m, d=d: figures.confusion_matrix(m, d.probs, d.labels, _classes(record, d.probs.shape[1])),
        ))
    if gradcam is not None:
        g = gradcam
        cam_models = [m for m in order if m in g["cams"]] + [m for m in g["cams"] if m not in order]
        specs.append(FigureSpec(
            "gradcam_gallery",
            "Grad-CAM of each model on the gallery's test images (red: attention), for the predicted class. "
            "Titles: test id, true class -> predicted class (confidence).",
            "failures",
            lambda: figures.gradcam_gallery(
                g["images"], g["ids"], g["labels"],
                _classes(record, max(len(record.get("classes") or []), 1 + int(max(
                    g["labels"].max(initial=0), *[p.max(initial=0) for p in g["preds"].values()])))),
                {m: g["cams"][m] for m in cam_models}, g["preds"], g["confidences"]),
        ))
    return specs


def _render_figure(spec: FigureSpec, run_dir: Path) -> dict:
    rel = f"figures/{spec.name}.png"
    t0 = time.perf_counter()
    try:
        fig = spec.make()
        atomic_write_bytes(run_dir / rel, figures.render_png(fig))
        ok, error = True, None
    except Exception as exc:  # noqa: BLE001 - a figure never breaks the report
        ok, error = False, f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(FileNotFoundError):
            (run_dir / rel).unlink()  # never show a stale picture for a figure that failed now
    return {"path": rel, "ok": ok, "error": error, "caption": spec.caption, "section": spec.section,
            "seconds": round(time.perf_counter() - t0, 3)}


# ============================================================================ formatting


def _fmt(v, kind: str = "num") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return DASH
    if kind == "bool" or isinstance(v, bool):
        return "yes" if v else "no"
    if not _is_num(v):
        return str(v)
    v = float(v)
    if kind == "pct":
        return f"{v * 100:.2f}%"
    if kind == "int":
        return f"{int(round(v))}"
    if kind == "sec":
        return f"{v:.1f} s"
    if kind == "p":
        return f"{v:.3g}"
    return f"{v:.4f}"


def _fmt_delta(d, kind: str = "num") -> str:
    if d is None or not _is_num(d):
        return DASH
    d = float(d)
    if kind == "pct":
        return f"{d * 100:+.2f} pp"
    if kind == "int":
        return f"{int(round(d)):+d}"
    if kind == "sec":
        return f"{d:+.1f} s"
    return f"{d:+.4f}"


def _fmt_ci(ci, kind: str = "num") -> str:
    if not ci or len(ci) != 2 or not all(_is_num(x) for x in ci):
        return DASH
    lo, hi = float(ci[0]), float(ci[1])
    if kind == "pct":
        return f"[{lo * 100:+.2f}, {hi * 100:+.2f}] pp"
    if kind == "int":
        return f"[{lo:+.0f}, {hi:+.0f}]"
    return f"[{lo:+.4f}, {hi:+.4f}]"


METRIC_ROWS: list[tuple[str, str, str]] = [
    ("accuracy", "Test accuracy", "pct"),
    ("loss", "Test loss (NLL)", "num"),
    ("errors", "Wrong predictions", "int"),
    ("confident_errors_90", "Wrong with >=90% confidence", "int"),
    ("confident_errors_99", "Wrong with >=99% confidence", "int"),
    ("confident_error_share_90", "Share of errors >=90% confident", "pct"),
    ("confident_error_share_99", "Share of errors >=99% confident", "pct"),
    ("mean_confidence_wrong", "Mean confidence when wrong", "pct"),
    ("ece", "ECE (15 bins)", "num"),
    ("mce", "MCE (15 bins)", "num"),
    ("aurc", "AURC", "num"),
    ("selective_accuracy", "Selective accuracy (reject <70%)", "pct"),
    ("selective_coverage", "Coverage (reject <70%)", "pct"),
    ("worst_class_accuracy", "Worst-class accuracy", "pct"),
    ("generalisation_gap", "Generalisation gap (train - val accuracy)", "pct"),
]
METRIC_KIND = {k: kind for k, _, kind in METRIC_ROWS}
ENTRY_ROWS: list[tuple[str, str, str]] = [
    ("best_epoch", "Best epoch (kept)", "int"),
    ("train_size", "Training images", "int"),
    ("train_seconds", "Training time", "sec"),
    ("cached", "From the model cache", "bool"),
    ("temperature", "Temperature (post-hoc)", "num"),
]


def metric_kind(key: str) -> str:
    if key in METRIC_KIND:
        return METRIC_KIND[key]
    if key.startswith(("confident_errors", "errors")):
        return "int"
    if key.endswith(("accuracy", "share", "coverage", "rate")) or "share" in key:
        return "pct"
    return "num"


# ============================================================================ tables
# Each returns (headers, rows) of plain strings: summary.md renders them with tabulate,
# index.html with _html_table (which colours PASS/FAIL cells).

Table = tuple[list[str], list[list[str]]]


def table_overall(record: dict) -> Table:
    models = record.get("models") or {}
    order = model_order(record)
    base = record.get("baseline")
    cands = _candidates(record)
    headers = ["Metric", *order, *[f"change {c}" for c in cands]]
    keys = [r for r in METRIC_ROWS if any(r[0] in (models[m].get("metrics") or {}) for m in order)]
    known = {k for k, _, _ in METRIC_ROWS}
    extra = sorted({k for m in order for k, v in (models[m].get("metrics") or {}).items()
                    if k not in known and _is_num(v)})
    keys += [(k, k.replace("_", " "), metric_kind(k)) for k in extra]
    rows = []
    for key, label, kind in keys:
        vals = [(models[m].get("metrics") or {}).get(key) for m in order]
        b = (models[base].get("metrics") or {}).get(key) if base in models else None
        deltas = [_fmt_delta(float((models[c].get("metrics") or {}).get(key)) - float(b), kind)
                  if _is_num(b) and _is_num((models[c].get("metrics") or {}).get(key)) else DASH for c in cands]
        rows.append([label, *[_fmt(v, kind) for v in vals], *deltas])
    for key, label, kind in ENTRY_ROWS:
        vals = [models[m].get(key) for m in order]
        if all(v is None for v in vals):
            continue
        b = models[base].get(key) if base in models else None
        deltas = [_fmt_delta(float(models[c][key]) - float(b), kind)
                  if kind in ("sec",) and _is_num(b) and _is_num(models[c].get(key)) else "" for c in cands]
        rows.append([label, *[_fmt(v, kind) for v in vals], *deltas])
    return headers, rows


def table_thresholds(record: dict, data: dict[str, ModelData]) -> Table:
    order = [m for m in model_order(record) if m in data]
    base = record.get("baseline")
    cands = [c for c in order if c != base] if base in data else []
    headers = ["Confidence >=", *order, *[f"change {c}" for c in cands]]
    counts = {m: [metrics.confident_errors(data[m].probs, data[m].labels, t) for t in figures.THRESHOLDS] for m in order}
    rows = []
    for i, t in enumerate(figures.THRESHOLDS):
        row = [f"{round(t * 100, 2):g}%", *[str(counts[m][i]) for m in order]]
        for c in cands:
            b, v = counts[base][i], counts[c][i]
            row.append(f"{v - b:+d} ({(v - b) / b:+.0%})" if b else f"{v - b:+d}")
        rows.append(row)
    return headers, rows


def table_per_class(record: dict, data: dict[str, ModelData] | None = None) -> Table:
    models = record.get("models") or {}
    order = model_order(record)
    base = record.get("baseline")
    cands = _candidates(record)
    pca = {}
    for m in order:
        v = models[m].get("per_class_accuracy")
        if not v and data and m in data:
            v = metrics.per_class_accuracy(data[m].probs, data[m].labels).tolist()
        pca[m] = v or []
    k = max((len(v) for v in pca.values()), default=0)
    classes = _classes(record, k)
    headers = ["Class", *order, *[f"change {c}" for c in cands]]
    rows = []
    for i in range(k):
        row = [classes[i]]
        for m in order:
            row.append(_fmt(pca[m][i] if i < len(pca[m]) else None, "pct"))
        for c in cands:
            a, b = (pca[c][i] if i < len(pca[c]) else None), (pca[base][i] if i < len(pca[base]) else None)
            row.append(_fmt_delta(a - b, "pct") if _is_num(a) and _is_num(b) else DASH)
        rows.append(row)
    return headers, rows


def _held(v) -> str:
    return "yes" if v is True else "NO" if v is False else "n/a"


def table_comparisons(record: dict) -> Table:
    headers = ["Candidate", "Against", "Accuracy change [95% CI]", "McNemar p", "Corrected", "Regressed", "Net",
               "Both wrong", "Both wrong, lower confidence", "Expected effect", "Effect held", "Verdict"]
    rows = []
    for c, cmp in (record.get("comparisons") or {}).items():
        corr, reg = cmp.get("corrected"), cmp.get("regressed")
        rows.append([
            c, str(cmp.get("against", record.get("baseline", DASH))),
            f"{_fmt_delta(cmp.get('accuracy_delta'), 'pct')} {_fmt_ci(cmp.get('accuracy_delta_ci'), 'pct')}",
            _fmt(cmp.get("mcnemar_p"), "p"), _fmt(corr, "int"), _fmt(reg, "int"),
            _fmt_delta(corr - reg, "int") if _is_num(corr) and _is_num(reg) else DASH,
            _fmt(cmp.get("both_wrong"), "int"), _fmt(cmp.get("both_wrong_lower_confidence_share"), "pct"),
            str(cmp.get("expected_effect") or DASH), _held(cmp.get("effect_held")), str(cmp.get("verdict") or DASH),
        ])
    return headers, rows


def table_metric_deltas(record: dict) -> Table:
    headers = ["Candidate", "Metric", "Change (candidate - baseline)", "95% CI", "CI excludes 0"]
    rows = []
    for c, cmp in (record.get("comparisons") or {}).items():
        for key, d in (cmp.get("metric_deltas") or {}).items():
            d = d if isinstance(d, Mapping) else {"delta": d}
            kind = metric_kind(key)
            ci = d.get("ci")
            excl = DASH
            if ci and len(ci) == 2 and all(_is_num(x) for x in ci):
                excl = "yes" if (ci[0] > 0 or ci[1] < 0) else "no"
            rows.append([c, key, _fmt_delta(d.get("delta"), kind), _fmt_ci(ci, kind), excl])
    return headers, rows


def table_named_cases(record: dict) -> Table:
    cases = record.get("named_cases") or []
    order = model_order(record)
    in_cases = [m for m in order if any(m in (c.get("models") or {}) for c in cases)]
    in_cases += [m for c in cases for m in (c.get("models") or {}) if m not in in_cases]
    in_cases = list(dict.fromkeys(in_cases))
    base = record.get("baseline")
    headers = ["Test #", "True", *in_cases, "What happened"]
    rows = []
    for case in cases:
        ms = case.get("models") or {}
        row = [str(case.get("id", DASH)), str(case.get("label", DASH))]
        for m in in_cases:
            p = ms.get(m)
            if not p:
                row.append(DASH)
                continue
            mark = "right" if p.get("correct") else "wrong"
            row.append(f"{p.get('pred', DASH)} ({_fmt(p.get('confidence'), 'pct')}, {mark})")
        notes = []
        b = ms.get(base)
        for m in in_cases:
            p = ms.get(m)
            if m == base or not p or not b:
                continue
            if not b.get("correct") and p.get("correct"):
                notes.append(f"{m}: fixed")
            elif b.get("correct") and not p.get("correct"):
                notes.append(f"{m}: regressed")
            elif not b.get("correct"):
                dc = (p.get("confidence") or 0) - (b.get("confidence") or 0)
                notes.append(f"{m}: still wrong, confidence {dc * 100:+.1f} pp")
            else:
                notes.append(f"{m}: right in both")
        row.append("; ".join(notes) or DASH)
        rows.append(row)
    return headers, rows


def _bound(g: Mapping) -> str:
    kind, bound = g.get("kind"), g.get("bound")
    sym = {"max": "<=", "min": ">=", "eq": "=="}.get(kind, str(kind or ""))
    return f"{sym} {_fmt_value(bound)}".strip()


def _fmt_value(v) -> str:
    if v is None:
        return DASH
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int | np.integer):
        return str(int(v))
    if _is_num(v):
        return f"{float(v):.4g}"
    return str(v)


def _gates_sorted(record: dict) -> list[dict]:
    gates = list(record.get("gates") or [])
    return sorted(gates, key=lambda g: bool(g.get("passed")))  # failures first, stable


def table_gates(record: dict) -> Table:
    headers = ["Result", "Test", "Model", "Metric", "Value", "Bound", "Source", "Message"]
    rows = [["PASS" if g.get("passed") else "FAIL", str(g.get("test", DASH)), str(g.get("model") or DASH),
             str(g.get("metric", DASH)), _fmt_value(g.get("value")), _bound(g), str(g.get("source") or DASH),
             str(g.get("message") or "")]
            for g in _gates_sorted(record)]
    return headers, rows


def gate_counts(record: dict) -> tuple[int, int]:
    gates = record.get("gates") or []
    passed = sum(1 for g in gates if g.get("passed"))
    return passed, len(gates) - passed


def table_recipes(record: dict) -> Table:
    models = record.get("models") or {}
    order = model_order(record)
    headers = ["Field", *order]
    rows = [["recipe hash", *[str(models[m].get("recipe_hash") or DASH) for m in order]],
            ["cache key", *[str(models[m].get("cache_key") or DASH) for m in order]]]
    fields: list[str] = []
    for m in order:
        for k in models[m].get("recipe") or {}:
            if k not in fields:
                fields.append(k)
    for f in fields:
        vals = [(models[m].get("recipe") or {}).get(f, DASH) for m in order]
        shown = [json.dumps(v) if isinstance(v, list) else str(v) for v in vals]
        rows.append([f + (" *" if len(set(shown)) > 1 else ""), *shown])
    return headers, rows


def table_metadata(record: dict) -> Table:
    run = record.get("run") or {}
    git = run.get("git") or {}
    commit = git.get("commit") or "unknown"
    if git.get("dirty"):
        commit += " (dirty: uncommitted changes)"
    seeds = run.get("seeds") or {}
    tests = record.get("tests") or {}
    rows = [
        ["Run", run.get("id", DASH)],
        ["Dataset / profile", f"{run.get('dataset', DASH)} / {run.get('profile', DASH)}"],
        ["Started / finished (UTC)", f"{run.get('started_utc', DASH)} / {run.get('finished_utc', DASH)}"],
        ["Total time", _fmt((record.get("timings") or {}).get("total_seconds"), "sec")],
        ["Device", f"{run.get('device', DASH)} ({run.get('device_name', DASH)})"],
        ["Command", run.get("command", DASH)],
        ["Git commit", commit],
        ["Exit status", str(run.get("exit_status", DASH))],
        ["Tests", ", ".join(f"{v} {k}" for k, v in tests.items()) or DASH],
        ["Seeds", json.dumps(seeds, sort_keys=True) if seeds else DASH],
        ["Versions", ", ".join(f"{k} {v}" for k, v in (run.get("versions") or {}).items()) or DASH],
    ]
    return ["Field", "Value"], [[str(a), str(b)] for a, b in rows]


# ============================================================================ summary.md


def _md(table: Table) -> str:
    headers, rows = table
    esc = [[c.replace("|", "\\|") for c in r] for r in rows]
    return tabulate(esc, headers=[h.replace("|", "\\|") for h in headers], tablefmt="github", disable_numparse=True)


def _headline(record: dict) -> str:
    passed, failed = gate_counts(record)
    tests = record.get("tests") or {}
    t = ", ".join(f"{v} {k}" for k, v in tests.items())
    return f"{passed} gates passed, {failed} failed" + (f" · tests: {t}" if t else "")


def summary_markdown(record: dict, data: dict[str, ModelData] | None = None) -> str:
    run = record.get("run") or {}
    out = [f"# Stress run {run.get('id', '')}", "",
           f"**{_headline(record)}** · {run.get('dataset', '')} / {run.get('profile', '')} on {run.get('device', '')}", ""]

    def section(title: str, table: Table, note: str = "") -> None:
        if table[1]:
            out.extend([f"## {title}", ""] + ([note, ""] if note else []) + [_md(table), ""])

    section("Gates", table_gates(record))
    section("Overall metrics (test split)", table_overall(record),
            "Changes are candidate minus baseline; pp = percentage points.")
    if data:
        section("Wrong predictions by confidence threshold", table_thresholds(record, data))
    section("Comparisons (paired, same test images)", table_comparisons(record))
    section("Metric changes with bootstrap 95% intervals", table_metric_deltas(record))
    section("Per-class accuracy", table_per_class(record, data))
    section("Named failure cases", table_named_cases(record))
    figs = record.get("figures") or {}
    if figs:
        out.extend(["## Figures", ""])
        for name, f in figs.items():
            if f.get("ok"):
                out.append(f"- [{name}]({f['path']}): {f.get('caption', '')}")
            else:
                out.append(f"- **{name} FAILED**: {f.get('error')}")
        out.append("")
    section("Recipes (* = differs between models)", table_recipes(record))
    section("Run", table_metadata(record))
    return "\n".join(out)


# ============================================================================ index.html

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:1280px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:1.5rem;margin:.4em 0 .2em}h2{margin-top:1.6em;border-bottom:2px solid #dde1e7;padding-bottom:.2em}
nav{position:sticky;top:0;background:#1d2330;padding:8px 24px;z-index:2}nav a{color:#e8ecf2;margin-right:16px;
text-decoration:none;font-size:.9rem}nav a:hover{text-decoration:underline}
.headline{font-size:1.15rem;font-weight:600;padding:10px 14px;border-radius:6px;margin:10px 0;display:inline-block}
.headline.ok{background:#dcf5e3;color:#125c2b;border:1px solid #8fd3a3}
.headline.bad{background:#fde2e1;color:#8a1414;border:1px solid #f0a3a0}
.meta{color:#5b6472}.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:8px 0 16px;background:#fff;font-size:.86rem}
th,td{border:1px solid #d5dae1;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5;position:sticky;top:0}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.pass{background:#2e9e4f;color:#fff;font-weight:700;text-align:center}
td.fail{background:#c62828;color:#fff;font-weight:700;text-align:center}
td.yes{color:#125c2b;font-weight:600}td.no{color:#8a1414;font-weight:700}
tr.failed td{background:#fff1f0}tr.failed td.fail{background:#c62828}
.figs{display:flex;flex-wrap:wrap;gap:16px}
figure{margin:0;background:#fff;border:1px solid #d5dae1;border-radius:6px;padding:8px;flex:1 1 520px;max-width:100%}
figure.wide{flex-basis:100%}figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{font-size:.85rem;color:#3d4553;margin-top:6px}
.fig-failed{border:2px solid #c62828;background:#fff1f0;color:#8a1414;padding:14px;border-radius:6px;
flex:1 1 520px}.fig-failed pre{white-space:pre-wrap;margin:.4em 0 0}
details{margin:8px 0}summary{cursor:pointer;font-weight:600}code{background:#eef1f5;padding:1px 4px;border-radius:3px}
.problems{border:2px solid #c62828;background:#fff1f0;padding:8px 14px;border-radius:6px}
"""

LOAD_CHECK = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.dataset.figuresLoaded = ok + "/" + imgs.length;
});
</script>"""

_NUMERIC = re.compile(r"^[+\-]?[\d.,]+(e[+\-]?\d+)?(%| pp| s)?( \[.*\])?( pp)?$|^—$")


def _html_table(table: Table, row_class: Callable[[list[str]], str] | None = None, cls: str = "") -> str:
    headers, rows = table
    e = html.escape
    out = [f'<div class="scroll"><table class="{cls}"><thead><tr>']
    out += [f"<th>{e(h)}</th>" for h in headers]
    out.append("</tr></thead><tbody>")
    for r in rows:
        rc = row_class(r) if row_class else ""
        out.append(f'<tr class="{rc}">' if rc else "<tr>")
        for c in r:
            k = {"PASS": "pass", "FAIL": "fail", "yes": "yes", "NO": "no"}.get(c, "num" if _NUMERIC.match(c) else "")
            out.append(f'<td class="{k}">{e(c)}</td>' if k else f"<td>{e(c)}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _html_figures(record: dict, section: str) -> str:
    e = html.escape
    out = []
    for name, f in (record.get("figures") or {}).items():
        if f.get("section") != section:
            continue
        wide = " wide" if name in ("training_curves", "gradcam_gallery", "confidence_histograms") or name.startswith(
            "class_delta_") else ""
        if f.get("ok"):
            out.append(f'<figure class="fig{wide}" id="fig-{e(name)}"><a href="{e(f["path"])}">'
                       f'<img src="{e(f["path"])}" alt="{e(name)}"></a>'
                       f"<figcaption><b>{e(name)}</b>: {e(f.get('caption') or '')}</figcaption></figure>")
        else:
            out.append(f'<div class="fig-failed" id="fig-{e(name)}" data-figure-failed="{e(name)}">'
                       f"<b>Figure {e(name)} failed to render</b><pre>{e(str(f.get('error')))}</pre>"
                       f"<small>{e(f.get('caption') or '')}</small></div>")
    return f'<div class="figs">{"".join(out)}</div>' if out else ""


def render_html(record: dict, files: list[str], data: dict[str, ModelData] | None = None) -> str:
    e = html.escape
    run = record.get("run") or {}
    passed, failed = gate_counts(record)
    tests = record.get("tests") or {}
    bad = failed > 0 or (tests.get("failed") or 0) > 0 or (tests.get("errors") or 0) > 0 or run.get("exit_status") not in (0, None)
    fig_fail = [n for n, f in (record.get("figures") or {}).items() if not f.get("ok")]
    body: list[str] = []
    nav = [("gates", "Gates"), ("metrics", "Metrics"), ("comparison", "Comparison"), ("training", "Training"),
           ("confidence", "Confidence"), ("classes", "Per class"), ("failures", "Failure cases"), ("run", "Run")]
    body.append("<nav>" + "".join(f'<a href="#{a}">{e(t)}</a>' for a, t in nav) + "</nav><main>")
    body.append(f"<h1>Stress run {e(str(run.get('id', '')))}</h1>")
    body.append(f'<p class="meta">{e(str(run.get("dataset", "")))} · profile {e(str(run.get("profile", "")))} · '
                f'{e(str(run.get("device_name") or run.get("device", "")))} · finished {e(str(run.get("finished_utc", "")))}'
                f" · commit <code>{e(str((run.get('git') or {}).get('commit') or 'unknown')[:12])}</code></p>")
    t = ", ".join(f"{v} {k}" for k, v in tests.items())
    body.append(f'<div class="headline {"bad" if bad else "ok"}" id="headline">{passed} gates passed, {failed} failed'
                + (f" · tests: {e(t)}" if t else "") + f" · exit status {e(str(run.get('exit_status', DASH)))}</div>")
    problems = (record.get("report") or {}).get("problems") or []
    if fig_fail or problems:
        items = [f"figure {e(n)}: {e(str(record['figures'][n].get('error')))}" for n in fig_fail] + [e(p) for p in problems]
        body.append('<div class="problems"><b>Report problems</b><ul>' + "".join(f"<li>{i}</li>" for i in items)
                    + "</ul></div>")

    body.append('<h2 id="gates">Gates</h2>')
    gt = table_gates(record)
    body.append(_html_table(gt, lambda r: "failed" if r[0] == "FAIL" else "", "gates") if gt[1] else "<p>No gates were checked in this run.</p>")

    body.append('<h2 id="metrics">Overall metrics (test split)</h2><p class="meta">Changes are candidate minus '
                "baseline; pp = percentage points.</p>")
    body.append(_html_table(table_overall(record)))
    if data:
        body.append("<h3>Wrong predictions by confidence threshold</h3>" + _html_table(table_thresholds(record, data)))

    body.append('<h2 id="comparison">Comparison with the baseline</h2>')
    ct = table_comparisons(record)
    if ct[1]:
        body.append('<p class="meta">Paired on the same test images: McNemar exact test for accuracy, paired '
                    "bootstrap 95% intervals for the rest.</p>" + _html_table(ct))
        mt = table_metric_deltas(record)
        if mt[1]:
            body.append("<h3>Metric changes</h3>" + _html_table(mt))
    else:
        body.append("<p>No candidate was compared in this run.</p>")

    for sec in ("training", "confidence", "classes", "failures"):
        body.append(f'<h2 id="{sec}">{e(SECTIONS[sec])}</h2>')
        if sec == "classes":
            pt = table_per_class(record, data)
            if pt[1]:
                body.append(f"<details{' open' if len(pt[1]) <= 20 else ''}><summary>Per-class accuracy "
                            f"({len(pt[1])} classes)</summary>{_html_table(pt)}</details>")
        if sec == "failures":
            nt = table_named_cases(record)
            if nt[1]:
                body.append("<h3>Named cases</h3>" + _html_table(nt))
        figs = _html_figures(record, sec)
        body.append(figs or "<p class='meta'>No figures in this section.</p>")

    body.append('<h2 id="run">Run</h2>' + _html_table(table_metadata(record)))
    body.append("<h3>Recipes (* = differs between models)</h3>" + _html_table(table_recipes(record)))
    body.append("<h3>Files</h3><ul>" + "".join(f'<li><a href="{e(f)}">{e(f)}</a></li>' for f in files) + "</ul>")
    body.append(f"<p class='meta'>Report written {e((record.get('report') or {}).get('written_utc', ''))}. "
                "Rebuild with <code>python -m harness report RUN_DIR</code>.</p></main>")
    title = f"{run.get('dataset', '')} {run.get('profile', '')}: {passed} passed, {failed} failed gates"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{e(title)}</title><style>{CSS}</style></head>\n<body>\n" + "\n".join(body)
            + f"\n{LOAD_CHECK}\n</body></html>\n")


def _fallback_html(record: dict, error: str) -> str:
    passed, failed = gate_counts(record)
    e = html.escape
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>report failed</title></head><body>'
            f"<h1>Report page failed to render</h1><p>{passed} gates passed, {failed} failed.</p>"
            f"<pre>{e(error)}</pre><p>See <a href=\"results.json\">results.json</a> and "
            f'<a href="summary.md">summary.md</a>.</p>{LOAD_CHECK}</body></html>')


# ============================================================================ entry points


def _list_files(run_dir: Path, extra: tuple[str, ...] = ()) -> list[str]:
    found = {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*")
             if p.is_file() and not p.name.startswith(".")}
    return sorted(found | set(extra))


def render_all(record: dict, run_dir: str | Path, *, problems: list[str] | None = None) -> dict:
    """Figures, summary.md, index.html and results.json of a run whose predictions are on disk.

    Returns the record as written to results.json (with "figures" and "report")."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    record = _jsonable(record)
    record.setdefault("models", {})
    problems = list(problems or [])
    data, load_problems = _load_predictions(record, run_dir)
    problems += load_problems
    try:
        gradcam = _load_gradcam(run_dir)
    except Exception as exc:  # noqa: BLE001
        gradcam = None
        problems.append(f"{GRADCAM}: {type(exc).__name__}: {exc}")
    record["figures"] = {}
    try:
        plan = figure_plan(record, data, gradcam)
    except Exception as exc:  # noqa: BLE001
        plan = []
        problems.append(f"figure plan: {type(exc).__name__}: {exc}")
    for spec in plan:
        record["figures"][spec.name] = _render_figure(spec, run_dir)
    record["report"] = {"written_utc": _now(), "files": [], "problems": problems}
    try:
        atomic_write_text(run_dir / SUMMARY, summary_markdown(record, data))
    except Exception as exc:  # noqa: BLE001
        problems.append(f"{SUMMARY}: {type(exc).__name__}: {exc}")
    files = _list_files(run_dir, (INDEX, RESULTS))
    try:
        page = render_html(record, files, data)
    except Exception as exc:  # noqa: BLE001
        problems.append(f"{INDEX}: {type(exc).__name__}: {exc}")
        page = _fallback_html(record, f"{type(exc).__name__}: {exc}")
    atomic_write_text(run_dir / INDEX, page)
    record["report"]["files"] = _list_files(run_dir, (RESULTS,))
    record["report"]["seconds"] = round(time.perf_counter() - t0, 3)
    record = _jsonable(record)
    atomic_write_text(run_dir / RESULTS, _dumps(record))
    return record


def write_run(record: dict, run_dir: str | Path, arrays: Mapping | None = None) -> dict:
    """Write every report file of a run; returns the final record (as in results.json).

    ``arrays``: ``{model: {"logits", "labels", "ids"}}`` for the test split, and optionally
    ``"gradcam": {"images", "ids", "labels", "cams", "preds", "confidences"}``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    record = _jsonable(record)
    models = record.setdefault("models", {})
    arrays = arrays or {}
    classes = list(record.get("classes") or [])
    problems: list[str] = []
    names = [n for n in arrays if n != "gradcam"]
    stems = _stems(list(dict.fromkeys([*models, *names])))
    for name in names:
        try:
            entry = models.setdefault(name, {})
            npz, csv_rel, data = _write_predictions(run_dir, stems[name], arrays[name], classes)
            entry["predictions"] = npz
            entry["predictions_csv"] = csv_rel
            _fill_missing_metrics(entry, data)
        except Exception as exc:  # noqa: BLE001 - the report goes on without this model's predictions
            problems.append(f"predictions of {name!r}: {type(exc).__name__}: {exc}")
    if arrays.get("gradcam") is not None:
        try:
            _write_gradcam(run_dir, arrays["gradcam"])
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{GRADCAM}: {type(exc).__name__}: {exc}")
    return render_all(record, run_dir, problems=problems)


def load_results(run: str | Path) -> tuple[dict, Path]:
    """The record of a run directory (or of its results.json); follows ``reports/latest``."""
    p = Path(run).expanduser()
    if p.is_dir() or not p.name.endswith(".json"):
        p = p / RESULTS
    if not p.is_file():
        raise ReportError(f"no {RESULTS} in {Path(run)}: not a run directory (a run's report folder, e.g. reports/latest)")
    try:
        record = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ReportError(f"cannot read {p}: {exc}") from exc
    if not isinstance(record, dict):
        raise ReportError(f"{p} does not hold a run record (a JSON object)")
    return record, p.resolve().parent


def rebuild(run_dir: str | Path) -> Path:
    """Re-render figures, summary.md, index.html and results.json of a finished run."""
    record, run_dir = load_results(run_dir)
    record.pop("figures", None)
    problems = []
    for m, entry in (record.get("models") or {}).items():
        npz, csv_rel = entry.get("predictions"), entry.get("predictions_csv")
        if npz and (run_dir / npz).is_file() and not (csv_rel and (run_dir / csv_rel).is_file()):
            try:
                with np.load(run_dir / npz, allow_pickle=False) as z:
                    d = ModelData(z["logits"], z["labels"].astype(np.int64), z["ids"].astype(np.int64))
                entry["predictions_csv"] = _write_predictions_csv(run_dir, Path(npz).stem, d, list(record.get("classes") or []))
            except Exception as exc:  # noqa: BLE001
                problems.append(f"predictions csv of {m!r}: {type(exc).__name__}: {exc}")
    render_all(record, run_dir, problems=problems)
    return run_dir / INDEX


COMPARED_METRICS = ("accuracy", "loss", "ece", "confident_errors_90", "confident_errors_99", "worst_class_accuracy",
                    "aurc", "generalisation_gap")


def _gate_key(g: Mapping) -> tuple:
    return (g.get("test"), g.get("model"), g.get("metric"))


def _gate_outcome(g: Mapping | None) -> str:
    if g is None:
        return "absent"
    return f"{'PASS' if g.get('passed') else 'FAIL'} ({g.get('metric')}={_fmt_value(g.get('value'))}, {_bound(g)})"


def compare_runs(run_a: str | Path, run_b: str | Path) -> str:
    """What changed from run A to run B: metrics per model, gates that flipped, recipes."""
    a, dir_a = load_results(run_a)
    b, dir_b = load_results(run_b)
    out = [f"A: {(a.get('run') or {}).get('id', '?')}  ({dir_a})",
           f"B: {(b.get('run') or {}).get('id', '?')}  ({dir_b})", ""]
    ma, mb = a.get("models") or {}, b.get("models") or {}
    names = list(dict.fromkeys([*model_order(a), *model_order(b)]))
    rows = []
    for m in names:
        xa, xb = (ma.get(m) or {}).get("metrics") or {}, (mb.get(m) or {}).get("metrics") or {}
        for key in COMPARED_METRICS:
            va, vb = xa.get(key), xb.get(key)
            if va is None and vb is None:
                continue
            kind = metric_kind(key)
            changed = _is_num(va) and _is_num(vb) and float(va) != float(vb) or (va is None) != (vb is None)
            delta = _fmt_delta(float(vb) - float(va), kind) if _is_num(va) and _is_num(vb) else DASH
            rows.append([m if m in ma else f"{m} (B only)" if m in mb else m, key, _fmt(va, kind), _fmt(vb, kind),
                         delta, "*" if changed else ""])
    out.append("Metrics (test split; * = changed)")
    out.append(tabulate(rows, headers=["Model", "Metric", "A", "B", "B - A", ""], tablefmt="github",
                        disable_numparse=True) if rows else "(no model metrics in either run)")
    out.append("")
    ga = {_gate_key(g): g for g in a.get("gates") or []}
    gb = {_gate_key(g): g for g in b.get("gates") or []}
    flips = []
    for k in dict.fromkeys([*ga, *gb]):
        pa, pb = ga.get(k), gb.get(k)
        oa = None if pa is None else bool(pa.get("passed"))
        ob = None if pb is None else bool(pb.get("passed"))
        if oa != ob:
            flips.append([str(k[0]), str(k[1] or DASH), str(k[2]), _gate_outcome(pa), _gate_outcome(pb)])
    pa_, fa_ = gate_counts(a)
    pb_, fb_ = gate_counts(b)
    out.append(f"Gates: A {pa_} passed, {fa_} failed; B {pb_} passed, {fb_} failed")
    out.append(tabulate(flips, headers=["Test", "Model", "Metric", "A", "B"], tablefmt="github", disable_numparse=True)
               if flips else "No gate changed outcome.")
    out.append("")
    rec = []
    for m in names:
        ea, eb = ma.get(m) or {}, mb.get(m) or {}
        ha, hb = ea.get("recipe_hash"), eb.get("recipe_hash")
        if ha != hb:
            ra, rb = ea.get("recipe") or {}, eb.get("recipe") or {}
            diff = [f"{f}: {ra.get(f, DASH)} -> {rb.get(f, DASH)}" for f in dict.fromkeys([*ra, *rb])
                    if ra.get(f) != rb.get(f)]
            rec.append([m, ha or DASH, hb or DASH, "; ".join(diff) or DASH])
    out.append(tabulate(rec, headers=["Model", "A recipe hash", "B recipe hash", "Changed fields"], tablefmt="github",
                        disable_numparse=True) if rec else "No recipe hash changed.")
    ta, tb = a.get("tests") or {}, b.get("tests") or {}
    if ta or tb:
        out.append("")
        out.append("Tests: " + ", ".join(f"{k} {ta.get(k, DASH)} -> {tb.get(k, DASH)}" for k in dict.fromkeys([*ta, *tb])))
    return "\n".join(out)
