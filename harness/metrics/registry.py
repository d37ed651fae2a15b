"""The registry: every metric the harness measures is a ``Metric`` registered here, once; the
session, the paired comparison, the gates, the calibration and the report all read ``REGISTRY``."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from .samples import HIGHER, LOWER, NEUTRAL, NotApplicable, Samples  # noqa: F401


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
    scale: str | None = None  # where its spread is bounded (calibrate.rule.scale_of: by unit and range if None)
    null: float | None = None  # what a model with no skill at it shows (AUROC 0.5): a bound beyond it checks nothing

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
# Per-label metrics (``Metric.per``): the kind of label -> the fixture a stress test receives one
# label as; ``LABELS[per](plan)`` lists a run's labels and ``LABEL_VALUE[per](plan, label)`` is
# what the metric's function is given for one (``register_label_kind``).
PER_LABEL: dict[str, str] = {}
LABELS: dict[str, Callable] = {}
LABEL_VALUE: dict[str, Callable] = {}


def register_label_kind(per: str, fixture: str, labels: Callable, value: Callable | None = None) -> None:
    """A kind of label a per-label metric takes one value for: the stress tests' fixture that
    receives it, ``labels(plan)`` -> the run's labels, ``value(plan, label)`` -> what the metric
    function is given (default: the label itself)."""
    if per in PER_LABEL and PER_LABEL[per] != fixture:
        raise ValueError(f"per-label kind {per!r} is registered twice, differently")
    PER_LABEL[per], LABELS[per] = fixture, labels
    LABEL_VALUE[per] = value or (lambda plan, label: label)


register_label_kind("class", "class_name", lambda plan: list(plan.data.classes),
                    lambda plan, label: plan.data.classes.index(label))
# The stress-test families: each is a pytest marker (registered from here by the plugin) and the
# family of the metrics its tests gate; each metrics module declares its own.
FAMILIES: dict[str, str] = {}  # filled by ``register_family``, in each metrics module beside its metrics
# The values a metric can take, by unit (shares and probabilities in [0, 1], counts and nats
# from 0), unless the metric says otherwise (differences, correlations, ratios).
UNIT_RANGE = {"share": (0.0, 1.0), "probability": (0.0, 1.0), "count": (0.0, math.inf), "nats": (0.0, math.inf),
              "score": (-math.inf, math.inf)}


UNIT_RESOLUTION = {"count": "one", "share": "image"}


def register_family(name: str, description: str) -> None:
    """A new stress-test family (and pytest marker), declared by the metrics module that adds it."""
    if FAMILIES.get(name, description) != description:
        raise ValueError(f"family {name!r} is described twice, differently")
    FAMILIES[name] = description


def register(name, family, description, direction, unit, needs=("test",), per=None, paired=True, range_=None,
             gated=True, resolution=None, scale=None, null=None):
    def deco(fn):
        if name in REGISTRY:
            raise ValueError(f"metric {name!r} is defined twice")
        if per is not None and per not in PER_LABEL:
            raise ValueError(f"metric {name!r}: unknown per-label kind {per!r}; one of {', '.join(PER_LABEL)}")
        if family not in FAMILIES:
            raise ValueError(f"metric {name!r}: unknown family {family!r}; add it to metrics.registry.FAMILIES")
        lo, hi = range_ if range_ is not None else UNIT_RANGE[unit]
        REGISTRY[name] = Metric(name, family, description, direction, unit, fn, tuple(needs), per, paired, lo, hi,
                                gated, resolution or UNIT_RESOLUTION.get(unit), scale, null)
        return fn

    return deco


def get(name: str) -> Metric:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known metrics: {', '.join(sorted(REGISTRY))}") from None


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


register_family("comparison", "baseline-vs-improvement tests")  # relative gates over any family's metrics
