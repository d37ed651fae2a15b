"""A dataset and a model the harness has never seen, end to end through ``pytest stress_tests``:
an ImageFolder of ten classes of small grey images (made here) trained and stressed with a full
report; then a model trained outside the harness, stressed through ``--model``/``--weights``
without any training."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["pytester"]

CLASSES = [f"part_{c:02d}_with_a_long_descriptive_name" for c in range(10)]

MYNETS = '''
import torch.nn as nn


def make_net(num_classes, in_channels, image_size):
    h, w = image_size
    return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(8 * (h // 2) * (w // 2), num_classes))
'''


def make_parts(root: Path, n_train=30, n_test=10, size=16, seed=0) -> Path:
    """Ten learnable grey classes: class c is a bright bar at row 1 + c, on noise."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for c, name in enumerate(CLASSES):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                img = rng.normal(60, 25, (size, size))
                img[1 + c:3 + c, 2:size - 2] += 150
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / f"{i:04d}.png")
    return root


@pytest.fixture
def world(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{pytester.path}")
    monkeypatch.setenv("CNN_STRESS_CACHE", str(pytester.path / "cache"))
    shutil.copytree(ROOT / "stress_tests", pytester.path / "stress_tests", ignore=shutil.ignore_patterns("__pycache__"))
    pytester.makeconftest('pytest_plugins = ["fixtures.plugin"]\n')
    make_parts(pytester.path / "parts")
    return pytester


def test_an_unseen_image_folder_runs_through_the_whole_suite_with_a_report(world):
    result = world.runpytest_subprocess("stress_tests", "--dataset", "parts", "--gates", str(ROOT / "gates.toml"),
                                        "--report-dir", "reports", "-p", "no:cacheprovider", "--cases",
                                        f"test/{CLASSES[3]}/0004.png,7", timeout=900)
    out = result.stdout.str()
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED), out
    assert "stress summary: parts" in out
    run = world.path / "reports" / "latest"
    results = json.loads((run / "results.json").read_text())
    assert results["run"]["complete"] is True
    gates = [g for g in results["gates"] if g["model"] == "baseline"]
    assert len(gates) >= 8, gates  # the default table's bounds, all of them checked
    assert all("[default.smoke.default]" in g["source"] for g in gates)
    # a short-trained model is right but timid: the default table catches its underconfidence
    ece_under = next(g for g in gates if g["metric"] == "ece_under")
    assert ece_under["passed"] == (ece_under["value"] <= 0.25)
    # predictions point back to the files; the named cases are followed
    saved = np.load(run / results["models"]["baseline"]["predictions"])
    assert len(saved["labels"]) == 100
    html = (run / "index.html").read_text()
    assert f"test/{CLASSES[3]}/0004.png" in html
    assert CLASSES[0][:12] in (run / "per_class.csv").read_text()


def test_a_model_trained_outside_runs_as_it_is(world):
    # train a tiny network the way a user would, outside the harness
    world.path.joinpath("mynets.py").write_text(MYNETS)
    import importlib.util

    spec = importlib.util.spec_from_file_location("mynets", world.path / "mynets.py")
    mynets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mynets)
    xs, ys = [], []
    for c, name in enumerate(CLASSES):
        for f in sorted((world.path / "parts" / "train" / name).glob("*.png")):
            xs.append(np.asarray(Image.open(f), dtype=np.float32) / 255)
            ys.append(c)
    x, y = torch.tensor(np.stack(xs))[:, None], torch.tensor(ys)
    torch.manual_seed(0)
    net = mynets.make_net(10, 1, (16, 16))
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    torch.save(net.state_dict(), world.path / "net.pt")

    args = ["stress_tests/test_accuracy.py", "stress_tests/test_calibration.py", "--dataset", "parts",
            "--model", "mynets:make_net", "--gates", str(ROOT / "gates.toml"), "--report-dir", "reports",
            "-p", "no:cacheprovider"]
    result = world.runpytest_subprocess(*args, "--weights", "net.pt", timeout=600)
    out = result.stdout.str()
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED), out
    assert not (world.path / "cache").exists() or not any((world.path / "cache").rglob("*.pt"))  # nothing trained
    results = json.loads((world.path / "reports" / "latest" / "results.json").read_text())
    assert list(results["models"]) == ["baseline"]
    assert results["models"]["baseline"]["metrics"]["accuracy"] >= 0.9  # the model as it was trained
    assert any(g["metric"] == "accuracy_above_chance" and g["passed"] for g in results["gates"])

    # a weights file that does not fit: the first mismatching key and both shapes, before any test
    torch.save(mynets.make_net(5, 1, (16, 16)).state_dict(), world.path / "five.pt")
    bad = world.runpytest_subprocess(*args, "--weights", "five.pt", "--no-report", timeout=600)
    text = bad.stdout.str() + bad.stderr.str()
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    assert "does not fit python:mynets:make_net: 4.weight is (5, 512) in the file but (10, 512)" in text, text
