"""gates.toml -> validated bounds per dataset x profile x model -> pass / fail with the figure.

Layout of a gates file::

    [default.smoke.default]              # any dataset, any model (chance-relative bounds)
    accuracy_above_chance_min = 0.2

    [fashion-mnist.smoke.default]        # every model of this dataset and profile
    accuracy_min = 0.85
    ece_max = 0.05

    [fashion-mnist.smoke.baseline]       # one model: overrides the defaults key by key
    confident_errors_99_max = 60

    [fashion-mnist.smoke.augment.vs_baseline]   # relative to the run's baseline model
    confident_errors_99_max_ratio = 0.5  # candidate <= 0.5 x baseline
    accuracy_min_delta = -0.02           # candidate >= baseline - 0.02
    loss_effect = "improves"             # 95% paired interval of the change on the improving side
    ece_effect = "not_worse"             # ... or at least not wholly on the harmful side

A model's bounds merge, key by key, later winning: ``[default.P.default]``,
``[default.P.<model>]``, ``[<dataset>.P.default]``, ``[<dataset>.P.<model>]`` (P: the profile,
``<profile>-imbalance`` for long-tailed runs).

Keys are ``<metric>_<kind>``; the metric must be in ``harness.metrics.REGISTRY`` and the kind
must point the metric's way: ``min`` / ``min_delta`` / ``min_ratio`` for higher-is-better
metrics, ``max`` / ``max_delta`` / ``max_ratio`` for lower-is-better ones (either for a
neutral metric), ``effect`` for a metric with a better side that can be compared on the same
images. Everything is validated when the file is loaded, before any training: a mistake is a
``GateFileError`` naming the key, the table and the valid choices. Every failure message
names the metric, the measured value, the bound and the table it came from.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from dataclasses import dataclass, replace
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
# which kinds suit which direction
_ALLOWED = {
    HIGHER: {"min", "min_delta", "min_ratio", "effect"},
    LOWER: {"max", "max_delta", "max_ratio", "effect"},
    NEUTRAL: {"min", "max", "min_delta", "max_delta", "min_ratio", "max_ratio"},
}


class GateFileError(ValueError):
    pass


@dataclass(frozen=True)
class Gate:
    metric: str
    kind: str
    bound: float | str
    source: str  # e.g. "gates.toml [fashion-mnist.smoke.baseline]"

    @property
    def key(self) -> str:
        return f"{self.metric}_{self.kind}"

    @property
    def relative(self) -> bool:
        return self.kind in RELATIVE


@dataclass(frozen=True)
class Outcome:
    gate: Gate
    value: float | None
    status: str  # "passed" | "failed" | "n/a" | "xfail" (failed as expected) | "xpass" (passed, expected to fail)
    message: str
    reference: float | None = None  # the baseline's value for relative gates
    limit: float | None = None  # the effective bound (relative gates: computed from the baseline)
    interval: list[float] | None = None  # effect gates: the 95% interval of the change

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict:
        return {
            "metric": self.gate.metric, "kind": self.gate.kind, "bound": self.gate.bound, "limit": self.limit,
            "value": self.value, "reference": self.reference, "interval": self.interval, "source": self.gate.source,
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
    if not why or outcome.status == "n/a":
        return outcome
    if outcome.status == "failed":
        return replace(outcome, status="xfail", message=f"{outcome.message} [expected to fail: {why}]")
    return replace(outcome, status="xpass", message=f"{outcome.message} [but gates.toml expects it to fail ({why}): "
                                                    "the effect now holds; remove the expectation]")


def not_applicable(gate: Gate, reason: str, label: str | None = None) -> Outcome:
    name = gate.metric if label is None else f"{gate.metric}[{label}]"
    return Outcome(gate, None, "n/a", f"{name} not applicable: {reason} ({gate.source})")


def check(gate: Gate, value: float, reference: float | None = None, interval: list[float] | None = None,
          label: str | None = None) -> Outcome:
    """Compare a measured value with a gate. Relative gates need the baseline's value; effect
    gates the paired interval of the change (``value`` is then the change itself). ``label``
    names the part a per-class value belongs to (shown as ``metric[label]``)."""
    m, k, b = gate.metric, gate.kind, gate.bound
    if label is not None:
        m = f"{m}[{label}]"
    if k == "effect":
        if interval is None:
            raise ValueError(f"gate {gate.key} needs the paired interval of the change")
        direction = metrics.get(gate.metric).direction
        ok = compare.effect_holds(str(b), interval, direction)
        ci = f"[95% CI {_signed(interval[0])}, {_signed(interval[1])}]"
        side = "lower" if direction == LOWER else "higher"
        want = f"the interval on the improving ({side}) side" if b == "improves" else \
            f"the interval not wholly on the harmful ({'higher' if direction == LOWER else 'lower'}) side"
        verdict = "as expected" if ok else "NOT as expected"
        msg = f"{m} change {_signed(value)} {ci} vs baseline {fmt(reference)}: {verdict} ({b}: {want}) ({gate.source})"
        return Outcome(gate, value, "passed" if ok else "failed", msg, reference, None, list(interval))
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
    message = f"{m}={fmt(value)} {op} {desc} ({gate.source})"
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


EXPECTED_FAILURES = "expected_failures"


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


def _parse_table(table: dict, source: str, relative: bool) -> dict[str, Gate]:
    gates: dict[str, Gate] = {}
    for key, bound in table.items():
        if (not relative and key == RELATIVE_TABLE) or key == EXPECTED_FAILURES:
            continue
        if isinstance(bound, dict):
            raise GateFileError(f"{source}: {key!r} is a table; a model's table holds bounds"
                                + ("" if relative else " and an optional [...vs_baseline] table"))
        metric, kind = parse_key(key, source, relative)
        if kind == "effect":
            if bound not in EFFECTS:
                raise GateFileError(f"{source}: {key} = {bound!r}: use one of {', '.join(map(repr, EFFECTS))}")
        elif isinstance(bound, bool) or not isinstance(bound, int | float) or not math.isfinite(bound):
            raise GateFileError(f"{source}: {key} = {bound!r} is not a finite number")
        elif kind.endswith("ratio") and bound < 0:
            raise GateFileError(f"{source}: {key} = {bound!r}: a ratio bound must be >= 0")
        gates[key] = Gate(metric, kind, bound if kind == "effect" else float(bound), source)
    return gates


def profile_choices() -> list[str]:
    return [*PROFILES, *(f"{p}-imbalance" for p in PROFILES)]


SEED_MARK = "@s"  # runs with --seeds N: "augment@s43" is recipe augment trained with seed 43
SEED_GATES = "seed_gates"  # top-level key: "worst" (every seed's model passes) or "mean"
SEED_GATE_MODES = ("worst", "mean")


def recipe_of(model: str) -> str:
    """The recipe a model of the run was trained from (``augment@s43`` -> ``augment``): a seed's
    model is bounded by its recipe's tables."""
    return model.split(SEED_MARK, 1)[0]


class Gates:
    """The bounds of one gates file, validated when loaded.

    With ``--seeds N`` each recipe is trained N times; ``seed_gates`` (top level) says how its
    bounds apply: ``"worst"`` (the default: every seed's model is checked, so the worst seed
    decides) or ``"mean"`` (the mean over seeds is checked, once, on the first seed's tests;
    effects on the interval across seeds of the paired changes)."""

    def __init__(self, tables: dict, path: Path):
        tables = dict(tables)
        self.seed_gates = tables.pop(SEED_GATES, "worst")
        self.tables = tables
        self.path = Path(path)
        self.label = self.path.name
        if self.seed_gates not in SEED_GATE_MODES:
            raise GateFileError(f"{self.label}: {SEED_GATES} = {self.seed_gates!r}: choose \"worst\" (every seed's "
                                f"model must pass) or \"mean\" (the mean over seeds must)")
        self._parsed: dict[tuple[str, str, str], tuple[dict[str, Gate], dict[str, Gate]]] = {}
        self._expected: dict[tuple[str, str, str], tuple[dict[str, str], dict[str, str]]] = {}
        self._validate_structure()

    @classmethod
    def load(cls, path: str | Path) -> Gates:
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
        return cls(tables, path)

    def _source(self, *parts: str) -> str:
        return f"{self.label} [{'.'.join(parts)}]"

    def _validate_structure(self) -> None:
        """Shapes, profiles, keys, kinds, directions and bound types: everything that does not
        depend on the run (``check_run`` adds dataset and model names)."""
        for ds, profiles in self.tables.items():
            if not isinstance(profiles, dict):
                raise GateFileError(f"{self.label}: top-level key {ds!r} = {profiles!r}: the file holds only "
                                    "tables [<dataset>.<profile>.<model>]")
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
                    absolute = _parse_table(table, src, relative=False)
                    rel = table.get(RELATIVE_TABLE, {})
                    if not isinstance(rel, dict):
                        raise GateFileError(f"{src}: {RELATIVE_TABLE} must be a table of relative bounds")
                    if rel and model == "baseline":
                        raise GateFileError(f"{src}.{RELATIVE_TABLE}: the baseline cannot be bounded relative to itself")
                    rel_src = self._source(ds, profile, model, RELATIVE_TABLE)
                    relative = _parse_table(rel, rel_src, relative=True)
                    self._parsed[(ds, profile, model)] = (absolute, relative)
                    self._expected[(ds, profile, model)] = (_parse_expected(table, absolute, src),
                                                           _parse_expected(rel, relative, rel_src))

    def check_run(self, dataset: str, profile: str, models: list[str], known_datasets, known_models) -> None:
        """Names that only make sense against a run: every dataset and model named must be a
        known one, and every model of this run must have at least one table that applies."""
        datasets = {ANY_DATASET, dataset, *known_datasets}
        model_names = {ANY_MODEL, *known_models, *map(recipe_of, models)}
        for ds, p, model in self._parsed:
            if ds not in datasets:
                raise GateFileError(f"{self._source(ds, p, model)}: unknown dataset {ds!r}{_suggest(ds, datasets)}; "
                                    f"valid: {', '.join(sorted(datasets))}")
            if model not in model_names:
                raise GateFileError(
                    f"{self._source(ds, p, model)}: unknown model {model!r}{_suggest(model, model_names)}: neither a "
                    f"built-in recipe nor a model of this run; valid: {', '.join(sorted(model_names))}")
        for model in models:
            if not self.tables_for(dataset, profile, model):
                raise GateFileError(
                    f"no gates apply to {model!r} of {dataset} / {profile} in {self.path}: a run must check "
                    f"something. Add a table [{dataset}.{profile}.default] (every model) or "
                    f"[{dataset}.{profile}.{model}] with bounds such as accuracy_min and ece_max"
                    + self._tables_hint(dataset))

    def _tables_hint(self, dataset: str) -> str:
        have = sorted({p for (ds, p, _m) in self._parsed if ds == dataset})
        return f" (this file has {dataset} tables for: {', '.join(have)})" if have else \
            f" (this file has no {dataset} tables)"

    def _chain(self, dataset: str, profile: str, model: str) -> list[tuple[str, str, str]]:
        model = recipe_of(model)
        chain = [(ANY_DATASET, profile, ANY_MODEL), (ANY_DATASET, profile, model),
                 (dataset, profile, ANY_MODEL), (dataset, profile, model)]
        return [c for i, c in enumerate(chain) if c in self._parsed and c not in chain[:i]]

    def tables_for(self, dataset: str, profile: str, model: str) -> list[str]:
        """The tables that bound this model, in merge order (later ones win)."""
        return [self._source(*c) for c in self._chain(dataset, profile, model)
                if any(self._parsed[c]) and (recipe_of(model) != "baseline" or self._parsed[c][0])]

    def absolute(self, dataset: str, profile: str, model: str) -> dict[str, Gate]:
        """key -> Gate: the merged absolute bounds of one model."""
        out: dict[str, Gate] = {}
        for c in self._chain(dataset, profile, model):
            out.update(self._parsed[c][0])
        return out

    def relative(self, dataset: str, profile: str, model: str) -> dict[str, Gate]:
        """key -> Gate: the merged bounds of a candidate relative to the run's baseline."""
        if recipe_of(model) == "baseline":
            return {}
        out: dict[str, Gate] = {}
        for c in self._chain(dataset, profile, model):
            out.update(self._parsed[c][1])
        return out

    def expected_failure(self, dataset: str, profile: str, model: str, key: str, relative: bool) -> str | None:
        """Why the gate ``key`` of this model is expected to fail, or None (merged like bounds)."""
        why = None
        for c in self._chain(dataset, profile, model):
            found = self._expected.get(c, ({}, {}))[1 if relative else 0].get(key)
            if found:
                why = found
        return why

    def expected_failures(self, dataset: str, profile: str, model: str) -> dict[str, str]:
        """Every expected failure of a model: {gate key: why}."""
        out: dict[str, str] = {}
        for c in self._chain(dataset, profile, model):
            for part in self._expected.get(c, ({}, {})):
                out.update(part)
        return out

    def where(self, dataset: str, profile: str, model: str) -> str:
        return self._source(dataset, profile, recipe_of(model))
