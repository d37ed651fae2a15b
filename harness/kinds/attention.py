"""Grad-CAM evidence (``harness/explain``): each model explained on its own set (named cases,
its most confident errors, a right prediction of the same class for each), what its attention
gates read; and on the run's shared set (the union of the own sets of the models compared with
it), for the paired comparison and the report."""

from __future__ import annotations

from dataclasses import fields as dataclass_fields
from dataclasses import replace as dataclass_replace

import numpy as np
import torch

from .. import explain, metrics
from ..evaluate import to_float
from ..metrics import Samples
from . import recorder, register

ATTENTION_SEED = 7
CODE = ("explain", "filters.py")


def explanation_set(name: str, s: Samples, named, errors: int) -> dict[int, list[str]]:
    """One model's own explanation set, {test position: roles}: the named cases, its ``errors``
    most confident errors, and for each a right prediction of the same true class (seeded,
    chosen from this model's predictions alone): a function of the model and the data only."""
    roles: dict[int, list[str]] = {int(p): ["named"] for p in named}
    rng = np.random.default_rng(ATTENTION_SEED)
    wrong = metrics.most_confident_errors(s)[:errors]
    for p in wrong:
        roles.setdefault(int(p), []).append(f"error:{name}")
    for p in wrong:
        pool = np.flatnonzero(s.hit & (s.labels == s.labels[p]))
        if len(pool):
            roles.setdefault(int(rng.choice(pool)), []).append(f"correct:{name}")
    return roles


def as_set(roles: dict[int, list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """{position: roles} -> (sorted positions, "role,role" per position)."""
    pos = np.array(sorted(roles), dtype=np.int64)
    return pos, np.array([",".join(dict.fromkeys(roles[int(p)])) for p in pos], dtype=str)


def explain_positions(ev, pos: np.ndarray, roles: np.ndarray, sanity: bool = True) -> metrics.Attention:
    """Grad-CAM scores of a model on test positions ``pos``, per image: each is a function of the
    model and the image alone (random maps seeded per test id; the randomisation check, unless
    ``sanity`` is off, on every image: NaN where it is not run)."""
    s = ev.samples("test")
    n = len(pos)
    if n == 0:
        e = np.zeros(0)
        return metrics.Attention(e.astype(np.int64), e.astype(str), e.astype(str), e.astype(bool), *([e] * 7))
    x = to_float(ev.data.test_x[torch.as_tensor(pos)])
    out = explain.attention_summary(ev.model, x, s.pred[pos], method=ev.settings.cam_method,
                                    layer=ev.settings.cam_layer, device=ev.device, ids=s.ids[pos],
                                    randomisation_images=None if sanity else 0)
    change = explain.confidence_change(ev.model, x, out["maps"], out["targets"], ev.device)
    randomised = np.full(n, np.nan)
    rand = out.get("randomisation")
    if rand:
        step = rand["cam_step"] if rand.get("cam_step") is not None else len(rand["correlation"]) - 1
        randomised[np.asarray(rand["indices"])] = np.asarray(rand["correlation"])[step]
    ev.attention_maps = {"layer": out["layer"], "layer_shape": list(out["layer_shape"]), "method": out["method"]}
    return metrics.Attention(
        ids=s.ids[pos], roles=np.asarray(roles), reason=np.asarray(out["reason"]), hit=s.hit[pos],
        gini=np.asarray(out["gini"]), entropy=np.asarray(out["entropy"]), top10=np.asarray(out["top10"]),
        deletion_gap=np.asarray(out["deletion_gap"]), insertion_gap=np.asarray(out["insertion_gap"]),
        randomisation=randomised, confidence_change=np.asarray(change, dtype=np.float64))


def _context(ev) -> dict:
    return {"cam_method": ev.settings.cam_method, "cam_layer": ev.settings.cam_layer}


ATTENTION_CLASS = ("harness.metrics.attention:Attention",)


@register("attention", CODE, gradients=True, remote=True, context=_context, keyed_by_positions=True, evidence_classes=ATTENTION_CLASS,
          description="Grad-CAM scores on the model's own explanation set (what its attention gates read)")
def attention(ev) -> metrics.Attention:
    return explain_positions(ev, *ev.own_set())


@register("attention_extra", CODE, gradients=True, context=_context, keyed_by_positions=True, evidence_classes=ATTENTION_CLASS,
          description="Grad-CAM scores on the images of the shared set outside the model's own")
def attention_extra(ev, positions=None) -> metrics.Attention:
    return explain_positions(ev, positions, np.full(len(positions), ""), sanity=False)


@register("shared_attention", (), cheap=True,
          description="Grad-CAM scores on the run's shared explanation set, its own set's and the others'")
def shared_attention(ev) -> metrics.Attention:
    pos, roles = ev.attention_set()
    own_pos = ev.own_set()[0]
    own = ev.evidence("attention")
    missing = pos[~np.isin(pos, own_pos)]
    # the randomisation check is a property of the model, gated on its own set: not repeated here
    extra = ev._timed("attention_extra", lambda: attention_extra(ev, missing), missing)
    both = metrics.Attention(*(np.concatenate([getattr(own, f.name), getattr(extra, f.name)])
                               for f in dataclass_fields(metrics.Attention)))
    where = {int(p): i for i, p in enumerate(np.concatenate([own_pos, missing]))}
    return dataclass_replace(both.take(np.array([where[int(p)] for p in pos], dtype=np.int64)),
                             roles=np.asarray(roles))


@recorder("shared_attention", key="attention")
def attention_record(run, m: str) -> dict:
    """The shared explanation set's scores of one model, overall and split by whether the model
    is right (its confident errors against right predictions of the same classes)."""
    ev, a = run.evaluation(m), run.shared_attention(m)
    if a is None:
        return {}
    if len(a) == 0:
        return {"images": 0}
    names = ("cam_gini", "cam_entropy", "cam_top10", "cam_deletion_gap", "cam_insertion_gap", "cam_randomisation_corr",
             "cam_degenerate_share")

    def scores(idx) -> dict:
        out = {"images": int(len(idx))}
        for n in names:
            try:
                out[n] = metrics.get(n).compute(a.take(idx)) if len(idx) else None
            except metrics.NotApplicable:
                out[n] = None
        return out

    maps = getattr(ev, "attention_maps", {})
    reasons, counts = np.unique(a.reason[a.reason != ""], return_counts=True)
    return {
        "images": len(a), "ids": a.ids.tolist(), "roles": a.roles.tolist(), "method": maps.get("method"),
        "layer": maps.get("layer"),
        "layer_shape": list(maps.get("layer_shape") or []),
        "degenerate": dict(zip(reasons.tolist(), counts.tolist())),
        "all": scores(np.arange(len(a))), "wrong": scores(np.flatnonzero(~a.hit)), "right": scores(np.flatnonzero(a.hit)),
    }
