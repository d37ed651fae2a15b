"""Overall, per-class and balanced accuracy, and the test loss (harness/metrics/)."""

import pytest

pytestmark = pytest.mark.accuracy


def test_accuracy(gate):
    gate("accuracy")


def test_accuracy_above_chance(gate):
    """Accuracy rescaled so that chance is 0 and perfect is 1: comparable across class counts."""
    gate("accuracy_above_chance")


def test_loss(gate):
    gate("loss")


def test_class_accuracy(gate, class_name):
    """Accuracy of each class (seed 000: Shirt at 68.5% hides behind 92% overall)."""
    gate("class_accuracy", label=class_name)


def test_worst_class_accuracy(gate):
    gate("worst_class_accuracy")


def test_rare_class_accuracy(gate):
    """Mean accuracy of the classes with at most a third of the most frequent class's training
    images: what a long-tailed training set hurts (not applicable when no class is rare)."""
    gate("rare_class_accuracy")


def test_balanced_accuracy(gate):
    """Mean per-class accuracy: every class counts once, however rare (long-tailed runs)."""
    gate("balanced_accuracy")


def test_macro_f1(gate):
    gate("macro_f1")
