"""Metrics of one split's predictions: accuracy, confidence, calibration, selective prediction
and the generalisation gap.

Definitions (N images, K classes; conf_i = top-label probability, pred_i its class,
hit_i = [pred_i = y_i], p_i(y) the probability of the true class)
--------------------------------------------------------------------------------------
* accuracy = mean(hit);  accuracy_above_chance = (accuracy - c) / (1 - c) at or above chance,
  (accuracy - c) / c below it, c = chance = the share of the most frequent class among the test
  labels (what always predicting it scores: 1/K on a balanced test set): 0 at chance, 1 perfect,
  -1 never right
* loss = mean(-log p_i(y_i)) (test NLL, from the logits' log-softmax)
* class_accuracy[c] = mean(hit | y = c) (recall); worst_class_accuracy = min_c over classes
  with test samples; balanced_accuracy = mean_c class_accuracy[c];
  macro_f1 = mean_c 2 P_c R_c / (P_c + R_c) over classes with test samples (0 where
  P_c + R_c = 0), P_c = hits among pred = c / count(pred = c)
* confident_errors_T = #{i: not hit_i and conf_i >= T} for T = 0.90, 0.99;
  confident_error_share_90 = confident_errors_90 / #errors;
  mean_confidence_wrong = mean(conf | not hit)
* Calibration: B = 15 equal-width bins over [0, 1]; bin b holds conf in [b/B, (b+1)/B),
  the last bin closed so conf = 1.0 falls in it. With n_b images, gap_b = sum_{i in b}
  (conf_i - hit_i):
  ece = sum_b |gap_b| / N; ece_over = sum_b max(gap_b, 0) / N (the overconfident bins);
  ece_under = sum_b max(-gap_b, 0) / N (the underconfident bins); ece = ece_over +
  ece_under. mce = max_b |gap_b| / n_b over non-empty bins. calibration_gap = mean(conf)
  - accuracy (signed: > 0 overconfident). Tests check ece/mce against netcal.
* Selective prediction (seed 001: "reject anything below 70%"): selective_coverage =
  mean(conf >= 0.7); selective_accuracy = mean(hit | conf >= 0.7).
  aurc = (1/N) sum_{i=1..N} risk(i), risk(i) = error rate of the i most confident
  predictions (stable order) (Geifman & El-Yaniv 2017).
* generalisation_gap = accuracy on the training sample - accuracy on the validation split,
  both in eval mode (no augmentation, no dropout).
"""

from __future__ import annotations

import numpy as np

from .registry import register, register_family
from .samples import (
    ECE_BINS,
    HIGHER,
    LOWER,
    NEUTRAL,
    REJECT_BELOW,
    NotApplicable,
    Samples,
    _bin_gaps,
    bin_index,
    calibration_error,
    class_counts,
    class_recall,
    confident_errors_at,
    risk_coverage,
)

register_family("accuracy", "stress tests of overall and per-class accuracy")
register_family("confidence", "stress tests of errors made with high confidence")
register_family("calibration", "stress tests of calibration (ECE, MCE)")
register_family("selective", "stress tests of selective prediction (reject below a confidence)")
register_family("generalisation", "stress tests of the train-validation gap")


def _need_errors(s: Samples) -> np.ndarray:
    wrong = ~s.hit
    if not wrong.any():
        raise NotApplicable("the model makes no errors on these images")
    return wrong


# ---------------------------------------------------------------------------- accuracy


@register("accuracy", "accuracy", "share of test images predicted right", HIGHER, "share")
def accuracy(s: Samples) -> float:
    return float(s.hit.mean())


@register("accuracy_above_chance", "accuracy", "accuracy rescaled: 0 at chance (always the most frequent test class), 1 "
          "perfect, -1 never right", HIGHER, "score", range_=(-1.0, 1.0),
          resolution="image")
def accuracy_above_chance(s: Samples) -> float:
    chance = float(np.bincount(s.labels).max() / len(s.labels))
    acc = accuracy(s)
    if chance >= 1.0:
        raise NotApplicable("every test image has the same class: chance is perfect accuracy")
    return (acc - chance) / (1.0 - chance) if acc >= chance else (acc - chance) / chance


@register("errors", "accuracy", "wrong predictions on the test split", LOWER, "count", gated=False)
def errors(s: Samples) -> float:
    return float((~s.hit).sum())


@register("loss", "accuracy", "mean negative log-likelihood of the true class (test loss)", LOWER, "nats")
def loss(s: Samples) -> float:
    return float(s.nll.mean())


# Bounded on the raw scale: on the logit scale a class at 93-97% accuracy across seeds spreads over
# logits wide enough that its bound fell to 39% (a class could lose half its images unseen); the
# leave-one-seed-out residuals are as well-behaved raw (docs/verdicts.md)
@register("class_accuracy", "accuracy", "accuracy on the test images of one class", HIGHER, "share", per="class",
          scale="linear")
def class_accuracy(s: Samples, index: int) -> float:
    n, h = class_counts(s)
    if n[index] == 0:
        raise NotApplicable(f"class {index} has no test images")
    return float(h[index] / n[index])


@register("worst_class_accuracy", "accuracy", "accuracy of the class the model gets right least often",
          HIGHER, "share")
def worst_class_accuracy(s: Samples) -> float:
    return float(np.nanmin(class_recall(s)))


RARE = 1 / 3  # a class is rare with at most this share of the most frequent class's training images


@register("rare_class_accuracy", "accuracy", "mean accuracy of the rare classes (at most a third of the most frequent "
          "class's training images)", HIGHER, "share", needs=("test", "class_frequency"), paired=False)
def rare_class_accuracy(s: Samples, counts: np.ndarray) -> float:
    counts = np.asarray(counts, dtype=np.float64)
    rare = np.flatnonzero((counts > 0) & (counts <= RARE * counts.max()))
    recall = class_recall(s)
    rare = rare[np.isfinite(recall[rare])] if len(rare) else rare
    if len(rare) == 0:
        raise NotApplicable("no class is rare: every class has more than a third of the most frequent class's "
                            "training images")
    return float(recall[rare].mean())


@register("balanced_accuracy", "accuracy", "mean of the per-class accuracies (each class counts once)",
          HIGHER, "share")
def balanced_accuracy(s: Samples) -> float:
    return float(np.nanmean(class_recall(s)))


@register("macro_f1", "accuracy", "mean over classes of the F1 score (harmonic mean of precision and recall)",
          HIGHER, "share")
def macro_f1(s: Samples) -> float:
    k = s.num_classes
    n, tp = class_counts(s)
    predicted = np.bincount(s.pred, minlength=k).astype(np.float64)
    present = n > 0
    denom = n + predicted  # 2 TP / (2 TP + FP + FN) = 2 TP / (n_c + predicted_c)
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    return float(f1[present].mean())


# ---------------------------------------------------------------------------- confidence


@register("confident_errors_90", "confidence", "wrong predictions made with confidence >= 90%", LOWER, "count")
def confident_errors_90(s: Samples) -> float:
    return float(confident_errors_at(s, 0.90))


@register("confident_errors_99", "confidence", "wrong predictions made with confidence >= 99%", LOWER, "count")
def confident_errors_99(s: Samples) -> float:
    return float(confident_errors_at(s, 0.99))


@register("confident_error_share_90", "confidence", "share of all errors made with confidence >= 90%",
          LOWER, "share", gated=False)
def confident_error_share_90(s: Samples) -> float:
    wrong = _need_errors(s)
    return float((s.conf[wrong] >= 0.90).mean())


@register("mean_confidence_wrong", "confidence", "mean confidence of the wrong predictions", LOWER, "share")
def mean_confidence_wrong(s: Samples) -> float:
    wrong = _need_errors(s)
    return float(s.conf[wrong].mean())


# ---------------------------------------------------------------------------- calibration


@register("ece", "calibration", "expected calibration error: mean |confidence - accuracy| over 15 bins",
          LOWER, "probability")
def ece(s: Samples) -> float:
    return calibration_error(s.conf, s.hit)


@register("ece_over", "calibration", "the overconfident part of the ECE (bins where confidence > accuracy)",
          LOWER, "probability")
def ece_over(s: Samples) -> float:
    gap, _ = _bin_gaps(s)
    return float(np.clip(gap, 0, None).sum() / len(s))


@register("ece_under", "calibration", "the underconfident part of the ECE (bins where confidence < accuracy)",
          LOWER, "probability")
def ece_under(s: Samples) -> float:
    gap, _ = _bin_gaps(s)
    return float(np.clip(-gap, 0, None).sum() / len(s))


TEMPERATURE_RANGE = (1e-2, 1e2)


def fitted_temperature(log_probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T that minimises the mean NLL of softmax(z / T) (Guo et al. 2017), z any
    logits of these probabilities (log-probabilities differ from the logits by a constant per
    row, which the softmax ignores). The NLL is convex in beta = 1 / T: Newton's method on beta,
    from 1, with steps halved until the NLL falls; clipped to ``TEMPERATURE_RANGE``."""
    z = np.asarray(log_probs, dtype=np.float64)
    if z.ndim != 2 or len(z) == 0 or not np.isfinite(z).all():
        raise NotApplicable("the temperature needs finite scores for at least one image")
    z = z - z.max(axis=1, keepdims=True)
    zy = z[np.arange(len(z)), labels]

    def nll_grad_curv(beta):
        a = beta * z
        top = a.max(axis=1, keepdims=True)
        e = np.exp(a - top)
        total = e.sum(axis=1)
        p = e / total[:, None]
        lse = np.log(total) + top[:, 0]
        ez = (p * z).sum(axis=1)
        var = (p * z * z).sum(axis=1) - ez ** 2
        return float(np.mean(lse - beta * zy)), float(np.mean(ez - zy)), float(np.mean(np.maximum(var, 0)))

    lo, hi = 1 / TEMPERATURE_RANGE[1], 1 / TEMPERATURE_RANGE[0]
    beta = 1.0
    f, g, h = nll_grad_curv(beta)
    for _ in range(100):
        step = g / h if h > 1e-12 else np.sign(g) * beta
        new = float(np.clip(beta - step, lo, hi))
        for _ in range(60):  # halve the step until the NLL falls (a convex function: it does)
            f_new, g_new, h_new = nll_grad_curv(new)
            if f_new <= f + 1e-15 or abs(new - beta) < 1e-12:
                break
            new = (new + beta) / 2
        done = abs(new - beta) < 1e-10 * max(1.0, beta)
        beta, f, g, h = new, f_new, g_new, h_new
        if done or abs(g) < 1e-12:
            break
    return float(1.0 / beta)


@register("temperature", "calibration", "the temperature T minimising the test NLL of softmax(logits / T): 1 "
          "calibrated, > 1 overconfident, < 1 underconfident", NEUTRAL, "score", range_=TEMPERATURE_RANGE,
          scale="log")
def temperature(s: Samples) -> float:
    if s.probs is None:
        raise NotApplicable("these outcomes were stored without every class's probability")
    with np.errstate(divide="ignore"):
        return fitted_temperature(np.log(np.clip(s.probs, 1e-300, None)), s.labels)


@register("mce", "calibration", "maximum calibration error: the largest |confidence - accuracy| of a bin",
          LOWER, "probability", gated=False)
def mce(s: Samples) -> float:
    gap, count = _bin_gaps(s)
    full = count > 0
    return float(np.max(np.abs(gap[full]) / count[full]))


@register("calibration_gap", "calibration", "mean confidence minus accuracy (> 0 overconfident, < 0 underconfident)",
          NEUTRAL, "probability", range_=(-1.0, 1.0), gated=False)
def calibration_gap(s: Samples) -> float:
    return float(s.conf.mean() - s.hit.mean())


@register("brier", "calibration", "Brier score: mean squared distance between the probability vector and the "
          "one-hot label (0 perfect, 2 worst)", LOWER, "score", range_=(0.0, 2.0))
def brier(s: Samples) -> float:
    if s.brier is None:
        raise NotApplicable("these outcomes were stored without per-image Brier scores")
    return float(np.mean(s.brier))


def equal_mass_bins(conf: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """The bin of each confidence when the bins hold (about) equally many images: edges at the
    confidences' quantiles (linear interpolation, ``np.quantile``), the outer edges at 0 and 1,
    each bin [lo, hi) and the last [lo, 1] (as netcal's ``ECE(equal_intervals=False)``, which
    bins with ``np.histogramdd``); images tied on an edge go to the upper bin."""
    edges = np.quantile(conf, np.linspace(0.0, 1.0, bins + 1))
    edges[0], edges[-1] = 0.0, 1.0
    return np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, bins - 1)


@register("adaptive_ece", "calibration", "ECE over 15 equal-mass bins (each holds about as many images): less "
          "sensitive to where bin edges fall", LOWER, "probability")
def adaptive_ece(s: Samples) -> float:
    idx = equal_mass_bins(s.conf)
    gap = np.bincount(idx, weights=s.conf - s.hit, minlength=ECE_BINS)
    return float(np.abs(gap).sum() / len(s))


@register("classwise_ece", "calibration", "classwise ECE: every class's probability against whether the image is of "
          "that class, 15 bins, mean over classes", LOWER, "probability",
          gated=False)
def classwise_ece(s: Samples) -> float:
    if s.probs is None:
        raise NotApplicable("these outcomes were stored without every class's probability")
    n, k = s.probs.shape
    onehot = np.zeros((n, k))
    onehot[np.arange(n), s.labels] = 1.0
    total = 0.0
    for c in range(k):
        p = s.probs[:, c]
        gap = np.bincount(bin_index(p), weights=p - onehot[:, c], minlength=ECE_BINS)
        total += np.abs(gap).sum() / n
    return float(total / k)


# ---------------------------------------------------------------------------- selective prediction


@register("selective_coverage", "selective", "share of test images kept when predictions below 70% confidence "
          "are rejected", HIGHER, "share")
def selective_coverage(s: Samples) -> float:
    return float((s.conf >= REJECT_BELOW).mean())


@register("selective_accuracy", "selective", "accuracy on the images kept when predictions below 70% confidence "
          "are rejected", HIGHER, "share")
def selective_accuracy(s: Samples) -> float:
    keep = s.conf >= REJECT_BELOW
    if not keep.any():
        raise NotApplicable(f"no prediction reaches {REJECT_BELOW:.0%} confidence: nothing is kept")
    return float(s.hit[keep].mean())


@register("aurc", "selective", "area under the risk-coverage curve (error rate as the least confident are "
          "rejected)", LOWER, "probability")
def aurc(s: Samples) -> float:
    return float(risk_coverage(s)[1].mean())


# ---------------------------------------------------------------------------- generalisation


@register("train_accuracy", "generalisation", "eval-mode accuracy on a fixed sample of the training images",
          HIGHER, "share", needs=("train_sample",), gated=False)
def train_accuracy(train: Samples) -> float:
    return accuracy(train)


@register("val_accuracy", "generalisation", "eval-mode accuracy on the validation split", HIGHER, "share",
          needs=("val",), gated=False)
def val_accuracy(val: Samples) -> float:
    return accuracy(val)


@register("generalisation_gap", "generalisation", "train-sample accuracy minus validation accuracy, both in eval "
          "mode (memorisation)", LOWER, "share", needs=("train_sample", "val"), paired=False, range_=(-1.0, 1.0))
def generalisation_gap(train: Samples, val: Samples) -> float:
    return accuracy(train) - accuracy(val)
