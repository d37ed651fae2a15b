"""Frequency bias (``harness/frequency.py``): the model on low-pass and high-pass filtered
versions of the robustness battery's test images (the same images for every model of a run)."""

from __future__ import annotations

import torch

from .. import frequency
from ..metrics import Samples
from . import register


@register("frequency", ("frequency.py",), remote=True, units=lambda ev: (len(frequency.FILTERS), "filter"),
          context=lambda ev: {"cutoff": frequency.CUTOFF},
          description="outcomes on low-pass and high-pass filtered test images")
def frequency_bias(ev) -> dict[str, Samples]:
    pos = ev.stress_positions()
    idx = torch.as_tensor(pos)
    x, y = ev.data.test_x[idx], ev.data.test_y[idx]
    logits = frequency.run(ev.model, x, ev.device, tick=ev.tick)
    return {k: Samples.from_logits(z.numpy(), y.numpy(), pos) for k, z in logits.items()}
