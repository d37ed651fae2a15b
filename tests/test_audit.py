"""The audit (harness/audit/): its exact bound on a false-alarm rate, per-gate tallies against
the rule's predicted tail, and detection limits now and with an older gates file."""

from __future__ import annotations

from pathlib import Path

import pytest
from planted import write_idx_world

from harness import audit, defects

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("failures, runs, bound", [(0, 30, 0.0950), (0, 59, 0.0495), (0, 20, 0.1391), (1, 30, 0.1482)])
def test_the_upper_bound_is_the_exact_one_sided_clopper_pearson(failures, runs, bound):
    assert audit.upper_bound(failures, runs) == pytest.approx(bound, abs=5e-4)
    assert audit.upper_bound(3, 3) == 1.0 and audit.upper_bound(0, 0) == 1.0


def test_false_alarms_are_tallied_per_gate_and_set_beside_the_predicted_tail(monkeypatch, tmp_path):
    def fake_run(dataset, seed, threads, work, extra, variant="reference", models_dir=None):
        failed = seed == 2001 and threads == 2
        gates = {"baseline: ece_max": failed, "baseline: accuracy_min": False}
        return {"seed": seed, "threads": threads, "variant": variant, "seconds": 1.0, "exit": int(failed),
                "failed": ["baseline: ece=0.2 > max 0.1"] if failed else [], "checked": 2, "gates": gates,
                "accuracy": {"baseline": 0.86}}

    monkeypatch.setattr(audit, "_suite_run", fake_run)
    fa = audit.false_alarms("fashion-mnist", [2000, 2001, 2002], [1, 2], tmp_path, progress=lambda _: None,
                            variants=("reference", "bf16"), variant_seeds=1)
    assert len(fa["runs"]) == 7 and [r["variant"] for r in fa["runs"]].count("bf16") == 1  # bf16 at 2 threads only
    assert fa["runs_with_false_alarms"] == 1 and fa["upper_95"] == pytest.approx(audit.upper_bound(1, 6))
    assert fa["reference_runs"] == 6 and fa["variant_runs"] == 1  # the bf16 run is not in the rate
    assert fa["per_gate"]["baseline: ece_max"] == {"checked": 6, "failed": 1}  # the reference runs
    text = audit.render(fa, None, [], {"dataset": "d", "profile": "smoke", "date": "x", "machine": "m", "torch": "t",
                                       "seeds": "2000-2002", "threads": "1, 2",
                                       "predicted": {"g.toml": {"budget": 0.05, "bounds": 100, "per_bound": 5e-4}}})
    assert "**1 of 6 runs** raised a false alarm" in text and "Other regimes: 0 of 1 runs" in text and "2001 | 2 |" in text and "2000 (bf16)" in text
    assert "| baseline: ece_max | 6 | 1 | 0.003 |" in text  # observed, against 6 reference runs x 5e-4
    assert "a run to raise any false alarm at most 5% of the time (observed: 1 of 6)" in text


def test_detection_limits_now_and_with_an_older_looser_file(tmp_path):
    """Logits sharpened x5 fail the calibration family under a tight ECE bound (now), and pass
    under a looser one (before): the coarser detection limit shows a loosened bound."""
    write_idx_world(tmp_path / "data", n_train=600, n_test=300)
    (tmp_path / "now.toml").write_text("[fashion-mnist.smoke.default]\nece_max = 0.1\naccuracy_min = 0.1\n")
    (tmp_path / "before.toml").write_text("[fashion-mnist.smoke.default]\nece_max = 0.9\naccuracy_min = 0.1\n")
    plan = [defects.Defect("overconfident", 5.0)]
    det = audit.detection("fashion-mnist", "smoke", 42, tmp_path / "now.toml", tmp_path / "cache", plan,
                          progress=lambda _: None, compare_gates=tmp_path / "before.toml",
                          data_root=str(tmp_path / "data"))
    sound, sharp = det["rows"]
    assert sound["caught"] is None and sharp["families"] == ["calibration"] and sharp["caught"]
    assert sharp["caught_before"] is False and det["limits"] == {"overconfident": 5.0}
    assert det["limits_before"] == {"overconfident": None}
    text = audit.render(None, det, [], {"dataset": "d", "profile": "smoke", "date": "x", "machine": "m", "torch": "t"})
    assert "- overconfident: 5; before: not caught at any strength tried" in text
