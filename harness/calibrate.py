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
import hashlib
import json
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import metrics
from .gates import CALIBRATION, EXPECTED_FAILURES, UNBOUNDED, Gates, recipe_of

COVERAGE = 0.9999
CONFIDENCE = 0.95
SIGNIFICANT = 4  # bounds are rounded outward to this many significant digits
STORED = 6  # measured values are stored (and bounds derived from them) at this many significant digits
HERE = Path(__file__).resolve().parent


def tolerance_factor(n: int, coverage: float = COVERAGE, confidence: float = CONFIDENCE) -> float:
    """The one-sided normal tolerance factor k for n independent draws: P(mean - k sd <= the
    ``coverage`` quantile) = ``confidence``. k(5) = 7.50, k(10) = 5.20, k(30) = 4.02 at
    coverage 0.999; 8.97, 6.22, 4.82 at 0.9999 (both at 95% confidence)."""
    from scipy import stats

    if n < 2:
        raise ValueError("a tolerance bound needs at least 2 independent runs")
    z = stats.norm.ppf(coverage)
    return float(stats.nct.ppf(confidence, n - 1, z * math.sqrt(n)) / math.sqrt(n))


def stored(x: float) -> float:
    """A measured value as the evidence stores it (``STORED`` significant digits): bounds are
    derived from the stored values, so anyone can recompute them from the file."""
    return float(f"{x:.{STORED}g}")


def round_out(x: float, side: str, digits: int = SIGNIFICANT) -> float:
    """``x`` rounded away from the passing side (a min bound down, a max bound up) to ``digits``
    significant digits: rounding never tightens a bound."""
    if x == 0 or not math.isfinite(x):
        return float(x)
    scale = 10 ** (digits - 1 - math.floor(math.log10(abs(x))))
    return (math.floor(x * scale) if side == "min" else math.ceil(x * scale)) / scale


@dataclass(frozen=True)
class Rule:
    coverage: float = COVERAGE
    confidence: float = CONFIDENCE

    def describe(self) -> str:
        return (f"mean -/+ k * max(sd, quantum), k the one-sided normal tolerance factor for {self.coverage:.2%} of "
                f"runs at {self.confidence:.0%} confidence over the number of seeds; rounded outward to "
                f"{SIGNIFICANT} significant digits")

    def bound(self, values, side: str, n_seeds: int, quantum: float = 0.0) -> tuple[float | None, dict]:
        """(bound, evidence) for one side ("min" or "max") of a metric's values; the bound is
        None when the values cannot support one (no spread and no quantum)."""
        v = np.asarray(values, dtype=np.float64)
        quantum = stored(quantum)
        sd = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        used = max(sd, quantum)
        k = tolerance_factor(n_seeds, self.coverage, self.confidence)
        ev = {"n": int(len(v)), "seeds": int(n_seeds), "mean": stored(v.mean()), "sd": stored(sd),
              "quantum": stored(quantum), "k": stored(k), "min": float(v.min()), "max": float(v.max()),
              "values": [float(x) for x in v]}
        if used == 0:
            return None, ev
        mean = float(v.mean())
        raw = mean - k * used if side == "min" else mean + k * used
        return round_out(raw, side), ev


# What decides a measured value (besides the model, whose cache key covers its training code):
# the data, the metrics and the measuring code. Their hash keys stored calibration results.
MEASURING_CODE = ("data.py", "custom_data.py", "evaluate.py", "metrics.py", "measure.py", "stress.py", "corruptions.py",
                  "attacks.py", "perturb.py", "explain.py", "../fixtures/session.py")


def measuring_code_hash() -> str:
    """sha256 of the measuring code (``MEASURING_CODE``): a change to it invalidates stored
    calibration results (the trained models stay cached)."""
    h = hashlib.sha256()
    for rel in MEASURING_CODE:
        p = (HERE / rel).resolve()
        if p.exists():
            h.update(rel.encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


# ============================================================================ measuring one run


@dataclass(frozen=True)
class Task:
    """One calibration run: every model of the calibration trained with one seed at one CPU
    thread count, and every gated metric measured."""

    dataset: str
    profile: str
    seed: int
    threads: int
    candidates: tuple[str, ...] = ()
    imbalance: float = 1.0
    data_root: str | None = None
    cache_dir: str | None = None
    results_dir: str | None = None
    recipe_files: tuple[str, ...] = ()
    image_size: int | None = None
    arch: str | None = None
    gates: str = str(HERE.parent / "gates.toml")

    @property
    def label(self) -> str:
        return f"seed {self.seed}, {self.threads} thread{'s' if self.threads > 1 else ''}"


def _init_threads(threads: int) -> None:
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def _quantum(m: metrics.Metric, evidence) -> float:
    """The metric's smallest step (``Metric.resolution``): 1 for a count, 1/N for a share of N
    images, 0 where it has none."""
    if m.resolution == "one":
        return 1.0
    if m.resolution == "image":
        try:
            return 1.0 / metrics.evidence_size(evidence)
        except (TypeError, ValueError):
            return 0.0
    return 0.0


def run_task(task: Task) -> dict:
    """Train (or load) every model of one calibration run and measure every gated metric:
    {"models": {recipe: {metric or metric[class]: value or None}}, "quanta": {...}, ...}. The
    result is stored in ``task.results_dir`` keyed by the models' cache keys and the measuring
    code, so an interrupted calibration resumes where it stopped."""
    import torch

    from fixtures.session import Options, StressSession  # the run core (moves to harness/run)

    _init_threads(task.threads)
    opts = Options(dataset=task.dataset, profile=task.profile, device="cpu", data_root=task.data_root,
                   gates_path=Path(task.gates), report_root=None, candidates=list(task.candidates),
                   recipe_files=[Path(p) for p in task.recipe_files], cache_dir=Path(task.cache_dir) if task.cache_dir
                   else None, imbalance=task.imbalance, image_size=task.image_size, arch=task.arch, seed=task.seed)
    s = StressSession(opts, Gates.load(task.gates))
    from . import train

    data = s.data
    keys = {m: train.cache_key(r, task.profile, data.fingerprint, s.device, s.runtime) for m, r in s.recipes.items()}
    stamp = hashlib.sha256(json.dumps([keys, measuring_code_hash(), task.threads], sort_keys=True).encode()).hexdigest()[:16]
    saved = Path(task.results_dir) / f"{task.dataset.replace('/', '_')}_{task.profile}_s{task.seed}_t{task.threads}_{stamp}.json" \
        if task.results_dir else None
    if saved is not None and saved.exists():
        return {**json.loads(saved.read_text()), "reused": True}
    t0 = time.perf_counter()
    out: dict = {"seed": task.seed, "threads": torch.get_num_threads(), "models": {}, "quanta": {},
                 "classes": list(data.classes), "cache_keys": keys}
    for m in s.models:
        values, quanta = {}, {}
        ev = s.evaluation(m)
        for name, metric in metrics.REGISTRY.items():
            if not metric.gated:
                continue
            indices = range(data.num_classes) if metric.per == "class" else [None]
            for i in indices:
                key = name if i is None else f"{name}[{data.classes[i]}]"
                try:
                    values[key] = stored(s.value(m, name, i))
                except metrics.NotApplicable:
                    values[key] = None
                    continue
                ev_kind = metric.needs[0]
                evidence = ev.evidence(ev_kind)
                if metric.per == "class":
                    quanta[key] = 1.0 / max(1, int((ev.samples("test").labels == i).sum()))
                else:
                    quanta[key] = _quantum(metric, evidence)
        out["models"][m] = values
        out["quanta"][m] = quanta
    out["seconds"] = time.perf_counter() - t0
    if saved is not None:
        from .report.io import atomic_write_text

        atomic_write_text(saved, json.dumps(out, allow_nan=False))
    return out


def run_tasks(tasks: list[Task], jobs_for, progress=print) -> list[dict]:
    """Run the tasks, grouped by thread count, each group in a pool of worker processes started
    with that many threads (``jobs_for(threads)`` workers at a time)."""
    import multiprocessing as mp

    results: list[dict] = []
    done = 0
    t0 = time.perf_counter()
    for threads in sorted({t.threads for t in tasks}):
        group = [t for t in tasks if t.threads == threads]
        ctx = mp.get_context("spawn")
        old = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = str(threads)  # the workers' torch reads it when it starts
        try:
            with ctx.Pool(processes=max(1, min(jobs_for(threads), len(group))), initializer=_init_threads,
                          initargs=(threads,), maxtasksperchild=1) as pool:
                for res in pool.imap_unordered(run_task, group):
                    done += 1
                    results.append(res)
                    took = "reused" if res.get("reused") else f"{res['seconds']:.0f}s"
                    progress(f"[calibrate] {done}/{len(tasks)} seed {res['seed']}, {res['threads']} thread(s): "
                             f"{', '.join(res['models'])} measured ({took}; {time.perf_counter() - t0:.0f}s so far)")
        finally:
            if old is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = old
    return sorted(results, key=lambda r: (r["seed"], r["threads"]))


# ============================================================================ deriving the tables


@dataclass
class Derived:
    """One model's calibrated table."""

    bounds: dict[str, float | dict] = field(default_factory=dict)
    evidence: dict[str, dict] = field(default_factory=dict)
    unbounded: dict[str, str] = field(default_factory=dict)
    expected: dict[str, str] = field(default_factory=dict)


def _sides(m: metrics.Metric) -> tuple[str, ...]:
    return ("min",) if m.direction == metrics.HIGHER else ("max",) if m.direction == metrics.LOWER else ("min", "max")


def _fails(side: str, bound: float, x: float) -> bool:
    return x < bound if side == "min" else x > bound


def derive_metric(name: str, values: list, quanta: list, n_seeds: int, rule: Rule,
                  policy: dict[str, tuple[float, str]]) -> tuple[dict[str, float], dict, str | None, dict[str, str]]:
    """(bounds by side, evidence, why unbounded (None), expected failures by side) for one metric
    (``name`` may be ``metric[class]``) from its values over the runs."""
    metric = metrics.get(name.split("[", 1)[0])
    if any(v is None for v in values):
        missing = sum(v is None for v in values)
        return {}, {}, f"not applicable on {missing} of {len(values)} calibration runs", {}
    quantum = float(max(quanta)) if quanta else 0.0
    bounds, expected, reasons = {}, {}, []
    evidence: dict = {}
    for side in _sides(metric):
        b, ev = rule.bound(values, side, n_seeds, quantum)
        evidence = ev
        if b is None:
            reasons.append(f"{name} took the value {ev['mean']:.4g} on every run and has no resolution step: no spread "
                           "to derive a bound from")
            continue
        if not metric.can_fail(side, b):
            reasons.append(f"the {side} bound the rule gives ({b:.4g} = mean {ev['mean']:.4g} {'-' if side == 'min' else '+'} "
                           f"{ev['k']:.2f} x {max(ev['sd'], quantum):.3g}) lies outside {metric.name}'s range "
                           f"{metric.range_text}: it could not fail (more seeds narrow k)")
            continue
        if side in policy:
            p, source = policy[side]
            far = ev["mean"] + ev["k"] * max(ev["sd"], quantum) if side == "min" else \
                ev["mean"] - ev["k"] * max(ev["sd"], quantum)
            looser = p <= b if side == "min" else p >= b
            if looser:
                pass  # the policy cannot fail where the tolerance bound does not: the tighter one is written
            elif _fails(side, p, far):  # the whole tolerance interval fails the policy: a finding
                b = p
                evidence = {**evidence, "policy_bound": {"side": side, "bound": p, "source": source}}
                shown = ", ".join(f"{v:.4g}" for v in values)
                expected[side] = (f"the policy bound {source} ({metric.name}_{side} = {p:g}) fails on every one of "
                                  f"{len(values)} calibration runs: {shown}")
            else:
                fails = sum(_fails(side, p, v) for v in values)
                evidence = {**evidence, "policy_overridden": (
                    f"{source} {metric.name}_{side} = {p:g} lies inside this recipe's spread (fails on {fails} of "
                    f"{len(values)} runs): its verdict would depend on the seed and the machine")}
        bounds[side] = b
    why = "; ".join(reasons) if reasons and not bounds else None
    if reasons and bounds:
        evidence = {**evidence, "one_sided": "; ".join(reasons)}
    return bounds, evidence, why, expected


def derive(results: list[dict], rule: Rule, policy_for) -> dict[str, Derived]:
    """Every model's calibrated table from the runs (``results`` of ``run_tasks``).
    ``policy_for(model, metric)`` -> {side: (bound, source)} of inherited policy bounds."""
    n_seeds = len({r["seed"] for r in results})
    models = list(results[0]["models"])
    out: dict[str, Derived] = {}
    for model in models:
        d = Derived()
        names = list(results[0]["models"][model])
        for name in names:
            values = [r["models"][model].get(name) for r in results]
            quanta = [r["quanta"][model].get(name, 0.0) for r in results if name in r["quanta"][model]]
            metric = name.split("[", 1)[0]
            bounds, ev, why, expected = derive_metric(name, values, quanta, n_seeds, rule, policy_for(model, metric))
            if why:
                d.unbounded[name] = why
                continue
            d.evidence[name] = ev
            for side, b in bounds.items():
                key = f"{metric}_{side}"
                if "[" in name:
                    d.bounds.setdefault(key, {})[name.split("[", 1)[1][:-1]] = b
                else:
                    d.bounds[key] = b
                if side in expected:
                    d.expected[key] = expected[side]
        out[model] = d
    return out


def derive_effects(results: list[dict], model: str, effect, baseline: str = "baseline") -> tuple[dict, dict, dict]:
    """(gates, evidence, expected failures) of a candidate's documented effect: per-run paired
    changes; the per-seed change (mean over thread counts) decides, as a session with that
    many seeds would; expected to fail when every calibrated seed's change fails it."""
    from . import compare

    gates, evidence, expected = {}, {}, {}
    seeds = sorted({r["seed"] for r in results})
    for metric, expect, margin in effect.checks:
        direction = metrics.get(metric).direction
        runs = [(r["seed"], r["models"][model].get(metric), r["models"][baseline].get(metric)) for r in results]
        if any(a is None or b is None for _, a, b in runs):
            continue
        deltas = [a - b for _, a, b in runs]
        per_seed = [float(np.mean([a - b for s, a, b in runs if s == seed])) for seed in seeds]
        ci = compare.seed_interval(per_seed)
        held = compare.effect_holds(expect, ci, direction, margin)
        fails_each = [not compare.effect_holds(expect, [d, d], direction, margin) for d in per_seed]
        key = f"{metric}_effect"
        gates[key] = expect if expect == "improves" else {"expect": expect, "margin": margin}
        evidence[metric] = {"n": len(deltas), "seeds": len(seeds), "mean": float(np.mean(deltas)),
                            "sd": float(np.std(deltas, ddof=1)), "min": float(min(deltas)), "max": float(max(deltas)),
                            "values": [float(x) for x in deltas], "per_seed": per_seed, "seed_ci": ci,
                            "held_across_seeds": bool(held),
                            "better_share": compare.better_share(per_seed, direction)}
        if all(fails_each):
            shown = ", ".join(f"{x:+.4g}" for x in per_seed)
            want = "an improvement" if expect == "improves" else f"within the margin {margin:g} of no change"
            expected[key] = (f"the change is not {want} on any of {len(seeds)} calibration seeds (per-seed changes, "
                             f"mean over thread counts: {shown})")
    return gates, evidence, expected


# ============================================================================ writing


def _key(k: str) -> str:
    import re

    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"cannot write {v} to TOML")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + " }"
    if v is None:
        raise ValueError("TOML has no null")
    raise TypeError(type(v))


def _table(header: str, entries: dict) -> list[str]:
    return [f"[{header}]", *(f"{_key(k)} = {_value(v)}" for k, v in entries.items()), ""]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), cpu)
        flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
        isa = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "no avx2"
        return f"{name}, {os.cpu_count()} cores, {isa}"
    except OSError:
        return f"{cpu}, {os.cpu_count()} cores"


def render(meta: dict, dataset: str, profile: str, tables: dict[str, Derived],
           effects: dict[str, tuple[dict, dict, dict]]) -> str:
    """The calibrated gates file: a [calibration] table, then per model its bounds, the
    metrics it leaves unbounded (with why), its expected failures and its evidence."""
    lines = [
        "# Calibrated bounds: generated by `python -m harness calibrate`; do not edit by hand, rerun it.",
        f"# {meta['rule']}.",
        "# Each model's [...evidence] table holds, per metric, the values of every calibration run (in the",
        "# order of [calibration].runs) from which its bound is recomputed (tests/test_gates.py does).",
        "",
        *_table(CALIBRATION, meta),
    ]
    for model, d in tables.items():
        head = f"{_key(dataset)}.{profile}.{_key(model)}"
        entries: dict = dict(sorted(d.bounds.items()))
        if d.unbounded:
            entries[UNBOUNDED] = d.unbounded
        if d.expected:
            entries[EXPECTED_FAILURES] = d.expected
        lines += _table(head, entries)
        lines += _table(f"{head}.evidence", d.evidence)
        if model in effects and effects[model][0]:
            gates, evidence, expected = effects[model]
            rel = dict(gates)
            if expected:
                rel[EXPECTED_FAILURES] = expected
            lines += _table(f"{head}.vs_baseline", rel)
            lines += _table(f"{head}.vs_baseline.evidence", evidence)
    return "\n".join(lines)


def calibrate(dataset: str, profile: str, seeds: list[int], threads: list[int], candidates: list[str], out: Path,
              gates_path: Path, rule: Rule = Rule(), imbalance: float = 1.0, data_root: str | None = None,
              cache_dir: Path | None = None, jobs: int | None = None, command: str = "", progress=print,
              **task_fields) -> dict:
    """Run the calibration and write ``out``; returns a summary (tables, seconds)."""
    from . import cache, recipes

    t0 = time.perf_counter()
    cache_root = Path(cache_dir) if cache_dir else cache.default_cache_dir()
    results_dir = cache_root / "calibration"
    cores = os.cpu_count() or 1
    tasks = [Task(dataset, profile, s, t, tuple(candidates), imbalance, data_root,
                  str(cache_root / f"threads-{t}"), str(results_dir), gates=str(gates_path), **task_fields)
             for s in seeds for t in threads]
    results = run_tasks(tasks, lambda t: jobs or max(1, cores // t), progress)
    gate_profile = profile if imbalance == 1.0 else f"{profile}-imbalance"
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
        "measuring_code": measuring_code_hash(),
    }
    from .report.io import atomic_write_text

    atomic_write_text(out, render(meta, ds_name, gate_profile, tables, effects) + "\n")
    Gates.load(out)  # what was written must load
    return {"tables": tables, "effects": effects, "seconds": seconds, "results": results, "meta": meta}
