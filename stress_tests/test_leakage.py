"""Train/test leakage (Barz & Denzler 2020): test images with a near-duplicate in the training
split inflate test accuracy and hide errors (harness/leakage.py). The share is a property of
the data; the report shows the pairs and the accuracy on them against the rest."""

import pytest

pytestmark = pytest.mark.leakage


def test_leakage_share(gate):
    gate("leakage_share")
