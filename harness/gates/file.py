"""gates.toml (and the files it includes) parsed and validated before any training; a model's
bounds merged along its chain of tables. The format: harness/gates/__init__.py."""

from __future__ import annotations

import difflib
import math
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from .. import cards, metrics
from ..metrics import NEUTRAL
from .bounds import (
    _ALLOWED,
    ABSOLUTE,
    ANY_DATASET,
    ANY_MODEL,
    CALIBRATION,
    EFFECTS,
    EVIDENCE,
    EXPECTED_FAILURES,
    INCLUDE,
    KINDS,
    POLICY,
    RELATIVE,
    RELATIVE_TABLE,
    SEED_GATE_MODES,
    SEED_GATES,
    UNBOUNDED,
    Gate,
    GateFileError,
    figure,
    recipe_of,
)


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
    """An absolute bound must be able to fail and to pass: inside the metric's range."""
    if kind in ABSOLUTE and not m.can_fail(kind, bound):
        raise GateFileError(f"{where} = {figure(bound)} can never fail: {m.name} takes values in {m.range_text}, so no "
                            f"model is {'below' if kind == 'min' else 'above'} it. Give a bound inside the range, or "
                            f"remove it (a bound that cannot fail checks nothing)")
    if kind in ABSOLUTE and ((kind == "min" and bound > m.hi) or (kind == "max" and bound < m.lo)):
        raise GateFileError(f"{where} = {figure(bound)} can never pass: {m.name} takes values in {m.range_text}, so "
                            f"every model is {'below' if kind == 'min' else 'above'} it. Give a bound inside the range")


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
            raise GateFileError(f"{where}.margin = {figure(margin)}: a margin is >= 0")
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
    return cards.gate_profiles()


@dataclass
class _Table:
    absolute: dict[str, Gate]
    relative: dict[str, Gate]
    expected: tuple[dict[str, str], dict[str, str]]
    unbounded: dict[str, str]
    file: str  # the label of the file it comes from
    policy: str | None = None  # why its bounds are policy rather than measured spread
    calibration: dict | None = None  # the file's [calibration] (its runs and regime), for a calibrated table


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
            if ds in (EXPECTED_FAILURES, UNBOUNDED, EVIDENCE, POLICY, RELATIVE_TABLE):
                raise GateFileError(f"{self.label}: [{ds}] at the top level: it belongs inside a model's table, "
                                    f"[<dataset>.<profile>.<model>] {ds} = ... (or [<dataset>.<profile>.<model>.{ds}])")
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
                        _parse_unbounded(table, src), self.label, policy, calibration)

    @property
    def _parsed(self) -> dict[tuple[str, str, str], tuple[dict[str, Gate], dict[str, Gate]]]:
        return {k: (t.absolute, t.relative) for k, t in self._tables.items()}

    def check_classes(self, dataset: str, classes) -> None:
        """Every class a per-class bound of ``dataset`` names must be one of its ``classes``."""
        for (ds, p, model), t in self._tables.items():
            if ds != dataset:
                continue
            for gate in t.absolute.values():
                if metrics.get(gate.metric).per != "class":
                    continue
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
            for name in t.unbounded:  # a later table leaves the metric (or one label of it) unbounded
                metric, _, rest = name.partition("[")
                label = rest[:-1] if rest else None
                for key in [k for k, g in out.items() if g.metric == metric]:
                    g = out[key]
                    if label is None:
                        del out[key]
                        continue
                    kept = {lb: v for lb, v in g.bound.items() if lb != label} if g.per_label else g.bound
                    if g.per_label and not kept and g.fallback is None:
                        del out[key]
                    else:  # that label alone is taken out, of an inherited scalar bound too
                        out[key] = replace(g, bound=kept, except_labels=g.except_labels | {label})
            for key, g in (t.relative if relative else t.absolute).items():
                if g.per_label and key in out:  # the labels it names; the rest keep what they inherit
                    g = replace(g, fallback=out[key])
                out[key] = g
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

    def calibrations_for(self, dataset: str, profile: str, models) -> dict[str, dict]:
        """{file label: [calibration]} of the calibrated tables that bound any of ``models``."""
        out: dict[str, dict] = {}
        for model in models:
            for c in self._chain(dataset, profile, model):
                t = self._tables[c]
                if t.calibration:
                    out[t.file] = t.calibration
        return out

    def where(self, dataset: str, profile: str, model: str) -> str:
        return self._source(dataset, profile, recipe_of(model))

    def has_table(self, dataset: str, profile: str, model: str) -> bool:
        return (dataset, profile, model) in self._tables
