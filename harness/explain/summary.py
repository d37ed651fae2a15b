"""Every attention metric of a set of images at once (``attention_summary``), and the scalars the
stress tests gate (``attention_report``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .cams import _as_images, cam_maps
from .concentration import concentration_metrics, top_share

# ----------------------------------------------------------------------------- summaries
from .faithfulness import confidence_change, deletion_insertion
from .sanity import randomisation_check


def _subset(n: int, k: int | None) -> np.ndarray:
    if k is None or k >= n:
        return np.arange(n)
    return np.unique(np.rint(np.linspace(0, n - 1, k)).astype(np.int64))


def attention_summary(
    model: nn.Module,
    images,
    targets: Sequence[int] | np.ndarray | None = None,
    *,
    method: str = "gradcam",
    layer: str | nn.Module | None = None,
    device="cpu",
    steps: int = 10,
    baseline: str = "blur",
    randomisation_images: int | None = 64,
    stop_at_cam_layer: bool = False,
    seed: int = 0,
    batch_size: int = 512,
    ids=None,
) -> dict:
    """All attention metrics for a set of images, per image (arrays of length M). With ``ids``
    (an id per image) and ``randomisation_images=None`` every per-image score is a function
    of the model and the image alone, whatever else is in the set:
    ``maps`` (M, H, W), ``raw`` (M, h, w), ``targets``, ``reason``, ``gini``, ``entropy``,
    ``top10``, ``deletion_auc``, ``insertion_auc``, ``random_deletion_auc``,
    ``random_insertion_auc``, ``deletion_gap``, ``insertion_gap``; plus ``randomisation``
    (``randomisation_check`` on ``randomisation_images`` evenly spaced images, None = all,
    0 = skipped; ``stop_at_cam_layer`` ends the cascade at the gated step, which saves most
    of its cost on a ResNet-18: 7 of 21 steps for ``layer3``), ``reason_counts``, ``method``, ``layer``, ``layer_shape``, ``timings`` (s)."""
    import time

    t0 = time.perf_counter()
    x = _as_images(images)
    cam = cam_maps(model, x, targets, method=method, layer=layer, device=device, batch_size=min(batch_size, 256))
    t1 = time.perf_counter()
    conc = concentration_metrics(cam.raw)
    faith = deletion_insertion(model, x, cam.maps, cam.targets, steps=steps, baseline=baseline, random_shape=cam.layer_shape,
                               skip=cam.degenerate, seed=seed, device=device, batch_size=batch_size, ids=ids)
    t2 = time.perf_counter()
    rand = None
    if randomisation_images != 0 and len(x):
        sub = _subset(len(x), randomisation_images)
        ref = np.maximum(cam.raw[sub].astype(np.float64), 0.0)
        ref[cam.degenerate[sub]] = np.nan
        rand = randomisation_check(model, x[sub], cam.targets[sub], method=method, layer=cam.layer if layer is None or isinstance(layer, str) else layer,
                                   device=device, seed=seed, reference=ref, stop_at_cam_layer=stop_at_cam_layer,
                                   batch_size=min(batch_size, 256))
        rand["indices"] = sub
    t3 = time.perf_counter()
    out = {
        "maps": cam.maps,
        "raw": cam.raw,
        "targets": cam.targets,
        "reason": cam.reasons,
        "gini": conc["gini"],
        "entropy": conc["entropy"],
        "top10": conc["top10"],
        "top20": top_share(cam.raw, 0.2),
        **{k: faith[k] for k in ("deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc", "deletion_gap", "insertion_gap")},
        "curves": {k: faith[k] for k in ("fractions", "deletion_curve", "insertion_curve", "random_deletion_curve", "random_insertion_curve")},
        "randomisation": rand,
        "reason_counts": cam.reason_counts(),
        "method": cam.method,
        "layer": cam.layer,
        "layer_shape": cam.layer_shape,
        "timings": {"maps": t1 - t0, "faithfulness": t2 - t1, "randomisation": t3 - t2, "total": t3 - t0},
    }
    return out


def _mean(a) -> float:
    a = np.asarray(a, dtype=np.float64)
    return float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")


def attention_report(model: nn.Module, images: torch.Tensor, targets: Sequence[int] | None, device="cpu", **kwargs) -> dict:
    """``attention_summary`` plus the scalars the stress tests gate (means over the scored,
    i.e. non-degenerate, maps):

    * ``cam_gini`` (higher = more concentrated), ``cam_entropy`` (lower = more concentrated),
      ``cam_top10``, ``cam_concentration`` (older: share in the top 20%), at layer resolution;
    * ``cam_empty_share``: share of degenerate maps (any reason; upper bound), and
      ``cam_degenerate_<reason>`` counts;
    * ``cam_deletion_gap`` / ``cam_insertion_gap``: mean area between the random map's and
      the CAM's curves (> 0 = better than random; lower bound), and the four mean AUCs;
    * ``cam_randomisation_corr``: the randomisation check's ``score`` (upper bound);
    * ``cam_confidence_change``: pytorch-grad-cam's CamMultImageConfidenceChange (mean over
      all maps).

    Per image, as before: ``cams`` (the [0, 1] maps), ``concentration`` (top-20% share, NaN
    where degenerate), ``confidence_change``; everything else is in ``summary``.
    """
    s = attention_summary(model, images, targets, device=device, **kwargs)
    x = _as_images(images)
    # computed for every map as before (a degenerate map is all zero: the change for a black image)
    change = confidence_change(model, x, s["maps"], s["targets"], device)
    rand = s["randomisation"] or {}
    report = {
        "cam_gini": _mean(s["gini"]),
        "cam_entropy": _mean(s["entropy"]),
        "cam_top10": _mean(s["top10"]),
        "cam_concentration": _mean(s["top20"]),
        "cam_empty_share": float((s["reason"] != "").mean()) if len(x) else float("nan"),
        **{f"cam_degenerate_{r}": n for r, n in s["reason_counts"].items()},
        "cam_deletion_auc": _mean(s["deletion_auc"]),
        "cam_insertion_auc": _mean(s["insertion_auc"]),
        "cam_random_deletion_auc": _mean(s["random_deletion_auc"]),
        "cam_random_insertion_auc": _mean(s["random_insertion_auc"]),
        "cam_deletion_gap": _mean(s["deletion_gap"]),
        "cam_insertion_gap": _mean(s["insertion_gap"]),
        "cam_randomisation_corr": rand.get("score", float("nan")),
        "cam_confidence_change": _mean(change),
    }
    return {**report, "summary": s, "cams": s["maps"], "concentration": s["top20"], "confidence_change": change}
