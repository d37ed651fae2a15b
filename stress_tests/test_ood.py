"""Out-of-distribution inputs (seeds 000 and 003: a model unaware of its uncertainty, data
drift): images of none of the classes must score lower than the test images, and the model must
not be sure of them (harness/ood.py). Each of the five scores (softmax, maximum logit, energy;
Mahalanobis and KNN on the penultimate features) is judged on the far sets pooled (noise, blank
and constant frames, shuffled tiles of the test images) and on the near ones pooled (handwritten
digits, the sibling CIFAR, a set of your own with --ood); the grid of every score on every set,
with FPR at 95% TPR and the share predicted with >= 99% confidence, is in the report. The mean
confidence on each set is gated: sure of garbage."""

import pytest

pytestmark = pytest.mark.ood


def test_ood_far_auroc(gate, ood_score):
    """AUROC of one score: test images (positive) against every far OOD set pooled."""
    gate("ood_far_auroc", label=ood_score)


def test_ood_near_auroc(gate, ood_score):
    """AUROC of one score: test images (positive) against every near OOD set pooled."""
    gate("ood_near_auroc", label=ood_score)


def test_ood_mean_confidence(gate, ood_set):
    """Sure of garbage: the mean top-class probability the model gives the OOD set's images."""
    gate("ood_mean_confidence", label=ood_set)
