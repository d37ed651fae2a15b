"""The robustness battery (harness/stress.py) and the robustness metrics of the registry:
conditions, determinism, independent recomputation, published CIFAR-C files, mCE formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from harness import corruptions, data, metrics, perturb, stress
from harness.metrics import NotApplicable, Samples


class Linear(nn.Module):
    """A fixed linear classifier on 28x28 grey images (fast, deterministic)."""

    def __init__(self, k=10, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(k, 28 * 28, generator=g) * 0.05)

    def forward(self, x):
        return x.flatten(1) @ self.w.T * 10


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(60, 1, 28, 28, generator=g) * 255).to(torch.uint8)
    y = torch.randint(0, 10, (60,), generator=g)
    return x, y


def small_battery(**kw) -> stress.Battery:
    b = stress.battery("fashion-mnist", (1, 28, 28), "smoke")
    return stress.Battery(**{**b.__dict__, "corruptions": ("gaussian_noise", "contrast", "jpeg"), "severities": (1, 5),
                             "attack_samples": 20, **kw})


def test_battery_per_dataset():
    grey = stress.battery("fashion-mnist", (1, 28, 28), "smoke")
    colour = stress.battery("cifar10", (3, 32, 32), "full")
    assert len(grey.corruptions) == 14 and "saturate" not in grey.corruptions
    assert len(colour.corruptions) == 15 and "saturate" in colour.corruptions
    assert grey.reference_eps == 0.05 and colour.reference_eps == pytest.approx(2 / 255)
    assert grey.attack_samples == 500 and colour.attack_samples == 10_000
    assert len(grey.robustness_conditions()) == 1 + 70 + 1 + 2 + 4 + 3 + 1
    assert stress.battery("fashion-mnist", (1, 28, 28), "smoke", flip_invariant=False).hflip is False


def test_robustness_run_is_deterministic_and_matches_an_independent_recomputation(images):
    x, y = images
    model = Linear().eval()
    b = small_battery()
    out = stress.run_robustness(model, x, y, b, "cpu", batch_size=25)
    again = stress.run_robustness(model, x, y, b, "cpu", batch_size=25)
    assert set(out) == set(b.robustness_conditions())
    for k in out:
        assert torch.equal(out[k], again[k]), k
        assert out[k].shape == (60, 10)
    xf = x.float() / 255
    with torch.no_grad():
        # deterministic stresses, recomputed with the library functions directly
        assert torch.allclose(out["clean"], model(xf), atol=1e-5)
        contrast = torch.cat([corruptions.corrupt(xf[i:i + 25], "contrast", 5, torch.Generator()) for i in (0, 25, 50)])
        assert torch.allclose(out["corruption/contrast/5"], model(contrast), atol=1e-5)
        assert torch.allclose(out["scale/0.5"], model(perturb.rescale(xf, 0.5)), atol=1e-5)
        assert torch.allclose(out["hflip"], model(xf.flip(-1)), atol=1e-5)
        occ = perturb.occlusion_sweep(model, xf, y, b.occlusion_patch, b.occlusion_stride, b.occlusion_fill)
        assert torch.equal(out["occlusion"].argmax(1), occ.worst_pred)
    # the noise differs between severities and from the clean image
    assert not torch.equal(out["corruption/gaussian_noise/1"], out["corruption/gaussian_noise/5"])


def test_adversarial_run_attacks_every_budget(images):
    x, y = images
    model = Linear().eval()
    b = small_battery()
    out = stress.run_adversarial(model, x[:20], y[:20], b, "cpu")
    assert set(out) == set(b.adversarial_conditions())
    acc = {k: float((v.argmax(1) == y[:20]).float().mean()) for k, v in out.items()}
    for attack in ("fgsm", "pgd"):
        accs = [acc[f"{attack}/{e:.6g}"] for e in b.epsilons]
        assert accs[-1] <= acc["clean"]
    # PGD keeps the best iterate and starts from FGSM's candidate: never above FGSM's accuracy here
    assert all(acc[f"pgd/{e:.6g}"] <= acc[f"fgsm/{e:.6g}"] + 1e-9 for e in b.epsilons)


def test_published_cifar_c_files_replace_the_synthesised_corruptions(tmp_path):
    rng = np.random.default_rng(0)
    n = 12
    test_x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    test_y = rng.integers(0, 10, n)
    ds = data.Dataset("cifar10", tuple(f"c{i}" for i in range(10)), torch.zeros(20, 3, 32, 32, dtype=torch.uint8),
                      torch.zeros(20, dtype=torch.long), torch.from_numpy(test_x), torch.from_numpy(test_y).long(),
                      torch.arange(18), torch.arange(18, 20), "synthetic")
    folder = tmp_path / "CIFAR-10-C"
    folder.mkdir()
    np.save(folder / "labels.npy", np.tile(test_y, 5).astype(np.uint8))
    fog = np.stack([np.roll(test_x.transpose(0, 2, 3, 1), s, axis=1) for s in range(1, 6)]).reshape(5 * n, 32, 32, 3)
    np.save(folder / "fog.npy", fog)
    published = data.cifar_c(ds, tmp_path)
    assert set(published) == {"fog"}
    b = stress.battery("cifar10", (3, 32, 32), "smoke", published=published)
    assert b.corruptions == ("fog",)
    b = stress.Battery(**{**b.__dict__, "attack_samples": 4})

    class Mean(nn.Module):
        def forward(self, x):
            return x.mean((2, 3)).repeat(1, 4)[:, :10]

    positions = np.array([3, 7, 11])
    out = stress.run_robustness(Mean(), ds.test_x[positions], ds.test_y[positions], b, "cpu", positions, n)
    for s in range(1, 6):
        expected = torch.from_numpy(fog[(s - 1) * n + positions]).permute(0, 3, 1, 2).float() / 255
        assert torch.allclose(out[f"corruption/fog/{s}"], Mean()(expected), atol=1e-6)
    # a run on the first images of the test split reads their rows of the whole published set
    sub = data.evaluation_subset(ds, 2, 8, "a test")
    assert sub.official_test_size == n == sub.full_test_size == ds.full_test_size and len(sub.test_y) == 8
    assert sub.fingerprint != ds.fingerprint
    assert torch.equal(sub.split("test")[2], torch.arange(8)) and "the first 8 of 12" in sub.subset
    first = np.array([3, 7])
    out_sub = stress.run_robustness(Mean(), sub.test_x[first], sub.test_y[first], b, "cpu", first,
                                    sub.full_test_size)
    for s in range(1, 6):
        assert torch.equal(out_sub[f"corruption/fog/{s}"], out[f"corruption/fog/{s}"][:2])
    assert set(data.cifar_c(sub, tmp_path)) == {"fog"}
    # labels that do not match the test split are refused
    np.save(folder / "labels.npy", np.zeros(5 * n, dtype=np.uint8) + 9)
    if not np.array_equal(np.zeros(n) + 9, test_y):
        with pytest.raises(data.DatasetFormatError, match="test labels"):
            data.cifar_c(ds, tmp_path)


# ------------------------------------------------------------------ the registry's robustness metrics


def _samples(hits: list[bool], k=3, conf=0.8) -> Samples:
    n = len(hits)
    labels = np.zeros(n, dtype=int)
    probs = np.full((n, k), (1 - conf) / (k - 1))
    for i, h in enumerate(hits):
        probs[i, 0 if h else 1] = conf
    return Samples.from_probs(probs, labels)


def test_corruption_summaries_and_mce_follow_their_formulas():
    clean = _samples([True] * 10)
    model = {"clean": clean,
             "corruption/a/1": _samples([True] * 8 + [False] * 2), "corruption/a/2": _samples([True] * 6 + [False] * 4),
             "corruption/b/1": _samples([True] * 10), "corruption/b/2": _samples([True] * 9 + [False])}
    base = {"clean": _samples([True] * 9 + [False]),
            "corruption/a/1": _samples([True] * 7 + [False] * 3), "corruption/a/2": _samples([True] * 5 + [False] * 5),
            "corruption/b/1": _samples([True] * 8 + [False] * 2), "corruption/b/2": _samples([True] * 8 + [False] * 2)}
    assert metrics.corruption_accuracy(model) == pytest.approx((0.8 + 0.6 + 1.0 + 0.9) / 4)
    assert metrics.mean_corruption_error(model) == pytest.approx(((0.2 + 0.4) / 2 + (0.0 + 0.1) / 2) / 2)
    assert metrics.worst_corruption_accuracy(model) == pytest.approx(0.7)
    # mCE = mean_c sum_s E / sum_s E_base; relative: the same of (E - E_clean)
    assert metrics.corruption_mce(model, base) == pytest.approx(((0.2 + 0.4) / (0.3 + 0.5) + 0.1 / 0.4) / 2)
    rel_a = ((0.2 - 0) + (0.4 - 0)) / ((0.3 - 0.1) + (0.5 - 0.1))
    rel_b = (0.0 + 0.1) / ((0.2 - 0.1) + (0.2 - 0.1))
    assert metrics.relative_corruption_mce(model, base) == pytest.approx((rel_a + rel_b) / 2)
    assert metrics.corruption_mce(base, base) == 1.0
    with pytest.raises(NotApplicable, match="no corruption"):
        metrics.corruption_accuracy({"clean": clean})


def test_flip_shares_and_invariance_metrics():
    clean = _samples([True, True, False, True])
    moved = _samples([True, False, False, False])  # predictions 0,1,1,1 vs clean 0,0,1,0
    ev = {"clean": clean, "shift/1": moved, "shift/2": clean, "hflip": clean, "occlusion": moved}
    assert metrics.flip_share(moved, clean) == 0.5
    assert metrics.shift1_flip_share(ev) == 0.5
    assert metrics.shift_flip_share(ev) == pytest.approx(0.25)  # mean over distances 1 and 2
    assert metrics.hflip_flip_share(ev) == 0.0
    assert metrics.occlusion_accuracy(ev) == 0.25 and metrics.occlusion_flip_share(ev) == 0.5
    with pytest.raises(NotApplicable, match="flip is not known to keep"):
        metrics.hflip_flip_share({"clean": clean})


def test_robustness_metrics_bootstrap_on_the_shared_images():
    from harness import compare

    a = {"clean": _samples([True] * 50 + [False] * 50), "corruption/a/1": _samples([True] * 30 + [False] * 70)}
    b = {"clean": _samples([True] * 50 + [False] * 50), "corruption/a/1": _samples([True] * 60 + [False] * 40)}
    d = compare.paired_interval("corruption_accuracy", a, b, n_boot=200)
    assert d["delta"] == pytest.approx(0.3) and d["ci"][0] > 0


def test_measurement_sizes_scale_with_the_models_cost_on_a_cpu_only():
    """The small CNN keeps the smoke profile's sizes; a ResNet-18 on CIFAR (70 times its cost
    per image) gets REFERENCE_GFLOP / cost of them on a CPU, never below the floors; a GPU and the
    full profile keep the profile's sizes."""
    from harness import bench, cards, models, taxonomy

    small = bench.gflop_per_image(models.build("small-cnn", "fashion-mnist", 10), (1, 28, 28))
    resnet = bench.gflop_per_image(models.build("resnet18", "cifar100", 100), (3, 32, 32))
    assert small == pytest.approx(0.01556, rel=0.01) and resnet == pytest.approx(1.111, rel=0.01)
    smoke, full = cards.profile("smoke"), cards.profile("full")
    assert cards.measurement_sizes(smoke, small, "cpu") == {"stress_samples": 1000, "attack_samples": 500,
                                                             "ood_images": 1000, "cam_samples": 32,
                                                             "taxonomy_errors": taxonomy.LIMIT}
    assert cards.measurement_sizes(smoke, resnet, "cpu") == {"stress_samples": 45, "attack_samples": 22,
                                                              "ood_images": 45, "cam_samples": 8, "taxonomy_errors": 22}
    assert cards.measurement_sizes(smoke, resnet, "cuda") == cards.measurement_sizes(smoke, small, "cpu")
    assert cards.measurement_sizes(full, resnet, "cpu")["stress_samples"] == 10_000
    assert cards.measurement_sizes(smoke, 1000.0, "cpu") == cards.MIN_SIZES
    assert cards.measurement_sizes(smoke, None, "cpu")["stress_samples"] == 1000  # not countable: the profile's
    b = stress.battery("cifar100", (3, 32, 32), "smoke", attack_samples=22)
    assert b.attack_samples == 22 and stress.battery("cifar100", (3, 32, 32), "smoke").attack_samples == 500
    # the validation and test splits shrink the same way, to SPLIT_FLOOR images
    assert cards.split_sizes(smoke, small, "cpu", 6_000, 10_000) == (6_000, 10_000)
    assert cards.split_sizes(smoke, resnet, "cpu", 5_000, 10_000) == (2_000, 2_000)
    assert cards.split_sizes(smoke, resnet, "cpu", 1_500, 900) == (1_500, 900)  # never more than there is
    assert cards.split_sizes(smoke, resnet, "cuda", 5_000, 10_000) == (5_000, 10_000)
    assert cards.split_sizes(full, resnet, "cpu", 5_000, 10_000) == (5_000, 10_000)
    # and the corruption severities: 1, 3 and 5 for the costly model on a CPU only
    assert cards.severities_for(smoke, small, "cpu") == (1, 2, 3, 4, 5) == cards.severities_for(full, resnet, "cpu")
    assert cards.severities_for(smoke, resnet, "cpu") == (1, 3, 5)
    assert cards.severities_for(smoke, resnet, "cuda") == (1, 2, 3, 4, 5)
    costly = stress.battery("cifar100", (3, 32, 32), "smoke", severities=(1, 3, 5))
    assert costly.severities == (1, 3, 5) and len(costly.corruption_conditions()) == 15 * 3
    assert stress.battery("cifar100", (3, 32, 32), "smoke").severities == (1, 2, 3, 4, 5)


def test_a_costly_model_on_a_cpu_is_evaluated_on_the_first_images_of_each_split(cifar_root, tmp_path):
    """The smoke profile on a CPU evaluates a ResNet-18 on CIFAR on SPLIT_FLOOR validation and
    test images (the first of each: test ids stay positions), says so, and keys its models apart;
    the full profile evaluates every image."""
    from harness import cards
    from harness.run import Options, Plan

    files = cifar_root(name="cifar100", n_train=10_002, n_test=2_500)  # more than twice 5,000: the seed split

    def plan(profile):
        return Plan(Options(dataset="cifar100", profile=profile, device="cpu", data_root=files.root, gates_path=None,
                            report_root=None, candidates=[], recipe_files=[], cache_dir=tmp_path / "cache"),
                    gates=None)

    smoke, full = plan("smoke").data, plan("full").data
    assert (len(full.val_idx), len(full.test_y), full.subset) == (5_000, 2_500, "")
    assert (len(smoke.val_idx), len(smoke.test_y)) == (cards.SPLIT_FLOOR, cards.SPLIT_FLOOR)
    assert torch.equal(smoke.val_idx, full.val_idx[: cards.SPLIT_FLOOR])
    assert torch.equal(smoke.test_x, full.test_x[: cards.SPLIT_FLOOR])
    assert torch.equal(smoke.split("test")[2], torch.arange(cards.SPLIT_FLOOR))
    assert smoke.official_test_size == 2_500 and smoke.fingerprint != full.fingerprint
    assert smoke.subset.startswith("validation: 2,000 of 5,000 images; test: the first 2,000 of 2,500 (smoke profile "
                                   "on a CPU, a model of 1.11 GFLOP per image")
    assert "named cases 2372 are outside it" in smoke.subset  # the seed's cases below 2,500: 2372 and 1214
    assert torch.equal(smoke.train_idx, full.train_idx)
    assert plan("smoke").severities() == (1, 3, 5) and plan("full").severities() == (1, 2, 3, 4, 5)
    asked = plan("smoke")
    asked.options.cases = ["2100"]
    with pytest.raises(ValueError, match=r"named case '2100' is not in the test split \(this run evaluates validation: "
                                         r"2,000 of 5,000 images; test: the first 2,000 of 2,500 .*\): give a test id below 2000"):
        asked.named_positions()
