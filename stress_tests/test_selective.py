"""Selective prediction: reject predictions below 70% confidence (seed 001), the area under
the risk-coverage curve, and the threshold that keeps the error of accepted predictions under a
risk you choose (harness/risk_control.py)."""

import pytest

pytestmark = pytest.mark.selective


def test_selective_accuracy(gate):
    gate("selective_accuracy")


def test_selective_coverage(gate):
    gate("selective_coverage")


def test_aurc(gate):
    gate("aurc")


def test_risk_control_margin(gate):
    """At your risk (--selective-risk R): the accepted test predictions' error stays under R's
    binomial tail, the threshold chosen on the validation split with 99% confidence."""
    gate("risk_control_margin")


def test_risk_control_coverage(gate):
    """What that threshold leaves to act on: the share of test images accepted."""
    gate("risk_control_coverage")
