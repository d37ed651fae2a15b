"""summary.md: the report as GitHub markdown, the answer first, the gates last."""

from __future__ import annotations

from tabulate import tabulate

from . import findings, tables
from .format import Table


def md(table: Table) -> str:
    headers, rows = table
    esc = [[c.replace("|", "\\|") for c in r] for r in rows]
    return tabulate(esc, headers=[h.replace("|", "\\|") for h in headers], tablefmt="github", disable_numparse=True)


def headline(record: dict) -> str:
    c = tables.gate_counts(record)
    tests = record.get("tests") or {}
    t = ", ".join(f"{v} {k}" for k, v in tests.items())
    return f"{c['passed']} gates passed, {c['failed']} failed, {c['n/a']} not applicable" + (f" · tests: {t}" if t else "")


def summary_markdown(record: dict) -> str:
    run = record.get("run") or {}
    out = [f"# Stress run {run.get('id', '')}", "",
           f"**{tables.verdict_line(record)}**", "",
           f"{headline(record)} · {run.get('dataset', '')} / {run.get('profile', '')} on {run.get('device', '')}", ""]

    def section(title: str, table: Table, note: str = "") -> None:
        if table[1]:
            out.extend([f"## {title}", ""] + ([note, ""] if note else []) + [md(table), ""])

    section("Models side by side", tables.table_headline(record),
            f"{tables.test_split_name(record)}; changes are candidate minus baseline with paired bootstrap 95% intervals; "
            "pp = percentage points.")
    section("Did the improvement do what it is documented to do?", tables.table_effects(record))
    section("Checks per model", tables.table_checks(record))
    section("Across training seeds", tables.table_seed_spread(record),
            "Spread between training runs; changes paired seed by seed, t-interval across seeds next to the "
            "bootstrap interval over test images (first seed).")
    section("Wrong predictions by confidence threshold", tables.table_thresholds(record))
    section("Named failure cases", tables.table_named_cases(record))
    section("Failure taxonomy (errors with >= 90% confidence)", findings.table_taxonomy(record),
            "Dominant mode per error from measured signals; rules and limits in harness/taxonomy.py.")
    section("Most confused class pairs", findings.table_confused_pairs(record))
    section("Attention on the shared explanation set", findings.table_attention(record))
    section("Attention before and after (paired, same images)", findings.table_attention_changes(record))
    section("Common corruptions by severity", findings.table_severity(record))
    section("Adversarial attacks", findings.table_adversarial(record))
    section("AutoAttack (the reference)", findings.table_autoattack(record))
    section("Occlusion, scale, position, flips", findings.table_geometry(record))
    section("Out-of-distribution inputs", findings.table_ood(record),
            "Test images positive; AUROC / FPR at 95% TPR per score and set, * the best score of each set; near: "
            "another real domain, far: synthetic (harness/ood.py, harness/ood_features.py).")
    section("Weak segments", findings.table_segment_search(record),
            "Property quintiles, metadata values and their pairs with more errors than chance, Holm-corrected over "
            "every segment searched (harness/segments.py).")
    section("Image properties: shift from the training split", findings.table_property_shift(record))
    leak = record.get("leakage") or {}
    if leak:
        section("Train/test leakage", findings.table_leakage(record),
                f"{leak['count']} test images ({leak['share']:.2%}) with a near-duplicate in training "
                f"(cosine >= {leak['threshold']}; {leak['exact']} exact copies).")
    section("Conformal prediction sets", findings.table_conformal(record))
    section("Selective prediction at your risk", findings.table_risk_control(record))
    figs = record.get("figures") or {}
    if figs:
        out.extend(["## Figures", ""])
        for name, f in figs.items():
            if f.get("ok"):
                out.append(f"- [{name}]({f['path']}): {f.get('caption', '')}")
            else:
                out.append(f"- **{name} FAILED**: {f.get('error')}")
        out.append("")
    section("All metrics (test split)", tables.table_metrics(record))
    section("Comparisons (paired, same test images)", tables.table_comparisons(record))
    section("Metric changes with bootstrap 95% intervals", tables.table_metric_deltas(record))
    _, _, k = tables.per_class_rows(record)
    shown = tables.table_per_class(record)
    note = (f"Worst {len(shown[1])} of {k} classes by the baseline's accuracy; all of them in per_class.csv."
            if k > len(shown[1]) else "Sorted by the baseline's accuracy, worst first.")
    section("Per-class accuracy", shown, note)
    section("Training", tables.table_training(record))
    section("Gates", tables.table_gates(record), "Failures first.")
    section("Recipes (* = differs between models)", tables.table_recipes(record))
    section("Run", tables.table_metadata(record))
    return "\n".join(out)
