"""harness.metrics: Hypothesis properties, and cross-checks against independent
implementations (a plain numpy ECE/MCE, scikit-learn)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from harness import metrics

BINS = 15
# database=None: no .hypothesis/ folder in the repository
FAST = settings(max_examples=60, deadline=None, database=None)


# ------------------------------------------------------------------ inputs


def dirichlet_problem(seed: int, n: int, k: int, sharpness: float, skill: float):
    """probs (n, k) from a Dirichlet (rows sum to 1), labels that agree with the argmax
    with probability about ``skill``."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(k, sharpness), size=n)
    pred = probs.argmax(1)
    labels = np.where(rng.random(n) < skill, pred, rng.integers(0, k, n))
    return probs, labels


problems = st.builds(
    dirichlet_problem,
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 300),
    k=st.integers(2, 12),
    sharpness=st.sampled_from([0.05, 0.3, 1.0, 5.0]),
    skill=st.floats(0.0, 1.0),
)


def edge_problem(seed: int, n: int, k: int, edge_share: float):
    """Rows whose top probability is often exactly a bin edge b/15 or exactly 1.0."""
    rng = np.random.default_rng(seed)
    top = np.where(
        rng.random(n) < edge_share,
        rng.integers(0, BINS + 1, n) / BINS,  # exact edges, 1.0 included
        rng.uniform(0, 1, n),
    )
    top = np.maximum(top, 1.0 / k)  # a top-label probability is at least 1/k
    probs = np.empty((n, k))
    for i in range(n):
        probs[i] = (1.0 - top[i]) / (k - 1)
        probs[i, rng.integers(0, k)] = top[i]  # exactly top[i]: no renormalisation
    pred = probs.argmax(1)
    labels = np.where(rng.random(n) < 0.6, pred, rng.integers(0, k, n))
    return probs, labels


edge_problems = st.builds(
    edge_problem, seed=st.integers(0, 2**32 - 1), n=st.integers(1, 200), k=st.integers(2, 10),
    edge_share=st.sampled_from([0.5, 0.9, 1.0]),
)


def reference_calibration(probs, labels, bins=BINS):
    """Plain numpy top-label ECE and MCE: bin b is [b/B, (b+1)/B), the last bin closed."""
    probs = np.asarray(probs, dtype=np.float64)
    conf = probs.max(1)
    hit = (probs.argmax(1) == labels).astype(np.float64)
    edges = np.array([b / bins for b in range(bins + 1)])
    ece, mce = 0.0, 0.0
    for b in range(bins):
        lo, hi = edges[b], edges[b + 1]
        in_bin = (conf >= lo) & ((conf < hi) if b < bins - 1 else (conf <= hi))
        if in_bin.any():
            gap = abs(hit[in_bin].mean() - conf[in_bin].mean())
            ece += in_bin.sum() / len(conf) * gap
            mce = max(mce, gap)
    return ece, mce


# ------------------------------------------------------------------ ECE / MCE


@FAST
@given(problems)
def test_ece_and_mce_are_in_0_1(problem):
    probs, labels = problem
    e, m = metrics.ece(probs, labels), metrics.mce(probs, labels)
    assert 0.0 <= e <= 1.0
    assert 0.0 <= m <= 1.0
    assert e <= m + 1e-12  # an average of the gaps never exceeds their maximum


@FAST
@given(problems)
def test_ece_and_mce_match_a_numpy_reference(problem):
    probs, labels = problem
    ref_ece, ref_mce = reference_calibration(probs, labels)
    assert metrics.ece(probs, labels) == pytest.approx(ref_ece, abs=1e-6)
    assert metrics.mce(probs, labels) == pytest.approx(ref_mce, abs=1e-6)


@FAST
@given(edge_problems)
def test_ece_and_mce_on_bin_edges_and_confidence_one_match_the_reference(problem):
    probs, labels = problem
    ref_ece, ref_mce = reference_calibration(probs, labels)
    assert metrics.ece(probs, labels) == pytest.approx(ref_ece, abs=1e-6)
    assert metrics.mce(probs, labels) == pytest.approx(ref_mce, abs=1e-6)


def test_reliability_bins_agree_with_the_reference_on_edges():
    probs, labels = edge_problem(seed=3, n=400, k=4, edge_share=1.0)
    rel = metrics.reliability(probs, labels)
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
    assert metrics.ece(probs, labels) == pytest.approx(0.3, abs=1e-9)
    assert metrics.mce(probs, labels) == pytest.approx(0.3, abs=1e-9)
    # with two more at 0.95 (also the last bin: [14/15, 1]), both right
    p2 = np.array([[0.95, 0.05, 0.0], [0.0, 0.05, 0.95]])
    probs2 = np.vstack([probs, p2])
    labels2 = np.concatenate([labels, [0, 2]])
    conf_mean = (10 * 1.0 + 2 * 0.95) / 12
    acc = 9 / 12
    assert metrics.ece(probs2, labels2) == pytest.approx(abs(acc - conf_mean), abs=1e-9)
    rel = metrics.reliability(probs2, labels2)
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
    assert metrics.ece(probs, labels) == pytest.approx(separate, abs=1e-9)


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
    assert metrics.ece(probs, labels) == pytest.approx(0.0, abs=1e-9)


@FAST
@given(problems, st.integers(0, 2**32 - 1))
def test_ece_does_not_depend_on_sample_order(problem, seed):
    probs, labels = problem
    perm = np.random.default_rng(seed).permutation(len(labels))
    assert metrics.ece(probs[perm], labels[perm]) == pytest.approx(metrics.ece(probs, labels), abs=1e-12)
    assert metrics.mce(probs[perm], labels[perm]) == pytest.approx(metrics.mce(probs, labels), abs=1e-12)


def test_ece_of_an_overconfident_model_is_its_gap():
    # every prediction at 0.9, half right: ECE = MCE = 0.4
    probs = np.tile([0.9, 0.1], (100, 1))
    labels = np.r_[np.zeros(50, int), np.ones(50, int)]
    assert metrics.ece(probs, labels) == pytest.approx(0.4, abs=1e-9)
    assert metrics.mce(probs, labels) == pytest.approx(0.4, abs=1e-9)


# ------------------------------------------------------------------ confident errors, selective


THRESHOLDS = st.lists(st.floats(0.0, 1.0), min_size=2, max_size=8).map(sorted)


@FAST
@given(problems, THRESHOLDS)
def test_confident_errors_fall_as_the_threshold_rises(problem, thresholds):
    probs, labels = problem
    counts = [metrics.confident_errors(probs, labels, t) for t in thresholds]
    assert all(a >= b for a, b in zip(counts, counts[1:]))
    n_wrong = int((probs.argmax(1) != labels).sum())
    assert metrics.confident_errors(probs, labels, 0.0) == n_wrong
    for t, c in zip(thresholds, counts):
        assert c == int(((probs.argmax(1) != labels) & (probs.max(1) >= t)).sum())
        share = metrics.confident_error_share(probs, labels, t)
        assert 0.0 <= share <= 1.0
        assert share == (c / n_wrong if n_wrong else 0.0)


@FAST
@given(problems, THRESHOLDS)
def test_selective_coverage_falls_as_the_threshold_rises(problem, thresholds):
    probs, labels = problem
    results = [metrics.selective(probs, labels, t) for t in thresholds]
    coverages = [c for c, _ in results]
    assert all(a >= b for a, b in zip(coverages, coverages[1:]))
    for t, (cov, sel) in zip(thresholds, results):
        keep = probs.max(1) >= t
        assert cov == pytest.approx(keep.mean())
        if keep.any():
            assert 0.0 <= sel <= 1.0
            assert sel == pytest.approx((probs.argmax(1) == labels)[keep].mean())
        else:
            assert np.isnan(sel)
    assert metrics.selective(probs, labels, 0.0) == pytest.approx((1.0, metrics.accuracy(probs, labels)))


# ------------------------------------------------------------------ AURC


@FAST
@given(problems)
def test_aurc_is_in_0_1_and_matches_its_definition(problem):
    probs, labels = problem
    a = metrics.aurc(probs, labels)
    assert 0.0 <= a <= 1.0
    conf = probs.max(1)
    wrong = probs.argmax(1) != labels
    order = np.argsort(-conf, kind="stable")
    risks = [wrong[order[:i]].mean() for i in range(1, len(labels) + 1)]
    assert a == pytest.approx(np.mean(risks), abs=1e-12)
    # never better than the oracle ordering (errors last), never worse than the anti-oracle
    w = np.sort(wrong)  # rights first
    best = np.mean(np.cumsum(w) / np.arange(1, len(w) + 1))
    worst = np.mean(np.cumsum(w[::-1]) / np.arange(1, len(w) + 1))
    assert best - 1e-12 <= a <= worst + 1e-12


@FAST
@given(problems)
def test_aurc_is_zero_when_every_prediction_is_right(problem):
    probs, _ = problem
    labels = probs.argmax(1)
    assert metrics.aurc(probs, labels) == 0.0
    cov, risk = metrics.risk_coverage(probs, labels)
    assert np.array_equal(risk, np.zeros(len(labels)))
    assert cov[-1] == 1.0


# ------------------------------------------------------------------ accuracy, confusion, NLL vs sklearn


@FAST
@given(problems)
def test_accuracy_per_class_and_confusion_match_sklearn(problem):
    probs, labels = problem
    k = probs.shape[1]
    pred = probs.argmax(1)
    assert metrics.accuracy(probs, labels) == pytest.approx(skm.accuracy_score(labels, pred), abs=1e-12)

    cm = metrics.confusion_matrix(probs, labels)
    ref_cm = skm.confusion_matrix(labels, pred, labels=list(range(k)))
    assert cm.shape == (k, k)
    assert np.array_equal(cm, ref_cm)

    pca = metrics.per_class_accuracy(probs, labels)
    present = np.bincount(labels, minlength=k) > 0
    assert np.isnan(pca[~present]).all()
    recall = skm.recall_score(labels, pred, labels=list(range(k)), average=None, zero_division=0)
    assert np.allclose(pca[present], recall[present], atol=1e-12)
    assert np.allclose(pca[present], np.diag(ref_cm)[present] / ref_cm.sum(1)[present], atol=1e-12)


@FAST
@given(problems)
def test_nll_matches_sklearn_log_loss(problem):
    probs, labels = problem
    k = probs.shape[1]
    probs = 0.98 * probs + 0.02 / k  # bounded away from 0: no clipping on either side
    ours = metrics.nll(probs, labels)
    ref = skm.log_loss(labels, probs, labels=list(range(k)))
    assert ours == pytest.approx(ref, abs=1e-6)


def test_nll_of_a_sure_right_prediction_is_zero_and_of_a_sure_wrong_one_is_large():
    probs = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert metrics.nll(probs, np.array([0, 1])) == 0.0
    assert metrics.nll(probs, np.array([1, 0])) == pytest.approx(-np.log(1e-12))


def test_per_class_accuracy_with_more_classes_than_columns_is_nan_there():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    labels = np.array([0, 1, 1])
    pca = metrics.per_class_accuracy(probs, labels, num_classes=3)
    assert pca[:2].tolist() == [1.0, 0.5] and np.isnan(pca[2])


# ------------------------------------------------------------------ input checks and summary


@pytest.mark.parametrize(
    "probs,labels,match",
    [
        (np.ones(3) / 3, np.array([0]), "probs must be"),
        (np.ones((2, 3)) / 3, np.array([0, 1, 2]), "labels must be"),
        (np.ones((2, 3)) / 3, np.array([0, 3]), "labels must be in"),
        (np.ones((2, 3)) / 3, np.array([-1, 0]), "labels must be in"),
        (np.ones((0, 3)), np.array([], dtype=int), "no samples"),
    ],
)
def test_bad_inputs_are_rejected(probs, labels, match):
    for fn in (metrics.accuracy, metrics.ece, metrics.nll, metrics.aurc):
        with pytest.raises(ValueError, match=match):
            fn(probs, labels)


@FAST
@given(problems)
def test_summary_agrees_with_the_individual_metrics(problem):
    probs, labels = problem
    s = metrics.summary(probs, labels)
    assert s["accuracy"] == metrics.accuracy(probs, labels)
    assert s["ece"] == metrics.ece(probs, labels)
    assert s["aurc"] == metrics.aurc(probs, labels)
    assert s["errors"] == int((probs.argmax(1) != labels).sum())
    assert s["confident_errors_99"] == metrics.confident_errors(probs, labels, 0.99)
    assert s["confident_error_share_90"] == metrics.confident_error_share(probs, labels, 0.9)
    assert s["selective_coverage"] == metrics.selective(probs, labels, 0.7)[0]
    assert s["worst_class_accuracy"] == np.nanmin(metrics.per_class_accuracy(probs, labels))


def test_thresholds_are_inclusive():
    """A prediction exactly at the threshold counts as confident and is kept."""
    probs = np.array([[0.99, 0.01], [0.7, 0.3], [0.2, 0.8], [0.5, 0.5]])
    labels = np.array([1, 1, 1, 0])  # wrong at 0.99 and 0.7; right at 0.8 and 0.5
    assert metrics.confident_errors(probs, labels, 0.99) == 1
    assert metrics.confident_errors(probs, labels, 0.7) == 2
    assert metrics.confident_error_share(probs, labels, 0.99) == 0.5
    assert metrics.selective(probs, labels, 0.8) == (0.5, 0.5)
    assert metrics.selective(probs, labels, 0.7) == (0.75, 1 / 3)
    assert metrics.mean_confidence_wrong(probs, labels) == pytest.approx((0.99 + 0.7) / 2)
