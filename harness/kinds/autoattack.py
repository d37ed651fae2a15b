"""AutoAttack (standard, through torchattacks: ``harness/autoattack.py``) at the reference budget."""

from __future__ import annotations

import torch

from ..evaluate import to_float
from ..metrics import NotApplicable, Samples
from . import register


@register("autoattack", ("autoattack.py",), gradients=True, battery=True, context=lambda ev: {"images": ev.settings.autoattack_images},
          units=lambda ev: (4, "attack"),
          description="outcomes under AutoAttack on the first images of the attacked subset, and which attack broke each")
def autoattack(ev) -> dict:
    from .. import autoattack as aa

    n = ev.settings.autoattack_images
    if n <= 0:
        raise NotApplicable("AutoAttack runs in the full profile, or with --autoattack N (minutes per 100 images on a "
                            "CPU)")
    if not aa.available():
        raise NotApplicable("torchattacks is not installed (setup.sh installs it)")
    b = ev.battery
    pos = ev.stress_positions()[: min(n, b.attack_samples)]
    idx = torch.as_tensor(pos)
    x, y = to_float(ev.data.test_x[idx]).to(ev.device), ev.data.test_y[idx].to(ev.device)
    adv, broken = aa.run(ev.model, x, y, b.reference_eps, ev.data.num_classes, tick=ev.tick)
    with torch.no_grad():
        z = torch.cat([ev.model(adv[i:i + 250]).float().cpu() for i in range(0, len(adv), 250)])
    return {"autoattack": Samples.from_logits(z.numpy(), y.cpu().numpy(), pos), "broken_by": broken}
