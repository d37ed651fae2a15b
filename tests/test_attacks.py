"""harness.attacks: FGSM and PGD (L-inf), their invariants, and agreement with ART."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from harness import attacks

# ------------------------------------------------------------------ a tiny trained model


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tensors here are tiny: intra-op threads only add overhead, and on a shared 2-core
    CPU they spin against other processes (training below takes 3 s on one thread, 18 s on
    two, with another job running). The previous setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SIZE, CLASSES = 12, 3


def synthetic(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """1x12x12 images: uniform noise in [0, 0.6] plus a +0.3 vertical band in the third of
    the image given by the class (0: left, 1: middle, 2: right). Separable, but a budget of
    about 0.1-0.15 is enough to fake a band."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, CLASSES, (n,), generator=gen)
    x = torch.rand(n, 1, SIZE, SIZE, generator=gen) * 0.6
    bands = torch.zeros(CLASSES, SIZE, SIZE)
    for k in range(CLASSES):
        bands[k, :, 4 * k : 4 * k + 4] = 0.3
    return (x + bands[y][:, None]).clamp(0, 1), y


def tiny_cnn() -> nn.Module:
    # BatchNorm and Dropout on purpose: an attack that forgot eval mode would change the
    # running statistics and draw dropout masks.
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(16, CLASSES),
    )


@pytest.fixture(scope="module")
def trained():
    """A tiny CNN trained for 200 Adam steps on ``synthetic`` (seeded, about a second on
    an idle 2-core CPU; global RNG state left untouched), in eval mode, with 400 test
    images it classifies almost perfectly."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = tiny_cnn()
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for step in range(200):
            x, y = synthetic(64, seed=1000 + step)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    model.zero_grad(set_to_none=True)
    x, y = synthetic(400, seed=1)
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.97
    return model, x, y


def untrained(seed: int = 0) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return tiny_cnn().eval()


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def pgd_seeded(model, x, y, eps, **kw):
    return attacks.pgd(model, x, y, eps, generator=gen(0), **kw)


ATTACKS = {"fgsm": attacks.fgsm, "pgd": pgd_seeded}

# ------------------------------------------------------------------ epsilon grids


def test_epsilon_grids():
    assert attacks.epsilon_grid("cifar10") == (1 / 255, 2 / 255, 4 / 255, 8 / 255)
    assert attacks.epsilon_grid("cifar100") == attacks.epsilon_grid("cifar10")
    assert attacks.epsilon_grid("fashion-mnist") == (0.01, 0.02, 0.05, 0.1)
    for grid in attacks.EPSILON_GRIDS.values():
        assert list(grid) == sorted(grid) and all(0 < e < 1 for e in grid)
    with pytest.raises(ValueError, match="no epsilon grid"):
        attacks.epsilon_grid("imagenet")


# ------------------------------------------------------------------ budget, clipping, eps = 0


@settings(max_examples=12, deadline=None)
@given(
    eps=st.floats(0.0, 0.5),
    seed=st.integers(0, 2**16),
    which=st.sampled_from(sorted(ATTACKS)),
)
def test_budget_and_clipping_respected(eps, seed, which):
    model = untrained()
    g = gen(seed)
    # many pixels at 0 and 1: clipping is exercised on both sides
    x = torch.rand(6, 1, SIZE, SIZE, generator=g).mul(1.4).sub(0.2).clamp(0, 1)
    y = torch.randint(0, CLASSES, (6,), generator=g)
    x_adv = ATTACKS[which](model, x, y, eps)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert not x_adv.requires_grad
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1


@pytest.mark.parametrize("eps", [1 / 255, 8 / 255, 0.1, 0.3])
@pytest.mark.parametrize("which", sorted(ATTACKS))
def test_budget_on_the_trained_model(trained, which, eps):
    model, x, y = trained
    x_adv = ATTACKS[which](model, x[:100], y[:100], eps)
    delta = (x_adv - x[:100]).abs()
    assert delta.max() <= eps + 1e-6 and 0 <= x_adv.min() and x_adv.max() <= 1
    if which == "fgsm":
        # FGSM moves each pixel not clipped by a full eps, or not at all (zero gradient)
        inside = (x[:100] >= eps) & (x[:100] <= 1 - eps)
        d = delta[inside]
        assert ((d < 1e-6) | (d > eps - 1e-6)).all() and (d > eps - 1e-6).any()


@pytest.mark.parametrize("which", sorted(ATTACKS))
def test_eps_zero_returns_x_unchanged(trained, which):
    model, x, y = trained
    x_adv = ATTACKS[which](model, x[:50], y[:50], 0.0)
    assert torch.equal(x_adv, x[:50])
    assert x_adv.data_ptr() != x.data_ptr()  # a copy, not a view of the input


def test_negative_eps_or_steps_rejected(trained):
    model, x, y = trained
    with pytest.raises(ValueError, match="eps"):
        attacks.fgsm(model, x[:2], y[:2], -0.1)
    with pytest.raises(ValueError, match="steps"):
        attacks.pgd(model, x[:2], y[:2], 0.1, steps=-1)


def test_float64_in_float64_out():
    model = untrained().double()
    x = torch.rand(4, 1, SIZE, SIZE, dtype=torch.float64, generator=gen(3))
    y = torch.tensor([0, 1, 2, 0])
    for fn in ATTACKS.values():
        x_adv = fn(model, x, y, 0.05)
        assert x_adv.dtype == torch.float64 and (x_adv - x).abs().max() <= 0.05 + 1e-12


# ------------------------------------------------------------------ model hygiene


@pytest.mark.parametrize("which", sorted(ATTACKS))
def test_no_parameter_grads_training_flag_restored_and_eval_mode_used(which):
    model = untrained(1).train()  # training mode: BatchNorm would update, Dropout would drop
    model[1].eval()  # one submodule with its own flag: must be restored individually
    running_mean = model[1].running_mean.clone()
    x = torch.rand(8, 1, SIZE, SIZE, generator=gen(4))
    y = torch.randint(0, CLASSES, (8,), generator=gen(5))
    a = ATTACKS[which](model, x, y, 0.1)
    b = ATTACKS[which](model, x, y, 0.1)
    assert torch.equal(a, b)  # eval mode: no dropout masks, deterministic
    assert all(p.grad is None for p in model.parameters())
    assert model.training and not model[1].training and model[-2].training
    assert torch.equal(model[1].running_mean, running_mean)


def test_training_flag_restored_on_error():
    model = untrained().train()
    with pytest.raises(RuntimeError):
        attacks.pgd(model, torch.rand(2, 3, SIZE, SIZE), torch.tensor([0, 1]), 0.1)  # wrong channels
    assert model.training and all(m.training for m in model.modules())


# ------------------------------------------------------------------ PGD vs FGSM


@pytest.mark.parametrize("eps", [0.02, 0.1, 0.15])
@pytest.mark.parametrize("random_start", [True, False])
def test_pgd_loss_never_below_fgsm_per_sample(trained, eps, random_start):
    model, x, y = trained
    loss_fgsm = attacks.per_sample_loss(model, attacks.fgsm(model, x, y, eps), y)
    x_pgd = attacks.pgd(model, x, y, eps, steps=5, random_start=random_start, generator=gen(7))
    loss_pgd = attacks.per_sample_loss(model, x_pgd, y)
    assert (loss_pgd >= loss_fgsm - 1e-5).all()
    assert loss_pgd.mean() > loss_fgsm.mean()  # and strictly better on the whole


def test_pgd_best_iterate_never_below_last_iterate(trained):
    model, x, y = trained
    best = attacks.pgd(model, x, y, 0.1, steps=5, generator=gen(8))
    last = attacks.pgd(model, x, y, 0.1, steps=5, generator=gen(8), keep_best=False)
    assert (attacks.per_sample_loss(model, best, y) >= attacks.per_sample_loss(model, last, y) - 1e-5).all()


def test_pgd_one_full_step_without_random_start_is_fgsm(trained):
    model, x, y = trained
    one = attacks.pgd(model, x, y, 0.07, steps=1, step_size=0.07, random_start=False, keep_best=False)
    assert torch.allclose(one, attacks.fgsm(model, x, y, 0.07), atol=1e-7)


def test_pgd_is_reproducible_with_a_seeded_generator(trained):
    model, x, y = trained
    a = attacks.pgd(model, x[:64], y[:64], 0.1, steps=3, generator=gen(1), keep_best=False)
    b = attacks.pgd(model, x[:64], y[:64], 0.1, steps=3, generator=gen(1), keep_best=False)
    c = attacks.pgd(model, x[:64], y[:64], 0.1, steps=3, generator=gen(2), keep_best=False)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_accuracy_under_attack_non_increasing_in_eps(trained):
    model, x, y = trained
    grid = [0.0, 0.05, 0.1, 0.15, 0.2]
    acc_pgd = [attacks.accuracy_under_attack(model, x, y, functools.partial(pgd_seeded, eps=e)) for e in grid]
    acc_fgsm = [attacks.accuracy_under_attack(model, x, y, functools.partial(attacks.fgsm, eps=e)) for e in grid]
    assert acc_pgd[0] > 0.97 and acc_pgd[-1] < 0.1  # the grid spans intact to broken
    for acc in (acc_pgd, acc_fgsm):
        assert all(b <= a for a, b in zip(acc, acc[1:])), acc
    assert all(p <= f for p, f in zip(acc_pgd, acc_fgsm)), (acc_pgd, acc_fgsm)  # PGD is the stronger attack


# ------------------------------------------------------------------ batching


def test_attack_in_batches_matches_one_batch(trained):
    model, x, y = trained
    fn = functools.partial(attacks.pgd, eps=0.1, steps=3, random_start=False)
    whole = fn(model, x, y)
    batched = attacks.attack_in_batches(model, x, y, fn, batch_size=64)  # 400 = 6 x 64 + 16
    assert torch.allclose(batched, whole, atol=1e-6)
    fg = attacks.attack_in_batches(model, x, y, functools.partial(attacks.fgsm, eps=0.1), batch_size=150)
    assert torch.allclose(fg, attacks.fgsm(model, x, y, 0.1), atol=1e-6)
    assert attacks.attack_in_batches(model, x[:0], y[:0], fn, batch_size=8).shape == (0, 1, SIZE, SIZE)
    with pytest.raises(ValueError, match="batch_size"):
        attacks.attack_in_batches(model, x, y, fn, batch_size=0)


# ------------------------------------------------------------------ agreement with ART

ART_REASON = (
    "adversarial-robustness-toolbox (ART) is not installed: `pip install adversarial-robustness-toolbox` "
    "to compare harness.attacks with ART's FGSM and PGD"
)


@pytest.fixture(scope="module")
def art_classifier(trained):
    pytest.importorskip("art", reason=ART_REASON)
    from art.estimators.classification import PyTorchClassifier

    # ART's loss_gradient calls backward() and so fills .grad: give it its own copy
    model, _, _ = trained
    art_model = tiny_cnn()
    art_model.load_state_dict(model.state_dict())
    art_model.eval()
    return PyTorchClassifier(
        model=art_model,
        loss=nn.CrossEntropyLoss(),
        input_shape=(1, SIZE, SIZE),
        nb_classes=CLASSES,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("eps", [2 / 255, 0.05, 0.15])
def test_fgsm_matches_art(trained, art_classifier, eps):
    from art.attacks.evasion import FastGradientMethod

    model, x, y = trained
    ours = attacks.fgsm(model, x, y, eps)
    theirs = FastGradientMethod(art_classifier, norm=np.inf, eps=eps, batch_size=128).generate(x.numpy(), y=y.numpy())
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=0, atol=1e-6)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("eps", [0.05, 0.15])
def test_pgd_last_iterate_matches_art(trained, art_classifier, eps):
    """ART's PGD returns its last iterate (no best-iterate tracking): compare with
    ``keep_best=False``, both starting at x (no random start), same steps and step size."""
    from art.attacks.evasion import ProjectedGradientDescent

    model, x, y = trained
    steps, step = 10, 2.5 * eps / 10
    ours = attacks.pgd(model, x, y, eps, steps=steps, step_size=step, random_start=False, keep_best=False)
    attack = ProjectedGradientDescent(
        art_classifier,
        norm=np.inf,
        eps=eps,
        eps_step=step,
        max_iter=steps,
        num_random_init=0,
        batch_size=128,
        verbose=False,
    )
    theirs = attack.generate(x.numpy(), y=y.numpy())
    # ART clips then projects (x + clip(c - x)), we project onto [x-eps, x+eps] & [0, 1] in
    # one clamp: equal up to float rounding, and no rounding difference may flip a sign step.
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=0, atol=1e-6)
