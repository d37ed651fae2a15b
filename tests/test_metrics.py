"""harness.metrics (the registry): Hypothesis properties, and cross-checks against
independent implementations (netcal and a plain numpy loop for calibration, scikit-learn
and scipy for the rest)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from harness import metrics
from harness.metrics import NotApplicable, Samples

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


def S(probs, labels) -> Samples:
    return Samples.from_probs(probs, labels)


def ece(probs, labels):
    return metrics.ece(S(probs, labels))


def mce(probs, labels):
    return metrics.mce(S(probs, labels))


def netcal_calibration(probs, labels, bins=BINS):
    """netcal's top-label ECE and MCE (detection=True: confidences and hits as given)."""
    from netcal.metrics import ECE, MCE

    conf = np.asarray(probs, dtype=np.float64).max(1)
    hit = (np.asarray(probs).argmax(1) == labels).astype(np.float64)
    return (float(ECE(bins=bins, detection=True).measure(conf, hit)),
            float(MCE(bins=bins, detection=True).measure(conf, hit)))


# ------------------------------------------------------------------ confident errors, selective


THRESHOLDS = st.lists(st.floats(0.0, 1.0), min_size=2, max_size=8).map(sorted)


@FAST
@given(problems, THRESHOLDS)
def test_confident_errors_fall_as_the_threshold_rises(problem, thresholds):
    probs, labels = problem
    s = S(probs, labels)
    counts = [metrics.confident_errors_at(s, t) for t in thresholds]
    assert all(a >= b for a, b in zip(counts, counts[1:]))
    wrong = probs.argmax(1) != labels
    assert metrics.confident_errors_at(s, 0.0) == int(wrong.sum())
    for t, c in zip(thresholds, counts):
        assert c == int((wrong & (probs.max(1) >= t)).sum())
    assert metrics.confident_errors_99(s) == metrics.confident_errors_at(s, 0.99)
    assert metrics.confident_errors_90(s) == metrics.confident_errors_at(s, 0.90)
    if wrong.any():
        assert metrics.confident_error_share_90(s) == pytest.approx((probs.max(1)[wrong] >= 0.9).mean())
        assert metrics.mean_confidence_wrong(s) == pytest.approx(probs.max(1)[wrong].mean())
    else:
        with pytest.raises(NotApplicable, match="no errors"):
            metrics.mean_confidence_wrong(s)


@FAST
@given(problems)
def test_selective_prediction_rejects_below_70_percent(problem):
    probs, labels = problem
    s = S(probs, labels)
    keep = probs.max(1) >= 0.7
    assert metrics.selective_coverage(s) == pytest.approx(keep.mean())
    if keep.any():
        assert metrics.selective_accuracy(s) == pytest.approx((probs.argmax(1) == labels)[keep].mean())
    else:
        with pytest.raises(NotApplicable, match="nothing is kept"):
            metrics.selective_accuracy(s)


# ------------------------------------------------------------------ AURC


@FAST
@given(problems)
def test_aurc_is_in_0_1_and_matches_its_definition(problem):
    probs, labels = problem
    a = metrics.aurc(S(probs, labels))
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
@given(problems, st.integers(0, 2**32 - 1))
def test_aurc_of_a_resample_is_the_aurc_of_the_resampled_arrays(problem, seed):
    """``take`` keeps the confidence order by rank: the resample's AURC equals the AURC of
    the same rows built afresh (ties between copies of one sample are identical)."""
    probs, labels = problem
    idx = np.random.default_rng(seed).integers(0, len(labels), len(labels))
    taken = S(probs, labels).take(idx)
    fresh = S(probs[idx], labels[idx])
    conf = probs[idx].max(1)
    wrong = probs[idx].argmax(1) != labels[idx]
    order = np.lexsort((taken.rank, -conf))  # by confidence, ties by the original order
    ref = np.mean(np.cumsum(wrong[order]) / np.arange(1, len(idx) + 1))
    assert metrics.aurc(taken) == pytest.approx(ref, abs=1e-12)
    if len(np.unique(conf)) == len(conf):  # no ties: any order is the same
        assert metrics.aurc(taken) == pytest.approx(metrics.aurc(fresh), abs=1e-12)


@FAST
@given(problems)
def test_aurc_is_zero_when_every_prediction_is_right(problem):
    probs, _ = problem
    labels = probs.argmax(1)
    assert metrics.aurc(S(probs, labels)) == 0.0
    cov, risk = metrics.risk_coverage(S(probs, labels))
    assert np.array_equal(risk, np.zeros(len(labels)))
    assert cov[-1] == 1.0


# ------------------------------------------------------------------ accuracy, classes, NLL vs sklearn / scipy


def test_always_predicting_the_majority_class_is_chance_not_skill():
    """Pure noise labelled 80/20: a model that always says the majority class is 80% accurate,
    0 above chance (the majority share, not 1/K), 50% balanced, 0% on the minority class."""
    from sklearn.dummy import DummyClassifier

    labels = np.r_[np.zeros(800, int), np.ones(200, int)]
    pred = DummyClassifier(strategy="most_frequent").fit(np.zeros((1000, 1)), labels).predict(np.zeros((1000, 1)))
    probs = np.eye(2)[pred] * 0.9 + 0.05
    s = S(probs, labels)
    assert metrics.accuracy(s) == pytest.approx(0.8) and metrics.accuracy_above_chance(s) == pytest.approx(0.0)
    assert metrics.balanced_accuracy(s) == pytest.approx(0.5) and metrics.worst_class_accuracy(s) == 0.0
    never = S(np.eye(2)[1 - labels] * 0.9 + 0.05, labels)
    assert metrics.accuracy_above_chance(never) == pytest.approx(-1.0)  # never right: the end of its range


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@FAST
@given(problems)
def test_accuracy_per_class_balanced_f1_and_confusion_match_sklearn(problem):
    probs, labels = problem
    s = S(probs, labels)
    k = probs.shape[1]
    pred = probs.argmax(1)
    assert metrics.accuracy(s) == pytest.approx(skm.accuracy_score(labels, pred), abs=1e-12)
    chance = np.unique(labels, return_counts=True)[1].max() / len(labels)  # the majority class's share
    acc = metrics.accuracy(s)
    if chance < 1:
        expected = (acc - chance) / (1 - chance) if acc >= chance else (acc - chance) / chance
        assert metrics.accuracy_above_chance(s) == pytest.approx(expected)

    cm = metrics.confusion(s)
    assert np.array_equal(cm, skm.confusion_matrix(labels, pred, labels=list(range(k))))

    pca = metrics.class_recall(s)
    present = np.bincount(labels, minlength=k) > 0
    assert np.isnan(pca[~present]).all()
    recall = skm.recall_score(labels, pred, labels=list(range(k)), average=None, zero_division=0)
    assert np.allclose(pca[present], recall[present], atol=1e-12)
    for c in range(k):
        if present[c]:
            assert metrics.class_accuracy(s, c) == pytest.approx(recall[c])
        else:
            with pytest.raises(NotApplicable, match=f"class {c} has no test images"):
                metrics.class_accuracy(s, c)
    assert metrics.worst_class_accuracy(s) == pytest.approx(recall[present].min())
    assert metrics.balanced_accuracy(s) == pytest.approx(skm.balanced_accuracy_score(labels, pred), abs=1e-12)
    present_labels = sorted(set(labels.tolist()))
    ref_f1 = skm.f1_score(labels, pred, labels=present_labels, average="macro", zero_division=0)
    assert metrics.macro_f1(s) == pytest.approx(ref_f1, abs=1e-12)


@FAST
@given(problems)
def test_loss_matches_sklearn_log_loss_and_scipy_from_logits(problem):
    from scipy.special import log_softmax

    probs, labels = problem
    k = probs.shape[1]
    probs = 0.98 * probs + 0.02 / k  # bounded away from 0: no clipping on either side
    ref = skm.log_loss(labels, probs, labels=list(range(k)))
    assert metrics.loss(S(probs, labels)) == pytest.approx(ref, abs=1e-6)
    logits = np.log(probs) + 3.0  # any shift: the same softmax
    from_logits = Samples.from_logits(logits, labels)
    ref_logits = -log_softmax(logits, axis=1)[np.arange(len(labels)), labels].mean()
    assert metrics.loss(from_logits) == pytest.approx(ref_logits, rel=1e-9)
    assert metrics.accuracy(from_logits) == metrics.accuracy(S(probs, labels))
    assert np.allclose(from_logits.conf, probs.max(1))


def test_loss_from_logits_is_exact_where_probabilities_underflow():
    logits = np.array([[0.0, 800.0], [800.0, 0.0]])
    s = Samples.from_logits(logits, np.array([0, 0]))
    assert metrics.loss(s) == pytest.approx(400.0)  # (800 + 0) / 2, not a clipped log(1e-12)


# ------------------------------------------------------------------ input checks, registry


@pytest.mark.parametrize(
    "probs,labels,match",
    [
        (np.ones(3) / 3, np.array([0]), "must be \\(N, K\\)"),
        (np.ones((2, 3)) / 3, np.array([0, 1, 2]), "labels must be"),
        (np.ones((2, 3)) / 3, np.array([0, 3]), "labels must be in"),
        (np.ones((2, 3)) / 3, np.array([-1, 0]), "labels must be in"),
        (np.ones((0, 3)), np.array([], dtype=int), "no samples"),
    ],
)
def test_bad_inputs_are_rejected(probs, labels, match):
    for build in (Samples.from_probs, Samples.from_logits):
        with pytest.raises(ValueError, match=match):
            build(probs, labels)


def test_thresholds_are_inclusive():
    """A prediction exactly at the threshold counts as confident and is kept."""
    probs = np.array([[0.99, 0.01], [0.7, 0.3], [0.2, 0.8], [0.5, 0.5]])
    labels = np.array([1, 1, 1, 0])  # wrong at 0.99 and 0.7; right at 0.8 and 0.5
    s = S(probs, labels)
    assert metrics.confident_errors_at(s, 0.99) == 1
    assert metrics.confident_errors_at(s, 0.7) == 2
    assert metrics.selective_coverage(s) == 0.75  # 0.99, 0.7 and 0.8 reach 70%
    assert metrics.selective_accuracy(s) == pytest.approx(1 / 3)
    assert metrics.mean_confidence_wrong(s) == pytest.approx((0.99 + 0.7) / 2)


def test_every_metric_is_described_with_a_direction_a_unit_and_a_stress_test_family(pytestconfig):
    from harness import kinds

    markers = "\n".join(pytestconfig.getini("markers"))
    for name, m in metrics.REGISTRY.items():
        assert m.description and len(m.description) < 120, name
        assert m.direction in (metrics.HIGHER, metrics.LOWER, metrics.NEUTRAL), name
        assert m.unit in ("share", "probability", "count", "nats", "score"), name
        assert f"{m.family}: " in markers, f"{name}: family {m.family!r} is not a pytest marker"
        assert m.needs and all(k.split(".", 1)[-1] in kinds.KINDS for k in m.needs), name


def test_measure_reads_the_evidence_the_metric_needs():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    test, train = S(probs, np.array([0, 1, 1])), S(probs, np.array([0, 1, 0]))
    asked = []

    def evidence(kind):
        asked.append(kind)
        return {"test": test, "train_sample": train, "val": test}[kind]

    assert metrics.measure("accuracy", evidence) == pytest.approx(2 / 3)
    assert metrics.measure("generalisation_gap", evidence) == pytest.approx(1.0 - 2 / 3)
    assert asked == ["test", "train_sample", "val"]
    assert metrics.measure("class_accuracy", evidence, index=1) == 0.5
    with pytest.raises(ValueError, match="one value per class"):
        metrics.measure("class_accuracy", evidence)
    with pytest.raises(KeyError, match="unknown metric 'eece'"):
        metrics.get("eece")


def _attention(n=4, reason=None, gini=None, hit=None):
    z = np.zeros(n)
    return metrics.Attention(ids=np.arange(n), roles=np.full(n, "error:m"), reason=np.asarray(reason or [""] * n),
                             hit=np.asarray(hit if hit is not None else [False] * n),
                             gini=np.asarray(gini if gini is not None else np.linspace(0.2, 0.8, n)), entropy=z + 0.5,
                             top10=z + 0.3, deletion_gap=z + 0.1, insertion_gap=z + 0.05,
                             randomisation=np.r_[0.2, np.full(max(n - 1, 0), np.nan)][:n], confidence_change=z - 0.1)


def test_attention_metrics_skip_degenerate_maps_and_do_not_apply_without_images():
    a = _attention(4, reason=["", "zero", "", "constant"], gini=[0.2, np.nan, 0.6, np.nan], hit=[False, False, True, True])
    assert metrics.cam_gini(a) == pytest.approx(0.4)  # the two valid maps only
    assert metrics.cam_degenerate_share(a) == 0.5
    assert metrics.cam_randomisation_corr(a) == pytest.approx(0.2)  # the checked image only
    assert metrics.cam_gini_error_gap(a) == pytest.approx(0.2 - 0.6)
    assert metrics.take(a, np.array([2, 2])).gini.tolist() == [0.6, 0.6]
    with pytest.raises(NotApplicable, match="every map is degenerate"):
        metrics.cam_gini(_attention(2, reason=["zero", "nonfinite"]))
    empty = _attention(0)
    for name in ("cam_gini", "cam_degenerate_share", "cam_deletion_gap", "cam_confidence_change"):
        with pytest.raises(NotApplicable, match="no images to explain"):
            metrics.measure(name, lambda kind: empty)


@FAST
@given(problems, st.integers(0, 2**32 - 1))
def test_a_resample_of_a_resample_takes_the_same_rows_of_every_field(problem, seed):
    """``take`` copies the probabilities only when they are read; a resample of a resample (and
    a boolean mask) still holds exactly the rows an eager copy would."""
    probs, labels = problem
    rng = np.random.default_rng(seed)
    s = Samples.from_probs(probs, labels, keep_probs=True)
    i1 = rng.integers(0, len(labels), len(labels))
    mask = rng.random(len(labels)) < 0.5
    twice = s.take(i1).take(mask)
    rows = i1[mask]
    assert np.array_equal(twice.probs, probs[rows]) and np.array_equal(twice.labels, labels[rows])
    assert np.array_equal(twice.conf, s.conf[rows]) and np.array_equal(twice.rank, s.rank[rows])
    assert Samples.from_probs(probs, labels).take(i1).probs is None
