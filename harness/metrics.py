"""The metric registry: every number the harness measures is defined here, once.

A metric is a ``Metric``: name, family, one line on what it measures, direction (is
higher or lower better), unit, and its function. The session, the paired comparison,
the gates and the report all read ``REGISTRY``; nothing else computes a metric.

Evidence
--------
Metric functions read *evidence* about one model, named by ``Metric.needs``:

* ``test`` / ``val`` / ``train_sample``: a ``Samples`` (per-sample outcomes of the model on
  the test split, the validation split, or a fixed seeded sample of the images it was
  trained on, evaluated in eval mode);
* ``robustness``: ``{condition: Samples}`` on the same stressed test images;
* ``attention``: an ``Attention`` (per-image heatmap scores, see ``harness/explain.py``).

A function of one ``Samples`` (or of a dict of them on the same images) is a function of
per-sample arrays, so the paired bootstrap of ``compare.py`` reuses it on resampled
indices (``Metric.paired``).

Definitions (N images, K classes; conf_i = top-label probability, pred_i its class,
hit_i = [pred_i = y_i], p_i(y) the probability of the true class)
--------------------------------------------------------------------------------------
* accuracy = mean(hit);  accuracy_above_chance = (accuracy - 1/K) / (1 - 1/K)
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

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields

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

    __slots__ = ("labels", "pred", "conf", "nll", "margin", "ids", "num_classes", "rank")

    def __init__(self, labels, pred, conf, nll, margin, ids, num_classes: int, rank=None):
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

    @classmethod
    def from_logits(cls, logits, labels, ids=None) -> Samples:
        z = np.asarray(logits, dtype=np.float64)
        labels = _check_labels(z, labels)
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return cls._build(np.exp(logp), -logp[np.arange(len(labels)), labels], labels, ids)

    @classmethod
    def from_probs(cls, probs, labels, ids=None) -> Samples:
        p = np.asarray(probs, dtype=np.float64)
        labels = _check_labels(p, labels)
        nll = -np.log(np.clip(p[np.arange(len(labels)), labels], 1e-300, None))
        return cls._build(p, nll, labels, ids)

    @classmethod
    def _build(cls, probs, nll, labels, ids) -> Samples:
        n, k = probs.shape
        pred = probs.argmax(axis=1)
        conf = probs[np.arange(n), pred]
        if k > 1:
            top2 = np.partition(probs, k - 2, axis=1)[:, k - 2]
            margin = conf - top2
        else:
            margin = np.ones(n)
        ids = np.arange(n) if ids is None else np.asarray(ids).astype(np.int64)
        return cls(labels, pred, conf, nll, margin, ids, k)

    @property
    def hit(self) -> np.ndarray:
        return self.pred == self.labels

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx) -> Samples:
        """The samples at ``idx`` (a bootstrap resample, or a subset)."""
        return Samples(self.labels[idx], self.pred[idx], self.conf[idx], self.nll[idx], self.margin[idx],
                       self.ids[idx], self.num_classes, self.rank[idx])


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
    """A resample of evidence on the same images: a Samples (or anything with ``take``) or a
    dict of them."""
    if hasattr(evidence, "take"):
        return evidence.take(idx)
    if isinstance(evidence, Mapping):
        return {k: take(v, idx) for k, v in evidence.items()}
    raise TypeError(f"cannot resample {type(evidence).__name__}")


def evidence_size(evidence) -> int:
    if hasattr(evidence, "take"):
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


def _bin_gaps(s: Samples, bins: int = ECE_BINS) -> tuple[np.ndarray, np.ndarray]:
    idx = bin_index(s.conf, bins)
    gap = np.bincount(idx, weights=s.conf - s.hit, minlength=bins)
    return gap, np.bincount(idx, minlength=bins)


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


# ============================================================================ the registry


@dataclass(frozen=True)
class Metric:
    name: str
    family: str  # the stress-test family (a pytest marker): accuracy, confidence, calibration, ...
    description: str  # one line: what it measures
    direction: str  # HIGHER or LOWER is better, or NEUTRAL (no better side: no one-sided bound)
    unit: str  # share (of images: shown as %) | probability | count | nats | score
    fn: Callable  # fn(*evidence) or, with per="class", fn(*evidence, index)
    needs: tuple[str, ...] = ("test",)
    per: str | None = None  # "class": one value per class
    paired: bool = True  # a function of per-sample arrays of one image set (bootstrap-able)
    lo: float = -math.inf  # the values the metric can take: [lo, hi]
    hi: float = math.inf
    gated: bool = True  # a stress test checks it (False: descriptive, reported only)
    resolution: str | None = None  # its smallest step: "one" (a count), "image" (1 / images measured), None

    def compute(self, *evidence, index: int | None = None) -> float:
        value = self.fn(*evidence) if self.per is None else self.fn(*evidence, index)
        return float(value)

    def can_fail(self, kind: str, bound: float) -> bool:
        """Whether a ``min`` / ``max`` bound can ever fail: a floor at or below the lowest value
        the metric can take (or a ceiling at or above its highest) passes every model."""
        return bound > self.lo if kind == "min" else bound < self.hi

    @property
    def range_text(self) -> str:
        def end(x: float) -> str:
            return "-inf" if x == -math.inf else "inf" if x == math.inf else f"{x:g}"

        return f"[{end(self.lo)}, {end(self.hi)}]"


REGISTRY: dict[str, Metric] = {}
# The values a metric can take, by unit (shares and probabilities in [0, 1], counts and nats
# from 0), unless the metric says otherwise (differences, correlations, ratios).
UNIT_RANGE = {"share": (0.0, 1.0), "probability": (0.0, 1.0), "count": (0.0, math.inf), "nats": (0.0, math.inf),
              "score": (-math.inf, math.inf)}


UNIT_RESOLUTION = {"count": "one", "share": "image"}


def register(name, family, description, direction, unit, needs=("test",), per=None, paired=True, range_=None,
             gated=True, resolution=None):
    def deco(fn):
        if name in REGISTRY:
            raise ValueError(f"metric {name!r} is defined twice")
        lo, hi = range_ if range_ is not None else UNIT_RANGE[unit]
        REGISTRY[name] = Metric(name, family, description, direction, unit, fn, tuple(needs), per, paired, lo, hi,
                                gated, resolution or UNIT_RESOLUTION.get(unit))
        return fn

    return deco


def get(name: str) -> Metric:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known metrics: {', '.join(sorted(REGISTRY))}") from None


def _need_errors(s: Samples) -> np.ndarray:
    wrong = ~s.hit
    if not wrong.any():
        raise NotApplicable("the model makes no errors on these images")
    return wrong


# ---------------------------------------------------------------------------- accuracy


@register("accuracy", "accuracy", "share of test images predicted right", HIGHER, "share")
def accuracy(s: Samples) -> float:
    return float(s.hit.mean())


@register("accuracy_above_chance", "accuracy", "accuracy rescaled so that chance (1/K) is 0 and perfect is 1",
          HIGHER, "score", range_=(-math.inf, 1.0), resolution="image")
def accuracy_above_chance(s: Samples) -> float:
    chance = 1.0 / s.num_classes
    return (accuracy(s) - chance) / (1.0 - chance)


@register("errors", "accuracy", "wrong predictions on the test split", LOWER, "count", gated=False)
def errors(s: Samples) -> float:
    return float((~s.hit).sum())


@register("loss", "accuracy", "mean negative log-likelihood of the true class (test loss)", LOWER, "nats")
def loss(s: Samples) -> float:
    return float(s.nll.mean())


@register("class_accuracy", "accuracy", "accuracy on the test images of one class", HIGHER, "share", per="class")
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
    gap, _ = _bin_gaps(s)
    return float(np.abs(gap).sum() / len(s))


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


# ---------------------------------------------------------------------------- robustness
# Evidence ``robustness``: {condition: Samples} on one seeded subset of the test split (the
# same images for every model); ``adversarial``: the same for the attacks, on the first
# images of that subset; conditions are named in harness/stress.py. E_{c,s} = 1 - accuracy
# under corruption c at severity s; E_clean the error on the same images without stress.


def _condition(ev: Mapping, name: str) -> Samples:
    if name not in ev:
        raise NotApplicable(f"the stress {name!r} was not run for this model")
    return ev[name]


def corruption_table(ev: Mapping) -> dict[str, list[Samples]]:
    """{corruption: [Samples at severity 1..5]} from robustness evidence."""
    out: dict[str, dict[int, Samples]] = {}
    for key, smp in ev.items():
        if key.startswith("corruption/"):
            _, name, sev = key.split("/")
            out.setdefault(name, {})[int(sev)] = smp
    if not out:
        raise NotApplicable("no corruption was run for this model")
    return {name: [sevs[k] for k in sorted(sevs)] for name, sevs in out.items()}


def _mean_over(ev: Mapping, prefix: str, fn: Callable[[Samples], float]) -> float:
    found = [fn(v) for k, v in ev.items() if k.startswith(prefix)]
    if not found:
        raise NotApplicable(f"no {prefix.rstrip('/')} stress was run for this model")
    return float(np.mean(found))


def flip_share(s: Samples, clean: Samples) -> float:
    """Share of images whose prediction differs from the unstressed prediction."""
    return float((s.pred != clean.pred).mean())


def _flips(ev: Mapping, prefix: str) -> float:
    clean = _condition(ev, "clean")
    return _mean_over(ev, prefix, lambda s: flip_share(s, clean))


def _robust(name, description, direction=HIGHER, unit="share", needs=("robustness",), family="robustness",
            paired=True, **kwargs):
    return register(name, family, description, direction, unit, needs=needs, paired=paired, **kwargs)


@_robust("clean_accuracy", "accuracy on the robustness subset without stress (the reference for the stresses)", gated=False)
def clean_accuracy(ev: Mapping) -> float:
    return accuracy(_condition(ev, "clean"))


@_robust("corruption_accuracy", "accuracy under the common corruptions, mean over every kind and severity 1-5")
def corruption_accuracy(ev: Mapping) -> float:
    return float(np.mean([accuracy(s) for sevs in corruption_table(ev).values() for s in sevs]))


@_robust("mean_corruption_error", "error under the common corruptions: mean over kinds of the mean over "
         "severities (unnormalised mCE)", LOWER)
def mean_corruption_error(ev: Mapping) -> float:
    return float(np.mean([np.mean([1 - accuracy(s) for s in sevs]) for sevs in corruption_table(ev).values()]))


@_robust("worst_corruption_accuracy", "accuracy under the corruption kind that hurts most (mean over severities)")
def worst_corruption_accuracy(ev: Mapping) -> float:
    return float(min(np.mean([accuracy(s) for s in sevs]) for sevs in corruption_table(ev).values()))


@_robust("corruption_ece", "ECE under the common corruptions, mean over every kind and severity", LOWER,
         "probability")
def corruption_ece(ev: Mapping) -> float:
    return float(np.mean([ece(s) for sevs in corruption_table(ev).values() for s in sevs]))


@_robust("corruption_ece_over", "the overconfident part of the ECE under the common corruptions, mean over every "
         "kind and severity", LOWER,
         "probability")
def corruption_ece_over(ev: Mapping) -> float:
    return float(np.mean([ece_over(s) for sevs in corruption_table(ev).values() for s in sevs]))


@_robust("corruption_confident_error_rate", "share of corrupted images predicted wrong with confidence >= 90%, "
         "mean over every kind and severity", LOWER)
def corruption_confident_error_rate(ev: Mapping) -> float:
    return float(np.mean([confident_errors_at(s, 0.9) / len(s) for sevs in corruption_table(ev).values()
                          for s in sevs]))


def _register_corruption_mean(corruption: str, label: str) -> None:
    def fn(ev: Mapping) -> float:
        sevs = corruption_table(ev).get(corruption)
        if not sevs:
            raise NotApplicable(f"the corruption {corruption!r} was not run for this model")
        return float(np.mean([accuracy(s) for s in sevs]))

    _robust(f"{label}_accuracy", f"accuracy under {corruption.replace('_', ' ')}, mean over severities 1-5")(fn)


for _c, _label in (("gaussian_noise", "noise"), ("brightness", "brightness"), ("contrast", "contrast")):
    _register_corruption_mean(_c, _label)


def _ce_ratio(ev: Mapping, base: Mapping, relative: bool) -> float:
    mine, theirs = corruption_table(ev), corruption_table(base)
    e_clean = 1 - accuracy(_condition(ev, "clean"))
    b_clean = 1 - accuracy(_condition(base, "clean"))
    ratios = []
    for name, sevs in mine.items():
        if name not in theirs:
            continue
        num = sum(1 - accuracy(s) - (e_clean if relative else 0.0) for s in sevs)
        den = sum(1 - accuracy(s) - (b_clean if relative else 0.0) for s in theirs[name])
        if den > 0:
            ratios.append(num / den)
    if not ratios:
        raise NotApplicable("the baseline's corruption errors are all zero (or, relative, no worse than clean)")
    return float(np.mean(ratios))


@_robust("corruption_mce", "mean corruption error normalised by the run's baseline (mCE; baseline = 1)", LOWER,
         "score", needs=("robustness", "baseline.robustness"), paired=False, range_=(0.0, math.inf))
def corruption_mce(ev: Mapping, base: Mapping) -> float:
    """mCE = mean_c (sum_s E_{c,s} / sum_s E^baseline_{c,s}). Hendrycks & Dietterich normalise by
    AlexNet, which means nothing for these models: the run's baseline is the reference."""
    return _ce_ratio(ev, base, relative=False)


@_robust("relative_corruption_mce", "relative mCE: the drop from clean error, normalised by the baseline's "
         "drop (baseline = 1)", LOWER, "score", needs=("robustness", "baseline.robustness"), paired=False)
def relative_corruption_mce(ev: Mapping, base: Mapping) -> float:
    """mean_c (sum_s (E_{c,s} - E_clean) / sum_s (E^b_{c,s} - E^b_clean))."""
    return _ce_ratio(ev, base, relative=True)


@_robust("occlusion_accuracy", "accuracy with a grey square at each image's worst placement (occlusion sweep)")
def occlusion_accuracy(ev: Mapping) -> float:
    return accuracy(_condition(ev, "occlusion"))


@_robust("occlusion_flip_share", "share of predictions changed by a grey square at the worst placement", LOWER)
def occlusion_flip_share(ev: Mapping) -> float:
    return flip_share(_condition(ev, "occlusion"), _condition(ev, "clean"))


@_robust("scale_accuracy", "accuracy at lower effective resolution (down-sampled by 0.5 and 0.75 and back)")
def scale_accuracy(ev: Mapping) -> float:
    return _mean_over(ev, "scale/", accuracy)


@_robust("scale_flip_share", "share of predictions changed by lowering the effective resolution", LOWER)
def scale_flip_share(ev: Mapping) -> float:
    return _flips(ev, "scale/")


@_robust("shift_accuracy", "accuracy with the image moved by 1-4 pixels (mean over distances)")
def shift_accuracy(ev: Mapping) -> float:
    return _mean_over(ev, "shift/", accuracy)


@_robust("shift_flip_share", "share of predictions changed by moving the image 1-4 pixels", LOWER)
def shift_flip_share(ev: Mapping) -> float:
    return _flips(ev, "shift/")


@_robust("rotation_accuracy", "accuracy with the image rotated by 5-15 degrees (mean over angles)")
def rotation_accuracy(ev: Mapping) -> float:
    return _mean_over(ev, "rotate/", accuracy)


@_robust("rotation_flip_share", "share of predictions changed by a 5-15 degree rotation", LOWER)
def rotation_flip_share(ev: Mapping) -> float:
    return _flips(ev, "rotate/")


@_robust("shift1_flip_share", "invariance: share of predictions a one-pixel shift changes", LOWER,
         family="invariance")
def shift1_flip_share(ev: Mapping) -> float:
    return flip_share(_condition(ev, "shift/1"), _condition(ev, "clean"))


@_robust("hflip_flip_share", "invariance: share of predictions a horizontal flip changes (classes a flip keeps)",
         LOWER, family="invariance")
def hflip_flip_share(ev: Mapping) -> float:
    if "hflip" not in ev:
        raise NotApplicable("a flip is not known to keep this dataset's classes (flip_invariant is off)")
    return flip_share(ev["hflip"], _condition(ev, "clean"))


@_robust("fgsm_accuracy", "accuracy under an FGSM attack at the dataset's reference budget (L-inf)",
         needs=("adversarial",))
def fgsm_accuracy(ev: Mapping) -> float:
    return accuracy(_condition(ev, "fgsm"))


@_robust("pgd_accuracy", "accuracy under a 10-step PGD attack at the dataset's reference budget (L-inf)",
         needs=("adversarial",))
def pgd_accuracy(ev: Mapping) -> float:
    return accuracy(_condition(ev, "pgd"))


@_robust("pgd_confident_error_rate", "share of attacked images (PGD, reference budget) predicted wrong with "
         "confidence >= 90%", LOWER, needs=("adversarial",))
def pgd_confident_error_rate(ev: Mapping) -> float:
    s = _condition(ev, "pgd")
    return confident_errors_at(s, 0.9) / len(s)


# ---------------------------------------------------------------------------- attention (Grad-CAM)
# Evidence ``attention``: one ``Attention`` per model on the run's shared explanation set (the
# same images for every model: the seed's named cases, each model's most confident errors and
# correct predictions of the same classes), each image explained for the model's own
# prediction. Per-image scores (harness/explain.py) are NaN where the map is degenerate (all
# zero, constant or not finite); such maps are counted, never scored.


@dataclass(frozen=True)
class Attention:
    ids: np.ndarray  # test ids of the shared explanation set
    roles: np.ndarray  # why each image is in the set, e.g. "error:baseline,correct:augment"
    reason: np.ndarray  # "" for a valid map, else why it is degenerate
    hit: np.ndarray  # whether this model predicts the image right
    gini: np.ndarray
    entropy: np.ndarray
    top10: np.ndarray
    deletion_gap: np.ndarray  # random map's deletion AUC minus the CAM's (> 0: better than random)
    insertion_gap: np.ndarray  # CAM's insertion AUC minus the random map's
    randomisation: np.ndarray  # rank correlation with the randomised model's map (NaN: not checked)
    confidence_change: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, idx) -> Attention:
        return Attention(*(getattr(self, f.name)[idx] for f in dataclass_fields(self)))


def _attention(a: Attention) -> Attention:
    if len(a) == 0:
        raise NotApplicable("no images to explain (no model makes an error and no case is named)")
    return a


def _valid_mean(a: Attention, values: np.ndarray, what: str) -> float:
    v = np.asarray(values, dtype=np.float64)[_attention(a).reason == ""]
    v = v[np.isfinite(v)]
    if len(v) == 0:
        raise NotApplicable(f"no valid heatmap to score {what} on (every map is degenerate)")
    return float(v.mean())


def _explain(name, description, direction, unit="score", paired=True, **kwargs):
    return register(name, "explain", description, direction, unit, needs=("attention",), paired=paired, **kwargs)


@_explain("cam_gini", "Gini index of the heatmap (0 spread evenly, 1 on one cell), mean over valid maps", NEUTRAL, range_=(0.0, 1.0))
def cam_gini(a: Attention) -> float:
    return _valid_mean(a, a.gini, "the Gini index")


@_explain("cam_entropy", "normalised entropy of the heatmap (1 spread evenly, 0 on one cell), mean over valid maps",
          NEUTRAL, range_=(0.0, 1.0), gated=False)
def cam_entropy(a: Attention) -> float:
    return _valid_mean(a, a.entropy, "the entropy")


@_explain("cam_top10", "share of heatmap mass in its top 10% of cells, mean over valid maps", NEUTRAL, "share", gated=False)
def cam_top10(a: Attention) -> float:
    return _valid_mean(a, a.top10, "the top-10% share")


@_explain("cam_degenerate_share", "share of heatmaps that are degenerate (all zero, constant or not finite)", LOWER,
          "share")
def cam_degenerate_share(a: Attention) -> float:
    return float((_attention(a).reason != "").mean())


@_explain("cam_deletion_gap", "faithfulness: area by which deleting the top pixels first lowers the class's "
          "probability faster than random", HIGHER, "probability", range_=(-1.0, 1.0))
def cam_deletion_gap(a: Attention) -> float:
    return _valid_mean(a, a.deletion_gap, "deletion")


@_explain("cam_insertion_gap", "faithfulness: area by which inserting the top pixels first raises the class's "
          "probability faster than random", HIGHER, "probability", range_=(-1.0, 1.0))
def cam_insertion_gap(a: Attention) -> float:
    return _valid_mean(a, a.insertion_gap, "insertion")


@_explain("cam_randomisation_corr", "sanity: rank correlation of the maps with those after randomising the "
          "weights down to the CAM layer", LOWER, range_=(-1.0, 1.0))
def cam_randomisation_corr(a: Attention) -> float:
    return _valid_mean(a, a.randomisation, "the randomisation check")


@_explain("cam_confidence_change", "change of the predicted class's probability when the image is multiplied by "
          "its heatmap", HIGHER, "probability", range_=(-1.0, 1.0))
def cam_confidence_change(a: Attention) -> float:
    return float(np.mean(_attention(a).confidence_change))


@_explain("cam_gini_error_gap", "Gini on the model's wrong images minus Gini on its right images of the same "
          "classes", NEUTRAL, paired=False, range_=(-1.0, 1.0), gated=False)
def cam_gini_error_gap(a: Attention) -> float:
    _attention(a)
    valid = (a.reason == "") & np.isfinite(a.gini)
    wrong = valid & ~a.hit
    right = valid & a.hit
    if not wrong.any() or not right.any():
        raise NotApplicable("the explanation set has no valid map of a wrong or of a right prediction")
    return float(a.gini[wrong].mean() - a.gini[right].mean())


# ============================================================================ measuring


def measure(name: str, evidence: Callable[[str], object], index: int | None = None) -> float:
    """The value of metric ``name``; ``evidence(kind)`` returns the evidence it needs.
    Raises NotApplicable when the metric does not apply."""
    m = get(name)
    if m.per is not None and index is None:
        raise ValueError(f"metric {name!r} has one value per {m.per}: give its index")
    return m.compute(*(evidence(k) for k in m.needs), index=index)


def measure_all(s: Samples, names: list[str] | None = None) -> dict[str, float | None]:
    """Every whole-model metric of the test family on one ``Samples`` (None = not applicable)."""
    out: dict[str, float | None] = {}
    for name, m in REGISTRY.items():
        if m.needs != ("test",) or m.per is not None or (names is not None and name not in names):
            continue
        try:
            out[name] = m.compute(s)
        except NotApplicable:
            out[name] = None
    return out
