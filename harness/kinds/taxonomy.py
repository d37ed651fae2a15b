"""The failure modes of the most confident errors (``harness/taxonomy.py``)."""

from __future__ import annotations

from .. import taxonomy as taxonomy_mod
from . import register


def _context(ev) -> dict:
    s = ev.settings
    ctx = {"cam_method": s.cam_method, "cam_layer": s.cam_layer}
    if s.taxonomy_errors != taxonomy_mod.LIMIT:  # (the default keeps the keys it had)
        ctx["taxonomy_errors"] = s.taxonomy_errors
    return ctx


@register("taxonomy", ("taxonomy.py", "explain", "perturb.py", "stress.py", "filters.py"), battery=True, remote=True,
          context=_context, description="the failure mode of each of the most confident errors")
def taxonomy(ev) -> taxonomy_mod.Taxonomy:
    s = ev.samples("test")
    p = ev.result.predictions(ev.data, "test")
    b = ev.battery
    return taxonomy_mod.analyse(ev.model, s, p.probs, ev.data.test_x, ev.device, b.occlusion_patch, b.occlusion_stride,
                                limit=ev.settings.taxonomy_errors)
