"""Split conformal prediction: sets of classes that contain the true class for at least
1 - alpha of test images, calibrated on the validation split (Vovk et al. 2005; Angelopoulos &
Bates, "A gentle introduction to conformal prediction", 2021).

* **LAC** (least ambiguous set-valued classifier, Sadinle et al. 2019): score ``1 - p_y``; the
  set holds every class with ``1 - p_k <= q``.
* **APS** (adaptive prediction sets, Romano et al. 2020), not randomised, the last class kept:
  score = the total probability of the classes ranked at or above the true one; the set is the
  top classes until their total reaches ``q`` (the class that crosses it included).

``q`` is the ``ceil((n + 1)(1 - alpha)) / n`` empirical quantile of the n validation scores
(the "higher" one). Then, for exchangeable validation and test images, the coverage of a new
image is at least 1 - alpha; the coverage of m test images, given the calibration set, follows
a beta-binomial law (``coverage_floor``), which is how far below 1 - alpha a sound run's
measured coverage can fall. Both methods are checked against MAPIE in the tests.
"""

from __future__ import annotations

import math

import numpy as np

METHODS = ("lac", "aps")
ALPHA = 0.1  # --conformal-alpha: sets that should hold the true class of 90% of images


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
