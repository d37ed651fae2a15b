"""Selective prediction: reject predictions below 70% confidence (seed 001) and the
area under the risk-coverage curve."""

import pytest

pytestmark = pytest.mark.selective


def test_selective_accuracy(gate):
    gate("selective_accuracy")


def test_selective_coverage(gate):
    gate("selective_coverage")


def test_aurc(gate):
    gate("aurc")
