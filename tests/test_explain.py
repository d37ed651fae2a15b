"""harness.explain: CAM layers and resolution, degenerate maps, concentration formulas,
deletion / insertion against a random map, the model-randomisation sanity check, hook
hygiene, and the in-place ReLU problem of the older CAM layer on the CPU."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from harness import explain, models


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tensors here are tiny: one intra-op thread is as fast as two on an idle 2-core
    machine, and immune to OpenMP's collapse when the cores are shared (measured: the file
    took 15-20 s with one thread, 56-140 s with two, on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------ synthetic models


class RegionNet(nn.Module):
    """Class 0's logit is ``20 (mean intensity over REGION - 0.5)`` (``region=False``: over
    the whole image); class 1's logit is 0, whatever the image.

    A 1x1 conv over (image, region mask) with a ReLU passes the image inside the region and
    zeroes it outside (``ReLU(x + 10 m - 10)``), an average pool halves the resolution (the
    CAM layer, 8x8 at 16x16 input), a fixed linear readout of its mean gives the logits."""

    SIZE = 16
    REGION = (slice(4, 8), slice(8, 12))  # 4x4 pixels = 2x2 cells of the CAM layer
    DEFAULT_CAM_LAYER = "pool"

    def __init__(self, region: bool = True):
        super().__init__()
        mask = torch.zeros(1, 1, self.SIZE, self.SIZE)
        if region:
            mask[..., self.REGION[0], self.REGION[1]] = 1
        else:
            mask[:] = 1
        self.register_buffer("mask", mask)
        self.conv = nn.Conv2d(2, 1, 1)
        self.relu = nn.ReLU()
        self.pool = nn.AvgPool2d(2)
        self.head = nn.Linear(1, 2)
        share = float(mask.mean())  # the readout's mean covers the whole map
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, 10.0]).view(1, 2, 1, 1))
            self.conv.bias.fill_(-10.0)
            self.head.weight.copy_(torch.tensor([[20.0 / share], [0.0]]))
            self.head.bias.copy_(torch.tensor([-10.0, 0.0]))

    def forward(self, x):
        a = self.pool(self.relu(self.conv(torch.cat([x, self.mask.expand(len(x), -1, -1, -1)], 1))))
        return self.head(a.mean((2, 3)))

    def cam_layers(self):
        return {"pool": self.pool}


def region_mask() -> np.ndarray:
    m = np.zeros((RegionNet.SIZE, RegionNet.SIZE), bool)
    m[RegionNet.REGION] = True
    return m


def noise_images(n=8, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.3 + 0.4 * torch.rand(n, 1, RegionNet.SIZE, RegionNet.SIZE, generator=g)


def bright_region_images(n=8, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.rand(n, 1, RegionNet.SIZE, RegionNet.SIZE, generator=g)
    x[..., RegionNet.REGION[0], RegionNet.REGION[1]] = 0.7 + 0.3 * torch.rand(n, 1, 4, 4, generator=g)
    return x


def bars(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A separable 28x28 task: a horizontal bar, a vertical bar or a square, anywhere."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = 0.1 * torch.rand(n, 1, 28, 28, generator=g)
    pos = torch.randint(4, 20, (n, 2), generator=g).tolist()
    for i, (r, c) in enumerate(pos):
        if y[i] == 0:
            x[i, 0, r : r + 2, c - 3 : c + 7] = 0.9
        elif y[i] == 1:
            x[i, 0, r - 3 : r + 7, c : c + 2] = 0.9
        else:
            x[i, 0, r : r + 4, c : c + 4] = 0.9
    return x, y


@pytest.fixture(scope="module")
def trained_cnn():
    """The seed's small CNN after 200 Adam steps (batch 8) on ``bars``: 100% accuracy."""
    torch.manual_seed(0)
    model = models.build("small-cnn", "fashion-mnist", 3)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x, y = bars(2000, 1)
    g = torch.Generator().manual_seed(2)
    model.train()
    for _ in range(200):
        idx = torch.randint(0, len(x), (8,), generator=g)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    xv, yv = bars(64, 3)
    with torch.no_grad():
        assert (model(xv).argmax(1) == yv).float().mean() > 0.95
    model.zero_grad(set_to_none=True)
    return model, xv


def out_of_place(model: nn.Module) -> nn.Module:
    """The same model (same weights) with every ReLU out of place."""
    m = copy.deepcopy(model)
    for mod in m.modules():
        if isinstance(mod, nn.ReLU):
            mod.inplace = False
    return m


def hook_counts(model: nn.Module) -> list[tuple[int, ...]]:
    return [
        (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks), len(m._backward_pre_hooks))
        for m in model.modules()
    ]


# ------------------------------------------------------------------ layers, resolution


@pytest.mark.parametrize("method", explain.METHODS)
def test_maps_have_the_input_size_and_lie_in_0_1(method, trained_cnn):
    model, x = trained_cnn
    res = explain.cam_maps(model, x[:4], method=method)
    assert res.maps.shape == (4, 28, 28) and res.maps.dtype == np.float32
    assert res.maps.min() >= 0 and res.maps.max() <= 1
    assert res.raw.shape == (4, 7, 7) and res.layer == "block3"
    assert np.isfinite(res.raw).all() and not res.degenerate.any()
    assert (res.maps.reshape(4, -1).max(1) > 0.99).all()  # min-max scaled


def test_gradcam_convenience_uses_the_default_layer(trained_cnn):
    model, x = trained_cnn
    maps = explain.gradcam(model, x[:3], [0, 1, 2])
    assert maps.shape == (3, 28, 28) and maps.dtype == np.float32
    assert 0 <= maps.min() and maps.max() <= 1
    np.testing.assert_allclose(maps, explain.cam_maps(model, x[:3], [0, 1, 2], layer="block3").maps)


def test_small_cnn_layers_by_name(trained_cnn):
    model, x = trained_cnn
    assert explain.default_cam_layer(model) == "block3"
    assert list(explain.cam_layers(model)) == ["block2", "block3", "block3-pool"]
    for name, size in (("block2", 14), ("block3", 7), ("block3-pool", 3)):
        res = explain.cam_maps(model, x[:2], layer=name)
        assert res.raw.shape == (2, size, size) and res.maps.shape == (2, 28, 28)
    with pytest.raises(ValueError, match="block3"):
        explain.cam_maps(model, x[:2], layer="layer9")
    with pytest.raises(ValueError, match="gradcam"):
        explain.cam_maps(model, x[:2], method="eigencam")
    with pytest.raises(ValueError, match="targets"):
        explain.cam_maps(model, x[:2], [0])


def test_resnet18_default_layer3_is_8x8_and_layer4_4x4_and_neither_is_touched_by_in_place_relus():
    torch.manual_seed(0)
    model = models.build("resnet18", "cifar10", 10).eval()
    twin = out_of_place(model)
    x = torch.rand(2, 3, 32, 32)
    assert explain.default_cam_layer(model) == "layer3"
    for name, size in (("layer3", 8), ("layer4", 4)):
        a = explain.cam_maps(model, x, [3, 5], layer=name)
        assert a.raw.shape == (2, size, size) and a.maps.shape == (2, 32, 32)
        b = explain.cam_maps(twin, x, [3, 5], layer=name)
        np.testing.assert_allclose(a.raw, b.raw, rtol=1e-5, atol=1e-6 * np.abs(b.raw).max())


class Wrapped(nn.Module):
    """Like train.TemperatureScaled: a wrapper that only has the older cam_layer()."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x) / 2.0

    def cam_layer(self):
        return self.model.cam_layer()


def test_a_wrapper_uses_the_wrapped_models_named_layers(trained_cnn):
    model, x = trained_cnn
    wrapped = Wrapped(model)
    assert explain.default_cam_layer(wrapped) == "block3"
    # the wrapper halves the logits, hence the gradients and the raw map
    np.testing.assert_allclose(2 * explain.cam_maps(wrapped, x[:2], [0, 1]).raw, explain.cam_maps(model, x[:2], [0, 1]).raw, rtol=1e-5, atol=1e-7)


def test_a_model_without_named_layers_falls_back_to_cam_layer_then_the_last_conv():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 2),
    ).eval()
    name, module = explain.resolve_layer(net)
    assert name == "last-conv" and module is net[2]
    x = torch.rand(3, 1, 10, 10)
    res = explain.cam_maps(net, x)
    assert res.layer == "last-conv" and res.raw.shape == (3, 10, 10)
    # the conv's output is overwritten by the in-place ReLU; the cloning hook keeps it intact
    np.testing.assert_allclose(res.raw, explain.cam_maps(out_of_place(net), x, res.targets).raw, rtol=1e-5, atol=1e-7)
    net.cam_layer = lambda: net[0]
    assert explain.resolve_layer(net) == ("cam_layer", net[0])


# ------------------------------------------------------------------ in-place ReLU on the CPU


def _library_gradcam(model, layer, x, targets):
    """pytorch-grad-cam as it is (its hook stores ``output.cpu().detach()``: no copy on the CPU)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with GradCAM(model=model, target_layers=[layer]) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])


def test_in_place_relu_corrupts_the_old_layer_on_the_cpu_and_the_fix_removes_it(trained_cnn):
    model, x = trained_cnn
    twin = out_of_place(model)  # computes what a GPU would hook: nothing overwrites the activation
    t = model(x).argmax(1).tolist()
    # the problem: the older cam_layer() (the last max-pool, followed by ReLU(inplace=True))
    old = _library_gradcam(model, model.cam_layer(), x, t)
    ref = _library_gradcam(twin, twin.cam_layer(), x, t)
    assert np.abs(old - ref).max() > 0.05
    # fix 1: the named layers are not modified in place, even the library's own hook is right
    for name in ("block2", "block3", "block3-pool"):
        layer, twin_layer = explain.cam_layers(model)[name], explain.cam_layers(twin)[name]
        np.testing.assert_allclose(_library_gradcam(model, layer, x, t), _library_gradcam(twin, twin_layer, x, t), atol=1e-5)
    # fix 2: the cloning hook gives the device-independent map on any layer, the old one included
    a = explain.cam_maps(model, x, t, layer=model.cam_layer())
    b = explain.cam_maps(twin, x, t, layer=twin.cam_layer())
    np.testing.assert_allclose(a.raw, b.raw, rtol=1e-5, atol=1e-6 * np.abs(b.raw).max())
    np.testing.assert_allclose(a.maps, ref, atol=1e-4)


def test_our_scorecam_matches_the_librarys(trained_cnn):
    from pytorch_grad_cam import ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, x = trained_cnn
    layer = explain.cam_layers(model)["block3"]
    with ScoreCAM(model=model, target_layers=[layer]) as cam:
        ref = cam(input_tensor=x[:2], targets=[ClassifierOutputTarget(t) for t in (0, 2)])
    np.testing.assert_allclose(explain.cam_maps(model, x[:2], [0, 2], method="scorecam").maps, ref, atol=1e-4)


# ------------------------------------------------------------------ hooks and side effects


def test_hooks_are_released_and_the_model_is_left_as_it_was(trained_cnn):
    model, x = trained_cnn
    model.zero_grad(set_to_none=True)
    model.train()
    model.features[1].eval()  # mixed modes survive
    before = hook_counts(model)
    globals_before = [len(d) for d in (nn.modules.module._global_forward_hooks, nn.modules.module._global_backward_hooks)]
    grad = torch.ones_like(model.classifier[-1].bias)
    model.classifier[-1].bias.grad = grad
    for _ in range(3):
        for method in ("gradcam", "layercam"):
            explain.cam_maps(model, x[:4], method=method)
        explain.gradcam(model, x[:4])
        explain.deletion_insertion(model, x[:2], np.random.rand(2, 28, 28), [0, 1], steps=3)
        explain.randomisation_check(model, x[:4], stop_at_cam_layer=True)
        with pytest.raises(IndexError):  # a target outside the logits fails inside the CAM
            explain.cam_maps(model, x[:2], [0, 7])
        assert hook_counts(model) == before
    assert [len(d) for d in (nn.modules.module._global_forward_hooks, nn.modules.module._global_backward_hooks)] == globals_before
    assert model.training and not model.features[1].training and model.features[0].training
    assert all(p.requires_grad for p in model.parameters())
    assert model.classifier[-1].bias.grad is grad and model.features[0].weight.grad is None
    model.eval()


def test_works_under_no_grad_and_inference_mode(trained_cnn):
    model, x = trained_cnn
    ref = explain.cam_maps(model, x[:2], [0, 1]).raw
    with torch.no_grad():
        np.testing.assert_allclose(explain.cam_maps(model, x[:2], [0, 1]).raw, ref)
    with torch.inference_mode():
        xi = x[:2].clone()
        np.testing.assert_allclose(explain.cam_maps(model, xi, [0, 1]).raw, ref)


# ------------------------------------------------------------------ concentration


def test_concentration_formulas_on_known_maps():
    n = 49
    one = np.zeros((1, 7, 7))
    one[0, 3, 3] = 5.0
    assert explain.gini(one)[0] == pytest.approx((n - 1) / n)
    assert explain.normalised_entropy(one)[0] == pytest.approx(0.0)
    assert explain.top_share(one, 0.1)[0] == pytest.approx(1.0)
    # [0, 0, 1, 1]: G = ((2*3-5) + (2*4-5)) / (4 * 2) = 0.5; H = log 2 / log 4 = 0.5;
    # top 10% = 0.4 pixel: 0.4 x 1 / 2 = 0.2; top 25% = 1 pixel: 0.5; top 50%: 1.0
    half = np.array([[[0.0, 0.0], [1.0, 1.0]]])
    assert explain.gini(half)[0] == pytest.approx(0.5)
    assert explain.normalised_entropy(half)[0] == pytest.approx(0.5)
    assert [explain.top_share(half, q)[0] for q in (0.1, 0.25, 0.5)] == pytest.approx([0.2, 0.5, 1.0])
    # 48 ones and a 2: G = (sum_{i<=48} (2i - 50) + (98 - 50) 2) / (49 x 50) = 48 / 2450
    almost = np.ones((1, 7, 7))
    almost[0, 0, 0] = 2.0
    assert explain.gini(almost)[0] == pytest.approx(48 / 2450)
    # top 20% = 9.8 pixels: (2 + 8 + 0.8) / 50
    assert explain.concentration(almost)[0] == pytest.approx(10.8 / 50)
    # a uniform map is "constant": degenerate, not scored
    assert np.isnan(explain.gini(np.ones((1, 7, 7))))[0]


def test_gini_agrees_with_the_mean_absolute_difference_form_and_ignores_scale():
    rng = np.random.default_rng(0)
    maps = rng.random((20, 8, 8)) ** 3
    flat = maps.reshape(20, -1)
    mad = np.abs(flat[:, :, None] - flat[:, None, :]).sum((1, 2)) / (2 * flat.shape[1] ** 2 * flat.mean(1))
    np.testing.assert_allclose(explain.gini(maps), mad, rtol=1e-10)
    for f in (explain.gini, explain.normalised_entropy, explain.top_share):
        np.testing.assert_allclose(f(maps), f(7.5 * maps), rtol=1e-10)
    # negative values are clamped (the CAM's ReLU)
    np.testing.assert_allclose(explain.gini(maps - 0.5), explain.gini(np.maximum(maps - 0.5, 0)))


def test_degenerate_maps_are_flagged_by_reason_and_never_scored():
    maps = np.stack([
        np.zeros((4, 4)),           # zero
        -np.ones((4, 4)),           # all negative: no positive evidence
        np.full((4, 4), 0.3),       # constant
        np.eye(4) * np.nan,         # NaN
        np.where(np.eye(4) > 0, np.inf, 1.0),  # inf
        np.eye(4),                  # fine
    ])
    assert list(explain.degeneracy(maps)) == ["zero", "zero", "constant", "nonfinite", "nonfinite", ""]
    m = explain.concentration_metrics(maps)
    for k in ("gini", "entropy", "top10"):
        assert np.isnan(m[k][:5]).all() and np.isfinite(m[k][5])


def test_region_model_concentrates_its_map_in_the_region_and_a_uniform_model_does_not():
    x = noise_images(8)
    region = explain.cam_maps(RegionNet(region=True), x, [0] * 8)
    uniform = explain.cam_maps(RegionNet(region=False), x, [0] * 8)
    assert region.raw.shape == (8, 8, 8) and region.maps.shape == (8, 16, 16)
    inside = region_mask()
    # all of the layer-resolution mass in the region's 2x2 cells, most of the upsampled one
    cells = np.zeros((8, 8), bool)
    cells[2:4, 4:6] = True
    pos = np.maximum(region.raw, 0)
    np.testing.assert_allclose(pos[:, cells].sum(1) / pos.sum((1, 2)), 1.0, rtol=1e-6)
    assert (region.maps[:, inside].sum(1) / region.maps.sum((1, 2)) > 0.6).all()
    g_region, g_uniform = explain.gini(region.raw), explain.gini(uniform.raw)
    assert (g_region > 0.9).all() and (g_uniform < 0.2).all()
    assert (explain.normalised_entropy(region.raw) < 0.4).all() and (explain.normalised_entropy(uniform.raw) > 0.95).all()
    assert (explain.top_share(region.raw) > 0.99).all() and (explain.top_share(uniform.raw) < 0.2).all()


def test_a_target_that_does_not_depend_on_the_cam_layer_gives_flagged_zero_maps():
    x = bright_region_images(4)
    res = explain.cam_maps(RegionNet(), x, [1, 1, 0, 0])  # class 1's logit is a constant
    assert list(res.reasons) == ["zero", "zero", "", ""]
    assert (res.raw[:2] == 0).all() and (res.maps[:2] == 0).all()
    assert res.reason_counts() == {"nonfinite": 0, "zero": 2, "constant": 0}
    bad = x.clone()
    bad[0, 0, 5, 9] = float("nan")
    res = explain.cam_maps(RegionNet(), bad, [0, 0, 0, 0])
    assert res.reasons[0] == "nonfinite" and (res.maps[0] == 0).all() and np.isfinite(res.maps).all()
    rep = explain.attention_report(RegionNet(), x, [1, 1, 0, 0], steps=4, randomisation_images=0)
    summary = rep["summary"]
    for k in ("gini", "entropy", "top10", "deletion_auc", "insertion_gap", "deletion_gap"):
        assert np.isnan(summary[k][:2]).all() and np.isfinite(summary[k][2:]).all(), k
    assert rep["cam_empty_share"] == 0.5 and rep["cam_degenerate_zero"] == 2
    assert np.isnan(rep["concentration"][:2]).all() and np.isfinite(rep["confidence_change"]).all()
    assert np.isfinite(rep["cam_gini"]) and np.isfinite(rep["cam_deletion_gap"])


# ------------------------------------------------------------------ deletion / insertion


def test_deletion_of_the_region_drops_the_probability_faster_than_random_removal():
    model, x = RegionNet(), bright_region_images(8)
    cam = explain.cam_maps(model, x, [0] * 8)
    out = explain.deletion_insertion(model, x, cam.maps, cam.targets, steps=10, random_shape=cam.layer_shape)
    assert out["deletion_curve"].shape == (8, 11) and out["fractions"][[0, -1]].tolist() == [0.0, 1.0]
    assert (out["deletion_curve"][:, 0] > 0.99).all()  # the image itself
    np.testing.assert_allclose(out["deletion_curve"][:, 0], out["random_deletion_curve"][:, 0])
    np.testing.assert_allclose(out["deletion_curve"][:, -1], out["insertion_curve"][:, 0])  # the baseline
    # the region (16 of 256 pixels) is gone after the first step (26 pixels): the baseline's probability
    np.testing.assert_allclose(out["deletion_curve"][:, 1], out["deletion_curve"][:, -1], atol=1e-3)
    assert (out["deletion_curve"][:, -1] < 0.3).all()
    assert (out["deletion_gap"] > 0.2).all() and out["deletion_gap"].mean() > 0.4
    assert (out["insertion_gap"] > 0).all() and out["insertion_gap"].mean() > 0.1
    assert (out["deletion_auc"] < out["random_deletion_auc"]).all()
    # a map pointing elsewhere does worse than random
    away = 1.0 - cam.maps
    worse = explain.deletion_insertion(model, x, away, cam.targets, steps=10, random_shape=cam.layer_shape)
    assert (worse["deletion_gap"] < 0).all()
    for baseline in explain.BASELINES:
        b = explain.deletion_insertion(model, x, cam.maps, cam.targets, steps=5, baseline=baseline)
        assert (b["deletion_gap"] > 0.1).all(), baseline


def test_deletion_insertion_is_seeded_and_skips_flagged_maps():
    model, x = RegionNet(), bright_region_images(4)
    maps = np.random.default_rng(0).random((4, 16, 16))
    a = explain.deletion_insertion(model, x, maps, [0] * 4, steps=4, seed=3, skip=[False, True, False, False])
    b = explain.deletion_insertion(model, x, maps, [0] * 4, steps=4, seed=3, skip=[False, True, False, False])
    np.testing.assert_array_equal(a["random_deletion_auc"], b["random_deletion_auc"])
    assert np.isnan(a["deletion_auc"][1]) and np.isfinite(np.delete(a["deletion_auc"], 1)).all()


# ------------------------------------------------------------------ randomisation check


def test_an_explanation_that_ignores_the_weights_fails_the_randomisation_check(trained_cnn):
    model, x = trained_cnn
    out = explain.randomisation_check(model, x[:16], explain_fn=lambda m, imgs, t: imgs.mean(1).numpy())
    assert out["score"] > 0.99 and (out["mean_correlation"] > 0.99).all()


def test_gradcam_of_a_trained_cnn_passes_the_randomisation_check_without_touching_the_model(trained_cnn):
    model, x = trained_cnn
    state = {k: v.clone() for k, v in model.state_dict().items()}
    out = explain.randomisation_check(model, x, seed=1)
    assert out["steps"][0] == "classifier.6"  # the logits first
    assert out["steps"][out["cam_step"]] == "features.8+features.10"  # block 3's conv and BatchNorm
    assert len(out["steps"]) == 6 and out["correlation"].shape == (6, len(x))
    assert out["score"] < 0.5
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    again = explain.randomisation_check(model, x, seed=1)
    np.testing.assert_array_equal(out["correlation"], again["correlation"])


def test_spearman_rows():
    a = np.array([[1.0, 2, 3, 4], [1, 2, 3, 4], [1, 1, 1, 1]])
    b = np.array([[10.0, 20, 30, 40], [4, 3, 2, 1], [1, 2, 3, 4]])
    rho = explain.spearman_rows(a, b)
    assert rho[0] == pytest.approx(1) and rho[1] == pytest.approx(-1) and np.isnan(rho[2])


# ------------------------------------------------------------------ summary


def test_attention_report_on_a_trained_cnn(trained_cnn):
    model, x = trained_cnn
    rep = explain.attention_report(model, x, None, steps=6, randomisation_images=16)
    s = rep["summary"]
    for k in ("gini", "entropy", "top10", "deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc", "deletion_gap", "insertion_gap"):
        assert s[k].shape == (len(x),) and np.isfinite(s[k]).all(), k
    assert s["layer"] == "block3" and s["layer_shape"] == (7, 7) and s["reason"].shape == (len(x),)
    assert len(s["randomisation"]["indices"]) == 16
    assert rep["cam_empty_share"] == 0.0
    assert rep["cam_deletion_gap"] > 0.1 and rep["cam_insertion_gap"] > 0
    assert rep["cam_randomisation_corr"] < 0.5
    assert 0 < rep["cam_gini"] < 1 and 0 < rep["cam_entropy"] < 1
    assert np.isfinite(rep["cam_confidence_change"])
