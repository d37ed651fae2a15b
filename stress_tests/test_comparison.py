"""Candidate vs baseline of the same run, on the same test images (relative gates)."""

import pytest

from harness.train import TrainingDiverged

pytestmark = pytest.mark.comparison


def test_vs_baseline(request, stress, model_name, relative_gate):
    try:
        outcome = stress.check_relative(request.node.nodeid, model_name, relative_gate)
    except TrainingDiverged as exc:
        pytest.fail(f"DIVERGED: {exc}", pytrace=False)
    if not outcome.passed:
        pytest.fail(outcome.message, pytrace=False)

