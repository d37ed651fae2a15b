"""Grad-CAM (pytorch-grad-cam) and attention metrics.

* ``gradcam``: heatmaps in [0, 1] at input resolution for a target class per image
  (the predicted class by default: "what was the model looking at when it said that").
* ``concentration``: share of a heatmap's total mass held by its top ``top`` fraction of
  pixels. A uniform map gives ``top`` (0.2), a single hot pixel gives 1.0: the higher, the
  more the model fixates on one region (seed 001: "fixates on the spatially dominant
  texture"); the lower, the more diffuse the attention (seed 000).
* ``confidence_change``: pytorch-grad-cam's CamMultImageConfidenceChange: the change of the
  target's probability when the image is multiplied by its own heatmap (keeping only what
  the model looked at). Near 0 or positive: the heatmap holds the evidence.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _cam_layer(model: nn.Module) -> nn.Module:
    if hasattr(model, "cam_layer"):
        return model.cam_layer()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("model has no cam_layer() and no Conv2d layer for Grad-CAM")
    return convs[-1]


def gradcam(model: nn.Module, images: torch.Tensor, targets: list[int] | None = None, device="cpu") -> np.ndarray:
    """Grad-CAM heatmaps (M, H, W) in [0, 1] for float images (M, C, H, W) in [0, 1]."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = model.eval().to(device)
    x = images.to(device).float()
    if targets is None:
        with torch.no_grad():
            targets = model(x).argmax(1).tolist()
    with GradCAM(model=model, target_layers=[_cam_layer(model)]) as cam:
        maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    return np.nan_to_num(np.asarray(maps, dtype=np.float32))


def concentration(cams: np.ndarray, top: float = 0.2) -> np.ndarray:
    """Per map: the share of the total heatmap mass in its ``top`` fraction of pixels
    (NaN for an all-zero map, which has no attention to measure)."""
    flat = np.asarray(cams, dtype=np.float64).reshape(len(cams), -1)
    k = max(1, int(round(top * flat.shape[1])))
    total = flat.sum(1)
    top_mass = -np.sort(-flat, axis=1)[:, :k].sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, top_mass / np.where(total > 0, total, 1), np.nan)


def confidence_change(model: nn.Module, images: torch.Tensor, cams: np.ndarray, targets: list[int], device="cpu") -> np.ndarray:
    """pytorch-grad-cam's CamMultImageConfidenceChange per image."""
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    metric = CamMultImageConfidenceChange()
    x = images.to(device).float()
    scores = metric(x, cams, [ClassifierOutputSoftmaxTarget(int(t)) for t in targets], model.eval().to(device))
    return np.asarray(scores, dtype=np.float64).reshape(-1)


def attention_report(model: nn.Module, images: torch.Tensor, targets: list[int], device="cpu") -> dict:
    """Heatmaps and their metrics for a set of images (e.g. the most confident errors)."""
    cams = gradcam(model, images, targets, device)
    conc = concentration(cams)
    change = confidence_change(model, images, cams, targets, device)
    return {
        "cams": cams,
        "concentration": conc,
        "confidence_change": change,
        "cam_concentration": float(np.nanmean(conc)) if np.isfinite(conc).any() else float("nan"),
        "cam_empty_share": float(np.isnan(conc).mean()),
        "cam_confidence_change": float(np.mean(change)),
    }
