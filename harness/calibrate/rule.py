"""The stated rule: a bound on the scale where a metric's spread is well-behaved, at a multiplier of
its spread read off the calibration's own leave-one-seed-out residuals, a guard band beyond the
most extreme calibration run, and a stability screen that sends a metric no rule can bound to
the report instead of a gate (docs/verdicts.md says why).

For a metric with values x_1..x_n over the calibration runs (n_s seeds, each at 1 and 2 threads):

    t = T(x)                                    the metric's scale (``SCALES``)
    bound = T^-1(mean(t) -/+ k * max(sd(t), T'(mean) * quantum))
    bound = beyond the most extreme x by GUARD quanta, at least

* ``T``: logit of the smoothed share for shares (x + q/2) / (1 + q), q the share's step (1/N);
  log(x + max(q, 0.005)) for error measures (ECE, Brier, loss, set sizes); sqrt(x + 3/8) for
  counts (Anscombe); atanh for correlations; the raw value for differences and for the
  accuracy of a class (a metric may name its scale; a share bounded raw whose bound would leave
  [0, 1] is bounded on the logit scale instead).
* ``k`` = q * sqrt(1 + 1/n_s): q the multiplier a new run's standardised residual stays under
  with probability ``coverage``, read off the law of the calibration's own residuals
  (``tail_multiplier``): each run of each seed against the mean and sd of the *other* seeds'
  runs (leave one seed out: the 1- and 2-thread runs of one seed share its data subset and
  initialisation, so the seed is the unit), oriented so that each bound's failing side is
  positive, pooled over every bound; a generalised Pareto law fitted to the residuals beyond
  ``TAIL_FROM`` (peaks over a threshold: the tail as measured, not as a normal law assumes), its
  quantile at the per-bound tail, taken at the upper ``confidence`` point of a bootstrap over
  seeds (the fit's error in the pooled quantile). Where the pool is too small for
  a tail fit (fewer than ``MIN_SEEDS_FOR_TAIL`` seeds or ``MIN_EXCEEDANCES`` residuals beyond
  the threshold), k is the one-sided normal tolerance factor over n_s seeds instead.
* ``coverage`` = 1 - alpha / (bounds checked in a run), alpha the false-alarm budget of a whole
  default run (``ALPHA_RUN``, 5%): Bonferroni over every bound a run checks (the baseline's and
  one candidate's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
ALPHA_RUN = 0.05  # the false-alarm budget of one default run (every bound of every model checked)
COVERAGE = 0.9999  # the per-bound coverage where no budget is split (a single metric's calibration)
SIGNIFICANT = 4  # bounds are rounded outward to this many significant digits
STORED = 6  # measured values are stored (and bounds derived from them) at this many significant digits
GUARD = 2  # a bound lies at least this many quanta beyond the most extreme calibration run
LOG_FLOOR = 5e-3  # error measures: differences below this are not told apart (log(x + floor)): the largest
#                  standard error of a mean of [0, 1] terms over a 10,000-image test split (0.5 / sqrt(10,000)); at
#                  1e-3 a calibrated model's ECE-over (0 to 0.015 over 24 runs) spread over two decades and bounded at 0.26
LOGIT_FLOOR = 1e-4  # continuous probabilities without a step: (x + f/2) / (1 + f)
# The stability screen: such evidence does not support a normal rule on any scale
MIN_DISTINCT = 5  # fewer distinct values
MAX_BOUNDARY_SHARE = 0.1  # more of the runs at an end of the metric's range (a share stuck at 0)
MAX_ROBUST_Z = 6.0  # a run this many robust sd (1.4826 MAD) from the median on the metric's scale (a normal
#                     sample of 24 runs goes that far with probability 0.002: 20,000 simulated samples)
SCALES = ("logit", "log", "sqrt", "fisher", "linear")
TAIL_FROM = 2.0  # residuals beyond this (in sd) feed the tail fit: the top ~5% of a normal pool
MIN_EXCEEDANCES = 50  # a tail fit needs at least this many residuals beyond TAIL_FROM
MIN_SEEDS_FOR_TAIL = 10  # and this many seeds (a bootstrap over 6 seeds has 462 distinct resamples: it says
#                          little, and the fit's q varied 8-24 over simulated 6-seed calibrations)
TAIL_BOOTSTRAP = 400  # resamples of the seeds for the fit's confidence
TAIL_SEED = 20261207  # the bootstrap's generator: the same multiplier from the same evidence


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


def scale_of(metric) -> str:
    """The scale a metric's spread is bounded on: its registered ``scale``, else by its unit and
    range (shares in [0, 1]: logit; counts: sqrt; error measures from 0: log; the rest raw)."""
    if getattr(metric, "scale", None):
        return metric.scale
    lo, hi = metric.lo, metric.hi
    if metric.unit == "count":
        return "sqrt"
    if metric.unit == "share" and (lo, hi) == (0.0, 1.0):
        return "logit"
    if lo == 0.0 and metric.unit in ("probability", "nats", "score"):
        return "log"
    return "linear"


class Scale:
    """T, its inverse and its slope, with the smoothing that keeps the ends of a range finite."""

    def __init__(self, name: str, quantum: float = 0.0):
        if name not in SCALES:
            raise ValueError(f"unknown scale {name!r}: one of {', '.join(SCALES)}")
        self.name, self.q = name, float(quantum)
        self.e = self.q / 2 if self.q > 0 else LOGIT_FLOOR / 2  # logit smoothing
        self.f = max(self.q, LOG_FLOOR)  # log offset

    def to(self, x):
        x = np.asarray(x, dtype=np.float64)
        if self.name == "logit":
            p = np.clip((x + self.e) / (1 + 2 * self.e), 1e-12, 1 - 1e-12)
            return np.log(p / (1 - p))
        if self.name == "log":
            return np.log(np.maximum(x, 0) + self.f)
        if self.name == "sqrt":
            return np.sqrt(np.maximum(x, 0) + 0.375)
        if self.name == "fisher":
            return np.arctanh(np.clip(x, -0.999999, 0.999999))
        return x

    def back(self, t: float) -> float:
        if self.name == "logit":
            return float((0.5 + 0.5 * math.tanh(t / 2)) * (1 + 2 * self.e) - self.e)
        if self.name == "log":
            return float(math.exp(min(t, 700.0)) - self.f)
        if self.name == "sqrt":
            return float(max(t, 0.0) ** 2 - 0.375)
        if self.name == "fisher":
            return float(math.tanh(t))
        return float(t)

    def step(self, x: float) -> float:
        """One quantum at ``x`` on this scale (the floor of the sd: a metric that took one value
        on every run still has its resolution as spread)."""
        if self.q <= 0:
            return 0.0
        lo, hi = self.to([x]), self.to([x + self.q])
        return float(abs(hi[0] - lo[0]))


def screen(values, metric, scale: Scale, labels: list[str] | None = None) -> str | None:
    """Why the evidence cannot support a normal rule on the metric's scale (None: it can)."""
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    distinct = len(np.unique(v))
    if distinct < MIN_DISTINCT:
        return f"only {distinct} distinct value{'s' if distinct != 1 else ''} in {n} runs (a rule needs {MIN_DISTINCT})"
    at_ends = int(np.sum((v == metric.lo) | (v == metric.hi)))
    if at_ends > MAX_BOUNDARY_SHARE * n:
        end = ", ".join(f"{e:g}" for e in (metric.lo, metric.hi) if np.any(v == e))
        return (f"{at_ends} of {n} runs at the end of its range ({end}): a share stuck there on most runs is "
                "zero-inflated, and no normal rule bounds its tail")
    t = scale.to(v)
    med = float(np.median(t))
    mad = 1.4826 * float(np.median(np.abs(t - med)))
    spread = max(mad, scale.step(float(np.median(v))))
    if spread > 0:
        z = np.abs(t - med) / spread
        i = int(np.argmax(z))
        if z[i] > MAX_ROBUST_Z:
            who = f"run {labels[i]}" if labels else "one run"
            return (f"{who} ({v[i]:.4g}) lies {z[i]:.1f} robust sd from the median on the {scale.name} scale (limit "
                    f"{MAX_ROBUST_Z:g}): a heavy tail a normal rule would understate")
    return None


def loso_residuals(values, seeds, scale: Scale) -> np.ndarray:
    """Each run's standardised residual against the other seeds' runs: (t - mean) / (max(sd,
    one quantum) * sqrt(1 + 1/(m - 1))), m the seeds; NaN where the others show no spread."""
    t = scale.to(values)
    seeds = np.asarray(seeds)
    distinct = np.unique(seeds)
    out = np.full(len(t), np.nan)
    if len(distinct) < 3:
        return out
    step = scale.step(float(np.mean(values)))
    for s in distinct:
        other = t[seeds != s]
        sd = max(float(other.std(ddof=1)), step)
        if sd > 0:
            out[seeds == s] = (t[seeds == s] - other.mean()) / (sd * math.sqrt(1 + 1 / (len(distinct) - 1)))
    return out


def _tail_quantile(r: np.ndarray, tail: float) -> float | None:
    """The residual exceeded with probability ``tail`` on the failing side (``r`` oriented so that
    a bound's failing side is positive), from a generalised Pareto fit to the residuals beyond
    ``TAIL_FROM``; None with too few of them."""
    from scipy import stats

    a = r[np.isfinite(r)]
    y = a[a > TAIL_FROM] - TAIL_FROM
    if len(y) < MIN_EXCEEDANCES:
        return None
    zeta = len(y) / len(a)
    p = tail / zeta
    if p >= 1:  # the quantile lies below the threshold: read it off the residuals themselves
        return float(np.quantile(a, 1 - tail))
    xi, _, sigma = stats.genpareto.fit(y, floc=0)
    return TAIL_FROM + float(stats.genpareto.ppf(1 - p, xi, scale=sigma))


def tail_multiplier(residuals: np.ndarray, seeds, tail: float, confidence: float = CONFIDENCE) -> dict | None:
    """q for a per-bound one-sided ``tail``: ``residuals`` (runs x bounds, oriented so that each
    bound's failing side is positive, NaN where undefined) pooled, the generalised Pareto quantile
    at the upper ``confidence`` point of a bootstrap over seeds (whole seeds resampled: a seed's
    runs and metrics move together; it covers the fit's error in the pooled quantile). None where
    the evidence is too thin for a tail fit (the tolerance factor is used then)."""
    seeds = np.asarray(seeds)
    distinct = np.unique(seeds)
    if len(distinct) < MIN_SEEDS_FOR_TAIL:
        return None
    point = _tail_quantile(residuals.ravel(), tail)
    if point is None:
        return None
    rng = np.random.default_rng(TAIL_SEED)
    rows = [np.flatnonzero(seeds == s) for s in distinct]
    qs = []
    for _ in range(TAIL_BOOTSTRAP):
        pick = np.concatenate([rows[i] for i in rng.integers(0, len(rows), len(rows))])
        q = _tail_quantile(residuals[pick].ravel(), tail)
        if q is not None:
            qs.append(q)
    a = residuals[np.isfinite(residuals)]
    return {"q": stored(float(np.quantile(qs, confidence)) if qs else point), "point": stored(point),
            "tail": tail, "residuals": int(a.size), "beyond": int((a > TAIL_FROM).sum()),
            "seeds": int(len(distinct)), "largest": stored(float(a.max()))}


@dataclass(frozen=True)
class Rule:
    confidence: float = CONFIDENCE
    alpha_run: float = ALPHA_RUN

    def describe(self) -> str:
        return (f"on each metric's scale (logit of a share, log of an error measure, sqrt of a count, raw for a "
                f"class's accuracy unless that bound leaves [0, 1]): mean -/+ k * max(sd, one quantum), k = q * sqrt(1 + 1/seeds), q the "
                f"multiplier a new run's leave-one-seed-out residual stays under with probability 1 - "
                f"{self.alpha_run:g} / (bounds checked in a run): the generalised Pareto tail of the calibration's "
                f"own residuals beyond {TAIL_FROM:g} sd, at the upper {self.confidence:.0%} point of a bootstrap over "
                f"seeds (the one-sided normal tolerance factor where too few residuals lie in the tail); at least "
                f"{GUARD} quanta beyond the most extreme run; rounded outward to {SIGNIFICANT} significant digits")

    def bound(self, values, side: str, n_seeds: int, quantum: float = 0.0, scale: str = "linear",
              coverage: float = COVERAGE, k: float | None = None) -> tuple[float | None, dict]:
        """(bound, evidence) for one side ("min" or "max") of a metric's values on ``scale``; the
        bound is None when the values cannot support one (no spread and no quantum). ``k``: the
        multiplier of the sd (``tail_multiplier``'s q * sqrt(1 + 1/seeds)); default the normal
        tolerance factor over ``n_seeds``."""
        v = np.asarray(values, dtype=np.float64)
        quantum = stored(quantum)
        T = Scale(scale, quantum)
        t = T.to(v)
        sd_t = float(t.std(ddof=1)) if len(v) > 1 else 0.0
        multiplier = "tolerance" if k is None else "tail"
        k = stored(tolerance_factor(n_seeds, coverage, self.confidence) if k is None else k)
        mean = float(v.mean())
        ev = {"n": int(len(v)), "seeds": int(n_seeds), "mean": stored(mean),
              "sd": stored(float(v.std(ddof=1)) if len(v) > 1 else 0.0), "quantum": quantum, "scale": scale,
              "coverage": coverage, "k": k, "multiplier": multiplier, "min": float(v.min()), "max": float(v.max()),
              "values": [float(x) for x in v]}
        used = max(sd_t, T.step(mean))
        if used == 0:
            return None, ev
        m_t = float(t.mean())
        raw = T.back(m_t - k * used if side == "min" else m_t + k * used)
        guard = float(v.min()) - GUARD * quantum if side == "min" else float(v.max()) + GUARD * quantum
        raw = min(raw, guard) if side == "min" else max(raw, guard)
        return round_out(raw, side), ev


def mean_bound(evidence: dict, side: str, seeds: int) -> float | None:
    """The bound on the mean of ``seeds`` new runs (each a new seed) from a calibrated bound's
    evidence: the same rule with the predictive spread of a mean, sd * sqrt(1/seeds + 1/n_s) in
    place of sd * sqrt(1 + 1/n_s) (k / sqrt(1 + 1/n_s) is the residuals' q), at least GUARD
    quanta from the calibration's mean; None where the evidence cannot give one (a bound set by
    hand, a policy bound kept, or the tolerance factor's, which has no q)."""
    ev = evidence or {}
    if seeds <= 1 or ev.get("multiplier") != "tail" or "values" not in ev or "policy_bound" in ev:
        return None
    n = int(ev["seeds"])
    T = Scale(ev["scale"], ev.get("quantum", 0.0))
    v = np.asarray(ev["values"], dtype=np.float64)
    t = T.to(v)
    used = max(float(t.std(ddof=1)), T.step(float(v.mean())))
    q = float(ev["k"]) / math.sqrt(1 + 1 / n)
    spread = q * used * math.sqrt(1 / seeds + 1 / n)
    raw = T.back(float(t.mean()) - spread if side == "min" else float(t.mean()) + spread)
    guard = float(v.mean()) - GUARD * float(ev.get("quantum", 0.0)) if side == "min" else \
        float(v.mean()) + GUARD * float(ev.get("quantum", 0.0))
    raw = min(raw, guard) if side == "min" else max(raw, guard)
    return round_out(raw, side)

