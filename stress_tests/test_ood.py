"""Out-of-distribution inputs (seeds 000 and 003: a model unaware of its uncertainty, data
drift): images of none of the classes (noise, blank and constant frames, shuffled tiles of the
test images, handwritten digits, the sibling CIFAR, a set of your own with --ood) must score
lower than the test images, and the model must not be sure of them (harness/ood.py). The share
predicted with >= 99% confidence is reported beside them: 0 on most sound runs, it is no rule's
to bound (docs/verdicts.md); its continuous counterpart, the mean confidence, is gated. The
field's other scores (maximum logit, energy; Mahalanobis and KNN on the penultimate features)
are judged the same way, set by set."""

import pytest

pytestmark = pytest.mark.ood


def test_ood_auroc(gate, ood_set):
    """AUROC of the maximum softmax probability: test images (positive) against the OOD set."""
    gate("ood_auroc", label=ood_set)


def test_ood_fpr95(gate, ood_set):
    """The share of the OOD set above the confidence that keeps 95% of the test images."""
    gate("ood_fpr95", label=ood_set)


def test_ood_mean_confidence(gate, ood_set):
    """Sure of garbage: the mean top-class probability the model gives the OOD set's images."""
    gate("ood_mean_confidence", label=ood_set)


@pytest.mark.parametrize("metric", ["ood_auroc_maxlogit", "ood_auroc_energy", "ood_auroc_mahalanobis", "ood_auroc_knn",
                                    "ood_fpr95_maxlogit", "ood_fpr95_energy", "ood_fpr95_mahalanobis",
                                    "ood_fpr95_knn"])
def test_ood_other_scores(gate, ood_set, metric):
    """AUROC and FPR at 95% TPR of the other scores (harness/ood_features.py for the feature ones)."""
    gate(metric, label=ood_set)
