"""harness.augment: batched augmentations on float images in [0, 1]."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from harness import augment


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(b=8, c=3, h=12, w=12, seed=0) -> torch.Tensor:
    return torch.rand(b, c, h, w, generator=gen(seed))


# ------------------------------------------------------------------ hflip


def test_hflip_p0_is_identity_and_p1_flips_everything():
    x = images()
    assert torch.equal(augment.hflip(x, 0.0, gen()), x)
    assert torch.equal(augment.hflip(x, 1.0, gen()), x.flip(-1))
    assert torch.equal(augment.hflip(x, 1.0, gen())[..., 0], x[..., -1])  # left-right, not up-down


def test_hflip_half_flips_some_images_whole():
    x = images(b=64)
    y = augment.hflip(x, 0.5, gen(3))
    flipped = [bool(torch.equal(y[i], x[i].flip(-1))) for i in range(64)]
    kept = [bool(torch.equal(y[i], x[i])) for i in range(64)]
    assert all(f != k for f, k in zip(flipped, kept))  # each image is exactly one of the two
    assert 10 < sum(flipped) < 54


# ------------------------------------------------------------------ random crop


def test_random_crop_padding_0_is_identity():
    x = images()
    y = augment.random_crop(x, 0, gen())
    assert torch.equal(y, x)


@pytest.mark.parametrize("padding", [1, 4])
@pytest.mark.parametrize("shape", [(6, 3, 12, 12), (5, 1, 9, 7)])
def test_random_crop_is_a_window_of_the_padded_image(padding, shape):
    x = torch.rand(*shape, generator=gen(1)) + 0.01  # no zeros inside: padding is recognisable
    y = augment.random_crop(x, padding, gen(2))
    b, c, h, w = shape
    assert y.shape == x.shape
    xp = F.pad(x, (padding,) * 4)
    offsets = set()
    for i in range(b):
        matches = [
            (dy, dx)
            for dy in range(2 * padding + 1)
            for dx in range(2 * padding + 1)
            if torch.equal(y[i], xp[i, :, dy : dy + h, dx : dx + w])
        ]
        assert len(matches) == 1, f"image {i} is not a single window of its padded input"
        offsets.add(matches[0])
    assert len(offsets) > 1  # the offset is drawn per image


def test_random_crop_offsets_cover_the_whole_range():
    x = torch.rand(400, 1, 5, 5, generator=gen(0)) + 0.01
    y = augment.random_crop(x, 2, gen(5))
    xp = F.pad(x, (2,) * 4)
    seen = set()
    for i in range(len(x)):
        for dy in range(5):
            for dx in range(5):
                if torch.equal(y[i], xp[i, :, dy : dy + 5, dx : dx + 5]):
                    seen.add((dy, dx))
    assert seen == {(dy, dx) for dy in range(5) for dx in range(5)}  # inclusive of both extremes


# ------------------------------------------------------------------ rotation


@pytest.mark.parametrize("shape", [(4, 3, 10, 10), (3, 1, 28, 28), (2, 2, 7, 9)])
def test_rotate_by_zero_is_identity(shape):
    x = torch.rand(*shape, generator=gen(0))
    assert torch.equal(augment.rotate_by(x, torch.zeros(shape[0])), x)


def test_rotate_with_zero_degrees_is_identity():
    x = images()
    assert torch.equal(augment.rotate(x, 0.0, gen()), x)


@pytest.mark.parametrize("size", [6, 7, 28])
def test_rotate_by_quarter_turns_are_exact_and_invertible(size):
    x = torch.rand(3, 2, size, size, generator=gen(0))
    q = torch.full((3,), math.pi / 2)
    once = augment.rotate_by(x, q)
    # a quarter turn of a square image moves every pixel (nothing is lost or interpolated) ...
    assert torch.equal(once.flatten(1).sort(1).values, x.flatten(1).sort(1).values)
    assert torch.equal(once, torch.rot90(x, 1, (-2, -1))) or torch.equal(once, torch.rot90(x, -1, (-2, -1)))
    # ... and the opposite angle undoes it; four quarter turns are the identity
    assert torch.equal(augment.rotate_by(once, -q), x)
    y = x
    for _ in range(4):
        y = augment.rotate_by(y, q)
    assert torch.equal(y, x)
    assert torch.equal(augment.rotate_by(x, torch.full((3,), math.pi)), torch.rot90(x, 2, (-2, -1)))


@pytest.mark.parametrize("size", [6, 28])
def test_rotate_by_positive_angle_is_counter_clockwise(size):
    x = torch.rand(2, 1, size, size, generator=gen(0))
    out = augment.rotate_by(x, torch.full((2,), math.pi / 2))
    # torch.rot90(k=1) on (H, W) turns counter-clockwise as displayed (top-right -> top-left)
    assert torch.equal(out, torch.rot90(x, 1, (-2, -1)))


def test_rotate_by_uses_each_images_own_angle():
    x = torch.rand(3, 1, 8, 8, generator=gen(0))
    angles = torch.tensor([0.0, math.pi, 0.0])
    y = augment.rotate_by(x, angles)
    assert torch.equal(y[0], x[0]) and torch.equal(y[2], x[2])
    assert torch.equal(y[1], torch.rot90(x[1], 2, (-2, -1)))


def test_rotate_fills_with_zero_and_keeps_values():
    x = torch.ones(16, 1, 28, 28)
    y = augment.rotate(x, 30.0, gen(0))
    assert y.shape == x.shape
    assert set(torch.unique(y).tolist()) <= {0.0, 1.0}  # nearest neighbour: no new values
    assert (y == 0).any()  # corners leave the image


# ------------------------------------------------------------------ colour jitter


@pytest.mark.parametrize("channels", [1, 3])
def test_color_jitter_strength_0_is_identity(channels):
    x = images(c=channels)
    y = augment.color_jitter(x, 0.0, gen())
    assert torch.allclose(y, x, atol=1e-6, rtol=0)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("strength", [0.2, 0.5, 0.99])
def test_color_jitter_stays_in_range_and_changes_images(channels, strength):
    x = images(b=16, c=channels)
    y = augment.color_jitter(x, strength, gen(1))
    assert y.shape == x.shape
    assert y.min() >= 0 and y.max() <= 1
    assert not torch.allclose(y, x, atol=1e-3)


def test_color_jitter_keeps_grey_images_grey():
    g = torch.rand(8, 1, 10, 10, generator=gen(0))
    x = g.expand(8, 3, 10, 10).contiguous()
    y = augment.color_jitter(x, 0.5, gen(2))
    assert torch.allclose(y[:, 0], y[:, 1], atol=1e-6) and torch.allclose(y[:, 1], y[:, 2], atol=1e-6)


# ------------------------------------------------------------------ cutmix / mixup


def constant_batch(b=8, c=3, h=16, w=16):
    """Sample i is filled with the constant (i + 1) / (b + 1): the source of every pixel is known."""
    values = (torch.arange(b, dtype=torch.float32) + 1) / (b + 1)
    return values.view(b, 1, 1, 1).expand(b, c, h, w).clone(), values


@pytest.mark.parametrize("seed", range(25))
@pytest.mark.parametrize("hw", [(16, 16), (12, 20), (32, 32)])
def test_cutmix_lam_is_the_share_of_own_pixels(seed, hw):
    h, w = hw
    b, k = 8, 5
    x, values = constant_batch(b, 3, h, w)
    labels = torch.arange(b) % k
    target = F.one_hot(labels, k).float()
    out, mixed, lam = augment.cutmix(x, target, 1.0, gen(seed))
    assert 0.0 <= lam <= 1.0
    assert out.shape == x.shape
    box = None
    for i in range(b):
        own = out[i] == values[i]
        assert torch.equal(own, own[:1].expand_as(own))  # all channels pasted alike
        foreign = ~own[0]
        sources = torch.unique(out[i, 0][foreign])
        assert len(sources) <= 1  # pasted from a single other image
        if len(sources):
            j = int(torch.nonzero(values == sources[0])[0])
            assert j != i
            n_pasted = int(foreign.sum())
            assert lam == pytest.approx(1 - n_pasted / (h * w), abs=1e-12)
            # the pasted region is one rectangle, the same for every image
            rows, cols = torch.nonzero(foreign, as_tuple=True)
            region = (int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max()))
            assert n_pasted == (region[1] - region[0] + 1) * (region[3] - region[2] + 1)
            assert box is None or box == region
            box = region
            expected = lam * target[i] + (1 - lam) * target[j]
        else:  # nothing pasted: either an empty box or the image was paired with itself
            expected = target[i]
        assert torch.allclose(mixed[i], expected, atol=1e-6)
    assert torch.allclose(mixed.sum(1), torch.ones(b), atol=1e-6)


def test_cutmix_lam_matches_the_box_even_when_clipped():
    for seed in range(200):
        y1, y2, x1, x2, lam = augment.cutmix_box(10, 14, 0.3, gen(seed), "cpu")
        assert 0 <= y1 <= y2 <= 10 and 0 <= x1 <= x2 <= 14
        assert lam == pytest.approx(1 - (y2 - y1) * (x2 - x1) / 140, abs=1e-12)


@pytest.mark.parametrize("alpha", [0.2, 1.0])
@pytest.mark.parametrize("seed", range(5))
def test_mixup_is_a_convex_combination_with_lam(alpha, seed):
    b, k = 8, 4
    x, values = constant_batch(b, 1, 5, 5)
    target = F.one_hot(torch.arange(b) % k, k).float()
    out, mixed, lam = augment.mixup(x, target, alpha, gen(seed))
    assert 0.0 <= lam <= 1.0
    assert torch.allclose(mixed.sum(1), torch.ones(b), atol=1e-6)
    assert ((mixed >= 0) & (mixed <= 1)).all()
    for i in range(b):
        # out[i] = lam * v_i + (1 - lam) * v_j for one j: recover j and check the target
        vj = (out[i, 0, 0, 0] - lam * values[i]) / (1 - lam) if lam < 1 else values[i]
        j = int(torch.argmin((values - vj).abs()))
        assert torch.allclose(out[i], lam * x[i] + (1 - lam) * x[j], atol=1e-6)
        assert torch.allclose(mixed[i], lam * target[i] + (1 - lam) * target[j], atol=1e-6)


def test_soft_targets_still_sum_to_one():
    b, k = 16, 10
    target = torch.softmax(torch.randn(b, k, generator=gen(0)), 1)
    x = images(b=b)
    for fn in (augment.cutmix, augment.mixup):
        _, mixed, _ = fn(x, target, 1.0, gen(1))
        assert torch.allclose(mixed.sum(1), torch.ones(b), atol=1e-6)


# ------------------------------------------------------------------ determinism


@pytest.mark.parametrize(
    "fn",
    [
        lambda x, g: augment.hflip(x, 0.5, g),
        lambda x, g: augment.random_crop(x, 3, g),
        lambda x, g: augment.rotate(x, 15.0, g),
        lambda x, g: augment.color_jitter(x, 0.4, g),
        lambda x, g: augment.cutmix(x, torch.eye(8), 1.0, g),
        lambda x, g: augment.mixup(x, torch.eye(8), 0.2, g),
    ],
    ids=["hflip", "crop", "rotate", "jitter", "cutmix", "mixup"],
)
def test_same_seed_same_output_other_seed_other_output(fn):
    x = images(b=8)

    def run(seed):
        out = fn(x, gen(seed))
        return out if isinstance(out, tuple) else (out,)

    a, b = run(11), run(11)
    for u, v in zip(a, b):
        assert torch.equal(torch.as_tensor(u), torch.as_tensor(v))
    others = [run(s) for s in range(12, 16)]
    assert any(not torch.equal(a[0], o[0]) for o in others)
