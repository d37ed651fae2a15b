"""The report's tables of findings about each model, from the run record alone: robustness
(corruptions by severity, attacks, geometry), the failure taxonomy, and attention."""

from __future__ import annotations

import numpy as np

from .format import DASH, Table, fmt, fmt_ci, fmt_delta
from .io import model_order

# ============================================================================ robustness


def _rob(record: dict) -> dict[str, dict]:
    models = record.get("models") or {}
    return {m: models[m].get("robustness") or {} for m in model_order(record)}


def severities_of(robustness_records, levels: int) -> list[int]:
    """The severity of each position of a robustness record's lists: the severities run (a record
    says which: 1, 3, 5 for a costly model on a CPU), else 1..levels (older records)."""
    for r in robustness_records:
        if r.get("severities") and len(r["severities"]) == levels:
            return [int(s) for s in r["severities"]]
    return list(range(1, levels + 1))


def table_severity(record: dict) -> Table:
    """Mean over corruptions at each severity: accuracy, ECE and the share of images wrong with
    >= 90% confidence (how confident errors grow with severity)."""
    rob = {m: r for m, r in _rob(record).items() if r.get("by_severity")}
    headers = ["Severity"] + [f"{m} {k}" for m in rob for k in ("accuracy", "ECE", "wrong >=90%")]
    rows = []
    if not rob:
        return headers, rows
    levels = max(len(r["by_severity"]) for r in rob.values())
    sevs = severities_of(rob.values(), levels)
    for i in range(-1, levels):
        row = ["clean" if i < 0 else str(sevs[i])]
        for r in rob.values():
            cell = r["clean"] if i < 0 else (r["by_severity"][i] if i < len(r["by_severity"]) else {})
            row += [fmt(cell.get("accuracy"), "pct"), fmt(cell.get("ece")), fmt(cell.get("confident_error_rate"), "pct")]
        rows.append(row)
    return headers, rows


def table_corruptions(record: dict, model: str) -> Table:
    r = _rob(record).get(model) or {}
    corr = r.get("corruptions") or {}
    levels = max((len(v) for v in corr.values()), default=0)
    headers = ["Corruption", *[f"severity {s}" for s in severities_of([r], levels)], "mean"]
    rows = []
    for name, cells in sorted(corr.items(), key=lambda kv: np.mean([c["accuracy"] for c in kv[1]])):
        accs = [c["accuracy"] for c in cells]
        rows.append([name, *[fmt(a, "pct") for a in accs], fmt(float(np.mean(accs)), "pct")])
    return headers, rows


def table_adversarial(record: dict) -> Table:
    adv = {m: r["adversarial"] for m, r in _rob(record).items() if r.get("adversarial")}
    headers = ["eps (L-inf)"] + [f"{m} {a}" for m in adv for a in ("FGSM", "PGD")]
    if not adv:
        return headers, []
    first = next(iter(adv.values()))
    rows = [["0 (clean)", *[fmt(a["clean"]["accuracy"], "pct") for a in adv.values() for _ in (0, 1)]]]
    for i, e in enumerate(first["epsilons"]):
        mark = " (reference)" if abs(e - (first.get("reference_eps") or -1)) < 1e-12 else ""
        rows.append([f"{e:.4g}{mark}", *[fmt(a[k][i]["accuracy"], "pct") for a in adv.values() for k in ("fgsm", "pgd")]])
    return headers, rows


def table_geometry(record: dict) -> Table:
    """Occlusion, scale, shifts, rotations, flips: accuracy and the share of changed predictions."""
    rob = {m: r for m, r in _rob(record).items() if r.get("geometry")}
    headers = ["Stress"] + [f"{m} {k}" for m in rob for k in ("accuracy", "changed")]
    keys = list(dict.fromkeys(k for r in rob.values() for k in r["geometry"]))
    rows = []
    for k in keys:
        row = [k]
        for r in rob.values():
            cell = r["geometry"].get(k) or {}
            row += [fmt(cell.get("accuracy"), "pct"), fmt(cell.get("flip_share"), "pct")]
        rows.append(row)
    return headers, rows


# ============================================================================ failure taxonomy


def table_taxonomy(record: dict) -> Table:
    models = record.get("models") or {}
    tax = {m: models[m]["taxonomy"] for m in model_order(record) if (models[m].get("taxonomy") or {}).get("counts")}
    if not tax:
        return ["Failure mode"], []
    modes = next(iter(tax.values()))["modes"]
    headers = ["Failure mode", *[f"{m} (of {t['errors']}" + (f", the most confident of {t['confident_errors']})"
                                                           if t.get("confident_errors", 0) > t["errors"] else ")")
                                 for m, t in tax.items()]]
    rows = []
    for mode in modes:
        row = [mode]
        for t in tax.values():
            n = t["counts"].get(mode, 0)
            row.append(f"{n} ({n / t['errors']:.0%})" if t["errors"] else "0")
        rows.append(row)
    return headers, rows


def table_taxonomy_by_class(record: dict, model: str, limit: int = 10) -> Table:
    t = ((record.get("models") or {}).get(model) or {}).get("taxonomy") or {}
    modes = t.get("modes") or []
    headers = ["True class", "Confident errors", *modes]
    rows = []
    for cls, counts in sorted((t.get("by_class") or {}).items(), key=lambda kv: -sum(kv[1].values()))[:limit]:
        rows.append([cls, str(sum(counts.values())), *[str(counts.get(m, 0)) for m in modes]])
    return headers, rows


def table_confused_pairs(record: dict, limit: int = 10) -> Table:
    """The most confused class pairs (both directions), per model."""
    models = record.get("models") or {}
    pairs = {m: models[m].get("confused_pairs") or [] for m in model_order(record)}
    headers = [h for m in pairs for h in (f"{m}: class pair", "errors")]
    rows = []
    for i in range(min(limit, max((len(p) for p in pairs.values()), default=0))):
        row = []
        for p in pairs.values():
            row += [f"{p[i][0]} vs {p[i][1]}", str(p[i][2])] if i < len(p) else [DASH, DASH]
        rows.append(row)
    return headers, rows


# ============================================================================ attention


def table_attention(record: dict) -> Table:
    """Per model, on the shared explanation set: concentration (overall, on its wrong and on its
    right predictions), faithfulness against random maps, the randomisation check."""
    models = record.get("models") or {}
    att = {m: models[m]["attention"] for m in model_order(record) if (models[m].get("attention") or {}).get("images")}
    headers = ["", *att]
    if not att:
        return headers, []
    first = next(iter(att.values()))
    shape = "x".join(str(v) for v in first.get("layer_shape") or [])
    rows = [["images (layer, method)", *[f"{a['images']} ({a.get('layer')} {shape}, {a.get('method')})" for a in att.values()]]]
    for key, label in (("cam_gini", "Gini"), ("cam_entropy", "normalised entropy"), ("cam_top10", "top-10% share")):
        rows.append([f"{label}: all / wrong / right",
                     *[" / ".join(fmt(a[g].get(key)) for g in ("all", "wrong", "right")) for a in att.values()]])
    for key, label in (("cam_deletion_gap", "deletion gap vs random (> 0 faithful)"),
                       ("cam_insertion_gap", "insertion gap vs random (> 0 faithful)"),
                       ("cam_randomisation_corr", "correlation after randomising the weights (low: sane)"),
                       ("cam_degenerate_share", "degenerate maps")):
        rows.append([label, *[fmt(a["all"].get(key), "pct" if key == "cam_degenerate_share" else "num") for a in att.values()]])
    return headers, rows


def table_attention_changes(record: dict) -> Table:
    """Candidate minus baseline on the same explanation images, with paired 95% intervals."""
    headers = ["Candidate", "Metric", "Change [95% CI]", "Interval excludes 0"]
    rows = []
    for c, cmp in (record.get("comparisons") or {}).items():
        for key, d in (cmp.get("attention_deltas") or {}).items():
            ci = d.get("ci")
            excl = "yes" if ci and (ci[0] > 0 or ci[1] < 0) else "no" if ci else DASH
            rows.append([c, key, f"{fmt_delta(d.get('delta'))} {fmt_ci(ci)}" if d.get("delta") is not None
                         else f"n/a ({d.get('not_applicable', '')})", excl])
    return headers, rows


# ============================================================================ beyond the test set


def table_ood(record: dict) -> Table:
    """Per model, scores x OOD sets: AUROC / FPR at 95% TPR of each score on each set, the sets
    grouped near (another real domain) then far (synthetic), the mean AUROC of each group, and
    the best score of each set marked; then the share predicted with >= 99% confidence."""
    from ..ood import SCORE_NAMES

    rows, names = [], []
    for m in model_order(record):
        sets = ((record["models"][m].get("ood") or {}).get("sets")) or {}
        names = sorted(sets, key=lambda n: (sets[n].get("group") != "near", n)) or names
    headers = ["Model", "Score", *[f"{n} ({sets_group(record, n)})" for n in names], "near mean AUROC",
               "far mean AUROC"]
    for m in model_order(record):
        sets = ((record["models"][m].get("ood") or {}).get("sets")) or {}
        if not sets:
            continue
        scores = [k for k in SCORE_NAMES if any(k in v["auroc"] for v in sets.values())]
        best = {n: max(scores, key=lambda k: sets[n]["auroc"].get(k, -1)) for n in names if n in sets}
        for k in scores:
            cells = []
            for n in names:
                v = sets.get(n)
                if not v or k not in v["auroc"]:
                    cells.append(DASH)
                    continue
                mark = " *" if best.get(n) == k else ""
                cells.append(f"{fmt(v['auroc'][k])} / {fmt(v['fpr95'][k], 'pct')}{mark}")
            means = [np.mean([sets[n]["auroc"][k] for n in names if n in sets and sets[n].get("group") == g
                              and k in sets[n]["auroc"]] or [np.nan]) for g in ("near", "far")]
            rows.append([m, SCORE_NAMES[k], *cells, *(fmt(float(x)) if np.isfinite(x) else DASH for x in means)])
        rows.append([m, ">= 99% confident", *[fmt(sets[n].get("confident_share"), "pct") if n in sets else DASH
                                              for n in names], DASH, DASH])
    return headers, rows


def sets_group(record: dict, name: str) -> str:
    for m in model_order(record):
        v = (((record["models"][m].get("ood") or {}).get("sets")) or {}).get(name)
        if v and v.get("group"):
            return v["group"]
    return "far"


def table_conformal(record: dict) -> Table:
    """Per model and method: coverage against the target and the floor and ceiling a sound run
    stays within, set sizes (mean, the class with the largest sets), the set size covered least
    (size-stratified coverage), the worst class, RAPS's parameters, and coverage under shift."""
    from ..conformal import ALL_METHODS

    labels = {"lac": "LAC", "aps": "APS", "aps_rand": "APS (randomised)", "raps": "RAPS"}
    headers = ["Model", "Method", "Coverage (target; floor - ceiling)", "Mean set size", "Largest mean (class)",
               "Worst set size (coverage)", "Worst class", "Under corruption (severity 3)"]
    rows = []
    for m in model_order(record):
        c = record["models"][m].get("conformal") or {}
        for method in ALL_METHODS:
            v = c.get(method)
            if not v:
                continue
            worst = min(v["per_class"].items(), key=lambda kv: kv[1]) if v.get("per_class") else None
            biggest = max(v["size_per_class"].items(), key=lambda kv: kv[1]) if v.get("size_per_class") else None
            strata = v.get("by_size") or {}
            low = min(strata.items(), key=lambda kv: kv[1]["coverage"]) if strata else None
            shift = c.get("shift") or {}
            shift_text = (f"{fmt(float(np.mean(list(shift.values()))), 'pct')} mean, "
                          f"{min(shift, key=shift.get)} {fmt(min(shift.values()), 'pct')}") if method == "lac" and shift \
                else DASH
            name = labels.get(method, method)
            if method == "raps" and v.get("lam") is not None:
                name += f" (lam {v['lam']:g}, k_reg {v['k_reg']}; tuned on {v.get('tuning_images', 0)} images)"
            floor, ceiling = v.get("floor", c.get("floor")), v.get("ceiling")
            bounds = f"{fmt(floor, 'pct')} - {fmt(ceiling, 'pct')}" if ceiling is not None else fmt(floor, "pct")
            rows.append([m, name, f"{fmt(v['coverage'], 'pct')} ({fmt(1 - c['alpha'], 'pct')}; {bounds})",
                         fmt(v["size_mean"]), f"{fmt(biggest[1])} ({biggest[0]})" if biggest else DASH,
                         f"{low[0]}: {fmt(low[1]['coverage'], 'pct')} of {low[1]['images']}" if low else DASH,
                         f"{worst[0]} {fmt(worst[1], 'pct')}" if worst else DASH, shift_text])
    return headers, rows


def table_risk_control(record: dict) -> Table:
    """Per model: the threshold that keeps the accepted predictions' error under the user's
    risk (chosen on the validation split with 99% confidence) and what it does on the test split."""
    headers = ["Model", "Risk", "Threshold", "Validation: accepted, wrong, upper bound", "Test: accepted",
               "Test: error (ceiling)"]
    rows = []
    for m in model_order(record):
        r = record["models"][m].get("risk_control") or {}
        if not r:
            continue
        rows.append([m, fmt(r["risk"], "pct"), DASH if r["threshold"] is None else f"{r['threshold']:g}",
                     f"{r['validation_accepted']}, {r['validation_errors']}, {fmt(r['validation_upper'], 'pct')}",
                     f"{r['test_accepted']} ({fmt(r['test_coverage'], 'pct')})",
                     f"{fmt(r['test_error'], 'pct')} ({fmt(r['test_ceiling'], 'pct')})"])
    return headers, rows


def table_leakage(record: dict) -> Table:
    """Near-duplicates between training and test, and each model's accuracy on them."""
    leak = record.get("leakage") or {}
    if not leak:
        return ["Model", "Accuracy on leaked test images", "On the rest"], []
    rows = [[m, fmt(a.get("leaked"), "pct"), fmt(a.get("rest"), "pct")] for m, a in (leak.get("accuracy") or {}).items()]
    return ["Model", f"Accuracy on the {leak['count']} leaked test images", "On the rest"], rows


def table_autoattack(record: dict) -> Table:
    """AutoAttack per model: robust accuracy, the attack that broke each image, and the gap to
    PGD on the same images (a large gap flags gradient masking)."""
    headers = ["Model", "Images", "AutoAttack accuracy", "PGD - AutoAttack", "Broken by APGD-CE / APGD-T / FAB-T / Square",
               "Wrong before attack"]
    rows = []
    for m in model_order(record):
        aa = ((record["models"][m].get("robustness") or {}).get("autoattack")) or {}
        if not aa:
            continue
        gap = (record["models"][m].get("metrics") or {}).get("pgd_autoattack_gap")
        rows.append([m, fmt(aa["images"], "int"), fmt(aa["accuracy"], "pct"), fmt(gap, "pct"),
                     " / ".join(str(aa["broken_by"].get(a, 0)) for a in ("apgd-ce", "apgd-t", "fab-t", "square")),
                     fmt(aa["clean_wrong"], "int")])
    return headers, rows


def table_segments(record: dict, model: str) -> Table:
    """A model's weak segments, worst first: size, accuracy with its interval against the rest,
    errors at >= 99% confidence, ECE, and Holm's adjusted p-value."""
    sg = ((record.get("models") or {}).get(model) or {}).get("segments") or {}
    headers = ["Segment", "Images", "Accuracy [95% CI]", "Rest", "Wrong >= 99% [95% CI]", "ECE [95% CI]", "Holm p"]
    rows = []
    for r in sg.get("segments") or []:
        lo, hi = r["accuracy_ci"]
        clo, chi = r["confident_error_ci"]
        ece = fmt(r["ece"], "num") + (f" [{fmt(r['ece_ci'][0], 'num')}, {fmt(r['ece_ci'][1], 'num')}]"
                                        if r.get("ece_ci") else "")
        rows.append([r["name"], fmt(r["images"], "int"), f"{fmt(r['accuracy'], 'pct')} [{fmt(lo, 'pct')}, {fmt(hi, 'pct')}]",
                     fmt(r["rest_accuracy"], "pct"),
                     f"{fmt(r['confident_error_rate'], 'pct')} [{fmt(clo, 'pct')}, {fmt(chi, 'pct')}]", ece,
                     f"{r['p_holm']:.1e}"])
    return headers, rows


def table_segment_search(record: dict) -> Table:
    """Per model: segments searched, how many are weak, the images in them, and a candidate's
    accuracy on its baseline's weakest segments against the baseline's."""
    headers = ["Model", "Segments searched", "Weak", "Images in weak segments", "Worst segment accuracy",
               "On the baseline's weakest segments (baseline)"]
    rows = []
    for m in model_order(record):
        sg = (record["models"][m].get("segments")) or {}
        if not sg or "searched" not in sg:
            continue
        worst = (sg.get("segments") or [{}])[0].get("accuracy")
        ob = sg.get("on_baseline_weak")
        rows.append([m, fmt(sg["searched"], "int"), fmt(sg["weak"], "int"), fmt(sg.get("weak_images"), "int"),
                     fmt(worst, "pct"),
                     (f"{fmt(ob['accuracy'], 'pct')} ({fmt(ob['baseline_accuracy'], 'pct')}, {ob['images']} images)"
                      if ob.get("images") else f"none: {ob['baseline']} has no weak segment") if ob else ""])
    return headers, rows


def table_property_shift(record: dict) -> Table:
    """Per image property: its KS distance from the training split, the permutation p-value
    (Holm-adjusted), and the share outside the training range, for the test split and a new batch."""
    sh = record.get("property_shift") or {}
    splits = sh.get("splits") or {}
    headers = ["Property"] + [h for name in splits for h in (f"{name}: KS distance", f"{name}: Holm p",
                                                              f"{name}: outside training range")]
    props = list(dict.fromkeys(p for rows in splits.values() for p in rows))
    rows = []
    for p in props:
        row = [p]
        for rws in splits.values():
            r = rws.get(p) or {}
            row += [fmt(r.get("distance"), "num") + (" (shifted)" if r.get("shifted") else ""),
                    fmt(r.get("p_holm"), "num"), fmt(r.get("outside_range"), "pct")]
        rows.append(row)
    return headers, rows
