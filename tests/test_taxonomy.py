"""The failure taxonomy (harness/taxonomy.py): the rules on hand-built signals, and the whole
analysis on synthetic models built to fail in one known way each."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from harness import taxonomy
from harness.metrics import Samples
from harness.taxonomy import MODES


@pytest.mark.parametrize("signals, mode", [
    ((True, True, 0.9, True, True), "ambiguous label"),  # first rule wins
    ((True, False, 0.2, False, False), "unexplained"),  # a cleanlab flag alone is not label doubt
    ((False, True, 0.2, False, False), "unexplained"),  # nor is the label being the runner-up
    ((False, False, 0.75, True, True), "background or context"),
    ((False, False, np.nan, True, True), "occlusion or part"),  # a degenerate map is no evidence
    ((False, False, 0.5, True, True), "occlusion or part"),
    ((False, False, 0.5, False, True), "scale"),
    ((False, False, 0.5, False, False), "unexplained"),
])
def test_rules_and_their_order(signals, mode):
    assert taxonomy.classify(*[[s] for s in signals]) == [mode]


def test_border_mass():
    m = np.zeros((3, 28, 28))
    m[0, :2, :] = 1.0  # all on the top rows
    m[1, 12:16, 12:16] = 1.0  # all in the centre
    m[2] = 1.0  # uniform: the band's share of the pixels
    out = taxonomy.border_mass(m)
    assert out[0] == 1.0 and out[1] == 0.0
    assert out[2] == pytest.approx(1 - 20 * 20 / 784)  # band 4 px
    assert np.isnan(taxonomy.border_mass(np.zeros((1, 28, 28))))[0]


def test_confused_pairs_count_both_directions():
    labels = np.array([0, 0, 1, 1, 2, 2, 2])
    pred = np.array([1, 0, 0, 0, 2, 1, 2])
    probs = np.eye(3)[pred] * 0.8 + 0.2 / 3
    pairs = taxonomy.confused_pairs(Samples.from_probs(probs, labels))
    assert pairs == [(0, 1, 3), (1, 2, 1)]


class Readout(nn.Module):
    """A 1-channel conv (the CAM layer) then fixed readouts of named regions per class."""

    def __init__(self, regions: list[torch.Tensor], weights: list[float], kernel: torch.Tensor | None = None,
                 bias: list[float] | None = None, threshold: float = 0.0):
        super().__init__()
        k = kernel if kernel is not None else torch.ones(1, 1, 1, 1)
        self.conv = nn.Conv2d(1, 1, k.shape[-1], padding="same")
        with torch.no_grad():
            self.conv.weight.copy_(k)
            self.conv.bias.fill_(-threshold)  # the layer's units fire only above the threshold
        self.relu = nn.ReLU()
        r = torch.stack(regions).float()
        self.register_buffer("readout", (r / r.sum((1, 2), keepdim=True)).flatten(1))
        self.register_buffer("w", torch.tensor(weights))
        self.register_buffer("b", torch.tensor(bias or [0.0] * len(weights)))

    def forward(self, x):
        f = self.relu(self.conv(x)).flatten(1)
        return (f @ self.readout.T) * self.w + self.b


def _analyse(model, images, labels):
    x = torch.as_tensor(images, dtype=torch.float32)
    with torch.no_grad():
        z = model(x).double()
    probs = torch.softmax(z, 1).numpy()
    s = Samples.from_probs(probs, labels)
    x_uint8 = (x * 255).round().to(torch.uint8)
    return taxonomy.analyse(model, s, probs, x_uint8, "cpu")


def _regions():
    centre = torch.zeros(28, 28)
    centre[8:20, 8:20] = 1
    border = torch.ones(28, 28)
    border[4:24, 4:24] = 0
    everywhere = torch.ones(28, 28)
    return centre, border, everywhere


def test_a_model_that_reads_the_surroundings_makes_background_errors():
    centre, border, everywhere = _regions()
    # the CAM layer fires only on bright pixels (> 0.8): the band, not the object; class 1
    # reads it on the border
    model = Readout([centre, border, everywhere], [2.0, 200.0, 3.0], threshold=0.8).eval()
    rng = np.random.default_rng(0)
    n = 40
    images = rng.uniform(0, 0.1, (n, 1, 28, 28))
    images[:, :, 10:18, 10:18] = 0.6  # the object, in the centre (class 0)
    images[:20, :, :3, :] = 1.0  # half of them with a bright band on top: the context
    labels = np.zeros(n, dtype=int)
    t = _analyse(model, images, labels)
    assert len(t.positions) == 20 and set(t.positions) == set(range(20))  # the bright-band images, wrong at >= 90%
    assert np.all(t.border_mass > taxonomy.BORDER_MASS)
    assert t.counts()["background or context"] == 20


def test_a_model_that_rests_on_one_small_part_makes_occlusion_errors():
    spot = torch.zeros(28, 28)
    spot[12:15, 12:15] = 1  # a 3x3 spot in the middle
    _, _, everywhere = _regions()
    # class 1 reads the spot (10 x 1.0 = 10 against class 0's 6: wrong at 98%); a grey (0.5)
    # square over the spot leaves 5 < 6, and the prediction falls back to the label
    model = Readout([everywhere, spot, everywhere], [6.0 / 0.4, 10.0, 0.0]).eval()
    rng = np.random.default_rng(1)
    n = 30
    images = rng.uniform(0.3, 0.5, (n, 1, 28, 28))
    images[:, :, 12:15, 12:15] = 1.0  # a bright spot: read as class 1 (wrong; the label is 0)
    labels = np.zeros(n, dtype=int)
    t = _analyse(model, images, labels)
    assert len(t.positions) == n
    assert t.occlusion_flip.all() and np.nanmax(t.border_mass) < taxonomy.BORDER_MASS
    assert t.counts()["occlusion or part"] == n


def test_a_model_that_needs_fine_detail_makes_scale_errors():
    _, _, everywhere = _regions()
    checker = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])[None, None]
    # class 1 reads the checkerboard's fine detail (60 x 0.6 = 36: wrong at ~100%); at half the
    # resolution the pattern is gone and class 0's constant 1.0 wins
    model = Readout([everywhere, everywhere, everywhere], [0.0, 60.0, 3.0], kernel=checker, bias=[1.0, 0.0, 0.0]).eval()
    yy, xx = np.mgrid[0:28, 0:28]
    board = ((yy + xx) % 2).astype(float)
    n = 20
    images = np.repeat((0.2 + 0.6 * board)[None, None], n, 0)
    labels = np.zeros(n, dtype=int)
    t = _analyse(model, images, labels)
    assert len(t.positions) == n
    assert t.scale_flip.all() and not t.occlusion_flip.any()
    assert t.counts() == {**dict.fromkeys(MODES, 0), "scale": n}
    by_class = t.by_class(labels, 3)
    assert by_class[0, MODES.index("scale")] == n and by_class.sum() == n
