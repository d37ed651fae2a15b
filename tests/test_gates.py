"""gates.toml: validation before any training, merging, and the pass/fail messages."""

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import metrics, recipes
from harness.gates import Gate, GateFileError, Gates, check, expect_failure, not_applicable, undecided

ROOT = Path(__file__).resolve().parent.parent


def load(tmp_path, text: str) -> Gates:
    p = tmp_path / "g.toml"
    p.write_text(text)
    return Gates.load(p)


# ------------------------------------------------------------------ messages


def test_absolute_message_names_metric_value_bound_and_source():
    g = Gate("ece", "max", 0.05, "gates.toml [fashion-mnist.full.baseline]")
    out = check(g, 0.071)
    assert out.status == "failed" and not out.passed
    assert out.message == "ece=0.071 > max 0.05 (gates.toml [fashion-mnist.full.baseline])"
    assert check(g, 0.05).passed and check(g, 0.01).passed
    assert check(g, 0.01).message == "ece=0.01 <= max 0.05 (gates.toml [fashion-mnist.full.baseline])"


def test_min_gate_and_per_class_label():
    g = Gate("accuracy", "min", 0.85, "src")
    assert check(g, 0.85).passed
    assert "accuracy=0.8499 < min 0.85 (src)" == check(g, 0.8499).message
    c = Gate("class_accuracy", "min", 0.5, "src")
    assert check(c, 0.0, label="Shirt").message == "class_accuracy[Shirt]=0 < min 0.5 (src)"


def test_relative_gates():
    ratio = Gate("confident_errors_99", "max_ratio", 0.5, "src")
    assert check(ratio, 27, reference=54).passed
    out = check(ratio, 28, reference=54)
    assert not out.passed and out.limit == 27
    assert out.message == "confident_errors_99=28 > max 0.5 x baseline 54 = 27 (src)"
    delta = Gate("accuracy", "min_delta", -0.02, "src")
    assert check(delta, 0.90, reference=0.91).passed
    assert not check(delta, 0.88, reference=0.91).passed
    assert check(delta, 0.88, reference=0.91).message == "accuracy=0.88 < min baseline 0.91 - 0.02 = 0.89 (src)"
    with pytest.raises(ValueError, match="needs the baseline"):
        check(delta, 0.9)


def test_effect_gates_read_the_interval_and_say_what_it_covers():
    improves = Gate("confident_errors_99", "effect", "improves", "src")
    ok = check(improves, -11.0, reference=12, interval=[-15.0, -7.0], basis="across 5 training seeds")
    assert ok.passed and ok.interval == [-15.0, -7.0] and ok.basis == "across 5 training seeds"
    assert ok.message == ("confident_errors_99 change -11 [95% CI -15, -7; across 5 training seeds] vs baseline 12: "
                          "as expected (improves: the interval on the improving (lower) side) (src)")
    assert not check(improves, -2.0, reference=12, interval=[-6.0, 1.0]).passed
    # not_worse is a non-inferiority test with a stated margin: the harmful end within it
    not_worse = Gate("accuracy", "effect", "not_worse", "src", margin=0.01)
    assert check(not_worse, -0.004, reference=0.87, interval=[-0.0099, 0.002]).passed
    worse = check(not_worse, -0.004, reference=0.87, interval=[-0.011, 0.003])
    assert not worse.passed, "an interval admitting a drop beyond the margin is not 'not worse'"
    assert "NOT as expected (not_worse (margin 0.01): the interval's lower end within 0.01 of no change)" in worse.message
    with pytest.raises(ValueError, match="interval of the change"):
        check(improves, -1.0)


def test_an_undecided_effect_shows_the_change_but_neither_passes_nor_fails():
    g = Gate("confident_errors_99", "effect", "improves", "src")
    out = undecided(g, 7.0, [-2.0, 15.0], 11.0, "1 training run of each recipe")
    assert out.status == "undecided" and not out.passed and not out.checked
    assert out.message == ("confident_errors_99 change +7 [95% CI -2, +15; test images only] vs baseline 11: "
                           "NOT DECIDED (1 training run of each recipe) (src)")
    assert expect_failure(out, "expected").status == "undecided"  # an expectation needs a decision first


def test_per_class_bounds_and_their_evidence(tmp_path):
    g = load(tmp_path, "[d.smoke.m]\nclass_accuracy_min = { Shirt = 0.2, Trouser = 0.9 }\n"
                       "[d.smoke.m.evidence]\n\"class_accuracy[Trouser]\" = { n = 4, mean = 0.96, sd = 0.01, "
                       "min = 0.95, max = 0.97, values = [0.95, 0.96, 0.96, 0.97] }\n")
    gate = g.absolute("d", "smoke", "m")["class_accuracy_min"]
    assert gate.per_label and gate.for_label("Bag") is None
    trouser = gate.for_label("Trouser")
    assert trouser.bound == 0.9 and trouser.evidence["mean"] == 0.96
    out = check(gate, 0.67, label="Trouser")
    assert out.message == ("class_accuracy[Trouser]=0.67 < min 0.9 (g.toml [d.smoke.m]; calibrated on 4 runs: "
                           "mean 0.96, sd 0.01, range [0.95, 0.97])")
    assert check(gate, 0.3, label="Shirt").passed
    with pytest.raises(GateFileError, match="names class 'Trousers'"):
        load(tmp_path, "[d.smoke.m]\nclass_accuracy_min = { Trousers = 0.9 }\n").check_run(
            "d", "smoke", ["m"], ("d",), ["m"], classes=("Shirt", "Trouser"))


def test_unbounded_masks_inherited_bounds_and_says_why(tmp_path):
    g = load(tmp_path, "[default.smoke.default]\ncam_deletion_gap_min = -0.02\nece_max = 0.2\n"
                       "class_accuracy_min = 0.3\n"
                       "[d.smoke.m]\nunbounded = { cam_deletion_gap = \"its spread straddles 0\" }\n"
                       "class_accuracy_min = { Trouser = 0.9 }\n")
    a = g.absolute("d", "smoke", "m")
    assert "cam_deletion_gap_min" not in a and "ece_max" in a
    # a per-class table merges per class: Trouser's own bound, every other class the inherited one
    assert a["class_accuracy_min"].for_label("Trouser").bound == 0.9
    assert a["class_accuracy_min"].for_label("Shirt").bound == 0.3
    assert "default.smoke.default" in a["class_accuracy_min"].for_label("Shirt").source
    assert g.unbounded_reason("d", "smoke", "m", "cam_deletion_gap") == "its spread straddles 0"
    assert "cam_deletion_gap_min" in g.absolute("other", "smoke", "m")


def test_a_label_left_unbounded_is_taken_out_of_an_inherited_scalar_bound(tmp_path):
    """A calibrated per-set table bounds the sets it could bound, leaves the sets it names
    unbounded without any bound (an inherited policy bound inside the recipe's spread would
    raise false alarms), and the rest to the inherited bound."""
    g = load(tmp_path, "[default.smoke.default]\nood_auroc_min = 0.5\n"
                       "[d.smoke.m]\nood_auroc_min = { shuffled = 0.55 }\n"
                       "unbounded = { \"ood_auroc[uniform]\" = \"inside the spread\" }\n")
    gate = g.absolute("d", "smoke", "m")["ood_auroc_min"]
    assert gate.for_label("shuffled").bound == 0.55
    assert gate.for_label("uniform") is None
    assert gate.for_label("blank").bound == 0.5 and "default.smoke.default" in gate.for_label("blank").source
    assert g.unbounded_reason("d", "smoke", "m", "ood_auroc", "uniform") == "inside the spread"


def test_includes_load_tables_of_their_own_and_refuse_a_table_twice(tmp_path):
    (tmp_path / "cal.toml").write_text("[calibration]\nmachine = \"m1\"\nseeds = [1, 2]\nthreads = [1]\n"
                                       "[d.smoke.baseline]\naccuracy_min = 0.8\n")
    g = load(tmp_path, "include = [\"cal.toml\"]\n[default.smoke.default]\nece_max = 0.2\n")
    assert g.absolute("d", "smoke", "baseline")["accuracy_min"].source == "cal.toml [d.smoke.baseline]"
    assert g.calibrations == {"cal.toml": {"machine": "m1", "seeds": [1, 2], "threads": [1]}}
    with pytest.raises(GateFileError, match=r"\[d.smoke.baseline\] is defined in both g.toml and cal.toml"):
        load(tmp_path, "include = [\"cal.toml\"]\n[d.smoke.baseline]\nece_max = 0.1\n")
    with pytest.raises(GateFileError, match="includes itself"):
        load(tmp_path, "include = [\"g.toml\"]\n")


def test_nan_value_fails_and_not_applicable_is_its_own_status():
    out = check(Gate("mean_confidence_wrong", "max", 0.5, "src"), float("nan"))
    assert not out.passed and "nan" in out.message
    na = not_applicable(Gate("mean_confidence_wrong", "max", 0.5, "src"), "the model makes no errors")
    assert na.status == "n/a" and not na.passed
    assert na.message == "mean_confidence_wrong not applicable: the model makes no errors (src)"


# ------------------------------------------------------------------ merging


def test_model_table_overrides_defaults_and_any_dataset_table_applies(tmp_path):
    g = load(tmp_path, "[default.smoke.default]\naccuracy_above_chance_min = 0.1\nece_max = 0.2\n"
                       "[d.smoke.default]\naccuracy_min = 0.5\nece_max = 0.1\n"
                       "[d.smoke.augment]\naccuracy_min = 0.7\n[d.smoke.augment.vs_baseline]\nloss_max_delta = 0.0\n")
    a = g.absolute("d", "smoke", "augment")
    assert a["accuracy_min"].bound == 0.7 and a["accuracy_min"].source == "g.toml [d.smoke.augment]"
    assert a["ece_max"].bound == 0.1 and a["ece_max"].source == "g.toml [d.smoke.default]"
    assert a["accuracy_above_chance_min"].source == "g.toml [default.smoke.default]"
    assert g.absolute("d", "smoke", "baseline")["accuracy_min"].bound == 0.5
    assert set(g.relative("d", "smoke", "augment")) == {"loss_max_delta"}
    assert g.relative("d", "smoke", "baseline") == {}
    other = g.absolute("my-own-data", "smoke", "baseline")  # any dataset: the default table
    assert set(other) == {"accuracy_above_chance_min", "ece_max"} and other["ece_max"].bound == 0.2
    assert g.absolute("d", "full", "augment") == {}
    assert g.tables_for("d", "smoke", "augment") == [
        "g.toml [default.smoke.default]", "g.toml [d.smoke.default]", "g.toml [d.smoke.augment]"]


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "body, match",
    [
        ("[d.smoke.m]\naccuracy = 0.5\n", r"key 'accuracy' must be <metric>_<kind> with kind one of min, max"),
        ("[d.smoke.m]\naccuracy_min = 'high'\n", "is not a finite number"),
        ("[d.smoke.m]\naccuracy_min = nan\n", "is not a finite number"),
        ("[d.smoke.m]\naccuracy_min = true\n", "is not a finite number"),
        ("[d.smoke.m]\naccuracy_min_delta = 0.1\n", r"relative bounds go under \.vs_baseline"),
        ("[d.smoke.m.vs_baseline]\naccuracy_min = 0.1\n", "absolute bounds go in the model's own table"),
        ("[d.smoke.m]\neece_max = 0.05\n", r"unknown metric 'eece' \(did you mean 'ece'\?\)"),
        ("[d.smoke.m]\naccuracy_max = 0.99\n", "accuracy is higher-is-better, so a max bound points the wrong way; "
         "use accuracy_min"),
        ("[d.smoke.m]\nece_min = 0.01\n", "ece is lower-is-better, so a min bound points the wrong way; use ece_max"),
        ("[d.smoke.m.vs_baseline]\nloss_min_delta = 0.0\n", "use loss_effect or loss_max_delta or loss_max_ratio"),
        ("[d.smoke.m.vs_baseline]\nloss_effect = 'better'\n", "use one of 'improves', 'not_worse'"),
        ("[d.smoke.m.vs_baseline]\ngeneralisation_gap_effect = 'improves'\n", "cannot be compared on the same images"),
        ("[d.smoke.m.vs_baseline]\ncalibration_gap_effect = 'improves'\n", "no better side"),
        ("[d.smoke.m.vs_baseline]\nconfident_errors_99_max_ratio = -1\n", "a ratio bound must be >= 0"),
        ("[d.smoke.baseline.vs_baseline]\nloss_max_delta = 0\n", "the baseline cannot be bounded relative to itself"),
        ("[d.smok.m]\naccuracy_min = 0.5\n", r"unknown profile 'smok' \(did you mean 'smoke'\?\)"),
        ("[d.smoke.m]\nnested_min = {a = 1}\n", "unknown metric 'nested'"),
        ("[d.smoke.m]\naccuracy_min = {a = 1}\n", "only a per-class metric's min / max takes one bound per class"),
        ("[d.smoke.m]\naccuracy_min = -0.5\n", r"accuracy_min = -0.5 can never fail: accuracy takes values in \[0, 1\]"),
        ("[d.smoke.m]\nece_max = 1.0\n", r"ece_max = 1 can never fail"),
        ("[d.smoke.m]\nclass_accuracy_min = { Shirt = 0 }\n", "can never fail"),
        ("[d.smoke.m.vs_baseline]\naccuracy_effect = 'not_worse'\n", "needs a stated margin"),
        ("[d.smoke.m.vs_baseline]\naccuracy_effect = { expect = 'improves', margin = 0.1 }\n", "takes no margin"),
        ("[d.smoke.m.vs_baseline]\naccuracy_effect = { expect = 'not_worse', margin = -1 }\n", "a margin is >= 0"),
        ("[d.smoke.m]\nunbounded = { acuracy = 'x' }\n", r"not a metric \(did you mean 'accuracy'\?\)"),
        ("[d.smoke.m]\npolicy = ''\n", "must say why"),
        ("include = 'x.toml'\n", "must be a list of file paths"),
        ("include = ['missing.toml']\n", "missing.toml does not exist"),
        ("[d.smoke]\nm = 3\n", "expected a table"),
        ("accuracy_min = 0.5\n", "top-level key 'accuracy_min'"),
        ("[d.smoke.m\n", "not valid TOML"),
    ],
)
def test_bad_gate_files_are_rejected_with_the_key_and_the_choices(tmp_path, body, match):
    with pytest.raises(GateFileError, match=match):
        load(tmp_path, body)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(GateFileError, match="does not exist"):
        Gates.load(tmp_path / "nope.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe[")
    with pytest.raises(GateFileError, match="cannot be read"):
        Gates.load(tmp_path / "bin.toml")


def test_names_are_checked_against_the_run(tmp_path):
    g = load(tmp_path, "[fashion-mnist.smoke.default]\naccuracy_min = 0.5\n[fashion-mnist.smoke.augmnet]\nece_max = 0.1\n")
    with pytest.raises(GateFileError, match=r"unknown model 'augmnet' \(did you mean 'augment'\?\)"):
        g.check_run("fashion-mnist", "smoke", ["baseline", "augment"], ("fashion-mnist",), recipes.names())
    g = load(tmp_path, "[fashon-mnist.smoke.default]\naccuracy_min = 0.5\n")
    with pytest.raises(GateFileError, match=r"unknown dataset 'fashon-mnist' \(did you mean 'fashion-mnist'\?\)"):
        g.check_run("fashion-mnist", "smoke", ["baseline"], ("fashion-mnist", "cifar10"), recipes.names())
    g = load(tmp_path, "[fashion-mnist.smoke.default]\naccuracy_min = 0.5\n[fashion-mnist.smoke.lr3e-3]\nece_max = 0.1\n")
    g.check_run("fashion-mnist", "smoke", ["baseline", "lr3e-3"], ("fashion-mnist",), recipes.names())  # a run's model


def test_a_run_with_no_table_for_a_model_is_refused(tmp_path):
    g = load(tmp_path, "[fashion-mnist.smoke.default]\naccuracy_min = 0.5\n")
    with pytest.raises(GateFileError, match=r"no gates apply to 'baseline' of fashion-mnist / full .*"
                                            r"\[fashion-mnist\.full\.default\].*tables for: smoke"):
        g.check_run("fashion-mnist", "full", ["baseline"], ("fashion-mnist",), recipes.names())
    # a candidate with only relative bounds is still checked; the baseline needs absolute ones
    g = load(tmp_path, "[fashion-mnist.smoke.augment.vs_baseline]\naccuracy_min_delta = -0.1\n")
    with pytest.raises(GateFileError, match="no gates apply to 'baseline'"):
        g.check_run("fashion-mnist", "smoke", ["baseline", "augment"], ("fashion-mnist",), recipes.names())


def test_committed_gates_file_is_valid_and_every_seed_improvement_has_a_comparison():
    g = Gates.load(ROOT / "gates.toml")
    base = g.absolute("fashion-mnist", "smoke", "baseline")
    acc = base["accuracy_min"]  # calibrated: every calibration run passes it, a half-trained model does not
    assert acc.evidence and acc.evidence["min"] > acc.bound > 0.8
    for ds, profile, model in [("cifar100", "full", "cutmix"), ("fashion-mnist", "full", "augment")]:
        assert g.relative(ds, profile, model), f"no relative gates for {ds}/{profile}/{model}"
    for ds in recipes.BASELINES:
        for profile in ("smoke", "full"):
            g.check_run(ds, profile, ["baseline", recipes.DEFAULT_CANDIDATE[ds]], recipes.BASELINES, recipes.names())


def test_every_absolute_bound_in_gates_toml_is_checked_by_a_stress_test():
    """A bound no stress test measures can never fail (corruption_ece_over once was one)."""
    g = Gates.load(ROOT / "gates.toml")
    src = "".join(p.read_text() for p in (ROOT / "stress_tests").glob("test_*.py"))
    bounded = {gate.metric for absolute, _ in g._parsed.values() for gate in absolute.values()}

    def measured(metric: str) -> bool:
        if metric.startswith("confident_errors_"):  # test_confidence.py: f"confident_errors_{threshold}"
            return 'gate(f"confident_errors_{threshold}")' in src and metric.rsplit("_", 1)[1] in src
        return f'"{metric}"' in src

    assert not sorted(m for m in bounded if not measured(m))


def test_every_improvement_has_its_documented_effect_gated_on_fashion_mnist_smoke():
    """Each improvement's documented effect is a gate on its paired interval (issue 14); every
    expected failure says why."""
    g = Gates.load(ROOT / "gates.toml")
    for name, effect in recipes.DOCUMENTED_EFFECTS.items():
        profile = recipes.gate_profile_of(name, "smoke")
        rel = g.relative("fashion-mnist", profile, name)
        gated = {gate.metric for key, gate in rel.items() if gate.kind == "effect"}
        assert {metric for metric, _, _ in effect.checks} <= gated, (name, gated)
        for key, why in g.expected_failures("fashion-mnist", profile, name).items():
            assert len(why) > 40, (name, key)


# ------------------------------------------------------------------ fuzzing: any document -> valid or a clear error

_keys = st.sampled_from([*(f"{m}_{k}" for m in ("accuracy", "ece", "loss", "eece", "calibration_gap")
                           for k in ("min", "max", "min_delta", "max_ratio", "effect")), "vs_baseline", "x"])
_values = st.one_of(st.floats(allow_nan=True), st.integers(-5, 5), st.booleans(), st.text(max_size=5),
                    st.sampled_from(["improves", "not_worse"]), st.just({}), st.lists(st.integers(), max_size=2))
_tables = st.recursive(st.dictionaries(_keys, _values, max_size=4),
                       lambda inner: st.dictionaries(st.sampled_from(["vs_baseline", "default", "m"]), inner, max_size=2),
                       max_leaves=8)
_docs = st.dictionaries(st.sampled_from(["d", "default", "accuracy_min"]),
                        st.one_of(st.dictionaries(st.sampled_from(["smoke", "full", "smok", "full-imbalance"]),
                                                  st.one_of(st.dictionaries(st.sampled_from(["default", "m", "baseline"]),
                                                                            _tables, max_size=2), _values),
                                                  max_size=2), _values), max_size=3)


@settings(max_examples=300, deadline=None, database=None)
@given(_docs)
def test_any_document_gives_a_valid_configuration_or_a_gate_file_error(doc):
    try:
        g = Gates(doc, Path("fuzz.toml"))
    except GateFileError as exc:
        assert str(exc).startswith("fuzz.toml"), exc
        return
    for (ds, profile, model) in g._parsed:
        for gate in [*g.absolute(ds, profile, model).values(), *g.relative(ds, profile, model).values()]:
            assert gate.metric in metrics.REGISTRY
            assert isinstance(gate.bound, str) or math.isfinite(gate.bound)


# ------------------------------------------------------------------ the shipped bounds and their evidence


def _shipped_tables():
    from harness.gates import Gates

    g = Gates.load(ROOT / "gates.toml")
    return g, g._tables


def test_every_calibrated_bound_recomputes_from_its_evidence_by_the_stated_rule():
    """Each bound in gates/*.toml is the rule applied to the values stored beside it, on the scale
    and at the per-bound coverage stored with them (or the inherited policy bound, where every
    calibration run fails it): nobody edited a number."""
    from harness.calibrate import Rule

    g, tables = _shipped_tables()
    checked = 0
    for (ds, profile, model), t in tables.items():
        for gate in t.absolute.values():
            if not gate.evidence:
                continue
            per = gate.evidence if gate.per_label else {None: gate.evidence}
            bounds = gate.bound if gate.per_label else {None: gate.bound}
            for label, ev in per.items():
                if ev is None:
                    continue
                side = gate.kind
                if "policy_bound" in ev:
                    expected = ev["policy_bound"]["bound"]
                else:
                    rule = Rule(ev["calibration"]["confidence"], ev["calibration"]["false_alarm_budget"])
                    expected, _ = rule.bound(ev["values"], side, ev["seeds"], ev["quantum"], ev["scale"],
                                             ev["coverage"], ev["k"] if ev.get("multiplier") == "tail" else None)
                assert bounds[label] == expected, (ds, profile, model, gate.key, label, bounds[label], expected)
                checked += 1
    assert checked >= 100  # the Fashion-MNIST smoke tables are calibrated


def test_every_fashion_mnist_smoke_bound_is_measured_spread_or_stated_policy():
    """No smoke bound of the main job is a number from one run: each either has its calibration
    evidence or sits in a table that says why it is policy (what any model must show)."""
    g, tables = _shipped_tables()
    bare = []
    for (ds, profile, model), t in tables.items():
        if ds not in ("fashion-mnist", "default") or not profile.startswith("smoke") or t.policy:
            continue
        for gate in t.absolute.values():
            evs = gate.evidence.values() if gate.per_label and gate.evidence else [gate.evidence]
            if not gate.evidence or any(e is None for e in evs):
                bare.append(f"[{ds}.{profile}.{model}] {gate.key}")
    assert not bare, f"bounds with neither evidence nor a policy: {bare}"
