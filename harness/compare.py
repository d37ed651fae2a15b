"""Baseline vs candidate on the same test images: paired statistics.

* Accuracy: McNemar's exact test on the discordant pairs (a two-sided binomial test of
  "corrected" vs "regressed" samples at p = 1/2).
* Every metric difference: a paired bootstrap 95% interval (resampling test images, the
  same indices for both models), percentile method, seeded.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import metrics

BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 12345


def mcnemar_exact(base_correct: np.ndarray, cand_correct: np.ndarray) -> dict:
    """Exact McNemar test. ``corrected``: wrong -> right; ``regressed``: right -> wrong."""
    from scipy.stats import binomtest

    base_correct = np.asarray(base_correct, bool)
    cand_correct = np.asarray(cand_correct, bool)
    corrected = int((~base_correct & cand_correct).sum())
    regressed = int((base_correct & ~cand_correct).sum())
    n = corrected + regressed
    p = 1.0 if n == 0 else float(binomtest(corrected, n, 0.5, alternative="two-sided").pvalue)
    return {"corrected": corrected, "regressed": regressed, "p_value": p}


def per_sample(probs: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """What every compared metric is a function of: confidence, hit, and NLL per sample."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    return {
        "conf": probs.max(1),
        "hit": probs.argmax(1) == labels,
        "nll": -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)),
    }


def _ece(s, bins: int = metrics.ECE_BINS) -> float:
    # metrics.ece's definition (tests check it against netcal), on per-sample arrays
    idx = metrics.bin_index(s["conf"], bins)
    gap = np.bincount(idx, weights=s["hit"] - s["conf"], minlength=bins)
    return float(np.abs(gap).sum() / len(idx))


def _aurc(s) -> float:
    order = np.argsort(-s["conf"], kind="stable")
    wrong = ~s["hit"][order]
    return float((np.cumsum(wrong) / np.arange(1, len(wrong) + 1)).mean())


COMPARED: dict[str, Callable[[dict], float]] = {
    "accuracy": lambda s: float(s["hit"].mean()),
    "loss": lambda s: float(s["nll"].mean()),
    "ece": _ece,
    "confident_errors_99": lambda s: float((~s["hit"] & (s["conf"] >= 0.99)).sum()),
    "confident_errors_90": lambda s: float((~s["hit"] & (s["conf"] >= 0.90)).sum()),
    "aurc": _aurc,
}


def paired_bootstrap(
    stat: Callable[[dict], float],
    a: dict[str, np.ndarray],
    b: dict[str, np.ndarray],
    n_boot: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
) -> dict:
    """Point estimate and percentile interval of ``stat(b) - stat(a)`` over paired resamples
    of the samples (the same indices for both models)."""
    rng = np.random.default_rng(seed)
    n = len(a["conf"])
    delta = stat(b) - stat(a)
    boots = np.empty(n_boot)
    for i in range(n_boot):
        idx = rng.integers(0, n, n)
        boots[i] = stat({k: v[idx] for k, v in b.items()}) - stat({k: v[idx] for k, v in a.items()})
    lo, hi = np.percentile(boots, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return {"delta": float(delta), "ci": [float(lo), float(hi)]}


def compare(probs_base, probs_cand, labels, n_boot: int = BOOTSTRAP_SAMPLES) -> dict:
    """Paired comparison of a candidate against the baseline on the same samples."""
    a, b = per_sample(probs_base, labels), per_sample(probs_cand, labels)
    mc = mcnemar_exact(a["hit"], b["hit"])
    both_wrong = ~a["hit"] & ~b["hit"]
    lower = (b["conf"] < a["conf"]) & both_wrong
    deltas = {name: paired_bootstrap(fn, a, b, n_boot) for name, fn in COMPARED.items()}
    return {
        "accuracy_delta": deltas["accuracy"]["delta"],
        "accuracy_delta_ci": deltas["accuracy"]["ci"],
        "mcnemar_p": mc["p_value"],
        "corrected": mc["corrected"],
        "regressed": mc["regressed"],
        "both_wrong": int(both_wrong.sum()),
        "both_wrong_lower_confidence_share": float(lower.sum() / both_wrong.sum()) if both_wrong.any() else float("nan"),
        "metric_deltas": deltas,
    }


def significant(ci: list[float], direction: str) -> bool:
    """True when the whole interval lies on the improving side of zero."""
    return ci[1] < 0 if direction == "lower" else ci[0] > 0
