"""Errors made with high confidence: what accuracy hides (seeds 000 and 001)."""

import pytest

pytestmark = pytest.mark.confidence


@pytest.mark.parametrize("threshold", ["90", "99"])
def test_confident_errors(gate, threshold):
    """Number of wrong predictions with confidence >= 0.90 / 0.99 (seed 001: 315 / 54)."""
    gate(f"confident_errors_{threshold}")


def test_mean_confidence_wrong(gate):
    """Mean confidence on wrong predictions (seed 001: 47.8% -> 40.8%)."""
    gate("mean_confidence_wrong")
