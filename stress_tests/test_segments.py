"""Weak segments (harness/segments.py): the kinds of images a model fails on (dark, low
contrast, blurry, small objects, one colour cast, one source of your metadata), found by a
search over property bins and their pairs that keeps only what survives Holm's correction over
every segment it tried; and whether the images' properties shifted between splits."""

import pytest

pytestmark = pytest.mark.segments


def test_worst_segment_accuracy(gate):
    """Accuracy in the worst weak segment relative to the whole test split."""
    gate("weak_segment_accuracy_ratio")


def test_worst_segment_confident_errors(gate):
    """Errors made with >= 99% confidence in the worst weak segment."""
    gate("weak_segment_confident_error_rate")


def test_change_on_baseline_weak_segments(gate):
    """A candidate on the images where its baseline was weak: did the improvement help there?"""
    gate("weak_segment_accuracy_change")


@pytest.mark.parametrize("metric", ["split_shifted_properties", "new_images_shifted_properties"])
def test_property_shift(gate, metric):
    """Image properties whose distribution left the training split's: the test split, a new batch."""
    gate(metric)
