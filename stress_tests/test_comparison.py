"""Candidate vs baseline of the same run, on the same test images (relative gates): ratios,
deltas, and each improvement's documented effect judged on its paired 95% interval."""

import pytest

pytestmark = pytest.mark.comparison


def test_vs_baseline(vs_baseline):
    vs_baseline()
