"""Robustness stresses in pixel space: corruptions, occlusion, adversarial (FGSM).

Each stress is applied to the first ``n`` test images (a fixed, seeded subset, the same
for every model of a run) and reports the accuracy on the stressed images. Corruption
strengths are fixed per dataset (``STRESSES``) so numbers are comparable across runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .evaluate import to_float

# name -> parameters; eps values are L-inf in [0, 1] pixel units.
STRESSES = {
    "fashion-mnist": {"noise_sigma": 0.1, "contrast": 0.5, "brightness": 0.3, "occlusion": 10, "fgsm_eps": 0.05},
    "cifar10": {"noise_sigma": 0.05, "contrast": 0.5, "brightness": 0.2, "occlusion": 12, "fgsm_eps": 2 / 255},
    "cifar100": {"noise_sigma": 0.05, "contrast": 0.5, "brightness": 0.2, "occlusion": 12, "fgsm_eps": 2 / 255},
}
SEED = 0


def gaussian_noise(x: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    return (x + sigma * torch.randn(x.shape, generator=gen, device=x.device)).clamp(0, 1)


def low_contrast(x: torch.Tensor, factor: float) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * factor + mean).clamp(0, 1)


def brighten(x: torch.Tensor, delta: float) -> torch.Tensor:
    return (x + delta).clamp(0, 1)


def occlude(x: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """A grey square of side ``size`` at a random position in each image."""
    b, _, h, w = x.shape
    ys = torch.randint(0, h - size + 1, (b,), generator=gen, device=x.device)
    xs = torch.randint(0, w - size + 1, (b,), generator=gen, device=x.device)
    rows = torch.arange(h, device=x.device)[None, :, None]
    cols = torch.arange(w, device=x.device)[None, None, :]
    mask = (rows >= ys[:, None, None]) & (rows < ys[:, None, None] + size)
    mask = mask & (cols >= xs[:, None, None]) & (cols < xs[:, None, None] + size)
    return torch.where(mask[:, None], torch.full_like(x, 0.5), x)


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Fast gradient sign attack (Goodfellow et al. 2015) at L-inf ``eps``."""
    x = x.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), y)
    (grad,) = torch.autograd.grad(loss, x)
    return (x + eps * grad.sign()).clamp(0, 1).detach()


@torch.no_grad()
def _logits(model, x) -> torch.Tensor:
    return model(x).float().cpu()


def robustness(model: nn.Module, x_uint8: torch.Tensor, y: torch.Tensor, dataset: str, device="cpu",
               batch_size: int = 500) -> dict[str, torch.Tensor]:
    """Logits (N, K) on clean and stressed copies of the given images, per stress."""
    p = STRESSES[dataset]
    model = model.eval().to(device)
    gen = torch.Generator(device=device).manual_seed(SEED)
    out: dict[str, list[torch.Tensor]] = {k: [] for k in ("clean", "noise", "contrast", "brightness", "occlusion", "fgsm")}
    for i in range(0, len(y), batch_size):
        xb = to_float(x_uint8[i : i + batch_size].to(device))
        yb = y[i : i + batch_size].to(device)
        out["clean"].append(_logits(model, xb))
        out["noise"].append(_logits(model, gaussian_noise(xb, p["noise_sigma"], gen)))
        out["contrast"].append(_logits(model, low_contrast(xb, p["contrast"])))
        out["brightness"].append(_logits(model, brighten(xb, p["brightness"])))
        out["occlusion"].append(_logits(model, occlude(xb, p["occlusion"], gen)))
        out["fgsm"].append(_logits(model, fgsm(model, xb, yb, p["fgsm_eps"])))
    return {k: torch.cat(v) for k, v in out.items()}
