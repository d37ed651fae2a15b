"""ECE and MCE of the metric registry (harness/metrics/): Hypothesis properties and cross-checks
against a plain numpy loop and netcal (the problems and references of test_metrics.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_metrics import (
    BINS,
    FAST,
    S,
    ece,
    edge_problem,
    edge_problems,
    mce,
    netcal_calibration,
    problems,
    reference_calibration,
)

from harness import metrics

# ------------------------------------------------------------------ ECE / MCE


@FAST
@given(problems)
def test_ece_and_mce_are_in_0_1(problem):
    probs, labels = problem
    e, m = ece(probs, labels), mce(probs, labels)
    assert 0.0 <= e <= 1.0
    assert 0.0 <= m <= 1.0
    assert e <= m + 1e-12  # an average of the gaps never exceeds their maximum


@FAST
@given(problems)
def test_ece_and_mce_match_a_numpy_reference_and_netcal(problem):
    probs, labels = problem
    ref_ece, ref_mce = reference_calibration(probs, labels)
    assert ece(probs, labels) == pytest.approx(ref_ece, abs=1e-9)
    assert mce(probs, labels) == pytest.approx(ref_mce, abs=1e-9)
    nc_ece, nc_mce = netcal_calibration(probs, labels)
    assert ece(probs, labels) == pytest.approx(nc_ece, abs=1e-6)
    assert mce(probs, labels) == pytest.approx(nc_mce, abs=1e-6)


@FAST
@given(problems)
def test_ece_splits_into_its_overconfident_and_underconfident_parts(problem):
    probs, labels = problem
    s = S(probs, labels)
    over, under = metrics.ece_over(s), metrics.ece_under(s)
    assert over >= 0 and under >= 0
    assert over + under == pytest.approx(metrics.ece(s), abs=1e-12)
    rel = metrics.reliability(s)
    full = rel["count"] > 0
    gaps = rel["count"][full] * (rel["confidence"][full] - rel["accuracy"][full]) / len(labels)
    assert over == pytest.approx(gaps[gaps > 0].sum(), abs=1e-9)
    assert under == pytest.approx(-gaps[gaps < 0].sum(), abs=1e-9)
    assert metrics.calibration_gap(s) == pytest.approx(over - under, abs=1e-9)


@FAST
@given(edge_problems)
def test_ece_and_mce_on_bin_edges_and_confidence_one_match_the_reference(problem):
    probs, labels = problem
    ref_ece, ref_mce = reference_calibration(probs, labels)
    assert ece(probs, labels) == pytest.approx(ref_ece, abs=1e-6)
    assert mce(probs, labels) == pytest.approx(ref_mce, abs=1e-6)


def test_reliability_bins_agree_with_the_reference_on_edges():
    probs, labels = edge_problem(seed=3, n=400, k=4, edge_share=1.0)
    rel = metrics.reliability(S(probs, labels))
    conf = probs.max(1)
    edges = [b / BINS for b in range(BINS + 1)]
    expected = [
        int(((conf >= edges[b]) & ((conf < edges[b + 1]) if b < BINS - 1 else (conf <= 1.0))).sum())
        for b in range(BINS)
    ]
    assert (conf == 1.0).any() and np.isin(conf, edges[1:-1]).any()
    assert rel["count"].tolist() == expected
    assert rel["count"].sum() == len(labels)


def one_hot_rows(pred, k):
    probs = np.zeros((len(pred), k))
    probs[np.arange(len(pred)), pred] = 1.0
    return probs


def test_confidence_one_falls_in_the_last_bin():
    # ten predictions at confidence exactly 1.0, seven right: last bin gap 0.3
    pred = np.arange(10) % 3
    probs = one_hot_rows(pred, 3)
    labels = pred.copy()
    labels[:3] = (labels[:3] + 1) % 3
    assert ece(probs, labels) == pytest.approx(0.3, abs=1e-9)
    assert mce(probs, labels) == pytest.approx(0.3, abs=1e-9)
    # with two more at 0.95 (also the last bin: [14/15, 1]), both right
    p2 = np.array([[0.95, 0.05, 0.0], [0.0, 0.05, 0.95]])
    probs2 = np.vstack([probs, p2])
    labels2 = np.concatenate([labels, [0, 2]])
    conf_mean = (10 * 1.0 + 2 * 0.95) / 12
    acc = 9 / 12
    assert ece(probs2, labels2) == pytest.approx(abs(acc - conf_mean), abs=1e-9)
    rel = metrics.reliability(S(probs2, labels2))
    assert rel["count"][-1] == 12 and rel["count"][:-1].sum() == 0


@pytest.mark.parametrize("b", range(1, BINS))
def test_confidence_on_an_edge_opens_the_upper_bin(b):
    """Confidence exactly b/15 belongs to bin b, not b-1: put a right prediction there and a
    wrong one just below the edge; if they shared a bin the gaps would partly cancel."""
    c = b / BINS
    k = 20  # top probability may be as low as 1/20 < 1/15
    probs = np.full((2, k), 0.0)
    probs[0, 0] = c
    probs[0, 1:] = (1 - c) / (k - 1)
    below = c - 0.01
    probs[1, 0] = below
    probs[1, 1:] = (1 - below) / (k - 1)
    assert probs[0].argmax() == 0 and probs[1].argmax() == 0
    assert probs[0].max() == c  # exactly on the edge
    labels = np.array([0, 1])  # first right (at the edge), second wrong (below it)
    separate = 0.5 * abs(1 - c) + 0.5 * abs(0 - below)
    ref_ece, _ = reference_calibration(probs, labels)
    assert ref_ece == pytest.approx(separate, abs=1e-12)
    assert ece(probs, labels) == pytest.approx(separate, abs=1e-9)


@st.composite
def calibrated_problems(draw):
    """Groups of predictions with confidence c = right/size (>= 1/k) and exactly that share right."""
    k = draw(st.integers(2, 10))
    rows, labels = [], []
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    for _ in range(draw(st.integers(1, 6))):
        size = draw(st.integers(1, 12))
        right = draw(st.integers(0, size))
        c = right / size
        if c < 1.0 / k:
            c, right = 1.0, size  # not a possible top-label confidence: use a sure group
        for j in range(size):
            pred = int(rng.integers(0, k))
            row = np.full(k, (1 - c) / (k - 1))
            row[pred] = c
            rows.append(row)
            top = int(row.argmax())
            labels.append(top if j < right else (top + 1) % k)
    order = rng.permutation(len(rows))
    return np.array(rows)[order], np.array(labels)[order]


@FAST
@given(calibrated_problems())
def test_ece_is_zero_when_accuracy_equals_confidence(problem):
    probs, labels = problem
    assert ece(probs, labels) == pytest.approx(0.0, abs=1e-9)


@FAST
@given(problems, st.integers(0, 2**32 - 1))
def test_ece_does_not_depend_on_sample_order(problem, seed):
    probs, labels = problem
    perm = np.random.default_rng(seed).permutation(len(labels))
    assert ece(probs[perm], labels[perm]) == pytest.approx(ece(probs, labels), abs=1e-12)
    assert mce(probs[perm], labels[perm]) == pytest.approx(mce(probs, labels), abs=1e-12)


def test_ece_of_an_overconfident_model_is_its_gap():
    # every prediction at 0.9, half right: ECE = MCE = 0.4
    probs = np.tile([0.9, 0.1], (100, 1))
    labels = np.r_[np.zeros(50, int), np.ones(50, int)]
    assert ece(probs, labels) == pytest.approx(0.4, abs=1e-9)
    assert mce(probs, labels) == pytest.approx(0.4, abs=1e-9)


