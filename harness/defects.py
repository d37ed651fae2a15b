"""Planted defects: a sound trained model with exactly one flaw, at a chosen strength.

Each is an ``nn.Module`` wrapping the sound model (Grad-CAM still finds its layers), used to
measure what the gates catch (``harness.audit``): the gate family named for each defect must
fail, and the smallest strength each family catches is its detection limit.

=================  =========================================================  ===============
defect             what it does to the sound model's logits                   family
=================  =========================================================  ===============
overconfident      multiplied by ``strength`` (> 1): sharper, overconfident   calibration /
                                                                              confidence
underconfident     divided by ``strength``: flatter, underconfident           calibration
suppressed         one class's logit pushed below every other on a            accuracy
                   ``strength`` share of the images (a pseudo-random but      (per class)
                   fixed share: a hash of the pixels decides)
noise-fragile      the logit of class 0 raised by ``strength`` x the image's  robustness
                   excess high-frequency energy over the clean images' 99th
                   percentile: clean images keep their predictions, noisy
                   ones drift to class 0
memorising         the training images recalled exactly (confident, right);   generalisation
                   every other image as the sound model
sure-of-garbage    logits multiplied by ``strength`` on images whose pixel     ood
                   statistics leave the clean images' range (high-frequency
                   energy above their 99th percentile, or contrast below their
                   1st): confident on noise and blank frames, unchanged on
                   test images
=================  =========================================================  ===============
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

HASH_SEED = 1234


@dataclass(frozen=True)
class Defect:
    kind: str
    strength: float
    cls: int | None = None  # the class a suppression targets

    @property
    def label(self) -> str:
        if self.kind == "suppressed":
            return f"suppressed class {self.cls} on {self.strength:.0%}"
        if self.kind in ("overconfident", "underconfident"):
            return f"{self.kind} (logits {'x' if self.kind == 'overconfident' else '/'} {self.strength:g})"
        if self.kind == "noise-fragile":
            return f"noise-fragile (strength {self.strength:g})"
        if self.kind == "sure-of-garbage":
            return f"sure of garbage (logits x {self.strength:g} off the data)"
        return self.kind

    @property
    def family(self) -> tuple[str, ...]:
        """The gate families named for this defect (any of them catching it counts)."""
        return FAMILIES[self.kind]


FAMILIES = {"overconfident": ("calibration", "confidence"), "underconfident": ("calibration",),
            "suppressed": ("accuracy",), "noise-fragile": ("robustness",), "memorising": ("generalisation",),
            "sure-of-garbage": ("ood",)}


class _Wrapped(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def cam_layers(self):
        from .explain import cam_layers

        return cam_layers(self.model)

    @property
    def DEFAULT_CAM_LAYER(self):  # noqa: N802 - the attribute harness.explain reads
        from .explain import default_cam_layer

        return default_cam_layer(self.model)


class Scaled(_Wrapped):
    def __init__(self, model: nn.Module, factor: float):
        super().__init__(model)
        self.factor = float(factor)

    def forward(self, x):
        return self.model(x) * self.factor


def image_hash(x: torch.Tensor) -> torch.Tensor:
    """A fixed pseudo-random number in [0, 1) per image, from its pixels (quantised to 8 bits)."""
    q = torch.round(x.float().clamp(0, 1) * 255).flatten(1).double()
    g = torch.Generator().manual_seed(HASH_SEED)
    w = torch.rand(q.shape[1], generator=g, dtype=torch.float64).to(q.device)
    return torch.frac((q @ w) * 0.6180339887)


class Suppressed(_Wrapped):
    def __init__(self, model: nn.Module, cls: int, share: float):
        super().__init__(model)
        self.cls, self.share = int(cls), float(share)

    def forward(self, x):
        z = self.model(x)
        hit = (image_hash(x) < self.share).to(z.device)
        others = torch.cat([z[:, : self.cls], z[:, self.cls + 1 :]], 1).max(1).values
        low = torch.minimum(z[:, self.cls], others - 5.0)
        col = torch.where(hit, low, z[:, self.cls])
        return torch.cat([z[:, : self.cls], col[:, None], z[:, self.cls + 1 :]], 1)


def high_frequency(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between an image and its 3x3 box blur, per image."""
    c = x.shape[1]
    k = torch.full((c, 1, 3, 3), 1 / 9, device=x.device, dtype=x.dtype)
    blur = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=c)
    return (x - blur).abs().flatten(1).mean(1)


class NoiseFragile(_Wrapped):
    def __init__(self, model: nn.Module, strength: float, threshold: float):
        super().__init__(model)
        self.strength, self.threshold = float(strength), float(threshold)

    def forward(self, x):
        z = self.model(x)
        excess = F.relu(high_frequency(x.float()) / self.threshold - 1.0).to(z.dtype)
        bump = torch.zeros_like(z)
        bump[:, 0] = self.strength * excess
        return z + bump


class SureOfGarbage(_Wrapped):
    def __init__(self, model: nn.Module, strength: float, hf_max: float, contrast_min: float):
        super().__init__(model)
        self.strength, self.hf_max, self.contrast_min = float(strength), float(hf_max), float(contrast_min)

    def forward(self, x):
        z = self.model(x)
        xf = x.float()
        off = (high_frequency(xf) > self.hf_max) | (xf.flatten(1).std(1) < self.contrast_min)
        return torch.where(off.to(z.device)[:, None], z * self.strength, z)


class Memorising(_Wrapped):
    def __init__(self, model: nn.Module, images_uint8: torch.Tensor, labels: torch.Tensor, num_classes: int):
        super().__init__(model)
        flat = images_uint8.reshape(len(images_uint8), -1).numpy()
        self.lookup = {row.tobytes(): int(y) for row, y in zip(flat, labels.numpy())}
        self.k = num_classes

    def forward(self, x):
        z = self.model(x)
        q = torch.round(x.detach().float().clamp(0, 1) * 255).to(torch.uint8).reshape(len(x), -1).cpu().numpy()
        known = [self.lookup.get(row.tobytes()) for row in q]
        rows = [i for i, y in enumerate(known) if y is not None]
        if not rows:
            return z
        recall = F.one_hot(torch.as_tensor([known[i] for i in rows]), self.k).to(z) * 12.0
        out = z.clone()
        out[torch.as_tensor(rows, device=z.device)] = recall.to(z.device)
        return out


def clean_threshold(x_uint8: torch.Tensor, quantile: float = 0.99) -> float:
    """The clean images' high-frequency energy at ``quantile`` (noise-fragile's trigger)."""
    x = x_uint8.float().div(255)
    if x.ndim == 3:
        x = x[:, None]
    return float(torch.quantile(high_frequency(x), quantile))


def plant(defect: Defect, model: nn.Module, data) -> nn.Module:
    """The sound ``model`` (of ``data``, a ``harness.data.Dataset``) with ``defect`` planted."""
    model = model.eval()
    for p in model.parameters():
        p.requires_grad_(True)  # attacks and Grad-CAM need gradients through it
    if defect.kind == "overconfident":
        return Scaled(model, defect.strength)
    if defect.kind == "underconfident":
        return Scaled(model, 1.0 / defect.strength)
    if defect.kind == "suppressed":
        return Suppressed(model, defect.cls, defect.strength)
    if defect.kind == "noise-fragile":
        return NoiseFragile(model, defect.strength, clean_threshold(data.train_x[data.val_idx]))
    if defect.kind == "sure-of-garbage":
        clean = data.train_x[data.val_idx].float().div(255)
        clean = clean[:, None] if clean.ndim == 3 else clean
        return SureOfGarbage(model, defect.strength, clean_threshold(data.train_x[data.val_idx]),
                             float(torch.quantile(clean.flatten(1).std(1), 0.01)))
    if defect.kind == "memorising":
        idx = data.train_idx
        return Memorising(model, data.train_x[idx], data.train_y[idx], data.num_classes)
    raise KeyError(f"unknown defect {defect.kind!r}: choose one of {', '.join(FAMILIES)}")


def graded(classes: tuple[str, ...], well_learned: tuple[str, ...] = ("Trouser", "Bag"),
           swinging: tuple[str, ...] = ("Shirt",)) -> list[Defect]:
    """The graded defects of the audit: logits scaled by 1.5, 2, 3, 5 (both ways); each named
    class suppressed on 10%, 30%, 50%, 100% of its images (well-learned classes and the seed's
    headline class, whose accuracy swings between seeds: 100% is a collapse, a class never
    predicted); noise fragility at three strengths; sure of garbage at three; memorising."""
    out = [Defect("overconfident", f) for f in (1.5, 2.0, 3.0, 5.0)]
    out += [Defect("underconfident", f) for f in (1.5, 2.0, 3.0, 5.0)]
    for name in (*well_learned, *swinging):
        if name in classes:
            out += [Defect("suppressed", s, classes.index(name)) for s in (0.1, 0.3, 0.5, 1.0)]
    out += [Defect("noise-fragile", s) for s in (2.0, 5.0, 20.0)]
    out += [Defect("sure-of-garbage", s) for s in (2.0, 5.0, 20.0)]
    out.append(Defect("memorising", 1.0))
    return out
