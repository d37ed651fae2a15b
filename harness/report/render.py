"""Run record -> every report file of a run folder.

``write_run(record, run_dir, arrays)`` is called once at the end of a pytest session (by the
plugin in ``fixtures/``); ``rebuild(run_dir)`` re-renders everything of a finished run from
its ``results.json`` and ``predictions/*.npz`` (``python -m harness report RUN_DIR``).

What a run directory holds::

    results.json          the run record + "figures" (path, ok, error, caption) + "report"
    summary.md            the tables, GitHub markdown (tabulate)
    index.html            the answer first, then figures, details, gates; no external resources
    per_class.csv         per-class accuracy of every model, all classes
    predictions/M.npz     ids, labels, logits of model M on the test split (every number in
    predictions/M.csv     the report can be recomputed from these)
    gradcam.npz           the Grad-CAM gallery's images and CAMs (re-render without models)
    failure_modes.npz     example images of each model's confident errors per failure mode
    cases/<id>/           per failure case: image.png, meta.json, gradcam_<model>.png
    figures/*.png         matplotlib, Agg
    junit.xml             written by pytest itself, linked when present

A report never breaks or hides the run: a figure that raises is recorded with ``ok: false``
and its error (and shown as a failure box in the page); the other files are still written.
"""

from __future__ import annotations

import contextlib
import csv
import io
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..io import UnsafeNameError, atomic_write_bytes, atomic_write_text, inside
from . import figures, tables
from .cases import write_cases
from .figcache import FigureCache, Unhashable
from .html import fallback_html, render_html
from .io import (
    FAILURE_MODES,
    GRADCAM,
    INDEX,
    LEAKAGE,
    RESULTS,
    SEGMENTS,
    SUMMARY,
    ModelData,
    ReportError,
    contradictions,
    csv_cell,
    dumps,
    jsonable,
    list_files,
    load_failure_modes,
    load_gradcam,
    load_leakage,
    load_predictions,
    load_results,
    load_segments,
    now,
    stems,
    write_failure_modes,
    write_gradcam,
    write_leakage,
    write_predictions,
    write_predictions_csv,
    write_segments,
)
from .markdown import summary_markdown
from .plan import FigureSpec, figure_plan

PER_CLASS = "per_class.csv"


def render_figure(spec: FigureSpec, run_dir: Path, cache: FigureCache | None = None) -> dict:
    """Draw one figure into ``run_dir/figures`` (or copy it from ``cache`` when the same figure of
    the same inputs was drawn before)."""
    rel = f"figures/{spec.name}.png"
    t0 = time.perf_counter()
    cached, target = False, None
    try:
        target = inside(run_dir, rel, "figure")  # a name or a link never leads a write (or a delete) out of the run
        drawing = spec.make()
        key = None
        if cache is not None:
            try:
                key = drawing.key()
            except Unhashable:
                key = None
        png = cache.read(key) if key is not None else None
        cached = png is not None
        if png is None:
            png = figures.render_png(drawing())
            if key is not None:
                cache.write(key, png)
        atomic_write_bytes(target, png)
        ok, error = True, None
    except Exception as exc:  # noqa: BLE001 - a figure never breaks the report
        ok, error = False, f"{type(exc).__name__}: {exc}"
        if target is not None:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()  # never show a stale picture for a figure that failed now
    return {"path": rel, "ok": ok, "error": error, "caption": spec.caption, "section": spec.section,
            "seconds": round(time.perf_counter() - t0, 3), "cached": cached}


def _per_class_csv(record: dict) -> str:
    headers, rows, _ = tables.per_class_rows(record)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([csv_cell(h) for h in headers])
    w.writerows([[csv_cell(c) for c in row] for row in rows])
    return buf.getvalue()


def render_all(record: dict, run_dir: str | Path, *, problems: list[str] | None = None,
               figure_cache: str | Path | None = None) -> dict:
    """Figures, per_class.csv, summary.md, index.html and results.json of a run whose
    predictions are on disk. Returns the record as written to results.json. ``figure_cache``:
    a folder of figures drawn before (``figcache.py``), or None to draw every figure."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    record = jsonable(record)
    record.setdefault("models", {})
    problems = list(problems or [])
    data, load_problems = load_predictions(record, run_dir)
    problems += load_problems
    try:
        gradcam = load_gradcam(run_dir)
    except Exception as exc:  # noqa: BLE001
        gradcam = None
        problems.append(f"{GRADCAM}: {type(exc).__name__}: {exc}")
    try:
        failure_modes = load_failure_modes(run_dir)
    except Exception as exc:  # noqa: BLE001
        failure_modes = None
        problems.append(f"{FAILURE_MODES}: {type(exc).__name__}: {exc}")
    try:
        leakage = load_leakage(run_dir)
    except Exception as exc:  # noqa: BLE001
        leakage = None
        problems.append(f"{LEAKAGE}: {type(exc).__name__}: {exc}")
    try:
        weak = load_segments(run_dir)
    except Exception as exc:  # noqa: BLE001
        weak = None
        problems.append(f"{SEGMENTS}: {type(exc).__name__}: {exc}")
    record["cases"] = []
    if gradcam is not None:
        try:
            record["cases"] = write_cases(run_dir, gradcam, record)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"case folders: {type(exc).__name__}: {exc}")
    record["figures"] = {}
    try:
        plan = figure_plan(record, data, gradcam, failure_modes, leakage, weak)
    except Exception as exc:  # noqa: BLE001
        plan = []
        problems.append(f"figure plan: {type(exc).__name__}: {exc}")
    cache = FigureCache(figure_cache) if figure_cache is not None else None
    for spec in plan:
        record["figures"][spec.name] = render_figure(spec, run_dir, cache)
    if cache is not None:
        cache.prune()
    # the report's line of "where the time went": what the caller spent building the record, and
    # this function up to here (the page and results.json follow, in well under a second)
    spent = record.setdefault("time_spent", {})
    spent["report"] = {"seconds": float((spent.get("report") or {}).get("seconds") or 0.0) + time.perf_counter() - t0,
                       "models": len(plan), "cached": sum(bool(f.get("cached")) for f in record["figures"].values()),
                       "unit": "figures"}
    record["report"] = {"written_utc": now(), "files": [], "problems": problems}
    for name, make in ((PER_CLASS, lambda: _per_class_csv(record)), (SUMMARY, lambda: summary_markdown(record))):
        try:
            atomic_write_text(run_dir / name, make())
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{name}: {type(exc).__name__}: {exc}")
    files = list_files(run_dir, (INDEX, RESULTS))
    try:
        page = render_html(record, files)
    except Exception as exc:  # noqa: BLE001
        problems.append(f"{INDEX}: {type(exc).__name__}: {exc}")
        page = fallback_html(record, f"{type(exc).__name__}: {exc}")
    atomic_write_text(run_dir / INDEX, page)
    record["report"]["files"] = list_files(run_dir, (RESULTS,))
    record["report"]["seconds"] = round(time.perf_counter() - t0, 3)
    record = jsonable(record)
    atomic_write_text(run_dir / RESULTS, dumps(record))
    return record


def write_run(record: dict, run_dir: str | Path, arrays: Mapping | None = None,
              figure_cache: str | Path | None = None) -> dict:
    """Write every report file of a run; returns the final record (as in results.json).

    ``arrays``: ``{model: {"logits", "labels", "ids"}}`` for the test split, and optionally
    ``"gradcam": {"images", "ids", "labels", "cams", "preds", "confidences"}``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    record = jsonable(record)
    models = record.setdefault("models", {})
    arrays = arrays or {}
    classes = list(record.get("classes") or [])
    problems: list[str] = []
    files = (("gradcam", GRADCAM, write_gradcam), ("failure_modes", FAILURE_MODES, write_failure_modes),
             ("leakage", LEAKAGE, write_leakage), ("segments", SEGMENTS, write_segments))
    names = [n for n in arrays if n not in {key for key, _, _ in files}]  # the rest are models' predictions
    stem = stems(list(dict.fromkeys([*models, *names])))
    for name in names:
        try:
            entry = models.setdefault(name, {})
            npz, csv_rel, _ = write_predictions(run_dir, stem[name], arrays[name], classes)
            entry["predictions"] = npz
            entry["predictions_csv"] = csv_rel
        except Exception as exc:  # noqa: BLE001 - the report goes on without this model's predictions
            problems.append(f"predictions of {name!r}: {type(exc).__name__}: {exc}")
    for key, name, write in files:
        if arrays.get(key):
            try:
                write(run_dir, arrays[key])
            except Exception as exc:  # noqa: BLE001
                problems.append(f"{name}: {type(exc).__name__}: {exc}")
    return render_all(record, run_dir, problems=problems, figure_cache=figure_cache)


def rebuild(run_dir: str | Path) -> Path:
    """Re-render figures, summary.md, index.html and results.json of a finished run."""
    record, run_dir = load_results(run_dir)
    wrong = contradictions(record)
    if wrong:  # a page is never rebuilt from a record that contradicts itself
        raise ReportError(f"{run_dir / RESULTS} contradicts itself ({'; '.join(wrong[:3])}"
                          f"{f'; and {len(wrong) - 3} more' if len(wrong) > 3 else ''}): it was edited or damaged, so "
                          "no report is rebuilt from it; rerun the suite to write it again")
    record.pop("figures", None)
    problems = []
    for m, entry in (record.get("models") or {}).items():
        npz, csv_rel = entry.get("predictions"), entry.get("predictions_csv")
        try:  # paths a results.json names stay inside the run's folder
            for rel in (npz, csv_rel):
                if rel:
                    inside(run_dir, rel, f"results.json: the predictions file of {m!r}")
        except UnsafeNameError as exc:
            raise ReportError(str(exc)) from None
        if npz and (run_dir / npz).is_file() and not (csv_rel and (run_dir / csv_rel).is_file()):
            try:
                with np.load(run_dir / npz, allow_pickle=False) as z:
                    d = ModelData(z["logits"], z["labels"].astype(np.int64), z["ids"].astype(np.int64))
                entry["predictions_csv"] = write_predictions_csv(run_dir, Path(npz).stem, d,
                                                                 list(record.get("classes") or []))
            except Exception as exc:  # noqa: BLE001
                problems.append(f"predictions csv of {m!r}: {type(exc).__name__}: {exc}")
    render_all(record, run_dir, problems=problems)
    return run_dir / INDEX
