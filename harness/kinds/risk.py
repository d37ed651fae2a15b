"""Selective prediction at a user's risk (``harness/risk_control.py``): the threshold chosen on
the validation split and what it accepts on the test split (cheap: from the stored logits)."""

from __future__ import annotations

from . import recorder, register


@register("risk_control", (), cheap=True,
          description="the confidence threshold whose accepted predictions are wrong at most --selective-risk of the "
                      "time (validation split), and the test images it accepts")
def risk_control(ev) -> dict:
    from .. import risk_control as rc

    val, test = ev.samples("val"), ev.samples("test")
    risk = ev.settings.selective_risk
    fit = rc.threshold(val.conf, val.hit, risk)
    t = fit["threshold"]
    accepted = test.conf >= t if t is not None else test.conf < -1
    return {**fit, "risk": risk, "delta": rc.DELTA, "accepted": accepted, "hit": test.hit}


@recorder("risk_control")
def risk_control_record(run, m: str) -> dict:
    """The threshold, what it accepted on the validation split and on the test split."""
    import numpy as np

    from ..risk_control import error_ceiling

    ev = run.evaluation(m)
    if not ev.has("risk_control"):
        return {}
    r = ev.evidence("risk_control")
    accepted, hit = np.asarray(r["accepted"], dtype=bool), np.asarray(r["hit"], dtype=bool)
    n = int(accepted.sum())
    return {"risk": float(r["risk"]), "delta": float(r["delta"]), "threshold": r["threshold"],
            "validation_accepted": int(r["validation_accepted"]), "validation_errors": int(r["validation_errors"]),
            "validation_upper": r["upper"], "test_accepted": n, "test_coverage": float(accepted.mean()),
            "test_error": float(1 - hit[accepted].mean()) if n else None,
            "test_ceiling": error_ceiling(n, float(r["risk"]))}
