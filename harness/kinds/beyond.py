"""Beyond the test set: OOD sets scored by the model (``harness/ood.py``), near-duplicates of
test images in training (``harness/leakage.py``), conformal prediction sets and their coverage
under corruption (``harness/conformal.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import stress
from ..evaluate import logits_of
from ..metrics import Samples
from . import register

SHIFT_SEVERITY = 3  # conformal coverage under shift: every common corruption at this severity


def ood_names(data, settings) -> list[str]:
    """The OOD sets a model of ``data`` is measured on: the built-in ones the screen keeps
    (``ood.left_out`` says why any other is not used) and one's own."""
    from .. import ood

    gone = ood.left_out(data, settings.data_root, settings.ood_images, settings.cache_dir)
    names = [n for n in ood.builtin_names(data, settings.data_root) if n not in gone]
    return names + (["own"] if settings.ood_path else [])


def _file_stamp(path: str) -> str:
    """What a user's OOD set is: its path, size and modification time (a change measures again)."""
    p = Path(path).expanduser()
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
    return f"{p}|" + "|".join(f"{q.name}:{q.stat().st_size}:{q.stat().st_mtime_ns}" for q in files[:5000])


def _ood_context(ev) -> dict:
    s = ev.settings
    return {"ood_images": s.ood_images, "ood_path": s.ood_path and _file_stamp(s.ood_path),
            "ood_sets": ood_names(ev.data, s)}


@register("ood", ("ood.py",), remote=True, context=_ood_context,
          units=lambda ev: (len(ood_names(ev.data, ev.settings)), "set"),
          description="in-distribution scores (ood.scores) of the test images and of every OOD set")
def ood(ev) -> dict:
    from .. import ood as ood_mod

    ev.samples("test")  # the test logits (evaluated here for a model the harness did not train)
    out = {"test": ood_mod.scores(ev.result.logits["test"].numpy())}
    s = ev.settings
    for name, x in ood_mod.sets(ev.data, s.data_root, s.ood_path, s.ood_images, s.cache_dir).items():
        out[name] = ood_mod.scores(logits_of(ev.model, x, ev.device).numpy())
        ev.tick(1)
    return out


def _leakage_units(ev) -> tuple[int, str]:
    from ..leakage import chunks

    return chunks(len(ev.data.test_y)), "chunk"


@register("leakage", ("leakage.py",), per_dataset=True, units=_leakage_units,
          description="each test image's nearest training image (a property of the data)")
def leakage(ev):
    from .. import leakage as leakage_mod

    return leakage_mod.near_duplicates(ev.data.train_x, ev.data.test_x, tick=ev.tick)


@register("conformal", (), cheap=True,
          description="LAC and APS prediction sets of the test images, calibrated on the validation split")
def conformal(ev) -> dict:
    from .. import conformal as conformal_mod

    val, test = ev.samples("val"), ev.samples("test")
    out = {"labels": test.labels, "alpha": ev.settings.conformal_alpha, "n_cal": len(val)}
    for method in conformal_mod.METHODS:
        q = conformal_mod.calibrate(val.probs, val.labels, ev.settings.conformal_alpha, method)
        inside = conformal_mod.sets(test.probs, q, method)
        out[method] = {"q": q, "covered": inside[np.arange(len(test)), test.labels], "size": inside.sum(axis=1),
                       "sizes": np.bincount(inside.sum(axis=1), minlength=test.num_classes + 1)}
    return out


@register("conformal_shift", ("conformal.py", "stress.py", "corruptions", "filters.py", "perturb.py"), battery=True,
          remote=True, context=lambda ev: {"alpha": ev.settings.conformal_alpha},
          units=lambda ev: (len(ev.battery.corruptions), "corruption"),
          first=lambda ev: ("robustness",) if SHIFT_SEVERITY in ev.battery.severities else (),
          description="LAC coverage under each common corruption at severity 3")
def conformal_shift(ev) -> dict:
    """LAC coverage of the stressed subset under each common corruption at severity 3, with the
    threshold calibrated on the (unshifted) validation split. The class is in the set when
    1 - p_y <= q, so the robustness battery's outcomes at that severity (the same corrupted
    images) decide it; a battery without severity 3 corrupts the images here."""
    from .. import conformal as conformal_mod

    val = ev.samples("val")
    q = conformal_mod.calibrate(val.probs, val.labels, ev.settings.conformal_alpha, "lac")
    b = ev.battery
    if SHIFT_SEVERITY in b.severities:
        rob = ev.evidence("robustness")
        ev.tick(len(b.corruptions))
        return {name: 1.0 - np.exp(-rob[f"corruption/{name}/{SHIFT_SEVERITY}"].nll) <= q for name in b.corruptions}
    pos = ev.stress_positions()
    idx = torch.as_tensor(pos)
    x, y = ev.data.test_x[idx], ev.data.test_y[idx]
    logits = stress.run_corruptions_at(ev.model, x, b, ev.device, SHIFT_SEVERITY, pos, ev.data.full_test_size,
                                       tick=ev.tick)
    out = {}
    for name, z in logits.items():
        smp = Samples.from_logits(z.numpy(), y.numpy(), pos, keep_probs=True)
        out[name] = conformal_mod.sets(smp.probs, q, "lac")[np.arange(len(smp)), smp.labels]
    return out
