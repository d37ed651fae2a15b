"""Out-of-distribution inputs (seeds 000 and 003: a model unaware of its uncertainty, data
drift): images of none of the classes (noise, blank and constant frames, shuffled tiles of the
test images, handwritten digits, the sibling CIFAR, a set of your own with --ood) must score
lower than the test images and not be predicted with 99% confidence (harness/ood.py)."""

import pytest

pytestmark = pytest.mark.ood


def test_ood_auroc(gate, ood_set):
    """AUROC of the maximum softmax probability: test images (positive) against the OOD set."""
    gate("ood_auroc", label=ood_set)


def test_ood_fpr95(gate, ood_set):
    """The share of the OOD set above the confidence that keeps 95% of the test images."""
    gate("ood_fpr95", label=ood_set)


def test_ood_confident_share(gate, ood_set):
    """Confident on garbage: the share of the OOD set predicted with >= 99% confidence."""
    gate("ood_confident_share", label=ood_set)
