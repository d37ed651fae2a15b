"""Overall and per-class accuracy, and the test loss."""

import pytest

pytestmark = pytest.mark.accuracy


def test_accuracy(gate):
    gate("accuracy")


def test_loss(gate):
    gate("loss")


def test_class_accuracy(stress, gate, model_name, class_name):
    """Accuracy of each class (seed 000: Shirt at 68.5% hides behind 92% overall)."""
    index = stress.data.classes.index(class_name)
    gate("class_accuracy", float(stress.per_class_accuracy(model_name)[index]))


def test_worst_class_accuracy(gate):
    gate("worst_class_accuracy")
