"""Attention metrics of Grad-CAM maps (docs/explain.md): concentration, degenerate maps,
faithfulness against random maps, the randomisation sanity check, confidence change."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import fields as dataclass_fields

import numpy as np

from . import robustness  # noqa: F401 - registered first: REGISTRY keeps the order accuracy .. attention
from .registry import register, register_family
from .samples import HIGHER, LOWER, NEUTRAL, NotApplicable

register_family("explain", "Grad-CAM attention tests")

# ---------------------------------------------------------------------------- attention (Grad-CAM)
# Evidence ``attention``: one ``Attention`` per model on the run's shared explanation set (the
# same images for every model: the seed's named cases, each model's most confident errors and
# correct predictions of the same classes), each image explained for the model's own
# prediction. Per-image scores (harness/explain/) are NaN where the map is degenerate (all
# zero, constant or not finite); such maps are counted, never scored.


@dataclass(frozen=True)
class Attention:
    ids: np.ndarray  # test ids of the shared explanation set
    roles: np.ndarray  # why each image is in the set, e.g. "error:baseline,correct:augment"
    reason: np.ndarray  # "" for a valid map, else why it is degenerate
    hit: np.ndarray  # whether this model predicts the image right
    gini: np.ndarray
    entropy: np.ndarray
    top10: np.ndarray
    deletion_gap: np.ndarray  # random map's deletion AUC minus the CAM's (> 0: better than random)
    insertion_gap: np.ndarray  # CAM's insertion AUC minus the random map's
    randomisation: np.ndarray  # rank correlation with the randomised model's map (NaN: not checked)
    confidence_change: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, idx) -> Attention:
        return Attention(*(getattr(self, f.name)[idx] for f in dataclass_fields(self)))


def _attention(a: Attention) -> Attention:
    if len(a) == 0:
        raise NotApplicable("no images to explain (no model makes an error and no case is named)")
    return a


def _valid_mean(a: Attention, values: np.ndarray, what: str) -> float:
    v = np.asarray(values, dtype=np.float64)[_attention(a).reason == ""]
    v = v[np.isfinite(v)]
    if len(v) == 0:
        raise NotApplicable(f"no valid heatmap to score {what} on (every map is degenerate)")
    return float(v.mean())


def _explain(name, description, direction, unit="score", paired=True, **kwargs):
    return register(name, "explain", description, direction, unit, needs=("attention",), paired=paired, **kwargs)


@_explain("cam_gini", "Gini index of the heatmap (0 spread evenly, 1 on one cell), mean over valid maps", NEUTRAL,
          range_=(0.0, 1.0), scale="logit")
def cam_gini(a: Attention) -> float:
    return _valid_mean(a, a.gini, "the Gini index")


@_explain("cam_entropy", "normalised entropy of the heatmap (1 spread evenly, 0 on one cell), mean over valid maps",
          NEUTRAL, range_=(0.0, 1.0), gated=False)
def cam_entropy(a: Attention) -> float:
    return _valid_mean(a, a.entropy, "the entropy")


@_explain("cam_top10", "share of heatmap mass in its top 10% of cells, mean over valid maps", NEUTRAL, "share", gated=False)
def cam_top10(a: Attention) -> float:
    return _valid_mean(a, a.top10, "the top-10% share")


@_explain("cam_degenerate_share", "share of heatmaps that are degenerate (all zero, constant or not finite)", LOWER,
          "share")
def cam_degenerate_share(a: Attention) -> float:
    return float((_attention(a).reason != "").mean())


@_explain("cam_deletion_gap", "faithfulness: area by which deleting the top pixels first lowers the class's "
          "probability faster than random", HIGHER, "probability", range_=(-1.0, 1.0))
def cam_deletion_gap(a: Attention) -> float:
    return _valid_mean(a, a.deletion_gap, "deletion")


@_explain("cam_insertion_gap", "faithfulness: area by which inserting the top pixels first raises the class's "
          "probability faster than random", HIGHER, "probability", range_=(-1.0, 1.0))
def cam_insertion_gap(a: Attention) -> float:
    return _valid_mean(a, a.insertion_gap, "insertion")


@_explain("cam_randomisation_corr", "sanity: rank correlation of the maps with those after randomising the "
          "weights down to the CAM layer", LOWER, range_=(-1.0, 1.0), scale="fisher")
def cam_randomisation_corr(a: Attention) -> float:
    return _valid_mean(a, a.randomisation, "the randomisation check")


@_explain("cam_confidence_change", "change of the predicted class's probability when the image is multiplied by "
          "its heatmap", HIGHER, "probability", range_=(-1.0, 1.0))
def cam_confidence_change(a: Attention) -> float:
    return float(np.mean(_attention(a).confidence_change))


@_explain("cam_gini_error_gap", "Gini on the model's wrong images minus Gini on its right images of the same "
          "classes", NEUTRAL, paired=False, range_=(-1.0, 1.0), gated=False)
def cam_gini_error_gap(a: Attention) -> float:
    _attention(a)
    valid = (a.reason == "") & np.isfinite(a.gini)
    wrong = valid & ~a.hit
    right = valid & a.hit
    if not wrong.any() or not right.any():
        raise NotApplicable("the explanation set has no valid map of a wrong or of a right prediction")
    return float(a.gini[wrong].mean() - a.gini[right].mean())
