"""Bounds from measured spread: train N seeds at 1 and 2 CPU threads in the reference
arithmetic (``harness.regime``), measure every gated metric, screen each metric's evidence and
bound it on its own scale by one stated rule (``rule.py``), and write a gates table with the
evidence and the regime beside every bound.

    python -m harness calibrate --dataset fashion-mnist --profile smoke --first-seed 1000 --seeds 12 \
        --thread-counts 1,2 --candidate augment --out gates/fashion-mnist.smoke.toml

The rule, the screen, the false-alarm budget and their arithmetic: ``rule.py`` and
docs/verdicts.md. Policy bounds a calibrated table would inherit (``[default.<profile>.default]``:
what any model must show) are kept where the calibrated bound is looser, written with an
expected failure where every run fails them (a finding), and overridden, with the reason in the
evidence, where some runs pass and some fail (the verdict would depend on the seed); a metric
the screen sends to the report keeps an inherited policy bound every run passes.

Documented effects (``recipes.DOCUMENTED_EFFECTS``) become ``<metric>_effect`` gates of each
candidate, with the per-seed paired changes as evidence; a gate that fails on every
calibrated seed, or whose sign-flip test across all of them rejects nothing, is written as an
expected failure, the per-seed changes as the reason.

The thread count changes the trained weights but is not in the model-cache key: each thread
count trains into a cache folder of its own (``<cache>/threads-<t>``), in worker processes
started with that many threads (``OMP_NUM_THREADS`` and ``torch.set_num_threads``).
"""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

from ..gates import Gates, recipe_of
from .derive import Derived, bounds_count, derive, derive_effects, derive_metric, run_bounds
from .rule import ALPHA_RUN, CONFIDENCE, COVERAGE, SIGNIFICANT, STORED, Rule, round_out, stored, tolerance_factor
from .runs import Task, run_task, run_tasks
from .write import machine, render


def calibrate(dataset: str, profile: str, seeds: list[int], threads: list[int], candidates: list[str], out: Path,
              gates_path: Path, rule: Rule | None = None, imbalance: float = 1.0, data_root: str | None = None,
              cache_dir: Path | None = None, jobs: int | None = None, command: str = "", progress=print,
              skip_baseline: bool = False, **task_fields) -> dict:
    """Run the calibration and write ``out``; returns a summary (tables, seconds).
    ``skip_baseline``: the baseline is trained and measured (the candidates' effects pair with
    it) but its table is not written: another calibration of more seeds writes it."""
    from .. import cache

    t0 = time.perf_counter()
    cache_root = Path(cache_dir) if cache_dir else cache.default_cache_dir()
    cores = os.cpu_count() or 1
    tasks = [Task(dataset, profile, s, t, tuple(candidates), imbalance, data_root,
                  str(cache_root / f"threads-{t}"), gates=str(gates_path), **task_fields)
             for s in seeds for t in threads]
    results = run_tasks(tasks, jobs_for=lambda t: jobs or max(1, cores // t), progress=progress)
    return write_tables(results, dataset, profile, out, gates_path, rule, imbalance, command, skip_baseline, t0)


def write_tables(results: list[dict], dataset: str, profile: str, out: Path, gates_path: Path,
                 rule: Rule | None = None, imbalance: float = 1.0, command: str = "", skip_baseline: bool = False,
                 t0: float | None = None, keep_unbounded: dict[str, dict[str, str]] | None = None,
                 keep_effects: dict[str, tuple[dict, dict, dict]] | None = None) -> dict:
    """Derive every table from the runs' measurements by the rule and write ``out`` (see
    ``calibrate``). ``keep_unbounded``: per model, reasons to keep for metrics the runs do not
    hold (a re-derivation from a file that kept no values for them); ``keep_effects``: per model,
    documented effects as a file has them (gates, evidence, expected), kept where the runs cannot
    decide them again."""
    import torch

    from .. import cards, recipes

    rule = rule or Rule()
    t0 = time.perf_counter() if t0 is None else t0
    gate_profile = cards.gate_profile(profile, imbalance)
    gates = Gates.load(gates_path)
    ds_name = dataset if dataset in recipes.BASELINES else Path(dataset).stem

    def policy_for(model: str, metric: str) -> dict[str, tuple[float, str]]:
        found = {}
        inherited = gates.absolute("default", gate_profile, recipe_of(model))
        for side in ("min", "max"):
            g = inherited.get(f"{metric}_{side}")
            if g is not None and not g.per_label and not g.evidence:
                found[side] = (float(g.bound), g.source)
        return found

    tables = derive(results, rule, policy_for)
    per_run = run_bounds(tables)  # the baseline's bounds count though its table is not written
    if skip_baseline:
        tables = {m: t for m, t in tables.items() if recipe_of(m) != "baseline"}
    for model, reasons in (keep_unbounded or {}).items():
        if model in tables:
            d = tables[model]
            for name, why in reasons.items():
                if name not in d.evidence and name not in d.unbounded:
                    d.unbounded[name] = why
    effects = {m: derive_effects(results, m, recipes.DOCUMENTED_EFFECTS[recipe_of(m)])
               for m in tables if recipe_of(m) in recipes.DOCUMENTED_EFFECTS}
    for m, (gates_kept, ev_kept, exp_kept) in (keep_effects or {}).items():
        g, ev, exp = effects.setdefault(m, ({}, {}, {}))
        for key, bound in gates_kept.items():
            metric = key.removesuffix("_effect")
            if key not in g:
                g[key] = bound
                ev[metric] = ev_kept.get(metric, {})
                if key in exp_kept:
                    exp[key] = exp_kept[key]
    seconds = time.perf_counter() - t0
    fit = next((d.multiplier for d in tables.values() if d.multiplier), None)
    meta = {
        "command": command, "dataset": ds_name, "profile": gate_profile, "rule": rule.describe(),
        "false_alarm_budget": rule.alpha_run, "confidence": rule.confidence,
        "bounds": sum(bounds_count(d) for d in tables.values()), "run_bounds": per_run,
        **({"multiplier": fit} if fit else {}),
        "seeds": sorted({r["seed"] for r in results}), "threads": sorted({r["threads"] for r in results}),
        "runs": [f"s{r['seed']}/t{r['threads']}" for r in results],
        "machine": results[0].get("machine") or machine(), "torch": results[0].get("torch") or str(torch.__version__),
        "regime": _common_regime(results), "date": results[0].get("date") or dt.date.today().isoformat(),
        "seconds": round(seconds, 1), "measured_seconds": round(sum(r.get("seconds", 0) for r in results), 1),
    }
    from ..io import atomic_write_text

    atomic_write_text(out, render(meta, ds_name, gate_profile, tables, effects) + "\n")
    Gates.load(out)  # what was written must load
    return {"tables": tables, "effects": effects, "seconds": seconds, "results": results, "meta": meta}


def _common_regime(results: list[dict]) -> dict:
    """The regime every calibration run shares (the thread count is listed apart); runs in
    different regimes cannot make one table."""
    regimes = [{k: v for k, v in r["regime"].items() if k != "threads"} for r in results]
    if any(r != regimes[0] for r in regimes):
        raise ValueError(f"the calibration runs computed in different regimes ({regimes[0]} vs "
                         f"{next(r for r in regimes if r != regimes[0])}): calibrate one regime at a time")
    return regimes[0]


__all__ = ["ALPHA_RUN", "COVERAGE", "CONFIDENCE", "bounds_count", "SIGNIFICANT", "STORED", "Derived", "Rule", "Task", "calibrate",
           "derive", "derive_effects", "derive_metric", "machine", "render", "round_out", "run_task",
           "run_tasks", "stored", "tolerance_factor", "write_tables"]
