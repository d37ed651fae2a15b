"""CAM maps through pytorch-grad-cam: its classes made safe for our models (a copy hook, no in-place
overwrite), the maps of a set of images, and their degeneracy (zero, constant, not finite)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .layers import resolve_layer

METHODS = ("gradcam", "gradcam++", "scorecam", "layercam")
DEGENERATE_REASONS = ("nonfinite", "zero", "constant")
CONSTANT_RTOL = 1e-6


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
