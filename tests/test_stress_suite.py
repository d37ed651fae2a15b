"""The stress suite end to end, through pytest itself: gates must be able to fail.

Runs ``stress_tests`` in a subprocess on two deliberately bad models and checks that the
accuracy, confident-error and calibration gates fail with their messages, that the run's
report holds those failures, and that the numbers it reports are the ones an independent
computation gets from the saved per-sample predictions.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import REAL_CACHE
from harness.cache import CACHE_ENV

ROOT = Path(__file__).resolve().parent.parent
FMNIST = Path("/usr/share/datasets/fashion-mnist")

pytestmark = pytest.mark.skipif(not FMNIST.exists(), reason="needs Fashion-MNIST (apt-get install dataset-fashion-mnist)")

pytest_plugins = ["pytester"]

OVERCONFIDENT_CONFTEST = '''
pytest_plugins = ["fixtures.plugin"]

import torch
from harness import train


class Sharpened(torch.nn.Module):
    """The trained baseline with its logits multiplied by 25: same argmax, overconfident."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x) * 25.0

    def cam_layer(self):
        return self.model.cam_layer()


def pytest_stress_model(recipe, data, device):
    if recipe.name != "baseline":
        return None
    return Sharpened(train.train(recipe, data, "smoke", device).model)
'''

BROKEN_RECIPE = '''
name = "broken"
base = "baseline"
max_steps = 5   # a handful of optimiser steps: barely trained
'''


def _reference_ece(conf, hit, bins=15):
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for b in range(bins):
        last = b == bins - 1
        m = (conf >= edges[b]) & ((conf <= edges[b + 1]) if last else (conf < edges[b + 1]))
        if m.any():
            total += m.sum() * abs(hit[m].mean() - conf[m].mean())
    return total / len(conf)


@pytest.fixture
def suite(pytester):
    shutil.copytree(ROOT / "stress_tests", pytester.path / "stress_tests", ignore=shutil.ignore_patterns("__pycache__"))
    pytester.makeconftest(OVERCONFIDENT_CONFTEST)
    pytester.path.joinpath("broken.toml").write_text(BROKEN_RECIPE)
    # the shipped gates, and a floor for the barely trained recipe of this test (a recipe of one's
    # own gets only the policy bounds, which a model that learned anything passes)
    pytester.path.joinpath("g.toml").write_text(f'include = ["{ROOT / "gates.toml"}"]\n\n'
                                                '[fashion-mnist.smoke.broken]\naccuracy_min = 0.8\n')
    pytester.syspathinsert(ROOT)
    return pytester


def test_gates_fail_on_bad_models(suite, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    # pytester points HOME at a temporary folder: keep the real model cache, where the smoke
    # baseline (tests/test_smoke_training.py) already is
    monkeypatch.setenv(CACHE_ENV, str(REAL_CACHE))
    report_dir = suite.path / "reports"
    result = suite.runpytest_subprocess(
        "stress_tests", "--dataset", "fashion-mnist", "--profile", "smoke", "--baseline-only",
        "--recipe-file", "broken.toml", "--gates", "g.toml", "--report-dir", str(report_dir),
        "-k", "test_accuracy or test_confident_errors or test_ece", "-p", "no:cacheprovider",
        timeout=900,
    )
    out = result.stdout.str()
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) >= 3, out
    for test in (
        "test_accuracy[fashion-mnist-broken]",
        "test_confident_errors[fashion-mnist-baseline-99]",
        "test_ece_over[fashion-mnist-baseline]",
    ):
        assert any(line.startswith("FAILED") and test in line for line in out.splitlines()), out
    # the failure messages: metric, measured value, bound and where the bound came from;
    # the barely trained model fails the accuracy floor, the overconfident one the
    # confident-error and calibration gates
    result.stdout.re_match_lines([
        r"\s*broken: accuracy=0\.\d+ < min 0\.8 \(g\.toml \[fashion-mnist\.smoke\.broken\]\)",
        r"\s*baseline: ece_over=0\.\d+ > max 0\.\d+ \(\S*fashion-mnist\.smoke\.toml \[fashion-mnist\.smoke\.baseline\]; "
        r"calibrated on \d+ runs.*",
        r"\s*baseline: confident_errors_99=\d+ > max \d+(\.\d+)? \(\S*fashion-mnist\.smoke\.toml "
        r"\[fashion-mnist\.smoke\.baseline\]; calibrated on \d+ runs.*",
    ], consecutive=False)
    assert "stress summary: fashion-mnist" in out  # the terminal table

    # the report records those failures and its numbers agree with its saved predictions
    run = report_dir / "latest"
    results = json.loads((run / "results.json").read_text())
    failed = {(g["model"], g["metric"]) for g in results["gates"] if not g["passed"]}
    assert {("broken", "accuracy"), ("baseline", "confident_errors_99"), ("baseline", "ece_over")} <= failed
    assert (run / "junit.xml").exists()
    for _name, entry in results["models"].items():
        saved = np.load(run / entry["predictions"])
        z = saved["logits"].astype(np.float64)
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        conf, hit = p.max(1), p.argmax(1) == saved["labels"]
        m = entry["metrics"]
        assert m["accuracy"] == pytest.approx(hit.mean(), abs=1e-9)
        assert m["ece"] == pytest.approx(_reference_ece(conf, hit), abs=1e-6)
        assert m["confident_errors_99"] == int((~hit & (conf >= 0.99)).sum())
        assert np.array_equal(saved["ids"], np.arange(10_000))


def test_unknown_dataset_is_a_usage_error(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makeconftest('pytest_plugins = ["fixtures.plugin"]')
    result = pytester.runpytest_subprocess("--dataset", "imagenet")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--dataset 'imagenet': not a built-in dataset (fashion-mnist, cifar10, cifar100), "
                                  "no such file or folder*"])


def test_bad_gates_file_is_a_usage_error(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makeconftest('pytest_plugins = ["fixtures.plugin"]')
    bad = pytester.path / "gates.toml"
    bad.write_text("[fashion-mnist.smoke.baseline]\naccuracy_least = 0.9\n")
    result = pytester.runpytest_subprocess("--gates", str(bad))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*accuracy_least*must be <metric>_<kind> with kind one of min, max*"])
