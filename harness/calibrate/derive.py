"""Tables from calibration runs: each metric screened, then bounded by the rule on its scale; what
inherited policy bounds become; each candidate's documented effects with their per-seed changes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .. import metrics
from .rule import Rule, Scale, loso_residuals, scale_of, screen, stored, tail_multiplier


@dataclass
class Derived:
    """One model's calibrated table."""

    bounds: dict[str, float | dict] = field(default_factory=dict)
    evidence: dict[str, dict] = field(default_factory=dict)
    unbounded: dict[str, str] = field(default_factory=dict)
    expected: dict[str, str] = field(default_factory=dict)
    # the values of what is left unbounded, in the order of the runs: a better rule can be
    # derived from them later, and the report can show where a model stands among them
    unbounded_values: dict[str, list] = field(default_factory=dict)
    unbounded_quanta: dict[str, float] = field(default_factory=dict)
    multiplier: dict | None = None  # the tail fit k came from (rule.tail_multiplier), None: tolerance factor


def _sides(m: metrics.Metric) -> tuple[str, ...]:
    return ("min",) if m.direction == metrics.HIGHER else ("max",) if m.direction == metrics.LOWER else ("min", "max")


def _fails(side: str, bound: float, x: float) -> bool:
    return x < bound if side == "min" else x > bound


def _looser(side: str, a: float, b: float) -> bool:
    """Whether bound ``a`` passes everything bound ``b`` passes (a min bound lower, a max higher)."""
    return a <= b if side == "min" else a >= b


def _checks_nothing(m: metrics.Metric, side: str, b: float) -> str | None:
    """Why a bound catches no plausible defect: it lies outside the metric's range, or at or
    beyond what a model with no skill shows (``Metric.null``: AUROC 0.5)."""
    if not m.can_fail(side, b):
        return f"lies outside {m.name}'s range {m.range_text}: it could not fail"
    if m.null is not None and ((side == "min" and b <= m.null) or (side == "max" and b >= m.null)):
        return f"admits a model with no skill ({m.name} = {m.null:g}): it checks nothing"
    return None


def derive_metric(name: str, values: list, quanta: list, n_seeds: int, rule: Rule,
                  policy: dict[str, tuple[float, str]], coverage: float | None = None,
                  labels: list[str] | None = None, k: float | None = None
                  ) -> tuple[dict[str, float], dict, str | None, dict[str, str]]:
    """(bounds by side, evidence, why unbounded (None), expected failures by side) for one metric
    (``name`` may be ``metric[class]``) from its values over the runs. A metric whose evidence
    fails the stability screen, or whose bound would check nothing, gets no calibrated bound: an
    inherited policy bound that every run passes is kept (it is a defect bound, far from the
    spread), else the metric is reported without a bound, the reason in the table."""
    from .rule import COVERAGE

    metric = metrics.get(name.split("[", 1)[0])
    coverage = COVERAGE if coverage is None else coverage
    if any(v is None for v in values):
        missing = sum(v is None for v in values)
        return {}, {}, f"not applicable on {missing} of {len(values)} calibration runs", {}
    quantum = stored(float(max(quanta)) if quanta else 0.0)
    scale = scale_of(metric)
    bounds, expected, reasons = {}, {}, []
    screened = screen(values, metric, Scale(scale, quantum), labels)
    evidence: dict = {}
    for side in _sides(metric):
        b, ev = rule.bound(values, side, n_seeds, quantum, scale, coverage, k)
        if b is not None and scale == "linear" and (metric.lo, metric.hi) == (0.0, 1.0) and not metric.can_fail(side, b):
            # a share bounded raw whose spread reaches past its range: on the logit scale, which keeps it inside
            b, ev = rule.bound(values, side, n_seeds, quantum, "logit", coverage, k)
        evidence = ev
        why = screened
        if why is None and b is None:
            why = f"{name} took the value {ev['mean']:.4g} on every run and has no resolution step: no spread"
        if why is None:
            nothing = _checks_nothing(metric, side, b)
            if nothing:
                why = f"the {side} bound the rule gives ({b:.4g}) {nothing}"
        if why is not None:
            kept = policy.get(side)
            if kept is not None and screened is None and b is not None and not _looser(side, kept[0], b):
                # the rule's bound checks nothing, and the policy lies inside the recipe's tolerance
                # interval: every calibration run passes it, yet a sound run fails it too often
                why += (f"; the inherited policy bound {kept[1]} ({metric.name}_{side} = {kept[0]:g}) lies inside "
                        f"this recipe's tolerance interval (to {b:.4g}): a sound run would fail it more often than "
                        "the run's false-alarm budget allows")
                kept = None
            if kept is not None and not any(_fails(side, kept[0], v) for v in values):
                evidence = {**evidence, "screen": why, "policy_kept": {"side": side, "bound": kept[0],
                                                                        "source": kept[1]}}
                continue  # the inherited policy bound gates it (every calibration run passes it)
            reasons.append(why)
            continue
        if side in policy:
            p, source = policy[side]
            looser = p <= b if side == "min" else p >= b
            if looser:
                pass  # the policy cannot fail where the calibrated bound does not: the tighter one is written
            elif all(_fails(side, p, v) for v in values):  # every run fails the policy: a finding
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
    why = "; ".join(reasons) if reasons and not bounds and "policy_kept" not in evidence else None
    if reasons and (bounds or "policy_kept" in evidence):
        evidence = {**evidence, "one_sided": "; ".join(reasons)}
    return bounds, evidence, why, expected


def _metric_names(results: list[dict], model: str) -> list[str]:
    return list(results[0]["models"][model])


def _series(results: list[dict], model: str, name: str) -> tuple[list, float]:
    """A metric's values over the runs (None where it did not apply) and its quantum (the
    coarsest step any run measured it at, as evidence stores it)."""
    values = [r["models"][model].get(name) for r in results]
    quanta = [r["quanta"][model][name] for r in results if name in r["quanta"][model]]
    return values, stored(float(max(quanta)) if quanta else 0.0)


def residual_pool(results: list[dict]) -> np.ndarray:
    """Every screened metric's leave-one-seed-out residuals (runs x bounds), oriented so that each
    bound's failing side is positive (a min bound's residuals negated; both sides of a metric with
    no better side): the evidence the rule's multiplier is read from (``rule.tail_multiplier``)."""
    seeds = [r["seed"] for r in results]
    labels = [f"s{r['seed']}/t{r['threads']}" for r in results]
    cols = []
    for model in results[0]["models"]:
        for name in _metric_names(results, model):
            values, quantum = _series(results, model, name)
            if any(v is None for v in values):
                continue
            metric = metrics.get(name.split("[", 1)[0])
            T = Scale(scale_of(metric), quantum)
            if screen(values, metric, T, labels) is None:
                r = loso_residuals(values, seeds, T)
                cols += [-r if side == "min" else r for side in _sides(metric)]
    return np.stack(cols, axis=1) if cols else np.full((len(results), 0), np.nan)


def run_bounds(tables: dict[str, Derived], baseline: str = "baseline") -> int:
    """How many bounds a run checks: the baseline's and one candidate's (the most of any), as a
    default run or a nox session trains them (not every candidate a calibration bounds)."""
    from ..gates import recipe_of

    base = sum(bounds_count(d) for m, d in tables.items() if recipe_of(m) == baseline)
    others = [bounds_count(d) for m, d in tables.items() if recipe_of(m) != baseline]
    return max(1, base + (max(others) if others else 0))


def derive(results: list[dict], rule: Rule, policy_for) -> dict[str, Derived]:
    """Every model's calibrated table from the runs (``results`` of ``run_tasks``).
    ``policy_for(model, metric)`` -> {side: (bound, source)} of inherited policy bounds. The
    per-bound coverage splits the run's false-alarm budget (``rule.alpha_run``) over the bounds
    a run checks (Bonferroni, ``run_bounds``): a first pass counts them, the second derives them;
    the multiplier at that coverage comes from the runs' own residuals (``rule.tail_multiplier``)."""
    n_seeds = len({r["seed"] for r in results})
    seeds = [r["seed"] for r in results]
    labels = [f"s{r['seed']}/t{r['threads']}" for r in results]
    models = list(results[0]["models"])
    pool = residual_pool(results)

    def one_pass(coverage: float) -> dict[str, Derived]:
        fit = tail_multiplier(pool, seeds, 1 - coverage, rule.confidence)
        k = None if fit is None else fit["q"] * math.sqrt(1 + 1 / n_seeds)
        out: dict[str, Derived] = {}
        for model in models:
            d = Derived(multiplier=fit)
            for name in _metric_names(results, model):
                values, quantum = _series(results, model, name)
                metric = name.split("[", 1)[0]
                bounds, ev, why, expected = derive_metric(name, values, [quantum], n_seeds, rule,
                                                          policy_for(model, metric), coverage, labels, k)
                if why:
                    d.unbounded[name] = why
                    d.unbounded_values[name] = [None if v is None else float(v) for v in values]
                    d.unbounded_quanta[name] = quantum
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

    first = one_pass(1 - rule.alpha_run / 100)
    return one_pass(1 - rule.alpha_run / run_bounds(first))


def bounds_count(d: Derived) -> int:
    """How many bounds a table checks (a per-class bound once per class)."""
    return sum(len(b) if isinstance(b, dict) else 1 for b in d.bounds.values())


def derive_effects(results: list[dict], model: str, effect, baseline: str = "baseline") -> tuple[dict, dict, dict]:
    """(gates, evidence, expected failures) of a candidate's documented effect: per-run paired
    changes; the per-seed change (mean over thread counts) decides with the exact sign-flip test
    a session uses (``compare.effect_test``), Holm-corrected across the candidate's effects as a
    session's are; expected to fail when no calibrated seed's change holds it, or when the test
    across all calibration seeds rejects no-effect at no level Holm allows it."""
    from .. import compare

    gates, evidence, expected = {}, {}, {}
    seeds = sorted({r["seed"] for r in results})
    tested = {}
    unknown = set()  # effects whose values a re-derivation does not have: in the family at p = 1
    for metric, expect, margin in effect.checks:
        direction = metrics.get(metric).direction
        if any(metric not in r["models"][model] or metric not in r["models"][baseline] for r in results):
            unknown.add(metric)
            continue
        runs = [(r["seed"], r["models"][model].get(metric), r["models"][baseline].get(metric)) for r in results]
        if any(a is None or b is None for _, a, b in runs):
            continue  # not applicable: out of the family, as a session leaves it out
        deltas = [a - b for _, a, b in runs]
        per_seed = [float(np.mean([a - b for s, a, b in runs if s == seed])) for seed in seeds]
        tested[metric] = (expect, margin, direction, deltas, per_seed,
                          compare.effect_test(per_seed, expect, direction, margin))
    # the same family-wise decision a session makes: Holm across the candidate's effects
    # the family a session decides: the applicable effects (one the runs hold no values of, at p = 1)
    family = {metric: 1.0 for metric in unknown} | {m: t[5]["p"] for m, t in tested.items()}
    decided = compare.holm(family, compare.EFFECT_LEVEL)
    for metric, (expect, margin, direction, deltas, per_seed, test) in tested.items():
        held, level = decided[metric]
        fails_each = [not compare.effect_holds(expect, [d, d], direction, margin) for d in per_seed]
        key = f"{metric}_effect"
        gates[key] = expect if expect == "improves" else {"expect": expect, "margin": margin}
        evidence[metric] = {"n": len(deltas), "seeds": len(seeds), "mean": float(np.mean(deltas)),
                            "sd": float(np.std(deltas, ddof=1)), "min": float(min(deltas)), "max": float(max(deltas)),
                            "values": [float(x) for x in deltas], "per_seed": per_seed,
                            "seed_ci": compare.seed_interval(per_seed), "sign_flip_p": test["p"],
                            "holm_level": level, "held_across_seeds": bool(held),
                            "better_share": compare.better_share(per_seed, direction)}
        shown = ", ".join(f"{x:+.4g}" for x in per_seed)
        want = "an improvement" if expect == "improves" else f"within the margin {margin:g} of no change"
        if all(fails_each):
            expected[key] = (f"the change is not {want} on any of {len(seeds)} calibration seeds (per-seed changes, "
                             f"mean over thread counts: {shown})")
        elif not held:
            expected[key] = (f"across {len(seeds)} calibration seeds the change is not {want}: exact sign-flip p = "
                             f"{test['p']:.3g} > {level:.3g} (Holm over {len(family)} effects at "
                             f"{compare.EFFECT_LEVEL:g}; per-seed changes, mean over thread counts: {shown})")
    return gates, evidence, expected
