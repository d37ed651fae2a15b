"""Calibration: top-label ECE over 15 equal-width bins, split into its overconfident and
underconfident parts (harness/metrics), so a bound can forbid overconfidence without punishing a
model that became cautious; the fitted temperature (Guo et al. 2017) on both sides; the Brier
score and the ECE over equal-mass bins (classwise ECE is reported)."""

import pytest

pytestmark = pytest.mark.calibration


def test_ece(gate):
    gate("ece")


def test_temperature(gate):
    """The temperature that would calibrate the model (minimising the test NLL of softmax(z / T)):
    bounded on both sides, it catches logits made sharper (T above its range) or flatter (below),
    which ECE's bins blur."""
    gate("temperature")


def test_ece_over(gate):
    """The part of the ECE from bins where confidence exceeds accuracy."""
    gate("ece_over")


def test_ece_under(gate):
    """The part of the ECE from bins where accuracy exceeds confidence."""
    gate("ece_under")


def test_brier(gate):
    """The Brier score: the whole probability vector against the label, not only the top one."""
    gate("brier")


def test_adaptive_ece(gate):
    """ECE over equal-mass bins: less sensitive to where the bin edges fall."""
    gate("adaptive_ece")
