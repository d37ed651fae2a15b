"""The failure modes of the most confident errors (``harness/taxonomy.py``)."""

from __future__ import annotations

import numpy as np
import torch

from .. import taxonomy as taxonomy_mod
from ..evaluate import to_float
from . import recorder, register


def _context(ev) -> dict:
    s = ev.settings
    ctx = {"cam_method": s.cam_method, "cam_layer": s.cam_layer}
    if s.taxonomy_errors != taxonomy_mod.LIMIT:  # (the default keeps the keys it had)
        ctx["taxonomy_errors"] = s.taxonomy_errors
    return ctx


@register("taxonomy", ("taxonomy.py", "explain", "perturb.py", "stress.py", "filters.py"), gradients=True, battery=True, remote=True,
          context=_context, evidence_classes=("harness.taxonomy:Taxonomy",), in_every_report=True,
          description="the failure mode of each of the most confident errors")
def taxonomy(ev) -> taxonomy_mod.Taxonomy:
    s = ev.samples("test")
    p = ev.result.predictions(ev.data, "test")
    b = ev.battery
    return taxonomy_mod.analyse(ev.model, s, p.probs, ev.data.test_x, ev.device, b.occlusion_patch, b.occlusion_stride,
                                limit=ev.settings.taxonomy_errors)


@recorder("taxonomy", arrays="failure_modes")
def taxonomy_record(run, m: str, examples: int = 4) -> tuple[dict, dict | None]:
    """The failure taxonomy of a model's confident errors, and example images per mode."""
    ev, classes = run.evaluation(m), list(run.data.classes)
    t = ev.evidence("taxonomy")
    smp = ev.samples("test")
    by_class = t.by_class(smp.labels, smp.num_classes)
    rec = {
        "threshold": taxonomy_mod.THRESHOLD, "errors": len(t.positions), "confident_errors": t.total,
        "modes": list(taxonomy_mod.MODES),
        "counts": t.counts(),
        "by_class": {classes[c]: dict(zip(taxonomy_mod.MODES, map(int, row))) for c, row in enumerate(by_class) if row.any()},
        "signals": {"label_issue": int(t.label_issue.sum()), "runner_up_is_label": int(t.runner_up_is_label.sum()),
                    "border_mass_over_threshold": int(np.nansum(t.border_mass > taxonomy_mod.BORDER_MASS)),
                    "occlusion_flip": int(t.occlusion_flip.sum()), "scale_flip": int(t.scale_flip.sum())},
        "errors_by_id": [{"id": int(smp.ids[p]), "label": classes[int(smp.labels[p])], "pred": classes[int(smp.pred[p])],
                          "confidence": float(smp.conf[p]), "mode": mode}
                         for p, mode in zip(t.positions, t.modes)],
    }
    chosen = [p for mode in taxonomy_mod.MODES for p in [q for q, mm in zip(t.positions, t.modes) if mm == mode][:examples]]
    if not chosen:
        return rec, None
    mode_of = dict(zip(t.positions.tolist(), t.modes))
    idx = torch.as_tensor(chosen)
    arrays = {"images": to_float(run.data.test_x[idx]).numpy(), "ids": smp.ids[chosen],
              "labels": smp.labels[chosen], "preds": smp.pred[chosen], "confidences": smp.conf[chosen],
              "modes": np.asarray([mode_of[p] for p in chosen])}
    return rec, arrays
