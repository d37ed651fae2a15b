"""Deployed forms (harness/deploy.py): the ONNX export reproduces the model, static int8 is
calibrated on training images, a planted bad quantization changes predictions far more than a
sound one, an export that changes the model stops with a message, and the cached files are
checked by their checksums."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
from harness import deploy  # noqa: E402
from harness.models import SmallCNN  # noqa: E402


def _trained(seed: int = 0):
    """A small CNN fitted for a few steps on images whose class is their brightest quadrant."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(512, 1, 16, 16, generator=g) * 0.3
    y = torch.randint(0, 4, (512,), generator=g)
    for i, c in enumerate(y.tolist()):
        r, col = divmod(c, 2)
        x[i, 0, r * 8:(r + 1) * 8, col * 8:(col + 1) * 8] += 0.6
    torch.manual_seed(seed)
    m = SmallCNN(num_classes=4, in_channels=1, image_size=(16, 16))
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    m.train()
    for step in range(30):
        b = slice((step * 64) % 512, (step * 64) % 512 + 64)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(m(x[b]), y[b]).backward()
        opt.step()
    return m.eval(), (x.clamp(0, 1) * 255).to(torch.uint8), y


@pytest.fixture(scope="module")
def world():
    return _trained()


def test_forms_are_named_and_parsed():
    assert deploy.split_form("baseline@int8") == ("baseline", "int8")
    assert deploy.split_form("augment@s43@onnx") == ("augment@s43", "onnx")
    assert deploy.split_form("augment@s43") == ("augment@s43", None)
    assert deploy.split_form("my@model") == ("my@model", None)
    assert deploy.parse_forms("onnx, INT8,onnx") == ("onnx", "int8")
    with pytest.raises(ValueError, match="unknown deployed form fp8: give one or more of onnx, int8"):
        deploy.parse_forms("onnx,fp8")


def test_onnx_export_reproduces_the_model(world, tmp_path):
    m, x, _ = world
    batch = x[:32].float() / 255
    f = deploy.build(m, "onnx", tmp_path, "m", batch, x)
    assert f.path.exists() and f.sha256 == deploy.sha256_of(f.path) and f.bytes == f.path.stat().st_size
    assert f.check_max_diff < 1e-4
    ort = deploy.OrtModule(f.path)
    with torch.no_grad():
        want = m(x.float() / 255)
    got = ort(x.float() / 255)
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-4)
    assert not any(p.requires_grad for p in ort.parameters())  # nothing to attack by gradient


def test_static_int8_is_close_and_blank_calibration_is_not(world, tmp_path):
    m, x, y = world
    batch = x[:64].float() / 255
    good = deploy.build(m, "int8", tmp_path, "m", batch, x, n_calibration=256)
    assert good.calibration_images == 256 and good.calibration_seed == deploy.CALIBRATION_SEED
    assert (tmp_path / "m.onnx.onnx").exists()  # quantized from the checked fp32 export
    assert good.bytes < 0.5 * (tmp_path / "m.onnx.onnx").stat().st_size  # int8 weights: a quarter, plus scales
    xs = x.float() / 255
    with torch.no_grad():
        ref = m(xs)

    def change(form):
        out = deploy.OrtModule(form.path)(xs)
        return float((out - ref).abs().mean()), float((out.argmax(1) != ref.argmax(1)).float().mean())

    blank = deploy.build(m, "int8", tmp_path / "blank", "m", batch, x,
                         calibration=np.zeros((256, 1, 16, 16), np.float32))
    assert blank.calibration_seed is None
    (diff, flips), (bad_diff, _) = change(good), change(blank)
    assert flips < 0.05
    # activation ranges from blank images clip every real activation: logits move 50x more (measured 0.17 vs 27)
    assert bad_diff > 20 * diff and blank.check_max_diff > 20 * good.check_max_diff, (diff, bad_diff)


def test_calibration_images_are_training_images_chosen_by_seed(world):
    _, x, _ = world
    a = deploy.calibration_images(x, 100)
    b = deploy.calibration_images(x, 100)
    assert a.shape == (100, 1, 16, 16) and a.dtype == np.float32 and np.array_equal(a, b)
    assert 0 <= a.min() and a.max() <= 1
    assert not np.array_equal(a, deploy.calibration_images(x, 100, seed=1))


def test_an_export_that_changes_the_model_stops_with_a_message(world):
    m, x, _ = world
    batch = x[:16].float() / 255

    def shifted(z):
        return m(z) + 0.5

    with pytest.raises(deploy.ExportMismatch, match=r"the ONNX export \(m.onnx\) changes the model beyond numerical "
                                                    r"tolerance: its logits differ .* by up to 0.5"):
        deploy.check(m, shifted, batch, "the ONNX export (m.onnx)")


def test_cached_forms_are_read_by_checksum_and_rebuilt_when_damaged(world, tmp_path):
    m, x, _ = world
    batch = x[:16].float() / 255
    first = deploy.build(m, "onnx", tmp_path, "m", batch, x)
    stamp = first.path.stat().st_mtime_ns
    again = deploy.build(m, "onnx", tmp_path, "m", batch, x)
    assert again == first and first.path.stat().st_mtime_ns == stamp  # read, not rewritten
    first.path.write_bytes(first.path.read_bytes()[:-10])  # damaged on disk
    rebuilt = deploy.build(m, "onnx", tmp_path, "m", batch, x)
    assert rebuilt.sha256 == deploy.sha256_of(rebuilt.path) == json.loads(
        rebuilt.path.with_suffix(".json").read_text())["sha256"]
    assert deploy.OrtModule(rebuilt.path)(batch).shape == (16, 4)
    assert not list(tmp_path.glob("*.tmp"))  # atomic: no half-written file left


def test_missing_runtime_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(deploy, "_missing", lambda name: name == "onnxruntime")
    with pytest.raises(deploy.DeployError, match=r"deployed forms need onnxruntime: pip install -e '\.\[deploy\]'"):
        deploy.require()


def test_cpu_isa_is_named():
    assert deploy.cpu_isa() in ("avx512-vnni", "avx-vnni", "avx512", "avx2") or deploy.cpu_isa()


# ---------------------------------------------------------------------------- a user's own ONNX file
class _Reader(torch.nn.Module):
    """Class k: the brightest of k horizontal bands (a model that is right on its own data)."""

    def __init__(self, scale: float = 1.0, bgr: bool = False, channels_last: bool = False):
        super().__init__()
        self.scale, self.bgr, self.channels_last = scale, bgr, channels_last

    def forward(self, x):
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)
        if self.bgr:
            x = x.flip(1)
        x = x / self.scale
        bands = torch.stack([x[:, 0, 4 * k:4 * k + 4].mean((1, 2)) for k in range(4)], 1)
        return 20 * torch.relu(bands - 0.45)  # a threshold: fed values on another scale, every logit is 0


def _colour_data(n: int = 256):
    from types import SimpleNamespace

    g = torch.Generator().manual_seed(3)
    y = torch.randint(0, 4, (n,), generator=g)
    x = torch.rand(n, 3, 16, 16, generator=g) * 0.2
    for i, k in enumerate(y.tolist()):
        x[i, 0, 4 * k:4 * k + 4] += 0.7
    x[:, 2] = 1.0 - x[:, 0]  # the blue channel is the red one's negative: a BGR model reads the wrong bands
    return SimpleNamespace(name="own", image_shape=(3, 16, 16), num_classes=4, train_x=(x * 255).to(torch.uint8),
                           train_y=y, classes=["a", "b", "c", "d"])


def _export(module, shape, path, dynamic=True):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.rand(1, *shape),), str(path), input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}} if dynamic else None, opset_version=17, dynamo=False)
    return path


def test_an_onnx_file_that_fits_the_data_loads(tmp_path):
    ds = _colour_data()
    model = deploy.load_artifact(_export(_Reader(), (3, 16, 16), tmp_path / "m.onnx"), ds)
    x = ds.train_x.float() / 255
    assert float((model(x).argmax(1) == ds.train_y).float().mean()) > 0.95


@pytest.mark.parametrize("module, shape, message", [
    (_Reader(scale=255.0), (3, 16, 16), r"expects pixel values 0-255 \(the harness feeds \[0, 1\]: divide by 255 inside "
                                        r"the model\): on 256 training images it is right on \d+% of them given that"),
    (_Reader(bgr=True), (3, 16, 16), r"expects BGR channel order \(the harness feeds RGB"),
    (_Reader(channels_last=True), (16, 16, 3), r"takes channels last .*the harness feeds channels first \(N x 3 x 16 x 16\)"),
    (torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 7)), (3, 16, 16),
     r"returns \(2, 7\) for 2 images; it must return \(2, 4\): one logit per class of own"),
    (_Reader(), (3, 20, 20), r"takes images of height 20 .*own images are 3 x 16 x 16"),
])
def test_an_onnx_file_that_does_not_fit_is_one_clear_error(tmp_path, module, shape, message):
    path = _export(module, shape, tmp_path / "m.onnx")
    with pytest.raises(ValueError, match=message):
        deploy.load_artifact(path, _colour_data())


def test_a_file_that_is_not_onnx_or_takes_a_fixed_batch_says_so(tmp_path):
    ds = _colour_data()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="onnxruntime cannot load it as an ONNX model"):
        deploy.load_artifact(bad, ds)
    with pytest.raises(ValueError, match="no such file"):
        deploy.load_artifact(tmp_path / "missing.onnx", ds)
    fixed = _export(_Reader(), (3, 16, 16), tmp_path / "fixed.onnx", dynamic=False)
    with pytest.raises(ValueError, match="fails on a batch of 2 images .* export it with a dynamic batch axis"):
        deploy.load_artifact(fixed, ds)


def test_the_suite_stresses_an_onnx_file_as_it_is(pytester, monkeypatch):
    """``--model good.onnx``: the user's ONNX file is the baseline, run by onnxruntime; the
    families that differentiate the model skip, saying why; the report is written."""
    import shutil
    import sys
    import warnings
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root / "tests"))
    import planted

    monkeypatch.setenv("PYTHONPATH", str(root))
    planted.write_idx_world(pytester.path / "data", n_train=2000, n_test=400)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(planted.RegionReader(), (torch.rand(1, 1, 28, 28),), str(pytester.path / "good.onnx"),
                          input_names=["images"], output_names=["logits"], dynamic_axes={"images": {0: "b"}},
                          opset_version=17, dynamo=False)
    shutil.copytree(root / "stress_tests", pytester.path / "stress_tests", ignore=shutil.ignore_patterns("__pycache__"))
    pytester.makeconftest('pytest_plugins = ["fixtures.plugin"]\n')
    (pytester.path / "g.toml").write_text("[fashion-mnist.smoke.default]\naccuracy_min = 0.5\n")
    result = pytester.runpytest_subprocess(
        "stress_tests", "-m", "accuracy or robustness", "--model", "good.onnx", "--dataset", "fashion-mnist",
        "--profile", "smoke", "--data-root", "data", "--gates", "g.toml", "--report-dir", "reports", "--cache-dir",
        "cache", "-p", "no:cacheprovider", "-rs", timeout=300)
    out = result.stdout.str()
    assert result.ret == 0, out
    assert "1 passed" in out
    assert "pgd_accuracy not applicable: adversarial differentiates the model, and baseline is an ONNX graph" in out
    assert (pytester.path / "reports" / "latest" / "results.json").exists()


pytest_plugins = ["pytester"]
