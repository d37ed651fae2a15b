"""False alarms and detection limits of the shipped gates, measured rather than hoped for.

    python -m harness audit --dataset fashion-mnist --first-seed 2000 --seeds 15 --thread-counts 1,2

* **False alarms**: the README's main command (``pytest stress_tests --dataset D``), unmodified
  recipes, run with seeds the calibration did not use, at each CPU thread count and in each
  regime variant asked for (``VARIANTS``: the reference arithmetic, and bf16 or native kernels,
  whose calibrated bounds must be reported, not gated), each from an empty model cache (one per
  thread count and variant: neither is the whole cache key). Every failed gate of a sound recipe
  is a false alarm; the goal is none. The rate over runs is given with its exact
  (Clopper-Pearson) one-sided 95% upper bound: 0 of 30 runs bounds it by 9.5%, 0 of 59 by 5%.
  Per gate, the failures observed are set beside those the rule predicts (runs x the per-bound
  tail the calibration's false-alarm budget allots).
* **Detection limits**: a sound trained baseline with one planted defect (``harness.defects``)
  at graded strengths, checked against every bound of the baseline's table; for each defect
  the gate families that fail, and the smallest strength its own family catches. With
  ``--compare-gates OLD`` the same defects are checked against an older gates file too: a bound
  loosened past its evidence shows up as a coarser detection limit.
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

from .. import defects, metrics

ROOT = Path(__file__).resolve().parents[2]


def upper_bound(failures: int, runs: int, level: float = 0.95) -> float:
    """Exact (Clopper-Pearson) one-sided upper confidence bound of a rate."""
    from scipy.stats import beta

    if runs == 0:
        return 1.0
    return 1.0 if failures >= runs else float(beta.ppf(level, failures + 1, runs - failures))


# Regime variants a run may compute in: (extra environment, extra arguments). "reference" is the
# pinned default; "bf16" and "native" (kernels left to the CPU) have no calibrated table, so
# their runs must report the calibrated bounds without gating (and pass the policy bounds).
VARIANTS = {"reference": ({}, []), "bf16": ({}, ["--precision", "bf16"]),
            "native": ({"CNN_STRESS_KERNELS": "native"}, [])}


def _suite_run(dataset: str, seed: int, threads: int, work: Path, extra: list[str], variant: str = "reference",
               models_dir: Path | None = None) -> dict:
    """The README's main command with ``--seed`` at ``threads`` CPU threads in a regime variant,
    from the audit's empty cache for that thread count and variant; every gate it checked (the
    failed ones with their messages) from the report's results.json."""
    from ..regime import REFERENCE_ENV

    env_extra, args = VARIANTS[variant]
    tag = f"s{seed}-t{threads}" + ("" if variant == "reference" else f"-{variant}")
    reports = work / f"reports-{tag}"
    cmd = [sys.executable, "-m", "pytest", "stress_tests", "--dataset", dataset, "--seed", str(seed),
           "--cache-dir", str((models_dir or work) / f"cache-t{threads}-{variant}"), "--report-dir", str(reports), "-q", "-p",
           "no:cacheprovider", *args, *extra]
    env = {k: v for k, v in os.environ.items() if k not in REFERENCE_ENV}  # the run pins (or not) by itself
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), **env_extra})
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    results = reports / "latest" / "results.json"
    base = {"seed": seed, "threads": threads, "variant": variant, "seconds": seconds, "exit": proc.returncode}
    if not results.exists():
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        return {**base, "error": tail, "failed": [], "checked": 0, "gates": {}}
    rec = json.loads(results.read_text())
    failed = [f"{g['model']}: {g['message']}" for g in rec["gates"] if g["status"] in ("failed", "xpass")]
    gates = {_gate_key(g): g["status"] in ("failed", "xpass") for g in rec["gates"]
             if g["status"] in ("passed", "failed", "xpass", "xfail")}
    return {**base, "failed": failed, "checked": rec["verdict"]["gates_checked"], "gates": gates,
            "undecided": sum(g["status"] == "undecided" for g in rec["gates"]),
            "regime": (rec["run"].get("regime_notes") or []),
            "accuracy": {m: v["metrics"].get("accuracy") for m, v in rec["models"].items()}}


def _gate_key(g: dict) -> str:
    label = f"[{g['label']}]" if g.get("label") else ""
    return f"{g['model'].split('@')[0]}: {g['metric']}{label}_{g['kind']}"


def false_alarms(dataset: str, seeds: list[int], threads: list[int], work: Path, extra: list[str] | None = None,
                 progress=print, variants: tuple[str, ...] = ("reference",), variant_seeds: int = 2,
                 models_dir: Path | None = None) -> dict:
    """Every (seed, thread count) run of the main command in the reference regime, then the
    first ``variant_seeds`` seeds in each other variant; 1-thread runs two at a time on 2 cores
    (each uses one), others one at a time."""
    runs = []
    t0 = time.perf_counter()
    cores = os.cpu_count() or 1
    for variant in variants:
        chosen = seeds if variant == "reference" else seeds[:variant_seeds]
        for t in threads if variant == "reference" else threads[-1:]:
            with ThreadPoolExecutor(max_workers=max(1, cores // t)) as pool:
                for r in pool.map(lambda s, t=t, v=variant: _suite_run(dataset, s, t, work, extra or [], v, models_dir),
                                  chosen):
                    runs.append(r)
                    state = "ERROR" if r.get("error") else f"{len(r['failed'])} false alarm(s) of {r['checked']} gates"
                    progress(f"[audit] seed {r['seed']}, {r['threads']} thread(s), {r['variant']}: {state} "
                             f"({r['seconds']:.0f}s)")
    # the rate is the reference regime's: the variants' calibrated bounds are reported, not gated,
    # so their runs check only policy bounds and are tallied apart
    ref = [r for r in runs if r.get("variant", "reference") == "reference"]
    bad = sum(1 for r in ref if r["failed"] or r.get("error"))
    variant_bad = sum(1 for r in runs if r not in ref and (r["failed"] or r.get("error")))
    return {"runs": runs, "reference_runs": len(ref), "runs_with_false_alarms": bad, "rate": bad / max(len(ref), 1),
            "upper_95": upper_bound(bad, len(ref)), "gates_checked": sum(r["checked"] for r in ref),
            "false_alarms": sum(len(r["failed"]) for r in ref), "variant_runs": len(runs) - len(ref),
            "variant_runs_with_failures": variant_bad, "seconds": time.perf_counter() - t0,
            "per_gate": per_gate(runs)}


def per_gate(runs: list[dict]) -> dict[str, dict]:
    """Per gate: the reference runs that checked it and those it failed (the variants' calibrated
    bounds are reported, not gated)."""
    out: dict[str, dict] = {}
    for r in runs:
        if r.get("variant", "reference") != "reference":
            continue
        for key, failed in (r.get("gates") or {}).items():
            e = out.setdefault(key, {"checked": 0, "failed": 0})
            e["checked"] += 1
            e["failed"] += int(failed)
    return out


def predicted_tail(gates_path: Path) -> dict:
    """What the calibration's rule predicts: the per-bound tail (its false-alarm budget split
    over its bounds) and the budget of a whole run, per calibrated file."""
    from ..gates import Gates

    out = {}
    for label, cal in Gates.load(gates_path).calibrations.items():
        budget, bounds = cal.get("false_alarm_budget"), cal.get("bounds")
        if budget and bounds:
            out[label] = {"budget": float(budget), "bounds": int(bounds), "per_bound": float(budget) / int(bounds)}
    return out


def detection(dataset: str, profile: str, seed: int, gates_path: Path, cache_dir: Path | None,
              plan: list[defects.Defect] | None = None, progress=print, compare_gates: Path | None = None,
              data_root: str | None = None) -> dict:
    """Each graded defect planted in the sound baseline (seed ``seed``), checked against every
    bound of the baseline's table: which families fail, and the smallest strength each
    defect's own family catches."""
    from .. import train
    from ..data import class_names
    from ..gates import Gates
    from ..run import GateBook, Options, Session

    files = {"now": gates_path, **({"before": compare_gates} if compare_gates else {})}
    plan = plan if plan is not None else defects.graded(tuple(class_names(dataset, data_root)))
    rows = []
    t0 = time.perf_counter()
    for defect in [None, *plan]:
        row: dict = {"defect": "none (the sound model)" if defect is None else defect.label,
                     "kind": None if defect is None else defect.kind,
                     "strength": None if defect is None else defect.strength}
        opts = Options(dataset=dataset, profile=profile, device="cpu", gates_path=gates_path, candidates=[],
                       cache_dir=cache_dir, seed=seed, data_root=data_root)

        def provide(recipe, data, device, defect=defect):
            sound = train.train(recipe, data, profile, device, cache_dir, progress=_quiet()).model
            return sound if defect is None else defects.plant(defect, sound, data)

        s = Session.create(opts, Gates.load(gates_path), providers={"baseline": provide})
        for which, path in files.items():
            if which != "now":  # the same model and evidence, the other file's bounds (whatever regime they record)
                s.plan.gates = Gates.load(path)
                s.book = GateBook(s.run, ignore_regime=True)
            records = s.book.check_every_bound("baseline")
            failed = [r for r in records if r.outcome.status in ("failed", "xpass")]
            families = sorted({metrics.get(r.outcome.gate.metric).family for r in failed})
            row["class"] = None if defect is None or defect.cls is None else s.data.classes[defect.cls]
            suffix = "" if which == "now" else "_before"
            row.update({f"families{suffix}": families, f"failed{suffix}": [r.outcome.message for r in failed],
                        f"checked{suffix}": sum(r.outcome.checked for r in records),
                        f"caught{suffix}": None if defect is None else bool(set(defect.family) & set(families))})
        rows.append(row)
        progress(f"[audit] {row['defect']}: {len(row['failed'])} gate(s) fail ({', '.join(row['families']) or 'none'})"
                 + (f"; before: {len(row['failed_before'])}" if "failed_before" in row else ""))
    out = {"rows": rows, "seconds": time.perf_counter() - t0, "seed": seed}
    for suffix in ("", "_before") if compare_gates else ("",):
        limits: dict = {}
        for r in rows[1:]:
            key = r["kind"] + (f" {r['class']}" if r["class"] else "")
            limits.setdefault(key, None)
            if r[f"caught{suffix}"] and (limits[key] is None or r["strength"] < limits[key]):
                limits[key] = r["strength"]
        out[f"limits{suffix}"] = limits
    return out


def _quiet():
    from ..progress import Silent

    return Silent()


def class_spread(gates_path: Path, dataset: str, profile: str, model: str = "baseline") -> list[dict]:
    """Per class: the calibrated mean, range and bound of its accuracy, and the drop that goes
    unseen (mean - bound), widest first."""
    from ..gates import Gates

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
        n = fa.get("reference_runs", len(fa["runs"]))
        variants = (f" Other regimes: {fa['variant_runs_with_failures']} of {fa['variant_runs']} runs failed a gate "
                    "(they are held to policy bounds only)." if fa.get("variant_runs") else "")
        lines += [f"## False alarms: the unmodified recipes, {n} runs from an empty cache", "",
                  f"Seeds {meta['seeds']} (not used by the calibration) x {meta['threads']} CPU threads: "
                  f"**{fa['runs_with_false_alarms']} of {n} runs** raised a false alarm ({fa['false_alarms']} failed "
                  f"gates of {fa['gates_checked']} checked); rate {fa['rate']:.0%}, 95% upper bound "
                  f"{fa['upper_95']:.1%}. Time: {fa['seconds'] / 60:.1f} min.{variants}", "",
                  "| seed | threads | gates checked | false alarms | accuracy (baseline / candidate) | seconds |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in fa["runs"]:
            acc = " / ".join(f"{v:.2%}" for v in (r.get("accuracy") or {}).values() if v is not None)
            what = "ERROR: " + r["error"].splitlines()[-1] if r.get("error") else "; ".join(r["failed"]) or "0"
            seed = r["seed"] if r.get("variant", "reference") == "reference" else f"{r['seed']} ({r['variant']})"
            lines.append(f"| {seed} | {r['threads']} | {r['checked']} | {what} | {acc} | {r['seconds']:.0f} |")
        lines.append("")
        lines += _tail_lines(fa, meta.get("predicted") or {})
    if det is not None:
        before = "limits_before" in det
        lines += [f"## Detection: planted defects in the sound baseline (seed {det['seed']})", "",
                  "| defect | families that fail | caught by its own family | failed gates |"
                  + (" caught before |" if before else ""), "| --- | --- | --- | --- |" + (" --- |" if before else "")]
        for r in det["rows"]:
            caught = "-" if r["caught"] is None else "yes" if r["caught"] else "**no**"
            shown = "; ".join(r["failed"][:3]) + (f"; ... ({len(r['failed'])} in all)" if len(r["failed"]) > 3 else "")
            then = ("-" if r.get("caught_before") is None else "yes" if r["caught_before"] else "no") if before else None
            lines.append(f"| {r['defect']} | {', '.join(r['families']) or 'none'} | {caught} | {shown or '-'} |"
                         + (f" {then} |" if before else ""))
        lines += ["", "Smallest strength each defect's own family catches"
                  + (" (now; with the gates before)" if before else "") + ":", ""]

        def shown_limit(v):
            return "not caught at any strength tried" if v is None else f"{v:g}"

        lines += [f"- {k}: {shown_limit(v)}" + (f"; before: {shown_limit(det['limits_before'].get(k))}" if before else "")
                  for k, v in det["limits"].items()]
        lines += ["", f"Time: {det['seconds'] / 60:.1f} min.", ""]
    if spread:
        lines += ["## Per-class accuracy: the drop each class's bound lets through", "",
                  "| class | calibrated mean | range over runs | bound | unseen drop |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {r['class']} | {r['mean']:.3f} | {r['min']:.3f}-{r['max']:.3f} | {r['bound']:.3f} | "
                  f"{r['unseen_drop'] * 100:.1f} points |" for r in spread]
        lines.append("")
    return "\n".join(lines)


def _tail_lines(fa: dict, predicted: dict) -> list[str]:
    """Per gate: failures observed against those the rule predicts (runs x per-bound tail)."""
    if not predicted:
        return []
    per_bound = max(p["per_bound"] for p in predicted.values())
    budget = max(p["budget"] for p in predicted.values())
    runs = [r for r in fa["runs"] if r.get("variant", "reference") == "reference"]
    gates = fa.get("per_gate") or {}
    hit = {k: v for k, v in gates.items() if v["failed"]}
    lines = ["### Tail rates: predicted by the rule, observed", "",
             f"The rule allots each calibrated bound a tail of {per_bound:.2g} per run (a run's false-alarm budget "
             f"{budget:g} over its {max(p['bounds'] for p in predicted.values())} bounds), so over {len(runs)} "
             f"reference runs a gate is expected to fail {len(runs) * per_bound:.3f} times, and a run to raise any "
             f"false alarm at most {budget:.0%} of the time (observed: "
             f"{sum(1 for r in runs if r['failed'])} of {len(runs)}). {len(gates)} distinct gates were checked.", ""]
    if hit:
        lines += ["| gate | runs checked | failed | predicted |", "| --- | --- | --- | --- |"]
        lines += [f"| {k} | {v['checked']} | {v['failed']} | {v['checked'] * per_bound:.3f} |"
                  for k, v in sorted(hit.items(), key=lambda kv: -kv[1]["failed"])]
    else:
        lines.append("No gate failed on any run.")
    return [*lines, ""]


def audit(dataset: str, profile: str, seeds: list[int], threads: list[int], gates_path: Path, out_dir: Path,
          defect_seed: int = 42, cache_dir: Path | None = None, run_false_alarms: bool = True,
          run_detection: bool = True, progress=print, variants: tuple[str, ...] = ("reference",),
          compare_gates: Path | None = None, variant_seeds: int = 2, models_dir: Path | None = None) -> Path:
    """The audit's report folder. ``models_dir``: the false-alarm runs' model caches live there
    and are kept (else in the report folder, deleted after): a later audit of the same seeds
    trains nothing it holds, and measures again only what the code changed since. A model of the
    reference regime is a pure function of its key (bit for bit on any x86-64 CPU), so reading it
    is training it again."""
    import torch

    from ..calibrate import machine
    from ..io import atomic_write_text, inside

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = inside(out_dir, f"{stamp}_{Path(dataset).name}_{profile}", "the audit's folder")  # a dataset path: its name
    out.mkdir(parents=True, exist_ok=True)
    meta = {"dataset": dataset, "profile": profile, "seeds": f"{seeds[0]}-{seeds[-1]}" if seeds else "-",
            "threads": ", ".join(map(str, threads)), "date": dt.date.today().isoformat(), "machine": machine(),
            "torch": str(torch.__version__), "predicted": predicted_tail(gates_path)}
    fa = false_alarms(dataset, seeds, threads, out / "work", progress=progress, variants=variants,
                      variant_seeds=variant_seeds, models_dir=models_dir) \
        if run_false_alarms else None
    import shutil

    if models_dir is None:
        for cache in (out / "work").glob("cache-t*"):  # the runs' reports stay; their models are not needed
            shutil.rmtree(cache, ignore_errors=True)
    det = detection(dataset, profile, defect_seed, gates_path, cache_dir, progress=progress,
                    compare_gates=compare_gates) if run_detection else None
    spread = class_spread(gates_path, dataset, profile)
    atomic_write_text(out / "audit.json", json.dumps({"meta": meta, "false_alarms": fa, "detection": det,
                                                      "class_spread": spread}, indent=2) + "\n")
    atomic_write_text(out / "audit.md", render(fa, det, spread, meta))
    return out
