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
