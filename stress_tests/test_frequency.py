"""Frequency bias (a stand-in for shape versus texture, harness/frequency.py): a model that
leans on fine detail loses its accuracy when only the low spatial frequencies remain."""

import pytest

pytestmark = pytest.mark.frequency


def test_lowpass_accuracy(gate):
    """Accuracy on the battery's test images low-pass filtered (shapes kept, texture gone)."""
    gate("lowpass_accuracy")
