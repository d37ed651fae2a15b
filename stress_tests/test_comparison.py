"""Candidate vs baseline of the same run, on the same test images (relative gates)."""

import pytest

pytestmark = pytest.mark.comparison


def test_vs_baseline(request, stress, model_name, relative_gate):
    outcome = stress.check_relative(request.node.nodeid, model_name, relative_gate)
    if not outcome.passed:
        pytest.fail(outcome.message, pytrace=False)

