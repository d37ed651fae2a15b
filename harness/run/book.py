"""The gate book of a run: every bound checked against what the run measured, with its outcome,
and the counts the summary and the report show. A stress test asks the book to check one
metric of one model; the audit asks it to check every bound of a model."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .. import metrics
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


@dataclass
class GateBook:
    run: Run
    records: list[GateRecord] = field(default_factory=list)
    test_outcomes: dict[str, str] = field(default_factory=dict)
    _unbounded: dict[str, list[str]] = field(default_factory=dict)

    @property
    def plan(self):
        return self.run.plan

    def _key(self) -> tuple[str, str]:
        return self.plan.dataset_name, self.plan.gate_profile

    # ------------------------------------------------------------------ bounds
    def absolute_gates(self, model: str, metric: str, label: str | None = None) -> list[Gate]:
        """The model's bounds on ``metric`` (narrowed to one class of a per-class metric)."""
        found = self.plan.gates.absolute(*self._key(), model)
        gates = [found[k] for k in (f"{metric}_min", f"{metric}_max") if k in found]
        if label is not None:
            gates = [g.for_label(label) for g in gates]
        return [g for g in gates if g is not None]

    def relative_gates(self, model: str) -> dict[str, Gate]:
        return self.plan.gates.relative(*self._key(), model)

    def unbounded_reason(self, model: str, metric: str, label: str | None = None) -> str | None:
        """Why gates.toml leaves ``metric`` unbounded for this model, where a table says."""
        return self.plan.gates.unbounded_reason(*self._key(), model, metric, label)

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
                outcomes = [_over_seeds(check(g, float(np.mean(values)), label=label), values) for g in gates]
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

    def check_every_bound(self, model: str, test: str = "audit") -> list[GateRecord]:
        """Every absolute bound of ``model`` checked, every class of a per-class one: what the
        stress tests check for it, without pytest (``harness.audit``)."""
        start = len(self.records)
        checked: set[str] = set()
        for gate in self.plan.gates.absolute(*self._key(), model).values():
            if gate.metric in checked:  # both sides of a metric are checked together
                continue
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
        self.records.append(GateRecord(test, model, outcome))
        return outcome

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
        d = run.seed_change(model, gate.metric)
        outcome = check(gate, d["delta"], reference=float(np.mean(run.seed_values(base, gate.metric))),
                        interval=d["seed_ci"], basis=f"across {len(d['deltas'])} training seeds")
        deltas = ", ".join(f"{v:+.4g}" for v in d["deltas"])
        return replace(outcome, message=f"{outcome.message}; per-seed changes {deltas}; candidate better on "
                                        f"{d['better_share']:.0%} of seeds")

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
        """What a worker checked, for the controller that writes the run's one report."""
        return {"gate_records": self.records, "test_outcomes": self.test_outcomes, "unbounded": self._unbounded,
                "diverged": self.run.diverged, "evaluated": self.run.trained}

    def merge(self, state: dict) -> None:
        """Add a worker's state (``worker_state``) to this book's (and its run's)."""
        self.records.extend(state["gate_records"])
        self.test_outcomes.update(state["test_outcomes"])
        for model, names in state["unbounded"].items():
            seen = self._unbounded.setdefault(model, [])
            seen.extend(m for m in names if m not in seen)
        self.run.diverged.update(state["diverged"])


def _over_seeds(outcome: Outcome, values: list[float]) -> Outcome:
    seeds = ", ".join(f"{v:.4g}" for v in values)
    return replace(outcome, message=f"{outcome.message} (mean over {len(values)} seeds: {seeds})")
