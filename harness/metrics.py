"""Metrics: pure functions, numpy arrays in, numbers out.

Inputs are ``probs`` (N, K) class probabilities (rows sum to 1) and ``labels`` (N,) ints.
"Confidence" is the top-label probability ``probs.max(1)``; a prediction is its argmax.

Definitions
-----------
* ``ece``: top-label expected calibration error with ``bins`` equal-width bins over
  [0, 1]: ``sum_b (n_b / N) * |acc_b - conf_b|``, where bin b holds the predictions with
  confidence in [b/B, (b+1)/B) and the last bin is closed, so confidence exactly 1.0 falls
  in it. Computed by netcal (``netcal.metrics.ECE`` on top-label confidences and hits).
* ``mce``: the same bins, ``max_b |acc_b - conf_b|`` over non-empty bins (netcal's MCE).
* ``confident_errors(t)``: wrong predictions with confidence >= t.
* ``selective``: predictions with confidence < t are rejected; coverage is the share kept,
  selective accuracy the accuracy on those kept.
* ``aurc``: area under the risk-coverage curve: sort by confidence (descending), risk at
  coverage i/N is the error rate of the i most confident predictions, averaged over i = 1..N
  (Geifman & El-Yaniv 2017). Lower is better; 0 when every prediction is right.
"""

from __future__ import annotations

import warnings

import numpy as np

ECE_BINS = 15


def _check(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    if probs.ndim != 2:
        raise ValueError(f"probs must be (N, K); got shape {probs.shape}")
    if labels.shape != (probs.shape[0],):
        raise ValueError(f"labels must be ({probs.shape[0]},) to match probs; got shape {labels.shape}")
    if len(labels) == 0:
        raise ValueError("no samples")
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(f"labels must be in [0, {probs.shape[1] - 1}]")
    return probs, labels


def confidence(probs: np.ndarray) -> np.ndarray:
    return np.asarray(probs).max(axis=1)


def correct(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    probs, labels = _check(probs, labels)
    return probs.argmax(axis=1) == labels


def accuracy(probs, labels) -> float:
    return float(correct(probs, labels).mean())


def nll(probs, labels, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood of the true class (the test loss)."""
    probs, labels = _check(probs, labels)
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], eps, None)).mean())


def per_class_accuracy(probs, labels, num_classes: int | None = None) -> np.ndarray:
    """Accuracy of each class (recall); NaN for a class with no samples."""
    probs, labels = _check(probs, labels)
    k = num_classes or probs.shape[1]
    hits = correct(probs, labels)
    n = np.bincount(labels, minlength=k).astype(np.float64)
    h = np.bincount(labels, weights=hits, minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, h / np.maximum(n, 1), np.nan)


def confusion_matrix(probs, labels, num_classes: int | None = None) -> np.ndarray:
    """Counts: rows are true classes, columns predicted classes."""
    probs, labels = _check(probs, labels)
    k = num_classes or probs.shape[1]
    pred = probs.argmax(axis=1)
    return np.bincount(labels * k + pred, minlength=k * k).reshape(k, k)


def confident_errors(probs, labels, threshold: float) -> int:
    probs, labels = _check(probs, labels)
    wrong = probs.argmax(axis=1) != labels
    return int((wrong & (probs.max(axis=1) >= threshold)).sum())


def confident_error_share(probs, labels, threshold: float) -> float:
    """Share of all errors made with confidence >= threshold (0 when there are no errors)."""
    probs, labels = _check(probs, labels)
    wrong = probs.argmax(axis=1) != labels
    n_wrong = int(wrong.sum())
    return confident_errors(probs, labels, threshold) / n_wrong if n_wrong else 0.0


def most_confident_errors(probs, labels) -> np.ndarray:
    """Indices of the wrong predictions, most confident first (stable for ties)."""
    probs, labels = _check(probs, labels)
    conf = probs.max(axis=1)
    wrong = np.flatnonzero(probs.argmax(axis=1) != labels)
    return wrong[np.argsort(-conf[wrong], kind="stable")]


def mean_confidence_wrong(probs, labels) -> float:
    """Mean confidence of the wrong predictions (NaN when there are none)."""
    probs, labels = _check(probs, labels)
    wrong = probs.argmax(axis=1) != labels
    return float(probs.max(axis=1)[wrong].mean()) if wrong.any() else float("nan")


def _netcal_inputs(probs, labels):
    probs, labels = _check(probs, labels)
    conf = probs.max(axis=1)
    hit = (probs.argmax(axis=1) == labels).astype(np.float64)
    return conf, hit


def ece(probs, labels, bins: int = ECE_BINS) -> float:
    """Top-label ECE (see the module docstring), via netcal."""
    from netcal.metrics import ECE

    conf, hit = _netcal_inputs(probs, labels)
    # detection=True: netcal takes the confidences and the hits as given (top-label form),
    # rather than guessing binary vs multi-class from the labels present.
    return float(ECE(bins=bins, detection=True).measure(conf, hit))


def mce(probs, labels, bins: int = ECE_BINS) -> float:
    from netcal.metrics import MCE

    conf, hit = _netcal_inputs(probs, labels)
    return float(MCE(bins=bins, detection=True).measure(conf, hit))


def bin_index(conf: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """The calibration bin of each confidence: [b/B, (b+1)/B), the last bin closed at 1.0."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    return np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, bins - 1)


def reliability(probs, labels, bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """Per-bin counts, mean confidence and accuracy (NaN for empty bins), same bins as ece()."""
    probs, labels = _check(probs, labels)
    conf = probs.max(axis=1)
    hit = probs.argmax(axis=1) == labels
    idx = bin_index(conf, bins)
    count = np.bincount(idx, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=bins) / count
        acc = np.bincount(idx, weights=hit.astype(np.float64), minlength=bins) / count
    return {"edges": np.linspace(0.0, 1.0, bins + 1), "count": count, "confidence": mean_conf, "accuracy": acc}


def selective(probs, labels, threshold: float) -> tuple[float, float]:
    """(coverage, selective accuracy) when predictions with confidence < threshold are
    rejected; selective accuracy is NaN when nothing is kept."""
    probs, labels = _check(probs, labels)
    keep = probs.max(axis=1) >= threshold
    hit = probs.argmax(axis=1) == labels
    coverage = float(keep.mean())
    return coverage, (float(hit[keep].mean()) if keep.any() else float("nan"))


def risk_coverage(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    """(coverage, risk) at coverage i/N for i = 1..N, most confident first (stable sort)."""
    probs, labels = _check(probs, labels)
    conf = probs.max(axis=1)
    wrong = (probs.argmax(axis=1) != labels).astype(np.float64)
    order = np.argsort(-conf, kind="stable")
    n = len(labels)
    kept = np.arange(1, n + 1)
    return kept / n, np.cumsum(wrong[order]) / kept


def aurc(probs, labels) -> float:
    _, risk = risk_coverage(probs, labels)
    return float(risk.mean())


def summary(probs, labels, thresholds=(0.9, 0.99), reject_below: float = 0.7) -> dict[str, float]:
    """The headline metrics of one model on one split, as plain floats."""
    probs, labels = _check(probs, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = {
            "accuracy": accuracy(probs, labels),
            "loss": nll(probs, labels),
            "errors": int((~correct(probs, labels)).sum()),
            "mean_confidence_wrong": mean_confidence_wrong(probs, labels),
            "ece": ece(probs, labels),
            "mce": mce(probs, labels),
            "aurc": aurc(probs, labels),
        }
        for t in thresholds:
            tag = f"{round(t * 100):d}"
            out[f"confident_errors_{tag}"] = confident_errors(probs, labels, t)
            out[f"confident_error_share_{tag}"] = confident_error_share(probs, labels, t)
        cov, sel = selective(probs, labels, reject_below)
        out["selective_coverage"] = cov
        out["selective_accuracy"] = sel
        pca = per_class_accuracy(probs, labels)
        out["worst_class_accuracy"] = float(np.nanmin(pca))
    return out
