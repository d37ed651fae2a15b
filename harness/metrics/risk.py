"""Selective prediction at a user's risk (``harness/risk_control.py``): the confidence threshold
chosen on the validation split to keep the accepted predictions' error rate under
``--selective-risk`` (default 5%), with 99% confidence, and what it does on the test split."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .registry import register
from .samples import HIGHER, LOWER, NotApplicable


def _accepted(ev: Mapping) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(ev["accepted"], dtype=bool), np.asarray(ev["hit"], dtype=bool)


@register("risk_control_coverage", "selective", "share of test images accepted at the threshold keeping the error "
          "under --selective-risk (risk_control.py)", HIGHER, "share", needs=("risk_control",),
          paired=False, resolution="image")
def risk_control_coverage(ev: Mapping) -> float:
    return float(_accepted(ev)[0].mean())


@register("risk_control_error", "selective", "error rate of the test predictions accepted at that threshold",
          LOWER, "share", needs=("risk_control",), paired=False, gated=False)
def risk_control_error(ev: Mapping) -> float:
    accepted, hit = _accepted(ev)
    if not accepted.any():
        raise NotApplicable(f"no threshold keeps the validation error under {ev['risk']:g} with 99% confidence: "
                            "nothing is accepted")
    return float(1.0 - hit[accepted].mean())


@register("risk_control_margin", "selective", "the accepted test error a sound run stays under minus the measured "
          "one: below 0, risk not controlled", HIGHER, "share", needs=("risk_control",), paired=False, range_=(-1.0, 1.0))
def risk_control_margin(ev: Mapping) -> float:
    from ..risk_control import error_ceiling

    accepted, hit = _accepted(ev)
    if not accepted.any():
        raise NotApplicable(f"no threshold keeps the validation error under {ev['risk']:g} with 99% confidence: "
                            "nothing is accepted")
    return float(error_ceiling(int(accepted.sum()), float(ev["risk"])) - (1.0 - hit[accepted].mean()))
