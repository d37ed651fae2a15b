"""False alarms and detection limits of the shipped gates, measured rather than hoped for.

    python -m harness audit --dataset fashion-mnist --seeds 100-109 --threads 1,2

* **False alarms**: the README's main command (``pytest stress_tests --dataset D``), unmodified
  recipes, run with seeds the calibration did not use, at each CPU thread count, each from an
  empty model cache (one per thread count: the thread count is not in the cache key). Every
  failed gate of a sound recipe is a false alarm; the goal is none. The rate over runs is
  given with its exact (Clopper-Pearson) 95% upper confidence bound: 0 of 20 runs bounds it by
  14%.
* **Detection limits**: a sound trained baseline with one planted defect (``harness.defects``)
  at graded strengths, checked against every bound of the baseline's table; for each defect
  the gate families that fail, and the smallest strength its own family catches. A bound
  loosened past its evidence shows up here as a coarser detection limit.
* **Classes that cannot be gated tightly**: per class, the calibrated bound's distance below
  the class's mean accuracy (the drop that goes unseen), from the calibration evidence.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import defects, metrics

ROOT = Path(__file__).resolve().parent.parent


def upper_bound(failures: int, runs: int, level: float = 0.95) -> float:
    """Exact (Clopper-Pearson) one-sided upper confidence bound of a rate."""
    from scipy.stats import beta

    if runs == 0:
        return 1.0
    return 1.0 if failures >= runs else float(beta.ppf(level, failures + 1, runs - failures))


def _suite_run(dataset: str, seed: int, threads: int, work: Path, extra: list[str]) -> dict:
    """The README's main command with ``--seed`` at ``threads`` CPU threads, from the audit's
    empty cache for that thread count; its failed gates from the report's results.json."""
    reports = work / f"reports-s{seed}-t{threads}"
    cmd = [sys.executable, "-m", "pytest", "stress_tests", "--dataset", dataset, "--seed", str(seed),
           "--cache-dir", str(work / f"cache-t{threads}"), "--report-dir", str(reports), "-q", "-p",
           "no:cacheprovider", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    results = reports / "latest" / "results.json"
    if not results.exists():
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        return {"seed": seed, "threads": threads, "seconds": seconds, "exit": proc.returncode, "error": tail,
                "failed": [], "checked": 0}
    rec = json.loads(results.read_text())
    failed = [f"{g['model']}: {g['message']}" for g in rec["gates"] if g["status"] in ("failed", "xpass")]
    return {"seed": seed, "threads": threads, "seconds": seconds, "exit": proc.returncode, "failed": failed,
            "checked": rec["verdict"]["gates_checked"], "undecided": sum(g["status"] == "undecided" for g in rec["gates"]),
            "accuracy": {m: v["metrics"].get("accuracy") for m, v in rec["models"].items()}}


def false_alarms(dataset: str, seeds: list[int], threads: list[int], work: Path, extra: list[str] | None = None,
                 progress=print) -> dict:
    """Every (seed, thread count) run of the main command; 1-thread runs two at a time on 2
    cores (each uses one), others one at a time."""
    runs = []
    t0 = time.perf_counter()
    cores = os.cpu_count() or 1
    for t in threads:
        with ThreadPoolExecutor(max_workers=max(1, cores // t)) as pool:
            for r in pool.map(lambda s, t=t: _suite_run(dataset, s, t, work, extra or []), seeds):
                runs.append(r)
                state = "ERROR" if r.get("error") else f"{len(r['failed'])} false alarm(s) of {r['checked']} gates"
                progress(f"[audit] seed {r['seed']}, {r['threads']} thread(s): {state} ({r['seconds']:.0f}s)")
    bad = sum(1 for r in runs if r["failed"] or r.get("error"))
    return {"runs": runs, "runs_with_false_alarms": bad, "rate": bad / max(len(runs), 1),
            "upper_95": upper_bound(bad, len(runs)), "gates_checked": sum(r["checked"] for r in runs),
            "false_alarms": sum(len(r["failed"]) for r in runs), "seconds": time.perf_counter() - t0}


def detection(dataset: str, profile: str, seed: int, gates_path: Path, cache_dir: Path | None,
              plan: list[defects.Defect] | None = None, progress=print) -> dict:
    """Each graded defect planted in the sound baseline (seed ``seed``), checked against every
    bound of the baseline's table: which families fail, and the smallest strength each
    defect's own family catches."""
    from . import train
    from .data import class_names
    from .gates import Gates
    from .run import Options, Session

    gates = Gates.load(gates_path)
    plan = plan if plan is not None else defects.graded(tuple(class_names(dataset)))
    rows = []
    t0 = time.perf_counter()
    for defect in [None, *plan]:
        opts = Options(dataset=dataset, profile=profile, device="cpu", data_root=None, gates_path=gates_path,
                       report_root=None, candidates=[], recipe_files=[], cache_dir=cache_dir, seed=seed)

        def provide(recipe, data, device, defect=defect):
            sound = train.train(recipe, data, profile, device, cache_dir, progress=_quiet()).model
            return sound if defect is None else defects.plant(defect, sound, data)

        s = Session.create(opts, gates, providers={"baseline": provide})
        records = s.book.check_every_bound("baseline")
        failed = [r for r in records if r.outcome.status in ("failed", "xpass")]
        families = sorted({metrics.get(r.outcome.gate.metric).family for r in failed})
        row = {"defect": "none (the sound model)" if defect is None else defect.label,
               "kind": None if defect is None else defect.kind, "strength": None if defect is None else defect.strength,
               "class": None if defect is None or defect.cls is None else s.data.classes[defect.cls],
               "families": families, "failed": [r.outcome.message for r in failed],
               "checked": sum(r.outcome.checked for r in records),
               "caught": None if defect is None else bool(set(defect.family) & set(families))}
        rows.append(row)
        progress(f"[audit] {row['defect']}: {len(failed)} gate(s) fail ({', '.join(families) or 'none'})")
    limits = {}
    for r in rows[1:]:
        key = r["kind"] + (f" {r['class']}" if r["class"] else "")
        if r["caught"] and (key not in limits or r["strength"] < limits[key]):
            limits[key] = r["strength"]
    for r in rows[1:]:
        key = r["kind"] + (f" {r['class']}" if r["class"] else "")
        limits.setdefault(key, None)
    return {"rows": rows, "limits": limits, "seconds": time.perf_counter() - t0, "seed": seed}


def _quiet():
    from .progress import Silent

    return Silent()


def class_spread(gates_path: Path, dataset: str, profile: str, model: str = "baseline") -> list[dict]:
    """Per class: the calibrated mean, range and bound of its accuracy, and the drop that goes
    unseen (mean - bound), widest first."""
    from .gates import Gates

    g = Gates.load(gates_path).absolute(dataset, profile, model).get("class_accuracy_min")
    if g is None or not g.per_label:
        return []
    out = []
    for label, bound in g.bound.items():
        ev = (g.evidence or {}).get(label) or {}
        if "mean" in ev:
            out.append({"class": label, "mean": ev["mean"], "min": ev["min"], "max": ev["max"], "sd": ev["sd"],
                        "bound": bound, "unseen_drop": ev["mean"] - bound})
    return sorted(out, key=lambda r: -r["unseen_drop"])


def render(fa: dict | None, det: dict | None, spread: list[dict], meta: dict) -> str:
    lines = [f"# Gate audit: {meta['dataset']} {meta['profile']} ({meta['date']}, {meta['machine']}, torch "
             f"{meta['torch']})", ""]
    if fa is not None:
        n = len(fa["runs"])
        lines += [f"## False alarms: the unmodified recipes, {n} runs from an empty cache", "",
                  f"Seeds {meta['seeds']} (not used by the calibration) x {meta['threads']} CPU threads: "
                  f"**{fa['runs_with_false_alarms']} of {n} runs** raised a false alarm ({fa['false_alarms']} failed "
                  f"gates of {fa['gates_checked']} checked); rate {fa['rate']:.0%}, 95% upper bound "
                  f"{fa['upper_95']:.1%}. Time: {fa['seconds'] / 60:.1f} min.", "",
                  "| seed | threads | gates checked | false alarms | accuracy (baseline / candidate) | seconds |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in fa["runs"]:
            acc = " / ".join(f"{v:.2%}" for v in (r.get("accuracy") or {}).values() if v is not None)
            what = "ERROR: " + r["error"].splitlines()[-1] if r.get("error") else "; ".join(r["failed"]) or "0"
            lines.append(f"| {r['seed']} | {r['threads']} | {r['checked']} | {what} | {acc} | {r['seconds']:.0f} |")
        lines.append("")
    if det is not None:
        lines += [f"## Detection: planted defects in the sound baseline (seed {det['seed']})", "",
                  "| defect | families that fail | caught by its own family | failed gates |", "| --- | --- | --- | --- |"]
        for r in det["rows"]:
            caught = "-" if r["caught"] is None else "yes" if r["caught"] else "**no**"
            shown = "; ".join(r["failed"][:3]) + (f"; ... ({len(r['failed'])} in all)" if len(r["failed"]) > 3 else "")
            lines.append(f"| {r['defect']} | {', '.join(r['families']) or 'none'} | {caught} | {shown or '-'} |")
        lines += ["", "Smallest strength each defect's own family catches:", ""]
        lines += [f"- {k}: {'not caught at any strength tried' if v is None else f'{v:g}'}"
                  for k, v in det["limits"].items()]
        lines += ["", f"Time: {det['seconds'] / 60:.1f} min.", ""]
    if spread:
        lines += ["## Per-class accuracy: the drop each class's bound lets through", "",
                  "| class | calibrated mean | range over runs | bound | unseen drop |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {r['class']} | {r['mean']:.3f} | {r['min']:.3f}-{r['max']:.3f} | {r['bound']:.3f} | "
                  f"{r['unseen_drop'] * 100:.1f} points |" for r in spread]
        lines.append("")
    return "\n".join(lines)


def audit(dataset: str, profile: str, seeds: list[int], threads: list[int], gates_path: Path, out_dir: Path,
          defect_seed: int = 42, cache_dir: Path | None = None, run_false_alarms: bool = True,
          run_detection: bool = True, progress=print) -> Path:
    import torch

    from .calibrate import machine
    from .io import atomic_write_text

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = out_dir / f"{stamp}_{dataset}_{profile}"
    out.mkdir(parents=True, exist_ok=True)
    meta = {"dataset": dataset, "profile": profile, "seeds": f"{seeds[0]}-{seeds[-1]}" if seeds else "-",
            "threads": ", ".join(map(str, threads)), "date": dt.date.today().isoformat(), "machine": machine(),
            "torch": str(torch.__version__)}
    fa = false_alarms(dataset, seeds, threads, out / "work", progress=progress) if run_false_alarms else None
    import shutil

    for cache in (out / "work").glob("cache-t*"):  # the runs' reports stay; their models are not needed
        shutil.rmtree(cache, ignore_errors=True)
    det = detection(dataset, profile, defect_seed, gates_path, cache_dir, progress=progress) if run_detection else None
    spread = class_spread(gates_path, dataset, profile)
    atomic_write_text(out / "audit.json", json.dumps({"meta": meta, "false_alarms": fa, "detection": det,
                                                      "class_spread": spread}, indent=2) + "\n")
    atomic_write_text(out / "audit.md", render(fa, det, spread, meta))
    return out
