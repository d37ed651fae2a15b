"""How concentrated a map is: Gini index, normalised entropy, top share (docs/explain.md)."""

from __future__ import annotations

import math

import numpy as np

from .cams import degeneracy


def _positive(maps) -> tuple[np.ndarray, np.ndarray]:
    """(M, n) float64 ``max(map, 0)`` and the mask of maps that can be scored."""
    a = np.asarray(maps, dtype=np.float64).reshape(len(maps), -1)
    ok = degeneracy(a) == ""
    x = np.maximum(np.where(np.isfinite(a), a, 0.0), 0.0)
    return x, ok


def gini(maps) -> np.ndarray:
    """Gini index per map (Quantus Sparseness): ``sum_i (2i - n - 1) x_(i) / (n sum x)`` over
    the ascending values of ``max(map, 0)``. 0 uniform .. (n-1)/n one pixel; NaN if degenerate."""
    x, ok = _positive(maps)
    n = x.shape[1]
    xs = np.sort(x, axis=1)
    i = np.arange(1, n + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        g = ((2 * i - n - 1) * xs).sum(1) / (n * xs.sum(1))
    return np.where(ok, g, np.nan)


def normalised_entropy(maps) -> np.ndarray:
    """``H(p) / log n`` per map with ``p = max(map, 0) / sum``: 1 uniform .. 0 one pixel; NaN
    if degenerate (or n = 1)."""
    x, ok = _positive(maps)
    n = x.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        p = x / x.sum(1, keepdims=True)
        h = -np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(1)
        h = h / math.log(n) if n > 1 else np.full(len(x), np.nan)
    return np.where(ok, h, np.nan)


def top_share(maps, fraction: float = 0.1) -> np.ndarray:
    """Share of ``sum max(map, 0)`` in the top ``fraction`` of pixels (the last pixel counted
    fractionally: a uniform map gives ``fraction``); NaN if degenerate."""
    if not 0 < fraction <= 1:
        raise ValueError("fraction must be in (0, 1]")
    x, ok = _positive(maps)
    n = x.shape[1]
    k = fraction * n
    whole = int(math.floor(k))
    xs = -np.sort(-x, axis=1)
    top = xs[:, :whole].sum(1)
    if whole < n:
        top = top + (k - whole) * xs[:, whole]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = top / x.sum(1)
    return np.where(ok, share, np.nan)


def concentration(cams, top: float = 0.2) -> np.ndarray:
    """The older concentration summary: ``top_share(cams, top)`` (share of mass in the top 20%)."""
    return top_share(cams, top)


def concentration_metrics(maps) -> dict[str, np.ndarray]:
    """Per map: ``gini``, ``entropy`` (normalised), ``top10`` (share in the top 10%) and
    ``reason`` ("" or why degenerate; the numbers are NaN then). Pass layer-resolution maps
    (``CamResult.raw``)."""
    return {
        "gini": gini(maps),
        "entropy": normalised_entropy(maps),
        "top10": top_share(maps, 0.1),
        "reason": degeneracy(maps),
    }
