"""Training-step and augmentation timings (pytest-benchmark). ``nox -s bench`` runs them
with benchmarking on; in the normal test run (--benchmark-disable) each runs once, which
checks that they work."""

import pytest
import torch
import torch.nn.functional as F

from harness import augment, models


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g)


def _step(model, opt, x, y):
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def test_small_cnn_train_step(benchmark, batch):
    torch.manual_seed(0)
    model = models.build("small-cnn", "fashion-mnist", 10)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x, y = batch
    first = _step(model, opt, x, y)
    loss = benchmark(_step, model, opt, x, y)
    assert loss < first * 1.5  # it trains on the same batch rather than diverging


@pytest.mark.parametrize("op", ["hflip", "rotate", "crop", "cutmix", "jitter"])
def test_augmentation_batch(benchmark, batch, op):
    x, y = batch
    g = torch.Generator().manual_seed(0)
    target = F.one_hot(y, 10).float()
    fn = {
        "hflip": lambda: augment.hflip(x, 0.5, g),
        "rotate": lambda: augment.rotate(x, 10.0, g),
        "crop": lambda: augment.random_crop(x, 4, g),
        "cutmix": lambda: augment.cutmix(x, target, 1.0, g)[0],
        "jitter": lambda: augment.color_jitter(x, 0.2, g),
    }[op]
    out = benchmark(fn)
    assert out.shape == x.shape and 0 <= float(out.min()) and float(out.max()) <= 1


def test_robustness_battery_on_a_smoke_subset(benchmark):
    """The whole robustness battery (14 corruptions x 5 severities, worst-placement occlusion,
    scale, shifts, rotations, flip; FGSM and PGD-10 at four budgets on 250 images) for one
    small CNN on the smoke profile's 1,000-image subset. Target: within 60 s on 2 CPU cores
    (measured 23.5 + 5.7 s on the CI machine kind, 2026-11-23, model trained on smoke)."""
    from harness import data, measure, stress

    try:
        ds = data.load("fashion-mnist", download=False)
        x, y = ds.test_x[:1000], ds.test_y[:1000]
    except data.DatasetNotFoundError:
        g = torch.Generator().manual_seed(0)
        x, y = (torch.rand(1000, 1, 28, 28, generator=g) * 255).to(torch.uint8), torch.randint(0, 10, (1000,), generator=g)
    torch.manual_seed(0)
    model = models.build("small-cnn", "fashion-mnist", 10).eval()
    b = stress.battery("fashion-mnist", (1, 28, 28), "smoke")

    def battery():
        rob = stress.run_robustness(model, x, y, b, "cpu")
        adv = stress.run_adversarial(model, x[: b.attack_samples], y[: b.attack_samples], b, "cpu")
        return rob, adv

    rob, adv = benchmark.pedantic(battery, rounds=1, iterations=1)
    assert set(rob) == set(b.robustness_conditions()) and set(adv) == set(b.adversarial_conditions())
    assert measure.stress_subset(10_000, 1000).shape == (1000,)


def test_attention_metrics_for_256_images(benchmark):
    """Every attention metric (Grad-CAM maps, concentration, deletion/insertion against random
    maps, the randomisation check on 64 of the images) for 256 images of the small CNN.
    Target: within 20 s on 2 CPU cores."""
    from harness import explain

    g = torch.Generator().manual_seed(0)
    x = torch.rand(256, 1, 28, 28, generator=g)
    torch.manual_seed(0)
    model = models.build("small-cnn", "fashion-mnist", 10).eval()
    out = benchmark.pedantic(lambda: explain.attention_summary(model, x), rounds=1, iterations=1)
    assert out["maps"].shape == (256, 28, 28) and len(out["gini"]) == 256
