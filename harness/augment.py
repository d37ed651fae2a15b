"""Batched tensor augmentations on float images in [0, 1], shape (B, C, H, W).

Every function draws its randomness from the ``torch.Generator`` it is given (on the
images' device), so a seeded training run is reproducible. No per-sample PIL work:
each call transforms the whole batch with a handful of tensor operations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def hflip(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Flip each image left-right with probability p."""
    mask = torch.rand(x.shape[0], generator=gen, device=x.device) < p
    return torch.where(mask[:, None, None, None], x.flip(-1), x)


def random_crop(x: torch.Tensor, padding: int, gen: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``padding`` and crop back to the input size at a random offset per image
    (torchvision's RandomCrop(size, padding))."""
    b, c, h, w = x.shape
    xp = F.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=gen, device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=gen, device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (B, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (B, 1, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    return xp.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


def rotate(x: torch.Tensor, degrees: float, gen: torch.Generator) -> torch.Tensor:
    """Rotate each image by an angle uniform in [-degrees, degrees] about its centre,
    nearest-neighbour, filling with 0 (torchvision's RandomRotation defaults)."""
    b = x.shape[0]
    angle = (torch.rand(b, generator=gen, device=x.device) * 2 - 1) * math.radians(degrees)
    return rotate_by(x, angle)


def rotate_by(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate image i by ``angle[i]`` radians (counter-clockwise)."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros_like(cos)
    # affine_grid maps output coordinates to input coordinates: the inverse rotation.
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def _grey(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return 0.299 * r + 0.587 * g + 0.114 * b


def color_jitter(x: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and (colour images only) saturation, each by a factor uniform in
    [1 - strength, 1 + strength] per image, in that order (torchvision's ColorJitter maths)."""
    b = x.shape[0]

    def factor():
        return (1 + (torch.rand(b, generator=gen, device=x.device) * 2 - 1) * strength)[:, None, None, None]

    x = (x * factor()).clamp(0, 1)  # brightness
    mean = _grey(x).mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * factor() + mean).clamp(0, 1)  # contrast
    if x.shape[1] == 3:
        grey = _grey(x)
        x = ((x - grey) * factor() + grey).clamp(0, 1)  # saturation
    return x


def cutmix_box(h: int, w: int, lam: float, gen: torch.Generator, device) -> tuple[int, int, int, int, float]:
    """A box of area (1 - lam) h w centred uniformly at random, clipped to the image;
    returns (y1, y2, x1, x2, lam) with lam corrected to 1 - clipped area / (h w)."""
    cy = int(torch.randint(0, h, (1,), generator=gen, device=device))
    cx = int(torch.randint(0, w, (1,), generator=gen, device=device))
    return box_at(h, w, lam, cy, cx)


def box_at(h: int, w: int, lam: float, cy: int, cx: int) -> tuple[int, int, int, int, float]:
    """The CutMix box of area (1 - lam) h w centred at (cy, cx), clipped to the image, with lam
    corrected to 1 - clipped area / (h w) (Yun et al. 2019's reference code)."""
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    y1, y2 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x1, x2 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    return y1, y2, x1, x2, 1.0 - (y2 - y1) * (x2 - x1) / (h * w)


def _beta(alpha: float, gen: torch.Generator, device) -> float:
    """One Beta(alpha, alpha) draw, seeded from ``gen`` (torch's Beta sampler takes no generator)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=device))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def cutmix_with(x: torch.Tensor, target: torch.Tensor, box: tuple[int, int, int, int, float], perm: torch.Tensor):
    """Paste ``box`` = (y1, y2, x1, x2, lam) from the batch permuted by ``perm``; mix the soft
    targets by the pasted area. Returns (images, targets, lam). No host synchronisation."""
    y1, y2, x1, x2, lam = box
    x = x.clone()
    x[:, :, y1:y2, x1:x2] = x[perm, :, y1:y2, x1:x2]
    return x, lam * target + (1 - lam) * target[perm], lam


def mixup_with(x: torch.Tensor, target: torch.Tensor, lam: float, perm: torch.Tensor):
    """Convex combination of the batch and its permutation by ``perm`` with weight ``lam``."""
    return lam * x + (1 - lam) * x[perm], lam * target + (1 - lam) * target[perm], lam


def cutmix(x: torch.Tensor, target: torch.Tensor, alpha: float, gen: torch.Generator):
    """CutMix (Yun et al. 2019): paste a box from a shuffled copy of the batch; mix the soft
    targets (B, K) by the pasted area. Returns (images, targets, lam)."""
    b, _, h, w = x.shape
    lam = _beta(alpha, gen, x.device)
    perm = torch.randperm(b, generator=gen, device=x.device)
    return cutmix_with(x, target, cutmix_box(h, w, lam, gen, x.device), perm)


def mixup(x: torch.Tensor, target: torch.Tensor, alpha: float, gen: torch.Generator):
    """MixUp (Zhang et al. 2018): convex combination of the batch and a shuffled copy."""
    lam = _beta(alpha, gen, x.device)
    perm = torch.randperm(x.shape[0], generator=gen, device=x.device)
    return mixup_with(x, target, lam, perm)


@dataclass(frozen=True)
class MixPlan:
    """The CutMix / MixUp draws of one epoch, made up front on the CPU so that the training
    step never waits for the device: per step, which mix (0 none, 1 CutMix, 2 MixUp), its
    lambda, and the CutMix box centre. Drawn from a numpy generator seeded from the recipe's
    CPU generator: the same on every device."""

    kind: np.ndarray
    lam: np.ndarray
    cy: np.ndarray
    cx: np.ndarray

    @classmethod
    def draw(cls, steps: int, h: int, w: int, cutmix_prob: float, cutmix_alpha: float, mixup_prob: float,
             mixup_alpha: float, gen: torch.Generator) -> MixPlan:
        seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        rng = np.random.default_rng(seed)
        u_cut, u_mix = rng.random(steps), rng.random(steps)
        kind = np.where(u_cut < cutmix_prob, 1, np.where(u_mix < mixup_prob, 2, 0))
        lam = np.ones(steps)
        if cutmix_prob:
            lam = np.where(kind == 1, rng.beta(cutmix_alpha, cutmix_alpha, steps), lam)
        if mixup_prob:
            lam = np.where(kind == 2, rng.beta(mixup_alpha, mixup_alpha, steps), lam)
        return cls(kind, lam, rng.integers(0, h, steps), rng.integers(0, w, steps))

    def apply(self, step: int, x: torch.Tensor, target: torch.Tensor, perm: torch.Tensor):
        """(images, soft targets, hard labels for the running accuracy) of step ``step``."""
        kind = int(self.kind[step])
        if kind == 0:
            return x, target, target.argmax(1)
        if kind == 1:
            box = box_at(x.shape[2], x.shape[3], float(self.lam[step]), int(self.cy[step]), int(self.cx[step]))
            x, target, _ = cutmix_with(x, target, box, perm)
        else:
            x, target, _ = mixup_with(x, target, float(self.lam[step]), perm)
        return x, target, target.argmax(1)  # the label covering most of the image
