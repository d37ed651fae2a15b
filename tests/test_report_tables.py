"""The report's tables and lines that depend on what a run measured: folded lists of per-label
metrics, a run on part of the test split, the severities a run corrupted at (the synthetic runs
of test_report.py)."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
from test_report import EXPECTED_FIGURES, make_run

from harness import io as hio
from harness import report
from harness.report import figures


def test_a_long_list_of_per_label_metrics_is_folded():
    from harness.report.format import metric_list

    names = ["loss", *[f"class_accuracy[c{i:02d}]" for i in range(100)], "ece", "ood_fpr95[uniform]"]
    assert metric_list(names) == "loss, class_accuracy (100 labels: c00, c01, c02, ...), ece, ood_fpr95[uniform]"
    assert metric_list(["class_accuracy[Shirt]", "worst_class_accuracy"]) == "class_accuracy[Shirt], worst_class_accuracy"
    assert metric_list([]) == ""


def test_a_run_on_the_first_images_of_the_test_split_says_so_above_its_numbers():
    """A costly model at smoke on a CPU is evaluated on the first images of the test split
    (cards.split_sizes): the headline table names them, in the summary and the page, and the Run
    section says what was kept."""
    from harness.report import html, markdown, tables

    record, _ = make_run(n=200, seed=1)
    assert tables.test_split_name(record) == "Test split"
    subset = "validation: 2,000 of 5,000 images; test: the first 2,000 of 10,000 (smoke profile on a CPU)"
    record["run"]["data"] = {"source": "x", "fingerprint": "f", "train": 45_000, "val": 2_000, "test": 2_000,
                             "subset": subset}
    note = "The first 2,000 images of the test split (a subset: see the Run section)"
    assert note + "; changes are candidate minus baseline" in markdown.summary_markdown(record)
    assert dict(tables.table_metadata(record)[1])["Data"].endswith("; evaluated on " + subset)
    assert f'<p class="meta">{note}. Changes are' in html.render_html(record, [])


def test_severity_tables_and_curves_are_labelled_with_the_severities_run():
    """A costly model on a CPU is corrupted at severities 1, 3 and 5: the report's tables, the
    curves' caption and the Run section name those, not positions 1-3."""
    from harness.report import findings, tables
    from harness.report.plan import figure_plan

    record, arrays = make_run(n=200, seed=2)
    cell = {"accuracy": 0.5, "ece": 0.1, "confident_error_rate": 0.05, "loss": 1.0}
    for m in record["models"]:
        record["models"][m]["robustness"] = {
            "images": 45, "clean": cell, "severities": [1, 3, 5], "by_severity": [cell, cell, cell],
            "corruptions": {"fog": [cell, cell, cell], "contrast": [cell, cell, cell]}}
    rows = findings.table_severity(record)[1]
    assert [r[0] for r in rows] == ["clean", "1", "3", "5"]
    assert findings.table_corruptions(record, "baseline")[0] == ["Corruption", "severity 1", "severity 3", "severity 5",
                                                                "mean"]
    from harness.report.io import ModelData

    data = {m: ModelData(np.asarray(a["logits"], np.float32), np.asarray(a["labels"]), np.asarray(a["ids"]))
            for m, a in arrays.items() if isinstance(a, dict) and "logits" in a}
    spec = next(s for s in figure_plan(record, data, None) if s.name == "corruption_curves")
    assert spec.caption.startswith("Accuracy against severity (1, 3, 5) for every corruption")
    fig = spec.make()()
    assert [list(ax.get_xticks()) for ax in fig.axes if ax.get_visible()][0] == [1, 3, 5]
    assert [list(ax.lines[0].get_xdata()) for ax in fig.axes if ax.get_visible() and ax.lines][0] == [1, 3, 5]
    line = tables.measured_on_line({"stress_samples": 45, "attack_samples": 22, "ood_images": 45, "cam_samples": 8,
                                    "taxonomy_errors": 22, "severities": [1, 3, 5]}, "cpu")
    assert line.startswith("45 test images stressed (corruptions at severities 1, 3, 5), the first 22 attacked")
    del record["models"]["baseline"]["robustness"]["severities"]  # a record written before severities were listed
    assert [r[0] for r in findings.table_severity(record)[1]] == ["clean", "1", "3", "5"]  # the other model says


# ----------------------------------------------------------------------------- failures


def test_a_failing_figure_is_recorded_and_the_rest_still_written(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("boom for test")

    monkeypatch.setattr(figures, "confusion_matrix", boom)
    record, arrays = make_run(n=600, seed=5)
    out = report.write_run(record, tmp_path, arrays)
    failed = {n for n, f in out["figures"].items() if not f["ok"]}
    assert failed == {"confusion_baseline", "confusion_augment"}
    for n in failed:
        assert out["figures"][n]["error"] == "RuntimeError: boom for test"
        assert not (tmp_path / out["figures"][n]["path"]).exists()
    for n in EXPECTED_FIGURES - failed:
        assert out["figures"][n]["ok"] and (tmp_path / out["figures"][n]["path"]).is_file(), n
    page = (tmp_path / "index.html").read_text()
    assert page.count('data-figure-failed="') == 2 and "RuntimeError: boom for test" in page
    assert len(re.findall(r"<img ", page)) == len(EXPECTED_FIGURES) - 2
    assert "confusion_baseline FAILED" in (tmp_path / "summary.md").read_text()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["figures"]["confusion_augment"]["ok"] is False


def test_atomic_write_leaves_old_file_and_no_temp_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    hio.atomic_write_text(target, "old")

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        hio.atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
