"""Frequency bias (evidence ``frequency``: {"lowpass" | "highpass": Samples} on the battery's
test images; ``harness/frequency.py``):

* lowpass_accuracy = accuracy when only the low spatial frequencies remain (shape);
* highpass_accuracy = accuracy when only the high ones remain (texture and edges);
* frequency_bias = lowpass_accuracy - highpass_accuracy (> 0: the model leans on shape).
"""

from __future__ import annotations

from collections.abc import Mapping

from .registry import register, register_family
from .samples import HIGHER, NEUTRAL

register_family("frequency", "frequency bias: accuracy when only the low or only the high spatial frequencies remain")


def _acc(ev: Mapping, kind: str) -> float:
    return float(ev[kind].hit.mean())


@register("lowpass_accuracy", "frequency", "accuracy when only the low spatial frequencies (shapes) of the images "
          "remain", HIGHER, "share", needs=("frequency",))
def lowpass_accuracy(ev: Mapping) -> float:
    return _acc(ev, "lowpass")


@register("highpass_accuracy", "frequency", "accuracy when only the high spatial frequencies (texture, edges) "
          "remain", NEUTRAL, "share", needs=("frequency",), gated=False)
def highpass_accuracy(ev: Mapping) -> float:
    return _acc(ev, "highpass")


@register("frequency_bias", "frequency", "low-pass minus high-pass accuracy (> 0: the model leans on shape, < 0 "
          "on texture)", NEUTRAL, "share", needs=("frequency",), range_=(-1.0, 1.0), gated=False)
def frequency_bias(ev: Mapping) -> float:
    return _acc(ev, "lowpass") - _acc(ev, "highpass")
