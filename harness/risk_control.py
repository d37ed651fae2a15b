"""Selective prediction at a user's risk: the confidence threshold whose accepted predictions
are wrong at most ``risk`` of the time, with a stated guarantee from the validation split.

Learn-then-Test (Angelopoulos, Bates, Candès, Jordan & Lei 2021) on a fixed grid of thresholds
(``GRID``: 26 confidences from 0.1 to 0.9999, chosen before any data; a coarse grid keeps the
Bonferroni level usable on a few thousand validation images): at each
threshold t, n validation images have confidence >= t and k of them are wrong; the exact
binomial test of "their error rate exceeds risk" has p = P(Binomial(n, risk) <= k), which is
at most delta / |GRID| exactly when the Clopper-Pearson upper bound on the error rate at that
level is at most risk. The chosen threshold is the lowest one that passes (the most images
kept). Bonferroni over the grid: with probability at least 1 - ``DELTA`` over the validation
split, every passing threshold, the chosen one among them, has an error rate of at most
``risk`` on new images from the same distribution.

On the test split, the accepted predictions' error rate is then a binomial share whose upper
tail (``error_ceiling``: 1 in 10,000) is what a sound run stays under; with the 0.1% of the
guarantee (``DELTA``), a sound model fails that check at most about once in 100 runs, far less
when its error rate lies below the risk (the usual case: the chosen threshold is conservative).
"""

from __future__ import annotations

import numpy as np

DELTA = 0.01  # the guarantee's failure probability over the validation split
GRID = np.round(np.concatenate([np.arange(0.10, 0.951, 0.05), [0.96, 0.97, 0.98, 0.99, 0.995, 0.999, 0.9995, 0.9999]]),
                4)
TAIL = 1e-4  # the test split's error rate stays under its binomial tail at this level


def threshold(conf: np.ndarray, hit: np.ndarray, risk: float, delta: float = DELTA) -> dict:
    """{"threshold", "validation_accepted", "validation_errors", "upper"}: the lowest grid
    threshold whose accepted validation predictions pass the binomial test (None: none does, and
    nothing is accepted)."""
    from scipy.stats import beta, binom

    conf, wrong = np.asarray(conf, dtype=np.float64), ~np.asarray(hit, dtype=bool)
    level = delta / len(GRID)
    chosen = None
    for t in GRID:  # any order: Bonferroni, not a sequence
        inside = conf >= t
        n, k = int(inside.sum()), int(wrong[inside].sum())
        if n and binom.cdf(k, n, risk) <= level:
            chosen = (float(t), n, k)
            break  # GRID ascends: the first that passes keeps the most
    if chosen is None:
        return {"threshold": None, "validation_accepted": 0, "validation_errors": 0, "upper": None}
    t, n, k = chosen
    upper = 1.0 if k >= n else float(beta.ppf(1 - level, k + 1, n - k))  # Clopper-Pearson
    return {"threshold": t, "validation_accepted": n, "validation_errors": k, "upper": upper}


def error_ceiling(n_accepted: int, risk: float, tail: float = TAIL) -> float:
    """The error rate of ``n_accepted`` predictions whose true error rate is ``risk`` exceeds
    with probability ``tail`` (a binomial upper quantile)."""
    from scipy.stats import binom

    if n_accepted == 0:
        return 1.0
    return float(binom.ppf(1 - tail, n_accepted, risk) / n_accepted)
