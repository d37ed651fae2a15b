"""The stated rule: a one-sided normal tolerance bound from the values of the calibration runs
(the package docstring says why these numbers)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

COVERAGE = 0.9999
CONFIDENCE = 0.95
SIGNIFICANT = 4  # bounds are rounded outward to this many significant digits
STORED = 6  # measured values are stored (and bounds derived from them) at this many significant digits


def tolerance_factor(n: int, coverage: float = COVERAGE, confidence: float = CONFIDENCE) -> float:
    """The one-sided normal tolerance factor k for n independent draws: P(mean - k sd <= the
    ``coverage`` quantile) = ``confidence``. k(5) = 7.50, k(10) = 5.20, k(30) = 4.02 at
    coverage 0.999; 8.97, 6.22, 4.82 at 0.9999 (both at 95% confidence)."""
    from scipy import stats

    if n < 2:
        raise ValueError("a tolerance bound needs at least 2 independent runs")
    z = stats.norm.ppf(coverage)
    return float(stats.nct.ppf(confidence, n - 1, z * math.sqrt(n)) / math.sqrt(n))


def stored(x: float) -> float:
    """A measured value as the evidence stores it (``STORED`` significant digits): bounds are
    derived from the stored values, so anyone can recompute them from the file."""
    return float(f"{x:.{STORED}g}")


def round_out(x: float, side: str, digits: int = SIGNIFICANT) -> float:
    """``x`` rounded away from the passing side (a min bound down, a max bound up) to ``digits``
    significant digits: rounding never tightens a bound."""
    if x == 0 or not math.isfinite(x):
        return float(x)
    scale = 10 ** (digits - 1 - math.floor(math.log10(abs(x))))
    return (math.floor(x * scale) if side == "min" else math.ceil(x * scale)) / scale


@dataclass(frozen=True)
class Rule:
    coverage: float = COVERAGE
    confidence: float = CONFIDENCE

    def describe(self) -> str:
        return (f"mean -/+ k * max(sd, quantum), k the one-sided normal tolerance factor for {self.coverage:.2%} of "
                f"runs at {self.confidence:.0%} confidence over the number of seeds; rounded outward to "
                f"{SIGNIFICANT} significant digits")

    def bound(self, values, side: str, n_seeds: int, quantum: float = 0.0) -> tuple[float | None, dict]:
        """(bound, evidence) for one side ("min" or "max") of a metric's values; the bound is
        None when the values cannot support one (no spread and no quantum)."""
        v = np.asarray(values, dtype=np.float64)
        quantum = stored(quantum)
        sd = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        used = max(sd, quantum)
        k = tolerance_factor(n_seeds, self.coverage, self.confidence)
        ev = {"n": int(len(v)), "seeds": int(n_seeds), "mean": stored(v.mean()), "sd": stored(sd),
              "quantum": stored(quantum), "k": stored(k), "min": float(v.min()), "max": float(v.max()),
              "values": [float(x) for x in v]}
        if used == 0:
            return None, ev
        mean = float(v.mean())
        raw = mean - k * used if side == "min" else mean + k * used
        return round_out(raw, side), ev
