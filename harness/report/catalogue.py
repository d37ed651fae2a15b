"""The improvements table of the README, regenerated from the runs' reports.

For every improvement: what it changes in the recipe, its documented effect and source, and
the effect measured in the newest complete run of ``nox -s "improvement(name=..., dataset=...)"``
(its paired 95% interval, whether it held), with the expected failures ``gates.toml`` declares.
``python -m harness improvements --readme README.md`` (``nox -s improvements_table``) rewrites
the block between the README's markers; an improvement with no run yet is listed as such.
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import recipes
from ..gates import Gates
from ..io import atomic_write_text
from .format import fmt, fmt_change
from .tables import effect_evidence, held_effect

START, END = "<!-- improvements:start -->", "<!-- improvements:end -->"


def newest_runs(reports: Path, dataset: str, profile: str) -> dict[str, dict]:
    """candidate -> the newest complete run record comparing it with the baseline."""
    found: dict[str, tuple[str, dict]] = {}
    for results in reports.glob("*/results.json"):
        if results.parent.name.startswith(".") or results.parent.is_symlink():
            continue
        try:
            rec = json.loads(results.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        run = rec.get("run") or {}
        if run.get("dataset") != dataset or run.get("profile") != profile or run.get("complete") is False:
            continue
        for cand in rec.get("comparisons") or {}:
            stamp = run.get("started_utc") or ""
            if cand not in found or stamp > found[cand][0]:
                found[cand] = (stamp, {**rec, "_dir": results.parent.name})
    return {c: r for c, (_, r) in found.items()}


def _change(name: str, dataset: str) -> str:
    """The recipe fields the improvement changes on this dataset, with their values."""
    base = recipes.BASELINES[dataset]
    diff = base.diff(recipes.improve(base, name))
    return ", ".join(f"{k} = {new:g}" if isinstance(new, float) else f"{k} = {new}"
                     for k, (_, new) in diff.items() if k != "name")


def table(reports: Path, gates: Gates, dataset: str = "fashion-mnist", profile: str = "smoke") -> str:
    runs = newest_runs(reports, dataset, profile)
    rows = ["| improvement | recipe change | documented effect (source) | measured on "
            f"{dataset} {profile}: change [95% CI] | held | accuracy change [95% CI] | expected to fail on {profile} |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, effect in recipes.DOCUMENTED_EFFECTS.items():
        gate_profile = recipes.gate_profile_of(name, profile)
        xfail = gates.expected_failures(dataset, gate_profile, name)
        xf = "; ".join(f"`{k}`: {v}" for k, v in xfail.items()) or "-"
        rec = runs.get(name)
        if rec is None:
            rows.append(f"| {name} | {_change(name, dataset)} | {effect.text} ({effect.source}) | not measured yet: "
                        f"`nox -s \"improvement(name='{name}', dataset='{dataset}')\"` | - | - | {xf} |")
            continue
        cmp = rec["comparisons"][name]
        checks = cmp.get("effect_checks") or []
        measured = "; ".join(effect_evidence(rec, c) for c in checks) or "-"
        held = held_effect(cmp)
        acc = (cmp.get("metric_deltas") or {}).get("accuracy") or {}
        accuracy = fmt_change(acc.get("delta"), acc.get("ci"), "pct") if acc.get("delta") is not None \
            else "-"
        base = ((rec.get("models") or {}).get("baseline") or {}).get("metrics", {}).get("accuracy")
        rows.append(f"| {name} | {_change(name, dataset)} | {effect.text} ({effect.source}) | {measured} (run "
                    f"`{rec['_dir']}`, baseline accuracy {fmt(base, 'pct')}) | {held} | {accuracy} | {xf} |")
    return "\n".join(rows)


def rewrite_readme(readme: Path, text: str) -> None:
    doc = readme.read_text(encoding="utf-8")
    if START not in doc or END not in doc:
        raise ValueError(f"{readme} has no {START} ... {END} block to rewrite")
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    atomic_write_text(readme, f"{head}{START}\n{text}\n{END}{tail}")
