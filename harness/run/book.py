"""The gate book of a run: every bound checked against what the run measured, with its outcome,
and the counts the summary and the report show. A stress test asks the book to check one
metric of one model; the audit asks it to check every bound of a model."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .. import metrics
from ..calibrate.rule import Scale, mean_bound
from ..gates import (
    STATUSES,
    Gate,
    Outcome,
    check,
    expect_failure,
    not_applicable,
    undecided,
)
from ..metrics import NotApplicable
from .run import Run


@dataclass
class GateRecord:
    test: str
    model: str
    outcome: Outcome
    label: str | None = None  # e.g. the class of a per-class gate

    def to_dict(self) -> dict:
        return {"test": self.test, "model": self.model, "label": self.label, **self.outcome.to_dict()}

    def to_state(self) -> dict:
        return {"test": self.test, "model": self.model, "label": self.label, "outcome": self.outcome.to_state()}

    @classmethod
    def from_state(cls, d: dict) -> GateRecord:
        return cls(d["test"], d["model"], Outcome.from_state(d["outcome"]), d["label"])


@dataclass
class GateBook:
    run: Run
    records: list[GateRecord] = field(default_factory=list)
    test_outcomes: dict[str, str] = field(default_factory=dict)
    _unbounded: dict[str, list[str]] = field(default_factory=dict)
    _regime_dropped: dict[tuple[str, str], str] = field(default_factory=dict)  # (model, metric) -> why
    ignore_regime: bool = False  # the audit checks an older file's bounds as they stand, whatever regime they record

    @property
    def plan(self):
        return self.run.plan

    def _key(self) -> tuple[str, str]:
        return self.plan.dataset_name, self.plan.gate_profile

    # ------------------------------------------------------------------ bounds
    def absolute_gates(self, model: str, metric: str, label: str | None = None) -> list[Gate]:
        """The model's bounds on ``metric`` (narrowed to one class of a per-class metric); a
        calibrated bound whose regime is not the model's is reported, not gated (``_in_regime``)."""
        found = self.plan.gates.absolute(*self._key(), model)
        gates = [found[k] for k in (f"{metric}_min", f"{metric}_max") if k in found]
        if label is not None:
            gates = [g.for_label(label) for g in gates]
        return [g for g in gates if g is not None and self._in_regime(model, g)]

    def relative_gates(self, model: str) -> dict[str, Gate]:
        """The model's bounds relative to its baseline (every one: a test per bound is collected
        before any training; one of another regime is reported, not gated, when checked)."""
        return self.plan.gates.relative(*self._key(), model)

    def _in_regime(self, model: str, gate: Gate) -> bool:
        """Whether a bound may gate ``model``: a calibrated bound only where the model was trained
        and measured in the calibration's regime (precision, kernels, threads, torch)."""
        from .. import regime

        cal = gate.calibration
        if not cal or self.ignore_regime:
            return True
        differs = regime.mismatch(self.run.model_regime(model), cal.get("regime"), cal.get("threads"))
        if differs:
            self._regime_dropped[(model, gate.metric)] = (
                f"calibrated in another regime ({'; '.join(differs)}): reported, not gated")
        return not differs

    def unbounded_reason(self, model: str, metric: str, label: str | None = None) -> str | None:
        """Why ``metric`` has no bound for this model: a table says so, or its calibrated bound
        belongs to another regime."""
        return self._regime_dropped.get((model, metric)) or \
            self.plan.gates.unbounded_reason(*self._key(), model, metric, label)

    def _first_seed_only(self, model: str) -> None:
        """With seed_gates = "mean", a later seed's model is gated through its first seed's
        test: NotApplicable for it, saying where."""
        first = self.plan.replicas(model)[0]
        if self.plan.seed_mean and model != first:
            raise NotApplicable(f"gated on the mean over {self.plan.options.seeds} seeds by {first}'s test "
                                f"(gates.toml seed_gates = \"mean\")")

    # ------------------------------------------------------------------ checks
    def check_absolute(self, test: str, model: str, metric: str, index: int | None = None,
                       label: str | None = None) -> list[Outcome]:
        """Measure ``metric`` and check every absolute bound of the model on it. Outcomes are
        "n/a" when the metric does not apply; an empty list means no bound (measured only)."""
        gates = self.absolute_gates(model, metric, label)
        run = self.run
        try:
            self._first_seed_only(model)
            if self.plan.seed_mean:
                values = run.seed_values(model, metric, index)
                outcomes = [_over_seeds(check(*_for_mean(g, values), label=label), values) for g in gates]
            else:
                outcomes = [check(g, run.value(model, metric, index), label=label) for g in gates]
        except NotApplicable as exc:
            outcomes = [not_applicable(g, str(exc), label) for g in gates]
        outcomes = [expect_failure(o, self.plan.gates.expected_failure(*self._key(), model, o.gate.key, relative=False))
                    for o in outcomes]
        self.records.extend(GateRecord(test, model, o, label) for o in outcomes)
        if not gates:
            seen = self._unbounded.setdefault(model, [])
            name = metric if label is None else f"{metric}[{label}]"
            if name not in seen:
                seen.append(name)
        return outcomes

    def check_every_bound(self, model: str, test: str = "audit", only=None) -> list[GateRecord]:
        """Every absolute bound of ``model`` checked, every class of a per-class one: what the
        stress tests check for it, without pytest (``harness.audit``); ``only(metric)``: those
        metrics alone."""
        start = len(self.records)
        checked: set[str] = set()
        for gate in self.plan.gates.absolute(*self._key(), model).values():
            if gate.metric in checked or (only is not None and not only(gate.metric)):
                continue  # both sides of a metric are checked together
            checked.add(gate.metric)
            per = metrics.get(gate.metric).per
            if per is not None:
                for label in self.plan.labels_of(per):
                    self.check_absolute(test, model, gate.metric, self.plan.label_index(per, label), label)
            else:
                self.check_absolute(test, model, gate.metric)
        return self.records[start:]

    def check_relative(self, test: str, model: str, key: str) -> Outcome:
        gate = self.relative_gates(model)[key]
        base = self.plan.baseline_of(model)
        run = self.run
        try:
            if not self._in_regime(model, gate):
                raise NotApplicable(self._regime_dropped[(model, gate.metric)])
            if gate.kind == "effect":
                outcome = self.effect_outcome(model, gate)
            else:
                self._first_seed_only(model)
                if self.plan.seed_mean:
                    values = run.seed_values(model, gate.metric)
                    outcome = _over_seeds(check(gate, float(np.mean(values)),
                                                reference=float(np.mean(run.seed_values(base, gate.metric)))), values)
                else:
                    outcome = check(gate, run.value(model, gate.metric), reference=run.value(base, gate.metric))
        except NotApplicable as exc:
            outcome = not_applicable(gate, str(exc))
        outcome = expect_failure(outcome, self.plan.gates.expected_failure(*self._key(), model, key, relative=True))
        if outcome.status == "xpass" and gate.kind == "effect" and (outcome.basis or "").startswith("across"):
            outcome = self._unconfirmed(model, outcome)
        self.records.append(GateRecord(test, model, outcome))
        return outcome

    def _unconfirmed(self, model: str, outcome: Outcome) -> Outcome:
        """An effect the calibration expects to fail held on this run's seeds: a warning (shown,
        not failing the run) until a disjoint block of seeds confirms it."""
        seeds = [self.plan.recipes[m].seed for m in self.plan.replicas(model)]
        again = f"--seed {max(seeds) + 1} --seeds {len(seeds)}"
        return replace(outcome, status="undecided", message=(
            f"{outcome.message.split(' [but ')[0]} [UNCONFIRMED: gates.toml expects this effect to fail; one block of "
            f"seeds ({min(seeds)}-{max(seeds)}) is not enough to overturn that. Rerun on a disjoint block ({again}); if "
            "it holds there too, remove the expectation]"))

    def effect_outcome(self, model: str, gate: Gate) -> Outcome:
        """A documented effect judged on what can decide it (``Run.effect_basis``)."""
        run, plan = self.run, self.plan
        basis = run.effect_basis(model)
        base = plan.baseline_of(model)
        if basis == "checkpoints":
            d = run.paired_change(model, gate.metric)
            return check(gate, d["delta"], reference=run.value(base, gate.metric), interval=d["ci"],
                         basis="test images, fixed checkpoints")
        if basis == "undecided":
            d = run.paired_change(model, gate.metric)
            n = len(plan.replicas(model))
            from ..gates import MIN_EFFECT_SEEDS

            why = (f"{n} training run{'s' if n > 1 else ''} of each recipe; an effect of a recipe is decided on the "
                   f"change across >= {MIN_EFFECT_SEEDS} training seeds (--seeds {MIN_EFFECT_SEEDS} or more)"
                   if model not in run.fixed and base not in run.fixed else
                   "one model is a fixed checkpoint and the other a training recipe: give both as checkpoints "
                   "(--weights) or train both")
            return undecided(gate, d["delta"], d["ci"], run.value(base, gate.metric), why)
        first = plan.replicas(model)[0]
        if model != first:
            raise NotApplicable(f"an effect is judged once across the seeds, by {first}'s test")
        d = run.effect_decision(model, gate.metric, str(gate.bound), gate.margin)
        return seed_effect(gate, d, float(np.mean(run.seed_values(base, gate.metric))))

    # ------------------------------------------------------------------ counts
    def counts(self, model: str) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        for r in self.records:
            if r.model == model:
                out[r.outcome.status] += 1
        return out

    def unchecked(self) -> list[str]:
        """Models evaluated in this run for which no gate passed or failed: a run that checks
        nothing about a model it trained must not pass."""
        def checked(m: str) -> bool:
            return any(r.outcome.checked for r in self.records if r.model == m)

        # seed_gates = "mean": a later seed's model is checked through its first seed's tests
        return [m for m in self.run.trained if not checked(self.plan.replicas(m)[0] if self.plan.seed_mean else m)]

    def unbounded(self, model: str) -> list[str]:
        """Metrics a selected test measured for a model without any bound to check."""
        return list(self._unbounded.get(model, []))

    def with_status(self, *statuses: str) -> list[GateRecord]:
        return [r for r in self.records if r.outcome.status in statuses]

    # ------------------------------------------------------------------ several processes (pytest-xdist)
    def worker_state(self) -> dict:
        """What a worker checked, for the controller that writes the run's one report (JSON: the
        controller reads it without pickle)."""
        return {"gate_records": [r.to_state() for r in self.records], "test_outcomes": self.test_outcomes,
                "unbounded": self._unbounded, "diverged": self.run.diverged, "unavailable": sorted(self.run.unavailable),
                "evaluated": self.run.trained}

    def merge(self, state: dict) -> None:
        """Add a worker's state (``worker_state``) to this book's (and its run's)."""
        self.records.extend(GateRecord.from_state(r) for r in state["gate_records"])
        self.test_outcomes.update(state["test_outcomes"])
        for model, names in state["unbounded"].items():
            seen = self._unbounded.setdefault(model, [])
            seen.extend(m for m in names if m not in seen)
        self.run.diverged.update(state["diverged"])
        self.run.unavailable.update(state.get("unavailable", []))


def seed_effect(gate: Gate, d: dict, reference: float) -> Outcome:
    """A documented effect decided across training seeds by the exact sign-flip test with Holm's
    correction (``Run.effect_decision``); the t-interval across seeds is shown beside it."""
    from ..gates.bounds import effect_text, figure

    n = len(d["deltas"])
    basis = f"across {n} training seeds"
    verdict = "as expected" if d["held"] else "NOT as expected"
    test = (f"exact sign-flip p = {d['p']:.3g} {'<=' if d['held'] else '>'} {d['level']:.3g}"
            + (f" (Holm over {d['family']} effects)" if d.get("family", 1) > 1 else ""))
    deltas = ", ".join(f"{v:+.4g}" for v in d["deltas"])
    interval = d["seed_ci"] or [d["delta"], d["delta"]]
    msg = (f"{gate.metric} {effect_text(d['delta'], interval, basis)} vs baseline {figure(reference)}: {verdict} "
           f"({gate.expectation}: {test}); per-seed changes {deltas}; candidate better on {d['better_share']:.0%} of "
           f"seeds ({gate.source})")
    return Outcome(gate, d["delta"], "passed" if d["held"] else "failed", msg, reference, None, list(interval), basis)


def _for_mean(gate: Gate, values: list[float]) -> tuple[Gate, float]:
    """(the bound, the value) a calibrated bound checks for the models of ``len(values)`` new
    seeds: their mean on the metric's scale (T^-1 of the mean of T(x): the rule's average, not
    the raw mean, which Jensen's inequality pushes toward failing) against the rule's bound for
    such a mean (``calibrate.rule.mean_bound``), said in its source; a bound the evidence cannot
    narrow (policy, by hand, a tolerance factor's) checks the raw mean as it stands: a mean of N
    seeds passes it more often than one run does."""
    raw = float(np.mean(values))
    if gate.per_label or gate.kind not in ("min", "max"):
        return gate, raw
    b = mean_bound(gate.evidence, gate.kind, len(values))
    if b is None:
        return gate, raw
    ev = gate.evidence
    scale = Scale(ev["scale"], ev.get("quantum", 0.0))
    value = scale.back(float(np.mean(scale.to(values))))
    return replace(gate, bound=b, source=f"{gate.source}; the bound for the mean of {len(values)} seeds on the "
                                         f"{ev['scale']} scale (single-run bound {gate.bound:g})"), value


def _over_seeds(outcome: Outcome, values: list[float]) -> Outcome:
    seeds = ", ".join(f"{v:.4g}" for v in values)
    return replace(outcome, message=f"{outcome.message} (mean over {len(values)} seeds: {seeds})")
