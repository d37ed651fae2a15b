"""The training objectives and the post-hoc temperature: cross-entropy (hard or soft targets,
label smoothing, class weights), focal loss, and temperature scaling (Guo et al. 2017).
Training code: its source is in the model-cache key (``cache.CODE_FILES``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .recipes import Recipe


class TemperatureScaled(nn.Module):
    """A model whose logits are divided by a temperature fitted after training."""

    def __init__(self, model: nn.Module, temperature: float):
        super().__init__()
        self.model = model
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def forward(self, x):
        return self.model(x) / self.temperature

    def cam_layer(self) -> nn.Module:
        return self.model.cam_layer()



def _loss(logits, target, recipe: Recipe, class_weight):
    """Cross-entropy (hard or soft targets, label smoothing, class weights) or focal loss."""
    if recipe.loss == "ce":
        return F.cross_entropy(logits, target, weight=class_weight, label_smoothing=recipe.label_smoothing)
    k = logits.shape[1]
    if target.ndim == 1:
        target = F.one_hot(target, k).float()
    if recipe.label_smoothing:
        target = target * (1 - recipe.label_smoothing) + recipe.label_smoothing / k
    logp = F.log_softmax(logits.float(), dim=1)
    per_class = -target * (1 - logp.exp()).pow(recipe.focal_gamma) * logp
    if class_weight is not None:
        per_class = per_class * class_weight
    return per_class.sum(1).mean()


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T > 0 that minimises the NLL of softmax(logits / T) (Guo et al. 2017).

    NLL is convex in 1/T, so a bounded scalar search finds the global minimum."""
    from scipy.optimize import minimize_scalar

    z = logits.double()
    y = labels.long()

    def nll(log_beta: float) -> float:
        return float(F.cross_entropy(z * math.exp(log_beta), y))

    res = minimize_scalar(nll, bounds=(math.log(1e-2), math.log(1e2)), method="bounded", options={"xatol": 1e-6})
    beta = math.exp(res.x)
    if nll(res.x) > nll(0.0):  # never worse than T = 1
        beta = 1.0
    return 1.0 / beta
