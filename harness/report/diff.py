"""What changed between two runs: metrics per model, gates that flipped, recipes
(``python -m harness compare RUN_A RUN_B``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from tabulate import tabulate

from .format import DASH, fmt, fmt_delta, fmt_value, is_num, metric_kind
from .io import load_results, model_order
from .tables import _STATUS, bound_text, gate_counts, gate_status

COMPARED_METRICS = ("accuracy", "loss", "ece", "ece_over", "ece_under", "confident_errors_90", "confident_errors_99",
                    "worst_class_accuracy", "balanced_accuracy", "aurc", "generalisation_gap")


def _gate_key(g: Mapping) -> tuple:
    return (g.get("test"), g.get("model"), g.get("metric"), g.get("label"))


def _gate_outcome(g: Mapping | None) -> str:
    if g is None:
        return "absent"
    st = _STATUS.get(gate_status(g), gate_status(g).upper())
    return f"{st} ({g.get('metric')}={fmt_value(g.get('value'))}, {bound_text(g)})"


def compare_runs(run_a: str | Path, run_b: str | Path) -> str:
    """What changed from run A to run B: metrics per model, gates that flipped, recipes."""
    a, dir_a = load_results(run_a)
    b, dir_b = load_results(run_b)
    ra, rb = a["run"], b["run"]
    for field in ("dataset", "gate_profile"):
        if ra.get(field) != rb.get(field):
            raise ValueError(f"A and B are runs of different {field.replace('gate_', '')}s (A: {ra.get(field)}, B: "
                             f"{rb.get(field)}): their metrics and gates are not comparable; compare runs of one "
                             "dataset and profile")
    if (a.get("classes") or None) != (b.get("classes") or None):
        raise ValueError(f"A and B have different classes (A: {', '.join(map(str, a.get('classes') or []))}; B: "
                         f"{', '.join(map(str, b.get('classes') or []))}): the same name holds different data, so their "
                         "metrics are not comparable")
    fa, fb = (ra.get("data") or {}).get("fingerprint"), (rb.get("data") or {}).get("fingerprint")
    out = []
    if fa != fb:
        out.append(f"WARNING: A and B were measured on different data (fingerprints {fa} and {fb}): a change below "
                   "may be the data's, not the models'")
    if (ra.get("regime") or {}) != (rb.get("regime") or {}):
        from ..regime import describe

        out.append(f"WARNING: A and B computed in different regimes (A: {describe(ra.get('regime') or {})}; B: "
                   f"{describe(rb.get('regime') or {})}): their numbers differ as another seed's would")
    for tag, r, d in (("A", ra, dir_a), ("B", rb, dir_b)):
        if r.get("complete") is False or str(d.name).endswith("-incomplete"):
            out.append(f"WARNING: {tag} is an incomplete run (interrupted): it holds only what was measured before "
                       "it stopped")
    out += [f"A: {ra.get('id', '?')}  ({dir_a})", f"B: {rb.get('id', '?')}  ({dir_b})", ""]
    ma, mb = a.get("models") or {}, b.get("models") or {}
    names = list(dict.fromkeys([*model_order(a), *model_order(b)]))
    rows = []
    for m in names:
        xa, xb = (ma.get(m) or {}).get("metrics") or {}, (mb.get(m) or {}).get("metrics") or {}
        for key in COMPARED_METRICS:
            va, vb = xa.get(key), xb.get(key)
            if va is None and vb is None:
                continue
            kind = metric_kind(b if key in (b.get("metric_info") or {}) else a, key)
            changed = _changed(va, vb)
            delta = fmt_delta(float(vb) - float(va), kind) if is_num(va) and is_num(vb) else DASH
            rows.append([m if m in ma else f"{m} (B only)" if m in mb else m, key, fmt(va, kind), fmt(vb, kind),
                         delta, "*" if changed else ""])
    out.append("Metrics (test split; * = changed)")
    out.append(tabulate(rows, headers=["Model", "Metric", "A", "B", "B - A", ""], tablefmt="github",
                        disable_numparse=True) if rows else "(no model metrics in either run)")
    out.append("")
    ga = {_gate_key(g): g for g in a.get("gates") or []}
    gb = {_gate_key(g): g for g in b.get("gates") or []}
    flips = []
    for k in dict.fromkeys([*ga, *gb]):
        pa, pb = ga.get(k), gb.get(k)
        oa = None if pa is None else gate_status(pa)
        ob = None if pb is None else gate_status(pb)
        if oa != ob:
            flips.append([str(k[0]), str(k[1] or DASH), str(k[2]) + (f"[{k[3]}]" if k[3] else ""), _gate_outcome(pa),
                          _gate_outcome(pb)])
    ca, cb = gate_counts(a), gate_counts(b)
    out.append(f"Gates: A {ca['passed']} passed, {ca['failed']} failed; B {cb['passed']} passed, {cb['failed']} failed")
    out.append(tabulate(flips, headers=["Test", "Model", "Metric", "A", "B"], tablefmt="github", disable_numparse=True)
               if flips else "No gate changed outcome.")
    out.append("")
    rec = []
    for m in names:
        ea, eb = ma.get(m) or {}, mb.get(m) or {}
        ha, hb = ea.get("recipe_hash"), eb.get("recipe_hash")
        if ha != hb:
            ra, rb = ea.get("recipe") or {}, eb.get("recipe") or {}
            diff = [f"{f}: {ra.get(f, DASH)} -> {rb.get(f, DASH)}" for f in dict.fromkeys([*ra, *rb])
                    if ra.get(f) != rb.get(f)]
            rec.append([m, ha or DASH, hb or DASH, "; ".join(diff) or DASH])
    out.append(tabulate(rec, headers=["Model", "A recipe hash", "B recipe hash", "Changed fields"], tablefmt="github",
                        disable_numparse=True) if rec else "No recipe hash changed.")
    ta, tb = a.get("tests") or {}, b.get("tests") or {}
    if ta or tb:
        out.append("")
        out.append("Tests: " + ", ".join(f"{k} {ta.get(k, DASH)} -> {tb.get(k, DASH)}" for k in dict.fromkeys([*ta, *tb])))
    return "\n".join(out)


def _changed(va, vb) -> bool:
    if is_num(va) and is_num(vb):
        return float(va) != float(vb)
    return (va is None) != (vb is None)
