"""The stress suite on pytest-xdist workers: every model trained once across workers, one report
merged by the controller with the single-process run's numbers, and a worker killed while it
trains leaves nothing behind that the next run trips on."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from planted import write_idx_world

pytest.importorskip("xdist")

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["pytester"]

# Counts trainings: every process that fits a model appends a line (workers import this too).
CONFTEST = '''
import os
pytest_plugins = ["fixtures.plugin"]
from harness import train

_fit = train.Trainer.fit


def _counted(self):
    with open(os.environ["TRAININGS"], "a") as f:
        f.write(self.recipe.name + "\\n")
    if os.environ.get("SLOW_FIT"):
        import time
        time.sleep(float(os.environ["SLOW_FIT"]))
    return _fit(self)


train.Trainer.fit = _counted
'''

TINY = '''
[fashion-mnist.smoke.default]
accuracy_min = 0.3
ece_over_max = 0.5
'''


@pytest.fixture
def world(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("CNN_STRESS_CACHE", str(pytester.path / "cache"))
    monkeypatch.setenv("TRAININGS", str(pytester.path / "trainings.txt"))
    shutil.copytree(ROOT / "stress_tests", pytester.path / "stress_tests", ignore=shutil.ignore_patterns("__pycache__"))
    pytester.makeconftest(CONFTEST)
    write_idx_world(pytester.path / "data", n_train=300, n_test=200)
    (pytester.path / "g.toml").write_text(TINY)
    return pytester


def _args(report: str) -> list[str]:
    return ["stress_tests/test_accuracy.py", "stress_tests/test_calibration.py", "stress_tests/test_comparison.py",
            "--dataset", "fashion-mnist", "--data-root", "data", "--gates", "g.toml", "--report-dir", report,
            "-p", "no:cacheprovider", "-p", "no:randomly"]


def _results(path: Path) -> dict:
    return json.loads((path / "latest" / "results.json").read_text())


def test_two_workers_train_each_model_once_and_write_one_report(world):
    two = world.runpytest_subprocess(*_args("r2"), "-n", "2", timeout=900)
    assert two.ret == pytest.ExitCode.OK, two.stdout.str()
    trainings = (world.path / "trainings.txt").read_text().split()
    assert sorted(trainings) == ["augment", "baseline"]  # each model once, across both workers
    out = two.stdout.str()
    assert out.count("stress summary: fashion-mnist") == 1  # the controller's summary
    runs = [p for p in (world.path / "r2").iterdir() if p.name != "latest"]
    assert len(runs) == 1 and not (runs[0] / ".workers").exists()  # one report, the shared folder merged away
    merged = _results(world.path / "r2")

    one = world.runpytest_subprocess(*_args("r1"), timeout=900)  # cached models, one process
    assert one.ret == pytest.ExitCode.OK, one.stdout.str()
    assert len((world.path / "trainings.txt").read_text().split()) == 2  # nothing retrained
    single = _results(world.path / "r1")
    assert merged["tests"] == single["tests"]
    assert sorted(merged["models"]) == sorted(single["models"]) == ["augment", "baseline"]
    for m in single["models"]:
        assert merged["models"][m]["metrics"] == single["models"][m]["metrics"]
    key = lambda g: (g["test"], g["model"], g["metric"], g["kind"], g.get("label"))  # noqa: E731
    assert sorted(map(key, merged["gates"])) == sorted(map(key, single["gates"]))
    assert {key(g): g["value"] for g in merged["gates"]} == {key(g): g["value"] for g in single["gates"]}
    assert merged["comparisons"]["augment"] == single["comparisons"]["augment"]


def test_a_worker_killed_while_training_leaves_no_lock_and_no_entry(world):
    env = {**os.environ, "SLOW_FIT": "30"}
    proc = subprocess.Popen([sys.executable, "-m", "pytest", *_args("r"), "--baseline-only", "-n", "1"],
                            cwd=world.path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    counts = world.path / "trainings.txt"
    deadline = time.time() + 300
    while not counts.exists() and time.time() < deadline:
        time.sleep(0.5)
    assert counts.exists(), "the worker never started training"
    os.killpg(proc.pid, signal.SIGKILL)  # the controller and its worker, mid-training
    proc.wait(timeout=60)
    cache = world.path / "cache"
    assert not list(cache.glob("*.pt")) and not list(cache.glob("*.tmp"))
    rerun = world.runpytest_subprocess(*_args("r"), "--baseline-only", "-n", "1", timeout=900)
    assert rerun.ret == pytest.ExitCode.OK, rerun.stdout.str()  # the lock file left behind is not held
    assert counts.read_text().split() == ["baseline", "baseline"]
    assert len(list(cache.glob("*.pt"))) == 1


def test_seeds_train_each_recipe_n_times_over_the_workers_and_report_the_spread(world):
    (world.path / "mean.toml").write_text('seed_gates = "mean"\n' + TINY)
    args = _args("r")
    args[args.index("g.toml")] = "mean.toml"  # a single-valued option is given once
    result = world.runpytest_subprocess(*args, "--seeds", "3", "--baseline-only", "-n", "2", timeout=900)
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.OK, out
    assert sorted((world.path / "trainings.txt").read_text().split()) == ["baseline"] * 3
    assert len(list((world.path / "cache").glob("*.pt"))) == 3  # one cache entry per seed
    assert "over 3 seeds" in out and "baseline: accuracy" in out
    results = _results(world.path / "r")
    assert results["run"]["seeds"]["recipes"] == {"baseline": 42, "baseline@s43": 43, "baseline@s44": 44}
    spread = results["seed_spread"]["recipes"]["baseline"]["accuracy"]
    values = [results["models"][m]["metrics"]["accuracy"] for m in ("baseline", "baseline@s43", "baseline@s44")]
    assert spread["values"] == values and spread["mean"] == pytest.approx(sum(values) / 3)
    assert spread["min"] == min(values) and spread["max"] == max(values)
    # seed_gates = "mean": the first seed's test checks the mean; the other seeds' tests say so and skip
    gates = [g for g in results["gates"] if g["metric"] == "accuracy"]
    checked = [g for g in gates if g["status"] == "passed"]
    assert len(checked) == 1 and checked[0]["model"] == "baseline" and "mean over 3 seeds" in checked[0]["message"]
    assert checked[0]["value"] == pytest.approx(sum(values) / 3)
    assert all(g["status"] == "n/a" and "gated on the mean over 3 seeds" in g["message"]
               for g in gates if g["model"] != "baseline")
    assert "Across training seeds" in (world.path / "r" / "latest" / "index.html").read_text()


def test_seeds_pair_each_candidate_with_the_baseline_of_its_seed(world):
    result = world.runpytest_subprocess(*_args("r"), "--seeds", "2", "--candidate", "augment", timeout=900)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    results = _results(world.path / "r")
    assert sorted(results["models"]) == ["augment", "augment@s43", "baseline", "baseline@s43"]
    assert results["comparisons"]["augment"]["against"] == "baseline"
    assert results["comparisons"]["augment@s43"]["against"] == "baseline@s43"
    change = results["seed_spread"]["changes"]["augment"]["accuracy"]
    m = {k: v["metrics"]["accuracy"] for k, v in results["models"].items()}
    deltas = [m["augment"] - m["baseline"], m["augment@s43"] - m["baseline@s43"]]
    assert change["deltas"] == pytest.approx(deltas) and change["delta"] == pytest.approx(sum(deltas) / 2)
    assert change["seed_ci"][0] <= change["delta"] <= change["seed_ci"][1]
    assert change["bootstrap_ci"] == results["comparisons"]["augment"]["metric_deltas"]["accuracy"]["ci"]
