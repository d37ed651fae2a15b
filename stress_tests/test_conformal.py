"""Conformal prediction (seed 001's "reject below 70%", made a guarantee): prediction sets
calibrated on the validation split must hold the true class of at least 1 - alpha of the test
images (--conformal-alpha, default 0.1), with sets small enough to act on; coverage per class
and under shift shows where the guarantee breaks (harness/conformal.py)."""

import pytest

pytestmark = pytest.mark.conformal


@pytest.mark.parametrize("metric", ["lac_coverage_margin", "aps_coverage_margin"])
def test_coverage(gate, metric):
    """Coverage minus the least a sound run reaches for this many validation and test images at
    this alpha (a beta-binomial floor, 1 in 10,000): a negative margin is a broken guarantee."""
    gate(metric)


@pytest.mark.parametrize("metric", ["lac_set_size", "aps_set_size"])
def test_set_size(gate, metric):
    gate(metric)


def test_worst_class_coverage(gate):
    gate("conformal_worst_class_coverage")


def test_coverage_under_shift(gate):
    """Coverage under the common corruptions at severity 3, the threshold fitted without shift."""
    gate("conformal_shift_coverage")
