"""gates.toml -> validated bounds per dataset x profile x model -> pass / fail with the figure.

Layout of a gates file::

    include = ["gates/fashion-mnist.smoke.toml"]   # calibrated tables (python -m harness calibrate)

    [default.smoke.default]              # any dataset, any model (chance-relative bounds)
    accuracy_above_chance_min = 0.2

    [fashion-mnist.smoke.baseline]       # one model: overrides the defaults key by key
    confident_errors_99_max = 60
    class_accuracy_min = { Shirt = 0.2, Trouser = 0.9 }   # per-class metrics: one bound per class
    unbounded = { cam_gini = "why it is left unbounded" }  # masks inherited bounds of a metric

    [fashion-mnist.smoke.baseline.evidence]               # what each bound was derived from
    accuracy = { n = 20, mean = 0.866, sd = 0.004, min = 0.856, max = 0.872, values = [...] }

    [fashion-mnist.smoke.augment.vs_baseline]   # relative to the run's baseline model
    confident_errors_99_max_ratio = 0.5  # candidate <= 0.5 x baseline
    accuracy_min_delta = -0.02           # candidate >= baseline - 0.02
    loss_effect = "improves"             # the change's 95% interval on the improving side
    ece_effect = { expect = "not_worse", margin = 0.01 }  # not worse by more than the margin

A model's bounds merge, key by key, later winning: ``[default.P.default]``,
``[default.P.<model>]``, ``[<dataset>.P.default]``, ``[<dataset>.P.<model>]`` (P: the profile,
``<profile>-imbalance`` for long-tailed runs). ``unbounded`` in a later table removes a
metric's inherited bounds and says why (a calibrated table leaves a metric unbounded where its
evidence cannot support a bound). Included files hold tables of their own: a table defined in
two files is an error; each included file may open with a ``[calibration]`` table describing
the runs its evidence comes from (``harness/calibrate.py``).

Keys are ``<metric>_<kind>``; the metric must be in ``harness.metrics.REGISTRY`` and the kind
must point the metric's way: ``min`` / ``min_delta`` / ``min_ratio`` for higher-is-better
metrics, ``max`` / ``max_delta`` / ``max_ratio`` for lower-is-better ones (either for a
neutral metric), ``effect`` for a metric with a better side that can be compared on the same
images. A ``min`` / ``max`` bound outside the metric's range (``accuracy_min = -0.5``) can
never fail and is refused. Everything is validated when the file is loaded, before any
training: a mistake is a ``GateFileError`` naming the key, the table and the valid choices.
Every failure message names the metric, the measured value, the bound and the table it came
from, and the evidence of a calibrated bound.

Effects (``<metric>_effect``) are claims about a recipe, and a recipe's effect varies with the
training run: they are decided on the interval of the per-seed paired change across at least
``MIN_EFFECT_SEEDS`` training seeds, or, when both models are fixed checkpoints, on the paired
bootstrap interval over test images (the claim is then about those two artefacts). Otherwise
they are "undecided": shown, never passed or failed (``harness/run`` decides which applies).
"""

from __future__ import annotations

import difflib
import math
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import compare, metrics
from .metrics import HIGHER, LOWER, NEUTRAL

ABSOLUTE = ("min", "max")
RELATIVE = ("min_delta", "max_delta", "min_ratio", "max_ratio", "effect")
KINDS = ("min_delta", "max_delta", "min_ratio", "max_ratio", "effect", "min", "max")  # longest suffix first
EFFECTS = ("improves", "not_worse")
PROFILES = ("smoke", "full")
ANY_DATASET = "default"
ANY_MODEL = "default"
RELATIVE_TABLE = "vs_baseline"
EVIDENCE = "evidence"
UNBOUNDED = "unbounded"
EXPECTED_FAILURES = "expected_failures"
INCLUDE = "include"
POLICY = "policy"  # a table's bounds are policy (what any model must show), not measured spread: it says why
CALIBRATION = "calibration"
MIN_EFFECT_SEEDS = 3  # an effect of a recipe is decided on at least this many training seeds
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
        if not self.per_label:
            return self
        if label not in self.bound:
            return None
        ev = (self.evidence or {}).get(label)
        return replace(self, bound=self.bound[label], evidence=ev)

    @property
    def expectation(self) -> str:
        """An effect's expectation in words, with its margin."""
        if self.bound == "not_worse":
            return f"not_worse (margin {fmt(self.margin)})"
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
        return (f"calibrated on {runs}: mean {fmt(e['mean'])}, sd {fmt(e['sd'])}, range [{fmt(e['min'])}, "
                f"{fmt(e['max'])}]" + (f"; {where}" if where else ""))


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


def fmt(x) -> str:
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
    s = fmt(x)
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
    msg = f"{gate.metric} {shown}vs baseline {fmt(reference)}: NOT DECIDED ({why}) ({gate.source})"
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
            f"the interval's {harm} end within {fmt(gate.margin)} of no change"
        verdict = "as expected" if ok else "NOT as expected"
        msg = (f"{m} {effect_text(value, interval, basis)} vs baseline {fmt(reference)}: {verdict} "
               f"({gate.expectation}: {want}) ({gate.source})")
        return Outcome(gate, value, "passed" if ok else "failed", msg, reference, None, list(interval), basis)
    if gate.relative and reference is None:
        raise ValueError(f"gate {gate.key} is relative: it needs the baseline's {m}")
    if k == "min":
        limit, ok, op, desc = b, value >= b, "<", f"min {fmt(b)}"
    elif k == "max":
        limit, ok, op, desc = b, value <= b, ">", f"max {fmt(b)}"
    elif k in ("min_delta", "max_delta"):
        limit = reference + b
        ok = value >= limit if k == "min_delta" else value <= limit
        op = "<" if k == "min_delta" else ">"
        desc = f"{k[:3]} baseline {fmt(reference)} {'+' if b >= 0 else '-'} {fmt(abs(b))} = {fmt(limit)}"
    else:  # ratios
        limit = reference * b
        ok = value >= limit if k == "min_ratio" else value <= limit
        op = "<" if k == "min_ratio" else ">"
        desc = f"{k[:3]} {fmt(b)} x baseline {fmt(reference)} = {fmt(limit)}"
    undefined = value is None or (isinstance(value, float) and math.isnan(value))
    if undefined:
        ok, op = False, "is undefined,"
    if ok:
        op = {"<": ">=", ">": "<="}[op]
    message = f"{m}={fmt(value)} {op} {desc} {_source_note(gate) if not ok else '(' + gate.source + ')'}"
    return Outcome(gate, value, "passed" if ok else "failed", message, reference, limit)


# ============================================================================ the file


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_key(key: str, source: str, relative: bool) -> tuple[str, str]:
    """``<metric>_<kind>`` -> (metric, kind), validated against the registry."""
    kind = next((k for k in KINDS if key.endswith("_" + k)), None)
    allowed = RELATIVE if relative else ABSOLUTE
    if kind is None:
        raise GateFileError(
            f"{source}: key {key!r} must be <metric>_<kind> with kind one of {', '.join(allowed)}"
        )
    if kind not in allowed:
        hint = " (relative bounds go under .vs_baseline)" if not relative else \
            " (absolute bounds go in the model's own table, not under .vs_baseline)"
        raise GateFileError(f"{source}: key {key!r}: kind {kind!r} is not allowed here{hint}; use one of "
                            f"{', '.join(allowed)}")
    metric = key[: -len(kind) - 1]
    if metric not in metrics.REGISTRY:
        raise GateFileError(f"{source}: key {key!r}: unknown metric {metric!r}{_suggest(metric, metrics.REGISTRY)}; "
                            f"known metrics: {', '.join(sorted(metrics.REGISTRY))}")
    m = metrics.REGISTRY[metric]
    if kind not in _ALLOWED[m.direction]:
        good = sorted(_ALLOWED[m.direction] & set(allowed))
        raise GateFileError(
            f"{source}: key {key!r}: {metric} is {m.direction}-is-better"
            + (" (no better side)" if m.direction == NEUTRAL else "")
            + f", so a {kind} bound points the wrong way; use {' or '.join(f'{metric}_{g}' for g in good)}"
        )
    if kind == "effect" and (not m.paired or m.per is not None):
        raise GateFileError(f"{source}: key {key!r}: {metric} cannot be compared on the same images with a paired "
                            "interval; bound it with min_delta / max_delta instead")
    return metric, kind


def _parse_expected(table: dict, gates: dict[str, Gate], source: str) -> dict[str, str]:
    """``expected_failures = { <gate key> = "why" }``: gates of this table known to fail, each
    with its reason (shown as an expected failure; a pass is then an error: the expectation is
    out of date)."""
    spec = table.get(EXPECTED_FAILURES, {})
    if not isinstance(spec, dict):
        raise GateFileError(f"{source}: {EXPECTED_FAILURES} must be a table {{ <gate key> = \"why it fails\" }}")
    out = {}
    for key, why in spec.items():
        if key not in gates:
            raise GateFileError(f"{source}: {EXPECTED_FAILURES} names {key!r}, which is not a bound of this table "
                                f"(its bounds: {', '.join(gates) or 'none'})")
        if not isinstance(why, str) or not why.strip():
            raise GateFileError(f"{source}: {EXPECTED_FAILURES}.{key} must say why it is expected to fail")
        out[key] = why.strip()
    return out


def _number(bound, where: str) -> float:
    if isinstance(bound, bool) or not isinstance(bound, int | float) or not math.isfinite(bound):
        raise GateFileError(f"{where} = {bound!r} is not a finite number")
    return float(bound)


def _check_can_fail(m: metrics.Metric, kind: str, bound: float, where: str) -> None:
    if kind in ABSOLUTE and not m.can_fail(kind, bound):
        raise GateFileError(f"{where} = {fmt(bound)} can never fail: {m.name} takes values in {m.range_text}, so no "
                            f"model is {'below' if kind == 'min' else 'above'} it. Give a bound inside the range, or "
                            f"remove it (a bound that cannot fail checks nothing)")


def _parse_effect(bound, where: str) -> tuple[str, float]:
    """``"improves"`` | ``"not_worse"`` is refused without a margin | ``{expect, margin}``."""
    if isinstance(bound, dict):
        unknown = set(bound) - {"expect", "margin"}
        if unknown:
            raise GateFileError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}; an effect is "
                                "{ expect = \"improves\" | \"not_worse\", margin = <number> }")
        expect, margin = bound.get("expect"), bound.get("margin", 0.0)
    else:
        expect, margin = bound, None
    if expect not in EFFECTS:
        raise GateFileError(f"{where} = {bound!r}: use one of {', '.join(map(repr, EFFECTS))}")
    if expect == "not_worse":
        if margin is None:
            raise GateFileError(f"{where} = \"not_worse\" needs a stated margin: {{ expect = \"not_worse\", margin = "
                                "0.01 } (the largest harmful change still accepted, in the metric's units)")
        margin = _number(margin, f"{where}.margin")
        if margin < 0:
            raise GateFileError(f"{where}.margin = {fmt(margin)}: a margin is >= 0")
    elif margin not in (None, 0, 0.0):
        raise GateFileError(f"{where}: \"improves\" takes no margin (the interval must lie on the improving side)")
    return expect, float(margin or 0.0)


def _parse_table(table: dict, source: str, relative: bool, evidence: dict) -> dict[str, Gate]:
    gates: dict[str, Gate] = {}
    for key, bound in table.items():
        if key in (EXPECTED_FAILURES, EVIDENCE, UNBOUNDED, POLICY) or (not relative and key == RELATIVE_TABLE):
            continue
        metric, kind = parse_key(key, source, relative)
        m = metrics.REGISTRY[metric]
        where = f"{source}: {key}"
        margin = 0.0
        if kind == "effect":
            bound, margin = _parse_effect(bound, where)
            ev = evidence.get(metric)
        elif isinstance(bound, dict):
            if m.per is None or kind not in ABSOLUTE:
                raise GateFileError(f"{source}: {key!r} is a table; only a per-{m.per or 'class'} metric's min / max "
                                    "takes one bound per class ({ Shirt = 0.4, Trouser = 0.9 })")
            if not bound:
                raise GateFileError(f"{where} = {{}}: name at least one class")
            bound = {str(label): _number(v, f"{where}.{label}") for label, v in bound.items()}
            for label, v in bound.items():
                _check_can_fail(m, kind, v, f"{where}.{label}")
            ev = {label: evidence.get(f"{metric}[{label}]") for label in bound}
        else:
            bound = _number(bound, where)
            if kind.endswith("ratio") and bound < 0:
                raise GateFileError(f"{where} = {bound!r}: a ratio bound must be >= 0")
            _check_can_fail(m, kind, bound, where)
            ev = evidence.get(metric)
        gates[key] = Gate(metric, kind, bound, source, margin, ev)
    return gates


def _parse_evidence(table: dict, source: str, calibration: dict | None) -> dict:
    ev = table.get(EVIDENCE, {})
    if not isinstance(ev, dict) or not all(isinstance(v, dict) for v in ev.values()):
        raise GateFileError(f"{source}: {EVIDENCE} must be a table of {{ n, mean, sd, min, max, values }} per metric")
    return {k: {**v, "calibration": calibration} for k, v in ev.items()}


def _parse_unbounded(table: dict, source: str) -> dict[str, str]:
    spec = table.get(UNBOUNDED, {})
    if not isinstance(spec, dict):
        raise GateFileError(f"{source}: {UNBOUNDED} must be a table {{ <metric> = \"why it has no bound\" }}")
    for name, why in spec.items():
        metric = name.split("[", 1)[0]
        if metric not in metrics.REGISTRY:
            raise GateFileError(f"{source}: {UNBOUNDED} names {name!r}, not a metric{_suggest(metric, metrics.REGISTRY)}")
        if not isinstance(why, str) or not why.strip():
            raise GateFileError(f"{source}: {UNBOUNDED}.{name} must say why it is left unbounded")
    return dict(spec)


def profile_choices() -> list[str]:
    return [*PROFILES, *(f"{p}-imbalance" for p in PROFILES)]


SEED_MARK = "@s"  # runs with --seeds N: "augment@s43" is recipe augment trained with seed 43
SEED_GATES = "seed_gates"  # top-level key: "worst" (every seed's model passes) or "mean"
SEED_GATE_MODES = ("worst", "mean")


def recipe_of(model: str) -> str:
    """The recipe a model of the run was trained from (``augment@s43`` -> ``augment``): a seed's
    model is bounded by its recipe's tables."""
    return model.split(SEED_MARK, 1)[0]


@dataclass
class _Table:
    absolute: dict[str, Gate]
    relative: dict[str, Gate]
    expected: tuple[dict[str, str], dict[str, str]]
    unbounded: dict[str, str]
    file: str  # the label of the file it comes from
    policy: str | None = None  # why its bounds are policy rather than measured spread


class Gates:
    """The bounds of one gates file (and the files it includes), validated when loaded.

    With ``--seeds N`` each recipe is trained N times; ``seed_gates`` (top level) says how its
    bounds apply: ``"worst"`` (the default: every seed's model is checked, so the worst seed
    decides) or ``"mean"`` (the mean over seeds is checked, once, on the first seed's tests)."""

    def __init__(self, tables: dict, path: Path, _seen: tuple[Path, ...] = ()):
        tables = dict(tables)
        self.path = Path(path)
        self.label = self.path.name
        self.seed_gates = tables.pop(SEED_GATES, "worst")
        includes = tables.pop(INCLUDE, [])
        calibration = tables.pop(CALIBRATION, None)
        if self.seed_gates not in SEED_GATE_MODES:
            raise GateFileError(f"{self.label}: {SEED_GATES} = {self.seed_gates!r}: choose \"worst\" (every seed's "
                                f"model must pass) or \"mean\" (the mean over seeds must)")
        if calibration is not None and not isinstance(calibration, dict):
            raise GateFileError(f"{self.label}: [{CALIBRATION}] must be a table describing the calibration runs")
        self.tables = tables
        self.calibrations: dict[str, dict] = {self.label: calibration} if calibration else {}
        self._tables: dict[tuple[str, str, str], _Table] = {}
        self._validate_structure(calibration)
        self._include(includes, _seen + (self.path.resolve(),))

    @classmethod
    def load(cls, path: str | Path, _seen: tuple[Path, ...] = ()) -> Gates:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise GateFileError(f"gates file {path} does not exist") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise GateFileError(f"gates file {path} cannot be read: {exc}") from exc
        try:
            tables = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise GateFileError(f"gates file {path} is not valid TOML: {exc}") from exc
        return cls(tables, path, _seen)

    def _include(self, includes, seen: tuple[Path, ...]) -> None:
        if isinstance(includes, str) or not isinstance(includes, list) or not all(isinstance(p, str) for p in includes):
            raise GateFileError(f"{self.label}: {INCLUDE} must be a list of file paths, e.g. "
                                "include = [\"gates/fashion-mnist.smoke.toml\"]")
        for rel in includes:
            path = (self.path.parent / rel)
            if path.resolve() in seen:
                raise GateFileError(f"{self.label}: {INCLUDE} {rel!r} includes itself (a cycle)")
            try:
                other = Gates.load(path, seen)
            except GateFileError as exc:
                raise GateFileError(f"{self.label}: {INCLUDE} {rel!r}: {exc}") from None
            for key, t in other._tables.items():
                if key in self._tables:
                    raise GateFileError(f"table [{'.'.join(key)}] is defined in both {self._tables[key].file} and "
                                        f"{t.file}: keep it in one place")
                self._tables[key] = t
            self.calibrations.update(other.calibrations)

    def _source(self, *parts: str) -> str:
        return f"{self.label} [{'.'.join(parts)}]"

    def _validate_structure(self, calibration: dict | None) -> None:
        """Shapes, profiles, keys, kinds, directions and bound types: everything that does not
        depend on the run (``check_run`` adds dataset and model names)."""
        for ds, profiles in self.tables.items():
            if not isinstance(profiles, dict):
                raise GateFileError(f"{self.label}: top-level key {ds!r} = {profiles!r}: the file holds only "
                                    "tables [<dataset>.<profile>.<model>] (and include, seed_gates, [calibration])")
            for profile, models in profiles.items():
                where = self._source(ds, profile)
                if profile not in profile_choices():
                    raise GateFileError(f"{where}: unknown profile {profile!r}{_suggest(profile, profile_choices())}; "
                                        f"valid profiles: {', '.join(profile_choices())}")
                if not isinstance(models, dict):
                    raise GateFileError(f"{where}: must be a table of model tables [{ds}.{profile}.<model>]")
                for model, table in models.items():
                    src = self._source(ds, profile, model)
                    if not isinstance(table, dict):
                        raise GateFileError(f"{self._source(ds, profile)}: {model} = {table!r}: expected a table "
                                            f"[{ds}.{profile}.<model>] of bounds")
                    absolute = _parse_table(table, src, False, _parse_evidence(table, src, calibration))
                    rel = table.get(RELATIVE_TABLE, {})
                    if not isinstance(rel, dict):
                        raise GateFileError(f"{src}: {RELATIVE_TABLE} must be a table of relative bounds")
                    if rel and model == "baseline":
                        raise GateFileError(f"{src}.{RELATIVE_TABLE}: the baseline cannot be bounded relative to itself")
                    rel_src = self._source(ds, profile, model, RELATIVE_TABLE)
                    relative = _parse_table(rel, rel_src, True, _parse_evidence(rel, rel_src, calibration))
                    policy = table.get(POLICY)
                    if policy is not None and (not isinstance(policy, str) or not policy.strip()):
                        raise GateFileError(f"{src}: {POLICY} must say why these bounds are policy, not measurement")
                    self._tables[(ds, profile, model)] = _Table(
                        absolute, relative,
                        (_parse_expected(table, absolute, src), _parse_expected(rel, relative, rel_src)),
                        _parse_unbounded(table, src), self.label, policy)

    @property
    def _parsed(self) -> dict[tuple[str, str, str], tuple[dict[str, Gate], dict[str, Gate]]]:
        return {k: (t.absolute, t.relative) for k, t in self._tables.items()}

    def check_classes(self, dataset: str, classes) -> None:
        """Every class a per-class bound of ``dataset`` names must be one of its ``classes``."""
        for (ds, p, model), t in self._tables.items():
            if ds != dataset:
                continue
            for gate in t.absolute.values():
                for label in (gate.bound if gate.per_label else ()):
                    if label not in classes:
                        raise GateFileError(f"{t.file} [{ds}.{p}.{model}]: {gate.key} names class {label!r}, which "
                                            f"{dataset} does not have{_suggest(label, classes)}; its classes: "
                                            f"{', '.join(classes)}")

    def check_run(self, dataset: str, profile: str, models: list[str], known_datasets, known_models,
                  classes=None) -> None:
        """Names that only make sense against a run: every dataset and model named must be a
        known one, every class a per-class bound names must be a class of the data (given
        ``classes``), and every model of this run must have at least one table that applies."""
        if classes is not None:
            self.check_classes(dataset, classes)
        datasets = {ANY_DATASET, dataset, *known_datasets}
        model_names = {ANY_MODEL, *known_models, *map(recipe_of, models)}
        for (ds, p, model), t in self._tables.items():
            src = f"{t.file} [{ds}.{p}.{model}]"
            if ds not in datasets:
                raise GateFileError(f"{src}: unknown dataset {ds!r}{_suggest(ds, datasets)}; "
                                    f"valid: {', '.join(sorted(datasets))}")
            if model not in model_names:
                raise GateFileError(
                    f"{src}: unknown model {model!r}{_suggest(model, model_names)}: neither a "
                    f"built-in recipe nor a model of this run; valid: {', '.join(sorted(model_names))}")
        for model in models:
            if not self.tables_for(dataset, profile, model):
                raise GateFileError(
                    f"no gates apply to {model!r} of {dataset} / {profile} in {self.path}: a run must check "
                    f"something. Add a table [{dataset}.{profile}.default] (every model) or "
                    f"[{dataset}.{profile}.{model}] with bounds such as accuracy_min and ece_max"
                    + self._tables_hint(dataset))

    def _tables_hint(self, dataset: str) -> str:
        have = sorted({p for (ds, p, _m) in self._tables if ds == dataset})
        return f" (this file has {dataset} tables for: {', '.join(have)})" if have else \
            f" (this file has no {dataset} tables)"

    def _chain(self, dataset: str, profile: str, model: str) -> list[tuple[str, str, str]]:
        model = recipe_of(model)
        chain = [(ANY_DATASET, profile, ANY_MODEL), (ANY_DATASET, profile, model),
                 (dataset, profile, ANY_MODEL), (dataset, profile, model)]
        return [c for i, c in enumerate(chain) if c in self._tables and c not in chain[:i]]

    def _name(self, c: tuple[str, str, str]) -> str:
        return f"{self._tables[c].file} [{'.'.join(c)}]"

    def tables_for(self, dataset: str, profile: str, model: str) -> list[str]:
        """The tables that bound this model, in merge order (later ones win)."""
        baseline = recipe_of(model) == "baseline"
        return [self._name(c) for c in self._chain(dataset, profile, model)
                if (self._tables[c].absolute or (self._tables[c].relative and not baseline))]

    def _merged(self, dataset: str, profile: str, model: str, relative: bool) -> dict[str, Gate]:
        out: dict[str, Gate] = {}
        for c in self._chain(dataset, profile, model):
            t = self._tables[c]
            for name in t.unbounded:  # a later table leaves the metric (or one class of it) unbounded
                metric, _, rest = name.partition("[")
                label = rest[:-1] if rest else None
                for key in [k for k, g in out.items() if g.metric == metric]:
                    g = out[key]
                    kept = {lb: v for lb, v in g.bound.items() if lb != label} if label and g.per_label else None
                    if label is None or (g.per_label and not kept):
                        del out[key]
                    elif kept:
                        out[key] = replace(g, bound=kept)
            out.update(t.relative if relative else t.absolute)
        return out

    def absolute(self, dataset: str, profile: str, model: str) -> dict[str, Gate]:
        """key -> Gate: the merged absolute bounds of one model."""
        return self._merged(dataset, profile, model, relative=False)

    def relative(self, dataset: str, profile: str, model: str) -> dict[str, Gate]:
        """key -> Gate: the merged bounds of a candidate relative to the run's baseline."""
        if recipe_of(model) == "baseline":
            return {}
        return self._merged(dataset, profile, model, relative=True)

    def unbounded_reason(self, dataset: str, profile: str, model: str, metric: str, label: str | None = None) -> str | None:
        """Why a table leaves ``metric`` (or one class of it) unbounded for this model, if one says."""
        why = None
        for c in self._chain(dataset, profile, model):
            u = self._tables[c].unbounded
            why = u.get(f"{metric}[{label}]") if label is not None and f"{metric}[{label}]" in u else u.get(metric, why)
        return why

    def expected_failure(self, dataset: str, profile: str, model: str, key: str, relative: bool) -> str | None:
        """Why the gate ``key`` of this model is expected to fail, or None (merged like bounds)."""
        why = None
        for c in self._chain(dataset, profile, model):
            found = self._tables[c].expected[1 if relative else 0].get(key)
            if found:
                why = found
        return why

    def expected_failures(self, dataset: str, profile: str, model: str) -> dict[str, str]:
        """Every expected failure of a model: {gate key: why}."""
        out: dict[str, str] = {}
        for c in self._chain(dataset, profile, model):
            for part in self._tables[c].expected:
                out.update(part)
        return out

    def where(self, dataset: str, profile: str, model: str) -> str:
        return self._source(dataset, profile, recipe_of(model))

    def has_table(self, dataset: str, profile: str, model: str) -> bool:
        return (dataset, profile, model) in self._tables
