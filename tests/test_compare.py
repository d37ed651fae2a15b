"""Paired statistics of baseline vs candidate, against scipy / direct computation."""

import numpy as np
import pytest
from scipy.stats import binomtest

from harness import compare, metrics


def _probs(rng, n, k, sharp):
    z = rng.normal(size=(n, k)) * sharp
    p = np.exp(z)
    return p / p.sum(1, keepdims=True)


def test_mcnemar_counts_and_exact_p():
    a = np.array([1, 1, 0, 0, 0, 1, 0, 0], bool)
    b = np.array([1, 0, 1, 1, 1, 1, 1, 0], bool)
    r = compare.mcnemar_exact(a, b)
    assert (r["corrected"], r["regressed"]) == (4, 1)
    assert r["p_value"] == pytest.approx(binomtest(4, 5, 0.5).pvalue)
    assert compare.mcnemar_exact(a, a)["p_value"] == 1.0


def test_compare_deltas_match_metrics_and_intervals_cover_them():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 3000)
    pa, pb = _probs(rng, 3000, 10, 3.0), _probs(rng, 3000, 10, 1.0)
    pb[np.arange(1500), labels[:1500]] += 2.0  # b is right more often
    pb /= pb.sum(1, keepdims=True)
    r = compare.compare(pa, pb, labels, n_boot=200)
    assert r["accuracy_delta"] == pytest.approx(metrics.accuracy(pb, labels) - metrics.accuracy(pa, labels))
    d = r["metric_deltas"]
    assert d["ece"]["delta"] == pytest.approx(metrics.ece(pb, labels) - metrics.ece(pa, labels), abs=1e-6)
    assert d["loss"]["delta"] == pytest.approx(metrics.nll(pb, labels) - metrics.nll(pa, labels), abs=1e-6)
    assert d["aurc"]["delta"] == pytest.approx(metrics.aurc(pb, labels) - metrics.aurc(pa, labels), abs=1e-9)
    assert d["confident_errors_90"]["delta"] == metrics.confident_errors(pb, labels, 0.9) - metrics.confident_errors(pa, labels, 0.9)
    lo, hi = r["accuracy_delta_ci"]
    assert lo <= r["accuracy_delta"] <= hi and lo > 0  # a large, real improvement is significant
    assert r["mcnemar_p"] < 1e-6


def test_identical_models_have_zero_width_intervals():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, 500)
    p = _probs(rng, 500, 5, 2.0)
    r = compare.compare(p, p, labels, n_boot=50)
    for v in r["metric_deltas"].values():
        assert v["delta"] == 0 and v["ci"] == [0.0, 0.0]
    assert r["mcnemar_p"] == 1.0


def test_bootstrap_is_seeded():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 5, 400)
    pa, pb = _probs(rng, 400, 5, 2.0), _probs(rng, 400, 5, 2.0)
    assert compare.compare(pa, pb, labels, n_boot=100) == compare.compare(pa, pb, labels, n_boot=100)
