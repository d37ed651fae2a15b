"""A synthetic world with planted models: each is good except in exactly one respect.

Images: 28x28 grey, 10 classes. Class k is drawn as two bright 6x6 squares, one at position
P_k in the left half and its mirror image in the right half (so a horizontal flip keeps the
class), on a dim noisy background. A share of the test labels (``LABEL_NOISE``) is wrong on
purpose, so even a perfect reader makes errors, and a calibrated one makes them without
confidence.

Models are fixed (no training): a 1x1 convolution (the Grad-CAM layer) then a readout of
the mean intensity of each class's squares, scaled by ``sharpness``. ``good`` is calibrated
(its confidence on a clean image is about its accuracy); every other model breaks one thing:

=================  ======================================================================
overconfident      the same reader with 10x sharper logits: confident errors, high ECE
underconfident     much flatter logits: nothing reaches 70% confidence, underconfident ECE
blind-class        never predicts class 3
blind-rare         never predicts classes 7-9, the rarest ones of a long-tailed run
memoriser          recalls the labels of the training images exactly, guesses elsewhere
noise-fragile      reads one thresholded pixel per class: additive noise flips it
detail-reliant     reads each left square's top-left corner as an edge (the corner minus its
                   left and upper neighbours): a sharp square's corner stands out by at least
                   0.4, a low-pass filter blurs the step away (it leans on fine detail, not on
                   shape)
one-copy           reads only the left square, through a threshold: one grey patch hides it
shift-fragile      reads the corner pixel of each left square: a one-pixel shift moves it away
flip-variant       adds a bonus to class 0 when the top-left corner is brighter than the
                   top-right one: a mirror changes its predictions (and it pays on clean data)
chance             ignores the image
top-shuffled       the good reader with its three highest logits put in a shuffled order (the
                   same for the same image): the right class is still among the top three, no
                   longer first; conformal sets grow and the small ones miss the true class
source-blind       the good reader, except on the test images of one source (``source_ids``: a
                   seventh of them, unrelated to what they show; it knows them by their pixels):
                   a weak segment only a metadata column names (tests/test_segments_suite.py)
dark-blind         the good reader, except on the darkest fifth of the test images (mean grey
                   level below the test split's 20% quantile), where it confidently names the
                   next class: a weak segment the search must find (brightness q1)
=================  ======================================================================
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

SIZE = 28
CLASSES = tuple(f"shape-{k}" for k in range(10))
SQUARE = 6
# top-left corners of the left-half squares: two columns x five rows
CORNERS = [(1 + 5 * (k // 2), 1 + 6 * (k % 2)) for k in range(10)]
LABEL_NOISE = 0.10
GOOD_SHARPNESS = 6.0  # softmax(6 x 0.75 margin) ~ 0.9 confidence on a clean image, ~ the accuracy


def masks() -> torch.Tensor:
    """(10, 28, 28): 1 on both squares of each class."""
    m = torch.zeros(10, SIZE, SIZE)
    for k, (r, c) in enumerate(CORNERS):
        m[k, r : r + SQUARE, c : c + SQUARE] = 1
        m[k, r : r + SQUARE, SIZE - c - SQUARE : SIZE - c] = 1
    return m


def draw(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 images (N, 28, 28) of the given classes."""
    n = len(labels)
    x = rng.uniform(0.0, 0.3, size=(n, SIZE, SIZE))
    m = masks().numpy().astype(bool)
    for i, k in enumerate(labels):
        x[i][m[k]] = 1.0
    return np.round(x * 255).astype(np.uint8)


def world(n_train: int = 2000, n_test: int = 1000, seed: int = 0):
    """(train_x, train_y, test_x, test_y) as uint8 / int64 arrays; the test labels carry
    ``LABEL_NOISE`` wrong labels (the image shows another class)."""
    rng = np.random.default_rng(seed)
    train_y = rng.integers(0, 10, n_train)
    test_shown = rng.integers(0, 10, n_test)
    train_x = draw(train_y, rng)
    test_x = draw(test_shown, rng)
    test_y = test_shown.copy()
    flip = rng.random(n_test) < LABEL_NOISE
    test_y[flip] = (test_shown[flip] + rng.integers(1, 10, flip.sum())) % 10
    return train_x, train_y.astype(np.int64), test_x, test_y.astype(np.int64)


class RegionReader(nn.Module):
    """logit_k = sharpness * mean intensity over class k's squares (+ bias_k)."""

    def __init__(self, sharpness: float = GOOD_SHARPNESS, region: torch.Tensor | None = None, bias=None):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1, bias=False)
        nn.init.ones_(self.conv.weight)
        self.relu = nn.ReLU()
        r = masks() if region is None else region
        self.register_buffer("readout", (r / r.sum((1, 2), keepdim=True)).reshape(10, -1))
        self.sharpness = sharpness
        self.register_buffer("bias", torch.zeros(10) if bias is None else torch.as_tensor(bias, dtype=torch.float32))

    def forward(self, x):
        f = self.relu(self.conv(x)).flatten(1)
        return self.sharpness * (f @ self.readout.T) + self.bias

    def cam_layer(self):
        return self.conv


def left_masks() -> torch.Tensor:
    m = torch.zeros(10, SIZE, SIZE)
    for k, (r, c) in enumerate(CORNERS):
        m[k, r : r + SQUARE, c : c + SQUARE] = 1
    return m


class OneCopyReader(RegionReader):
    """The left square only, through a threshold at 0.7, falling back to class 0: a clean
    square reads 1.0, a grey (0.5) occluding patch over it reads 0.5 and the class is lost."""

    def __init__(self):
        super().__init__(sharpness=1.0, region=left_masks())

    def forward(self, x):
        f = self.relu(self.conv(x)).flatten(1)
        fallback = torch.zeros(10, device=x.device)
        fallback[0] = 1.0
        return 5.0 * torch.sigmoid(20.0 * (f @ self.readout.T - 0.7)) + fallback


class FlipVariant(RegionReader):
    def forward(self, x):
        bonus = (x[:, 0, 0, 0] > x[:, 0, 0, -1] + 0.1).float() * 8.0
        logits = super().forward(x)
        return logits + torch.nn.functional.one_hot(torch.zeros_like(bonus).long(), 10) * bonus[:, None]


class ThresholdReader(RegionReader):
    """Reads one pixel per class (the centre of the left square) through a steep threshold
    at 0.95, and falls back to class 0 when no pixel passes: a clean square's pixel is 1.0
    (confidence about 0.9, like ``good``), additive noise pushes it under the threshold."""

    def __init__(self, corner: bool = False):
        at = 0 if corner else SQUARE // 2  # the square's top-left corner pixel, or its centre
        pixel = torch.zeros(10, SIZE, SIZE)
        for k, (r, c) in enumerate(CORNERS):
            pixel[k, r + at, c + at] = 1
        super().__init__(sharpness=1.0, region=pixel)

    def forward(self, x):
        f = self.relu(self.conv(x)).flatten(1)
        fallback = torch.zeros(10, device=x.device)
        fallback[0] = 3.0
        return 6.0 * torch.sigmoid(60.0 * (f @ self.readout.T - 0.95)) + fallback


class DetailReader(RegionReader):
    """An edge detector at each left square's top-left corner: d_k = corner - left neighbour -
    upper neighbour, through a steep threshold at 0.35, falling back to class 0. On a clean image
    the own class's d is at least 1 - 0.3 - 0.3 = 0.4 and every other class's below 0.3 (its
    corner and neighbours are background, or its neighbour lies inside the drawn square); a
    Gaussian low-pass (harness/frequency.py) leaves the corner about 0.5 and its neighbours
    about 0.35, so d falls below 0: every class is lost."""

    def __init__(self):
        w = torch.zeros(10, SIZE, SIZE)
        for k, (r, c) in enumerate(CORNERS):
            w[k, r, c], w[k, r, c - 1], w[k, r - 1, c] = 1.0, -1.0, -1.0
        super().__init__(sharpness=1.0)
        self.register_buffer("edges", w.reshape(10, -1))

    def forward(self, x):
        f = self.relu(self.conv(x)).flatten(1)
        fallback = torch.zeros(10, device=x.device)
        fallback[0] = 3.0
        return 6.0 * torch.sigmoid(60.0 * (f @ self.edges.T - 0.35)) + fallback


class TopShuffled(RegionReader):
    """``good``'s logits with the values of its top three classes permuted, the permutation a
    hash of the image's pixels (deterministic, one of the six)."""

    def forward(self, x):
        import itertools

        z = super().forward(x)
        top = z.topk(3, dim=1)
        key = ((x.flatten(1) * 255).round().long().sum(1) * 2654435761) % 6
        perms = torch.tensor(list(itertools.permutations(range(3))), device=x.device)
        return z.scatter(1, top.indices, top.values.gather(1, perms[key]))


class DarkBlind(RegionReader):
    """``good``, but on an image darker than ``threshold`` (its mean intensity in [0, 1]) the
    logits of the next class: confidently wrong on the darkest images only."""

    def __init__(self, threshold: float):
        super().__init__()
        self.threshold = float(threshold)

    def forward(self, x):
        z = super().forward(x)
        dark = x.flatten(1).mean(1) < self.threshold
        return torch.where(dark[:, None], z.roll(1, dims=1) * 3, z)


class SourceBlind(RegionReader):
    """``good``, but on the images it was given (the test images of one source, known by their
    pixels) the logits of the next class."""

    def __init__(self, images: torch.Tensor):
        super().__init__()
        self.register_buffer("keys", images.float().div(255).flatten(1))

    def forward(self, x):
        z = super().forward(x)
        d = torch.cdist(x.flatten(1), self.keys, compute_mode="donot_use_mm_for_euclid_dist")
        known = d.min(1).values < 1e-3
        return torch.where(known[:, None], z.roll(1, dims=1) * 3, z)


def source_ids(n_test: int) -> np.ndarray:
    """The test positions of the one source ``source-blind`` fails on: every seventh."""
    return np.arange(0, n_test, 7)


class Memoriser(nn.Module):
    """Exact recall of the training images' labels (confident), a fixed guess elsewhere."""

    def __init__(self, train_x: torch.Tensor, train_y: torch.Tensor):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1, bias=False)
        nn.init.ones_(self.conv.weight)
        self.register_buffer("keys", train_x.float().div(255).flatten(1))
        self.register_buffer("labels", train_y.long())

    def forward(self, x):
        f = self.conv(x).flatten(1)
        d = torch.cdist(f, self.keys, compute_mode="donot_use_mm_for_euclid_dist")
        dist, nearest = d.min(1)
        known = (dist < 1e-3).float()[:, None]
        recall = torch.nn.functional.one_hot(self.labels[nearest], 10).float() * 12.0
        guess = torch.zeros_like(recall)
        guess[:, 0] = 2.0
        return known * recall + (1 - known) * guess + 0 * f.sum(1, keepdim=True)

    def cam_layer(self):
        return self.conv


class Chance(RegionReader):
    """Ignores the image: the same flat logits everywhere (class 0 slightly ahead)."""

    def forward(self, x):
        return super().forward(x) * 0 + torch.tensor([0.1] + [0.0] * 9, device=x.device)


def planted(name: str, dataset) -> nn.Module:
    """The planted model ``name`` for a dataset of this world (``harness.data.Dataset``)."""
    if name in ("baseline", "good"):
        return RegionReader()
    if name == "overconfident":
        return RegionReader(sharpness=10 * GOOD_SHARPNESS)
    if name == "underconfident":
        return RegionReader(sharpness=1.0)
    if name == "blind-class":
        bias = torch.zeros(10)
        bias[3] = -100.0
        return RegionReader(bias=bias)
    if name == "blind-rare":  # never predicts classes 7-9, the rarest of a long-tailed run
        bias = torch.zeros(10)
        bias[7:] = -100.0
        return RegionReader(bias=bias)
    if name == "memoriser":  # the training split only: the validation images stay unseen
        return Memoriser(dataset.train_x[dataset.train_idx], dataset.train_y[dataset.train_idx])
    if name == "noise-fragile":
        return ThresholdReader()
    if name == "detail-reliant":
        return DetailReader()
    if name == "shift-fragile":
        return ThresholdReader(corner=True)
    if name == "one-copy":
        return OneCopyReader()
    if name == "flip-variant":
        return FlipVariant()
    if name == "chance":
        return Chance()
    if name == "top-shuffled":
        return TopShuffled()
    if name == "source-blind":
        return SourceBlind(dataset.test_x[torch.as_tensor(source_ids(len(dataset.test_y)))])
    if name == "dark-blind":  # the darkest fifth of the test images, by the test split's own quantile
        brightness = dataset.test_x.float().div(255).flatten(1).mean(1)
        return DarkBlind(float(torch.quantile(brightness, 0.2)))
    raise KeyError(name)


PLANTED = ("overconfident", "underconfident", "blind-class", "memoriser", "noise-fragile", "one-copy", "shift-fragile",
           "flip-variant", "chance", "detail-reliant", "top-shuffled", "dark-blind")


# The conftest of a pytester run on this world (``.format(tests=<this folder>)``): the suite's
# plugin, with every recipe's model replaced by the planted model of that name.
CONFTEST = '''
import sys
sys.path.insert(0, {tests!r})
pytest_plugins = ["fixtures.plugin"]
import planted


def pytest_stress_model(recipe, data, device):
    return planted.planted(recipe.name, data)
'''


def write_idx_world(root, **kwargs) -> None:
    """The world as Fashion-MNIST idx files in ``root`` (what ``--data-root`` reads)."""
    import struct
    from pathlib import Path

    train_x, train_y, test_x, test_y = world(**kwargs)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for name, arr in (("train-images-idx3-ubyte", train_x), ("train-labels-idx1-ubyte", train_y),
                      ("t10k-images-idx3-ubyte", test_x), ("t10k-labels-idx1-ubyte", test_y)):
        a = np.ascontiguousarray(arr, dtype=np.uint8)
        (root / name).write_bytes(struct.pack(f">HBB{a.ndim}I", 0, 0x08, a.ndim, *a.shape) + a.tobytes())
