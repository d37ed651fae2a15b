"""gates.toml -> bounds per dataset x profile x model -> pass / fail with the measured figure.

Layout of gates.toml::

    [fashion-mnist.smoke.default]        # every model of this dataset and profile
    accuracy_min = 0.85
    ece_max = 0.05

    [fashion-mnist.smoke.baseline]       # one model: overrides the default key by key
    confident_errors_99_max = 60

    [fashion-mnist.smoke.augment.vs_baseline]   # relative to the run's baseline model
    confident_errors_99_max_ratio = 0.5  # candidate <= 0.5 x baseline
    accuracy_min_delta = -0.02           # candidate >= baseline - 0.02
    ece_max_delta = 0.0                  # candidate <= baseline + 0.0

Keys are ``<metric>_<kind>`` with kind one of min, max (absolute) or min_delta,
max_delta, max_ratio, min_ratio (relative). Every failure message names the metric, the
measured value, the bound and the table it came from.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

ABSOLUTE = ("min", "max")
RELATIVE = ("min_delta", "max_delta", "min_ratio", "max_ratio")
KINDS = RELATIVE + ABSOLUTE  # longest suffixes first when parsing


class GateFileError(ValueError):
    pass


@dataclass(frozen=True)
class Gate:
    metric: str
    kind: str
    bound: float
    source: str  # e.g. "gates.toml [fashion-mnist.smoke.baseline]"

    @property
    def relative(self) -> bool:
        return self.kind in RELATIVE


@dataclass(frozen=True)
class Outcome:
    gate: Gate
    value: float
    passed: bool
    message: str
    reference: float | None = None  # the baseline's value for relative gates
    limit: float | None = None  # the effective bound (relative gates: computed from the baseline)

    def to_dict(self) -> dict:
        return {
            "metric": self.gate.metric,
            "kind": self.gate.kind,
            "bound": self.gate.bound,
            "limit": self.limit,
            "value": self.value,
            "reference": self.reference,
            "source": self.gate.source,
            "passed": self.passed,
            "message": self.message,
        }


def _fmt(x: float) -> str:
    if isinstance(x, bool) or x is None:
        return str(x)
    if float(x).is_integer() and abs(x) < 1e9:
        return str(int(x))
    return f"{x:.4g}"


def check(gate: Gate, value: float, reference: float | None = None) -> Outcome:
    """Compare a measured value with a gate; relative gates need the baseline's value."""
    m, k, b = gate.metric, gate.kind, gate.bound
    if gate.relative and reference is None:
        raise ValueError(f"gate {m}_{k} is relative: it needs the baseline's {m}")
    if k == "min":
        limit, ok, op, desc = b, value >= b, "<", f"min {_fmt(b)}"
    elif k == "max":
        limit, ok, op, desc = b, value <= b, ">", f"max {_fmt(b)}"
    elif k == "min_delta":
        limit = reference + b
        ok, op, desc = value >= limit, "<", f"min baseline {_fmt(reference)} {'+' if b >= 0 else '-'} {_fmt(abs(b))} = {_fmt(limit)}"
    elif k == "max_delta":
        limit = reference + b
        ok, op, desc = value <= limit, ">", f"max baseline {_fmt(reference)} {'+' if b >= 0 else '-'} {_fmt(abs(b))} = {_fmt(limit)}"
    elif k == "max_ratio":
        limit = reference * b
        ok, op, desc = value <= limit, ">", f"max {_fmt(b)} x baseline {_fmt(reference)} = {_fmt(limit)}"
    elif k == "min_ratio":
        limit = reference * b
        ok, op, desc = value >= limit, "<", f"min {_fmt(b)} x baseline {_fmt(reference)} = {_fmt(limit)}"
    else:  # pragma: no cover - parse() rejects unknown kinds
        raise ValueError(k)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        ok, op = False, "is undefined,"
    shown = "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else _fmt(value)
    if ok:
        op = {"<": ">=", ">": "<="}.get(op, op)
    message = f"{m}={shown} {op} {desc} ({gate.source})"
    return Outcome(gate=gate, value=value, passed=bool(ok), message=message, reference=reference, limit=limit)


def _parse_table(table: dict, source: str, relative: bool) -> dict[str, Gate]:
    gates: dict[str, Gate] = {}
    allowed = RELATIVE if relative else ABSOLUTE
    for key, bound in table.items():
        if isinstance(bound, dict):
            continue  # nested table (vs_baseline), handled by the caller
        kind = next((k for k in KINDS if key.endswith("_" + k)), None)
        if kind is None or kind not in allowed:
            raise GateFileError(
                f"{source}: key {key!r} must end in one of {', '.join('_' + k for k in allowed)}"
                + (" (relative bounds go under .vs_baseline)" if not relative and kind in RELATIVE else "")
            )
        if isinstance(bound, bool) or not isinstance(bound, int | float):
            raise GateFileError(f"{source}: {key} = {bound!r} is not a number")
        metric = key[: -len(kind) - 1]
        gates[metric + "_" + kind] = Gate(metric, kind, float(bound), source)
    return gates


class Gates:
    """The bounds of one gates file."""

    def __init__(self, tables: dict, path: Path):
        self.tables = tables
        self.path = path
        self.label = path.name

    @classmethod
    def load(cls, path: str | Path) -> Gates:
        path = Path(path)
        try:
            tables = tomllib.loads(path.read_text())
        except FileNotFoundError as exc:
            raise GateFileError(f"gates file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise GateFileError(f"gates file {path} is not valid TOML: {exc}") from exc
        gates = cls(tables, path)
        gates.validate()
        return gates

    def validate(self) -> None:
        for ds, profiles in self.tables.items():
            for profile, models in profiles.items():
                for model, table in models.items():
                    self._absolute(ds, profile, model, table)
                    if "vs_baseline" in table:
                        self._relative(ds, profile, model, table["vs_baseline"])

    def _source(self, *parts: str) -> str:
        return f"{self.label} [{'.'.join(parts)}]"

    def _absolute(self, ds, profile, model, table) -> dict[str, Gate]:
        return _parse_table(table, self._source(ds, profile, model), relative=False)

    def _relative(self, ds, profile, model, table) -> dict[str, Gate]:
        return _parse_table(table, self._source(ds, profile, model, "vs_baseline"), relative=True)

    def _models(self, dataset: str, profile: str) -> dict:
        return self.tables.get(dataset, {}).get(profile, {})

    def absolute(self, dataset: str, profile: str, model: str) -> dict[str, Gate]:
        """metric_kind -> Gate: the default table, overridden key by key by the model's."""
        models = self._models(dataset, profile)
        out = self._absolute(dataset, profile, "default", models.get("default", {}))
        out.update(self._absolute(dataset, profile, model, models.get(model, {})))
        return out

    def relative(self, dataset: str, profile: str, model: str) -> dict[str, Gate]:
        models = self._models(dataset, profile)
        out = self._relative(dataset, profile, "default", models.get("default", {}).get("vs_baseline", {}))
        out.update(self._relative(dataset, profile, model, models.get(model, {}).get("vs_baseline", {})))
        return out

    def where(self, dataset: str, profile: str, model: str) -> str:
        return self._source(dataset, profile, model)
