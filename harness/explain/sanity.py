"""The cascading model-parameter randomisation check (Adebayo et al. 2018; docs/explain.md)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

# ----------------------------------------------------------------------------- randomisation
from .cams import _as_images, _predicted, cam_maps
from .layers import _qualified_name, resolve_layer


def spearman_rows(a, b) -> np.ndarray:
    """Spearman's rank correlation of each row pair of a, b (M, ...) (average ranks for ties);
    NaN where a row is constant or not finite."""
    from scipy.stats import rankdata

    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    bad = ~(np.isfinite(a).all(1) & np.isfinite(b).all(1))
    ra = rankdata(np.nan_to_num(a), axis=1)
    rb = rankdata(np.nan_to_num(b), axis=1)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    den = np.sqrt((ra**2).sum(1) * (rb**2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (ra * rb).sum(1) / den
    rho[(den == 0) | bad] = np.nan
    return rho


def randomisation_layers(model: nn.Module, sample: torch.Tensor, cam_layer: nn.Module | None = None) -> tuple[list[list[tuple[str, nn.Module]]], int | None]:
    """The cascade's layers, bottom-up in order of execution of one forward pass of
    ``sample``: each is a Conv/Linear module with the parameterised modules that run after it
    before the next one. Also the index (bottom-up) of the layer that computes the output of
    ``cam_layer`` (the last one that runs before that output exists), or None."""
    names = {m: n for n, m in model.named_modules()}
    events: list[tuple[str, nn.Module]] = []
    handles = []
    for m in model.modules():
        if any(True for _ in m.parameters(recurse=False)):
            handles.append(m.register_forward_pre_hook(lambda mod, inp: events.append(("run", mod))))
    if cam_layer is not None:
        handles.append(cam_layer.register_forward_hook(lambda mod, inp, out: events.append(("cam", mod))))
    try:
        with torch.no_grad():
            model(sample)
    finally:
        for h in handles:
            h.remove()
    groups: list[list[tuple[str, nn.Module]]] = []
    seen: set[int] = set()
    cam_index = None
    for kind, m in events:
        if kind == "cam":
            if cam_index is None and groups:
                cam_index = len(groups) - 1
            continue
        if id(m) in seen:
            continue
        seen.add(id(m))
        if isinstance(m, nn.modules.conv._ConvNd | nn.Linear) or not groups:
            groups.append([])
        groups[-1].append((names[m], m))
    return groups, cam_index


def _reinitialise(modules: list[tuple[str, nn.Module]], seed: int) -> None:
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for _, m in modules:
            if callable(getattr(m, "reset_parameters", None)):
                m.reset_parameters()
            else:
                for p in m.parameters(recurse=False):
                    p.copy_(p.flatten()[torch.randperm(p.numel())].view_as(p))


def randomisation_check(
    model: nn.Module,
    images,
    targets: Sequence[int] | np.ndarray | None = None,
    *,
    method: str = "gradcam",
    layer: str | nn.Module | None = None,
    device="cpu",
    seed: int = 0,
    explain_fn: Callable[[nn.Module, torch.Tensor, np.ndarray], np.ndarray] | None = None,
    reference: np.ndarray | None = None,
    stop_at_cam_layer: bool = False,
    batch_size: int = 128,
) -> dict:
    """Cascading model-parameter randomisation (Adebayo et al. 2018) on a deep copy.

    ``explain_fn(model, images, targets) -> (M, ...)`` maps to compare (default: the
    layer-resolution ``max(raw, 0)`` of ``cam_maps`` with ``method`` and ``layer``);
    ``reference``: the trained model's maps if already computed. Returns ``steps`` (names,
    top-down; step k has layers 0..k randomised), ``correlation`` (S, M) per image
    Spearman (NaN where the trained map is degenerate, 0 where the randomised one is),
    ``mean_correlation`` (S,), ``degenerate_share`` (S,) of randomised maps, ``cam_step``
    (index of the step that randomises the CAM layer), ``score`` (mean correlation at
    ``cam_step``: the number to bound from above), ``max`` (over steps), ``final``."""
    device = torch.device(device)
    x = _as_images(images)
    try:
        name, module = resolve_layer(model, layer)
        qual = _qualified_name(model, module)
    except ValueError:
        if explain_fn is None:
            raise
        name = qual = None  # a custom explanation of a model without a CAM layer: no cam_step
    work = copy.deepcopy(model).cpu().eval()
    for p in work.parameters():
        p.requires_grad_(False)
    cam_module = work.get_submodule(qual) if qual is not None else None
    if explain_fn is None:

        def explain_fn(m, imgs, tg):
            res = cam_maps(m, imgs, tg, method=method, layer=m.get_submodule(qual), device=device, batch_size=batch_size)
            pos = np.maximum(res.raw.astype(np.float64), 0.0)
            pos[res.degenerate] = np.nan
            return pos

    if targets is None:
        targets = _predicted(work, x, "cpu", batch_size)
    targets = np.asarray(targets, dtype=np.int64).reshape(-1)
    groups, cam_index = randomisation_layers(work, x[:1], cam_module)
    top_down = groups[::-1]
    cam_step = None if cam_index is None else len(groups) - 1 - cam_index
    if stop_at_cam_layer and cam_step is not None:
        top_down = top_down[: cam_step + 1]

    ref = reference if reference is not None else explain_fn(work.to(device), x, targets)
    ref = np.asarray(ref, dtype=np.float64).reshape(len(x), -1)
    ref_ok = np.isfinite(ref).all(1) & (np.ptp(np.where(np.isfinite(ref), ref, 0.0), axis=1) > 0)  # scorable
    corr = np.full((len(top_down), len(x)), np.nan)
    degenerate = np.zeros(len(top_down))
    for k, group in enumerate(top_down):
        work.cpu()
        _reinitialise(group, seed + k)
        maps = np.asarray(explain_fn(work.to(device), x, targets), dtype=np.float64).reshape(len(x), -1)
        rho = spearman_rows(ref, maps)
        dead = ~np.isfinite(rho) & ref_ok  # randomised map degenerate: no shared structure
        rho[dead] = 0.0
        rho[~ref_ok] = np.nan
        corr[k] = rho
        degenerate[k] = dead.sum() / max(1, ref_ok.sum())
    del work
    with np.errstate(invalid="ignore"):
        mean = np.array([np.nanmean(c) if np.isfinite(c).any() else np.nan for c in corr])
    return {
        "steps": ["+".join(n for n, _ in g) for g in top_down],
        "correlation": corr,
        "mean_correlation": mean,
        "degenerate_share": degenerate,
        "cam_step": cam_step,
        "score": float(mean[cam_step]) if cam_step is not None and cam_step < len(mean) else float("nan"),
        "max": float(np.nanmax(mean)) if np.isfinite(mean).any() else float("nan"),
        "final": float(mean[-1]) if len(mean) else float("nan"),
        "layer": name,
        "n_images": len(x),
    }
