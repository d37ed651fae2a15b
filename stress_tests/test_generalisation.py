"""The generalisation gap: eval-mode accuracy on a fixed sample of the training images minus
validation accuracy (seed 001: ~40 points for the baseline, < 3 after CutMix)."""

import pytest

pytestmark = pytest.mark.generalisation


def test_generalisation_gap(gate):
    gate("generalisation_gap")
