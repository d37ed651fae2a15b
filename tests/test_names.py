"""Names and paths from users never lead out of their folder, and nothing a process reads from a
run's folder is unpickled: a recipe named ``../../outside/evil`` is refused before anything is
trained, the run's shared evidence is checked ``.npz``, and a pickle planted where evidence is
looked for never runs."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from harness import recipes
from harness.evidence import EvidenceStore
from harness.io import UnsafeNameError, inside, plain_name

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["pytester"]


class _Planted:
    """A pickle that, when loaded, writes a file: if the marker exists, code from a file ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


@pytest.mark.parametrize("name", ["wide-lr", "my_model.v2", "resnet+cutmix", "A1"])
def test_plain_names_pass(name):
    assert plain_name(name, "name") == name


@pytest.mark.parametrize("name", ["../../../../outside/evil", "a/b", "a\\b", "..", "x..y", ".hidden", "",
                                  "baseline@s43", "base line", "a" * 65, None, 3])
def test_other_names_are_refused_with_what_a_name_may_hold(name):
    with pytest.raises(UnsafeNameError, match="not a plain name: use 1-64 letters"):
        plain_name(name, "recipe file x.toml: name")


def test_inside_refuses_a_path_out_of_its_root(tmp_path):
    assert inside(tmp_path, "predictions/baseline.npz", "file") == tmp_path.resolve() / "predictions/baseline.npz"
    for rel in ("../x.npz", "predictions/../../x.npz", "/etc/passwd"):
        with pytest.raises(UnsafeNameError, match="leads out of"):
            inside(tmp_path, rel, "the predictions file")
    (tmp_path / "link").symlink_to(tmp_path.parent)  # a link out of the folder is out of it too
    with pytest.raises(UnsafeNameError, match="leads out of"):
        inside(tmp_path, "link/x.npz", "file")


def test_a_recipe_file_naming_a_path_is_refused_where_it_is_read(tmp_path):
    f = tmp_path / "evil.toml"
    f.write_text('name = "../../../../outside/evil"\nepochs = 1\n')
    with pytest.raises(UnsafeNameError, match=r"evil.toml: name = '\.\./\.\./\.\./\.\./outside/evil' is not a plain"):
        recipes.from_file(f, "fashion-mnist", "smoke")
    f.write_text('name = "baseline@s43"\n')  # would pass for the baseline's seed-43 model under --seeds 2
    with pytest.raises(UnsafeNameError, match="'@' marks the harness's own"):
        recipes.from_file(f, "fashion-mnist", "smoke")


def test_the_run_store_refuses_a_model_name_out_of_its_folder_and_never_unpickles(tmp_path):
    store = EvidenceStore(tmp_path / "run" / ".workers" / "evidence")
    outside = tmp_path / "outside" / "evil"
    outside.mkdir(parents=True)
    marker = tmp_path / "code-ran"
    for name in ("robustness.pkl", "robustness.npz"):  # a pickle where evidence would be looked for
        (outside / name).write_bytes(pickle.dumps(_Planted(marker)))
    with pytest.raises(UnsafeNameError, match="leads out of"):
        store.get_or_measure("../../../outside/evil", "robustness", lambda: {"x": np.zeros(2)})
    with pytest.raises(UnsafeNameError, match="leads out of"):
        store.kinds("../../../outside/evil")
    # inside the folder too, a planted pickle is never loaded: a file that is not the checked .npz
    # format is measured again (with a warning), and the measured evidence replaces it
    own = store.folder / "baseline"
    own.mkdir(parents=True)
    (own / "robustness.npz").write_bytes(pickle.dumps(_Planted(marker)))
    with pytest.warns(RuntimeWarning, match="damaged"):
        got = store.get_or_measure("baseline", "robustness", lambda: {"x": np.arange(3.0)})
    assert np.array_equal(got["x"], np.arange(3.0))
    assert np.array_equal(store.read("baseline", "robustness")["x"], np.arange(3.0))
    assert store.kinds("baseline") == ["robustness"]
    assert not marker.exists()
    assert sorted(p.name for p in outside.iterdir()) == ["robustness.npz", "robustness.pkl"]  # untouched


def test_a_results_file_naming_predictions_out_of_the_run_is_refused(tmp_path):
    from harness.report import ReportError
    from harness.report.render import rebuild

    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "secret.npz").write_bytes(b"")
    (run / "results.json").write_text('{"run": {}, "gates": [], "models": {"baseline": {"predictions": "../secret.npz", '
                                      '"metrics": {"accuracy": 0.5}}}}')
    with pytest.raises(ReportError, match="leads out of"):
        rebuild(run)


def test_the_suite_refuses_a_recipe_named_as_a_path_before_training_and_writes_nothing_outside(pytester,
                                                                                               monkeypatch):
    """The probe's case: a recipe file named ``../../../../outside/evil``, run on two workers with
    pickles planted where the evidence would have been looked for."""
    pytest.importorskip("xdist")
    from planted import write_idx_world

    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("CNN_STRESS_CACHE", str(pytester.path / "cache"))
    shutil.copytree(ROOT / "stress_tests", pytester.path / "stress_tests", ignore=shutil.ignore_patterns("__pycache__"))
    pytester.makeconftest('pytest_plugins = ["fixtures.plugin"]\n')
    write_idx_world(pytester.path / "data", n_train=300, n_test=200)
    (pytester.path / "evil.toml").write_text('name = "../../../../outside/evil"\nepochs = 1\n')
    planted = pytester.path / "outside" / "evil"
    planted.mkdir(parents=True)
    marker = pytester.path / "code-ran"
    (planted / "robustness.pkl").write_bytes(pickle.dumps(_Planted(marker)))
    before = sorted(p.relative_to(pytester.path) for p in (pytester.path / "outside").rglob("*"))
    result = pytester.runpytest_subprocess("stress_tests/test_robustness.py", "--dataset", "fashion-mnist",
                                           "--data-root", "data", "--recipe-file", "evil.toml", "--report-dir", "r",
                                           "-n", "2", "-p", "no:cacheprovider", timeout=600)
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, out
    assert "name = '../../../../outside/evil' is not a plain name" in out
    assert out.count("is not a plain name") == 1  # said once, by the controller
    assert not (pytester.path / "cache").exists() or not list((pytester.path / "cache").glob("*.pt"))  # no training
    assert not marker.exists()
    assert sorted(p.relative_to(pytester.path) for p in (pytester.path / "outside").rglob("*")) == before


def _failure_modes(run: Path, models: list[str]) -> None:
    out = {"models": np.asarray(models, dtype=str)}
    for i in range(len(models)):
        out.update({f"images_{i}": np.zeros((2, 3, 8, 8), np.float32), f"ids_{i}": np.array([1, 2]),
                    f"labels_{i}": np.array([0, 1]), f"preds_{i}": np.array([1, 0]),
                    f"confidences_{i}": np.array([0.9, 0.95], np.float32), f"modes_{i}": np.array(["background", "none"])})
    out["images_1"] = np.zeros((0,), np.float32)  # drawing this one fails: its stale picture would be deleted
    np.savez(run / "failure_modes.npz", **out)
    np.savez(run / "weak_segments.npz", models=np.asarray(["../../../outside/seg"], dtype=str),
             images_0=np.zeros((2, 3, 8, 8), np.float32), ids_0=np.array([1, 2]), segment_0=np.array([0, 0]))


def test_model_names_in_a_runs_example_files_name_figures_inside_it(tmp_path):
    """The figures named after the models of failure_modes.npz / weak_segments.npz take file-name
    stems: a name like ../../outside/x writes nothing outside the run and deletes nothing there."""
    import json

    from harness.report.render import rebuild

    run = tmp_path / "a" / "b" / "run"
    run.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.png").write_bytes(b"keep me")
    (run / "results.json").write_text(json.dumps({"run": {}, "models": {}, "gates": [], "classes": ["a", "b"]}))
    _failure_modes(run, ["../../../outside/written", "../../../outside/victim"])
    rebuild(run)
    assert sorted(p.name for p in outside.iterdir()) == ["victim.png"] and (outside / "victim.png").read_bytes() == b"keep me"
    figs = json.loads((run / "results.json").read_text())["figures"]
    assert all(inside(run, f["path"], "figure") for f in figs.values())
    assert not any(".." in f["path"] for f in figs.values())


def test_a_figures_folder_linked_out_of_the_run_is_not_written_through(tmp_path):
    import json

    from harness.report.render import rebuild

    run, outside = tmp_path / "run", tmp_path / "outside"
    run.mkdir()
    outside.mkdir()
    (run / "figures").symlink_to(outside)
    (run / "results.json").write_text(json.dumps({"run": {}, "models": {}, "gates": [], "classes": ["a", "b"]}))
    _failure_modes(run, ["m", "n"])
    rebuild(run)
    assert list(outside.iterdir()) == []
    figs = json.loads((run / "results.json").read_text())["figures"]
    assert figs and all(not f["ok"] and "leads out of" in f["error"] for f in figs.values())


def test_values_of_a_hand_edited_record_are_escaped_in_the_page(tmp_path):
    import json

    from harness.report.render import rebuild

    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({
        "run": {}, "models": {}, "gates": [],
        "leakage": {"count": "<script>alert(1)</script>", "share": 0.1, "threshold": "<img src=x onerror=alert(2)>",
                    "exact": 0}}))
    rebuild(run)
    page = (run / "index.html").read_text()
    assert "<script>alert(1)" not in page and "<img src=x" not in page and "&lt;script&gt;alert(1)" in page


def test_class_names_that_start_a_formula_are_text_in_the_csv_files(tmp_path):
    """A class named =HYPERLINK(...) or @SUM(...) reaches the per-sample and per-class CSV files
    as text (a leading apostrophe), never as a spreadsheet formula; numbers stay numbers."""
    import csv

    from harness.report.io import ModelData, csv_cell, write_predictions_csv

    classes = ['=HYPERLINK("http://x","y")', "@SUM(A1)", "+cmd", "Shirt"]
    logits = np.eye(4, dtype=np.float32)[[0, 1, 2, 3]] * 5
    rel = write_predictions_csv(tmp_path, "m", ModelData(logits, np.array([0, 1, 2, 3]), np.arange(4)), classes)
    rows = list(csv.reader((tmp_path / rel).open()))
    assert [r[2] for r in rows[1:]] == ["'" + c for c in classes[:3]] + ["Shirt"]
    assert csv_cell("-0.012") == "-0.012" and csv_cell("+1.5%") == "+1.5%" and csv_cell(-2) == -2


def test_a_record_that_contradicts_its_gates_is_not_rebuilt(tmp_path):
    """python -m harness report on a hand-edited results.json: accuracy 0.05 beside "passed", a
    "pass" verdict beside a failed gate: refused, saying what contradicts what."""
    import json

    from harness.report import ReportError
    from harness.report.render import rebuild

    gate = {"test": "t", "model": "baseline", "label": None, "metric": "accuracy", "kind": "min", "bound": 0.84,
            "limit": None, "value": 0.86, "status": "passed", "message": "accuracy=0.86 >= min 0.84"}
    record = {"run": {}, "models": {"baseline": {"metrics": {"accuracy": 0.86}}}, "gates": [gate],
              "verdict": {"status": "pass", "reasons": []}}
    run = tmp_path / "run"
    run.mkdir()
    for edit, match in [({"value": 0.05}, r"accuracy_min = 0.05 is 'passed' against min 0.84"),
                        ({"status": "failed"}, r"the verdict says pass beside 1 failed gate"),
                        ({}, None)]:
        rec = json.loads(json.dumps(record))
        rec["gates"][0].update(edit)
        if "value" in edit:
            rec["models"]["baseline"]["metrics"]["accuracy"] = 0.05
        (run / "results.json").write_text(json.dumps(rec))
        if match is None:
            rebuild(run)  # the record as the suite wrote it
            assert (run / "index.html").exists()
        else:
            with pytest.raises(ReportError, match=match):
                rebuild(run)
    rec = json.loads(json.dumps(record))
    rec["models"]["baseline"]["metrics"]["accuracy"] = 0.05  # the metric edited, the gate left alone
    (run / "results.json").write_text(json.dumps(rec))
    with pytest.raises(ReportError, match="checked 0.86, but the model's accuracy is 0.05"):
        rebuild(run)


def _suite_option(**given):
    """pytest's parsed options as fixtures.options reads them: every suite option at its default."""
    import argparse

    from harness.run import flags

    p = argparse.ArgumentParser()
    flags.declare(p.add_argument, flags.SUITE)
    o = p.parse_args([])
    o.__dict__.update(given)
    return argparse.Namespace(option=o)


def test_an_onnx_file_and_an_architecture_together_are_refused(tmp_path):
    """--weights model.onnx is a whole model: an --model/--arch beside it would be ignored."""
    from fixtures.options import options_from

    f = tmp_path / "m.onnx"
    f.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"--weights .*m\.onnx is a whole model .* --model my:net would be ignored"):
        options_from(_suite_option(dataset="fashion-mnist", weights=[str(f)], model="my:net"))
    with pytest.raises(ValueError, match=r"--arch resnet18 would be ignored"):
        options_from(_suite_option(dataset="fashion-mnist", weights=[str(f)], arch="resnet18"))
    o = options_from(_suite_option(dataset="fashion-mnist", model=str(f)))
    assert o.weights == f and o.weights_flag == "--model" and o.arch is None  # messages then name --model


def test_a_single_valued_option_given_twice_is_refused():
    import argparse

    from harness.run import flags

    p = argparse.ArgumentParser(exit_on_error=False)
    flags.declare(p.add_argument, ("ood", "segment-metadata"))
    with pytest.raises(argparse.ArgumentError, match=r"--ood: given twice \(a and b\)"):
        p.parse_args(["--ood", "a", "--ood", "b"])
    assert p.parse_args(["--ood", "a", "--ood", "a"]).ood == "a"  # the same value twice is harmless


def test_a_binary_cases_file_names_the_option(tmp_path):
    from fixtures.options import options_from

    f = tmp_path / "cases.bin"
    f.write_bytes(bytes(range(256)))
    with pytest.raises(ValueError, match=r"--cases-file .*cases\.bin: not a UTF-8 text file"):
        options_from(_suite_option(dataset="fashion-mnist", cases_file=str(f)))


def test_an_interrupted_run_does_not_advise_adding_bounds(pytester, monkeypatch):
    """Ctrl-C before any gate was checked said "NO GATE CHECKED ... Add bounds": it says the run
    was interrupted."""
    from planted import CONFTEST, write_idx_world

    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    shutil.copytree(ROOT / "stress_tests", pytester.path / "stress_tests", ignore=shutil.ignore_patterns("__pycache__"))
    pytester.makeconftest(CONFTEST.format(tests=str(ROOT / "tests")) + '''
from harness.run import book as _book


def _interrupt(self, test, model, *args, **kwargs):  # Ctrl-C once the model is evaluated, before its gate
    self.run.evaluation(model)
    raise KeyboardInterrupt


_book.GateBook.check_absolute = _interrupt
''')
    write_idx_world(pytester.path / "data", n_train=300, n_test=200)
    (pytester.path / "g.toml").write_text("[fashion-mnist.smoke.default]\naccuracy_min = 0.5\n")
    result = pytester.runpytest_subprocess("stress_tests/test_accuracy.py", "--baseline-only", "--data-root", "data",
                                           "--gates", "g.toml", "--report-dir", "r", "-p", "no:cacheprovider",
                                           timeout=300)
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.INTERRUPTED, out
    assert "NO GATE CHECKED" not in out and "Add bounds" not in out
    assert "NOT CHECKED baseline: the run was interrupted before its gates were checked" in out, out


def test_a_cache_that_cannot_be_written_stops_the_model_once(pytester, monkeypatch):
    """A full cache disk retrained the model once per test (15 times, thousands of lines of
    tracebacks): it is trained once, fails its first test saying why, and its other tests skip."""
    from planted import write_idx_world

    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("CNN_STRESS_CACHE", str(pytester.path / "cache"))
    monkeypatch.setenv("TRAININGS", str(pytester.path / "trainings.txt"))
    shutil.copytree(ROOT / "stress_tests", pytester.path / "stress_tests", ignore=shutil.ignore_patterns("__pycache__"))
    pytester.makeconftest('''
import errno
import os
pytest_plugins = ["fixtures.plugin"]
from harness import cache, train

_fit = train.Trainer.fit


def _counted(self):
    with open(os.environ["TRAININGS"], "a") as f:
        f.write(self.recipe.name + "\\n")
    return _fit(self)


def _full(path, payload):
    raise OSError(errno.ENOSPC, "No space left on device")


train.Trainer.fit = _counted
cache.save_entry = _full
''')
    write_idx_world(pytester.path / "data", n_train=300, n_test=200)
    (pytester.path / "g.toml").write_text("[fashion-mnist.smoke.default]\naccuracy_min = 0.3\n")
    result = pytester.runpytest_subprocess("stress_tests/test_accuracy.py", "--baseline-only", "--data-root", "data",
                                           "--gates", "g.toml", "--no-report", "-p", "no:cacheprovider", timeout=600)
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out
    assert (pytester.path / "trainings.txt").read_text().split() == ["baseline"]  # trained once
    assert out.count("cannot be written (No space left on device)") <= 3 and "INTERNALERROR" not in out, out
    assert "baseline COULD NOT BE KEPT" in out and "Traceback" not in out
