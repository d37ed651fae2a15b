"""The stress suite on a real Ray cluster (``--executor ray``): a head started here with
``ray start --head`` on a free port, the suite run against it. Every model is trained by a Ray
worker (not the driver), its slow measurements made there too, and the report holds the same
numbers as a local run of the same recipes; a second run trains nothing; an address where no
cluster answers is a usage error before any training."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import test_xdist
from planted import write_idx_world

pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["pytester"]

# The counting conftest and the tiny bounds of the xdist tests: Ray workers do not load the
# conftest, so it counts the trainings of the driver only.
CONFTEST, TINY = test_xdist.CONFTEST, test_xdist.TINY


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head():
    """A one-node Ray cluster of 2 CPUs on a free port, stopped (with its workers) afterwards."""
    if shutil.which("ray") is None:
        pytest.skip("the ray command is not installed (pip install -e '.[ray]')")
    port = _free_port()
    tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    head = subprocess.Popen(["ray", "start", "--head", "--block", f"--port={port}", "--num-cpus=2", "--num-gpus=0",
                             "--include-dashboard=false", f"--temp-dir={tmp}", "--disable-usage-stats"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if head.poll() is not None:
                pytest.fail(f"ray start exited with {head.returncode}")
            time.sleep(0.5)
    else:
        pytest.fail("the Ray head did not open its port within 120 s")
    time.sleep(2)  # the GCS listens before the raylet has registered the node
    try:
        yield address
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=5)  # a blocking head takes half a minute to stop its raylet: killed after 5 s
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def world(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("TRAININGS", str(pytester.path / "trainings.txt"))
    shutil.copytree(ROOT / "stress_tests", pytester.path / "stress_tests", ignore=shutil.ignore_patterns("__pycache__"))
    pytester.makeconftest(CONFTEST)
    write_idx_world(pytester.path / "data", n_train=300, n_test=200)
    (pytester.path / "g.toml").write_text(TINY)
    return pytester


def _args(report: str, cache: str) -> list[str]:
    return ["stress_tests/test_accuracy.py", "stress_tests/test_calibration.py", "stress_tests/test_ood.py",
            "--dataset", "fashion-mnist", "--data-root", "data", "--gates", "g.toml", "--report-dir", report,
            "--cache-dir", cache, "-p", "no:cacheprovider", "-p", "no:randomly"]


def _results(path: Path) -> dict:
    return json.loads((path / "latest" / "results.json").read_text())


def test_ray_workers_train_and_measure_and_the_report_equals_a_local_run(world, ray_head):
    t0 = time.perf_counter()
    remote = world.runpytest_subprocess(*_args("r-ray", "c-ray"), "--executor", "ray",
                                        "--ray-address", ray_head, timeout=900)
    ray_seconds = time.perf_counter() - t0
    out = remote.stdout.str()
    assert remote.ret == pytest.ExitCode.OK, out
    assert not (world.path / "trainings.txt").exists()  # the driver trained nothing
    entries = sorted((world.path / "c-ray").glob("*.pt"))
    assert len(entries) == 2  # two recipes, each trained once (in parallel, on the cluster's two CPUs)
    for entry in entries:  # each made by a Ray worker process, recorded beside the entry
        origin = json.loads(entry.with_name(entry.name + ".origin.json").read_text())
        assert origin["executor"] == "ray" and origin["pid"] > 0 and origin["seconds"] > 0
    ray_results = _results(world.path / "r-ray")
    models = ["augment", "baseline"]
    assert {m: r["made_by"]["executor"] for m, r in ray_results["models"].items()} == dict.fromkeys(models, "ray")
    evidence = {p.name.split("-")[0] for p in (world.path / "c-ray" / "evidence").glob("*.npz")}
    assert {"ood", "taxonomy"} <= evidence  # measured as Ray tasks, kept in the driver's cache

    t0 = time.perf_counter()
    local = world.runpytest_subprocess(*_args("r-local", "c-local"), timeout=900)
    local_seconds = time.perf_counter() - t0
    assert local.ret == pytest.ExitCode.OK, local.stdout.str()
    assert sorted((world.path / "trainings.txt").read_text().split()) == ["augment", "baseline"]
    local_results = _results(world.path / "r-local")
    print(f"tiny suite, 2 models: Ray {ray_seconds:.1f}s, local {local_seconds:.1f}s")  # the README's overhead figure
    for m in models:  # same recipes, same seeds, same thread count: the same weights, the same numbers
        assert ray_results["models"][m]["metrics"] == local_results["models"][m]["metrics"], m
        assert ray_results["models"][m]["ood"] == local_results["models"][m]["ood"], m
    key = lambda g: (g["test"], g["model"], g["metric"], g["kind"], g.get("label"))  # noqa: E731
    assert {key(g): g["value"] for g in ray_results["gates"]} == {key(g): g["value"] for g in local_results["gates"]}

    again = world.runpytest_subprocess(*_args("r-ray", "c-ray"), "--executor", "ray",
                                       "--ray-address", ray_head, timeout=900)
    assert again.ret == pytest.ExitCode.OK, again.stdout.str()
    assert "training submitted to Ray" not in again.stdout.str()  # everything cached: no task
    assert _results(world.path / "r-ray")["models"]["baseline"]["metrics"] == ray_results["models"]["baseline"]["metrics"]


def test_an_address_where_no_cluster_answers_is_a_usage_error_before_training(world):
    port = _free_port()  # nothing listens there
    result = world.runpytest_subprocess(*_args("r", "c"), "--executor", "ray", "--ray-address", f"127.0.0.1:{port}",
                                        timeout=120)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert f"--ray-address 127.0.0.1:{port}: no Ray cluster answers there" in err and "ray start --head" in err
    assert not (world.path / "c").exists() or not list((world.path / "c").glob("*.pt"))
