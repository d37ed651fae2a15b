"""Grad-CAM on each model's most confident errors: where was it looking?"""

import pytest

pytestmark = pytest.mark.explain


def test_cam_concentration(gate):
    """Share of heatmap mass in the top 20% of pixels (0.2 = uniform, 1 = one spot)."""
    gate("cam_concentration")


def test_cam_empty_share(gate):
    """Share of heatmaps that are all zero: no evidence found for the predicted class."""
    gate("cam_empty_share")


def test_cam_confidence_change(gate):
    """Change of the predicted class's probability when only the highlighted region is kept."""
    gate("cam_confidence_change")
