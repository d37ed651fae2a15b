"""The robustness battery (``harness/stress.py``) on a seeded subset of the test split, the
same images for every model of a run: common corruptions, geometry, occlusion; and the
gradient attacks on its first ``Battery.attack_samples`` images."""

from __future__ import annotations

import numpy as np
import torch

from .. import metrics, stress
from ..metrics import Samples
from . import recorder, register


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


@register("adversarial", ("stress.py", "attacks.py", "perturb.py"), battery=True, gradients=True, remote=True,
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


def _stress_cell(smp: metrics.Samples) -> dict:
    return {"accuracy": metrics.accuracy(smp), "ece": metrics.ece(smp),
            "confident_error_rate": metrics.confident_errors_at(smp, 0.9) / len(smp)}


OOD_BINS = np.linspace(0.0, 1.0, 21)


@recorder("robustness")
def robustness_record(run, m: str) -> dict:
    """What the robustness battery measured for one model (only the evidence a test asked for):
    corruptions, geometry, the gradient attacks and AutoAttack."""
    ev = run.evaluation(m)
    out: dict = {}
    if ev.has("robustness"):
        rob = ev.evidence("robustness")
        clean = rob["clean"]
        out["images"] = len(clean)
        out["source"] = "published CIFAR-C files" if ev.settings.published else "synthesised (harness/corruptions/)"
        out["clean"] = _stress_cell(clean)
        try:
            table = metrics.corruption_table(rob)
        except metrics.NotApplicable:
            table = {}
        out["corruptions"] = {name: [_stress_cell(smp) for smp in sevs] for name, sevs in table.items()}
        out["severities"] = metrics.severities_run(rob)
        if table:
            n_sev = min(len(v) for v in table.values())
            out["by_severity"] = [
                {k: float(np.mean([_stress_cell(sevs[i])[k] for sevs in table.values()])) for k in _stress_cell(clean)}
                for i in range(n_sev)]
        out["geometry"] = {k: {**_stress_cell(v), "flip_share": metrics.flip_share(v, clean)}
                           for k, v in rob.items() if not k.startswith("corruption/") and k != "clean"}
    if ev.has("autoattack"):
        from ..autoattack import ATTACKS

        aa = ev.evidence("autoattack")
        broken = np.asarray(aa["broken_by"])
        out["autoattack"] = {"images": len(broken), "accuracy": metrics.accuracy(aa["autoattack"]),
                             "clean_wrong": int((broken == -2).sum()), "survived": int((broken == -1).sum()),
                             "broken_by": {a: int((broken == k).sum()) for k, a in enumerate(ATTACKS)}}
    if ev.has("adversarial"):
        adv = ev.evidence("adversarial")
        b = ev.battery
        out["adversarial"] = {
            "images": len(adv["clean"]), "reference_eps": b.reference_eps, "epsilons": list(b.epsilons),
            "clean": _stress_cell(adv["clean"]),
            **{a: [_stress_cell(adv[f"{a}/{e:.6g}"]) for e in b.epsilons] for a in ("fgsm", "pgd")},
        }
    return out
