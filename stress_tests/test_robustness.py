"""Robustness (seeds 002 and 003): common corruptions at five severities, L-inf attacks at a
reference budget, occlusion at the worst placement, lower resolution, shifts and rotations.
What each stress does and how strong it is: harness/stress.py; the numbers: harness/metrics/."""

import pytest

pytestmark = pytest.mark.robustness

CORRUPTIONS = ["corruption_accuracy", "worst_corruption_accuracy", "mean_corruption_error", "corruption_ece",
               "corruption_ece_over", "corruption_confident_error_rate", "noise_accuracy", "brightness_accuracy",
               "contrast_accuracy"]
ATTACKS = ["fgsm_accuracy", "pgd_accuracy", "pgd_confident_error_rate", "autoattack_accuracy", "pgd_autoattack_gap"]
GEOMETRY = ["occlusion_accuracy", "occlusion_flip_share", "scale_accuracy", "scale_flip_share", "shift_accuracy",
            "shift_flip_share", "rotation_accuracy", "rotation_flip_share"]


@pytest.mark.parametrize("metric", CORRUPTIONS)
def test_corruptions(gate, metric):
    gate(metric)


@pytest.mark.parametrize("metric", ["corruption_mce", "relative_corruption_mce"])
def test_corruption_error_vs_baseline(gate, metric):
    """Mean corruption error normalised by the run's baseline (1.0 for the baseline itself)."""
    gate(metric)


@pytest.mark.parametrize("metric", ATTACKS)
def test_adversarial(gate, metric):
    gate(metric)


@pytest.mark.parametrize("metric", GEOMETRY)
def test_occlusion_scale_position(gate, metric):
    gate(metric)
