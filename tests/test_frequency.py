"""Frequency bias (harness/frequency.py): the filters against scipy, what they keep and remove,
and the metrics' definitions. The planted defect (a reader that leans on fine detail) fails
``lowpass_accuracy`` in tests/test_gates_can_fail.py, through the stress suite."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from harness import frequency, kinds, metrics
from harness.metrics import Samples


def test_the_low_pass_is_a_periodic_gaussian_blur():
    """A Gaussian transfer exp(-f^2 / 2 s^2) in cycles per pixel is a spatial Gaussian of sd
    1 / (2 pi s), applied periodically (the FFT's wrap-around): scipy's gaussian_filter in wrap
    mode, up to its sampling of the kernel."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 0.8, (3, 1, 28, 28))
    low = frequency.filtered(torch.as_tensor(x), "lowpass").numpy()
    sigma = 1 / (2 * np.pi * frequency.CUTOFF * 0.5)
    ref = np.stack([[ndimage.gaussian_filter(im[0], sigma, mode="wrap", truncate=8)] for im in x])
    assert np.abs(low - ref).max() < 0.01


def test_what_each_filter_keeps():
    yy, xx = np.meshgrid(np.arange(28), np.arange(28), indexing="ij")
    checker = (0.5 + 0.3 * (-1.0) ** (yy + xx))[None, None]  # the highest frequency there is
    smooth = (0.3 + 0.4 * xx / 27.0)[None, None] * np.ones((1, 1, 28, 28))
    for x in (checker, smooth):
        t = torch.as_tensor(x)
        low, high = frequency.filtered(t, "lowpass"), frequency.filtered(t, "highpass")
        assert torch.allclose(low + high - t.mean(), t, atol=1e-9)  # the two halves and the mean make the image
    assert float(frequency.filtered(torch.as_tensor(checker), "lowpass").std()) < 1e-3  # texture gone
    assert float(frequency.filtered(torch.as_tensor(checker), "highpass").std()) > 0.29  # texture kept
    flat = torch.full((1, 3, 8, 8), 0.4, dtype=torch.float64)
    for kind in frequency.FILTERS:
        assert torch.allclose(frequency.filtered(flat, kind), flat)  # brightness kept
    with pytest.raises(ValueError, match="unknown filter 'bandpass'"):
        frequency.filtered(flat, "bandpass")


def test_the_metrics_read_the_frequency_evidence():
    y = np.array([0, 1, 1, 0])
    right = np.eye(2)[y] * 4.0
    wrong = np.eye(2)[1 - y] * 4.0
    ev = {"lowpass": Samples.from_logits(np.r_[right[:3], wrong[3:]], y), "highpass": Samples.from_logits(wrong, y)}
    value = {n: metrics.measure(n, lambda kind: ev) for n in ("lowpass_accuracy", "highpass_accuracy", "frequency_bias")}
    assert value == {"lowpass_accuracy": 0.75, "highpass_accuracy": 0.0, "frequency_bias": 0.75}
    assert metrics.get("lowpass_accuracy").family == "frequency" and metrics.get("lowpass_accuracy").gated
    k = kinds.get("frequency")
    assert k.code == ("frequency.py",) and k.remote and "frequency" in kinds.needed_by({"frequency"})
