"""Kinds of evidence, registered like metrics: everything measured about a model (its
predictions on each split, the robustness battery, attacks, Grad-CAM, the failure taxonomy, OOD
sets, conformal sets, leakage, AutoAttack, ...), each declared beside the code that measures it
(``harness/kinds/<kind>.py``) with what the evidence cache, the progress bar, the Ray executor
and the report need to know about it. ``measure.ModelEvaluation`` keeps only the machinery
(lazy, cached, timed, shared between processes) and asks this registry for the rest; the
evidence cache's code hashes, the Ray executor's remote kinds and the kinds a family of tests
needs all read it.

A new kind is one module here: ``@register("name", code=(...), ...)`` over a function
``measure(ev) -> evidence`` (``ev`` is the model's ``ModelEvaluation``), and, for what the run
record keeps of it, ``@recorder("name")`` over ``record(run, model) -> dict``; the package
imports every module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    name: str
    measure: Callable | None  # measure(ev) -> evidence; None: a cache-only kind (its code hash keys a cache)
    code: tuple[str, ...]  # harness files (or folders) whose source decides it: the evidence cache's code hash
    description: str = ""
    units: Callable | None = None  # units(ev) -> (total, unit name) for its progress bar (default: 1)
    context: Callable | None = None  # context(ev) -> dict: what besides the model, the data and the code decides it
    cheap: bool = False  # rebuilt from the stored logits each time: not cached or shared between processes
    per_dataset: bool = False  # a property of the data: keyed by the data's fingerprint alone
    battery: bool = False  # decided by the robustness battery's settings (in its cache key)
    remote: bool = False  # slow: a Ray task measures it ahead of the tests (--executor ray)
    driver_only: Callable | None = None  # driver_only(settings) -> True: measured where the run is (it reads local files)
    in_every_report: bool = False  # the report shows it whatever tests ran (measured for every model)
    first: Callable | None = None  # first(ev) -> kinds measured (and timed) before it, which it reads
    gradients: bool = False  # it differentiates the model (attacks, Grad-CAM): not applicable to one without gradients
    keyed_by_positions: bool = False  # its cache key holds the test positions it measured (attention sets)
    evidence_classes: tuple[str, ...] = ()  # "module:Class" of the dataclasses its evidence holds (the store loads only these)
    # What the run record (results.json, the report) keeps of it: record(run, model) -> dict, or
    # (dict, arrays) for images the report shows; a per-dataset kind's record(run) once per run.
    record: Callable | None = None
    record_as: str = ""  # the record's key (default: the kind's name)
    record_arrays: str = ""  # the key of its arrays (default: record_as)


KINDS: dict[str, Kind] = {}


def register(name: str, code: tuple[str, ...], **fields):
    """Register the decorated ``measure(ev)`` as kind ``name`` (``Kind``'s fields)."""
    def deco(fn):
        if name in KINDS:
            raise ValueError(f"kind of evidence {name!r} is registered twice")
        KINDS[name] = Kind(name, fn, tuple(code), **fields)
        return fn

    return deco


def recorder(name: str, key: str = "", arrays: str = ""):
    """Register the decorated ``record(run, model)`` (per-dataset kinds: ``record(run)``) as
    what the run record keeps of kind ``name``, under ``key`` (default: the name)."""
    from dataclasses import replace

    def deco(fn):
        k = get(name)
        if k.record is not None:
            raise ValueError(f"kind of evidence {name!r} has two recorders")
        KINDS[name] = replace(k, record=fn, record_as=key or name, record_arrays=arrays or key or name)
        return fn

    return deco


def recorded() -> list[Kind]:
    """The kinds the run record keeps, in registration order."""
    return [k for k in KINDS.values() if k.record is not None]


def evidence_classes() -> tuple[str, ...]:
    """Every dataclass some kind's evidence holds (``evidence.unpack`` builds only these)."""
    return tuple(c for k in KINDS.values() for c in k.evidence_classes)


def cache_only(name: str, code: tuple[str, ...], description: str) -> None:
    """A kind that is not evidence of one model but keys a cache by its code (the paired
    bootstraps, the figures, the OOD screen)."""
    KINDS[name] = Kind(name, None, tuple(code), description)


def get(name: str) -> Kind:
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"unknown kind of evidence {name!r}; known: {', '.join(sorted(KINDS))}") from None


def remote() -> tuple[str, ...]:
    """The slow kinds a Ray task measures ahead of the tests."""
    return tuple(k for k, v in KINDS.items() if v.remote)


def needed_by(families: set[str]) -> set[str]:
    """The kinds the metrics of these families (pytest markers) read."""
    from .. import metrics

    return {k.split(".", 1)[-1] for m in metrics.REGISTRY.values() if m.family in families for k in m.needs}


cache_only("comparison", ("compare.py", "metrics"), "paired bootstraps of two models (the run caches them)")
cache_only("paired_change", ("compare.py", "metrics"), "one paired change with its interval")
cache_only("figures", ("report/figures.py", "report/figures_beyond.py", "report/figcache.py", "metrics"),
           "the figure cache's drawing code")
cache_only("ood_screen", ("ood.py", "leakage.py"), "which built-in OOD sets are out of distribution for a dataset")

def _register_all() -> None:
    """Every module of this package registers its kinds (a new kind is one module)."""
    import importlib
    import pkgutil

    for m in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{m.name}")


_register_all()

__all__ = ["KINDS", "Kind", "cache_only", "evidence_classes", "get", "needed_by", "recorded", "recorder", "register",
           "remote"]
