"""Faithfulness: deletion and insertion against a random map (Petsiuk et al. 2018), and the
confidence change when the image is multiplied by its map (docs/explain.md)."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..filters import gaussian_blur
from .cams import _as_images, _Borrowed

BASELINES = ("blur", "mean", "zero")



def perturbation_baseline(images, kind: str = "blur") -> torch.Tensor:
    """The image that removed pixels are replaced with: ``blur`` (Gaussian, sigma = side / 8,
    truncated at 3 sigma, edges repeated: ``filters.gaussian_blur``), ``mean`` (per image and
    channel) or ``zero``."""
    x = _as_images(images)
    if kind == "blur":
        return gaussian_blur(x, max(x.shape[-2:]) / 8.0, truncate=3.0)
    if kind == "mean":
        return x.mean((2, 3), keepdim=True).expand_as(x).clone()
    if kind == "zero":
        return torch.zeros_like(x)
    raise ValueError(f"unknown baseline {kind!r}: choose one of {', '.join(BASELINES)}")


def _ranks(maps: np.ndarray, rng: np.random.Generator, seed: int = 0, ids=None) -> np.ndarray:
    """(M, P) position of each pixel in the most-relevant-first order (ties in random order)."""
    m = maps.reshape(len(maps), -1)
    order = np.lexsort((_tie_noise(m.shape, rng, seed, ids), -m), axis=-1)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(m.shape[1])[None, :].repeat(len(m), 0), axis=-1)
    return ranks


def random_maps(n: int, shape: tuple[int, int], size: tuple[int, int], seed: int = 0, ids=None) -> np.ndarray:
    """Uniform noise at ``shape`` (the CAM layer's), bilinearly upsampled to ``size``. With
    ``ids`` (one per image) each image's noise is seeded by its id, so an image gets the same
    random map whichever set it is explained in."""
    if ids is None:
        g = torch.Generator().manual_seed(seed)
        noise = torch.rand((n, 1, *shape), generator=g)
    else:
        noise = torch.stack([torch.rand((1, *shape), generator=torch.Generator().manual_seed(_image_seed(seed, i)))
                             for i in ids]) if n else torch.zeros((0, 1, *shape))
    return F.interpolate(noise, size=size, mode="bilinear", align_corners=False)[:, 0].numpy()


def _image_seed(seed: int, image_id: int) -> int:
    return (int(seed) * 1_000_003 + int(image_id)) % (2**63)


def _tie_noise(shape: tuple[int, ...], rng: np.random.Generator, seed: int, ids) -> np.ndarray:
    """Random tie-breakers for ``_ranks`` (M, P): from ``rng``, or seeded per image id."""
    if ids is None:
        return rng.random(shape)
    return np.stack([np.random.default_rng(_image_seed(seed, i) + 1).random(shape[1:]) for i in ids]) \
        if len(ids) else np.zeros(shape)


def _fast_copy(model: nn.Module, device: torch.device) -> nn.Module:
    """An eval-mode copy for inference (channels-last on the CPU: ~1.5x faster convolutions)."""
    try:
        m = copy.deepcopy(model)
    except Exception:  # a model that cannot be copied is used as it is (under inference mode)
        return model.eval().to(device)
    m = m.eval().to(device)
    for p in m.parameters():
        p.requires_grad_(False)
    if device.type == "cpu":
        m = m.to(memory_format=torch.channels_last)
    return m


def _target_probs(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, device, batch_size: int) -> torch.Tensor:
    out = []
    fmt = torch.channels_last if torch.device(device).type == "cpu" else torch.contiguous_format
    with torch.inference_mode():
        for s in range(0, len(x), batch_size):
            logits = model(x[s : s + batch_size].to(device).contiguous(memory_format=fmt)).float()
            out.append(torch.softmax(logits, 1).gather(1, targets[s : s + batch_size, None].to(device))[:, 0].cpu())
    return torch.cat(out) if out else torch.zeros(0)


def deletion_insertion(
    model: nn.Module,
    images,
    maps,
    targets,
    *,
    steps: int = 10,
    baseline: str = "blur",
    random_shape: tuple[int, int] | None = None,
    skip=None,
    seed: int = 0,
    device="cpu",
    batch_size: int = 512,
    ids=None,
) -> dict[str, np.ndarray]:
    """Deletion and insertion curves of ``maps`` (M, H, W) and of a random map per image.
    ``ids``: one id per image (test ids); the random map and the tie order of an image are
    then seeded by its id, so its scores do not depend on which other images are in the set.

    Returns per image (M,): ``deletion_auc``, ``insertion_auc``, ``random_deletion_auc``,
    ``random_insertion_auc``, ``deletion_gap`` (random - map deletion AUC; > 0 = better than
    random), ``insertion_gap`` (map - random insertion AUC; > 0 = better than random); the
    curves (M, steps + 1) ``deletion_curve``, ``insertion_curve``, ``random_deletion_curve``,
    ``random_insertion_curve``; and ``fractions`` (steps + 1,). Images with ``skip`` set
    (degenerate maps) are NaN. ``random_shape``: resolution of the random map (the CAM
    layer's; default: the maps' own, i.e. pixel noise)."""
    if steps < 1:
        raise ValueError("steps must be >= 1")
    device = torch.device(device)
    x_all = _as_images(images)
    maps = np.asarray(maps, dtype=np.float64)
    M, C, H, W = x_all.shape
    if maps.shape != (M, H, W):
        raise ValueError(f"maps must be (M, H, W) = {(M, H, W)}; got {maps.shape}")
    targets = torch.as_tensor(np.asarray(targets, dtype=np.int64).reshape(-1))
    keep = np.ones(M, bool) if skip is None else ~np.asarray(skip, bool)
    P = H * W
    fractions = np.linspace(0.0, 1.0, steps + 1)
    counts = torch.as_tensor(np.rint(fractions * P).astype(np.int64))
    rng = np.random.default_rng(seed)
    if ids is not None and len(ids) != M:
        raise ValueError(f"ids must give one id per image ({M}); got {len(ids)}")
    rnd = random_maps(M, random_shape or (H, W), (H, W), seed, ids)
    ranks = torch.as_tensor(_ranks(maps, rng, seed, ids))
    rranks = torch.as_tensor(_ranks(rnd, rng, seed + 1, ids))
    base = perturbation_baseline(x_all, baseline)

    curves = {k: np.full((M, steps + 1), np.nan) for k in ("deletion", "insertion", "random_deletion", "random_insertion")}
    idx = np.flatnonzero(keep)
    if len(idx):
        with _Borrowed(model, freeze=False):  # restores train/eval flags if the model could not be copied
            fast = _fast_copy(model, device)
            # the shared end points: the image and the baseline
            p_img = _target_probs(fast, x_all[idx], targets[idx], device, batch_size).numpy()
            p_base = _target_probs(fast, base[idx], targets[idx], device, batch_size).numpy()
            for k in curves:
                curves[k][idx, 0] = p_base if k.endswith("insertion") else p_img
                curves[k][idx, steps] = p_img if k.endswith("insertion") else p_base
            inner = counts[1:steps]  # (S-1,)
            if len(inner):
                per_image = 4 * len(inner)
                chunk = max(1, batch_size // per_image)
                for s in range(0, len(idx), chunk):
                    sel = torch.as_tensor(idx[s : s + chunk])
                    n = len(sel)
                    r = ranks[sel][:, None, :] < inner[None, :, None]  # (n, S-1, P): removed by the map
                    rr = rranks[sel][:, None, :] < inner[None, :, None]
                    use_base = torch.cat([r, ~r, rr, ~rr], dim=1)  # deletion, insertion, random del, random ins
                    xi = x_all[sel].reshape(n, 1, C, P)
                    bi = base[sel].reshape(n, 1, C, P)
                    pert = torch.where(use_base[:, :, None, :], bi, xi).reshape(-1, C, H, W)
                    t = targets[sel].repeat_interleave(per_image)
                    p = _target_probs(fast, pert, t, device, batch_size).numpy().reshape(n, 4, len(inner))
                    for j, k in enumerate(("deletion", "insertion", "random_deletion", "random_insertion")):
                        curves[k][idx[s : s + n], 1:steps] = p[:, j]
            del fast
    auc = {k: np.trapezoid(v, fractions, axis=1) for k, v in curves.items()}
    return {
        "deletion_auc": auc["deletion"],
        "insertion_auc": auc["insertion"],
        "random_deletion_auc": auc["random_deletion"],
        "random_insertion_auc": auc["random_insertion"],
        "deletion_gap": auc["random_deletion"] - auc["deletion"],
        "insertion_gap": auc["insertion"] - auc["random_insertion"],
        "deletion_curve": curves["deletion"],
        "insertion_curve": curves["insertion"],
        "random_deletion_curve": curves["random_deletion"],
        "random_insertion_curve": curves["random_insertion"],
        "fractions": fractions,
    }


def confidence_change(model: nn.Module, images: torch.Tensor, cams: np.ndarray, targets: Sequence[int], device="cpu") -> np.ndarray:
    """pytorch-grad-cam's CamMultImageConfidenceChange per image: the change of the target's
    probability when the image is multiplied by its own [0, 1] heatmap."""
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    x = _as_images(images).to(device)
    if not len(x):
        return np.zeros(0)
    with _Borrowed(model, freeze=False), torch.inference_mode():
        fast = _fast_copy(model, torch.device(device))
        scores = CamMultImageConfidenceChange()(x, np.asarray(cams, np.float32), [ClassifierOutputSoftmaxTarget(int(t)) for t in targets], fast)
    return np.asarray(scores, dtype=np.float64).reshape(-1)
