"""Bounds from measured spread: train N seeds at 1 and 2 CPU threads, measure every gated
metric, derive each bound by one stated rule, and write a gates table with its evidence.

    python -m harness calibrate --dataset fashion-mnist --profile smoke --seeds 10 --threads 1,2 \
        --candidate augment --out gates/fashion-mnist.smoke.toml

The rule (``Rule``), for a metric with values x_1..x_n over the calibration runs:

    bound = mean(x) -/+ k * max(sd(x), quantum)

* ``k`` is the one-sided normal tolerance factor: with confidence ``confidence`` (95%), at
  least ``coverage`` of the runs of this recipe on any machine (a new seed, another thread
  count or CPU) lie on the passing side of the bound. k = t'_{confidence}(n - 1, z_coverage
  sqrt(n)) / sqrt(n) (noncentral t; Odeh & Owen), computed with the number of *seeds* as n:
  the 1- and 2-thread runs of one seed share its data subset and initialisation, so they are
  not independent draws; the sd is taken over every run (it includes the thread spread).
* ``coverage`` is chosen for the whole run, not for one bound: a default run checks about
  120 bounds (about 60 per model, two models), and a false alarm anywhere fails it. At
  coverage 0.9999 per bound, Bonferroni bounds the chance of any false alarm in a run by
  120 x 0.0001 = 1.2% (bounds of one model are strongly correlated, so in practice less).
  k is then 6.2 at 10 seeds, 5.2 at 20, 4.8 at 30 (8.97 at 5): more seeds narrow it.
* ``quantum``: a metric that took the same value on every run has no spread to scale; its sd
  is floored at one step of its resolution: 1 for a count, 1/N for a share of N images.
  A metric with no resolution step and no spread is left unbounded.
* A bound that falls outside the metric's range (a floor below 0) cannot fail: the metric is
  left unbounded at this profile with this evidence, and the table says why (more seeds
  narrow k). A metric that does not apply on some run is left unbounded too.
* Policy bounds a calibrated table would inherit (``[default.<profile>.default]``: what any
  model must show) are kept where the tolerance interval lies wholly on their passing side
  (then the tighter of the two is written), written with an expected failure where it lies
  wholly on their failing side (a finding every run reproduces), and overridden, with the
  reason in the evidence, where it straddles them (the policy's verdict would depend on the
  run). ``expected_failures`` is written only here.

Documented effects (``recipes.DOCUMENTED_EFFECTS``) become ``<metric>_effect`` gates of each
candidate, with the per-seed paired changes as evidence; a gate that fails on every
calibrated seed is written as an expected failure, the per-seed changes as the reason.

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
from .derive import Derived, derive, derive_effects, derive_metric
from .rule import CONFIDENCE, COVERAGE, SIGNIFICANT, STORED, Rule, round_out, stored, tolerance_factor
from .runs import Task, run_task, run_tasks
from .write import machine, render


def calibrate(dataset: str, profile: str, seeds: list[int], threads: list[int], candidates: list[str], out: Path,
              gates_path: Path, rule: Rule | None = None, imbalance: float = 1.0, data_root: str | None = None,
              cache_dir: Path | None = None, jobs: int | None = None, command: str = "", progress=print,
              skip_baseline: bool = False, **task_fields) -> dict:
    """Run the calibration and write ``out``; returns a summary (tables, seconds).
    ``skip_baseline``: the baseline is trained and measured (the candidates' effects pair with
    it) but its table is not written: another calibration of more seeds writes it."""
    rule = rule or Rule()
    from .. import cache, cards, recipes

    t0 = time.perf_counter()
    cache_root = Path(cache_dir) if cache_dir else cache.default_cache_dir()
    cores = os.cpu_count() or 1
    tasks = [Task(dataset, profile, s, t, tuple(candidates), imbalance, data_root,
                  str(cache_root / f"threads-{t}"), gates=str(gates_path), **task_fields)
             for s in seeds for t in threads]
    results = run_tasks(tasks, lambda t: jobs or max(1, cores // t), progress)
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
    if skip_baseline:
        tables = {m: t for m, t in tables.items() if recipe_of(m) != "baseline"}
    effects = {m: derive_effects(results, m, recipes.DOCUMENTED_EFFECTS[recipe_of(m)])
               for m in tables if recipe_of(m) in recipes.DOCUMENTED_EFFECTS}
    import torch

    seconds = time.perf_counter() - t0
    meta = {
        "command": command, "dataset": ds_name, "profile": gate_profile, "rule": rule.describe(),
        "coverage": rule.coverage, "confidence": rule.confidence,
        "seeds": sorted({r["seed"] for r in results}), "threads": sorted({r["threads"] for r in results}),
        "runs": [f"s{r['seed']}/t{r['threads']}" for r in results],
        "machine": machine(), "torch": str(torch.__version__), "date": dt.date.today().isoformat(),
        "seconds": round(seconds, 1), "measured_seconds": round(sum(r.get("seconds", 0) for r in results), 1),
    }
    from ..io import atomic_write_text

    atomic_write_text(out, render(meta, ds_name, gate_profile, tables, effects) + "\n")
    Gates.load(out)  # what was written must load
    return {"tables": tables, "effects": effects, "seconds": seconds, "results": results, "meta": meta}


__all__ = ["COVERAGE", "CONFIDENCE", "SIGNIFICANT", "STORED", "Derived", "Rule", "Task", "calibrate",
           "derive", "derive_effects", "derive_metric", "machine", "render", "round_out", "run_task",
           "run_tasks", "stored", "tolerance_factor"]
