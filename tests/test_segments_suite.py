"""The weak-segment and shift gates can fail, through the stress suite on the synthetic world
(tests/planted.py): a model that fails only on dark images, and one that fails only on the
images of one source named by a metadata CSV, are found by the search and fail
``weak_segment_accuracy_ratio``; the good model passes; a darker batch of new images fails the
shift gate, one drawn like the training images passes it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from planted import CONFTEST, source_ids, world, write_idx_world

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["pytester"]

GATES = '''
[fashion-mnist.smoke.default]
weak_segment_accuracy_ratio_min = 0.7
new_images_shifted_properties_max = 0
split_shifted_properties_max = 0
'''
N_TEST = 400
SRC = r"\(segment_gates\.toml \[fashion-mnist\.smoke\.default\]\)"


def _suite(pytester, monkeypatch, *args):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    if not (pytester.path / "stress_tests").exists():
        shutil.copytree(ROOT / "stress_tests", pytester.path / "stress_tests",
                        ignore=shutil.ignore_patterns("__pycache__"))
        pytester.makeconftest(CONFTEST.format(tests=str(ROOT / "tests")))
        (pytester.path / "segment_gates.toml").write_text(GATES)
        write_idx_world(pytester.path / "data", n_test=N_TEST)
    result = pytester.runpytest_subprocess(
        "stress_tests", "-m", "segments", "--dataset", "fashion-mnist", "--profile", "smoke", "--data-root",
        str(pytester.path / "data"), "--gates", "segment_gates.toml", "--report-dir", str(pytester.path / "reports"),
        "--cache-dir", str(pytester.path / "cache"), "-p", "no:cacheprovider", "-rfs", "-vv", *args, timeout=300)
    out = result.stdout.str()
    failed = {m.group(1): m.group(2) for m in re.finditer(r"^FAILED stress_tests/\S+::(\S+) - (.*)$", out, re.M)}
    return result, out, failed


def test_dark_and_source_weaknesses_are_found_and_fail_the_gate(pytester, monkeypatch):
    meta = pytester.path / "meta.csv"
    source = set(source_ids(N_TEST).tolist())
    meta.write_text("id,source\n" + "".join(f"{i},{'b' if i in source else 'a'}\n" for i in range(N_TEST)))
    same = pytester.path / "same.npz"  # new images drawn like the training ones
    np.savez(same, x=world(n_train=10, n_test=600, seed=5)[2][:, None])
    for name in ("dark-blind", "source-blind"):
        (pytester.path / f"{name}.toml").write_text(f'name = "{name}"\nbase = "baseline"\n')
    result, out, failed = _suite(pytester, monkeypatch, "--baseline-only", "--recipe-file", "dark-blind.toml",
                                 "--recipe-file", "source-blind.toml", "--segment-metadata", str(meta),
                                 "--new-images", str(same))
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out
    for model in ("dark-blind", "source-blind"):
        test = f"test_worst_segment_accuracy[fashion-mnist-{model}]"
        assert test in failed, out
        assert re.search(r"weak_segment_accuracy_ratio=0(\.[0-3]\d*)? < min 0\.7 " + SRC, failed[test]), failed[test]
    assert not [t for t in failed if "-baseline" in t], out  # the good model and the same-kind batch pass
    assert "test_property_shift[fashion-mnist-baseline-new_images_shifted_properties]" not in failed
    record = json.loads((pytester.path / "reports" / "latest" / "results.json").read_text())
    worst = {m: record["models"][m]["segments"]["segments"][0]["name"] for m in ("dark-blind", "source-blind")}
    assert worst["dark-blind"].startswith("brightness q1 of 5"), worst
    assert worst["source-blind"] == "meta:source = b", worst
    seg = record["models"]["baseline"]["segments"]
    assert seg["searched"] >= 30 and seg["weak"] == 0  # single bins of 80 images; few pairs reach 50
    assert set(record["property_shift"]["splits"]) == {"test", "new"}
    html = (pytester.path / "reports" / "latest" / "index.html").read_text()
    assert "Weak segments" in html and "meta:source = b" in html and "shift from the training split" in html


def test_a_darker_batch_of_new_images_fails_the_shift_gate(pytester, monkeypatch):
    dark = pytester.path / "dark.npz"
    x = world(n_train=10, n_test=600, seed=6)[2]
    np.savez(dark, x=(x * 0.6).astype(np.uint8)[:, None])
    result, out, failed = _suite(pytester, monkeypatch, "--baseline-only", "--new-images", str(dark))
    test = "test_property_shift[fashion-mnist-baseline-new_images_shifted_properties]"
    assert test in failed, out
    assert re.search(r"new_images_shifted_properties=\d > max 0 " + SRC, failed[test]), failed[test]
    # the same cache, another batch: measured again, never served the dark batch's properties
    same = pytester.path / "same.npz"
    np.savez(same, x=world(n_train=10, n_test=600, seed=5)[2][:, None])
    result, out, failed = _suite(pytester, monkeypatch, "--baseline-only", "--new-images", str(same))
    assert test not in failed and re.search(re.escape(test) + r".* PASSED", out), out
    bad = pytester.path / "meta.csv"
    bad.write_text("id,source\n0,a\n")
    result, out, _ = _suite(pytester, monkeypatch, "--baseline-only", "--segment-metadata", str(bad))
    said = out + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, said  # before anything is trained or measured
    assert len(re.findall(r"meta\.csv: 399 of 400 test images have no row \(the first: id 1\)", said)) == 1, said
