"""The robustness battery (``harness/stress.py``) on a seeded subset of the test split, the
same images for every model of a run: common corruptions, geometry, occlusion; and the
gradient attacks on its first ``Battery.attack_samples`` images."""

from __future__ import annotations

import torch

from .. import stress
from ..metrics import Samples
from . import register


@register("robustness", ("stress.py", "corruptions", "filters.py", "perturb.py"), battery=True, remote=True,
          description="outcomes under every stress of the battery",
          units=lambda ev: (stress.robustness_units(ev.battery, len(ev.stress_positions())), "condition-batch"))
def robustness(ev) -> dict[str, Samples]:
    pos = ev.stress_positions()
    idx = torch.as_tensor(pos)
    x, y = ev.data.test_x[idx], ev.data.test_y[idx]
    logits = stress.run_robustness(ev.model, x, y, ev.battery, ev.device, pos, ev.data.full_test_size, tick=ev.tick)
    labels = y.numpy()
    return {k: Samples.from_logits(z.numpy(), labels, pos) for k, z in logits.items()}


@register("adversarial", ("stress.py", "attacks.py", "perturb.py"), battery=True, remote=True,
          description="outcomes under FGSM and PGD at each budget of the sweep",
          units=lambda ev: (2 * len(ev.battery.epsilons), "attack"))
def adversarial(ev) -> dict[str, Samples]:
    b = ev.battery
    pos = ev.stress_positions()[: b.attack_samples]
    idx = torch.as_tensor(pos)
    x, y = ev.data.test_x[idx], ev.data.test_y[idx]
    logits = stress.run_adversarial(ev.model, x, y, b, ev.device, tick=ev.tick)
    labels = y.numpy()
    out = {k: Samples.from_logits(z.numpy(), labels, pos) for k, z in logits.items()}
    ref = f"{b.reference_eps:.6g}"
    for attack in ("fgsm", "pgd"):  # the reference budget, under the attack's own name
        if f"{attack}/{ref}" in out:
            out[attack] = out[f"{attack}/{ref}"]
    return out
