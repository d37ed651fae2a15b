"""Grad-CAM (pytorch-grad-cam) and attention metrics: resolution, concentration,
faithfulness (deletion / insertion against a random map) and a model-randomisation sanity
check.

Maps
----
``cam_maps(model, images, targets, method, layer)`` runs one of pytorch-grad-cam's CAM
methods (``gradcam`` (default), ``gradcam++``, ``scorecam``, ``layercam``) on a named target
layer and returns a ``CamResult``:

* ``raw`` (M, h, w): the un-normalised map at the layer's resolution, before the ReLU
  (Grad-CAM: ``sum_c w_c A_c``, ``w_c`` the spatial mean of d target logit / d A_c);
* ``maps`` (M, H, W): what pytorch-grad-cam returns, ReLU, min-max scaled to [0, 1] and
  bilinearly upsampled to the input size (zeros for degenerate maps);
* ``reasons`` (M,): "" or why the map is degenerate (below).

Target layer: ``model.cam_layers()`` (name -> module) and ``model.DEFAULT_CAM_LAYER``
(harness.models); a wrapper (temperature scaling) is searched for a submodule that has them.
Defaults: small-cnn ``block3`` (block 3 before its last max-pool, 7x7 at 28x28), CIFAR
ResNet-18 ``layer3`` (8x8 at 32x32; ``layer4``, 4x4, stays selectable). A model without
``cam_layers()`` uses its ``cam_layer()`` if it has one, else its last ``Conv2d``
(name ``"last-conv"``).

In-place ReLUs. pytorch-grad-cam stores the hooked activation as ``output.cpu().detach()``,
which copies on a GPU but not on the CPU, so an in-place op later in the forward pass (the
small CNN's ``ReLU(inplace=True)`` after its last max-pool, the old 3x3 layer) overwrote
the stored activation on the CPU only: the map became ``sum_c w_c ReLU(A_c)`` with weights
from the gradient w.r.t. ``A_c``. Measured on the trained smoke small CNN (256 Fashion-MNIST
test images): every map differed from the same model with out-of-place ReLUs, by 12% of
the map's maximum (median; 40% at worst), up to 0.36 on the [0, 1] maps. Two fixes: the
named layers are ones nothing modifies in place (harness.models), and the hook here clones
the activation (``_Recorder``), so any layer gives the device-independent map.

Degenerate maps
---------------
Per map, on ``x = max(raw, 0)`` at layer resolution, first matching reason:
``"nonfinite"`` (any NaN / inf in ``raw``), ``"zero"`` (no positive value: all zero, e.g.
the target does not depend on the layer, or all negative), ``"constant"``
(``max(x) - min(x) <= 1e-6 max(x)``). Degenerate maps are counted per reason and never
scored: every per-map number below is NaN for them.

Concentration (layer resolution)
--------------------------------
With ``x_1 <= ... <= x_n`` the ``n = h w`` values of ``max(raw, 0)`` sorted ascending:

* Gini index (Quantus' Sparseness, Chalasani et al. 2020):
  ``G = sum_i (2 i - n - 1) x_i / (n sum_i x_i)``; 0 for a uniform map, ``(n - 1) / n``
  for a single hot pixel. Higher = more concentrated.
* normalised entropy: ``H(p) / log n`` with ``p = x / sum x`` and ``0 log 0 = 0``; 1 for a
  uniform map, 0 for a single pixel. Lower = more concentrated.
* top-10% share: the share of ``sum x`` held by the largest ``q n`` values (``q = 0.1``),
  the last one counted fractionally so that a uniform map gives exactly ``q``; 1 for a
  single pixel. Higher = more concentrated. (``concentration(maps, top=0.2)`` is the same
  with q = 0.2, the older summary.)

These are computed at the layer's resolution, not on the upsampled maps: the layer's
h x w values are all the map has; bilinear upsampling adds interpolated pixels whose
number and smoothness depend on the input size and the kernel (it lowers Gini and raises
entropy for the same evidence), and the min-max scaling of the displayed maps subtracts
the minimum, which changes all three. All three are scale-invariant, so no normalisation
is needed. Maps of different layers (7x7 vs 8x8) are comparable up to the ``(n - 1) / n``
ceiling of the Gini index.

Faithfulness: deletion and insertion (Petsiuk et al. 2018, RISE)
-----------------------------------------------------------------
Pixels are ranked by the input-resolution map (ties in random order, seeded). For
``j = 0 .. steps`` the first ``round(j P / steps)`` of the ``P = H W`` pixels (all channels)
are replaced by a baseline image (deletion), or the image starts as the baseline and they
are put back (insertion); the curve is the softmax probability of the target class, its
area (trapezoid over the removed fraction in [0, 1]) the score: deletion AUC lower = better,
insertion AUC higher = better. The same is done with a random map: uniform noise at the
CAM layer's resolution, bilinearly upsampled like the CAM (so the random map removes blobs
of the same size rather than scattered pixels, which would hurt the model less for reasons
that have nothing to do with relevance). Per image:

* ``deletion_gap = random_deletion_auc - deletion_auc``: the area between the two
  deletion curves; positive = the map finds pixels that matter more than random ones.
* ``insertion_gap = insertion_auc - random_insertion_auc``; positive = better than random.

Default ``steps=10`` (11 points per curve): 4 x 9 + 2 = 38 forward passes per image (the
image and the baseline are shared by the four curves).

Baseline (``baseline=``): ``"blur"`` (default): the image blurred with a Gaussian of
sigma = side / 8 (3.5 px at 28x28, 4 px at 32x32; replicate padding); ``"mean"``: each
channel's mean of the image; ``"zero"``: black. The blur keeps the image's low-frequency
content, so the perturbed images stay closer to the data than a constant fill, which
draws sharp artificial edges (RISE uses the blurred image as its insertion canvas).

pytorch-grad-cam's ROAD metrics (``ROADMostRelevantFirst`` / ``ROADLeastRelevantFirst`` /
``ROADCombined``) run on 28x28 grey and 32x32 RGB but are not used: their imputer solves a
sparse linear system per image and threshold with scipy in a Python loop, 8-15 ms of CPU
per image and threshold at 28x28 (measured), so ``ROADCombined`` (2 x 9 thresholds) takes
~0.25 s per image, about a minute for 256 images against a 20 s budget for everything; its
noise comes from the unseeded global torch RNG; its thresholds mishandle ties: the
most-relevant-first pass at percentile p keeps the pixels strictly below the map's p-th
percentile, which is 0 when more than p% of the map is 0, so it removes every pixel
instead of (100 - p)% (a median of 16% of the pixels of the smoke small CNN's [0, 1] maps
are exactly 0, Grad-CAM's ReLU); and it has no random-map baseline. Deletion / insertion
here evaluate all perturbed copies of a chunk of images in one batch.

Sanity check: cascading model-parameter randomisation (Adebayo et al. 2018)
--------------------------------------------------------------------------
On a deep copy of the model (the caller's model is never modified), layers are
re-initialised from the logits down, cumulatively. A "layer" is a Conv/Linear module with
the parameterised modules that run after it before the next one (its BatchNorm), in the
order of execution of one forward pass. Re-initialisation is the module's own
``reset_parameters()`` (a BatchNorm's running statistics are reset too; a module without
one has its parameters randomly permuted), seeded (``seed + step``) on the CPU, so the
result does not depend on the device. After each step the maps are computed again (same
targets) and compared with the trained model's by Spearman's rank correlation per image
(layer-resolution ``max(raw, 0)``, average ranks for ties). An image whose trained map is
degenerate is left out (NaN); a randomised map that is degenerate (zero or constant) shares
no structure and counts as correlation 0 (its share is reported).

The number to gate (``score``): the mean correlation after the step that randomises the
CAM layer itself (every layer from the logits down to and including the one that computes
the CAM layer's output): by then the map's channel weights and the layer that computes its
activations are random, so a map that still correlates with the trained one reflects the
input or the architecture, not what was learned. Lower = better; bound it from above
(e.g. <= 0.5). ``max`` (over the cascade) is reported too: it adds the steps where only
the head is random, which mostly ask whether the map depends on the class, and is a
stricter, noisier bound. Measured: the smoke small CNN (Fashion-MNIST, 64 images), steps
[-0.19, -0.04, 0.05, -0.04, -0.01, -0.01], score -0.04, max 0.05; an "explanation" equal
to the input image scores 1.0.

Summary
-------
``attention_summary`` gives per-image arrays for a set of images (maps, reasons, gini,
entropy, top10, the four AUCs and both gaps) and the randomisation check (on an evenly
spaced subset, 64 images by default); ``attention_report`` adds the scalars the stress
tests gate (``cam_*``). ``gradcam(model, images, targets, device)`` returns just the
[0, 1] maps at input size (the report gallery).

Side effects on the caller's model: it is moved to ``device`` (as before); its train/eval
flags, its parameters' ``requires_grad`` and ``.grad`` are restored after the call; no hook
outlives a call.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

METHODS = ("gradcam", "gradcam++", "scorecam", "layercam")
DEGENERATE_REASONS = ("nonfinite", "zero", "constant")
CONSTANT_RTOL = 1e-6
BASELINES = ("blur", "mean", "zero")


# ----------------------------------------------------------------------------- layers


def _cam_owner(model: nn.Module) -> nn.Module | None:
    """The model itself or the first submodule (a wrapped model) that names CAM layers."""
    for m in model.modules():
        if callable(getattr(m, "cam_layers", None)):
            return m
    return None


def cam_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The model's named Grad-CAM layers: ``cam_layers()`` (of the model or of the model it
    wraps), else ``{"cam_layer": model.cam_layer()}``, else ``{"last-conv": <last Conv2d>}``."""
    owner = _cam_owner(model)
    if owner is not None:
        return dict(owner.cam_layers())
    if callable(getattr(model, "cam_layer", None)):
        return {"cam_layer": model.cam_layer()}
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("model has no cam_layers(), no cam_layer() and no Conv2d layer for Grad-CAM")
    return {"last-conv": convs[-1]}


def default_cam_layer(model: nn.Module) -> str:
    """The name of the default layer (``DEFAULT_CAM_LAYER``, else the only fallback)."""
    owner = _cam_owner(model)
    if owner is not None and getattr(owner, "DEFAULT_CAM_LAYER", None):
        return owner.DEFAULT_CAM_LAYER
    return next(iter(cam_layers(model)))


def resolve_layer(model: nn.Module, layer: str | nn.Module | None = None) -> tuple[str, nn.Module]:
    """(name, module) for ``layer``: None (the default), a name from ``cam_layers()``, or a
    submodule of ``model`` (named by its qualified name)."""
    if layer is None:
        layer = default_cam_layer(model)
    if isinstance(layer, nn.Module):
        for name, m in model.named_modules():
            if m is layer:
                return name or "model", m
        raise ValueError("the layer given is not a submodule of the model")
    layers = cam_layers(model)
    if layer not in layers:
        raise ValueError(f"unknown CAM layer {layer!r}: choose one of {', '.join(layers)}")
    return layer, layers[layer]


def _qualified_name(model: nn.Module, module: nn.Module) -> str:
    for name, m in model.named_modules():
        if m is module:
            return name
    raise ValueError("module is not a submodule of the model")


# ----------------------------------------------------------------------------- CAM classes


@functools.cache
def _cam_classes() -> dict[str, type]:
    """pytorch-grad-cam's methods with two additions: the activation hook clones (in-place
    fix) and records only during the CAM's own forward pass, and ``get_cam_image`` keeps the
    raw layer-resolution map. ScoreCAM's channel scoring is batched per image and silent
    (the library's prints a tqdm bar per image); the arithmetic is the library's."""
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM
    from pytorch_grad_cam.activations_and_gradients import ActivationsAndGradients

    class _Recorder(ActivationsAndGradients):
        def __init__(self, model, target_layers, reshape_transform, detach=True):
            super().__init__(model, target_layers, reshape_transform, detach)
            self.recording = False

        def save_activation(self, module, input, output):
            if not self.recording:
                return
            activation = output if self.reshape_transform is None else self.reshape_transform(output)
            # a copy: later in-place ops (ReLU(inplace=True)) must not reach it
            self.activations.append(activation.detach().to("cpu", copy=True))

        def save_gradient(self, module, input, output):
            if self.recording:
                super().save_gradient(module, input, output)

        def __call__(self, x):
            self.gradients, self.activations = [], []
            self.recording = True
            try:
                return self.model(x)
            finally:
                self.recording = False

    def wrap(base):
        class Cam(base):
            def __init__(self, model, target_layers):
                super().__init__(model, target_layers)
                self.activations_and_grads.release()
                self.activations_and_grads = _Recorder(model, target_layers, None)
                self.raw: list[np.ndarray] = []

            def get_cam_image(self, *args, **kwargs):
                cam = super().get_cam_image(*args, **kwargs)
                self.raw.append(np.asarray(cam, dtype=np.float32))
                return cam

        Cam.__name__ = Cam.__qualname__ = f"Recording{base.__name__}"
        return Cam

    class QuietScoreCAM(ScoreCAM):
        batch_size = 128

        def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):
            with torch.no_grad():
                act = torch.from_numpy(activations).to(self.device)
                up = F.interpolate(act, size=input_tensor.shape[-2:], mode="bilinear", align_corners=True)
                flat = up.flatten(2)
                mins, maxs = flat.min(-1)[0][..., None, None], flat.max(-1)[0][..., None, None]
                up = (up - mins) / (maxs - mins + 1e-8)
                scores = []
                for i, target in enumerate(targets):
                    masked = input_tensor[i][None] * up[i][:, None]  # (channels, C, H, W)
                    out = [target(self.model(masked[s : s + self.batch_size])) for s in range(0, len(masked), self.batch_size)]
                    scores.append(torch.cat(out).float().cpu())
                return torch.softmax(torch.stack(scores), dim=-1).numpy()

    return {
        "gradcam": wrap(GradCAM),
        "gradcam++": wrap(GradCAMPlusPlus),
        "scorecam": wrap(QuietScoreCAM),
        "layercam": wrap(LayerCAM),
    }


class _Borrowed:
    """Restores what a CAM computation changes on the caller's model: train/eval flags,
    ``requires_grad`` and ``.grad`` of its parameters (they are switched off so that the
    backward pass computes no weight gradients; the input gets ``requires_grad`` instead)."""

    def __init__(self, model: nn.Module, freeze: bool):
        self.model, self.freeze = model, freeze

    def __enter__(self):
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.params = [(p, p.requires_grad, p.grad) for p in self.model.parameters()]
        if self.freeze:
            for p, _, _ in self.params:
                p.requires_grad_(False)
        return self

    def __exit__(self, *exc):
        for m, mode in self.modes:
            m.training = mode
        for p, req, grad in self.params:
            p.requires_grad_(req)
            if grad is None or grad.device == p.device:
                p.grad = grad
        return False


# ----------------------------------------------------------------------------- maps


@dataclass(frozen=True)
class CamResult:
    """CAMs of M images. ``maps`` (M, H, W) float32 in [0, 1] at input resolution (zeros where
    degenerate); ``raw`` (M, h, w) float32 at layer resolution, un-normalised, before the ReLU;
    ``reasons`` (M,) "" or one of ``DEGENERATE_REASONS``; ``targets`` (M,) int64."""

    maps: np.ndarray
    raw: np.ndarray
    reasons: np.ndarray
    targets: np.ndarray
    method: str
    layer: str

    @property
    def degenerate(self) -> np.ndarray:
        return self.reasons != ""

    @property
    def layer_shape(self) -> tuple[int, int]:
        return tuple(self.raw.shape[1:])

    def reason_counts(self) -> dict[str, int]:
        return {r: int((self.reasons == r).sum()) for r in DEGENERATE_REASONS}


def _as_images(images) -> torch.Tensor:
    x = torch.as_tensor(images).float()
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(f"images must be (M, C, H, W) (or (M, H, W)); got shape {tuple(x.shape)}")
    return x


def _predicted(model: nn.Module, x: torch.Tensor, device, batch_size: int) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([model(x[s : s + batch_size].to(device)).argmax(1).cpu() for s in range(0, len(x), batch_size)]).numpy()


def cam_maps(
    model: nn.Module,
    images,
    targets: Sequence[int] | np.ndarray | None = None,
    method: str = "gradcam",
    layer: str | nn.Module | None = None,
    device="cpu",
    batch_size: int = 128,
) -> CamResult:
    """CAMs for float images (M, C, H, W) in [0, 1] and a target class per image (the
    predicted class when None). ``layer``: a name from ``cam_layers(model)``, a submodule,
    or None for the model's default."""
    if method not in METHODS:
        raise ValueError(f"unknown CAM method {method!r}: choose one of {', '.join(METHODS)}")
    name, module = resolve_layer(model, layer)
    device = torch.device(device)
    x_all = _as_images(images)
    model = model.to(device)
    with _Borrowed(model, freeze=True):
        model.eval()
        if targets is None:
            targets = _predicted(model, x_all, device, batch_size)
        targets = np.asarray(targets, dtype=np.int64).reshape(-1)
        if len(targets) != len(x_all):
            raise ValueError(f"{len(x_all)} images but {len(targets)} targets")
        maps, raws = [], []
        if len(x_all):
            from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

            cam = _cam_classes()[method](model, [module])
            cam.compute_input_gradient = cam.uses_gradients  # gradients reach the layer with frozen weights
            try:
                with torch.inference_mode(False), torch.enable_grad():
                    for s in range(0, len(x_all), batch_size):
                        x = x_all[s : s + batch_size].to(device).clone()
                        cam.raw = []
                        out = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets[s : s + batch_size]])
                        maps.append(np.asarray(out, dtype=np.float32))
                        raws.append(cam.raw[0])
            finally:
                cam.activations_and_grads.release()
                cam.raw = []
                del cam
    if not len(x_all):
        h, w = x_all.shape[-2:]
        return CamResult(np.zeros((0, h, w), np.float32), np.zeros((0, 0, 0), np.float32), np.zeros(0, "<U9"), targets, method, name)
    raw = np.concatenate(raws).astype(np.float32)
    reasons = degeneracy(raw)
    out = np.clip(np.nan_to_num(np.concatenate(maps), nan=0.0, posinf=0.0, neginf=0.0), 0.0, 1.0).astype(np.float32)
    out[reasons != ""] = 0.0
    return CamResult(out, raw, reasons, targets, method, name)


def gradcam(model: nn.Module, images, targets: Sequence[int] | None = None, device="cpu", layer: str | nn.Module | None = None, method: str = "gradcam") -> np.ndarray:
    """Grad-CAM heatmaps (M, H, W) in [0, 1] at input size for float images (M, C, H, W) in
    [0, 1] (default layer: the model's ``DEFAULT_CAM_LAYER``; degenerate maps are zeros)."""
    return cam_maps(model, images, targets, method=method, layer=layer, device=device).maps


# ----------------------------------------------------------------------------- concentration


def degeneracy(maps) -> np.ndarray:
    """Per map (M, ...): "" (fine) or the first matching reason: "nonfinite" (any NaN/inf),
    "zero" (no positive value), "constant" (``max - min <= 1e-6 max`` of ``max(map, 0)``)."""
    a = np.asarray(maps, dtype=np.float64).reshape(len(maps), -1)
    out = np.full(len(a), "", dtype="<U9")
    if a.shape[1] == 0:
        out[:] = "zero"
        return out
    finite = np.isfinite(a).all(1)
    x = np.maximum(np.where(np.isfinite(a), a, 0.0), 0.0)
    hi, lo = x.max(1), x.min(1)
    out[(hi - lo <= CONSTANT_RTOL * hi) & (hi > 0)] = "constant"
    out[hi <= 0] = "zero"
    out[~finite] = "nonfinite"
    return out


def _positive(maps) -> tuple[np.ndarray, np.ndarray]:
    """(M, n) float64 ``max(map, 0)`` and the mask of maps that can be scored."""
    a = np.asarray(maps, dtype=np.float64).reshape(len(maps), -1)
    ok = degeneracy(a) == ""
    x = np.maximum(np.where(np.isfinite(a), a, 0.0), 0.0)
    return x, ok


def gini(maps) -> np.ndarray:
    """Gini index per map (Quantus Sparseness): ``sum_i (2i - n - 1) x_(i) / (n sum x)`` over
    the ascending values of ``max(map, 0)``. 0 uniform .. (n-1)/n one pixel; NaN if degenerate."""
    x, ok = _positive(maps)
    n = x.shape[1]
    xs = np.sort(x, axis=1)
    i = np.arange(1, n + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        g = ((2 * i - n - 1) * xs).sum(1) / (n * xs.sum(1))
    return np.where(ok, g, np.nan)


def normalised_entropy(maps) -> np.ndarray:
    """``H(p) / log n`` per map with ``p = max(map, 0) / sum``: 1 uniform .. 0 one pixel; NaN
    if degenerate (or n = 1)."""
    x, ok = _positive(maps)
    n = x.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        p = x / x.sum(1, keepdims=True)
        h = -np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(1)
        h = h / math.log(n) if n > 1 else np.full(len(x), np.nan)
    return np.where(ok, h, np.nan)


def top_share(maps, fraction: float = 0.1) -> np.ndarray:
    """Share of ``sum max(map, 0)`` in the top ``fraction`` of pixels (the last pixel counted
    fractionally: a uniform map gives ``fraction``); NaN if degenerate."""
    if not 0 < fraction <= 1:
        raise ValueError("fraction must be in (0, 1]")
    x, ok = _positive(maps)
    n = x.shape[1]
    k = fraction * n
    whole = int(math.floor(k))
    xs = -np.sort(-x, axis=1)
    top = xs[:, :whole].sum(1)
    if whole < n:
        top = top + (k - whole) * xs[:, whole]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = top / x.sum(1)
    return np.where(ok, share, np.nan)


def concentration(cams, top: float = 0.2) -> np.ndarray:
    """The older concentration summary: ``top_share(cams, top)`` (share of mass in the top 20%)."""
    return top_share(cams, top)


def concentration_metrics(maps) -> dict[str, np.ndarray]:
    """Per map: ``gini``, ``entropy`` (normalised), ``top10`` (share in the top 10%) and
    ``reason`` ("" or why degenerate; the numbers are NaN then). Pass layer-resolution maps
    (``CamResult.raw``)."""
    return {
        "gini": gini(maps),
        "entropy": normalised_entropy(maps),
        "top10": top_share(maps, 0.1),
        "reason": degeneracy(maps),
    }


# ----------------------------------------------------------------------------- faithfulness


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(x)
    c = x.shape[1]
    y = F.pad(x, (radius, radius, 0, 0), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    y = F.pad(y, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(y, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def perturbation_baseline(images, kind: str = "blur") -> torch.Tensor:
    """The image that removed pixels are replaced with: ``blur`` (Gaussian, sigma = side / 8),
    ``mean`` (per image and channel) or ``zero``."""
    x = _as_images(images)
    if kind == "blur":
        return _gaussian_blur(x, max(x.shape[-2:]) / 8.0)
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


# ----------------------------------------------------------------------------- randomisation


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


# ----------------------------------------------------------------------------- summaries


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
