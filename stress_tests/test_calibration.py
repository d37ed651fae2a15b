"""Calibration: top-label ECE over 15 equal-width bins, split into its overconfident and
underconfident parts (harness/metrics.py), so a bound can forbid overconfidence without
punishing a model that became cautious."""

import pytest

pytestmark = pytest.mark.calibration


def test_ece(gate):
    gate("ece")


def test_ece_over(gate):
    """The part of the ECE from bins where confidence exceeds accuracy."""
    gate("ece_over")


def test_ece_under(gate):
    """The part of the ECE from bins where accuracy exceeds confidence."""
    gate("ece_under")
