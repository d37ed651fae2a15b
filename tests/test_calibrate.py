"""Bounds from measured spread (harness/calibrate.py): the tolerance rule, policy bounds,
effects, the file it writes, and a whole calibration on a tiny dataset at two thread counts."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from harness import calibrate, metrics, recipes
from harness.calibrate import Rule, derive, derive_effects, derive_metric, render, round_out, tolerance_factor
from harness.gates import Gates

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("n, coverage, k", [(5, 0.999, 7.50), (10, 0.999, 5.20), (30, 0.999, 4.02),
                                            (10, 0.99, 3.98), (20, 0.95, 2.40)])
def test_tolerance_factor_matches_published_tables(n, coverage, k):
    """One-sided normal tolerance factors at 95% confidence (NIST/SEMATECH e-Handbook 7.2.6.3;
    Odeh & Owen 1980): 10 draws, 99% coverage -> 3.981; 20 draws, 95% -> 2.396."""
    assert tolerance_factor(n, coverage, 0.95) == pytest.approx(k, abs=0.006)


def test_tolerance_bound_covers_what_it_claims():
    """Monte Carlo: with k from 8 draws at 90% coverage / 95% confidence, the bound mean - k sd
    lies below the population's 10% quantile in about 95% of samples."""
    rng = np.random.default_rng(0)
    k = tolerance_factor(8, 0.90, 0.95)
    q10 = -1.2815515655446004
    hits = [(lambda x: x.mean() - k * x.std(ddof=1) <= q10)(rng.normal(size=8)) for _ in range(4000)]
    assert 0.93 < np.mean(hits) < 0.97


def test_bounds_round_outward():
    assert round_out(0.123456, "min") == 0.1234 and round_out(0.123456, "max") == 0.1235
    assert round_out(-0.123456, "min") == -0.1235 and round_out(24.31, "max") == 24.31


def test_rule_floors_the_spread_at_the_metric_resolution():
    b, ev = Rule(0.9999).bound([0, 0, 0, 0], "max", n_seeds=4, quantum=1.0)
    assert b == round_out(tolerance_factor(4, 0.9999), "max") and ev["sd"] == 0 and ev["quantum"] == 1
    assert Rule().bound([0.5, 0.5], "min", 2)[0] is None  # no spread, no resolution: no bound


def test_a_bound_outside_the_range_is_left_unbounded_with_the_reason():
    vals = [0.30, 0.55, 0.41, 0.48, 0.36]
    bounds, ev, why, _ = derive_metric("class_accuracy[Shirt]", vals, [0.001] * 5, 5, Rule(), {})
    assert not bounds and "lies outside class_accuracy's range [0, 1]: it could not fail" in why
    bounds, ev, why, _ = derive_metric("rare_class_accuracy", [0.8, None, 0.7], [], 3, Rule(), {})
    assert not bounds and why == "not applicable on 1 of 3 calibration runs"


def test_policy_bounds_are_kept_written_as_findings_or_overridden_by_the_evidence():
    rule = Rule(0.999)
    tight = [0.010, 0.011, 0.012, 0.0105, 0.0115]  # ece_over far below the policy: the tighter bound wins
    bounds, ev, _, expected = derive_metric("ece_over", tight, [0] * 5, 5, rule, {"max": (0.15, "g [default]")})
    assert bounds["max"] < 0.15 and not expected and "policy_overridden" not in ev
    below = [-0.01, 0.0, 0.005, -0.004, 0.002]  # deletion gap: every run fails a policy min of 0.1
    bounds, ev, _, expected = derive_metric("cam_deletion_gap", below, [0] * 5, 5, rule, {"min": (0.1, "g [default]")})
    assert bounds["min"] == 0.1 and "fails on every one of 5 calibration runs" in expected["min"]
    assert ev["policy_bound"] == {"side": "min", "bound": 0.1, "source": "g [default]"}
    straddle = [0.09, 0.11, 0.10, 0.12, 0.08]  # the policy cuts through the spread: overridden, said why
    bounds, ev, _, expected = derive_metric("cam_deletion_gap", straddle, [0] * 5, 5, rule, {"min": (0.1, "g [d]")})
    assert bounds["min"] < 0.08 and not expected and "fails on 2 of 5 runs" in ev["policy_overridden"]


def _results(values_by_seed: dict[tuple[int, int], dict]) -> list[dict]:
    return [{"seed": s, "threads": t, "models": m, "quanta": {k: {n: 0.0 for n in v} for k, v in m.items()}}
            for (s, t), m in values_by_seed.items()]


def test_effects_are_expected_to_fail_when_every_seed_or_the_interval_across_seeds_fails_them():
    runs = {}
    for seed, (base, aug) in enumerate([(11, 18), (4, 22), (9, 14)]):
        for t in (1, 2):
            runs[(seed, t)] = {"baseline": {"confident_errors_99": base, "loss": 0.35},
                               "augment": {"confident_errors_99": aug, "loss": 0.36 + 0.01 * seed}}
    gates, ev, expected = derive_effects(_results(runs), "augment", recipes.DOCUMENTED_EFFECTS["augment"])
    assert gates == {"loss_effect": "improves", "confident_errors_99_effect": "improves"}
    assert ev["confident_errors_99"]["per_seed"] == [7, 18, 5] and not ev["confident_errors_99"]["held_across_seeds"]
    assert "not an improvement on any of 3 calibration seeds" in expected["confident_errors_99_effect"]
    assert "+7, +18, +5" in expected["confident_errors_99_effect"]
    mixed = {k: {"baseline": v["baseline"], "augment": {**v["augment"], "confident_errors_99": 10}}
             for k, v in runs.items()}  # better on one seed (11 -> 10), worse on two: not held across seeds
    _, ev, expected = derive_effects(_results(mixed), "augment", recipes.DOCUMENTED_EFFECTS["augment"])
    assert ev["confident_errors_99"]["per_seed"] == [-1, 6, 1]
    assert expected["confident_errors_99_effect"].startswith("across 3 calibration seeds the change is not an "
                                                             "improvement: interval across seeds [")
    held = {k: {"baseline": v["baseline"], "augment": {**v["augment"], "confident_errors_99": v["baseline"][
        "confident_errors_99"] - 3 - k[0]}} for k, v in runs.items()}  # better by 3-5 on every seed: held
    _, ev, expected = derive_effects(_results(held), "augment", recipes.DOCUMENTED_EFFECTS["augment"])
    assert ev["confident_errors_99"]["held_across_seeds"] and "confident_errors_99_effect" not in expected


def test_a_rendered_table_loads_and_every_bound_is_recomputed_from_its_evidence(tmp_path):
    rng = np.random.default_rng(1)
    runs = {(s, t): {"baseline": {"accuracy": float(0.86 + rng.normal(0, 0.004)),
                                  "confident_errors_99": float(rng.integers(3, 12)),
                                  "class_accuracy[Trouser]": float(0.96 + rng.normal(0, 0.005)),
                                  "class_accuracy[Shirt]": float(0.45 + rng.normal(0, 0.1))}}
            for s in range(10) for t in (1, 2)}
    results = _results(runs)
    tables = derive(results, Rule(), lambda m, metric: {})
    meta = {"seeds": list(range(10)), "threads": [1, 2], "machine": "test", "rule": Rule().describe(),
            "coverage": Rule().coverage, "confidence": Rule().confidence}
    path = tmp_path / "cal.toml"
    path.write_text(render(meta, "d", "smoke", tables, {}))
    g = Gates.load(path)
    a = g.absolute("d", "smoke", "baseline")
    assert set(a["class_accuracy_min"].bound) == {"Trouser"}  # Shirt's floor falls below 0: unbounded
    assert "could not fail" in g.unbounded_reason("d", "smoke", "baseline", "class_accuracy", "Shirt")
    for key, gate in a.items():
        for label, bound in (gate.bound.items() if gate.per_label else [(None, gate.bound)]):
            ev = gate.evidence[label] if label else gate.evidence
            again, _ = Rule(ev["calibration"]["coverage"], ev["calibration"]["confidence"]).bound(
                ev["values"], gate.kind, len(ev["calibration"]["seeds"]), ev["quantum"])
            assert again == bound, (key, label)


def test_the_gated_metrics_are_the_registry_metrics_a_stress_test_checks():
    """calibrate measures ``Metric.gated``; a stress test must check each of them, and none else."""
    src = "".join(p.read_text() for p in (ROOT / "stress_tests").glob("test_*.py"))
    gated = {n for n, m in metrics.REGISTRY.items() if m.gated}
    checked = {n for n in metrics.REGISTRY if f'"{n}"' in src}
    checked |= {f"confident_errors_{t}" for t in ("90", "99") if f'"{t}"' in src}
    checked |= {f"{m}_{k}" for m in ("lac", "aps") for k in ("coverage_margin", "set_size")
                if f'"{m}"' in src and f'f"{{method}}_{k}"' in src}
    assert gated == checked


def test_a_calibration_end_to_end_on_a_tiny_dataset_at_two_thread_counts(tmp_path):
    """Two seeds at 1 and 2 threads on 28 16x16 images: four runs, each trained by a worker
    started with its thread count into its own cache folder; the file loads and a rerun
    reuses every stored result."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_own_data import make_parts

    make_parts(tmp_path / "parts", n_train=20, n_test=8)
    out = tmp_path / "parts.smoke.toml"
    lines: list[str] = []
    kw = dict(dataset=str(tmp_path / "parts"), profile="smoke", seeds=[1, 2], threads=[1, 2], candidates=[],
              out=out, gates_path=ROOT / "gates.toml", cache_dir=tmp_path / "cache", progress=lines.append)
    summary = calibrate.calibrate(**kw)
    assert len(summary["results"]) == 4 and {r["threads"] for r in summary["results"]} == {1, 2}
    assert sorted((tmp_path / "cache").glob("threads-*")) == [tmp_path / "cache" / "threads-1",
                                                                 tmp_path / "cache" / "threads-2"]
    assert len(list((tmp_path / "cache" / "threads-1").glob("*.pt"))) == 2
    g = Gates.load(out)
    assert g.calibrations["parts.smoke.toml"]["runs"] == ["s1/t1", "s1/t2", "s2/t1", "s2/t2"]
    assert isinstance(g.absolute("parts", "smoke", "baseline"), dict)
    evidence = sorted((tmp_path / "cache" / "threads-1" / "evidence").glob("*.npz"))
    assert {p.name.split("-")[0] for p in evidence} == {"robustness", "adversarial", "attention", "ood", "leakage",
                                                            "conformal_shift"}
    stamps = {p: p.stat().st_mtime_ns for p in evidence}
    first = out.read_text()
    again = calibrate.calibrate(**{**kw, "progress": lines.append})  # models and evidence from their caches
    assert {p: p.stat().st_mtime_ns for p in evidence} == stamps, "the evidence was measured again"
    body = lambda text: text.split("[parts.smoke.baseline]", 1)[1]  # noqa: E731 - the tables, not the header
    assert body(out.read_text()) == body(first) and math.isfinite(again["seconds"])
