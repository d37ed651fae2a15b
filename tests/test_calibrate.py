"""Bounds from measured spread (harness/calibrate.py): the tolerance rule, policy bounds,
effects, the file it writes, and a whole calibration on a tiny dataset at two thread counts."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from harness import calibrate, metrics, recipes
from harness.calibrate import (
    Rule,
    bounds_count,
    derive,
    derive_effects,
    derive_metric,
    render,
    round_out,
    tolerance_factor,
)
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
    b, ev = Rule().bound([0, 0, 0, 0], "max", n_seeds=4, quantum=1.0, scale="linear", coverage=0.9999)
    assert b == round_out(tolerance_factor(4, 0.9999), "max") and ev["sd"] == 0 and ev["quantum"] == 1
    assert Rule().bound([0.5, 0.5], "min", 2)[0] is None  # no spread, no resolution: no bound


@pytest.mark.parametrize("scale, xs, q", [("logit", [0.0, 0.001, 0.5, 0.97, 1.0], 0.001), ("log", [0.0, 0.01, 2.5], 0.0),
                                          ("sqrt", [0, 3, 40], 1.0), ("fisher", [-0.9, 0.0, 0.5], 0.0),
                                          ("linear", [-0.3, 0.2], 0.0)])
def test_each_scale_goes_back_to_where_it_came_from(scale, xs, q):
    from harness.calibrate.rule import Scale

    s = Scale(scale, q)
    assert [s.back(t) for t in s.to(xs)] == pytest.approx(xs, abs=1e-9)
    assert all(np.isfinite(s.to(xs)))  # the ends of a range stay finite (smoothed)


def test_a_share_is_bounded_on_the_logit_scale_inside_its_range():
    """Shirt's accuracy (mean 0.53, sd 0.1 over runs): a normal rule on the raw scale gives a floor
    below 0 (it could not fail); on the logit scale the floor stays inside [0, 1] and still fails a
    class the model never predicts."""
    vals = [0.8, 0.822, 0.885, 0.637, 0.476, 0.53, 0.435, 0.451, 0.607, 0.508, 0.52, 0.454,  # 2026-12-02's spread
            0.331, 0.641, 0.51, 0.467, 0.55, 0.42, 0.596, 0.38, 0.61, 0.49, 0.561, 0.47]
    bounds, ev, why, _ = derive_metric("class_accuracy[Shirt]", vals, [0.001] * 24, 12, Rule(), {}, coverage=0.9997)
    assert why is None and 0 < bounds["min"] < min(vals) and ev["scale"] == "logit"
    raw = np.mean(vals) - tolerance_factor(12, 0.9997) * np.std(vals, ddof=1)
    assert raw < 0.05  # the raw-scale rule would let nearly everything through


def test_the_screen_sends_what_no_normal_rule_bounds_to_the_report():
    """Zero-inflated, too few distinct values, an outlier: reported with the reason, not gated;
    an inherited policy bound every run passes is kept (it is a defect bound)."""
    zeros = [0.0] * 16 + [0.001, 0.004, 0.02, 0.07]  # confident share on uniform noise, 2026-12-02
    bounds, ev, why, _ = derive_metric("ood_auroc[uniform]", [1 - v for v in zeros], [0.001] * 20, 10, Rule(), {})
    assert not bounds and "16 of 20 runs at the end of its range (1)" in why and "zero-inflated" in why
    bounds, ev, why, _ = derive_metric("errors", [5, 5, 6, 5, 6, 5], [1] * 6, 6, Rule(), {})
    assert not bounds and "only 2 distinct values in 6 runs" in why
    tail = [0.01, 0.012, 0.011, 0.013, 0.0105, 0.0115, 0.012, 0.0125, 0.30]
    bounds, ev, why, _ = derive_metric("ece_over", tail, [0] * 9, 9, Rule(), {}, labels=[f"r{i}" for i in range(9)])
    assert not bounds and why.startswith("run r8 (0.3) lies ") and "robust sd from the median on the log scale" in why
    bounds, ev, why, _ = derive_metric("ece_over", tail, [0] * 9, 9, Rule(), {"max": (0.5, "g [default]")})
    assert not bounds and why is None and ev["policy_kept"]["bound"] == 0.5 and "robust sd" in ev["screen"]


def test_a_bound_that_admits_no_skill_checks_nothing():
    """An AUROC floor at or below 0.5 passes a detector no better than chance: reported, not gated."""
    vals = [0.62, 0.81, 0.55, 0.74, 0.9, 0.68, 0.77, 0.6, 0.7, 0.84]
    bounds, ev, why, _ = derive_metric("ood_auroc[shuffled]", vals, [0.001] * 10, 10, Rule(), {}, coverage=0.9997)
    assert not bounds and "admits a model with no skill (ood_auroc = 0.5): it checks nothing" in why


def test_the_guard_band_keeps_a_bound_beyond_the_most_extreme_run():
    from harness.calibrate.rule import GUARD

    vals = [10, 10, 10, 10, 11, 10, 10, 10, 10, 12] * 2
    b, ev = Rule().bound(vals, "max", 10, 1.0, "sqrt", coverage=0.5)  # a lax coverage: the guard decides
    assert b >= max(vals) + GUARD


def test_the_run_budget_is_split_over_every_bound_written():
    rng = np.random.default_rng(2)
    runs = {(s, t): {"baseline": {"accuracy": float(0.86 + rng.normal(0, 0.004)),
                                  "loss": float(0.36 + rng.normal(0, 0.01))},
                     "augment": {"accuracy": float(0.85 + rng.normal(0, 0.004))}}
            for s in range(8) for t in (1, 2)}
    tables = derive(_results(runs), Rule(alpha_run=0.05), lambda m, metric: {})
    covs = {ev["coverage"] for d in tables.values() for ev in d.evidence.values()}
    assert len(covs) == 1 and covs.pop() == pytest.approx(1 - 0.05 / 3)  # three bounds in all


def test_a_bound_outside_the_range_is_left_unbounded_with_the_reason():
    vals = [0.30, 0.55, 0.41, 0.48, 0.36]
    bounds, ev, why, _ = derive_metric("generalisation_gap", [0.9, 0.1, 0.5, 0.7, 0.3], [0.001] * 5, 5, Rule(), {})
    assert not bounds and "lies outside generalisation_gap's range [-1, 1]: it could not fail" in why
    bounds, ev, why, _ = derive_metric("rare_class_accuracy", [0.8, None, 0.7], [], 3, Rule(), {})
    assert not bounds and why == "not applicable on 1 of 3 calibration runs"
    assert vals


def test_policy_bounds_are_kept_written_as_findings_or_overridden_by_the_evidence():
    rule = Rule()
    tight = [0.010, 0.011, 0.012, 0.0105, 0.0115, 0.0108]  # ece_over far below the policy: the tighter bound wins
    bounds, ev, _, expected = derive_metric("ece_over", tight, [0] * 6, 6, rule, {"max": (0.15, "g [default]")}, 0.999)
    assert bounds["max"] < 0.15 and not expected and "policy_overridden" not in ev
    below = [-0.01, 0.0, 0.005, -0.004, 0.002]  # deletion gap: every run fails a policy min of 0.1
    bounds, ev, _, expected = derive_metric("cam_deletion_gap", below, [0] * 5, 5, rule, {"min": (0.1, "g [default]")},
                                            0.999)
    assert bounds["min"] == 0.1 and "fails on every one of 5 calibration runs" in expected["min"]
    assert ev["policy_bound"] == {"side": "min", "bound": 0.1, "source": "g [default]"}
    straddle = [0.09, 0.11, 0.10, 0.12, 0.08]  # the policy cuts through the spread: overridden, said why
    bounds, ev, _, expected = derive_metric("cam_deletion_gap", straddle, [0] * 5, 5, rule, {"min": (0.1, "g [d]")},
                                            0.999)
    assert bounds["min"] < 0.08 and not expected and "fails on 2 of 5 runs" in ev["policy_overridden"]


def test_a_policy_bound_inside_a_spread_that_checks_nothing_is_not_kept():
    """AUROC on uniform noise spread from 0.52 to 0.98 over the runs: the rule's min bound admits a
    model with no skill, and the policy's 0.5, although every run passes it, lies inside the
    recipe's tolerance interval: a sound run would fail it too often. Reported, with both reasons."""
    wide = [0.745, 0.717, 0.894, 0.694, 0.58, 0.763, 0.721, 0.889, 0.912, 0.862, 0.971, 0.52]
    bounds, ev, why, _ = derive_metric("ood_auroc[uniform]", wide, [0.001] * 12, 6, Rule(),
                                       {"min": (0.5, "g [default]")}, 0.9996)
    assert not bounds and "policy_kept" not in ev
    assert "admits a model with no skill" in why
    assert "the inherited policy bound g [default] (ood_auroc_min = 0.5) lies inside this recipe's tolerance" in why
    narrow = [0.97, 0.98, 0.975, 0.99, 0.985, 0.972, 0.981, 0.977, 0.969, 0.988, 0.979, 0.983]
    bounds, ev, why, _ = derive_metric("ood_auroc[blank]", narrow, [0.001] * 12, 6, Rule(),
                                       {"min": (0.5, "g [default]")}, 0.9996)
    assert bounds["min"] > 0.5 and why is None  # a calibrated bound: tighter than the policy


def test_an_error_measure_near_zero_is_bounded_where_an_overconfident_model_fails():
    """A calibrated model's ECE-over on 24 calibration runs (2026-12-07: 0 to 0.015): on the log
    scale with a floor of 0.001 the near-zero runs spread over two decades and the bound reached
    0.26, which a model with logits x 25 (ECE-over 0.13) passes; the floor at the resolution of a
    mean over 10,000 images keeps the bound where that model fails."""
    vals = [0.0, 0.000291, 0.00019, 8.8e-05, 0.00043, 0.000827, 0.014674, 0.001435, 0.002314, 2e-05, 0.006728, 0.003833, 0.0, 0.009853, 0.002895, 0.000783, 0.00055, 0.006088, 0.000224, 0.004502, 0.002284, 0.004163, 0.004716, 0.001821]
    bounds, ev, why, _ = derive_metric("ece_over", vals, [0.0] * 24, 12, Rule(), {}, 0.99975)
    assert why is None and max(vals) < bounds["max"] < 0.06


def _results(values_by_seed: dict[tuple[int, int], dict]) -> list[dict]:
    return [{"seed": s, "threads": t, "models": m, "quanta": {k: {n: 0.0 for n in v} for k, v in m.items()}}
            for (s, t), m in values_by_seed.items()]


def test_effects_are_expected_to_fail_when_every_seed_or_the_test_across_seeds_fails_them():
    runs = {}
    per_seed = [(11, 18), (4, 22), (9, 14), (12, 15), (8, 13), (10, 16)]
    for seed, (base, aug) in enumerate(per_seed):
        for t in (1, 2):
            runs[(seed, t)] = {"baseline": {"confident_errors_99": base, "loss": 0.35},
                               "augment": {"confident_errors_99": aug, "loss": 0.36 + 0.01 * seed}}
    gates, ev, expected = derive_effects(_results(runs), "augment", recipes.DOCUMENTED_EFFECTS["augment"])
    assert gates == {"loss_effect": "improves", "confident_errors_99_effect": "improves"}
    assert ev["confident_errors_99"]["per_seed"] == [7, 18, 5, 3, 5, 6] and not ev["confident_errors_99"]["held_across_seeds"]
    assert "not an improvement on any of 6 calibration seeds" in expected["confident_errors_99_effect"]
    assert "+7, +18, +5" in expected["confident_errors_99_effect"]
    mixed = {k: {"baseline": v["baseline"], "augment": {**v["augment"], "confident_errors_99": 10}}
             for k, v in runs.items()}  # better on some seeds, worse on others: not held across seeds
    _, ev, expected = derive_effects(_results(mixed), "augment", recipes.DOCUMENTED_EFFECTS["augment"])
    assert ev["confident_errors_99"]["per_seed"] == [-1, 6, 1, -2, 2, 0]
    assert expected["confident_errors_99_effect"].startswith("across 6 calibration seeds the change is not an "
                                                             "improvement: exact sign-flip p = ")
    held = {k: {"baseline": v["baseline"], "augment": {**v["augment"], "confident_errors_99": v["baseline"][
        "confident_errors_99"] - 3 - k[0]}} for k, v in runs.items()}  # better by 3-8 on every seed: held
    _, ev, expected = derive_effects(_results(held), "augment", recipes.DOCUMENTED_EFFECTS["augment"])
    assert ev["confident_errors_99"]["held_across_seeds"] and "confident_errors_99_effect" not in expected
    assert ev["confident_errors_99"]["sign_flip_p"] == pytest.approx(1 / 64)


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
            "false_alarm_budget": Rule().alpha_run, "confidence": Rule().confidence}
    path = tmp_path / "cal.toml"
    path.write_text(render(meta, "d", "smoke", tables, {}))
    g = Gates.load(path)
    a = g.absolute("d", "smoke", "baseline")
    assert set(a["class_accuracy_min"].bound) == {"Trouser", "Shirt"}  # Shirt's floor stays in [0, 1] (logit)
    for key, gate in a.items():
        for label, bound in (gate.bound.items() if gate.per_label else [(None, gate.bound)]):
            ev = gate.evidence[label] if label else gate.evidence
            again, _ = Rule(ev["calibration"]["confidence"]).bound(
                ev["values"], gate.kind, len(ev["calibration"]["seeds"]), ev["quantum"], ev["scale"], ev["coverage"],
                ev["k"] if ev.get("multiplier") == "tail" else None)
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
    cal = g.calibrations["parts.smoke.toml"]
    assert cal["runs"] == ["s1/t1", "s1/t2", "s2/t1", "s2/t2"] and cal["threads"] == [1, 2]
    from harness import regime

    assert cal["regime"] == {"device": "cpu", "precision": "fp32", "torch": __import__("torch").__version__.split("+")[0],
                             "kernels": regime.kernels_label(), "channels_last": True, "fused": True,
                             "compile": False}
    assert isinstance(g.absolute("parts", "smoke", "baseline"), dict)
    evidence = sorted((tmp_path / "cache" / "threads-1" / "evidence").glob("*.npz"))
    assert {p.name.split("-")[0] for p in evidence} == {"robustness", "adversarial", "attention", "ood", "leakage",
                                                            "conformal_shift", "frequency", "image_properties"}
    stamps = {p: p.stat().st_mtime_ns for p in evidence}
    first = out.read_text()
    again = calibrate.calibrate(**{**kw, "progress": lines.append})  # models and evidence from their caches
    assert {p: p.stat().st_mtime_ns for p in evidence} == stamps, "the evidence was measured again"
    body = lambda text: text.split("[parts.smoke.baseline]", 1)[1]  # noqa: E731 - the tables, not the header
    assert body(out.read_text()) == body(first) and math.isfinite(again["seconds"])


def test_the_multiplier_comes_from_the_residuals_tail_and_falls_back_to_the_tolerance_factor():
    """Normal residuals over 12 seeds: the tail fit's q lies near the normal quantile (above it:
    the fit's upper 95% point over a bootstrap of seeds); too few residuals: no fit."""
    from scipy import stats

    from harness.calibrate.rule import tail_multiplier

    rng = np.random.default_rng(3)
    seeds = np.repeat(np.arange(12), 2)
    r = rng.standard_t(10, size=(24, 300))  # LOSO residuals of 300 metrics over 12 seeds are t-like
    fit = tail_multiplier(r, seeds, 1e-4)
    z = stats.t.ppf(1 - 1e-4, 10)
    assert fit is not None and z * 0.9 < fit["point"] < z * 1.15 and fit["q"] >= fit["point"]
    assert fit["seeds"] == 12 and fit["residuals"] == r.size
    assert tail_multiplier(r[:, :2], seeds, 1e-4) is None  # 48 residuals: too few in the tail
    assert tail_multiplier(r[:8], seeds[:8], 1e-4) is None  # 4 seeds


def test_loso_residuals_leave_the_whole_seed_out():
    from harness.calibrate.rule import Scale, loso_residuals

    vals = [1.0, 1.1, 2.0, 2.1, 3.0, 3.1, 4.0, 4.1]
    seeds = [0, 0, 1, 1, 2, 2, 3, 3]
    r = loso_residuals(vals, seeds, Scale("linear"))
    other = np.array(vals[2:])
    assert r[0] == pytest.approx((1.0 - other.mean()) / (other.std(ddof=1) * np.sqrt(1 + 1 / 3)))


def test_the_bound_for_a_mean_of_seeds_narrows_with_their_number():
    """--seeds N judges the recipe: the mean of N new seeds' values against the rule's bound for a
    mean (sd * sqrt(1/N + 1/n) in place of sd * sqrt(1 + 1/n)); N = 1 is the single-run bound."""
    from harness.calibrate.rule import mean_bound

    vals = list(np.linspace(0.80, 0.86, 24))
    k = 4.8 * np.sqrt(1 + 1 / 12)
    single, ev = Rule().bound(vals, "min", 12, 0.0001, "linear", 0.9997, k=k)
    assert ev["multiplier"] == "tail"
    bounds = [mean_bound(ev, "min", n) for n in (2, 3, 6)]
    assert single < bounds[0] < bounds[1] < bounds[2] < np.mean(vals)
    sd = np.std(vals, ddof=1)
    assert bounds[2] == round_out(np.mean(vals) - 4.8 * sd * np.sqrt(1 / 6 + 1 / 12), "min")
    assert mean_bound(ev, "min", 1) is None  # one seed: the single-run bound as it stands
    _, tol = Rule().bound(vals, "min", 12, 0.0001, "linear", 0.9997)
    assert mean_bound(tol, "min", 3) is None  # a tolerance-factor bound has no residual law to narrow


def test_a_mean_over_seeds_is_checked_against_the_bound_for_its_number_of_seeds():
    from harness.gates import Gate, check
    from harness.run.book import _for_mean

    vals = list(np.linspace(0.80, 0.86, 24))
    single, ev = Rule().bound(vals, "min", 12, 0.0001, "linear", 0.9997, k=5.0)
    g = Gate("accuracy", "min", single, "t.toml [d.smoke.baseline]", evidence=ev)
    mid = None
    for v in np.linspace(single, np.mean(vals), 200):  # a mean that passes one run's bound, fails the recipe's
        g3, value = _for_mean(g, [v, v, v])
        if check(g, v).passed and not check(g3, value).passed:
            mid = v
            break
    assert mid is not None and "the bound for the mean of 3 seeds on the linear scale" in g3.source
    # on the log scale the mean is taken there (the geometric mean, offset): not the raw mean
    _, ev_log = Rule().bound([0.01, 0.02, 0.015, 0.03] * 6, "max", 12, 0.0, "log", 0.9997, k=5.0)
    g_log = Gate("ece", "max", 0.1, "t", evidence=ev_log)
    _, value = _for_mean(g_log, [0.01, 0.04])
    assert value == pytest.approx(np.exp(np.mean(np.log(np.array([0.01, 0.04]) + 0.005))) - 0.005)
    assert _for_mean(Gate("accuracy", "min", 0.5, "policy"), [0.6, 0.7]) == (Gate("accuracy", "min", 0.5, "policy"),
                                                                           pytest.approx(0.65))


def test_tables_are_derived_again_from_the_values_they_keep(tmp_path):
    """--rederive: the improvements table from its own evidence and the base table's baseline
    (the same runs): it loads, every bound is recomputed from its evidence, what the file kept
    no values for stays unbounded with its reason, and documented effects stay."""
    from harness.calibrate.rederive import rederive

    gates = ROOT / "gates"
    out = tmp_path / "imp.toml"
    summary = rederive(gates / "fashion-mnist.smoke-improvements.toml", [gates / "fashion-mnist.smoke.toml"], out,
                       ROOT / "gates.toml")
    assert set(summary["tables"]) == {"label-smoothing", "cutmix"}  # the baseline paired with, not written
    assert summary["meta"]["run_bounds"] > max(bounds_count(d) for d in summary["tables"].values())
    g = Gates.load(out)
    ev = g.absolute("fashion-mnist", "smoke", "cutmix")["accuracy_min"].evidence
    again, _ = Rule().bound(ev["values"], "min", ev["seeds"], ev["quantum"], ev["scale"], ev["coverage"],
                            ev["k"] if ev.get("multiplier") == "tail" else None)
    assert again == g.absolute("fashion-mnist", "smoke", "cutmix")["accuracy_min"].bound
    assert g.relative("fashion-mnist", "smoke", "label-smoothing")["confident_errors_99_effect"].bound == "improves"
    with pytest.raises(ValueError, match="no values of baseline"):
        rederive(gates / "fashion-mnist.smoke-improvements.toml", [], tmp_path / "x.toml", ROOT / "gates.toml")
