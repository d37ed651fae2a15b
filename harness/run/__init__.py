"""One place that knows what a run is, used by the pytest plugin and the command line alike.

* ``Options``: what the run was asked (one namespace, passed whole).
* ``Plan``: built once from the options, before any training: the data, the models (recipes x
  seeds, checkpoints), the gates that apply, the device and the measuring settings.
* ``Run``: the models trained or loaded, their evidence measured lazily and once, paired
  changes, effects across seeds, the spread over seeds, the report's gallery.
* ``GateBook``: every bound checked, with its outcome, and the counts.
* ``build_record``: the report's record of a run (it measures nothing).
* ``Session``: the three together, as the stress tests and the plugin hold them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..gates import Gates
from .book import GateBook, GateRecord
from .options import Options
from .plan import Plan, Provider, weights_provider, worker_device
from .record import build_record, metric_info
from .run import Run


@dataclass
class Session:
    """A run's plan, run and gate book (the ``stress`` fixture of the stress tests)."""

    plan: Plan
    run: Run
    book: GateBook

    @classmethod
    def create(cls, options: Options, gates: Gates, providers: dict | None = None, hook=None, dataset=None) -> Session:
        plan = Plan(options, gates, providers=dict(providers or {}), dataset=dataset)
        run = Run(plan, hook=hook)
        return cls(plan, run, GateBook(run))

    def value(self, model: str, metric: str, index: int | None = None) -> float:
        return self.run.value(model, metric, index)

    @property
    def data(self):
        return self.plan.data


__all__ = ["GateBook", "GateRecord", "Options", "Plan", "Provider", "Run", "Session", "build_record", "metric_info",
           "weights_provider", "worker_device"]
