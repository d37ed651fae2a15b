"""The report's tables, built from the run record alone: (headers, rows) of plain strings.

Nothing here measures: every number comes from the record (``results.json``), which holds
what the run measured; labels and units come from its ``metric_info`` (the registry's
description of each metric when the run was made). ``markdown.py`` renders the tables with
tabulate, ``html.py`` as HTML.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from ..gates import MIN_EFFECT_SEEDS
from .format import (  # noqa: F401
    DASH,
    Table,
    _held,
    _metric,
    fmt,
    fmt_change,
    fmt_ci,
    fmt_delta,
    fmt_value,
    is_num,
    label,
    metric_kind,
    metric_list,
    time_spent_line,
    unit_kind,
)
from .io import candidates, model_order, record_classes

# The answer first: the metrics the seeds argue with, side by side.
HEADLINE = ("accuracy", "confident_errors_90", "confident_errors_99", "ece", "ece_over", "ece_under",
            "worst_class_accuracy", "loss")
PER_CLASS_SHOWN = 20  # more classes: the worst ones here, all of them in per_class.csv


# ============================================================================ the answer


def verdict_line(record: dict) -> str:
    v = record.get("verdict") or {}
    if not v:
        failed = sum(1 for g in record.get("gates") or [] if g.get("status", "passed" if g.get("passed") else "failed") == "failed")
        return f"{'FAIL' if failed else 'PASS'}: {failed} gate(s) failed"
    if v.get("status") == "pass":
        xf = v.get("expected_failures") or []
        und = v.get("undecided") or []
        return (f"PASS: all {v.get('gates_checked', 0) - len(xf)} gates checked passed"
                + (f", {len(xf)} failed as gates.toml expects ({', '.join(xf)})" if xf else "")
                + (f"; {len(und)} documented effect(s) not decided ({', '.join(und)}: too few training seeds, "
                   "--seeds 6 or more decides; or held against the expectation on one block of seeds)" if und else ""))
    return "FAIL: " + "; ".join(v.get("reasons") or ["see the gates"])


def table_headline(record: dict) -> Table:
    """Models side by side on the headline metrics, with each candidate's change and its
    paired 95% interval."""
    order = model_order(record)
    cands = candidates(record)
    headers = ["Metric", *order, *[f"{c} vs baseline [95% CI]" for c in cands]]
    rows = []
    for key in HEADLINE:
        vals = [_metric(record, m, key) for m in order]
        if all(v is None for v in vals) and not any(key in (record["models"][m].get("metrics") or {}) for m in order):
            continue
        kind = metric_kind(record, key)
        row = [key, *[fmt(v, kind) for v in vals]]
        for c in cands:
            d = ((record.get("comparisons") or {}).get(c) or {}).get("metric_deltas", {}).get(key) or {}
            row.append(fmt_change(d.get('delta'), d.get('ci'), kind) if d.get("delta") is not None
                       else DASH)
        rows.append(row)
    return headers, rows


def effect_evidence(record: dict, chk: dict) -> str:
    """One documented effect's evidence in words: across seeds where the run has them, over
    test images for fixed checkpoints, or the one run's change marked as test-sampling only."""
    kind = metric_kind(record, chk.get("metric", ""))
    if chk.get("delta") is None:
        return f"{chk.get('metric')}: not applicable ({chk.get('not_applicable', '')})"
    expect = chk.get("expect")
    if expect == "not_worse":
        expect = f"not_worse, margin {fmt(chk.get('margin'), kind)}"
    basis = chk.get("basis")
    if basis == "seeds":
        n = len(chk.get("deltas") or [])
        better = chk.get("better_share")
        return (f"{chk['metric']} {fmt_change(chk.get('seed_delta'), chk.get('seed_ci'), kind)} across {n} training "
                f"seeds, better on {better:.0%} of them ({expect}: {_held(chk.get('held'))})")
    if basis == "checkpoints":
        return (f"{chk['metric']} {fmt_change(chk['delta'], chk.get('ci'), kind)} over test images, fixed checkpoints "
                f"({expect}: {_held(chk.get('held'))})")
    return (f"{chk['metric']} {fmt_change(chk['delta'], chk.get('ci'), kind)} over test images only, one training run: "
            f"not decided ({expect}; --seeds {MIN_EFFECT_SEEDS} or more decides)")


def held_effect(cmp: dict) -> str:
    if cmp.get("effect_held") is None and any(c.get("basis") == "undecided" for c in cmp.get("effect_checks") or []):
        return "undecided (one seed)"
    return _held(cmp.get("effect_held"))


def table_effects(record: dict) -> Table:
    """Per candidate: its documented effect, whether it held, and the evidence."""
    headers = ["Candidate", "Documented effect", "Held", "Evidence (change [95% CI], expectation)"]
    rows = []
    expected = {(g.get("model"), g.get("metric")) for g in record.get("gates") or []
                if g.get("kind") == "effect" and g.get("status") == "xfail"}
    for c, cmp in (record.get("comparisons") or {}).items():
        ev = []
        for chk in cmp.get("effect_checks") or []:
            note = " (expected on this profile: see the gate)" if (c, chk.get("metric")) in expected else ""
            ev.append(effect_evidence(record, chk) + note)
        rows.append([c, str(cmp.get("expected_effect") or "no documented effect (a recipe of your own)"),
                     held_effect(cmp), "; ".join(ev) or DASH])
    return headers, rows


def table_checks(record: dict) -> Table:
    """Per model: gates passed, failed, failed as expected, not applicable, and metrics measured
    without a bound."""
    headers = ["Model", "Gates passed", "Failed", "Failed as expected", "Not applicable", "Measured without a bound"]
    rows = []
    for m in model_order(record):
        c = (record["models"][m] or {}).get("checks") or {}
        rows.append([m, fmt(c.get("passed"), "int"), fmt((c.get("failed") or 0) + (c.get("xpass") or 0), "int"),
                     fmt(c.get("xfail"), "int"), fmt((c.get("n/a") or 0) + (c.get("undecided") or 0), "int"),
                     metric_list(c.get("unbounded") or []) or DASH])
    return headers, rows


# ============================================================================ details


def table_metrics(record: dict) -> Table:
    """Every whole-model metric measured, every model, with candidate minus baseline."""
    models = record.get("models") or {}
    order = model_order(record)
    base = record.get("baseline")
    cands = candidates(record)
    info = record.get("metric_info") or {}
    keys = list(dict.fromkeys(k for m in order for k in (models[m].get("metrics") or {})))
    keys.sort(key=lambda k: (list(info).index(k) if k in info else len(info), k))
    headers = ["Metric", *order, *[f"change {c}" for c in cands], "What it measures"]
    rows = []
    for key in keys:
        kind = metric_kind(record, key)
        vals = [_metric(record, m, key) for m in order]
        b = _metric(record, base, key) if base in models else None
        deltas = [fmt_delta(float(_metric(record, c, key)) - float(b), kind)
                  if is_num(b) and is_num(_metric(record, c, key)) else DASH for c in cands]
        na = [((models[m].get("not_applicable") or {}).get(key)) for m in order]
        shown = [fmt(v, kind) if v is not None or not na[i] else "n/a" for i, v in enumerate(vals)]
        direction = (info.get(key) or {}).get("direction")
        arrow = {"higher": " (higher is better)", "lower": " (lower is better)"}.get(direction, "")
        rows.append([key, *shown, *deltas, ((info.get(key) or {}).get("description") or "") + arrow])
    return headers, rows


ENTRY_ROWS: list[tuple[str, str, str]] = [
    ("best_epoch", "Best epoch (kept)", "int"),
    ("train_size", "Training images", "int"),
    ("train_seconds", "Training time", "sec"),
    ("cached", "From the model cache", "bool"),
    ("temperature", "Temperature (post-hoc)", "num"),
]


def table_training(record: dict) -> Table:
    models = record.get("models") or {}
    order = model_order(record)
    headers = ["", *order]
    rows = []
    for key, text, kind in ENTRY_ROWS:
        vals = [models[m].get(key) for m in order]
        if all(v is None for v in vals):
            continue
        rows.append([text, *[fmt(v, kind) for v in vals]])
    return headers, rows


def table_thresholds(record: dict) -> Table:
    """Wrong predictions at or above each confidence threshold, as measured."""
    models = record.get("models") or {}
    order = [m for m in model_order(record) if models[m].get("confident_errors_by_threshold")]
    base = record.get("baseline")
    cands = [c for c in order if c != base] if base in order else []
    ts = list(dict.fromkeys(t for m in order for t in models[m]["confident_errors_by_threshold"]))
    headers = ["Confidence >=", *order, *[f"change {c}" for c in cands]]
    rows = []
    for t in sorted(ts, key=float):
        counts = {m: models[m]["confident_errors_by_threshold"].get(t) for m in order}
        row = [f"{float(t) * 100:g}%", *[fmt(counts[m], "int") for m in order]]
        for c in cands:
            b, v = counts[base], counts[c]
            if not (is_num(b) and is_num(v)):
                row.append(DASH)
            else:
                row.append(f"{v - b:+d} ({(v - b) / b:+.0%})" if b else f"{v - b:+d}")
        rows.append(row)
    return headers, rows


def per_class_rows(record: dict) -> tuple[list[str], list[list[str]], int]:
    """All classes, sorted by the baseline's accuracy (worst first): (headers, rows, K)."""
    models = record.get("models") or {}
    order = model_order(record)
    base = record.get("baseline")
    cands = candidates(record)
    pca = {m: models[m].get("per_class_accuracy") or [] for m in order}
    k = max((len(v) for v in pca.values()), default=0)
    classes = record_classes(record, k)
    counts = next((models[m].get("class_counts") for m in order if models[m].get("class_counts")), None) or []
    headers = ["Class", "Test images", *order, *[f"change {c}" for c in cands]]
    ref = pca.get(base) or pca[order[0]] if order else []

    def key(i):
        v = ref[i] if i < len(ref) else None
        return (0, float(v)) if is_num(v) else (1, 0.0)

    rows = []
    for i in sorted(range(k), key=key):
        row = [classes[i], fmt(counts[i] if i < len(counts) else None, "int")]
        row += [fmt(pca[m][i] if i < len(pca[m]) else None, "pct") for m in order]
        for c in cands:
            a = pca[c][i] if i < len(pca[c]) else None
            b = pca[base][i] if i < len(pca[base]) else None
            row.append(fmt_delta(a - b, "pct") if is_num(a) and is_num(b) else DASH)
        rows.append(row)
    return headers, rows, k


def table_per_class(record: dict, limit: int | None = PER_CLASS_SHOWN) -> Table:
    headers, rows, _ = per_class_rows(record)
    return headers, rows if limit is None else rows[:limit]


def table_comparisons(record: dict) -> Table:
    headers = ["Candidate", "Against", "Accuracy change [95% CI]", "McNemar p", "Corrected", "Regressed", "Net",
               "Both wrong", "Both wrong, lower confidence"]
    rows = []
    for c, cmp in (record.get("comparisons") or {}).items():
        corr, reg = cmp.get("corrected"), cmp.get("regressed")
        acc = (cmp.get("metric_deltas") or {}).get("accuracy") or {}
        rows.append([
            c, str(cmp.get("against", record.get("baseline", DASH))),
            fmt_change(acc.get('delta'), acc.get('ci'), 'pct'),
            fmt(cmp.get("mcnemar_p"), "p"), fmt(corr, "int"), fmt(reg, "int"),
            fmt_delta(corr - reg, "int") if is_num(corr) and is_num(reg) else DASH,
            fmt(cmp.get("both_wrong"), "int"), fmt(cmp.get("both_wrong_lower_confidence_share"), "pct"),
        ])
    return headers, rows


def table_metric_deltas(record: dict) -> Table:
    headers = ["Candidate", "Metric", "Change (candidate - baseline)", "95% CI", "Interval excludes 0"]
    rows = []
    for c, cmp in (record.get("comparisons") or {}).items():
        for key, d in (cmp.get("metric_deltas") or {}).items():
            d = d if isinstance(d, Mapping) else {"delta": d}
            kind = metric_kind(record, key)
            ci = d.get("ci")
            excl = DASH
            if ci and len(ci) == 2 and all(is_num(x) for x in ci):
                excl = "yes" if (ci[0] > 0 or ci[1] < 0) else "no"
            shown = fmt_delta(d.get("delta"), kind) if d.get("delta") is not None else \
                f"n/a ({d.get('not_applicable', '')})"
            rows.append([c, key, shown, fmt_ci(ci, kind), excl])
    return headers, rows


def table_seed_spread(record: dict) -> Table:
    """With --seeds N: each recipe's metrics over its training seeds, and each candidate's change
    paired seed by seed with the interval across seeds next to the bootstrap interval over test
    images (the first seed's)."""
    spread = record.get("seed_spread") or {}
    headers = ["Recipe", "Metric", "Mean ± std", "Range", "Per seed", "Change: mean [95% across seeds]",
               "Bootstrap 95% (first seed)"]
    rows = []
    for recipe, per in (spread.get("recipes") or {}).items():
        changes = (spread.get("changes") or {}).get(recipe) or {}
        for key, v in per.items():
            kind = metric_kind(record, key)
            ch = changes.get(key) or {}
            rows.append([
                recipe, key, f"{fmt(v.get('mean'), kind)} ± {fmt(v.get('std'), kind)}",
                f"{fmt(v.get('min'), kind)} – {fmt(v.get('max'), kind)}",
                ", ".join(fmt(x, kind) for x in v.get("values") or []),
                fmt_change(ch.get('delta'), ch.get('seed_ci'), kind) if ch else DASH,
                fmt_ci(ch.get("bootstrap_ci"), kind) if ch.get("bootstrap_ci") else DASH,
            ])
    return headers, rows


def table_named_cases(record: dict) -> Table:
    cases = record.get("named_cases") or []
    order = model_order(record)
    in_cases = [m for m in order if any(m in (c.get("models") or {}) for c in cases)]
    in_cases += [m for c in cases for m in (c.get("models") or {}) if m not in in_cases]
    in_cases = list(dict.fromkeys(in_cases))
    base = record.get("baseline")
    headers = ["Test #", "True", *in_cases, "What happened"]
    rows = []
    for case in cases:
        ms = case.get("models") or {}
        row = [str(case.get("name") or case.get("id", DASH)), str(case.get("label", DASH))]
        for m in in_cases:
            p = ms.get(m)
            if not p:
                row.append(DASH)
                continue
            mark = "right" if p.get("correct") else "wrong"
            row.append(f"{p.get('pred', DASH)} ({fmt(p.get('confidence'), 'pct')}, {mark})")
        notes = []
        b = ms.get(base)
        for m in in_cases:
            p = ms.get(m)
            if m == base or not p or not b:
                continue
            if not b.get("correct") and p.get("correct"):
                notes.append(f"{m}: fixed")
            elif b.get("correct") and not p.get("correct"):
                notes.append(f"{m}: regressed")
            elif not b.get("correct"):
                dc = (p.get("confidence") or 0) - (b.get("confidence") or 0)
                notes.append(f"{m}: still wrong, confidence {dc * 100:+.1f} pp")
            else:
                notes.append(f"{m}: right in both")
        row.append("; ".join(notes) or DASH)
        rows.append(row)
    return headers, rows


# ============================================================================ gates


def gate_status(g: Mapping) -> str:
    return g.get("status") or ("passed" if g.get("passed") else "failed")


def bound_text(g: Mapping) -> str:
    kind, bound = g.get("kind"), g.get("bound")
    if kind == "effect":
        return f"change {bound}"
    sym = {"max": "<=", "min": ">=", "max_delta": "<= baseline +", "min_delta": ">= baseline +",
           "max_ratio": "<= baseline x", "min_ratio": ">= baseline x"}.get(kind, str(kind or ""))
    return f"{sym} {fmt_value(bound)}".strip()


def gate_counts(record: dict) -> dict[str, int]:
    out = {"passed": 0, "failed": 0, "n/a": 0, "xfail": 0, "xpass": 0, "undecided": 0}
    for g in record.get("gates") or []:
        out[gate_status(g)] = out.get(gate_status(g), 0) + 1
    return out


GATE_HEADERS = ["Result", "Test", "Model", "Metric", "Value", "Bound", "Source", "Message"]
_STATUS = {"passed": "PASS", "failed": "FAIL", "n/a": "N/A", "xfail": "XFAIL", "xpass": "XPASS",
           "undecided": "UNDECIDED"}
_ORDER = {"failed": 0, "xpass": 0, "xfail": 1, "undecided": 2, "n/a": 2, "passed": 3}


def table_gates(record: dict, status: str | None = None) -> Table:
    """Gates, failures first; ``status`` keeps only some outcomes (a status or a tuple of them)."""
    gates = sorted(record.get("gates") or [], key=lambda g: _ORDER[gate_status(g)])
    keep = (status,) if isinstance(status, str) else status
    rows = []
    for g in gates:
        st = gate_status(g)
        if keep is not None and st not in keep:
            continue
        metric = str(g.get("metric", DASH)) + (f"[{g['label']}]" if g.get("label") else "")
        rows.append([_STATUS[st], str(g.get("test", DASH)), str(g.get("model") or DASH), metric,
                     fmt_value(g.get("value")), bound_text(g), str(g.get("source") or DASH), str(g.get("message") or "")])
    return GATE_HEADERS, rows


# ============================================================================ provenance


def table_recipes(record: dict) -> Table:
    models = record.get("models") or {}
    order = model_order(record)
    headers = ["Field", *order]
    rows = [["recipe hash", *[str(models[m].get("recipe_hash") or DASH) for m in order]],
            ["cache key", *[str(models[m].get("cache_key") or DASH) for m in order]]]
    fields: list[str] = []
    for m in order:
        for k in models[m].get("recipe") or {}:
            if k not in fields:
                fields.append(k)
    for f in fields:
        vals = [(models[m].get("recipe") or {}).get(f, DASH) for m in order]
        shown = [json.dumps(v) if isinstance(v, list) else str(v) for v in vals]
        rows.append([f + (" *" if len(set(shown)) > 1 else ""), *shown])
    return headers, rows


def test_split_name(record: dict) -> str:
    """What "the test split" of the headline is: all of it, or its first images (a costly model
    at smoke on a CPU: ``cards.split_sizes``)."""
    data = (record.get("run") or {}).get("data") or {}
    if not data.get("subset"):
        return "Test split"
    n = data.get("test")
    return f"The first {n:,} images of the test split (a subset: see the Run section)" if isinstance(n, int) else \
        "Part of the test split (see the Run section)"


def measured_on_line(m: dict | None, device: str | None) -> str:
    """How many images each measurement took, and why (a costly model on a CPU gets fewer)."""
    if not m:
        return DASH
    sev = m.get("severities")
    text = (f"{m['stress_samples']} test images stressed"
            + (f" (corruptions at severities {', '.join(map(str, sev))})" if sev and list(sev) != [1, 2, 3, 4, 5] else "")
            + f", the first {m['attack_samples']} attacked; "
            f"{m['ood_images']} images per OOD set; {m['cam_samples']} confident errors explained and up to "
            f"{m.get('taxonomy_errors', DASH)} given a failure mode per model")
    g, ref = m.get("gflop_per_image"), m.get("reference_gflop")
    if g is not None:
        text += f" (the model: {g:.3g} GFLOP per image"
        if device == "cpu" and ref and g > ref:
            text += f"; on a CPU a model above {ref:g} GFLOP gets {ref:g}/{g:.3g} of the profile's images, " \
                    "down to a floor: harness/cards.py"
        text += ")"
    return text


def _regime_line(run: dict) -> str:
    """The arithmetic the run computed in, and whether each calibrated table gated it."""
    r = run.get("regime") or {}
    if not r:
        return DASH
    parts = [r.get("device"), r.get("precision"), r.get("kernels") and f"{r['kernels']} kernels",
             r.get("threads") and f"{r['threads']} threads", r.get("torch") and f"torch {r['torch']}"]
    return "; ".join([", ".join(p for p in parts if p), *(run.get("regime_notes") or [])])


def table_metadata(record: dict) -> Table:
    run = record.get("run") or {}
    git = run.get("git") or {}
    commit = git.get("commit") or "unknown"
    if git.get("dirty"):
        commit += " (dirty: uncommitted changes)"
    seeds = run.get("seeds") or {}
    tests = record.get("tests") or {}
    data = run.get("data") or {}
    rows = [
        ["Run", run.get("id", DASH)],
        ["Dataset / profile", f"{run.get('dataset', DASH)} / {run.get('profile', DASH)}"
         + (f" (gates: {run['gate_profile']})" if run.get("gate_profile") not in (None, run.get("profile")) else "")],
        ["Data", f"{data.get('source', DASH)} (fingerprint {data.get('fingerprint', DASH)}; train {data.get('train', DASH)}, "
                 f"val {data.get('val', DASH)}, test {data.get('test', DASH)})"
                 + (f"; evaluated on {data['subset']}" if data.get("subset") else "") if data else DASH],
        ["Started / finished (UTC)", f"{run.get('started_utc', DASH)} / {run.get('finished_utc', DASH)}"],
        ["Total time", fmt((record.get("timings") or {}).get("total_seconds"), "sec")],
        ["Where the time went", time_spent_line(record.get("time_spent") or {}) or DASH],
        ["Device", f"{run.get('device', DASH)} ({run.get('device_name', DASH)})"],
        ["Measured on", measured_on_line(run.get("measured_on"), run.get("device"))],
        ["Regime", _regime_line(run)],
        ["Command", run.get("command", DASH)],
        ["Gates file", run.get("gates_file", DASH)],
        ["Git commit", commit],
        ["Exit status", str(run.get("exit_status", DASH))],
        ["Tests", ", ".join(f"{v} {k}" for k, v in tests.items()) or DASH],
        ["Seeds", json.dumps(seeds, sort_keys=True) if seeds else DASH],
        ["Versions", ", ".join(f"{k} {v}" for k, v in (run.get("versions") or {}).items()) or DASH],
    ]
    return ["Field", "Value"], [[str(a), str(b)] for a, b in rows]
