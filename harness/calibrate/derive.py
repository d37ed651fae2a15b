"""Tables from calibration runs: each metric screened, then bounded by the rule on its scale; what
inherited policy bounds become; each candidate's documented effects with their per-seed changes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import metrics
from .rule import Rule, Scale, scale_of, screen, stored


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
                  labels: list[str] | None = None) -> tuple[dict[str, float], dict, str | None, dict[str, str]]:
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
        b, ev = rule.bound(values, side, n_seeds, quantum, scale, coverage)
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


def derive(results: list[dict], rule: Rule, policy_for) -> dict[str, Derived]:
    """Every model's calibrated table from the runs (``results`` of ``run_tasks``).
    ``policy_for(model, metric)`` -> {side: (bound, source)} of inherited policy bounds. The
    per-bound coverage splits the run's false-alarm budget (``rule.alpha_run``) over every bound
    the calibration writes (Bonferroni): a first pass counts them, the second derives them."""
    n_seeds = len({r["seed"] for r in results})
    labels = [f"s{r['seed']}/t{r['threads']}" for r in results]
    models = list(results[0]["models"])

    def one_pass(coverage: float) -> dict[str, Derived]:
        out: dict[str, Derived] = {}
        for model in models:
            d = Derived()
            for name in _metric_names(results, model):
                values = [r["models"][model].get(name) for r in results]
                quanta = [r["quanta"][model].get(name, 0.0) for r in results if name in r["quanta"][model]]
                metric = name.split("[", 1)[0]
                bounds, ev, why, expected = derive_metric(name, values, quanta, n_seeds, rule,
                                                          policy_for(model, metric), coverage, labels)
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

    first = one_pass(1 - rule.alpha_run / 100)
    checks = max(1, sum(bounds_count(d) for d in first.values()))
    return one_pass(1 - rule.alpha_run / checks)


def bounds_count(d: Derived) -> int:
    """How many bounds a table checks (a per-class bound once per class)."""
    return sum(len(b) if isinstance(b, dict) else 1 for b in d.bounds.values())


def derive_effects(results: list[dict], model: str, effect, baseline: str = "baseline") -> tuple[dict, dict, dict]:
    """(gates, evidence, expected failures) of a candidate's documented effect: per-run paired
    changes; the per-seed change (mean over thread counts) decides with the exact sign-flip test
    a session uses (``compare.effect_test``); expected to fail when no calibrated seed's change
    holds it, or when the test across all calibration seeds (more than a session trains) rejects
    no-effect at no level the session could reach."""
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
        test = compare.effect_test(per_seed, expect, direction, margin)
        held = test["p"] <= compare.EFFECT_LEVEL
        fails_each = [not compare.effect_holds(expect, [d, d], direction, margin) for d in per_seed]
        key = f"{metric}_effect"
        gates[key] = expect if expect == "improves" else {"expect": expect, "margin": margin}
        evidence[metric] = {"n": len(deltas), "seeds": len(seeds), "mean": float(np.mean(deltas)),
                            "sd": float(np.std(deltas, ddof=1)), "min": float(min(deltas)), "max": float(max(deltas)),
                            "values": [float(x) for x in deltas], "per_seed": per_seed,
                            "seed_ci": compare.seed_interval(per_seed), "sign_flip_p": test["p"],
                            "held_across_seeds": bool(held), "better_share": compare.better_share(per_seed, direction)}
        shown = ", ".join(f"{x:+.4g}" for x in per_seed)
        want = "an improvement" if expect == "improves" else f"within the margin {margin:g} of no change"
        if all(fails_each):
            expected[key] = (f"the change is not {want} on any of {len(seeds)} calibration seeds (per-seed changes, "
                             f"mean over thread counts: {shown})")
        elif not held:
            expected[key] = (f"across {len(seeds)} calibration seeds the change is not {want}: exact sign-flip p = "
                             f"{test['p']:.3g} > {compare.EFFECT_LEVEL:g} (per-seed changes, mean over thread counts: "
                             f"{shown})")
    return gates, evidence, expected
