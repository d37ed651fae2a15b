"""A documented effect is a claim about a recipe, so it is decided on training variance: across
>= 6 seeds (the exact sign-flip test of the per-seed paired changes, Holm across the
candidate's effects, with the interval and the share of seeds on which the candidate wins beside
it), or over test images when both models are fixed checkpoints; fewer training runs of each
recipe leave it undecided, shown but neither passed nor failed. ``--seed`` moves every
recipe's seed. On a tiny generated dataset, through ``pytest stress_tests``."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from test_own_data import MYNETS, make_parts

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["pytester"]

GATES = """
[parts.smoke.default]
accuracy_min = 0.2

[parts.smoke.label-smoothing.vs_baseline]
accuracy_effect = { expect = "not_worse", margin = 0.5 }
loss_effect = "improves"
"""
CHECKPOINT_GATES = """
[parts.smoke.default]
accuracy_min = 0.01

[parts.smoke.default.vs_baseline]
accuracy_effect = { expect = "not_worse", margin = 0.5 }
"""


@pytest.fixture
def world(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{pytester.path}")
    shutil.copytree(ROOT / "stress_tests", pytester.path / "stress_tests", ignore=shutil.ignore_patterns("__pycache__"))
    pytester.makeconftest('pytest_plugins = ["fixtures.plugin"]\n')
    make_parts(pytester.path / "parts", n_train=20, n_test=6)
    (pytester.path / "g.toml").write_text(GATES)
    return pytester


def _run(world, *args, gates="g.toml"):
    result = world.runpytest_subprocess(
        "stress_tests/test_accuracy.py::test_accuracy", "stress_tests/test_comparison.py", "--dataset", "parts",
        "--gates", gates, "--report-dir", "reports", "--cache-dir", str(world.path / "cache"),
        "-p", "no:cacheprovider", "-rsx", *args, timeout=600)
    out = result.stdout.str()
    return result, out, json.loads((world.path / "reports" / "latest" / "results.json").read_text())


def test_one_seed_leaves_an_effect_undecided_and_six_seeds_decide_it(world):
    result, out, rec = _run(world, "--candidate", "label-smoothing", "--seed", "7")
    assert result.ret == pytest.ExitCode.OK, out
    assert "seed 7 (--seed)" in out
    effects = [g for g in rec["gates"] if g["kind"] == "effect"]
    assert {g["status"] for g in effects} == {"undecided"}
    assert all("NOT DECIDED (1 training run of each recipe; an effect of a recipe is decided on the change across "
               ">= 6 training seeds" in g["message"] and "test images only" in g["message"] for g in effects)
    assert "documented effect(s) not decided" in out and "SKIPPED" in out
    assert rec["run"]["seeds"]["base"] == 7 and set(rec["run"]["seeds"]["recipes"].values()) == {7}
    assert rec["verdict"]["gates_checked"] == 2  # the two accuracy gates; undecided effects are not checked
    cmp = rec["comparisons"]["label-smoothing"]
    assert cmp["effect_held"] is None and {c["basis"] for c in cmp["effect_checks"]} == {"undecided"}

    result, out, rec = _run(world, "--candidate", "label-smoothing", "--seed", "7", "--seeds", "6")
    effects = [g for g in rec["gates"] if g["kind"] == "effect"]
    first = [g for g in effects if g["model"] == "label-smoothing"]
    assert {g["status"] for g in first} <= {"passed", "failed"} and len(first) == 2, first
    for g in first:
        assert g["basis"] == "across 6 training seeds" and "per-seed changes" in g["message"]
        assert "candidate better on" in g["message"] and "exact sign-flip p = " in g["message"]
        assert "(Holm over 3 effects)" in g["message"]  # accuracy and loss gates, the documented confident errors
    later = [g for g in effects if g["model"] != "label-smoothing"]
    assert later and {g["status"] for g in later} == {"n/a"}  # judged once, across the seeds
    acc = next(g for g in first if g["metric"] == "accuracy")
    assert acc["status"] == "passed" and acc["margin"] == 0.5
    # the report judges the recipe's documented effect (recipes.DOCUMENTED_EFFECTS) the same way
    (check,) = rec["comparisons"]["label-smoothing"]["effect_checks"]
    assert check["metric"] == "confident_errors_99" and check["basis"] == "seeds" and len(check["deltas"]) == 6
    assert 1 / 64 <= check["p"] <= 1 and check["level"] in (0.05 / 3, 0.05 / 2, 0.05)
    assert 0 <= check["better_share"] <= 1 and check["held"] in (True, False)
    assert (result.ret == pytest.ExitCode.OK) == all(g["status"] == "passed" for g in first), out


def test_two_checkpoints_are_compared_on_test_images(world):
    world.path.joinpath("mynets.py").write_text(MYNETS)
    import importlib.util

    spec = importlib.util.spec_from_file_location("mynets", world.path / "mynets.py")
    mynets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mynets)
    for seed, name in ((0, "a.pt"), (1, "b.pt")):
        torch.manual_seed(seed)
        torch.save(mynets.make_net(10, 1, (16, 16)).state_dict(), world.path / name)
    (world.path / "g2.toml").write_text(CHECKPOINT_GATES)
    result, out, rec = _run(world, "--model", "mynets:make_net", "--weights", "a.pt", "--weights", "other=b.pt",
                            gates="g2.toml")
    assert list(rec["models"]) == ["baseline", "other"]
    effect = next(g for g in rec["gates"] if g["kind"] == "effect")
    assert effect["status"] in ("passed", "failed") and effect["basis"] == "test images, fixed checkpoints", effect
    assert not any((world.path / "cache").rglob("*.pt")) if (world.path / "cache").exists() else True
    bad = world.runpytest_subprocess("stress_tests/test_accuracy.py", "--dataset", "parts", "--gates", "g2.toml",
                                     "--model", "mynets:make_net", "--weights", "other=b.pt", "--no-report")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    assert "a candidate checkpoint is compared with the baseline's: give it too" in bad.stderr.str()
