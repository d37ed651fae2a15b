"""index.html: one self-contained page (no external resources) that opens with the answer.

Order: the verdict; the models side by side with the candidates' changes and intervals and
whether each improvement's documented effect held; the key figures; the failure cases; the
details; the gates last (failures open, the rest folded); the run's provenance.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

from . import findings, tables
from .format import Table, fmt

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:1280px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:1.5rem;margin:.4em 0 .2em}h2{margin-top:1.6em;border-bottom:2px solid #dde1e7;padding-bottom:.2em}
nav{position:sticky;top:0;background:#1d2330;padding:8px 24px;z-index:2}nav a{color:#e8ecf2;margin-right:16px;
text-decoration:none;font-size:.9rem}nav a:hover{text-decoration:underline}
.verdict{font-size:1.2rem;font-weight:700;padding:12px 16px;border-radius:6px;margin:10px 0}
.verdict.ok{background:#dcf5e3;color:#125c2b;border:1px solid #8fd3a3}
.verdict.bad{background:#fde2e1;color:#8a1414;border:1px solid #f0a3a0}
.verdict ul{margin:.3em 0 0;font-size:1rem;font-weight:500}
.meta{color:#5b6472}.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:8px 0 16px;background:#fff;font-size:.86rem}
th,td{border:1px solid #d5dae1;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5;position:sticky;top:0}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.pass{background:#2e9e4f;color:#fff;font-weight:700;text-align:center}
td.fail{background:#c62828;color:#fff;font-weight:700;text-align:center}
td.na{background:#8a94a3;color:#fff;font-weight:700;text-align:center}
td.yes{color:#125c2b;font-weight:600}td.no{color:#8a1414;font-weight:700}
tr.failed td{background:#fff1f0}tr.failed td.fail{background:#c62828}
.figs{display:flex;flex-wrap:wrap;gap:16px}
figure{margin:0;background:#fff;border:1px solid #d5dae1;border-radius:6px;padding:8px;flex:1 1 420px;max-width:100%}
figure.wide{flex-basis:100%}figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{font-size:.85rem;color:#3d4553;margin-top:6px}
.fig-failed{border:2px solid #c62828;background:#fff1f0;color:#8a1414;padding:14px;border-radius:6px;
flex:1 1 420px}.fig-failed pre{white-space:pre-wrap;margin:.4em 0 0}
details{margin:8px 0}summary{cursor:pointer;font-weight:600}code{background:#eef1f5;padding:1px 4px;border-radius:3px}
.problems{border:2px solid #c62828;background:#fff1f0;padding:8px 14px;border-radius:6px}
"""

LOAD_CHECK = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.dataset.figuresLoaded = ok + "/" + imgs.length;
});
</script>"""

_NUMERIC = re.compile(r"^[+\-]?[\d.,]+(e[+\-]?\d+)?(%| pp| s)?( \[.*\])?( pp)?$|^—$")
_WIDE = ("gradcam_gallery", "training_curves", "confidence_histograms", "class_delta_", "failure_modes_",
         "corruption_curves")


def html_table(table: Table, row_class: Callable[[list[str]], str] | None = None, cls: str = "") -> str:
    headers, rows = table
    e = html.escape
    out = [f'<div class="scroll"><table class="{cls}"><thead><tr>']
    out += [f"<th>{e(h)}</th>" for h in headers]
    out.append("</tr></thead><tbody>")
    for r in rows:
        rc = row_class(r) if row_class else ""
        out.append(f'<tr class="{rc}">' if rc else "<tr>")
        for c in r:
            k = {"PASS": "pass", "FAIL": "fail", "XPASS": "fail", "N/A": "na", "XFAIL": "na", "yes": "yes", "NO": "no"}.get(
                c, "num" if _NUMERIC.match(c) else "")
            out.append(f'<td class="{k}">{e(c)}</td>' if k else f"<td>{e(c)}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def html_figures(record: dict, section: str) -> str:
    e = html.escape
    out = []
    for name, f in (record.get("figures") or {}).items():
        if f.get("section") != section:
            continue
        wide = " wide" if name.startswith(_WIDE) else ""
        if f.get("ok"):
            out.append(f'<figure class="fig{wide}" id="fig-{e(name)}"><a href="{e(f["path"])}">'
                       f'<img src="{e(f["path"])}" alt="{e(name)}"></a>'
                       f"<figcaption><b>{e(name)}</b>: {e(f.get('caption') or '')}</figcaption></figure>")
        else:
            out.append(f'<div class="fig-failed" id="fig-{e(name)}" data-figure-failed="{e(name)}">'
                       f"<b>Figure {e(name)} failed to render</b><pre>{e(str(f.get('error')))}</pre>"
                       f"<small>{e(f.get('caption') or '')}</small></div>")
    return f'<div class="figs">{"".join(out)}</div>' if out else ""


def _fold(title: str, inner: str, open_: bool = False) -> str:
    return f"<details{' open' if open_ else ''}><summary>{html.escape(title)}</summary>{inner}</details>"


def render_html(record: dict, files: list[str]) -> str:
    e = html.escape
    run = record.get("run") or {}
    counts = tables.gate_counts(record)
    verdict = record.get("verdict") or {}
    ok = tables.verdict_line(record).startswith("PASS")
    fig_fail = [n for n, f in (record.get("figures") or {}).items() if not f.get("ok")]
    body: list[str] = []
    nav = [("answer", "Answer"), ("key", "Key figures"), ("failures", "Failure cases"), ("robustness", "Robustness"),
           ("beyond", "Beyond the test set"), ("details", "Details"), ("gates", "Gates"), ("run", "Run")]
    body.append("<nav>" + "".join(f'<a href="#{a}">{e(t)}</a>' for a, t in nav) + "</nav><main>")
    body.append(f"<h1>Stress run {e(str(run.get('id', '')))}</h1>")
    body.append(f'<p class="meta">{e(str(run.get("dataset", "")))} · profile {e(str(run.get("profile", "")))} · '
                f'{e(str(run.get("device_name") or run.get("device", "")))} · finished {e(str(run.get("finished_utc", "")))}'
                f" · commit <code>{e(str((run.get('git') or {}).get('commit') or 'unknown')[:12])}</code></p>")
    reasons = verdict.get("reasons") or []
    first = "PASS" if ok else "FAIL"
    summary = (f"{first}: {counts['passed']} gates passed, {counts['failed'] + counts['xpass']} failed, "
               + (f"{counts['xfail']} failed as expected, " if counts["xfail"] else "") + f"{counts['n/a']} not applicable")
    body.append(f'<div class="verdict {"ok" if ok else "bad"}" id="verdict" data-verdict="{first.lower()}">'
                f"{e(summary)}" + ("<ul>" + "".join(f"<li>{e(r)}</li>" for r in reasons) + "</ul>" if reasons else "")
                + "</div>")
    problems = (record.get("report") or {}).get("problems") or []
    if fig_fail or problems:
        items = [f"figure {e(n)}: {e(str(record['figures'][n].get('error')))}" for n in fig_fail] + [e(p) for p in problems]
        body.append('<div class="problems"><b>Report problems</b><ul>' + "".join(f"<li>{i}</li>" for i in items)
                    + "</ul></div>")

    body.append(f'<h2 id="answer">Models side by side</h2><p class="meta">{e(tables.test_split_name(record))}. '
                "Changes are candidate minus baseline on the same images, with paired bootstrap 95% intervals; "
                "pp = percentage points.</p>")
    body.append(html_table(tables.table_headline(record), cls="headline"))
    et = tables.table_effects(record)
    if et[1]:
        body.append("<h3>Did the improvement do what it is documented to do?</h3>" + html_table(et, cls="effects"))
    body.append("<h3>Checks per model</h3>" + html_table(tables.table_checks(record), cls="checks"))
    st = tables.table_seed_spread(record)
    if st[1]:
        body.append("<h3>Across training seeds</h3><p class='meta'>Each recipe trained with several seeds: the spread "
                    "between training runs, and each change paired seed by seed (t-interval across seeds) next to "
                    "the bootstrap interval over test images.</p>" + html_table(st, cls="seeds"))

    body.append('<h2 id="key">Key figures</h2>' + (html_figures(record, "key") or "<p class='meta'>No figures.</p>"))
    tt = tables.table_thresholds(record)
    if tt[1]:
        body.append("<h3>Wrong predictions by confidence threshold</h3>" + html_table(tt))

    body.append('<h2 id="failures">Failure cases</h2>')
    nt = tables.table_named_cases(record)
    if nt[1]:
        body.append(html_table(nt, cls="cases"))
    tx = findings.table_taxonomy(record)
    if tx[1]:
        body.append("<h3>Failure taxonomy</h3><p class='meta'>Each error made with >= 90% confidence gets one "
                    "dominant mode from measured signals (rules and limits: harness/taxonomy.py).</p>" + html_table(tx))
        for m in tables.model_order(record):
            bc = findings.table_taxonomy_by_class(record, m)
            if bc[1]:
                body.append(_fold(f"{m}: failure modes by true class", html_table(bc)))
    at = findings.table_attention(record)
    if at[1]:
        body.append("<h3>Attention on the shared explanation set</h3><p class='meta'>The same images for every model: "
                    "the named cases, each model's most confident errors and right predictions of the same classes; "
                    "each explained for the model's own prediction. Definitions: harness/explain/.</p>" + html_table(at))
        ac = findings.table_attention_changes(record)
        if ac[1]:
            body.append("<h4>Before and after, paired on those images</h4>" + html_table(ac))
    cases = record.get("cases") or []
    if cases:
        body.append("<p class='meta'>Per-case folders (image, meta.json, one heatmap per model): "
                    + ", ".join(f'<a href="{e(c)}/meta.json">{e(c.split("/")[-1])}</a>' for c in cases) + ".</p>")
    cp = findings.table_confused_pairs(record)
    if cp[1]:
        body.append("<h3>Most confused class pairs</h3>" + html_table(cp))
    body.append(html_figures(record, "failures") or "<p class='meta'>No Grad-CAM gallery in this run.</p>")

    body.append('<h2 id="robustness">Robustness</h2>')
    sv, ad, ge = findings.table_severity(record), findings.table_adversarial(record), findings.table_geometry(record)
    if not (sv[1] or ad[1] or ge[1]):
        body.append("<p class='meta'>No robustness test ran in this run.</p>")
    if sv[1]:
        first = next((r for r in (record.get("models") or {}).values() if (r.get("robustness") or {}).get("source")), {})
        src = (first.get("robustness") or {})
        body.append(f"<h3>Common corruptions</h3><p class='meta'>{e(str(src.get('images', '')))} test images; corruptions "
                    f"{e(str(src.get('source', '')))}. Mean over every corruption at each severity.</p>" + html_table(sv))
        for m in tables.model_order(record):
            ct = findings.table_corruptions(record, m)
            if ct[1]:
                body.append(_fold(f"{m}: accuracy per corruption and severity", html_table(ct)))
    if ad[1]:
        body.append("<h3>Adversarial attacks</h3>" + html_table(ad))
    aa = findings.table_autoattack(record)
    if aa[1]:
        body.append("<h3>AutoAttack (the reference)</h3><p class='meta'>torchattacks' standard AutoAttack at the "
                    "reference budget; a large PGD - AutoAttack gap means PGD overestimated the robustness "
                    "(gradient masking).</p>" + html_table(aa))
    if ge[1]:
        body.append("<h3>Occlusion, scale, position, flips</h3><p class='meta'>changed: the share of predictions "
                    "that differ from the unstressed prediction.</p>" + html_table(ge))
    body.append(html_figures(record, "robustness"))

    oo, cf, lk = findings.table_ood(record), findings.table_conformal(record), findings.table_leakage(record)
    if oo[1] or cf[1] or record.get("leakage"):
        body.append('<h2 id="beyond">Beyond the test set</h2>')
    if oo[1]:
        body.append("<h3>Out-of-distribution inputs</h3><p class='meta'>Test images are the positives; each cell is "
                    "AUROC / FPR@95 (AUROC 1 separates every OOD image, 0.5 none; FPR@95: the share of the OOD set "
                    "above the score that keeps 95% of the test images); * marks the best score of each set. Near: "
                    "another real domain; far: synthetic. Scores from the logits (harness/ood.py) and from the "
                    "penultimate features (harness/ood_features.py, pytorch-ood).</p>" + html_table(oo))
    leak = record.get("leakage") or {}
    if leak:
        body.append(f"<h3>Train/test leakage</h3><p class='meta'>{e(str(leak['count']))} test images ({fmt(leak['share'], 'pct')}) "
                    f"have a near-duplicate in the training split (cosine of mean-centred pixels >= {e(str(leak['threshold']))}; "
                    f"{e(str(leak['exact']))} exact copies): harness/leakage.py says how the threshold was chosen.</p>"
                    + (html_table(lk) if lk[1] else ""))
    if cf[1]:
        body.append("<h3>Conformal prediction sets</h3><p class='meta'>Calibrated on the validation split; the floor "
                    "and ceiling are the least and most coverage a sound run reaches (1 in 10,000 each) for this many "
                    "images (the ceiling holds for continuous scores); the worst set size is the stratum of set sizes "
                    "covered least, where a method fails.</p>" + html_table(cf))
    rc = findings.table_risk_control(record)
    if rc[1]:
        body.append("<h3>Selective prediction at your risk</h3><p class='meta'>The lowest confidence threshold whose "
                    "accepted validation predictions are wrong at most the risk (--selective-risk) of the time, with "
                    "99% confidence (exact binomial tests over a fixed grid, Bonferroni: harness/risk_control.py), "
                    "and what it accepts on the test split; the ceiling is the error a sound run stays under.</p>"
                    + html_table(rc))
    body.append(html_figures(record, "beyond"))

    ss, ps = findings.table_segment_search(record), findings.table_property_shift(record)
    if ss[1] or ps[1]:
        body.append('<h2 id="segments">Weak segments</h2>')
    if ss[1]:
        first = next((r["segments"] for r in (record.get("models") or {}).values() if (r.get("segments") or {}).get("searched")), {})
        body.append(f"<p class='meta'>Segments: each image property cut into quintiles of the test split, each value of "
                    f"your metadata, and every pair of them, of at least {e(str(first.get('min_size', '')))} images. A segment "
                    f"is weak when it holds more errors than chance would put there (Fisher's exact test against the "
                    f"rest), Holm-corrected over every segment searched at {e(str(first.get('alpha', '')))}: what is listed "
                    "holds, not the noise of a search. Definitions: harness/segments.py.</p>" + html_table(ss))
        for m in tables.model_order(record):
            st = findings.table_segments(record, m)
            if st[1]:
                body.append(_fold(f"{m}: its weak segments, worst first ({len(st[1])} shown)", html_table(st)))
    if ps[1]:
        sh = record.get("property_shift") or {}
        body.append(f"<h3>Image properties: shift from the training split</h3><p class='meta'>Kolmogorov-Smirnov "
                    f"distance between {e(str(sh.get('images', '')))} training images and as many of each other split; "
                    f"p-values from {e(str(sh.get('permutations', '')))} relabellings, Holm-adjusted over the properties; "
                    f"shifted at {e(str(sh.get('alpha', '')))} (under no shift, any property is flagged at most that often). "
                    "Outside: the share below the training's 0.5% or above its 99.5% quantile.</p>" + html_table(ps))
    body.append(html_figures(record, "segments"))

    body.append('<h2 id="details">Details</h2>')
    body.append("<h3>All metrics (test split)</h3>" + html_table(tables.table_metrics(record), cls="metrics"))
    ct = tables.table_comparisons(record)
    if ct[1]:
        body.append("<h3>Paired comparison with the baseline</h3><p class='meta'>McNemar's exact test for accuracy; "
                    "paired bootstrap 95% intervals for the rest.</p>" + html_table(ct))
        mt = tables.table_metric_deltas(record)
        if mt[1]:
            body.append(_fold(f"Every metric change with its interval ({len(mt[1])})", html_table(mt)))
    headers, rows, k = tables.per_class_rows(record)
    if rows:
        shown = rows[: tables.PER_CLASS_SHOWN]
        note = (f"The worst {len(shown)} of {k} classes by the baseline's accuracy; all of them in "
                '<a href="per_class.csv">per_class.csv</a>.' if k > len(shown) else
                "Sorted by the baseline's accuracy, worst first.")
        body.append(f"<h3>Per-class accuracy</h3><p class='meta'>{note}</p>" + html_table((headers, shown)))
    for sec in ("classes", "training", "selective"):
        figs = html_figures(record, sec)
        if sec == "training":
            tr = tables.table_training(record)
            figs = (html_table(tr) if tr[1] else "") + figs
        if figs:
            body.append(f"<h3>{e(sec.capitalize() if sec != 'classes' else 'Per-class figures')}</h3>{figs}")

    body.append('<h2 id="gates">Gates</h2>')
    failed = tables.table_gates(record, ("failed", "xpass"))
    expected = tables.table_gates(record, "xfail")
    na = tables.table_gates(record, "n/a")
    passed = tables.table_gates(record, "passed")
    if not (failed[1] or expected[1] or na[1] or passed[1]):
        body.append("<p>No gates were checked in this run.</p>")
    if failed[1]:
        body.append(f"<h3>Failed ({len(failed[1])})</h3>" + html_table(failed, lambda r: "failed", "gates"))
    if expected[1]:
        body.append(_fold(f"Failed as gates.toml expects ({len(expected[1])})", html_table(expected, cls="gates"), True))
    if na[1]:
        body.append(_fold(f"Not applicable ({len(na[1])})", html_table(na, cls="gates")))
    if passed[1]:
        body.append(_fold(f"Passed ({len(passed[1])})", html_table(passed, cls="gates")))

    body.append('<h2 id="run">Run</h2>' + html_table(tables.table_metadata(record)))
    body.append(_fold("Recipes (* = differs between models)", html_table(tables.table_recipes(record))))
    body.append(_fold(f"Files ({len(files)})", "<ul>" + "".join(f'<li><a href="{e(f)}">{e(f)}</a></li>' for f in files)
                      + "</ul>"))
    body.append(f"<p class='meta'>Report written {e((record.get('report') or {}).get('written_utc', ''))}. "
                "Rebuild with <code>python -m harness report RUN_DIR</code>.</p></main>")
    title = f"{'PASS' if ok else 'FAIL'} {run.get('dataset', '')} {run.get('profile', '')}: {counts['failed']} failed gates"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{e(title)}</title><style>{CSS}</style></head>\n<body>\n" + "\n".join(body)
            + f"\n{LOAD_CHECK}\n</body></html>\n")


def fallback_html(record: dict, error: str) -> str:
    c = tables.gate_counts(record)
    e = html.escape
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>report failed</title></head><body>'
            f"<h1>Report page failed to render</h1><p>{e(tables.verdict_line(record))}. {c['passed']} gates passed, "
            f"{c['failed']} failed.</p><pre>{e(error)}</pre><p>See <a href=\"results.json\">results.json</a> and "
            f'<a href="summary.md">summary.md</a>.</p>{LOAD_CHECK}</body></html>')
