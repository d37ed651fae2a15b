"""Baseline vs candidate on the same test images: paired statistics over registry metrics.

* Accuracy: McNemar's exact test on the discordant pairs (a two-sided binomial test of
  "corrected" vs "regressed" samples at p = 1/2).
* Any paired metric of ``metrics.REGISTRY``: a paired bootstrap 95% interval of
  (candidate - baseline), resampling images with the same indices for both models,
  percentile method, seeded. Every metric is resampled with the same index sequence.
* An effect "improves" when the whole interval lies on the metric's improving side; it is
  "not worse" when the interval's harmful end is within a stated margin of no change.
* Across training seeds: the t-interval of the mean per-seed paired change (shown), the share of
  seeds on which the candidate is better (``better_share``), and the decision: an exact
  sign-flip permutation test of the per-seed changes (``effect_test``), whose level holds for
  few seeds and skewed changes (a t-interval does not: one outlying seed widens it past zero
  while every seed improves), with Holm's correction across a candidate's effects (``holm``).
"""

from __future__ import annotations

import numpy as np

from . import metrics
from .metrics import HIGHER, LOWER, NotApplicable, Samples

BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 12345
LEVEL = 0.95
# What the report compares for every candidate (all paired test-split metrics).
COMPARED = ("accuracy", "loss", "ece", "ece_over", "ece_under", "confident_errors_90", "confident_errors_99",
            "mean_confidence_wrong", "worst_class_accuracy", "balanced_accuracy", "macro_f1", "aurc",
            "selective_accuracy", "selective_coverage")


def mcnemar_exact(base_hit: np.ndarray, cand_hit: np.ndarray) -> dict:
    """Exact McNemar test. ``corrected``: wrong -> right; ``regressed``: right -> wrong."""
    from scipy.stats import binomtest

    base_hit = np.asarray(base_hit, bool)
    cand_hit = np.asarray(cand_hit, bool)
    corrected = int((~base_hit & cand_hit).sum())
    regressed = int((base_hit & ~cand_hit).sum())
    n = corrected + regressed
    p = 1.0 if n == 0 else float(binomtest(corrected, n, 0.5, alternative="two-sided").pvalue)
    return {"corrected": corrected, "regressed": regressed, "p_value": p}


def _check_paired(name: str) -> metrics.Metric:
    m = metrics.get(name)
    if not m.paired or len(m.needs) != 1 or m.per is not None:
        raise ValueError(f"metric {name!r} is not a function of one paired image set: no paired interval")
    return m


def paired_intervals(names, a, b, n_boot: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED,
                     level: float = LEVEL) -> dict[str, dict]:
    """For each metric: point estimate and percentile interval of metric(b) - metric(a) over
    paired resamples of the images (the same index sequence for every metric, so a metric's
    interval does not depend on which others are computed with it). ``a`` and ``b`` are the
    evidence (Samples, or a dict of Samples on the same images) of the baseline and the
    candidate. A metric that does not apply gets ``not_applicable`` (its reason) and no interval;
    resamples where it does not apply are dropped and counted."""
    ms = [_check_paired(n) for n in names]
    n = metrics.evidence_size(a)
    if metrics.evidence_size(b) != n:
        raise ValueError("the two models were measured on different numbers of images")
    out: dict[str, dict] = {}
    live = []
    for m in ms:
        try:
            out[m.name] = {"delta": m.compute(b) - m.compute(a)}
            live.append(m)
        except NotApplicable as exc:
            out[m.name] = {"delta": None, "ci": None, "not_applicable": str(exc)}
    boots: dict[str, list[float]] = {m.name: [] for m in live}
    dropped = dict.fromkeys(boots, 0)
    rng = np.random.default_rng(seed)
    for _ in range(n_boot if live else 0):
        idx = rng.integers(0, n, n)
        ra, rb = metrics.take(a, idx), metrics.take(b, idx)
        for m in live:
            try:
                boots[m.name].append(m.compute(rb) - m.compute(ra))
            except NotApplicable:
                dropped[m.name] += 1
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    for m in live:
        ci = [float(v) for v in np.percentile(boots[m.name], q)] if boots[m.name] else None
        out[m.name].update({"delta": float(out[m.name]["delta"]), "ci": ci, "level": level, "n_boot": n_boot,
                            "dropped": dropped[m.name], "direction": m.direction})
    return out


def paired_interval(name: str, a, b, n_boot: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED,
                    level: float = LEVEL) -> dict:
    """``paired_intervals`` of one metric; raises NotApplicable when it does not apply."""
    d = paired_intervals([name], a, b, n_boot, seed, level)[name]
    if d.get("not_applicable") or d.get("ci") is None:
        raise NotApplicable(d.get("not_applicable") or f"{name} does not apply to any bootstrap resample")
    return d


def seed_interval(values, level: float = LEVEL) -> list[float] | None:
    """The ``level`` t-interval of the mean of ``values`` (one per training seed): the spread
    between training runs, which a bootstrap over test images does not see. None for fewer
    than two seeds."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return None
    half = stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return [float(v.mean() - half), float(v.mean() + half)]


def seed_spread(values) -> dict:
    """Mean, sample standard deviation and range of a metric over training seeds."""
    v = np.asarray(values, dtype=np.float64)
    return {"n": int(len(v)), "mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "values": [float(x) for x in v],
            "ci": seed_interval(v)}


def improves(ci, direction: str) -> bool:
    """The whole interval lies on the improving side of zero."""
    return bool(ci[1] < 0) if direction == LOWER else bool(ci[0] > 0) if direction == HIGHER else False


def harmful(ci, direction: str, margin: float = 0.0) -> bool:
    """The interval admits a harmful change larger than ``margin``: its harmful end lies
    beyond the margin (the failed half of a non-inferiority test)."""
    return bool(ci[1] > margin) if direction == LOWER else bool(ci[0] < -margin) if direction == HIGHER else False


def effect_holds(expect: str, ci, direction: str, margin: float = 0.0) -> bool:
    """``improves``: the interval lies on the improving side of zero. ``not_worse``
    (non-inferiority): the interval's harmful end is within ``margin`` of no change."""
    if expect == "improves":
        return improves(ci, direction)
    if expect == "not_worse":
        return not harmful(ci, direction, margin)
    raise ValueError(f"unknown expectation {expect!r}: use 'improves' or 'not_worse'")


def better_share(deltas, direction: str) -> float | None:
    """The share of paired training seeds on which the candidate beats the baseline (ties count
    half): an estimate of P(candidate better than baseline) for a new seed, the statistic
    Bouthillier et al. (MLSys 2021) recommend reporting next to the mean change."""
    d = np.asarray(deltas, dtype=np.float64)
    if len(d) == 0 or direction not in (HIGHER, LOWER):
        return None
    better = d > 0 if direction == HIGHER else d < 0
    return float((better.sum() + 0.5 * (d == 0).sum()) / len(d))


EFFECT_LEVEL = 0.05  # family-wise level of a candidate's documented effects (Holm across them)
EXACT_SEEDS = 20  # up to this many seeds every sign assignment is enumerated; beyond, 2**20 drawn


def effect_test(deltas, expect: str, direction: str, margin: float = 0.0, seed: int = 0) -> dict:
    """The one-sided exact sign-flip test of per-seed paired changes. Oriented so that positive
    is better: ``improves`` tests H0 "no improvement" (mean change <= 0); ``not_worse`` tests
    H0 "harm beyond the margin" (mean change <= -margin), on the changes shifted by the margin.
    Under H0 each seed's change is as likely to have either sign (the seeds are exchangeable
    training runs), so p = the share of the 2^n sign assignments whose mean reaches the observed
    one. Its smallest p is 1/2^n: 6 seeds can reach 0.016, 5 only 0.031 (Holm over two effects
    needs 0.025). {"p", "n", "statistic"}."""
    if direction not in (HIGHER, LOWER):
        raise ValueError("an effect needs a metric with a better side")
    d = np.asarray(deltas, dtype=np.float64) * (1.0 if direction == HIGHER else -1.0)
    if expect == "not_worse":
        d = d + margin
    elif expect != "improves":
        raise ValueError(f"unknown expectation {expect!r}: use 'improves' or 'not_worse'")
    n = len(d)
    if n == 0:
        return {"p": 1.0, "n": 0, "statistic": 0.0}
    observed = float(d.mean())
    if n <= EXACT_SEEDS:
        signs = 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)
    else:
        signs = np.random.default_rng(seed).choice([-1, 1], size=(2 ** EXACT_SEEDS, n))
    means = (signs * np.abs(d)).mean(axis=1)
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))
    p = float(np.mean(means >= observed - tol)) if observed > 0 else 1.0
    return {"p": p, "n": n, "statistic": observed}


def holm(pvalues: dict, level: float = EFFECT_LEVEL) -> dict:
    """Holm's step-down decisions over a family of tests: {name: (held, the level it was held
    to)}; the k-th smallest p is compared with level / (m - k), stopping at the first failure."""
    order = sorted(pvalues, key=lambda k: pvalues[k])
    out, going = {}, True
    for i, name in enumerate(order):
        at = level / (len(order) - i)
        going = going and pvalues[name] <= at
        out[name] = (going, at)
    return out


def compare(base: Samples, cand: Samples, names=COMPARED, n_boot: int = BOOTSTRAP_SAMPLES) -> dict:
    """Paired comparison of a candidate against the baseline on the same test images."""
    if not np.array_equal(base.ids, cand.ids) or not np.array_equal(base.labels, cand.labels):
        raise ValueError("the baseline and the candidate were not evaluated on the same test images")
    mc = mcnemar_exact(base.hit, cand.hit)
    both_wrong = ~base.hit & ~cand.hit
    lower = (cand.conf < base.conf) & both_wrong
    deltas = paired_intervals(names, base, cand, n_boot)
    return {
        "mcnemar_p": mc["p_value"],
        "corrected": mc["corrected"],
        "regressed": mc["regressed"],
        "both_wrong": int(both_wrong.sum()),
        "both_wrong_lower_confidence_share": float(lower.sum() / both_wrong.sum()) if both_wrong.any() else None,
        "metric_deltas": deltas,
    }
