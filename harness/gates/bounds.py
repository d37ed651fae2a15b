"""A bound and its outcome: ``Gate`` (a metric's bound, its kind, its source and evidence),
``check`` (a measured value against it, with the message a user reads) and ``Outcome``.
The file format: harness/gates/__init__.py."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from .. import compare, metrics
from ..metrics import HIGHER, LOWER, NEUTRAL

ABSOLUTE = ("min", "max")
RELATIVE = ("min_delta", "max_delta", "min_ratio", "max_ratio", "effect")
KINDS = ("min_delta", "max_delta", "min_ratio", "max_ratio", "effect", "min", "max")  # longest suffix first
EFFECTS = ("improves", "not_worse")
ANY_DATASET = "default"
ANY_MODEL = "default"
RELATIVE_TABLE = "vs_baseline"
EVIDENCE = "evidence"
UNBOUNDED = "unbounded"
EXPECTED_FAILURES = "expected_failures"
INCLUDE = "include"
POLICY = "policy"  # a table's bounds are policy (what any model must show), not measured spread: it says why
CALIBRATION = "calibration"
MIN_EFFECT_SEEDS = 6  # an effect of a recipe is decided on at least this many seeds (compare.effect_test: 1/2^6 < 0.025)
# which kinds suit which direction
_ALLOWED = {
    HIGHER: {"min", "min_delta", "min_ratio", "effect"},
    LOWER: {"max", "max_delta", "max_ratio", "effect"},
    NEUTRAL: {"min", "max", "min_delta", "max_delta", "min_ratio", "max_ratio"},
}
STATUSES = ("passed", "failed", "n/a", "xfail", "xpass", "undecided")


class GateFileError(ValueError):
    pass


@dataclass(frozen=True)
class Gate:
    metric: str
    kind: str
    bound: float | str | dict  # a number; an effect's expectation; or {label: number} for a per-class metric
    source: str  # e.g. "gates.toml [fashion-mnist.smoke.baseline]"
    margin: float = 0.0  # effects: how far on the harmful side a "not_worse" change may go
    evidence: dict | None = field(default=None, compare=False)  # what a calibrated bound was derived from
    # Merged per label (``Gates``): a per-label gate over an inherited one bounds the labels it
    # names and leaves the rest to the inherited gate (``fallback``); labels a later table leaves
    # unbounded are taken out of it (``except_labels``).
    fallback: Gate | None = field(default=None, compare=False)
    except_labels: frozenset = field(default=frozenset(), compare=False)

    def to_state(self) -> dict:
        """Every field as JSON (a worker hands its gates to the controller without pickle)."""
        return {"metric": self.metric, "kind": self.kind, "bound": self.bound, "source": self.source,
                "margin": self.margin, "evidence": self.evidence,
                "fallback": self.fallback.to_state() if self.fallback is not None else None,
                "except_labels": sorted(self.except_labels)}

    @classmethod
    def from_state(cls, d: dict) -> Gate:
        return cls(d["metric"], d["kind"], d["bound"], d["source"], d["margin"], d["evidence"],
                   cls.from_state(d["fallback"]) if d["fallback"] is not None else None,
                   frozenset(d["except_labels"]))

    @property
    def key(self) -> str:
        return f"{self.metric}_{self.kind}"

    @property
    def relative(self) -> bool:
        return self.kind in RELATIVE

    @property
    def per_label(self) -> bool:
        return isinstance(self.bound, dict)

    def for_label(self, label: str) -> Gate | None:
        """The scalar gate of one class of a per-class metric (None: that class is unbounded)."""
        if label in self.except_labels:
            return None
        if not self.per_label:
            return self
        if label not in self.bound:
            return self.fallback.for_label(label) if self.fallback is not None else None
        ev = (self.evidence or {}).get(label)
        return replace(self, bound=self.bound[label], evidence=ev)

    @property
    def calibration(self) -> dict | None:
        """The [calibration] of the file a calibrated bound comes from (its runs and regime)."""
        e = self.evidence or {}
        if isinstance(e.get("calibration"), dict):
            return e["calibration"]
        return next((v["calibration"] for v in e.values() if isinstance(v, dict)
                     and isinstance(v.get("calibration"), dict)), None)

    @property
    def expectation(self) -> str:
        """An effect's expectation in words, with its margin."""
        if self.bound == "not_worse":
            return f"not_worse (margin {figure(self.margin)})"
        return str(self.bound)

    def evidence_text(self) -> str:
        """One line on what a calibrated bound comes from ("" for a bound set by hand)."""
        e = self.evidence
        if not e or "mean" not in e:
            return ""
        cal = e.get("calibration") or {}
        runs = f"{e['n']} runs" + (f" ({len(cal['seeds'])} seeds x threads {', '.join(map(str, cal['threads']))})"
                                   if cal.get("seeds") and cal.get("threads") else "")
        where = ", ".join(str(cal[k]) for k in ("machine", "torch", "date") if cal.get(k))
        return (f"calibrated on {runs}: mean {figure(e['mean'])}, sd {figure(e['sd'])}, range [{figure(e['min'])}, "
                f"{figure(e['max'])}]" + (f"; {where}" if where else ""))


@dataclass(frozen=True)
class Outcome:
    gate: Gate
    value: float | None
    status: str  # one of STATUSES: "xfail" (failed as expected), "xpass" (passed, expected to fail),
    #              "undecided" (an effect on too few training seeds: shown, never passed or failed)
    message: str
    reference: float | None = None  # the baseline's value for relative gates
    limit: float | None = None  # the effective bound (relative gates: computed from the baseline)
    interval: list[float] | None = None  # effect gates: the 95% interval of the change
    basis: str | None = None  # effect gates: what the interval covers ("seeds" or "test images")

    def to_state(self) -> dict:
        return {"gate": self.gate.to_state(), "value": self.value, "status": self.status, "message": self.message,
                "reference": self.reference, "limit": self.limit, "interval": self.interval, "basis": self.basis}

    @classmethod
    def from_state(cls, d: dict) -> Outcome:
        return cls(**{**d, "gate": Gate.from_state(d["gate"])})

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def checked(self) -> bool:
        """Whether the gate was decided (passed or failed, expectedly or not)."""
        return self.status not in ("n/a", "undecided")

    def to_dict(self) -> dict:
        return {
            "metric": self.gate.metric, "kind": self.gate.kind, "bound": self.gate.bound, "limit": self.limit,
            "margin": self.gate.margin if self.gate.kind == "effect" else None,
            "value": self.value, "reference": self.reference, "interval": self.interval, "basis": self.basis,
            "source": self.gate.source, "evidence": self.gate.evidence_text() or None,
            "status": self.status, "passed": self.passed, "message": self.message,
        }


def figure(x) -> str:
    """A number as a gate message shows it: whole numbers without decimals, else 4 significant digits."""
    if x is None:
        return "n/a"
    if isinstance(x, bool) or isinstance(x, str):
        return str(x)
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    if float(x).is_integer() and abs(x) < 1e9:
        return str(int(x))
    return f"{x:.4g}"


def _signed(x: float) -> str:
    s = figure(x)
    return s if s.startswith("-") else "+" + s


def expect_failure(outcome: Outcome, why: str | None) -> Outcome:
    """An outcome seen through an expected failure: a failure is expected ("xfail"); a pass
    means the expectation is out of date ("xpass", which fails the run)."""
    if not why or not outcome.checked:
        return outcome
    if outcome.status == "failed":
        return replace(outcome, status="xfail", message=f"{outcome.message} [expected to fail: {why}]")
    return replace(outcome, status="xpass", message=f"{outcome.message} [but gates.toml expects it to fail ({why}): "
                                                    "the effect now holds; remove the expectation]")


def not_applicable(gate: Gate, reason: str, label: str | None = None) -> Outcome:
    name = gate.metric if label is None else f"{gate.metric}[{label}]"
    return Outcome(gate, None, "n/a", f"{name} not applicable: {reason} ({gate.source})")


def _source_note(gate: Gate) -> str:
    ev = gate.evidence_text()
    return f"({gate.source}; {ev})" if ev else f"({gate.source})"


def effect_text(value: float, interval, basis: str) -> str:
    return f"change {_signed(value)} [95% CI {_signed(interval[0])}, {_signed(interval[1])}; {basis}]"


def undecided(gate: Gate, value: float | None, interval, reference: float | None, why: str) -> Outcome:
    """An effect gate that cannot be decided (too few training seeds): the change and its
    test-sampling interval are shown, the gate neither passes nor fails."""
    shown = f"{effect_text(value, interval, 'test images only')} " if value is not None and interval else ""
    msg = f"{gate.metric} {shown}vs baseline {figure(reference)}: NOT DECIDED ({why}) ({gate.source})"
    return Outcome(gate, value, "undecided", msg, reference, None, list(interval) if interval else None,
                   "test images")


def check(gate: Gate, value: float, reference: float | None = None, interval: list[float] | None = None,
          label: str | None = None, basis: str = "test images") -> Outcome:
    """Compare a measured value with a gate. Relative gates need the baseline's value; effect
    gates the 95% interval of the change (``value`` is then the change itself) and what that
    interval covers (``basis``). ``label`` names the part a per-class value belongs to (shown
    as ``metric[label]``); a per-class gate is first narrowed to it."""
    if label is not None and gate.per_label:
        narrowed = gate.for_label(label)
        if narrowed is None:
            raise ValueError(f"gate {gate.key} has no bound for {label!r}")
        gate = narrowed
    m, k, b = gate.metric, gate.kind, gate.bound
    if label is not None:
        m = f"{m}[{label}]"
    if k == "effect":
        if interval is None:
            raise ValueError(f"gate {gate.key} needs the interval of the change")
        direction = metrics.get(gate.metric).direction
        ok = compare.effect_holds(str(b), interval, direction, gate.margin)
        side = "lower" if direction == LOWER else "higher"
        harm = "higher" if direction == LOWER else "lower"
        want = f"the interval on the improving ({side}) side" if b == "improves" else \
            f"the interval's {harm} end within {figure(gate.margin)} of no change"
        verdict = "as expected" if ok else "NOT as expected"
        msg = (f"{m} {effect_text(value, interval, basis)} vs baseline {figure(reference)}: {verdict} "
               f"({gate.expectation}: {want}) ({gate.source})")
        return Outcome(gate, value, "passed" if ok else "failed", msg, reference, None, list(interval), basis)
    if gate.relative and reference is None:
        raise ValueError(f"gate {gate.key} is relative: it needs the baseline's {m}")
    if k == "min":
        limit, ok, op, desc = b, value >= b, "<", f"min {figure(b)}"
    elif k == "max":
        limit, ok, op, desc = b, value <= b, ">", f"max {figure(b)}"
    elif k in ("min_delta", "max_delta"):
        limit = reference + b
        ok = value >= limit if k == "min_delta" else value <= limit
        op = "<" if k == "min_delta" else ">"
        desc = f"{k[:3]} baseline {figure(reference)} {'+' if b >= 0 else '-'} {figure(abs(b))} = {figure(limit)}"
    else:  # ratios
        limit = reference * b
        ok = value >= limit if k == "min_ratio" else value <= limit
        op = "<" if k == "min_ratio" else ">"
        desc = f"{k[:3]} {figure(b)} x baseline {figure(reference)} = {figure(limit)}"
    undefined = value is None or (isinstance(value, float) and math.isnan(value))
    if undefined:
        ok, op = False, "is undefined,"
    if ok:
        op = {"<": ">=", ">": "<="}[op]
    message = f"{m}={figure(value)} {op} {desc} {_source_note(gate) if not ok else '(' + gate.source + ')'}"
    return Outcome(gate, value, "passed" if ok else "failed", message, reference, limit)


SEED_MARK = "@s"  # runs with --seeds N: "augment@s43" is recipe augment trained with seed 43
SEED_GATES = "seed_gates"  # top-level key: "worst" (every seed's model passes) or "mean"
SEED_GATE_MODES = ("worst", "mean")


def recipe_of(model: str) -> str:
    """The recipe a model of the run was trained from (``augment@s43`` -> ``augment``): a seed's
    model is bounded by its recipe's tables."""
    return model.split(SEED_MARK, 1)[0]
