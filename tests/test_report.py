"""harness.report and harness.figures on synthetic runs: files, numbers, figures, rebuild,
failure handling, compare, atomic writes, and the page in a headless browser."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shutil
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from harness import compare, metrics, report
from harness.evaluate import softmax
from harness.metrics import Samples
from harness.run import metric_info

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
EXPECTED_FIGURES = {
    "training_curves", "confident_errors", "confidence_histograms", "reliability_baseline", "reliability_augment",
    "risk_coverage", "class_delta_augment", "confusion_baseline", "confusion_augment", "gradcam_gallery",
}


# ----------------------------------------------------------------------------- synthetic runs


def _logits(rng, labels, k, skill, scale):
    """Plausible logits: the true class boosted by ``skill``; ``scale`` sets the over-confidence."""
    z = rng.normal(0.0, 1.0, (len(labels), k))
    z[np.arange(len(labels)), labels] += skill
    return (z * scale).astype(np.float32)


def _history(epochs, final_train, final_val):
    return [
        {"epoch": e, "train_loss": 1.6 / e, "train_accuracy": final_train * (1 - 0.3 / e),
         "val_loss": 1.2 / e + 0.05 * e, "val_accuracy": final_val * (1 - 0.2 / e), "lr": 1e-3, "seconds": 2.0,
         "steps": 100}
        for e in range(1, epochs + 1)
    ]


def make_run(n=2000, k=10, seed=0, candidate_scale=1.4, gradcam=True, classes=None, lr_candidate=1e-3,
             channels=1, size=28, cam_size=None):
    """(record, arrays) the way the plugin hands them to write_run: two models on the same
    images, every number computed by the harness's own registry and comparison code."""
    rng = np.random.default_rng(seed)
    classes = classes or (CLASSES if k == 10 else [f"class_{i:03d}" for i in range(k)])
    labels = rng.integers(0, k, n).astype(np.int64)
    ids = rng.permutation(10_000)[:n].astype(np.int64)
    arrays = {
        "baseline": {"logits": _logits(rng, labels, k, 2.4, 3.0), "labels": labels, "ids": ids},
        "augment": {"logits": _logits(rng, labels, k, 2.9, candidate_scale), "labels": labels, "ids": ids},
    }
    samples = {m: Samples.from_logits(a["logits"], labels, ids) for m, a in arrays.items()}
    models = {}
    for name, smp in samples.items():
        m = metrics.measure_all(smp)
        m["generalisation_gap"] = 0.05 if name == "baseline" else 0.01
        models[name] = {
            "recipe": {"name": name, "dataset": "fashion-mnist", "arch": "small-cnn", "optimizer": "adam",
                       "lr": 1e-3 if name == "baseline" else lr_candidate, "batch_size": 64, "epochs": 3,
                       "hflip": 0.0 if name == "baseline" else 0.5, "rotation": 0.0 if name == "baseline" else 10.0,
                       "milestones": []},
            "recipe_hash": ("a" * 16) if name == "baseline" else (("b" * 16) if lr_candidate == 1e-3 else "c" * 16),
            "cache_key": f"key-{name}", "cached": name == "baseline", "train_seconds": 12.5, "load_seconds": 0.1,
            "train_size": 20000, "best_epoch": 3, "temperature": None,
            "history": _history(3, 0.95, 0.9 if name == "baseline" else 0.92),
            "metrics": m,
            "not_applicable": {},
            "per_class_accuracy": metrics.class_recall(smp).tolist(),
            "class_counts": metrics.class_counts(smp)[0].astype(int).tolist(),
            "confident_errors_by_threshold": {f"{t:g}": metrics.confident_errors_at(smp, t)
                                              for t in metrics.CONFIDENCE_THRESHOLDS},
            "checks": {"passed": 1 if name == "baseline" else 1, "failed": 1 if name == "baseline" else 0, "n/a": 0,
                       "unbounded": ["macro_f1"]},
        }
    cmp = compare.compare(samples["baseline"], samples["augment"], n_boot=200)
    cmp.update({"against": "baseline", "expected_effect": "lower test loss (seed 000: loss 0.3203 -> 0.2168)",
                "effect_held": True,
                "effect_checks": [{"metric": "loss", "expect": "improves", "held": True,
                                   **{k_: cmp["metric_deltas"]["loss"][k_] for k_ in ("delta", "ci")}}]})
    pb, pa = softmax(arrays["baseline"]["logits"]), softmax(arrays["augment"]["logits"])
    case_idx = np.flatnonzero(pb.argmax(1) != labels)[:3]
    named = [
        {"id": int(ids[i]), "label": classes[labels[i]],
         "models": {m: {"pred": classes[int(p[i].argmax())], "confidence": float(p[i].max()),
                        "correct": bool(p[i].argmax() == labels[i])} for m, p in (("baseline", pb), ("augment", pa))}}
        for i in case_idx
    ]
    record = {
        "schema_version": 2,
        "run": {"id": f"20261122T051500Z_fashion-mnist_smoke_{seed}", "started_utc": "2026-11-22T05:15:00Z",
                "finished_utc": "2026-11-22T05:17:00Z", "dataset": "fashion-mnist", "profile": "smoke",
                "device": "cpu", "device_name": "cpu (2 threads)", "command": "pytest stress_tests --dataset fashion-mnist",
                "git": {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False},
                "versions": {"python": "3.11.7", "torch": "2.14.1", "numpy": np.__version__},
                "seeds": {"split": 42, "recipes": {"baseline": 42, "augment": 42}}, "exit_status": 1},
        "classes": classes,
        "baseline": "baseline",
        "models": models,
        "comparisons": {"augment": cmp},
        "verdict": {"status": "fail", "reasons": ["baseline: 1 gate(s) failed (ece)"], "gates_checked": 3,
                    "gates_passed": 2},
        "metric_info": metric_info(),
        "named_cases": named,
        "gates": [
            {"test": "stress_tests/test_accuracy.py::test_accuracy[fashion-mnist-baseline]", "model": "baseline",
             "metric": "accuracy", "value": models["baseline"]["metrics"]["accuracy"], "bound": 0.5, "kind": "min",
             "source": "gates.toml [fashion-mnist.smoke.baseline]", "status": "passed", "passed": True, "message": "ok"},
            {"test": "stress_tests/test_calibration.py::test_ece[fashion-mnist-baseline]", "model": "baseline",
             "metric": "ece", "value": models["baseline"]["metrics"]["ece"], "bound": 0.01, "kind": "max",
             "source": "gates.toml [fashion-mnist.smoke.baseline]", "status": "failed", "passed": False,
             "message": "ece too high"},
            {"test": "stress_tests/test_calibration.py::test_ece[fashion-mnist-augment]", "model": "augment",
             "metric": "ece", "value": models["augment"]["metrics"]["ece"], "bound": 0.5, "kind": "max",
             "source": "gates.toml [fashion-mnist.smoke.augment]", "status": "passed", "passed": True, "message": "ok"},
        ],
        "tests": {"passed": 40, "failed": 1, "skipped": 2, "error": 0},
        "timings": {"total_seconds": 120.0},
    }
    if gradcam:
        g = np.random.default_rng(seed + 1)
        m_ = 4
        yy, xx = np.mgrid[0:size, 0:size]
        phase = np.arange(m_)[:, None, None, None] + np.arange(channels)[None, :, None, None]
        images = np.clip(0.5 + 0.4 * np.sin(xx[None, None] / 3.0 + phase), 0, 1)
        cs = cam_size or size
        cy, cx = np.mgrid[0:cs, 0:cs] * (28 / cs)
        cams = {mm: np.exp(-((cy - 8 - 4 * j) ** 2 + (cx - 14) ** 2) / 40.0)[None].repeat(m_, 0) for j, mm in enumerate(arrays)}
        arrays["gradcam"] = {
            "images": images.astype(np.float32), "ids": ids[case_idx[:1]].repeat(m_) + np.arange(m_),
            "labels": g.integers(0, k, m_).astype(np.int64),
            "cams": {mm: c.astype(np.float32) for mm, c in cams.items()},
            "preds": {mm: g.integers(0, k, m_).astype(np.int64) for mm in cams},
            "confidences": {mm: g.uniform(0.3, 1.0, m_).astype(np.float32) for mm in cams},
        }
    return record, arrays


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def stray_files(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    record, arrays = make_run()
    run_dir = tmp_path_factory.mktemp("reports") / record["run"]["id"]
    t0 = time.perf_counter()
    out = report.write_run(copy.deepcopy(record), run_dir, arrays)
    return {"record": record, "arrays": arrays, "dir": run_dir, "out": out, "seconds": time.perf_counter() - t0}


def reference_ece(conf, hit, bins=15):
    """A plain loop over netcal's bins, independent of harness.metrics."""
    from netcal.metrics import ECE

    return float(ECE(bins=bins, detection=True).measure(conf, hit.astype(np.float64)))


# ----------------------------------------------------------------------------- write_run


def test_every_listed_file_exists_and_no_temp_files(run):
    d, out = run["dir"], run["out"]
    for f in ("results.json", "summary.md", "index.html", "per_class.csv", "gradcam.npz", "predictions/baseline.npz",
              "predictions/baseline.csv", "predictions/augment.npz", "predictions/augment.csv"):
        assert (d / f).is_file(), f
    assert set(out["figures"]) == EXPECTED_FIGURES
    for name, f in out["figures"].items():
        assert f["ok"], (name, f["error"])
        assert f["error"] is None and f["caption"]
        assert f["path"] == f"figures/{name}.png"
        w, h = png_size(d / f["path"])
        assert w >= 300 and h >= 300, (name, w, h)
    listed = set(out["report"]["files"])
    assert listed == {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()}
    assert out["report"]["problems"] == []
    assert stray_files(d) == []
    # one folder per failure case: the image, its metadata, one heatmap per model
    g = run["arrays"]["gradcam"]
    assert out["cases"] == [f"cases/{int(i):05d}" for i in g["ids"]]
    for r, case in enumerate(out["cases"]):
        meta = json.loads((d / case / "meta.json").read_text())
        assert meta["id"] == int(g["ids"][r]) and meta["true_class"] == CLASSES[int(g["labels"][r])]
        for m in ("baseline", "augment"):
            assert meta["models"][m]["prediction"] == CLASSES[int(g["preds"][m][r])]
            assert meta["models"][m]["confidence"] == pytest.approx(float(g["confidences"][m][r]))
            assert png_size(d / case / meta["models"][m]["heatmap"]) == (224, 224)
        assert png_size(d / case / "image.png") == (224, 224)


def test_results_json_agrees_with_an_independent_recomputation_from_the_saved_predictions(run):
    from scipy.special import log_softmax

    d = run["dir"]
    saved = json.loads((d / "results.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert saved == json.loads(json.dumps(run["out"]))  # write_run returns what it wrote
    assert saved["gates"] == run["record"]["gates"] and saved["run"] == run["record"]["run"]
    for name, arr in ((m, a) for m, a in run["arrays"].items() if m != "gradcam"):
        entry = saved["models"][name]
        assert entry["predictions"] == f"predictions/{name}.npz"
        with np.load(d / entry["predictions"]) as z:
            np.testing.assert_array_equal(z["ids"], arr["ids"])
            np.testing.assert_array_equal(z["labels"], arr["labels"])
            np.testing.assert_array_equal(z["logits"], arr["logits"])
            logp = log_softmax(z["logits"].astype(np.float64), axis=1)
            labels = z["labels"]
        pred, conf = logp.argmax(1), np.exp(logp.max(1))
        hit = pred == labels
        m = entry["metrics"]
        assert m["accuracy"] == pytest.approx(hit.mean(), abs=1e-12)
        assert m["loss"] == pytest.approx(-logp[np.arange(len(labels)), labels].mean(), rel=1e-9)
        assert m["ece"] == pytest.approx(reference_ece(conf, hit), abs=1e-6)
        assert m["confident_errors_99"] == int((~hit & (conf >= 0.99)).sum())
        assert m["confident_errors_90"] == int((~hit & (conf >= 0.90)).sum())
        recall = [hit[labels == c].mean() for c in range(10)]
        np.testing.assert_allclose(entry["per_class_accuracy"], recall)
        assert m["worst_class_accuracy"] == pytest.approx(min(recall))
        rows = (d / entry["predictions_csv"]).read_text().splitlines()
        assert rows[0] == "id,label,label_name,pred,pred_name,confidence,correct"
        body = [r.split(",") for r in rows[1:]]
        assert [int(r[0]) for r in body] == arr["ids"].tolist()
        assert [int(r[3]) for r in body] == pred.tolist()
        np.testing.assert_allclose([float(r[-2]) for r in body], conf, atol=1e-6)
    with np.load(d / "gradcam.npz") as z:
        g = run["arrays"]["gradcam"]
        np.testing.assert_array_equal(z["images"], g["images"])
        assert [str(m) for m in z["models"]] == list(g["cams"])


def test_summary_md_opens_with_the_verdict_and_the_comparison_and_ends_with_the_gates(run):
    text = (run["dir"] / "summary.md").read_text()
    rec = run["record"]
    lines = text.splitlines()
    assert lines[2] == "**FAIL: baseline: 1 gate(s) failed (ece)**"
    sections = [ln for ln in lines if ln.startswith("## ")]
    assert sections[0] == "## Models side by side" and sections.index("## Gates") > sections.index("## Per-class accuracy")
    head = text.split("## Models side by side")[1].split("## ")[0]
    for m in ("baseline", "augment"):
        assert f"{rec['models'][m]['metrics']['accuracy'] * 100:.2f}%" in head
        assert f"{rec['models'][m]['metrics']['ece']:.4f}" in head
    acc = rec["comparisons"]["augment"]["metric_deltas"]["accuracy"]
    assert f"{acc['delta'] * 100:+.2f} [{acc['ci'][0] * 100:+.2f}, {acc['ci'][1] * 100:+.2f}] pp" in head
    effects = text.split("## Did the improvement do what it is documented to do?")[1].split("## ")[0]
    assert "| augment " in effects and "| yes " in effects and "loss " in effects
    fail_row = next(ln for ln in text.splitlines() if ln.startswith("| FAIL "))
    assert "test_ece[fashion-mnist-baseline]" in fail_row and "<= 0.01" in fail_row and "ece too high" in fail_row
    per_class = text.split("## Per-class accuracy")[1].split("##")[0]
    assert all(c in per_class for c in CLASSES)
    # sorted worst first by the baseline's accuracy
    pca = rec["models"]["baseline"]["per_class_accuracy"]
    first_row = next(ln for ln in per_class.splitlines() if ln.startswith("| ") and "Class" not in ln)
    assert first_row.startswith(f"| {CLASSES[int(np.argmin(pca))]} ")
    for case in rec["named_cases"]:
        assert f"| {case['id']} " in text
    n99 = rec["models"]["baseline"]["confident_errors_by_threshold"]["0.99"]
    assert re.search(rf"^\| 99%\s+\| {n99}\s+\|", text, re.M)


def test_index_html_opens_with_the_answer_and_folds_the_passed_gates(run):
    page = (run["dir"] / "index.html").read_text()
    body = page.split("<body>")[1]
    order = [body.index(marker) for marker in ('id="verdict"', 'id="answer"', 'id="key"', 'id="failures"',
                                                'id="details"', 'id="gates"', 'id="run"')]
    assert order == sorted(order)
    assert 'data-verdict="fail"' in page and "baseline: 1 gate(s) failed (ece)" in page
    gates = body.split('id="gates"')[1].split('id="run"')[0]
    assert "<h3>Failed (1)</h3>" in gates and gates.count('<td class="fail">FAIL</td>') == 1
    assert "<details><summary>Passed (2)</summary>" in gates and gates.count('<td class="pass">PASS</td>') == 2
    assert "0123456789ab" in page and "2.14.1" in page and "a" * 16 in page and "b" * 16 in page
    imgs = re.findall(r'<img src="([^"]+)"', page)
    assert sorted(imgs) == sorted(f"figures/{n}.png" for n in EXPECTED_FIGURES)
    assert "data-figures-loaded" not in page and "figuresLoaded" in page  # set by the script at load
    assert not re.search(r'(src|href)="(https?:)?//', page) and "<link" not in page
    assert "fig-failed" not in page.split("</style>")[1]


def test_figure_cache_draws_each_figure_once_and_again_when_its_data_change(tmp_path):
    """A rerun copies every figure from the cache, byte for byte; a figure whose data changed
    (one model's predictions) is drawn again, the others are still copied."""
    record, arrays = make_run(n=2_000, seed=3)
    cache = tmp_path / "figures"
    first = report.write_run(copy.deepcopy(record), tmp_path / "a", arrays, figure_cache=cache)
    assert all(f["ok"] and not f["cached"] for f in first["figures"].values())
    assert first["time_spent"]["report"]["cached"] == 0
    again = report.write_run(copy.deepcopy(record), tmp_path / "b", arrays, figure_cache=cache)
    assert all(f["cached"] for f in again["figures"].values())
    assert again["time_spent"]["report"]["cached"] == again["time_spent"]["report"]["models"] == len(again["figures"])
    for f in again["figures"].values():
        assert (tmp_path / "b" / f["path"]).read_bytes() == (tmp_path / "a" / f["path"]).read_bytes()
    changed = copy.deepcopy(arrays)
    name = next(n for n in record["models"] if n in changed and n != record["baseline"])
    changed[name]["logits"] = changed[name]["logits"][:, ::-1].copy()  # the candidate's predictions change
    third = report.write_run(copy.deepcopy(record), tmp_path / "c", changed, figure_cache=cache)
    drawn = {k for k, f in third["figures"].items() if not f["cached"]}
    assert f"confusion_{name}" in drawn and "confusion_baseline" not in drawn
    assert "training_curves" not in drawn  # from the record, which did not change
    nocache = report.write_run(copy.deepcopy(record), tmp_path / "d", arrays)
    assert not any(f["cached"] for f in nocache["figures"].values())


def test_figure_cache_keeps_the_most_recently_used(tmp_path):
    from harness.report.figcache import FigureCache

    c = FigureCache(tmp_path)
    for i in range(5):
        c.write(f"k{i}", b"\x89PNG\r\n\x1a\n" + bytes([i]))
        os.utime(tmp_path / f"k{i}.png", (1000 + i, 1000 + i))
    assert c.read("k0") is not None  # used now: the newest
    (tmp_path / "bad.png").write_bytes(b"not a png")
    assert c.read("bad") is None  # damaged: drawn again
    c.prune(keep=3)
    assert sorted(p.stem for p in tmp_path.glob("*.png")) == sorted(["k0", "k4", "bad"])


def test_hundred_classes_rgb_gallery_truncated_per_class_table_and_junit_listed(tmp_path):
    record, arrays = make_run(n=1500, k=100, seed=4, channels=3, size=32, cam_size=8)
    d = tmp_path / "run"
    d.mkdir()
    (d / "junit.xml").write_text("<testsuites/>")
    out = report.write_run(record, d, arrays)
    assert all(f["ok"] for f in out["figures"].values()), out["figures"]
    assert "junit.xml" in out["report"]["files"]
    page = (d / "index.html").read_text()
    assert '<a href="junit.xml">' in page and "The worst 20 of 100 classes" in page
    per_class = (d / "summary.md").read_text().split("## Per-class accuracy")[1].split("##")[0]
    assert len([ln for ln in per_class.splitlines() if ln.startswith("| class_")]) == 20
    assert len((d / "per_class.csv").read_text().splitlines()) == 101
    w, h = png_size(d / "figures/class_delta_augment.png")
    assert w > 1000  # 100 bars get room


def test_a_thousand_classes_with_long_names(tmp_path):
    classes = [f"part {i:04d}: a long descriptive name of a defect class seen on the line" for i in range(1000)]
    record, arrays = make_run(n=3000, k=1000, seed=5, classes=classes, gradcam=False)
    d = tmp_path / "run"
    d.mkdir()
    out = report.write_run(record, d, arrays)
    assert all(f["ok"] for f in out["figures"].values()), out["figures"]
    page = (d / "index.html").read_text()
    assert "The worst 20 of 1000 classes" in page
    assert len((d / "per_class.csv").read_text().splitlines()) == 1001
    for name in ("confusion_baseline", "class_delta_augment"):
        w, h = png_size(d / f"figures/{name}.png")
        assert w < 6000 and h < 6000  # readable, not a poster


def test_single_model_minimal_record_and_strict_json(tmp_path):
    labels = np.arange(300) % 10
    logits = np.eye(10, dtype=np.float32)[labels] * 8  # every prediction right: no errors
    smp = Samples.from_logits(logits, labels)
    vals = metrics.measure_all(smp)
    assert vals["mean_confidence_wrong"] is None  # not applicable: no errors
    record = {"run": {"id": "one"}, "classes": CLASSES, "baseline": "baseline",
              "models": {"baseline": {"metrics": vals, "not_applicable": {"mean_confidence_wrong": "no errors"}}}}
    out = report.write_run(record, tmp_path, {"baseline": {"logits": logits, "labels": labels, "ids": np.arange(300)}})
    json.loads((tmp_path / "results.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert not any(n.startswith("class_delta") for n in out["figures"])  # one model: nothing to compare
    assert "gradcam_gallery" not in out["figures"] and not (tmp_path / "gradcam.npz").exists()
    assert "training_curves" not in out["figures"]  # no history
    assert all(f["ok"] for f in out["figures"].values()) and "reliability_baseline" in out["figures"]
    page = (tmp_path / "index.html").read_text()
    assert "No gates were checked in this run." in page
    row = next(r for r in page.split("<tr>") if r.startswith("<td>mean_confidence_wrong</td>"))
    assert "<td>n/a</td>" in row


def test_non_finite_logits_are_refused_and_the_rest_is_written(tmp_path):
    record, arrays = make_run(n=200, seed=6, gradcam=False)
    arrays["augment"]["logits"] = arrays["augment"]["logits"].copy()
    arrays["augment"]["logits"][0, 0] = np.nan
    out = report.write_run(record, tmp_path, arrays)
    assert any("augment" in p and "NaN" in p for p in out["report"]["problems"])
    assert (tmp_path / "predictions/baseline.npz").is_file() and not (tmp_path / "predictions/augment.npz").exists()


# ----------------------------------------------------------------------------- rebuild


def test_rebuild_brings_deleted_figures_back(run, tmp_path):
    d = tmp_path / "copy"
    shutil.copytree(run["dir"], d)
    shutil.rmtree(d / "figures")
    (d / "index.html").unlink()
    (d / "predictions/augment.csv").unlink()
    index = report.rebuild(d)
    assert index == d / "index.html" and index.is_file()
    rebuilt = json.loads((d / "results.json").read_text())
    assert set(rebuilt["figures"]) == EXPECTED_FIGURES
    for name, f in rebuilt["figures"].items():
        assert f["ok"] and (d / f["path"]).is_file(), name
    assert (d / "predictions/augment.csv").read_text() == (run["dir"] / "predictions/augment.csv").read_text()
    assert rebuilt["models"] == run["out"]["models"] and rebuilt["gates"] == run["out"]["gates"]
    assert stray_files(d) == []


def test_rebuild_without_results_json_is_a_clear_error(tmp_path):
    with pytest.raises(report.ReportError, match="no results.json in .*not a run directory"):
        report.rebuild(tmp_path)


def test_cli_report_and_compare(run, tmp_path, capsys):
    from harness import cli

    d = tmp_path / "copy"
    shutil.copytree(run["dir"], d)
    assert cli.main(["report", str(d)]) == 0
    assert "rebuilt" in capsys.readouterr().out
    assert cli.main(["report", str(tmp_path / "nothing")]) == 2
    assert "no results.json" in capsys.readouterr().err


# ----------------------------------------------------------------------------- compare


def test_compare_runs_names_changed_metrics_gates_and_recipes(run, tmp_path):
    record, arrays = make_run(seed=0, candidate_scale=0.6, lr_candidate=2e-3)
    record["gates"][2]["passed"] = False  # the augment ECE gate flips
    record["gates"][2]["status"] = "failed"
    b = tmp_path / "b"
    report.write_run(record, b, arrays)
    latest = tmp_path / "latest"
    latest.symlink_to(b, target_is_directory=True)
    text = report.compare_runs(run["dir"], latest)
    ea = run["record"]["models"]["augment"]["metrics"]["ece"]
    eb = record["models"]["augment"]["metrics"]["ece"]
    assert abs(ea - eb) > 1e-3
    row = next(ln for ln in text.splitlines() if re.match(r"^\| augment\s+\| ece\s", ln))
    assert f"{ea:.4f}" in row and f"{eb:.4f}" in row and f"{eb - ea:+.4f}" in row and row.rstrip("| ").endswith("*")
    base_acc = next(ln for ln in text.splitlines() if re.match(r"^\| baseline\s+\| accuracy\s", ln))
    assert "*" not in base_acc  # the baseline did not change
    assert "test_ece[fashion-mnist-augment]" in text and "PASS (ece=" in text and "FAIL (ece=" in text
    assert "test_ece[fashion-mnist-baseline]" not in text.split("Gates:")[1].split("\n\n")[0]
    assert "lr: 0.001 -> 0.002" in text and "c" * 16 in text
    with pytest.raises(report.ReportError):
        report.compare_runs(run["dir"], tmp_path / "missing")


# ----------------------------------------------------------------------------- browser


def _browser_helper():
    spec = importlib.util.spec_from_file_location("check_report_browser", ROOT / "scripts/check_report_browser.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_index_html_loads_every_figure_in_headless_chromium(run):
    helper = _browser_helper()
    chromium = "/usr/bin/chromium"
    if not Path(chromium).is_file():
        pytest.skip("/usr/bin/chromium is missing: install Debian's chromium to check the page in a browser")
    dom = helper.dump_dom(run["dir"] / "index.html", chromium)
    k = sum(1 for f in run["out"]["figures"].values() if f["ok"])
    assert k == len(EXPECTED_FIGURES)
    assert helper.figures_loaded(dom) == (k, k)
    assert re.search(r'<table class="gates">.*<td class="fail">FAIL</td>', dom, re.S)
    assert 'data-verdict="fail"' in dom and "FAIL: 2 gates passed, 1 failed, 0 not applicable" in dom
