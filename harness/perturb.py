"""Deterministic geometric and occlusion perturbations, batched, on float images in [0, 1].

Images are tensors (B, C, H, W) on any device; every function works on the whole batch with
a few tensor operations on x's device and returns x's dtype. Unlike ``harness.augment``
(random, for training), these take fixed parameters: they are the stresses of a sweep.

* ``rescale``: down-sample with antialiasing and back up ("low effective resolution").
* ``translate``: integer pixel shifts, filled with a constant.
* ``rotate``: bilinear rotation, counter-clockwise, zero fill (torchvision's
  ``v2.functional.rotate(x, degrees, InterpolationMode.BILINEAR)``).
* ``hflip``: left-right mirror.
* ``occlusion_sweep``: slide a patch over every position of each image and record how much
  the true class's probability drops (Zeiler & Fergus 2014), vectorised over positions.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attacks import eval_mode

# Occlusion patch sizes that make sense per input size (side, stride), in pixels.
# 28x28 (Fashion-MNIST): 8 px with stride 4 -> 6x6 = 36 placements tiling the image exactly
# (0, 4, ..., 20); 8 px is about 8% of the image, the size of a sleeve, a collar or a heel,
# so one patch hides a part, never the whole garment. 32x32 (CIFAR): 8 px with stride 4 ->
# 7x7 = 49 placements (0, 4, ..., 24), again an exact tiling; a part of an object (a wheel,
# a head). Larger patches (12 px at 32, 10 px at 28, as in ``stress.STRESSES``) hide most of
# a small centred object and measure "is the object there" more than "which part matters".
# With ``(size - patch) % stride != 0`` the last rows/columns are never covered (positions
# are ``range(0, size - patch + 1, stride)``, as in Zeiler & Fergus and Captum).
# (the sizes used: harness/cards.py occlusion_for)


def hflip(x: torch.Tensor) -> torch.Tensor:
    """Mirror every image left-right."""
    return x.flip(-1)


def rescale(x: torch.Tensor, factor: float, mode: str = "bilinear") -> torch.Tensor:
    """Down-sample to ``round(factor * size)`` with antialiasing, then up-sample back to the
    input size (bilinear): the same image at a lower effective resolution.

    ``mode``: ``"bilinear"`` (bilinear with ``antialias=True``: a triangle filter widened to
    the down-scaling factor, as PIL and torchvision's ``Resize(antialias=True)`` do) or
    ``"area"`` (box average over the source pixels each output pixel covers). ``factor=1``
    returns a copy of x.
    """
    if not 0 < factor <= 1:
        raise ValueError(f"factor must be in (0, 1], got {factor}")
    if mode not in ("bilinear", "area"):
        raise ValueError(f"mode must be 'bilinear' or 'area', got {mode!r}")
    h, w = x.shape[-2:]
    small = (max(1, round(h * factor)), max(1, round(w * factor)))
    if small == (h, w):
        return x.clone()
    if mode == "area":
        down = F.interpolate(x, size=small, mode="area")
    else:
        down = F.interpolate(x, size=small, mode="bilinear", align_corners=False, antialias=True)
    up = F.interpolate(down, size=(h, w), mode="bilinear", align_corners=False)
    return up.clamp_(0, 1)


def translate(x: torch.Tensor, dx: int | torch.Tensor, dy: int | torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """Shift the content by ``dx`` columns (positive: right) and ``dy`` rows (positive: down),
    filling the uncovered border with ``fill``. ``dx`` / ``dy`` are ints (one shift for the
    batch) or integer tensors (B,) (one shift per image)."""
    if isinstance(dx, torch.Tensor) or isinstance(dy, torch.Tensor):
        return _translate_each(x, dx, dy, fill)
    dx, dy = int(dx), int(dy)
    h, w = x.shape[-2:]
    out = torch.full_like(x, fill)
    if abs(dx) >= w or abs(dy) >= h:
        return out
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
        ..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def _translate_each(x: torch.Tensor, dx, dy, fill: float) -> torch.Tensor:
    b, _, h, w = x.shape
    dx = torch.as_tensor(dx, device=x.device).long().expand(b)
    dy = torch.as_tensor(dy, device=x.device).long().expand(b)
    rows = torch.arange(h, device=x.device)[None, :] - dy[:, None]  # source row of each output row
    cols = torch.arange(w, device=x.device)[None, :] - dx[:, None]
    valid = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]  # (B, H, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    src = x.permute(0, 2, 3, 1)[batch, rows.clamp(0, h - 1)[:, :, None], cols.clamp(0, w - 1)[:, None, :]]
    src = src.permute(0, 3, 1, 2)
    return torch.where(valid[:, None], src, torch.full_like(src, fill))


def rotate(x: torch.Tensor, degrees: float | torch.Tensor) -> torch.Tensor:
    """Rotate each image counter-clockwise by ``degrees`` about its centre, bilinear, filling
    with 0 outside the source (torchvision ``v2.functional.rotate(x, degrees,
    InterpolationMode.BILINEAR)`` with its default ``fill=None``; an explicit ``fill=0`` there
    also darkens the border pixels by their coverage). ``degrees`` is a number or a tensor
    (B,) of per-image angles. Multiples of 90 degrees are exact (``torch.rot90``, as
    torchvision does), for square images."""
    b, _, h, w = x.shape
    if not isinstance(degrees, torch.Tensor):
        d = float(degrees) % 360
        if d == 0:
            return x.clone()
        if d == 180:
            return torch.rot90(x, 2, dims=(-2, -1))
        if h == w and d in (90, 270):
            return torch.rot90(x, 1 if d == 90 else 3, dims=(-2, -1))
    angle = torch.as_tensor(degrees, dtype=torch.float64, device=x.device).expand(b) * (math.pi / 180)
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros_like(cos)
    # affine_grid maps each output pixel to the input pixel it samples (the inverse
    # rotation), in coordinates normalised by (w/2, h/2): rotate in pixel units, then rescale.
    theta = torch.stack([torch.stack([cos, -sin * h / w, zero], 1), torch.stack([sin * w / h, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# ---------------------------------------------------------------------------- occlusion


@dataclass(frozen=True)
class OcclusionResult:
    """Per image (N images, an nh x nw grid of patch placements):

    * ``sensitivity`` (N, nh, nw): clean true-class probability minus the true-class
      probability with the patch at each placement (positive: the patch hurts).
    * ``worst_index`` (N,): flat index into (nh, nw) of the worst placement, the one that
      minimises the true-class probability (= maximises ``sensitivity``; first on ties).
    * ``worst_yx`` (N, 2): top-left pixel (row, column) of that placement.
    * ``worst_pred`` (N,): the predicted class with the patch at the worst placement.
    * ``worst_correct`` (N,): whether that prediction is still the true class.
    * ``clean_prob`` (N,): the true-class probability without occlusion.
    * ``worst_logits`` (N, K): the logits with the patch at the worst placement.
    """

    sensitivity: torch.Tensor
    worst_index: torch.Tensor
    worst_yx: torch.Tensor
    worst_pred: torch.Tensor
    worst_correct: torch.Tensor
    clean_prob: torch.Tensor
    patch: int
    stride: int
    worst_logits: torch.Tensor | None = None

    @property
    def worst_accuracy(self) -> float:
        """Accuracy when every image is occluded at its own worst placement."""
        return float(self.worst_correct.float().mean()) if len(self.worst_correct) else float("nan")


def occlusion_masks(h: int, w: int, patch: int, stride: int, device=None) -> torch.Tensor:
    """Boolean masks (nh * nw, h, w) of every patch placement, row-major; True = occluded."""
    if not (0 < patch <= min(h, w)) or stride < 1:
        raise ValueError(f"need 0 < patch <= {min(h, w)} and stride >= 1, got patch={patch}, stride={stride}")
    tops = torch.arange(0, h - patch + 1, stride, device=device)
    lefts = torch.arange(0, w - patch + 1, stride, device=device)
    r = torch.arange(h, device=device)
    c = torch.arange(w, device=device)
    in_rows = (r[None, :] >= tops[:, None]) & (r[None, :] < tops[:, None] + patch)  # (nh, h)
    in_cols = (c[None, :] >= lefts[:, None]) & (c[None, :] < lefts[:, None] + patch)  # (nw, w)
    masks = in_rows[:, None, :, None] & in_cols[None, :, None, :]  # (nh, nw, h, w)
    return masks.reshape(-1, h, w)


@contextmanager
def channels_last(model: nn.Module) -> Iterator[nn.Module]:
    """Run the block with the model's 4-D tensors (convolution weights) in channels-last
    memory format, then put them back as they were. Same values and Parameter objects (an
    optimiser holding them is unaffected); on the CPU (oneDNN) this about halves the time
    of the small CNN's forward pass. A model already in channels-last is left alone."""
    tensors = [t for t in (*model.parameters(), *model.buffers()) if t.dim() == 4]
    if not tensors or all(t.is_contiguous(memory_format=torch.channels_last) for t in tensors):
        yield model
        return
    model.to(memory_format=torch.channels_last)
    try:
        yield model
    finally:
        model.to(memory_format=torch.contiguous_format)


@torch.no_grad()
def occlusion_sweep(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    patch: int = 8,
    stride: int = 4,
    fill: float | str = 0.5,
    batch_size: int | None = None,
    use_channels_last: bool = True,
) -> OcclusionResult:
    """Occlude each image with a ``patch`` x ``patch`` square at every placement on a grid of
    step ``stride`` and measure the true-class probability (softmax of the model's logits,
    eval mode, training flag restored).

    ``fill``: a grey level in [0, 1] (default 0.5, mid grey, as ``stress.occlude``) or
    ``"mean"``: each image's own per-channel mean, which hides the content without adding an
    unusual grey square (a mid-grey square is bright on Fashion-MNIST's black background).

    Vectorised: all placements of a group of images are stacked into one tensor
    (``torch.where`` with a precomputed (P, H, W) mask) and evaluated ``batch_size`` model
    inputs at a time. ``batch_size`` defaults to 128 on the CPU (larger batches fall out of
    the cache: 1024 is about 1.6x slower for the small CNN) and 4096 elsewhere.
    ``use_channels_last``: run the model in channels-last format for the sweep (see
    ``channels_last``). Results are on x's device. Sizes: ``cards.occlusion_for``.
    """
    if isinstance(fill, str) and fill != "mean":
        raise ValueError(f"fill must be a number or 'mean', got {fill!r}")
    if batch_size is None:
        batch_size = 128 if x.device.type == "cpu" else 4096
    n, c, h, w = x.shape
    masks = occlusion_masks(h, w, patch, stride, x.device)  # (P, h, w)
    nh = len(range(0, h - patch + 1, stride))
    nw = len(range(0, w - patch + 1, stride))
    p = masks.shape[0]
    per_group = max(1, batch_size // p)  # images whose occluded copies make one forward batch
    y = y.to(x.device)
    sens, worst_idx, worst_pred, worst_logits = [], [], [], []
    with eval_mode(model), channels_last(model) if use_channels_last else nullcontext():
        clean_prob = torch.cat(
            [_true_prob(model(x[i : i + batch_size]), y[i : i + batch_size]) for i in range(0, n, batch_size)]
            or [x.new_empty(0)]
        )
        for i in range(0, n, per_group):
            xb, yb = x[i : i + per_group], y[i : i + per_group]
            b = len(xb)
            if fill == "mean":
                value = xb.mean(dim=(2, 3), keepdim=True)[:, None]  # (b, 1, c, 1, 1)
            else:
                value = torch.tensor(float(fill), dtype=x.dtype, device=x.device)
            occluded = torch.where(masks[None, :, None], value, xb[:, None])  # (b, P, c, h, w)
            occluded = occluded.reshape(b * p, c, h, w)
            logits = torch.cat([model(occluded[j : j + batch_size]) for j in range(0, b * p, batch_size)])
            logits = logits.float().reshape(b, p, -1)
            prob_true = _true_prob(logits.reshape(b * p, -1), yb.repeat_interleave(p)).reshape(b, p)
            worst = prob_true.argmin(1)
            worst_idx.append(worst)
            at_worst = logits[torch.arange(b, device=x.device), worst]
            worst_logits.append(at_worst)
            worst_pred.append(at_worst.argmax(-1))
            sens.append(clean_prob[i : i + b, None] - prob_true)
    if n == 0:
        empty = torch.empty(0, device=x.device)
        sensitivity = empty.reshape(0, nh, nw)
        worst_index = pred = empty.long()
        at_worst = empty.reshape(0, 0)
    else:
        sensitivity = torch.cat(sens).reshape(n, nh, nw)
        worst_index = torch.cat(worst_idx)
        pred = torch.cat(worst_pred)
        at_worst = torch.cat(worst_logits)
    worst_yx = torch.stack([(worst_index // nw) * stride, (worst_index % nw) * stride], 1)
    return OcclusionResult(
        sensitivity=sensitivity,
        worst_index=worst_index,
        worst_yx=worst_yx,
        worst_pred=pred,
        worst_correct=pred == y,
        clean_prob=clean_prob.float(),
        patch=patch,
        stride=stride,
        worst_logits=at_worst,
    )


def _true_prob(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Softmax probability (float32) of the true class y under each row of logits."""
    return logits.float().softmax(-1).gather(1, y[:, None])[:, 0]
