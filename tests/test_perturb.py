"""harness.perturb: geometric perturbations and the occlusion sweep."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from harness import cards, perturb


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only add overhead (and spin on a shared CPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(b=4, c=1, h=28, w=28, seed=0) -> torch.Tensor:
    return torch.rand(b, c, h, w, generator=gen(seed))


SHAPES = [(4, 1, 28, 28), (3, 3, 32, 32)]

# ------------------------------------------------------------------ identities, shapes, ranges


@pytest.mark.parametrize("shape", SHAPES)
def test_identity_cases(shape):
    x = torch.rand(*shape, generator=gen(1))
    for out in (perturb.rescale(x, 1.0), perturb.translate(x, 0, 0), perturb.rotate(x, 0), perturb.rotate(x, 360)):
        assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()
    assert torch.equal(perturb.translate(x, torch.zeros(shape[0]), torch.zeros(shape[0])), x)
    assert torch.allclose(perturb.rotate(x, torch.zeros(shape[0])), x, atol=1e-5)  # bilinear path: up to rounding
    assert torch.equal(perturb.hflip(perturb.hflip(x)), x)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "op",
    [
        lambda x: perturb.rescale(x, 0.5),
        lambda x: perturb.rescale(x, 0.75),
        lambda x: perturb.rescale(x, 0.5, mode="area"),
        lambda x: perturb.translate(x, 3, -2, fill=0.5),
        lambda x: perturb.translate(x, torch.arange(x.shape[0]) - 1, 2),
        lambda x: perturb.rotate(x, 17.0),
        lambda x: perturb.rotate(x, -90),
        perturb.hflip,
    ],
    ids=["rescale0.5", "rescale0.75", "area0.5", "translate", "translate-each", "rotate17", "rotate-90", "hflip"],
)
def test_shape_dtype_range_kept(op, shape, dtype):
    x = torch.rand(*shape, generator=gen(2)).to(dtype)
    out = op(x)
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert out.min() >= 0 and out.max() <= 1


# ------------------------------------------------------------------ hflip


def test_hflip_mirrors_columns():
    x = images()
    assert torch.equal(perturb.hflip(x)[..., 0], x[..., -1])
    assert torch.equal(perturb.hflip(x)[..., 0, :], x[..., 0, :].flip(-1))  # rows stay rows


# ------------------------------------------------------------------ rescale


@pytest.mark.parametrize("mode", ["bilinear", "area"])
def test_rescale_removes_detail_finer_than_the_new_resolution(mode):
    # a one-pixel checkerboard has no representation at half resolution: it becomes flat
    # grey (up to 0.011 in the corners, where the antialiasing filter is cut by the border)
    r = torch.arange(28)
    board = ((r[:, None] + r[None, :]) % 2).float()[None, None]
    out = perturb.rescale(board, 0.5, mode=mode)
    assert (out - 0.5).abs().max() < 0.015
    assert (out - 0.5)[..., 3:-3, 3:-3].abs().max() < 1e-6
    # while smooth content (a horizontal ramp) is kept, up to the border
    ramp = torch.linspace(0, 1, 28).expand(1, 1, 28, 28).contiguous()
    assert (perturb.rescale(ramp, 0.5, mode=mode) - ramp)[..., 2:-2].abs().max() < 0.02
    const = torch.full((2, 3, 32, 32), 0.3)
    assert torch.allclose(perturb.rescale(const, 0.75, mode=mode), const, atol=1e-6)


def test_rescale_rejects_bad_arguments():
    x = images()
    for factor in (0, -0.5, 1.5):
        with pytest.raises(ValueError, match="factor"):
            perturb.rescale(x, factor)
    with pytest.raises(ValueError, match="mode"):
        perturb.rescale(x, 0.5, mode="nearest")


# ------------------------------------------------------------------ translate


def test_translate_moves_a_bright_pixel_by_one_column():
    x = torch.zeros(2, 1, 28, 28)
    x[0, 0, 10, 10] = 1.0
    x[1, 0, 3, 20] = 1.0
    out = perturb.translate(x, 1, 0)
    assert out[0, 0, 10, 11] == 1 and out[1, 0, 3, 21] == 1 and out.sum() == 2
    down = perturb.translate(x, 0, 2)
    assert down[0, 0, 12, 10] == 1 and down[1, 0, 5, 20] == 1 and down.sum() == 2


@pytest.mark.parametrize("dx,dy", [(1, 0), (0, -3), (-4, 5), (27, 0), (0, -28), (40, 40)])
def test_translate_fills_uncovered_border_and_keeps_content(dx, dy):
    x = images(c=3, h=28, w=28)
    out = perturb.translate(x, dx, dy, fill=0.25)
    for r in range(28):
        for c in range(0, 28, 9):
            sr, sc = r - dy, c - dx
            want = x[..., sr, sc] if (0 <= sr < 28 and 0 <= sc < 28) else torch.full_like(x[..., 0, 0], 0.25)
            assert torch.equal(out[..., r, c], want)


def test_translate_per_image_shifts_match_single_shifts():
    x = images(b=5, c=3, h=12, w=16)
    dx = torch.tensor([0, 1, -3, 16, 2])
    dy = torch.tensor([2, 0, -1, 0, -12])
    out = perturb.translate(x, dx, dy, fill=0.7)
    for i in range(5):
        assert torch.equal(out[i : i + 1], perturb.translate(x[i : i + 1], int(dx[i]), int(dy[i]), fill=0.7))
    assert torch.equal(perturb.translate(x, torch.tensor(2), 1), perturb.translate(x, 2, 1))


# ------------------------------------------------------------------ rotate


@pytest.mark.parametrize("shape", [(3, 1, 28, 28), (2, 3, 32, 32), (2, 1, 20, 28)])
@pytest.mark.parametrize("degrees", [5.0, -12.5, 30.0, 45.0, 90.0, 137.0, 180.0, 270.0, -200.0])
def test_rotate_matches_torchvision(shape, degrees):
    x = torch.rand(*shape, generator=gen(4))
    ours = perturb.rotate(x, degrees)
    theirs = TF.rotate(x, degrees, interpolation=InterpolationMode.BILINEAR)
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()


def test_rotate_is_counter_clockwise():
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 7] = 1.0  # right of the centre (4, 4)
    out = perturb.rotate(x, 90.0)
    assert out[0, 0, 1, 4] == 1  # now above it
    tilted = perturb.rotate(x, 89.0)  # the bilinear path (not rot90) agrees
    assert tilted[0, 0].flatten().argmax() == 1 * 9 + 4


def test_rotate_per_image_angles_match_single_angles():
    x = images(b=3, c=3, h=32, w=32)
    angles = torch.tensor([10.0, -45.0, 100.0])
    out = perturb.rotate(x, angles)
    for i in range(3):
        assert torch.allclose(out[i : i + 1], perturb.rotate(x[i : i + 1], float(angles[i])), atol=1e-5)


# ------------------------------------------------------------------ occlusion sweep

TOP, LEFT = 8, 12  # the 8x8 region the region model looks at: placement (2, 3) on the stride-4 grid


class MeanThreshold(nn.Module):
    """3 classes from the mean m of a window: logits = w m + b with w = (-20, 0, 20) and
    b = (7, 0, -13): class 0 when m < 0.35, 2 when m > 0.65, 1 in between."""

    def __init__(self, window: tuple[slice, slice] | None = None):
        super().__init__()
        self.window = window
        self.register_buffer("w", torch.tensor([-20.0, 0.0, 20.0]))
        self.register_buffer("b", torch.tensor([7.0, 0.0, -13.0]))

    def forward(self, x):
        part = x if self.window is None else x[..., self.window[0], self.window[1]]
        return part.mean(dim=(1, 2, 3))[:, None] * self.w + self.b


def dark_and_bright(n: int = 10, seed: int = 5):
    """n dark images (values in [0, 0.2]: class 0) and n bright ones ([0.8, 1]: class 2)."""
    noise = torch.rand(2 * n, 1, 28, 28, generator=gen(seed)) * 0.2
    x = torch.cat([noise[:n], noise[n:] + 0.8])
    y = torch.cat([torch.zeros(n), torch.full((n,), 2)]).long()
    return x, y


def test_occlusion_finds_the_only_region_a_model_looks_at():
    model = MeanThreshold((slice(TOP, TOP + 8), slice(LEFT, LEFT + 8)))
    x, y = dark_and_bright()
    assert (model(x).argmax(1) == y).all()
    res = perturb.occlusion_sweep(model, x, y, patch=8, stride=4)  # grey 0.5 covers it: class 1
    assert res.sensitivity.shape == (20, 6, 6)
    assert (res.worst_index == 2 * 6 + 3).all()
    assert (res.worst_yx == torch.tensor([TOP, LEFT])).all()
    assert res.worst_accuracy == 0.0 and not res.worst_correct.any() and (res.worst_pred == 1).all()
    # the map peaks at the placement covering the region, falls off with partial overlap,
    # and is exactly 0 where the patch does not touch it
    s = res.sensitivity
    assert (s[:, 2, 3] > 0.9).all()
    assert (s[:, 2, 3][:, None, None] >= s).all()
    touches = torch.zeros(6, 6, dtype=torch.bool)
    touches[1:4, 2:5] = True  # tops 4..12 and lefts 8..16 overlap rows 8..15 / columns 12..19
    assert (s[:, ~touches].abs() < 1e-6).all() and (s[:, touches] > 1e-3).all()
    assert torch.allclose(res.clean_prob, torch.softmax(model(x), 1).gather(1, y[:, None])[:, 0])


def test_occlusion_leaves_a_whole_image_average_unmoved():
    model = MeanThreshold(None)
    x, y = dark_and_bright()
    res = perturb.occlusion_sweep(model, x, y, patch=8, stride=4)
    assert res.worst_accuracy == 1.0 and torch.equal(res.worst_pred, y)
    assert (res.sensitivity.abs() < 0.05).all()


def small_cnn(c: int, h: int, w: int, seed: int = 0) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv2d(c, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(0.3),
            nn.Linear(4 * (h // 2) * (w // 2), 5),
        )


def naive_sweep(model, x, y, patch, stride, fill):
    """Reference: one placement at a time, in Python loops."""
    model.eval()
    _, c, h, w = x.shape
    with torch.no_grad():
        clean = model(x).softmax(1).gather(1, y[:, None])[:, 0]
        tops, lefts = range(0, h - patch + 1, stride), range(0, w - patch + 1, stride)
        probs = torch.empty(len(x), len(tops), len(lefts))
        preds = torch.empty(len(x), len(tops), len(lefts), dtype=torch.long)
        for i, t in enumerate(tops):
            for j, left in enumerate(lefts):
                xo = x.clone()
                value = x.mean(dim=(2, 3), keepdim=True) if fill == "mean" else torch.tensor(fill)
                xo[..., t : t + patch, left : left + patch] = value.expand_as(
                    xo[..., t : t + patch, left : left + patch]
                )
                logits = model(xo)
                probs[:, i, j] = logits.softmax(1).gather(1, y[:, None])[:, 0]
                preds[:, i, j] = logits.argmax(1)
    return clean[:, None, None] - probs, preds


@pytest.mark.parametrize("fill", [0.5, 0.0, "mean"])
@pytest.mark.parametrize("batch_size", [5, 64, 4096])  # below, between and above the placements per image
@pytest.mark.parametrize("shape,patch,stride", [((7, 1, 28, 28), 8, 4), ((5, 3, 32, 32), 8, 4), ((3, 3, 20, 17), 6, 5)])
def test_occlusion_sweep_matches_a_naive_loop(shape, patch, stride, fill, batch_size):
    x = torch.rand(*shape, generator=gen(6))
    y = torch.randint(0, 5, (shape[0],), generator=gen(7))
    model = small_cnn(*shape[1:]).train()  # training mode: the sweep must use eval mode
    res = perturb.occlusion_sweep(model, x, y, patch=patch, stride=stride, fill=fill, batch_size=batch_size)
    assert model.training and all(p.grad is None for p in model.parameters())
    sens, preds = naive_sweep(model, x, y, patch, stride, fill)
    assert torch.allclose(res.sensitivity, sens, atol=1e-5)
    nw = sens.shape[2]
    flat = sens.reshape(len(x), -1)
    # worst placement: highest sensitivity (ties within float noise allowed)
    assert torch.allclose(flat.gather(1, res.worst_index[:, None])[:, 0], flat.max(1).values, atol=1e-6)
    assert torch.equal(res.worst_yx, torch.stack([res.worst_index // nw * stride, res.worst_index % nw * stride], 1))
    assert torch.equal(res.worst_pred, preds.reshape(len(x), -1).gather(1, res.worst_index[:, None])[:, 0])
    assert torch.equal(res.worst_correct, res.worst_pred == y)


def test_occlusion_masks_tile_the_usual_sizes():
    for size, (patch, stride) in cards.OCCLUSION_BY_SIZE.items():
        masks = perturb.occlusion_masks(size, size, patch, stride)
        n = (size - patch) // stride + 1
        assert masks.shape == (n * n, size, size) and (masks.sum((1, 2)) == patch * patch).all()
        assert masks.any(0).all()  # every pixel is covered by some placement
    assert perturb.occlusion_masks(28, 28, 8, 4).shape[0] == 36
    assert perturb.occlusion_masks(32, 32, 8, 4).shape[0] == 49
    with pytest.raises(ValueError):
        perturb.occlusion_masks(28, 28, 30, 4)
    with pytest.raises(ValueError):
        perturb.occlusion_masks(28, 28, 8, 0)


def test_occlusion_sweep_of_no_images():
    model = MeanThreshold(None)
    res = perturb.occlusion_sweep(model, torch.empty(0, 1, 28, 28), torch.empty(0, dtype=torch.long))
    assert res.sensitivity.shape == (0, 6, 6) and res.worst_index.shape == (0,)
    with pytest.raises(ValueError, match="fill"):
        perturb.occlusion_sweep(model, *dark_and_bright(2), fill="median")


def test_occlusion_sweep_channels_last_is_temporary_and_changes_nothing():
    x = torch.rand(3, 3, 32, 32, generator=gen(8))
    y = torch.tensor([0, 3, 4])
    model = small_cnn(3, 32, 32)
    conv = model[0].weight
    fast = perturb.occlusion_sweep(model, x, y)
    assert model[0].weight is conv and conv.is_contiguous()  # same Parameter, format restored
    plain = perturb.occlusion_sweep(model, x, y, use_channels_last=False)
    assert torch.allclose(fast.sensitivity, plain.sensitivity, atol=1e-5)
    model.to(memory_format=torch.channels_last)  # a caller's channels-last model stays so
    perturb.occlusion_sweep(model, x, y)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
