"""The regime (harness/regime.py): the harness pins the CPU kernels before torch computes, reads
back what the kernels do, and a calibrated bound gates only runs in its own regime; a run in
another one (bf16, native kernels, another thread count, an unrecorded regime) reports those
bounds, says so in one line, and is never passed on them."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness import regime

ROOT = Path(__file__).resolve().parent.parent
X86 = platform.machine().lower() in ("x86_64", "amd64")
PIN_VARS = tuple(regime.REFERENCE_ENV)


def _probe_in_subprocess(code: str, **env) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in PIN_VARS and k != regime.OPT_OUT}
    out = subprocess.run([sys.executable, "-c", code + "\nimport json, harness\nfrom harness import regime\n"
                          "print(json.dumps({**regime.probe(), 'label': regime.kernels_label()}))"],
                         env={**clean, **env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_pin_sets_the_reference_variables_and_keeps_what_a_user_set(monkeypatch):
    for k in PIN_VARS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.delenv(regime.OPT_OUT, raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "SSE41")  # the user's choice stays (the probe will say so)
    monkeypatch.setattr(regime, "PINNED", {})
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    set_now = regime.pin()
    assert set_now == {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE"}
    assert os.environ["ONEDNN_MAX_CPU_ISA"] == "SSE41"
    for k in PIN_VARS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv(regime.OPT_OUT, "native")
    assert regime.pin() == {} and not any(k in os.environ for k in PIN_VARS)
    monkeypatch.delenv(regime.OPT_OUT)
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert regime.pin() == {}  # nothing to pin to on another architecture


@pytest.mark.skipif(not X86, reason="the reference kernels are x86-64's")
def test_the_probe_reads_back_the_kernels_in_effect():
    """Pinned at import: AVX2 in ATen and oneDNN, MKL in COMPATIBLE mode. With the opt-out, MKL
    runs its own path; with torch computing before the harness is imported, the pin comes too
    late and the probe shows it."""
    pinned = _probe_in_subprocess("")
    assert pinned["aten"] == "AVX2" and pinned["onednn"] == "avx2" and pinned["mkl_cnr"] == "CNR:COMPATIBLE"
    assert pinned["label"] == "avx2"
    native = _probe_in_subprocess("", **{regime.OPT_OUT: "native"})
    assert native["label"] != "avx2" and native["label"].endswith("+mkl:off") and native["pinned"] == {}
    late = _probe_in_subprocess("import torch\nx = torch.ones(64, 64)\nx @ x\n"
                                "torch.nn.functional.conv2d(torch.ones(2, 1, 28, 28), torch.ones(8, 1, 3, 3))")
    assert late["mkl_cnr"] == "CNR:OFF" and late["label"] != "avx2"


def test_a_regime_differs_field_by_field():
    run = {"device": "cpu", "precision": "fp32", "kernels": "avx2", "torch": "2.14.1", "threads": 2}
    table = {"device": "cpu", "precision": "fp32", "kernels": "avx2", "torch": "2.14.1"}
    assert regime.mismatch(run, table, [1, 2]) == []
    assert regime.mismatch({**run, "precision": "bf16"}, table, [1, 2]) == ["precision bf16 (calibrated: fp32)"]
    assert regime.mismatch({**run, "kernels": "avx512+mkl:off"}, table) == ["kernels avx512+mkl:off (calibrated: avx2)"]
    assert regime.mismatch({**run, "threads": 8}, table, [1, 2]) == ["8 CPU threads (calibrated: 1, 2)"]
    assert regime.mismatch(run, None) == ["no regime recorded (calibrated before regimes were; rerun the calibration)"]
    assert regime.describe(run) == "cpu, fp32, avx2 kernels, 2 threads, torch 2.14.1"


def test_bf16_on_a_cpu_is_a_switch_and_keys_its_own_model():
    from harness import train

    cpu = torch.device("cpu")
    fp32, bf16 = train.Runtime.default(cpu), train.Runtime.default(cpu, precision="bf16")
    assert fp32.precision == "fp32" and bf16.precision == "bf16" and fp32.kernels == regime.kernels_label()
    assert fp32.key_fields() != bf16.key_fields() and "kernels" in fp32.key_fields()
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        train.Runtime.default(cpu, precision="fp16")


def _calibrated_gates(tmp_path: Path, table_regime: dict | None, threads=(1, 2)) -> Path:
    """A calibrated table that every model fails (accuracy_min 0.999), with the regime given."""
    cal = {"seeds": [1, 2, 3], "threads": list(threads), "machine": "test", "false_alarm_budget": 0.05,
           "confidence": 0.95, "bounds": 1}
    if table_regime is not None:
        cal["regime"] = table_regime
    from harness.calibrate.write import _table

    ev = {"n": 3, "seeds": 3, "mean": 0.9995, "sd": 0.0005, "quantum": 0.001, "scale": "logit",
          "coverage": 0.95, "k": 3.0, "min": 0.999, "max": 1.0, "values": [0.999, 1.0, 0.9995]}
    text = "\n".join([*_table("calibration", cal), "[fashion-mnist.smoke.default]", "accuracy_min = 0.999", "",
                      *_table("fashion-mnist.smoke.default.evidence", {"accuracy": ev})])
    path = tmp_path / "cal.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("change, note", [
    ({}, None),
    ({"precision": "bf16"}, "precision fp32 (calibrated: bf16)"),
    ({"kernels": "avx512"}, "(calibrated: avx512)"),
    (None, "no regime recorded"),
])
def test_a_calibrated_bound_gates_only_its_own_regime(tmp_path, change, note):
    """Through the run core on a tiny generated dataset: a table calibrated in this run's regime
    gates it (the planted floor fails); in another regime, or with none recorded, the bound is
    reported and not gated, and the plan says why in one line."""
    from harness.gates import Gates
    from harness.run import Options, Session

    sys.path.insert(0, str(ROOT / "tests"))
    from planted import write_idx_world

    write_idx_world(tmp_path / "data", n_train=200, n_test=100)
    here = {"device": "cpu", "precision": "fp32", "torch": torch.__version__.split("+")[0],
            "kernels": regime.kernels_label()}
    gates_path = _calibrated_gates(tmp_path, None if change is None else {**here, **change})
    opts = Options(dataset="fashion-mnist", profile="smoke", device="cpu", data_root=str(tmp_path / "data"),
                   gates_path=gates_path, report_root=None, candidates=[], recipe_files=[],
                   cache_dir=tmp_path / "cache", threads=1)
    s = Session.create(opts, Gates.load(gates_path),
                       providers={"baseline": lambda recipe, data, device: torch.nn.Sequential(
                           torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10))})
    (line,) = s.plan.regime_notes()
    outcomes = s.book.check_absolute("t", "baseline", "accuracy")
    if note is None:
        assert "gated" in line and "NOT GATED" not in line
        assert [o.status for o in outcomes] == ["failed"]
    else:
        assert "REPORTED, NOT GATED" in line and note in line, line
        assert outcomes == [] and note in s.book.unbounded_reason("baseline", "accuracy")
        assert "accuracy" in s.book.unbounded("baseline")
