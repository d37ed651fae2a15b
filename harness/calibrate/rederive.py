"""Tables derived again from the evidence written tables keep, without running anything: every
calibrated table stores each bounded metric's value on every run (and, since tables keep them,
the values of what it left unbounded), so a change of rule is applied to the same runs.

    python -m harness calibrate --rederive gates/fashion-mnist.smoke-improvements.toml \
        --with gates/fashion-mnist.smoke.toml

``--with`` names tables of the same runs that hold models the first one pairs with (a
``--skip-baseline`` table's baseline is in the base table, whose first runs are the same seeds
and threads). What a file kept no values for cannot be bounded anew: its reason is kept, and a
metric measured only by newer code needs the runs again (``python -m harness calibrate``).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from .. import metrics
from ..gates import CALIBRATION, EVIDENCE, UNBOUNDED


def _read(path: Path) -> dict:
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read the calibrated table {path}: {exc}") from exc


def _tables(doc: dict, path: Path) -> tuple[str, str, dict]:
    cal = doc.get(CALIBRATION)
    if not isinstance(cal, dict) or not cal.get("runs"):
        raise ValueError(f"{path} has no [{CALIBRATION}] with its runs: not a calibrated table")
    ds = cal["dataset"]
    profile = cal["profile"]
    return ds, profile, doc[ds][profile]


def runs_from_files(target: Path, others: list[Path] = ()) -> tuple[list[dict], dict, dict[str, dict[str, str]]]:
    """(the target table's runs as ``run_tasks`` returns them, its [calibration], per model the
    reasons it left metrics unbounded): every gated metric's value per run from the evidence of
    the target and of ``others`` (runs matched by their labels, s<seed>/t<threads>)."""
    doc = _read(target)
    ds, profile, tables = _tables(doc, target)
    cal = doc[CALIBRATION]
    labels = list(cal["runs"])
    runs = {label: {"seed": int(label.split("/")[0][1:]), "threads": int(label.split("/t")[1]), "models": {},
                    "quanta": {}, "regime": {**cal["regime"], "threads": int(label.split("/t")[1])},
                    "machine": cal.get("machine"), "torch": cal.get("torch"), "date": cal.get("date")}
            for label in labels}
    models = list(tables)
    unbounded = {m: {k: v for k, v in (t.get(UNBOUNDED) or {}).items()
                     if metrics.get(k.split("[", 1)[0]).gated} for m, t in tables.items()}
    sources = [(target, tables, cal)] + [(p, *_other(p, ds, profile)) for p in others]
    for path, tabs, c in sources:
        order = list(c["runs"])
        for model, table in tabs.items():
            if path != target and (model in models or model != "baseline"):
                continue  # from the others, only the baseline the target's candidates pair with
            for name, ev in (table.get(EVIDENCE) or {}).items():
                base = name.split("[", 1)[0]
                if base not in metrics.REGISTRY or not metrics.get(base).gated or "values" not in ev:
                    continue
                if len(ev["values"]) != len(order):
                    raise ValueError(f"{path}: {model} {name} holds {len(ev['values'])} values for {len(order)} runs")
                for label, v in zip(order, ev["values"]):
                    if label in runs:
                        runs[label]["models"].setdefault(model, {})[name] = float(v)
                        runs[label]["quanta"].setdefault(model, {})[name] = float(ev.get("quantum", 0.0))
    missing = sorted({m for r in runs.values() for m in [*models, "baseline"] if m not in r["models"]})
    if missing:
        raise ValueError(f"no values of {', '.join(missing)} for the runs of {target}: name the table that holds them "
                         "with --with")
    names = {m: sorted(set().union(*(r["models"][m] for r in runs.values()))) for m in runs[labels[0]]["models"]}
    for r in runs.values():  # a metric some runs lack (not applicable there) is None on them, as run_task writes
        for m, keys in names.items():
            for k in keys:
                r["models"][m].setdefault(k, None)
    return [runs[label] for label in labels], cal, unbounded


def _other(path: Path, ds: str, profile: str) -> tuple[dict, dict]:
    doc = _read(path)
    d, p, tables = _tables(doc, path)
    if (d, p) != (ds, profile):
        raise ValueError(f"{path} calibrates {d} {p}, not {ds} {profile}")
    return tables, doc[CALIBRATION]


def rederive(target: Path, others: list[Path], out: Path, gates_path: Path, rule=None) -> dict:
    """Write ``out``: the target's tables derived again by ``rule`` from the values they keep."""
    from . import write_tables

    results, cal, unbounded = runs_from_files(target, others)
    doc = _read(target)
    _, _, tables = _tables(doc, target)
    for model in tables:  # metrics newer than the runs: no values to bound them by, said so
        held = {k.split("[", 1)[0] for k in results[0]["models"][model]} | {k.split("[", 1)[0] for k in unbounded[model]}
        for name, m in metrics.REGISTRY.items():
            if m.gated and name not in held:
                unbounded[model][name] = (f"not measured by this table's runs ({cal.get('date')}; the metric is newer): "
                                          f"rerun its calibration ({cal.get('command', 'python -m harness calibrate')})")
    skip = "baseline" not in tables
    command = (f"{cal.get('command', '')}; re-derived from its evidence by python -m harness calibrate --rederive "
               f"{target}" + "".join(f" --with {p}" for p in others))
    effects = {}  # an effect on a metric whose values the file did not keep stays as the file has it
    for model, table in tables.items():
        rel = table.get("vs_baseline") or {}
        gates = {k: v for k, v in rel.items() if k.endswith("_effect")}
        if gates:
            effects[model] = (gates, dict(rel.get(EVIDENCE) or {}), dict(rel.get("expected_failures") or {}))
    return write_tables(results, cal["dataset"], cal["profile"].split("-imbalance")[0], out, gates_path, rule,
                        command=command, skip_baseline=skip, keep_unbounded=unbounded, keep_effects=effects)
