"""Accuracy under corruptions, occlusion and an FGSM attack (strengths in harness/stress.py)."""

import pytest

pytestmark = pytest.mark.robustness


@pytest.mark.parametrize("stress_kind", ["noise", "contrast", "brightness", "occlusion", "fgsm"])
def test_stressed_accuracy(gate, stress_kind):
    gate(f"{stress_kind}_accuracy")
