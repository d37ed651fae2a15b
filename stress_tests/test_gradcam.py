"""Grad-CAM attention (seeds 000, 001, 004): where was each model looking when it decided,
on one shared set of images (the named cases, every model's most confident errors and right
predictions of the same classes)? Maps at the architecture's documented layer (7x7 / 8x8);
definitions in harness/explain/ and harness/metrics/. The normalised entropy and the
top-10% share are reported next to the Gini index (the same property, three ways)."""

import pytest

pytestmark = pytest.mark.explain


def test_concentration(gate):
    """How concentrated the attention is: the Gini index of the map (seed 000: diffuse
    attention; seed 001: fixated on one texture), bounded from both sides."""
    gate("cam_gini")


def test_degenerate_maps(gate):
    """Maps with no evidence at all (all zero, constant or not finite) are counted, not scored."""
    gate("cam_degenerate_share")


@pytest.mark.parametrize("metric", ["cam_deletion_gap", "cam_insertion_gap"])
def test_faithfulness(gate, metric):
    """Removing (inserting) the most relevant pixels first must change the class's probability
    faster than doing so in random order."""
    gate(metric)


def test_randomisation_sanity_check(gate):
    """Cascading model-parameter randomisation (Adebayo et al. 2018): maps that survive the
    randomisation of the weights do not explain the model."""
    gate("cam_randomisation_corr")


def test_confidence_change(gate):
    """The predicted class's probability when only what the map highlights is kept."""
    gate("cam_confidence_change")
