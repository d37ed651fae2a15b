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
