"""harness.models: output shapes, parameter counts, normalisation as the first layer,
the CIFAR ResNet-18 stem."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from harness import cards, models


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _resnet18_cifar_params(num_classes: int) -> int:
    """ResNet-18 (basic blocks [2, 2, 2, 2], widths 64-512) with a 3x3 stem, counted by hand."""
    conv = lambda cin, cout, k: cin * cout * k * k  # noqa: E731  (no bias: BN follows)
    bn = lambda c: 2 * c  # noqa: E731  (weight and bias; running stats are buffers)
    total = conv(3, 64, 3) + bn(64)  # stem
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            s = stride if block == 0 else 1
            total += conv(cin, cout, 3) + bn(cout) + conv(cout, cout, 3) + bn(cout)
            if s != 1 or cin != cout:  # 1x1 projection shortcut
                total += conv(cin, cout, 1) + bn(cout)
            cin = cout
    return total + 512 * num_classes + num_classes  # fc


def test_independent_resnet18_count_agrees_with_the_published_figure():
    # 11,173,962 is the widely quoted count of the CIFAR ResNet-18 with 10 classes.
    assert _resnet18_cifar_params(10) == 11_173_962
    assert _resnet18_cifar_params(100) == 11_220_132


@pytest.mark.parametrize(
    "arch,dataset,classes,shape,params",
    [
        ("small-cnn", "fashion-mnist", 10, (1, 28, 28), 422_474),
        ("resnet18", "cifar10", 10, (3, 32, 32), 11_173_962),
        ("resnet18", "cifar100", 100, (3, 32, 32), 11_220_132),
    ],
)
def test_output_shape_and_parameter_count(arch, dataset, classes, shape, params):
    model = models.build(arch, dataset, classes).eval()
    with torch.no_grad():
        out = model(torch.rand(3, *shape))
    assert out.shape == (3, classes)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert models.count_parameters(model) == params
    # every parameter is trainable, and normalisation constants are not parameters
    assert models.count_parameters(model) == sum(p.numel() for p in model.parameters())
    assert {n for n, _ in model.named_buffers() if n.startswith("normalize.")} == {"normalize.mean", "normalize.std"}


def test_small_cnn_parameter_count_by_layer():
    model = models.build("small-cnn", "fashion-mnist", 10)
    expected = (
        (1 * 32 * 9 + 32) + 2 * 32
        + (32 * 64 * 9 + 64) + 2 * 64
        + (64 * 128 * 9 + 128) + 2 * 128
        + (1152 * 256 + 256) + (256 * 128 + 128) + (128 * 10 + 10)
    )
    assert expected == 422_474
    assert models.count_parameters(model) == expected


def test_small_cnn_geometry_28_to_3():
    model = models.build("small-cnn", "fashion-mnist", 10).eval()
    with torch.no_grad():
        feats = model.features(model.normalize(torch.rand(2, 1, 28, 28)))
    assert feats.shape == (2, 128, 3, 3)
    assert model.classifier[1].in_features == 1152


@pytest.mark.parametrize("arch,dataset,classes,shape", [
    ("small-cnn", "fashion-mnist", 10, (1, 28, 28)),
    ("resnet18", "cifar10", 10, (3, 32, 32)),
    ("resnet18", "cifar100", 100, (3, 32, 32)),
])
def test_normalisation_is_the_first_layer(arch, dataset, classes, shape):
    model = models.build(arch, dataset, classes).eval()
    mean, std = cards.card(dataset).normalisation
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    x = torch.rand(4, *shape)
    z = (x - m) / s
    with torch.no_grad():
        out = model(x)
        if arch == "small-cnn":
            ref = model.classifier(model.features(z))
        else:
            ref = model.net(z)
        assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5)
        # and it matters: the net on raw inputs computes something else
        raw = model.classifier(model.features(x)) if arch == "small-cnn" else model.net(x)
        assert not torch.allclose(out, raw, atol=1e-3)
    assert torch.equal(model.normalize.mean.flatten(), torch.tensor(mean))
    assert torch.equal(model.normalize.std.flatten(), torch.tensor(std))


def test_normalisation_constants():
    assert cards.card("fashion-mnist").normalisation == ((0.5,), (0.5,))  # seed 000: (x - 0.5) / 0.5
    x = torch.tensor([0.0, 0.5, 1.0]).view(1, 1, 1, 3)
    n = models.Normalize((0.5,), (0.5,))
    assert torch.equal(n(x), torch.tensor([-1.0, 0.0, 1.0]).view(1, 1, 1, 3))  # seed 000's (x - 0.5) / 0.5


def test_resnet_stem_is_3x3_stride_1_without_maxpool():
    model = models.build("resnet18", "cifar10", 10)
    conv1 = model.net.conv1
    assert isinstance(conv1, nn.Conv2d)
    assert conv1.kernel_size == (3, 3)
    assert conv1.stride == (1, 1)
    assert conv1.padding == (1, 1)
    assert conv1.in_channels == 3 and conv1.out_channels == 64
    assert conv1.bias is None
    assert isinstance(model.net.maxpool, nn.Identity)
    # 32x32 reaches layer4 at 4x4 (three stride-2 stages), not 1x1 as with the ImageNet stem
    seen = {}
    model.net.layer4.register_forward_hook(lambda mod, inp, out: seen.update(shape=out.shape))
    model.eval()
    with torch.no_grad():
        model(torch.rand(1, 3, 32, 32))
    assert seen["shape"] == (1, 512, 4, 4)
    assert model.cam_layer() is model.net.layer4[-1]


def test_small_cnn_cam_layer_is_the_last_conv_block():
    model = models.build("small-cnn", "fashion-mnist", 10).eval()
    seen = {}
    model.cam_layer().register_forward_hook(lambda mod, inp, out: seen.update(shape=out.shape))
    with torch.no_grad():
        model(torch.rand(2, 1, 28, 28))
    assert seen["shape"] == (2, 128, 3, 3)


def test_build_is_reproducible_under_a_seed():
    torch.manual_seed(7)
    a = models.build("small-cnn", "fashion-mnist", 10)
    torch.manual_seed(7)
    b = models.build("small-cnn", "fashion-mnist", 10)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_unknown_architecture_is_rejected():
    with pytest.raises(ValueError, match="vgg16"):
        models.build("vgg16", "cifar10", 10)


def test_resnet18_takes_grey_images_through_its_stem():
    model = models.build("resnet18", "fashion-mnist", 10).eval()
    assert model.net.conv1.in_channels == 1
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("shape", [(1, 64, 48), (3, 16, 16), (3, 40, 40)])
def test_small_cnn_head_follows_the_image_size(shape):
    model = models.build("small-cnn", "mine", 7, shape[0], shape).eval()
    assert model(torch.rand(2, *shape)).shape == (2, 7)


def test_small_cnn_rejects_images_it_cannot_halve_three_times():
    with pytest.raises(ValueError, match="4x4 is too small"):
        models.build("small-cnn", "mine", 3, 1, (1, 4, 4))


def test_torchvision_and_python_architectures(tmp_path, monkeypatch):
    assert models.resolve_arch("mobilenet_v3_small") == "torchvision:mobilenet_v3_small"
    net = models.build("torchvision:mobilenet_v3_small", "fashion-mnist", 10).eval()
    assert net(torch.rand(2, 1, 32, 32)).shape == (2, 10)  # grey repeated to 3 channels
    (tmp_path / "mynets.py").write_text(
        "import torch.nn as nn\n"
        "def make(num_classes, in_channels):\n"
        "    return nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),\n"
        "                         nn.Flatten(), nn.Linear(4, num_classes))\n"
        "def not_a_model():\n"
        "    return 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mynets", raising=False)  # never another test's module of that name
    arch = models.resolve_arch("mynets:make")
    assert arch == "python:mynets:make" and models.arch_fingerprint(arch)
    assert models.build(arch, "mine", 5, 3, (3, 20, 20))(torch.rand(1, 3, 20, 20)).shape == (1, 5)
    with pytest.raises(TypeError, match="returned a int, not a torch.nn.Module"):
        models.build("python:mynets:not_a_model", "mine", 5, 3, (3, 20, 20))
    with pytest.raises(ValueError, match="has no function 'nope'"):
        models.resolve_arch("mynets:nope")
    with pytest.raises(ImportError, match="cannot import 'nomodule'"):
        models.resolve_arch("nomodule:make")
    with pytest.raises(ValueError, match="unknown architecture 'vgg17'"):
        models.resolve_arch("vgg17")


def test_weights_that_do_not_fit_name_the_first_mismatch(tmp_path):
    class Data:
        name, num_classes, image_shape, normalisation = "fashion-mnist", 10, (1, 28, 28), ((0.5,), (0.5,))

    torch.manual_seed(0)
    good = models.for_data("small-cnn", Data())
    torch.save(good.state_dict(), tmp_path / "good.pt")
    loaded = models.load_weights("small-cnn", Data(), tmp_path / "good.pt")
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(loaded(x), good.eval()(x))
    Data.num_classes = 5
    with pytest.raises(ValueError, match=r"does not fit small-cnn: .* is \(10, 128\) in the file but \(5, 128\) in the model \(classes: 5"):
        models.load_weights("small-cnn", Data(), tmp_path / "good.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read as a weights-only state dict"):
        models.load_weights("small-cnn", Data(), tmp_path / "junk.pt")


def test_timm_models_by_name_train_from_scratch_and_take_their_own_state_dicts(tmp_path):
    """--arch timm:<name>: any timm model, pretrained=False, built for the data's classes and
    channels (16x16 grey images here); a timm state dict loads as --weights; a name timm does
    not know is refused before training, with close names."""
    timm = pytest.importorskip("timm")
    import numpy as np

    from harness import timm_zoo
    from harness.run import Options, Plan

    rng = np.random.default_rng(0)
    npz = tmp_path / "tiny.npz"
    np.savez(npz, x_train=rng.integers(0, 255, (12, 16, 16), dtype=np.uint8), y_train=np.arange(12) % 3,
             x_test=rng.integers(0, 255, (6, 16, 16), dtype=np.uint8), y_test=np.arange(6) % 3)
    ref = timm.create_model("resnet18", pretrained=False, num_classes=3, in_chans=1)
    torch.save(ref.state_dict(), tmp_path / "timm_resnet18.pt")

    def opts(**kw):
        return Options(dataset=str(npz), profile="smoke", device="cpu", data_root=None, gates_path=None,
                       report_root=None, candidates=None, recipe_files=[], cache_dir=tmp_path / "cache", **kw)

    plan = Plan(opts(arch="timm:resnet18", weights=tmp_path / "timm_resnet18.pt"), gates=None)
    plan.validate()  # builds it, loads the state dict, runs one batch: logits of width 3
    arch = plan.recipes["baseline"].arch
    assert arch == "python:harness.timm_zoo:resnet18" and models.arch_fingerprint(arch)
    net = models.build(arch, "tiny", 3, 1, (1, 16, 16)).eval()
    assert type(net).__module__.startswith("timm.") and net(torch.rand(2, 1, 16, 16)).shape == (2, 3)
    net.load_state_dict(torch.load(tmp_path / "timm_resnet18.pt", weights_only=True))  # the same keys
    with pytest.raises(ValueError, match=r"--arch timm:resnet181: timm has no model 'resnet181'"):
        timm_zoo.route("timm:resnet181")
    with pytest.raises(ValueError, match=r"timm has no model 'resnet181'"):
        Plan(opts(arch="timm:resnet181"), gates=None).validate()
    assert not (tmp_path / "cache").exists()  # nothing trained
