"""The robustness battery: which stresses, how strong, on which images, for every model.

``battery(dataset, image_shape, profile)`` says what is run; ``run_robustness`` and
``run_adversarial`` return the model's logits under every condition, on the same images for
every model of a run (``harness.measure`` picks a seeded subset of the test split). The
metric registry turns them into numbers. Conditions (their names key the evidence):

* ``clean``: the images as they are.
* ``corruption/<name>/<severity>``: the CIFAR-10-C-style corruptions of ``corruptions.py``
  (14 kinds on grey images, 15 on colour ones; severities 1-5), or the published
  CIFAR-10-C / CIFAR-100-C images when they are under the data root (``data.cifar_c``).
* ``occlusion``: each image with an ``patch`` x ``patch`` grey square at its own worst
  placement on a grid of step ``stride`` (the placement that lowers the true class's
  probability most: ``perturb.occlusion_sweep``).
* ``scale/<f>``: down-sampled by ``f`` (antialiased) and up-sampled back: lower effective
  resolution.
* ``shift/<d>``: moved by ``d`` pixels in a seeded random direction per image (one of the 8
  compass directions), zero fill.
* ``rotate/<a>``: rotated by ``a`` degrees, with a seeded random sign per image.
* ``hflip``: mirrored left-right (only where flipping keeps the class: ``Dataset``'s
  ``flip_invariant``).
* ``fgsm/<eps>``, ``pgd/<eps>``: L-inf attacks (``attacks.py``) on the first
  ``attack_samples`` images of the subset (PGD: 10 steps, random start, the best iterate).

Strengths are fixed per dataset so that numbers are comparable across runs.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from torch import nn

from . import attacks, cards, corruptions, perturb
from .evaluate import eval_batch, to_float

SEED = 0
STRESS_SEED = 0  # the seeded subset of the test split every model of a run is stressed on
# The attack sweep, the reference budget the single-number FGSM/PGD gates read, the occlusion
# patch and the number of attacked images come from the dataset's and the profile's cards
# (harness/cards.py); a dataset of one's own gets the card defaults (the CIFAR budgets).
SCALES = (0.5, 0.75)
SHIFTS = (1, 2, 3, 4)
ROTATIONS = (5.0, 10.0, 15.0)
PGD_STEPS = 10
_DIRECTIONS = torch.tensor([[1, 0], [-1, 0], [0, 1], [0, -1], [1, 1], [1, -1], [-1, 1], [-1, -1]])


@dataclass(frozen=True)
class Battery:
    """What the robustness battery runs for one dataset and profile."""

    corruptions: tuple[str, ...]
    severities: tuple[int, ...] = corruptions.SEVERITIES
    epsilons: tuple[float, ...] = cards.DatasetCard.attack_grid
    reference_eps: float = 2 / 255
    attack_samples: int = 250
    pgd_steps: int = PGD_STEPS
    occlusion_patch: int = 8
    occlusion_stride: int = 4
    occlusion_fill: float = 0.5
    scales: tuple[float, ...] = SCALES
    shifts: tuple[int, ...] = SHIFTS
    rotations: tuple[float, ...] = ROTATIONS
    hflip: bool = True
    published: dict = field(default_factory=dict)  # corruption -> (5 * N_test, H, W, C) uint8 (CIFAR-C)

    def corruption_conditions(self) -> list[str]:
        return [f"corruption/{c}/{s}" for c in self.corruptions for s in self.severities]

    def robustness_conditions(self) -> list[str]:
        out = ["clean", *self.corruption_conditions(), "occlusion"]
        out += [f"scale/{f:g}" for f in self.scales] + [f"shift/{d}" for d in self.shifts]
        out += [f"rotate/{a:g}" for a in self.rotations] + (["hflip"] if self.hflip else [])
        return out

    def adversarial_conditions(self) -> list[str]:
        return ["clean", *(f"{a}/{e:.6g}" for a in ("fgsm", "pgd") for e in self.epsilons)]


def battery(dataset: str, image_shape: tuple[int, int, int], profile: str, flip_invariant: bool = True,
            published: dict | None = None, attack_samples: int | None = None,
            severities: tuple[int, ...] | None = None) -> Battery:
    """The battery for a dataset. ``published``: CIFAR-C arrays (``data.cifar_c``); when given,
    their corruptions (all 19 of them) replace the synthesised ones. ``attack_samples``: images
    attacked (None: the profile card's; ``cards.measurement_sizes`` shrinks it for costly models).
    ``severities``: the corruption severities (None: all five; ``cards.severities_for``)."""
    c, h, w = image_shape
    card = cards.DATASETS.get(dataset)  # None: a dataset of one's own, the card defaults
    patch, stride = card.occlusion if card else cards.occlusion_for(min(h, w))
    return Battery(
        corruptions=tuple(published) if published else tuple(corruptions.corruptions_for(c)),
        severities=tuple(severities) if severities else corruptions.SEVERITIES,
        epsilons=card.attack_grid if card else cards.DatasetCard.attack_grid,
        reference_eps=card.reference_eps if card else cards.DatasetCard.reference_eps,
        attack_samples=attack_samples or cards.PROFILES.get(profile, cards.PROFILES["smoke"]).attack_samples,
        occlusion_patch=patch,
        occlusion_stride=stride,
        hflip=flip_invariant,
        published=dict(published or {}),
    )


def stress_subset(n_test: int, n: int) -> np.ndarray:
    """A seeded random subset of ``n`` test positions (sorted), the same for every model."""
    if n >= n_test:
        return np.arange(n_test)
    g = torch.Generator().manual_seed(STRESS_SEED)
    return torch.randperm(n_test, generator=g)[:n].sort().values.numpy()


def condition_eps(name: str) -> float:
    return float(name.split("/")[1])


# ============================================================================ running


@torch.inference_mode()
def _logits(model: nn.Module, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Logits of float images already on the model's device (batches of ``eval_batch``: the
    outer batches of the battery, 500 images, fix the corruptions' seeds; these only the forward
    passes)."""
    batch_size = batch_size or eval_batch(x.device)
    return torch.cat([model(x[i : i + batch_size]).float().cpu() for i in range(0, len(x), batch_size)])


def _directions(n: int, gen: torch.Generator) -> torch.Tensor:
    return _DIRECTIONS[torch.randint(0, len(_DIRECTIONS), (n,), generator=gen)]


def _published(b: Battery, name: str, severity: int, positions: np.ndarray, n_test: int) -> torch.Tensor:
    """Published CIFAR-C images (rows (severity - 1) * N_test + i) as float NCHW."""
    rows = (severity - 1) * n_test + positions
    arr = np.asarray(b.published[name][rows])  # (n, H, W, C) uint8
    return to_float(torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2))


def run_robustness(model: nn.Module, x_uint8: torch.Tensor, y: torch.Tensor, b: Battery, device,
                   positions: np.ndarray | None = None, n_test: int | None = None,
                   batch_size: int = 500, tick=None) -> dict[str, torch.Tensor]:
    """Logits (N, K) on CPU under every robustness condition of ``b``. ``positions``: the
    images' positions in the test split (needed to read published CIFAR-C images). ``tick(n)``
    is told of each n conditions measured on a batch (``robustness_units`` in all)."""
    tick = tick or (lambda n: None)
    device = torch.device(device)
    model = model.eval().to(device)
    n = len(y)
    out: dict[str, list[torch.Tensor]] = {c: [] for c in b.robustness_conditions()}
    # per-image randomness drawn once for the whole subset, so it does not depend on batching
    g = torch.Generator().manual_seed(SEED)
    directions = _directions(n, g)
    signs = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    with perturb.channels_last(model):
        for i in range(0, n, batch_size):
            sl = slice(i, i + batch_size)
            xb = to_float(x_uint8[sl].to(device))
            yb = y[sl].to(device)
            out["clean"].append(_logits(model, xb))
            tick(1)
            for name in b.corruptions:
                for s in b.severities:
                    xc = _corrupted(b, xb, name, s, i, positions, sl, n_test, device)
                    out[f"corruption/{name}/{s}"].append(_logits(model, xc))
                tick(len(b.severities))
            occ = perturb.occlusion_sweep(model, xb, yb, b.occlusion_patch, b.occlusion_stride, b.occlusion_fill,
                                          use_channels_last=False)
            out["occlusion"].append(occ.worst_logits.float().cpu())
            for f in b.scales:
                out[f"scale/{f:g}"].append(_logits(model, perturb.rescale(xb, f)))
            d = directions[sl].to(device)
            for k in b.shifts:
                out[f"shift/{k}"].append(_logits(model, perturb.translate(xb, d[:, 0] * k, d[:, 1] * k)))
            for a in b.rotations:
                out[f"rotate/{a:g}"].append(_logits(model, perturb.rotate(xb, signs[sl].to(device) * a)))
            if b.hflip:
                out["hflip"].append(_logits(model, perturb.hflip(xb)))
            tick(len(b.robustness_conditions()) - 1 - len(b.corruption_conditions()))
    return {k: torch.cat(v) for k, v in out.items()}


def run_corruptions_at(model: nn.Module, x_uint8: torch.Tensor, b: Battery, device, severity: int,
                       positions: np.ndarray | None = None, n_test: int | None = None, batch_size: int = 500,
                       tick=None) -> dict[str, torch.Tensor]:
    """Logits under each corruption of ``b`` at one severity: the same corrupted images as
    ``run_robustness`` (the same batches and seeds)."""
    device = torch.device(device)
    model = model.eval().to(device)
    out: dict[str, list[torch.Tensor]] = {name: [] for name in b.corruptions}
    with perturb.channels_last(model):
        for i in range(0, len(x_uint8), batch_size):
            sl = slice(i, i + batch_size)
            xb = to_float(x_uint8[sl].to(device))
            for name in b.corruptions:
                out[name].append(_logits(model, _corrupted(b, xb, name, severity, i, positions, sl, n_test, device)))
    if tick is not None:
        tick(len(b.corruptions))
    return {k: torch.cat(v) for k, v in out.items()}


def _corrupted(b: Battery, xb, name: str, s: int, i: int, positions, sl, n_test, device) -> torch.Tensor:
    """Batch ``xb`` (starting at image ``i``) under corruption ``name`` at severity ``s``."""
    if name in b.published:
        return _published(b, name, s, positions[sl], n_test).to(device)
    seed = zlib.crc32(f"{SEED}/{name}/{s}/{i}".encode())  # per batch: the same for every model
    return corruptions.corrupt(xb, name, s, torch.Generator(device=device).manual_seed(seed))


def robustness_units(b: Battery, n: int, batch_size: int = 500) -> int:
    """What ``run_robustness`` ticks in all for ``n`` images."""
    return len(b.robustness_conditions()) * -(-n // batch_size)


def run_adversarial(model: nn.Module, x_uint8: torch.Tensor, y: torch.Tensor, b: Battery, device,
                    batch_size: int = 250, tick=None) -> dict[str, torch.Tensor]:
    """Logits (N, K) on CPU under FGSM and PGD at every budget of ``b`` (and clean);
    ``tick(1)`` after each attack at each budget (2 per budget)."""
    tick = tick or (lambda n: None)
    device = torch.device(device)
    model = model.eval().to(device)
    x = to_float(x_uint8.to(device))
    y = y.to(device)
    out = {"clean": _logits(model, x)}
    g = torch.Generator(device=device).manual_seed(SEED)
    with perturb.channels_last(model):
        for eps in b.epsilons:
            tag = f"{eps:.6g}"
            adv = attacks.attack_in_batches(model, x, y, partial(attacks.fgsm, eps=eps), batch_size)
            out[f"fgsm/{tag}"] = _logits(model, adv)
            tick(1)
            adv = attacks.attack_in_batches(
                model, x, y, partial(attacks.pgd, eps=eps, steps=b.pgd_steps, generator=g), batch_size)
            out[f"pgd/{tag}"] = _logits(model, adv)
            tick(1)
    return out
