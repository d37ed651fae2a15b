"""Split conformal prediction: sets of classes that contain the true class for at least
1 - alpha of test images, calibrated on the validation split (Vovk et al. 2005; Angelopoulos &
Bates, "A gentle introduction to conformal prediction", 2021).

* **LAC** (least ambiguous set-valued classifier, Sadinle et al. 2019): score ``1 - p_y``; the
  set holds every class with ``1 - p_k <= q``.
* **APS** (adaptive prediction sets, Romano et al. 2020), not randomised, the last class kept:
  score = the total probability of the classes ranked at or above the true one; the set is the
  top classes until their total reaches ``q`` (the class that crosses it included).

* **Randomised APS** (``aps_rand``; Romano et al. 2020, with their randomisation): the score is
  the mass ranked strictly above the true class plus ``u`` times its own probability (``u``
  uniform, seeded, one per image); a class is in the set when the same quantity is ``<= q``.
  Empty sets are allowed: the scores are continuous, so the coverage is exact (floor and ceiling).
* **RAPS** (``raps``; Angelopoulos, Bates, Malik & Jordan, ICLR 2021): randomised APS plus a
  penalty ``lam * max(0, rank - k_reg)`` on classes ranked below ``k_reg``, which keeps the sets
  small. As in the authors' code: ``k_reg`` is the (1 - alpha) quantile of the true class's rank
  and ``lam`` the one of (0.001, 0.01, 0.1, 0.2, 0.5) that gives the smallest sets, both chosen on
  a ``TUNE_SHARE`` (30%) part of the validation split that the threshold is not calibrated on;
  the top class is always kept (``allow_zero_sets=False``), so the coverage may exceed 1 - alpha.

``q`` is the ``ceil((n + 1)(1 - alpha)) / n`` empirical quantile of the n validation scores
(the "higher" one). Then, for exchangeable validation and test images, the coverage of a new
image is at least 1 - alpha; the coverage of m test images, given the calibration set, follows
a beta-binomial law (``coverage_floor``), which is how far below 1 - alpha a sound run's
measured coverage can fall. For continuous scores (no ties at ``q``) the coverage is also at
most 1 - alpha + 1 / (n + 1) in expectation, and ``coverage_ceiling`` is the same law's upper
tail. LAC and APS are checked against MAPIE in the tests, the randomised scores and sets
against a case computed by hand (MAPIE's randomised APS has an open report of wrong sets, its
issue #456).
"""

from __future__ import annotations

import math

import numpy as np

METHODS = ("lac", "aps")
RANDOMISED = ("aps_rand", "raps")
ALL_METHODS = METHODS + RANDOMISED
ALPHA = 0.1  # --conformal-alpha: sets that should hold the true class of 90% of images
LAMBDAS = (0.001, 0.01, 0.1, 0.2, 0.5)  # RAPS's penalty weights tried (the authors' grid)
TUNE_SHARE = 0.3  # the part of the validation split RAPS's parameters are chosen on (pct_paramtune)
SEED = 7  # the uniform draws of the randomised methods


def scores(probs: np.ndarray, labels: np.ndarray, method: str) -> np.ndarray:
    """The conformity score of each image's true class (higher: less conforming)."""
    p = np.asarray(probs, dtype=np.float64)
    n = len(p)
    py = p[np.arange(n), labels]
    if method == "lac":
        return 1.0 - py
    if method == "aps":
        return np.where(p >= py[:, None], p, 0.0).sum(axis=1)  # ties: counted as ranked above (conservative)
    raise ValueError(f"unknown conformal method {method!r}: choose one of {', '.join(METHODS)}")


def threshold(cal_scores: np.ndarray, alpha: float) -> float:
    """The ceil((n + 1)(1 - alpha)) / n "higher" quantile of the calibration scores (1 when the
    level exceeds 1: every class then enters every set)."""
    s = np.sort(np.asarray(cal_scores, dtype=np.float64))
    n = len(s)
    k = math.ceil((n + 1) * (1 - alpha))
    return float(s[k - 1]) if k <= n else math.inf


def sets(probs: np.ndarray, q: float, method: str) -> np.ndarray:
    """(N, K) booleans: which classes are in each image's set at threshold ``q``."""
    p = np.asarray(probs, dtype=np.float64)
    if method == "lac":
        return 1.0 - p <= q
    if method == "aps":
        order = np.argsort(-p, axis=1, kind="stable")
        sorted_p = np.take_along_axis(p, order, axis=1)
        before = np.cumsum(sorted_p, axis=1) - sorted_p  # mass ranked strictly above each class
        keep_sorted = before < q  # the class that crosses q is kept
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=1)
        return keep
    raise ValueError(f"unknown conformal method {method!r}: choose one of {', '.join(METHODS)}")


def calibrate(val_probs: np.ndarray, val_labels: np.ndarray, alpha: float = ALPHA, method: str = "lac") -> float:
    return threshold(scores(val_probs, val_labels, method), alpha)


def coverage_floor(n_cal: int, n_test: int, alpha: float = ALPHA, tail: float = 1e-4) -> float:
    """The coverage of ``n_test`` images that a sound split-conformal run falls below with
    probability ``tail``: given n calibration scores, coverage ~ Beta(n + 1 - l, l) with
    l = floor((n + 1) alpha); the share of n_test images covered is beta-binomial."""
    from scipy.stats import betabinom

    ell = math.floor((n_cal + 1) * alpha)
    if ell < 1:
        return 0.0
    return float(betabinom.ppf(tail, n_test, n_cal + 1 - ell, ell) / n_test)


def coverage_ceiling(n_cal: int, n_test: int, alpha: float = ALPHA, tail: float = 1e-4) -> float:
    """The coverage of ``n_test`` images that a sound run with continuous scores exceeds with
    probability ``tail`` (the upper tail of ``coverage_floor``'s beta-binomial law)."""
    from scipy.stats import betabinom

    ell = math.floor((n_cal + 1) * alpha)
    if ell < 1:
        return 1.0
    return float(betabinom.ppf(1 - tail, n_test, n_cal + 1 - ell, ell) / n_test)


def ties_at(cal_scores: np.ndarray, q: float) -> int:
    """Calibration scores equal to the threshold: more than one makes the coverage discrete
    (it can exceed the ceiling: a share of images at probability 1.0 ties at LAC's score 0)."""
    return int(np.sum(np.asarray(cal_scores, dtype=np.float64) == q))


# ------------------------------------------------------------------ randomised APS and RAPS


def _sorted(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-p, axis=1, kind="stable")
    return order, np.take_along_axis(p, order, axis=1)


def ranks(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The true class's rank (1: the top class; ties in the stable order)."""
    order, _ = _sorted(np.asarray(probs, dtype=np.float64))
    return np.argmax(order == np.asarray(labels)[:, None], axis=1) + 1


def raps_scores(probs: np.ndarray, labels: np.ndarray, u: np.ndarray, lam: float = 0.0, k_reg: int = 0) -> np.ndarray:
    """E = (mass ranked strictly above y) + u * p_y + lam * max(0, rank(y) - k_reg)."""
    p = np.asarray(probs, dtype=np.float64)
    order, sp = _sorted(p)
    o = ranks(p, labels)
    above = (np.cumsum(sp, axis=1) - sp)[np.arange(len(p)), o - 1]
    return above + u * p[np.arange(len(p)), labels] + lam * np.maximum(0, o - k_reg)


def raps_sets(probs: np.ndarray, q: float, u: np.ndarray, lam: float = 0.0, k_reg: int = 0,
              allow_empty: bool = True) -> np.ndarray:
    """(N, K) booleans: class k is in the set when its E (``raps_scores`` with y = k) is <= q;
    without ``allow_empty`` the top class always is."""
    p = np.asarray(probs, dtype=np.float64)
    order, sp = _sorted(p)
    rank = np.arange(1, p.shape[1] + 1)[None, :]
    e = (np.cumsum(sp, axis=1) - sp) + u[:, None] * sp + lam * np.maximum(0, rank - k_reg)
    keep_sorted = e <= q
    if not allow_empty:
        keep_sorted[:, 0] = True
    keep = np.zeros_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, axis=1)
    return keep


def uniforms(n: int, salt: int) -> np.ndarray:
    """The seeded uniform draws of ``n`` images (``salt``: one stream per split and use)."""
    return np.random.default_rng([SEED, salt]).random(n)


def fit_randomised(val_probs: np.ndarray, val_labels: np.ndarray, alpha: float, method: str) -> dict:
    """The threshold and parameters of ``aps_rand`` or ``raps`` from the validation split:
    {"q", "lam", "k_reg", "allow_empty", "n_cal", "n_tune", "ties"}. RAPS chooses ``k_reg`` and
    ``lam`` on a seeded ``TUNE_SHARE`` of the split and calibrates ``q`` on the rest."""
    p, y = np.asarray(val_probs, dtype=np.float64), np.asarray(val_labels)
    n = len(p)
    if method == "aps_rand":
        scores_ = raps_scores(p, y, uniforms(n, 1))
        q = threshold(scores_, alpha)
        return {"q": q, "lam": 0.0, "k_reg": 0, "allow_empty": True, "n_cal": n, "n_tune": 0,
                "ties": ties_at(scores_, q)}
    if method != "raps":
        raise ValueError(f"unknown randomised method {method!r}: one of {', '.join(RANDOMISED)}")
    perm = np.random.default_rng([SEED, 2]).permutation(n)
    n_tune = max(1, int(round(TUNE_SHARE * n)))
    tune, cal = perm[:n_tune], perm[n_tune:]
    k_reg = int(np.sort(ranks(p[tune], y[tune]))[min(len(tune), math.ceil((len(tune) + 1) * (1 - alpha))) - 1])
    u_tune = uniforms(len(tune), 3)
    best = None
    for lam in LAMBDAS:  # the penalty giving the smallest sets on the tuning part (the authors' "size" criterion)
        q_t = threshold(raps_scores(p[tune], y[tune], u_tune, lam, k_reg), alpha)
        size = float(raps_sets(p[tune], q_t, u_tune, lam, k_reg, allow_empty=False).sum(axis=1).mean())
        if best is None or size < best[0]:
            best = (size, lam)
    lam = best[1]
    scores_ = raps_scores(p[cal], y[cal], uniforms(len(cal), 4), lam, k_reg)
    q = threshold(scores_, alpha)
    return {"q": q, "lam": lam, "k_reg": k_reg, "allow_empty": False, "n_cal": len(cal), "n_tune": len(tune),
            "ties": ties_at(scores_, q)}


def randomised_sets(test_probs: np.ndarray, fit: dict) -> np.ndarray:
    """The sets of the test images for a fitted randomised method (their own seeded draws)."""
    p = np.asarray(test_probs, dtype=np.float64)
    return raps_sets(p, fit["q"], uniforms(len(p), 5), fit["lam"], fit["k_reg"], fit["allow_empty"])
