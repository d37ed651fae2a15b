"""Bad input, faults and concurrent runs: each probe ends in a clear error or a correct result,
with nothing lost, nothing wrong cached, and the next clean run working."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from planted import CONFTEST, write_idx_world

from harness import custom_data, data, recipes

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["pytester"]

# ------------------------------------------------------------------ recipe files


@pytest.mark.parametrize("body, match", [
    ('name = "x"\nlr = "fast"\n', r"x\.toml: invalid recipe fashion-mnist/x: lr='fast' \(a number, not str\)"),
    ('name = "x"\nepochs = 2.5\n', r"epochs=2\.5 \(a whole number, not float\)"),
    ('name = "x"\nmilestones = [1.5]\n', r"milestones=\[1\.5\] \(a list of whole numbers"),
    ('name = "x"\nhflip = true\n', r"hflip=True \(a number, not bool\)"),
    ('name = "x"\nbase = "augmnet"\n', r"base = 'augmnet': choose one of baseline, augment"),
    ("name = 3\n", r"name = 3 is not a plain name"),
    ('name = "x"\nlearning_rate = 0.1\n', r"unknown recipe field\(s\) learning_rate"),
    ('name = "x"\nsmoke = 3\n', r"\[smoke\] must be a table"),
    ('name = "x\n', r"cannot read recipe file"),
])
def test_recipe_file_mistakes_name_the_file_and_the_field(tmp_path, body, match):
    p = tmp_path / "x.toml"
    p.write_text(body)
    with pytest.raises(ValueError, match=match):
        recipes.from_file(p, "fashion-mnist", "smoke")


_values = st.one_of(st.integers(-3, 100), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                    st.text(max_size=4), st.lists(st.integers(0, 60), max_size=3), st.just({"epochs": 1}))
_fields = st.sampled_from(["name", "base", "lr", "epochs", "batch_size", "milestones", "hflip", "loss", "optimizer",
                           "smoke", "full", "label_smoothing", "cutmix_prob", "imbalance", "bogus"])


@settings(max_examples=300, deadline=None, database=None)
@given(st.dictionaries(_fields, _values, max_size=6))
def test_any_recipe_document_gives_a_recipe_or_a_clear_error(tmp_path_factory, doc):
    import tomli_w

    p = tmp_path_factory.mktemp("r") / "fuzz.toml"
    try:
        p.write_text(tomli_w.dumps(doc))
    except (TypeError, ValueError):
        return  # not expressible in TOML
    try:
        r = recipes.from_file(p, "fashion-mnist", "smoke")
    except ValueError as exc:
        assert str(exc).startswith(str(p)) or "invalid recipe" in str(exc), exc
        return
    assert isinstance(r, recipes.Recipe) and r.lr > 0 and r.epochs >= 1
    assert r.hash() == recipes.Recipe(**{**r.to_dict(), "milestones": tuple(r.milestones)}).hash()


# ------------------------------------------------------------------ CIFAR pickles run nothing


class _Planted:
    """Unpickling this would run ``open(marker, 'w')`` (a stand-in for arbitrary code)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_crafted_cifar_pickle_runs_nothing(cifar_root, tmp_path):
    files = cifar_root("cifar10", n_train=10, n_test=5)
    marker = tmp_path / "pwned"
    with open(files.folder / "data_batch_1", "wb") as f:
        pickle.dump({"data": _Planted(str(marker)), "labels": [0]}, f, protocol=2)
    with pytest.raises(data.DatasetFormatError, match=r"refused to load the global (builtins|io)\.open"):
        data.load("cifar10", files.root, download=False)
    assert not marker.exists()


def test_a_non_dict_cifar_pickle_is_a_clear_error(cifar_root):
    files = cifar_root("cifar100", n_train=10, n_test=5)
    with open(files.folder / "test", "wb") as f:
        pickle.dump([1, 2, 3], f, protocol=2)
    with pytest.raises(data.DatasetFormatError, match=r"holds a list, not the dict of the official format"):
        data.load("cifar100", files.root, download=False)


def test_genuine_cifar_pickles_still_load(cifar_root):
    files = cifar_root("cifar10", n_train=20, n_test=10)
    ds = data.load("cifar10", files.root, download=False)
    assert np.array_equal(ds.test_x.numpy(), files.test_x)


# ------------------------------------------------------------------ under pytest


def _suite(pytester, monkeypatch, extra: dict[str, str] | None = None):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    shutil.copytree(ROOT / "stress_tests", pytester.path / "stress_tests", ignore=shutil.ignore_patterns("__pycache__"))
    for name, text in (extra or {}).items():
        (pytester.path / "stress_tests" / name).write_text(text)
    pytester.makeconftest(CONFTEST.format(tests=str(ROOT / "tests")))
    (pytester.path / "g.toml").write_text("[fashion-mnist.smoke.default]\naccuracy_min = 0.5\n")


def test_bad_data_is_one_usage_error_before_collection_and_no_run_folder(pytester, monkeypatch):
    _suite(pytester, monkeypatch)
    (pytester.path / "empty").mkdir()
    result = pytester.runpytest_subprocess("stress_tests", "--baseline-only", "--data-root", "empty", "--gates", "g.toml",
                                           "--report-dir", "reports", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert err.count("does not hold fashion-mnist") == 1 and "empty is empty" in err
    assert "Traceback" not in result.stdout.str() + err
    assert not (pytester.path / "reports").exists() or not any((pytester.path / "reports").iterdir())


def test_a_recipe_file_cannot_replace_a_built_in_model(pytester, monkeypatch):
    _suite(pytester, monkeypatch)
    (pytester.path / "mine.toml").write_text('name = "augment"\nlr = 0.01\n')
    result = pytester.runpytest_subprocess("stress_tests", "--recipe-file", "mine.toml", "--gates", "g.toml",
                                           "--no-report", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert re.search(r"mine\.toml names its recipe 'augment', the name of a built-in recipe: it would replace that "
                     r"model and every comparison against it\. Rename it", result.stderr.str())


INTERRUPT = '''
def test_zz_interrupt():
    raise KeyboardInterrupt
'''


def test_run_folders_are_unique_complete_or_marked_incomplete(pytester, monkeypatch):
    _suite(pytester, monkeypatch)
    write_idx_world(pytester.path / "data", n_train=300, n_test=200)
    args = ["stress_tests/test_accuracy.py", "--baseline-only", "--data-root", "data", "--gates", "g.toml",
            "--report-dir", "reports", "-p", "no:cacheprovider", "-k", "test_accuracy and not class"]
    first = pytester.runpytest_subprocess(*args)
    second = pytester.runpytest_subprocess(*args)
    assert first.ret == second.ret == 0
    reports = pytester.path / "reports"
    runs = sorted(p for p in reports.iterdir() if p.is_dir() and p.name != "latest")
    assert len(runs) == 2 and runs[0].name != runs[1].name
    for run in runs:
        assert re.fullmatch(r"\d{8}T\d{6}\.\d{3}Z_fashion-mnist_smoke_[0-9a-f]{6}", run.name)
        assert (run / "results.json").is_file() and (run / "junit.xml").is_file()
        assert json.loads((run / "results.json").read_text())["run"]["complete"] is True
    assert os.readlink(reports / "latest") == runs[1].name
    # an interrupted run: what was measured is kept, marked incomplete; latest is not moved
    _ = pytester.path / "stress_tests" / "test_zz.py"
    _.write_text(INTERRUPT)
    third = pytester.runpytest_subprocess("stress_tests/test_accuracy.py", "stress_tests/test_zz.py", *args[1:-2])
    assert third.ret == pytest.ExitCode.INTERRUPTED
    incomplete = [p for p in reports.iterdir() if p.name.endswith("-incomplete")]
    assert len(incomplete) == 1
    assert json.loads((incomplete[0] / "results.json").read_text())["run"]["complete"] is False
    assert os.readlink(reports / "latest") == runs[1].name
    assert not [p for p in reports.iterdir() if p.name.endswith(".partial")]


# ------------------------------------------------------------------ the command line prints valid JSON


def test_cli_train_names_its_data_and_prints_strict_json(tmp_path):
    write_idx_world(tmp_path / "data", n_train=300, n_test=100)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CNN_STRESS_CACHE": str(tmp_path / "cache")}
    recipe = tmp_path / "quick.toml"
    recipe.write_text('name = "quick"\nepochs = 1\n')
    out = subprocess.run([sys.executable, "-m", "harness", "train", "--dataset", "fashion-mnist", "--recipe-file",
                          str(recipe), "--data-root", str(tmp_path / "data"), "--profile", "smoke"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout, parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert result["data"] == str(tmp_path / "data") and result["data_fingerprint"]
    assert "trained in" in out.stderr
    bad = subprocess.run([sys.executable, "-m", "harness", "train", "--dataset", "fashion-mnist", "--data-root",
                          str(tmp_path / "nowhere"), "--no-download"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "does not hold fashion-mnist" in bad.stderr and "Traceback" not in bad.stderr


# ------------------------------------------------------------------ your own data and model: no silent wrong answer


def _npz(path, **arrays):
    rng = np.random.default_rng(0)
    base = {"x_train": rng.integers(0, 255, (12, 16, 16), dtype=np.uint8), "y_train": np.arange(12) % 3,
            "x_test": rng.integers(0, 255, (6, 16, 16), dtype=np.uint8), "y_test": np.arange(6) % 3}
    np.savez(path, **{**base, **arrays})
    return path


@pytest.mark.parametrize("arrays, message", [
    ({"y_train": np.arange(12) % 3 + 1, "y_test": np.arange(6) % 3 + 1},
     r"labels must be 0\.\.3 .* y_train has no label 0\. .*1-based labels: y - 1"),
    ({"y_train": np.where(np.arange(12) == 0, 7, np.arange(12) % 3)},
     r"labels must be 0\.\.7 .* y_train has no label 3, 4, 5, 6"),
    ({"classes": np.array(["a", "a", "b"])}, r"class name\(s\) 'a' given more than once"),
    ({"classes": np.array(["a", "b", "c", "d"])}, r"class\(es\) d have no training images"),
    ({"classes": np.array(["a", "b", "c"], dtype=object)}, r"classes is stored as an object array.*dtype=str"),
])
def test_npz_labels_and_class_names_are_checked(tmp_path, arrays, message):
    path = _npz(tmp_path / "mine.npz", **arrays)
    with pytest.raises(data.DatasetFormatError, match=message):
        custom_data.load(str(path))


def test_a_path_named_like_a_built_in_dataset_is_never_the_built_in_one(tmp_path):
    path = _npz(tmp_path / "fashion-mnist.npz")
    with pytest.raises(data.DatasetFormatError, match=r"your data is named 'fashion-mnist', the name of a built-in "
                                                      r"dataset.*Rename the file \(e\.g\. my-fashion-mnist\)"):
        custom_data.load(str(path))


def test_a_registered_path_that_does_not_exist_names_the_table(tmp_path):
    reg = tmp_path / "datasets.toml"
    reg.write_text('[parts]\npath = "gone/parts"\n')
    with pytest.raises(data.DatasetNotFoundError, match=r"datasets.toml \[parts\]: path = .*gone/parts' does not exist"):
        custom_data.load("parts", registry=reg)


NETS = '''
import torch
import torch.nn as nn


def wide(num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(256, num_classes + 2))


def single(num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(256, 1))


def broken(num_classes):
    raise RuntimeError("out of memory, or a typo")


def not_a_module(num_classes):
    return "a string"


class Nan(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.fc = nn.Linear(256, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1)) * float("nan")


def nan(num_classes):
    return Nan(num_classes)
'''


@pytest.fixture
def own_nets(tmp_path, monkeypatch):
    """NETS as an importable module of a name no other test uses, forgotten afterwards (another
    test's module of the same name must not be served from sys.modules)."""
    import sys

    name = "bad_input_nets"
    (tmp_path / f"{name}.py").write_text(NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(name, None)
    yield name
    sys.modules.pop(name, None)


@pytest.mark.parametrize("fn, message", [
    ("wide", r"returns \(2, 5\) for 2 images; it must return logits of shape \(2, 3\)"),
    ("single", r"returns \(2, 1\) for 2 images; it must return logits of shape \(2, 3\)"),
    ("broken", r"cannot be built for mine .*RuntimeError: out of memory, or a typo"),
    ("not_a_module", r"returned a str, not a torch.nn.Module"),
])
def test_a_model_of_ones_own_that_does_not_fit_is_refused_before_training(tmp_path, own_nets, fn, message):
    from harness.run import Options, Plan

    path = _npz(tmp_path / "mine.npz")
    opts = Options(dataset=str(path), profile="smoke", device="cpu", data_root=None, gates_path=ROOT / "gates.toml",
                   report_root=None, candidates=None, recipe_files=[], cache_dir=tmp_path / "cache", arch=f"{own_nets}:{fn}")
    with pytest.raises(ValueError, match=message):
        Plan(opts, gates=None).validate()
    assert not (tmp_path / "cache").exists()  # nothing was trained


def test_a_checkpoint_with_non_finite_outputs_is_refused(tmp_path, own_nets):
    import importlib

    import torch

    from harness.run import Options, Plan

    mynets = importlib.import_module(own_nets)
    torch.save(mynets.nan(3).state_dict(), tmp_path / "nan.pt")
    opts = Options(dataset=str(_npz(tmp_path / "mine.npz")), profile="smoke", device="cpu", data_root=None,
                   gates_path=ROOT / "gates.toml", report_root=None, candidates=None, recipe_files=[],
                   cache_dir=None, arch=f"{own_nets}:nan", weights=tmp_path / "nan.pt")
    with pytest.raises(ValueError, match=r"--weights .*nan\.pt gives non-finite outputs \(NaN or inf\) in eval mode"):
        Plan(opts, gates=None).validate()


def test_environment_faults_are_one_usage_error_naming_the_option(pytester, monkeypatch):
    _suite(pytester, monkeypatch)
    (pytester.path / "afile").write_text("x")
    args = ["stress_tests", "--baseline-only", "--gates", "g.toml", "-p", "no:cacheprovider"]
    result = pytester.runpytest_subprocess(*args, "--cache-dir", "afile", "--no-report")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--cache-dir afile is a file, not a folder" in result.stderr.str()
    if os.geteuid() != 0:  # root can write anywhere: the read-only folder is only a test for other users
        ro = pytester.path / "ro"
        ro.mkdir(mode=0o500)
        result = pytester.runpytest_subprocess(*args, "--report-dir", "ro/reports")
        assert result.ret == pytest.ExitCode.USAGE_ERROR and "--report-dir ro/reports cannot be written" in \
            result.stderr.str()
    result = pytester.runpytest_subprocess(*args, "--report-dir", "afile")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.str().count("--report-dir afile is a file, not a folder") == 1
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    for size in ("0", "100000"):  # 100000 ended in a raw allocator message
        result = pytester.runpytest_subprocess(*args, "--image-size", size, "--no-report")
        assert result.ret == pytest.ExitCode.USAGE_ERROR and "invalid image_size value" not in \
            result.stderr.str() and f"{size}: give a size from 8 to 1024 pixels a side" in result.stderr.str()


def _record(run: Path, **run_fields) -> Path:
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"run": {"id": run.name, "dataset": "fashion-mnist",
                                                          "gate_profile": "smoke", **run_fields},
                                                  "models": {}, "gates": []}))
    return run


def test_compare_refuses_runs_of_other_datasets_and_flags_incomplete_ones(tmp_path):
    from harness.report import ReportError, compare_runs

    a = _record(tmp_path / "a")
    b = _record(tmp_path / "b", dataset="cifar10")
    with pytest.raises(ValueError, match=r"A and B are runs of different datasets \(A: fashion-mnist, B: cifar10\)"):
        compare_runs(a, b)
    c = _record(tmp_path / "c-incomplete", complete=False)
    assert compare_runs(a, c).splitlines()[0].startswith("WARNING: B is an incomplete run")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "results.json").write_text(json.dumps({"run": [], "models": {}}))
    with pytest.raises(ReportError, match=r"not a run record of this harness \(missing or malformed: run \(dict\), "
                                          r"gates \(list\)\)"):
        compare_runs(a, tmp_path / "d")


def test_a_real_latest_folder_is_left_alone_and_said_so(tmp_path):
    from harness.report import folder

    (tmp_path / "latest").mkdir()
    partial = tmp_path / ".run1.partial"
    partial.mkdir()
    final, why = folder.finish(partial, complete=True)
    assert final == tmp_path / "run1" and (tmp_path / "latest").is_dir() and not (tmp_path / "latest").is_symlink()
    assert "is a real folder, not the link the harness keeps: it was left as it is" in why
