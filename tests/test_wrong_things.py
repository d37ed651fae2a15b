"""No confident number about the wrong thing: inputs that used to give a silently wrong result
(float images read as black, chance taken as 1/K on unbalanced data, probabilities taken for
logits, a bound that can never fail or pass, another model's evidence, two different datasets
compared as one) and faults that misled (a lost report exiting 0, an error repeated in every
test) each give a correct number or one clear error, at the earliest point it is knowable."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from planted import write_idx_world

from harness import custom_data
from harness.data import DatasetFormatError

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["pytester"]


def _folder(root: Path, images: dict[str, list[np.ndarray]], mode: str | None = None) -> Path:
    """An ImageFolder tree: train/<class>/ and test/<class>/ with the given arrays, as TIFF."""
    from PIL import Image

    for split in ("train", "test"):
        for cls, arrays in images.items():
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i, a in enumerate(arrays):
                Image.fromarray(a, mode=mode).save(d / f"{i}.tiff")
    return root


def test_float_tiffs_in_0_1_are_read_as_their_pixels_not_as_black(tmp_path):
    rng = np.random.default_rng(0)
    imgs = {c: [rng.random((8, 8)).astype(np.float32) for _ in range(12)] for c in ("a", "b")}
    ds = custom_data.load(str(_folder(tmp_path / "parts", imgs, "F")))
    first = np.asarray(ds.test_x[0, 0], dtype=np.float64)
    assert first.max() > 200 and first.std() > 30  # was all zeros: floats cast to integers
    from PIL import Image

    expected = (np.asarray(Image.open(tmp_path / "parts" / "test" / "a" / "0.tiff"), dtype=np.float64) * 255).round()
    assert np.array_equal(first, expected)


def test_float_tiffs_in_0_255_are_scaled_by_their_folder_not_image_by_image(tmp_path):
    """A dark image of a [0, 255] folder (its maximum below 1) is not scaled by 255 as if it
    were in [0, 1]: the folder's range decides one scale for all."""
    rng = np.random.default_rng(2)
    imgs = {c: [(rng.random((8, 8)) * 255).astype(np.float32) for _ in range(12)] for c in ("a", "b")}
    imgs["a"][0] = np.full((8, 8), 0.5, np.float32)  # a near-black frame of the same folder
    ds = custom_data.load(str(_folder(tmp_path / "bytes", imgs, "F")))
    pos = list(ds.test_names).index("test/a/0.tiff")
    assert int(np.asarray(ds.test_x[pos]).max()) <= 1  # kept at its level, not 0.5 * 255
    assert int(np.asarray(ds.test_x).max()) > 200


def test_float_images_of_another_range_and_blank_images_are_refused(tmp_path):
    rng = np.random.default_rng(1)
    wide = {c: [(rng.random((8, 8)) * 1000).astype(np.float32) for _ in range(4)] for c in ("a", "b")}
    with pytest.raises(DatasetFormatError, match=r"float images with values from \d.* to 9\d\d\.?\d* \(\S+\.tiff leaves "
                                                  r"0-255\): the harness reads float images in \[0, 1\] or in \[0, 255\]"):
        custom_data.load(str(_folder(tmp_path / "wide", wide, "F")))
    x = np.zeros((12, 8, 8), np.uint8)
    np.savez(tmp_path / "black.npz", x_train=x, y_train=np.arange(12) % 2, x_test=x[:6], y_test=np.arange(6) % 2)
    with pytest.raises(DatasetFormatError, match=r"12 of 12 train images hold one value throughout \(blank\)"):
        custom_data.load(str(tmp_path / "black.npz"))


def _png16(root: Path, images: dict[str, list[np.ndarray]]) -> Path:
    from PIL import Image

    for split in ("train", "test"):
        for cls, arrays in images.items():
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i, a in enumerate(arrays):
                Image.fromarray(a.astype(np.uint16)).save(d / f"{i}.png")  # 16-bit greyscale PNG ("I;16")
    return root


def test_16_bit_images_are_read_by_their_folders_range(tmp_path):
    """16-bit PNGs holding 8-bit values keep them (they were divided by 65535: every pixel 0 or 1,
    and accuracy 1.0); true 16-bit images are scaled by 255 / 65535."""
    rng = np.random.default_rng(3)
    eight = {c: [rng.integers(0, 256, (8, 8)) for _ in range(12)] for c in ("a", "b")}
    ds = custom_data.load(str(_png16(tmp_path / "eight", eight)))
    pos = list(ds.test_names).index("test/a/0.png")
    assert np.array_equal(np.asarray(ds.test_x[pos, 0]), eight["a"][0])
    sixteen = {c: [rng.integers(0, 65536, (8, 8)) for _ in range(12)] for c in ("a", "b")}
    ds = custom_data.load(str(_png16(tmp_path / "sixteen", sixteen)))
    pos = list(ds.test_names).index("test/a/0.png")
    assert np.array_equal(np.asarray(ds.test_x[pos, 0]), (sixteen["a"][0] * 255 / 65535).round())


def test_32_bit_integers_past_16_bits_and_a_float_folder_of_two_ranges_are_refused(tmp_path):
    """A 32-bit TIFF above 65535 wrapped around modulo 256; one pixel at 1.5 among floats in
    [0, 1] switched the whole folder to the 0-255 reading: both are refused, naming the file."""
    rng = np.random.default_rng(4)
    wide = {c: [rng.integers(0, 200_000, (8, 8)).astype(np.int32) for _ in range(6)] for c in ("a", "b")}
    with pytest.raises(DatasetFormatError, match=r"integer images with values from \d+ to \d{6} \(\S+\.tiff leaves "
                                                  r"0-65535\)"):
        custom_data.load(str(_folder(tmp_path / "wide", wide, "I")))
    unit = {c: [rng.random((8, 8)).astype(np.float32) for _ in range(12)] for c in ("a", "b")}
    unit["b"][3] = unit["b"][3].copy()
    unit["b"][3][0, 0] = 1.5
    with pytest.raises(DatasetFormatError, match=r"46 of 48 float images lie in 0-1 but 2 go past it: \S+3\.tiff "
                                                  r"\(max 1\.5\)"):
        custom_data.load(str(_folder(tmp_path / "mixed", unit, "F")))


@pytest.mark.parametrize("x, hint", [
    (np.random.default_rng(0).random((12, 8, 8)), r"they lie in \[0\.\d+, 1\]: convert with \(x \* 255\)\.round"),
    (np.random.default_rng(0).random((12, 8, 8)) * 255, r"they lie in \[[\d.]+, 2\d\d\.?\d*\]: convert with "
                                                        r"x\.round\(\)\.astype\(np\.uint8\) \(no scaling\)"),
    (np.random.default_rng(0).random((12, 8, 8)) * 4000, r"they lie in \[[\d.]+, \d+\], outside 0-255: rescale to 0-255 first"),
])
def test_a_float_npz_gets_the_conversion_its_range_needs(tmp_path, x, hint):
    np.savez(tmp_path / "f.npz", x_train=x, y_train=np.arange(12) % 2, x_test=x[:6], y_test=np.arange(6) % 2)
    with pytest.raises(DatasetFormatError, match=r"x_train is float64; images must be uint8 \(0-255\): " + hint):
        custom_data.load(str(tmp_path / "f.npz"))


def test_a_text_file_named_npz_is_not_called_pickled_data(tmp_path):
    (tmp_path / "notes.npz").write_text("not data\n")
    with pytest.raises(DatasetFormatError, match=r"not a \.npz file \(a \.npz is a zip archive; this file starts with "
                                                 r"b'not '\): write it with np\.savez"):
        custom_data.load(str(tmp_path / "notes.npz"))


def _plan(tmp_path, **kw):
    from harness.run import Options, Plan

    rng = np.random.default_rng(0)
    n = kw.pop("n_train", 12)
    np.savez(tmp_path / "mine.npz", x_train=rng.integers(0, 255, (n, 16, 16), dtype=np.uint8),
             y_train=np.arange(n) % 2, x_test=rng.integers(0, 255, (8, 16, 16), dtype=np.uint8), y_test=np.arange(8) % 2)
    opts = Options(dataset=str(tmp_path / "mine.npz"), profile="smoke", device="cpu", data_root=None,
                   gates_path=ROOT / "gates.toml", report_root=None, candidates=None, recipe_files=[],
                   cache_dir=tmp_path / "cache", **kw)
    return Plan(opts, gates=None)


NETS = '''
import torch
from torch import nn


def softmaxed(num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(256, num_classes), nn.Softmax(dim=1))


def log_softmaxed(num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(256, num_classes), nn.LogSoftmax(dim=1))


class _Nan(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.fc = nn.Linear(256, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1)).log() * 0 + torch.log(torch.zeros(1)) * 0  # log(0) * 0: NaN


def nan_builder(num_classes):
    return _Nan(num_classes)
'''


def test_a_model_that_returns_probabilities_is_refused_before_training(tmp_path, monkeypatch):
    (tmp_path / "wrong_nets.py").write_text(NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("wrong_nets", None)
    with pytest.raises(ValueError, match=r"returns probabilities \(every output in \[0, 1\], each row summing to 1\), "
                                         r"not logits: .* Remove the final softmax \(a log-softmax is fine\)"):
        _plan(tmp_path, arch="wrong_nets:softmaxed", n_train=200).validate()
    _plan(tmp_path, arch="wrong_nets:log_softmaxed", n_train=200).validate()  # log-probabilities are logits
    assert not (tmp_path / "cache").exists()
    sys.modules.pop("wrong_nets", None)


def test_a_model_of_ones_own_that_gives_nan_is_refused_before_training(tmp_path, monkeypatch):
    (tmp_path / "wrong_nets.py").write_text(NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("wrong_nets", None)
    with pytest.raises(ValueError, match=r"the architecture \S*wrong_nets:nan_builder gives non-finite outputs \(NaN or "
                                         r"inf\) in eval mode on the first training images: freshly built, before "
                                         r"any training: look at its forward\(\)"):
        _plan(tmp_path, arch="wrong_nets:nan_builder", n_train=200).validate()
    assert not (tmp_path / "cache").exists()
    sys.modules.pop("wrong_nets", None)


def test_a_validation_split_no_model_can_pass_is_one_error_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"the validation split holds 1 image; training keeps a model only if its "
                                         r"validation accuracy is 3 standard errors above chance \(50% for 2 classes\), "
                                         r"which no model can show on fewer than 10"):
        _plan(tmp_path, n_train=12).validate()
    _plan(tmp_path, n_train=200).validate()  # 20 validation images: a model can pass


def test_a_missing_own_ood_set_is_one_error_before_training(tmp_path):
    with pytest.raises(DatasetFormatError, match=r"--ood .*nowhere: no such file or folder"):
        _plan(tmp_path, n_train=200, ood=str(tmp_path / "nowhere")).validate()


@pytest.mark.parametrize("body, message", [
    ("accuracy_above_chance_min = -3", r"accuracy_above_chance_min = -3 can never fail: accuracy_above_chance takes "
                                       r"values in \[-1, 1\]"),
    ("accuracy_above_chance_min = 1.5", r"= 1\.5 can never pass: accuracy_above_chance takes values in \[-1, 1\], so "
                                        r"every model is below it"),
    ("ece_max = -0.1", r"ece_max = -0\.1 can never pass: ece takes values in \[0, 1\], so every model is above it"),
])
def test_a_bound_that_can_never_fail_or_pass_is_refused(tmp_path, body, message):
    from harness.gates import GateFileError, Gates

    (tmp_path / "g.toml").write_text(f"[fashion-mnist.smoke.default]\n{body}\n")
    with pytest.raises(GateFileError, match=message):
        Gates.load(tmp_path / "g.toml")


def test_expected_failures_at_the_top_level_say_where_they_belong(tmp_path):
    from harness.gates import GateFileError, Gates

    (tmp_path / "g.toml").write_text('[expected_failures]\naccuracy_min = "too short"\n')
    with pytest.raises(GateFileError, match=r"\[expected_failures\] at the top level: it belongs inside a model's table"):
        Gates.load(tmp_path / "g.toml")


def test_an_evidence_file_copied_over_another_entry_is_not_served(tmp_path):
    from harness.evidence import EvidenceCache

    cache = EvidenceCache(tmp_path)
    cache.write("robustness-aaa", {"x": np.arange(3.0)})
    cache.write("robustness-bbb", {"x": np.arange(3.0) + 10})
    shutil.copy(tmp_path / "robustness-aaa.npz", tmp_path / "robustness-bbb.npz")
    with pytest.warns(RuntimeWarning, match=r"holds the evidence of another entry \(robustness-aaa\), not "
                                            r"robustness-bbb"):
        assert cache.read("robustness-bbb") is None
    assert cache.read("robustness-aaa")[0]["x"].tolist() == [0, 1, 2]


def test_an_evidence_file_without_a_key_is_measured_again(tmp_path):
    """A file written before entries recorded their key cannot prove whose evidence it is: copied
    over another entry it would be served, so it is never served."""
    import io
    import json as _json

    from harness.evidence import EvidenceCache, _checksum, pack

    arrays, spec = pack({"x": np.arange(3.0)})
    head = {"spec": spec, "meta": {}, "checksum": _checksum(arrays, _json.dumps(spec, sort_keys=True))}
    buf = io.BytesIO()
    np.savez(buf, __spec__=np.asarray(_json.dumps(head)), **arrays)
    (tmp_path / "robustness-bbb.npz").write_bytes(buf.getvalue())
    with pytest.warns(RuntimeWarning, match=r"records no key \(written before entries recorded theirs\)"):
        assert EvidenceCache(tmp_path).read("robustness-bbb") is None


def _record(path: Path, classes, fingerprint="fp1", **run_fields) -> Path:
    path.mkdir(parents=True)
    run = {"id": path.name, "dataset": "parts", "gate_profile": "smoke", "data": {"fingerprint": fingerprint},
           **run_fields}
    (path / "results.json").write_text(json.dumps({"run": run, "classes": classes, "models": {}, "gates": []}))
    return path


def test_compare_refuses_other_classes_and_says_loudly_when_the_data_differ(tmp_path):
    from harness.report import compare_runs

    a = _record(tmp_path / "a", ["x", "y", "z"])
    with pytest.raises(ValueError, match=r"A and B have different classes \(A: x, y, z; B: x, y\)"):
        compare_runs(a, _record(tmp_path / "b", ["x", "y"]))
    out = compare_runs(a, _record(tmp_path / "c", ["x", "y", "z"], fingerprint="fp2"))
    assert "WARNING: A and B were measured on different data (fingerprints fp1 and fp2)" in out
    d = _record(tmp_path / "d", ["x", "y", "z"], regime={"device": "cpu", "precision": "bf16"})
    assert "WARNING: A and B computed in different regimes" in compare_runs(a, d)


def test_a_record_with_a_model_missing_its_metrics_is_not_rebuilt_as_a_pass(tmp_path):
    from harness.report import ReportError
    from harness.report.io import load_results

    run = tmp_path / "run"
    run.mkdir()
    rec = {"run": {"id": "r"}, "models": {"baseline": {"recipe": {}}},
           "gates": [{"model": "baseline", "metric": "accuracy", "status": "passed"}]}
    (run / "results.json").write_text(json.dumps(rec))
    with pytest.raises(ReportError, match=r"model\(s\) baseline have no metrics in it although the run measured them"):
        load_results(run)


def test_an_empty_partial_folder_of_a_killed_run_is_removed_by_the_next(tmp_path):
    from harness.report import folder

    killed = tmp_path / ".20260101T000000.000Z_x_smoke_aaaaaa.partial"
    killed.mkdir()
    working = tmp_path / ".20260101T000001.000Z_x_smoke_bbbbbb.partial"
    (working / "figures").mkdir(parents=True)
    folder.partial_folder(tmp_path, "x", "smoke")
    assert not killed.exists() and working.exists()


def test_seeds_and_contradicting_options_are_refused_naming_the_option():
    import argparse

    from harness.run.options import parse_seed

    with pytest.raises(argparse.ArgumentTypeError, match=r"99999999999999999999999: give a seed from 0 to 4294967295"):
        parse_seed("99999999999999999999999")
    assert parse_seed("4294967295") == 2**32 - 1


@pytest.mark.parametrize("args, message", [
    (["calibrate", "--seeds", "abc"], r"argument --seeds: 'abc': it is a whole number"),
    (["calibrate", "--thread-counts", "1,abc"], r"argument --thread-counts: "),
    (["calibrate", "--false-alarm-budget", "1.5"], r"argument --false-alarm-budget: "),
    (["audit", "--seeds", "abc"], r"argument --seeds: 'abc': it is a whole number"),
    (["audit", "--first-seed", "99999999999999999999999"], r"argument --first-seed: .*give a seed from 0 to 4294967295"),
])
def test_bad_numbers_for_calibrate_and_audit_name_their_option(args, message):
    proc = subprocess.run([sys.executable, "-m", "harness", *args, "--dataset", "fashion-mnist"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert re.search(message, proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr and "invalid literal" not in proc.stderr


def test_baseline_only_and_a_candidate_contradict_each_other(pytester, monkeypatch):
    args = _world(pytester)
    result = pytester.runpytest_subprocess(*args, "--baseline-only", "--candidate", "label-smoothing", timeout=300)
    assert result.ret != 0
    out = result.stdout.str() + result.stderr.str()
    assert out.count("--baseline-only and --candidate label-smoothing contradict each other: give one") == 1, out
    assert not (pytester.path / "cache").exists()  # refused before any training


def test_a_recipe_file_with_a_seed_out_of_range_is_refused(tmp_path):
    from harness import recipes

    (tmp_path / "big.toml").write_text('name = "big"\nbase = "baseline"\nseed = 99999999999999999999999\n')
    with pytest.raises(ValueError, match=r"seed=99999999999999999999999 \(a seed from 0 to 4294967295\)"):
        recipes.from_file(tmp_path / "big.toml", "fashion-mnist", "smoke")


CONFTEST = '''
import sys
sys.path.insert(0, {tests!r})
pytest_plugins = ["fixtures.plugin"]
import planted, torch


class Nan(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x) * float("nan")


def pytest_stress_model(recipe, data, device):
    good = planted.planted("baseline", data)
    return Nan(good) if recipe.name == "nan" else good
{extra}
'''


def _world(pytester, extra: str = ""):
    os.environ["PYTHONPATH"] = str(ROOT)
    shutil.copytree(ROOT / "stress_tests", pytester.path / "stress_tests", ignore=shutil.ignore_patterns("__pycache__"))
    pytester.makeconftest(CONFTEST.format(tests=str(ROOT / "tests"), extra=extra))
    (pytester.path / "g.toml").write_text("[fashion-mnist.smoke.default]\naccuracy_min = 0.5\nece_max = 0.5\n"
                                          "loss_max = 5\n")
    write_idx_world(pytester.path / "data", n_train=400, n_test=200)
    return ["stress_tests/test_accuracy.py", "stress_tests/test_calibration.py", "--dataset", "fashion-mnist",
            "--data-root", str(pytester.path / "data"), "--gates", "g.toml", "--report-dir",
            str(pytester.path / "reports"), "--cache-dir", str(pytester.path / "cache"), "-p", "no:cacheprovider",
            "-rfs"]


def test_a_report_that_cannot_be_written_fails_the_run(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    args = _world(pytester, extra=("import harness.report\n\n\ndef _full(*a, **k):\n    raise OSError(28, "
                                   "'No space left on device')\n\n\nharness.report.write_run = _full\n"))
    result = pytester.runpytest_subprocess(*args, "--baseline-only", timeout=600)
    out = result.stdout.str()
    assert result.parseoutcomes().get("failed", 0) == 0, out  # every gate passed ...
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out  # ... yet the run fails: its report is lost
    assert "REPORT NOT WRITTEN (OSError: [Errno 28] No space left on device)" in out
    assert "Traceback" not in result.stderr.str()  # one line says it all: no trace of the harness's own code


def test_a_diverged_model_is_one_failure_and_its_other_tests_point_there(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    args = _world(pytester)
    (pytester.path / "nan.toml").write_text('name = "nan"\nbase = "baseline"\n')
    result = pytester.runpytest_subprocess(*args, "--baseline-only", "--recipe-file", "nan.toml", timeout=600)
    out = result.stdout.str()
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed") == 1, out  # the first test of the diverged model says why ...
    said = [line for line in out.splitlines() if "nan DIVERGED: nan gives non-finite outputs" in line
            and not line.startswith("FAILED ")]  # pytest's short summary repeats it where the terminal is wide
    assert len(said) == 1, out
    assert "During handling of the above exception" not in out, out
    assert "nan diverged (why: the failure of " in out  # ... the others point there


class _DropoutAtEval(__import__("torch").nn.Module):
    def __init__(self):
        import torch

        super().__init__()
        self.fc = torch.nn.Linear(784, 10)

    def forward(self, x):
        import torch.nn.functional as F

        return self.fc(F.dropout(x.flatten(1), 0.5, training=True))  # the deployment bug: always on


class _BatchStats(__import__("torch").nn.Module):
    def __init__(self):
        import torch

        super().__init__()
        self.fc = torch.nn.Linear(784, 10)
        self.bn = torch.nn.BatchNorm1d(10, track_running_stats=False)  # batch statistics in eval mode too

    def forward(self, x):
        return self.bn(self.fc(x.flatten(1)))


def test_a_model_that_is_random_or_batch_dependent_at_evaluation_is_refused(tmp_path):
    """Dropout applied at evaluation (outputs differ on every call) and BatchNorm on batch
    statistics (outputs depend on the batch) passed: both are refused before training."""
    import torch

    from harness.data import load
    from harness.run.plan import probe

    write_idx_world(tmp_path / "data", n_train=60, n_test=20)
    ds = load("fashion-mnist", str(tmp_path / "data"))
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="other outputs for the same images on a second pass in eval mode"):
        probe(_DropoutAtEval(), ds, "--model m:dropout")
    with pytest.raises(ValueError, match="fails on one image alone in eval mode .*BatchNorm using the batch's statistics"):
        probe(_BatchStats(), ds, "--model m:bn")
    probe(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)), ds, "--model m:fine")  # passes


def test_a_test_split_copied_from_the_training_split_is_refused(tmp_path):
    """A test split that is the training split again passed (leakage_share = 1, unbounded): refused
    before training; a few shared images (as real datasets have) are the leakage family's."""
    from harness.run.plan import check_held_out

    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (40, 8, 8), dtype=np.uint8)
    y = np.arange(40) % 2
    np.savez(tmp_path / "copy.npz", x_train=x, y_train=y, x_test=x[:20], y_test=y[:20])
    with pytest.raises(ValueError, match="20 of 20 test images are byte-for-byte copies of training images"):
        check_held_out(custom_data.load(str(tmp_path / "copy.npz")))
    other = rng.integers(0, 256, (20, 8, 8), dtype=np.uint8)
    other[:3] = x[:3]  # a few duplicates: measured by the leakage family, not refused
    np.savez(tmp_path / "some.npz", x_train=x, y_train=y, x_test=other, y_test=y[:20])
    check_held_out(custom_data.load(str(tmp_path / "some.npz")))


def test_metadata_rows_twice_for_an_image_padded_ids_and_binary_files_are_clear_errors(tmp_path):
    """Duplicate ids were accepted (the last row won); zero-padded ids ended in an INTERNALERROR; a
    binary file gave a raw decoder message naming no option."""
    from harness.segments import MetadataError, read_metadata

    csv = tmp_path / "m.csv"
    csv.write_text("id,source\n" + "".join(f"{i},a\n" for i in range(4)) + "2,b\n")
    with pytest.raises(MetadataError, match="rows 4 and 6 both describe test image id 2: give each image one row"):
        read_metadata(csv, None, 4)
    csv.write_text("id,source\n000,a\n001,b\n002,a\n003,b\n")  # zero-padded: the same positions
    assert list(read_metadata(csv, None, 4)["source"]) == ["a", "b", "a", "b"]
    csv.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(MetadataError, match=r"--segment-metadata .*m\.csv: not a CSV text file"):
        read_metadata(csv, None, 4)


def test_an_own_ood_set_that_is_the_test_split_or_too_small_is_refused(tmp_path):
    """--ood pointing at the test images themselves passed (AUROC 0.5 >= 0.5), and a one-image set
    was gated: the set is screened like the built-in ones, and needs 50 images."""
    from harness import ood

    rng = np.random.default_rng(0)
    test = rng.integers(0, 255, (8, 16, 16), dtype=np.uint8)
    np.savez(tmp_path / "one.npz", x=test[:1])
    with pytest.raises(ValueError, match=r"--ood .*one\.npz: 1 image\(s\); .* give at least 50 images"):
        _plan(tmp_path, n_train=200, ood=str(tmp_path / "one.npz")).validate()
    plan = _plan(tmp_path, n_train=200)
    same = np.repeat(plan.data.test_x.numpy()[:, 0], 8, axis=0)  # the test split itself, repeated to 64 images
    np.savez(tmp_path / "same.npz", x=same)
    with pytest.raises(ValueError, match=r"--ood .*same\.npz: not out of distribution for mine: .*near-duplicates"):
        _plan(tmp_path, n_train=200, ood=str(tmp_path / "same.npz")).validate()
    noise = np.full((60, 16, 16), 0, np.uint8)
    noise[:, ::2] = 255  # stripes: nothing like the test images
    np.savez(tmp_path / "stripes.npz", x=noise)
    _plan(tmp_path, n_train=200, ood=str(tmp_path / "stripes.npz")).validate()
    assert ood.MIN_OWN_IMAGES == 50
