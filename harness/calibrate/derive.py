"""Tables from calibration runs: each metric's bounds by the rule, what inherited policy bounds
become, and each candidate's documented effects with their per-seed changes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import metrics
from .rule import Rule


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
    many seeds would; expected to fail when every calibrated seed's change fails it, or when
    the interval across all calibration seeds (more than a session trains) does not hold."""
    from .. import compare

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
        shown = ", ".join(f"{x:+.4g}" for x in per_seed)
        want = "an improvement" if expect == "improves" else f"within the margin {margin:g} of no change"
        if all(fails_each):
            expected[key] = (f"the change is not {want} on any of {len(seeds)} calibration seeds (per-seed changes, "
                             f"mean over thread counts: {shown})")
        elif not held:
            # more seeds than any session trains, and still no effect: a session cannot be expected to show one
            expected[key] = (f"across {len(seeds)} calibration seeds the change is not {want}: interval across seeds "
                             f"[{ci[0]:+.4g}, {ci[1]:+.4g}] (per-seed changes, mean over thread counts: {shown})")
    return gates, evidence, expected
