"""Invariance tests in the style of CheckList: transformations that keep the class must not
change the prediction (a one-pixel shift; a horizontal flip where a mirror keeps the class)."""

import pytest

pytestmark = pytest.mark.invariance


def test_one_pixel_shift(gate):
    gate("shift1_flip_share")


def test_horizontal_flip(gate):
    gate("hflip_flip_share")
