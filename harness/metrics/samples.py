"""Per-sample outcomes of one model on one set of images (``Samples``), what every metric
reads, and the building blocks metrics share (class counts, calibration bins, risk-coverage)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

HIGHER, LOWER, NEUTRAL = "higher", "lower", "neutral"
ECE_BINS = 15
REJECT_BELOW = 0.7  # seed 001: "reject anything below 70%"
CONFIDENCE_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)  # the thresholds table and figure


class NotApplicable(Exception):  # noqa: N818 - a result, not an error
    """The metric does not apply to this model (the message says why); reported, not failed."""


# ============================================================================ per-sample outcomes


class Samples:
    """Per-sample outcomes of one model on one set of images: what every metric reads.

    ``labels``, ``pred`` (argmax), ``conf`` (top-label probability), ``nll`` (-log p(y)),
    ``margin`` (top-1 minus top-2 probability), ``ids`` (ids in the split), ``num_classes``,
    and ``rank``: each sample's position when the samples it was built from are sorted by
    confidence, most confident first (stable), kept by ``take`` so that a resample is put in
    confidence order without sorting again.
    """

    FIELDS = ("labels", "pred", "conf", "nll", "margin", "ids", "num_classes", "rank", "brier", "probs")
    __slots__ = ("labels", "pred", "conf", "nll", "margin", "ids", "num_classes", "rank", "brier", "_probs", "_at")

    def __init__(self, labels, pred, conf, nll, margin, ids, num_classes: int, rank=None, brier=None, probs=None):
        self.labels = labels
        self.pred = pred
        self.conf = conf
        self.nll = nll
        self.margin = margin
        self.ids = ids
        self.num_classes = int(num_classes)
        if rank is None:
            rank = np.empty(len(conf), dtype=np.int64)
            rank[np.argsort(-conf, kind="stable")] = np.arange(len(conf))
        self.rank = rank
        self.brier = brier  # sum_k (p_k - [y = k])^2 per sample (None: not known)
        self._probs = probs  # (N, K) probabilities, kept only where a metric needs every class's (keep_probs)
        self._at = None  # rows of ``_probs`` this resample holds (None: all); taken when first read

    @property
    def probs(self) -> np.ndarray | None:
        """(N, K) probabilities, or None. A resample (``take``) copies them only when a metric
        reads them: most metrics need one column, and a bootstrap takes a thousand resamples."""
        if self._at is not None:
            self._probs, self._at = self._probs[self._at], None
        return self._probs

    @classmethod
    def from_logits(cls, logits, labels, ids=None, keep_probs: bool = False) -> Samples:
        z = np.asarray(logits, dtype=np.float64)
        labels = _check_labels(z, labels)
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return cls._build(np.exp(logp), -logp[np.arange(len(labels)), labels], labels, ids, keep_probs)

    @classmethod
    def from_probs(cls, probs, labels, ids=None, keep_probs: bool = False) -> Samples:
        p = np.asarray(probs, dtype=np.float64)
        labels = _check_labels(p, labels)
        nll = -np.log(np.clip(p[np.arange(len(labels)), labels], 1e-300, None))
        return cls._build(p, nll, labels, ids, keep_probs)

    @classmethod
    def _build(cls, probs, nll, labels, ids, keep_probs: bool = False) -> Samples:
        n, k = probs.shape
        pred = probs.argmax(axis=1)
        conf = probs[np.arange(n), pred]
        if k > 1:
            top2 = np.partition(probs, k - 2, axis=1)[:, k - 2]
            margin = conf - top2
        else:
            margin = np.ones(n)
        ids = np.arange(n) if ids is None else np.asarray(ids).astype(np.int64)
        brier = (probs ** 2).sum(axis=1) - 2 * probs[np.arange(n), labels] + 1.0
        return cls(labels, pred, conf, nll, margin, ids, k, brier=brier, probs=probs if keep_probs else None)

    @property
    def hit(self) -> np.ndarray:
        return self.pred == self.labels

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx) -> Samples:
        """The samples at ``idx`` (a bootstrap resample, or a subset)."""
        out = Samples(self.labels[idx], self.pred[idx], self.conf[idx], self.nll[idx], self.margin[idx],
                      self.ids[idx], self.num_classes, self.rank[idx], None if self.brier is None else self.brier[idx])
        if self._probs is not None:
            out._probs = self._probs
            out._at = np.arange(len(self))[idx] if self._at is None else self._at[idx]
        return out


def _check_labels(scores: np.ndarray, labels) -> np.ndarray:
    labels = np.asarray(labels)
    if scores.ndim != 2:
        raise ValueError(f"logits/probs must be (N, K); got shape {scores.shape}")
    if labels.shape != (scores.shape[0],):
        raise ValueError(f"labels must be ({scores.shape[0]},) to match; got shape {labels.shape}")
    if len(labels) == 0:
        raise ValueError("no samples")
    labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() >= scores.shape[1]:
        raise ValueError(f"labels must be in [0, {scores.shape[1] - 1}]")
    return labels


def take(evidence, idx):
    """A resample of evidence on the same images: a Samples (or anything with ``take``), a
    per-image array, or a dict of them."""
    if hasattr(evidence, "take"):
        return evidence.take(idx)
    if isinstance(evidence, np.ndarray):
        return evidence[idx]
    if isinstance(evidence, Mapping):
        return {k: take(v, idx) for k, v in evidence.items()}
    raise TypeError(f"cannot resample {type(evidence).__name__}")


def evidence_size(evidence) -> int:
    if hasattr(evidence, "take") or isinstance(evidence, np.ndarray):
        return len(evidence)
    sizes = {evidence_size(v) for v in evidence.values()}
    if len(sizes) != 1:
        raise ValueError(f"evidence on different image sets (sizes {sorted(sizes)}) cannot be resampled together")
    return sizes.pop()


# ============================================================================ building blocks


def class_counts(s: Samples) -> tuple[np.ndarray, np.ndarray]:
    """(test images per class, right predictions per class)."""
    k = s.num_classes
    n = np.bincount(s.labels, minlength=k).astype(np.float64)
    h = np.bincount(s.labels, weights=s.hit.astype(np.float64), minlength=k)
    return n, h


def class_recall(s: Samples) -> np.ndarray:
    """Accuracy of each class (NaN for a class with no test images)."""
    n, h = class_counts(s)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, h / np.maximum(n, 1), np.nan)


def confusion(s: Samples) -> np.ndarray:
    """Counts (K, K): rows are true classes, columns predicted classes."""
    k = s.num_classes
    return np.bincount(s.labels * k + s.pred, minlength=k * k).reshape(k, k)


def bin_index(conf: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """The calibration bin of each confidence: [b/B, (b+1)/B), the last bin closed at 1.0.

    floor(conf * B), then corrected by one where rounding put a value on the wrong side of
    an edge ``np.linspace(0, 1, B + 1)[b]`` (the edges are compared exactly)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.floor(conf * bins).astype(np.int64), 0, bins - 1)
    idx -= conf < edges[idx]
    idx += (conf >= edges[idx + 1]) & (idx < bins - 1)
    return idx


def reliability(s: Samples, bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """Per-bin counts, mean confidence and accuracy (NaN for empty bins): the ECE bins."""
    idx = bin_index(s.conf, bins)
    count = np.bincount(idx, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(idx, weights=s.conf, minlength=bins) / count
        acc = np.bincount(idx, weights=s.hit.astype(np.float64), minlength=bins) / count
    return {"edges": np.linspace(0.0, 1.0, bins + 1), "count": count, "confidence": conf, "accuracy": acc}


def bin_gaps(conf: np.ndarray, hit: np.ndarray, bins: int = ECE_BINS) -> tuple[np.ndarray, np.ndarray]:
    """Per calibration bin: the summed confidence minus accuracy, and the count."""
    idx = bin_index(conf, bins)
    gap = np.bincount(idx, weights=conf - hit, minlength=bins)
    return gap, np.bincount(idx, minlength=bins)


def calibration_error(conf: np.ndarray, hit: np.ndarray) -> float:
    """The ECE of outcomes given as arrays (``classification.ece`` on a ``Samples``)."""
    gap, _ = bin_gaps(conf, hit)
    return float(np.abs(gap).sum() / len(conf))


def _bin_gaps(s: Samples, bins: int = ECE_BINS) -> tuple[np.ndarray, np.ndarray]:
    return bin_gaps(s.conf, s.hit, bins)


def risk_coverage(s: Samples) -> tuple[np.ndarray, np.ndarray]:
    """(coverage, risk) at coverage i/N for i = 1..N, most confident first (stable sort).

    Put in order by ``rank`` with counts instead of a sort: copies of one sample (in a
    bootstrap resample) are identical, so repeating each rank's outcome by its count is the
    sorted sequence."""
    counts = np.bincount(s.rank)
    present = counts > 0
    wrong_by_rank = np.bincount(s.rank, weights=(~s.hit).astype(np.float64))[present] / counts[present]
    wrong = np.repeat(wrong_by_rank, counts[present])
    kept = np.arange(1, len(s) + 1)
    return kept / len(s), np.cumsum(wrong) / kept


def confident_errors_at(s: Samples, threshold: float) -> int:
    """Wrong predictions with confidence >= threshold."""
    return int((~s.hit & (s.conf >= threshold)).sum())


def most_confident_errors(s: Samples) -> np.ndarray:
    """Positions of the wrong predictions, most confident first (stable for ties)."""
    wrong = np.flatnonzero(~s.hit)
    return wrong[np.argsort(-s.conf[wrong], kind="stable")]
