"""Calibration: top-label ECE and MCE, 15 equal-width bins (see harness/metrics.py)."""

import pytest

pytestmark = pytest.mark.calibration


def test_ece(gate):
    gate("ece")


def test_mce(gate):
    gate("mce")
