"""Conformal prediction (seed 001's "reject below 70%", made a guarantee): prediction sets
calibrated on the validation split must hold the true class of at least 1 - alpha of the test
images (--conformal-alpha, default 0.1), with sets small enough to act on; coverage per class, per
set size and under shift shows where the guarantee breaks (harness/conformal.py). Four methods:
LAC, APS (not randomised), randomised APS (aps_rand) and RAPS."""

import pytest

pytestmark = pytest.mark.conformal


@pytest.mark.parametrize("metric", ["lac_coverage_margin", "aps_coverage_margin", "aps_rand_coverage_margin",
                                    "raps_coverage_margin"])
def test_coverage(gate, metric):
    """Coverage minus the least a sound run reaches for this many validation and test images at
    this alpha (a beta-binomial floor, 1 in 10,000): a negative margin is a broken guarantee."""
    gate(metric)


@pytest.mark.parametrize("metric", ["lac_coverage_ceiling_margin", "aps_rand_coverage_ceiling_margin"])
def test_coverage_ceiling(gate, metric):
    """The most a sound run covers with continuous scores, minus the coverage: sets larger than
    the guarantee needs (plain APS and RAPS keep a class by construction: reported)."""
    gate(metric)


@pytest.mark.parametrize("metric", ["lac_set_size", "aps_set_size", "aps_rand_set_size", "raps_set_size",
                                    "lac_worst_class_set_size", "aps_worst_class_set_size",
                                    "aps_rand_worst_class_set_size", "raps_worst_class_set_size"])
def test_set_size(gate, metric):
    gate(metric)


@pytest.mark.parametrize("metric", ["lac_size_stratified_coverage", "aps_size_stratified_coverage",
                                    "aps_rand_size_stratified_coverage", "raps_size_stratified_coverage"])
def test_size_stratified_coverage(gate, metric):
    """Coverage of the set size a method covers least: small sets that miss the true class."""
    gate(metric)


@pytest.mark.parametrize("metric", ["conformal_worst_class_coverage", "aps_rand_worst_class_coverage",
                                    "raps_worst_class_coverage"])
def test_worst_class_coverage(gate, metric):
    gate(metric)


def test_coverage_under_shift(gate):
    """Coverage under the common corruptions at severity 3, the threshold fitted without shift."""
    gate("conformal_shift_coverage")
