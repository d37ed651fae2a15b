"""Training speed, measured side by side: the harness's own loop against the usual one.

* The usual loop (what a notebook does): a torchvision-style ``Dataset`` of PIL images with
  per-sample ``RandomHorizontalFlip`` and ``RandomRotation``, ``ToTensor``, a ``DataLoader``
  (no worker processes: the 2-core CPU has none to spare), fp32, eager, default memory
  format, ``torch.optim.Adam`` with its default implementation.
* The harness loop: ``train.Trainer`` itself (data held on the device as uint8, batched tensor
  augmentation, channels-last, fused optimiser, bf16 autocast where the runtime enables it).

Both train the same architecture on the same images with the same recipe for a fixed number
of steps (the validation pass excluded); each is timed over ``rounds`` repetitions and the
best round is kept. ``flops_per_image`` counts a training step's FLOPs with
``torch.utils.flop_counter``; ``peak_flops`` is the device's nominal peak (an estimate on CPUs,
from the clock and the vector width: say so wherever it is shown).
"""

from __future__ import annotations

import math
import platform
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import cards, models, train
from .data import Dataset
from .recipes import Recipe


@dataclass
class Timing:
    loop: str
    images: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")

    def to_dict(self) -> dict:
        return {**asdict(self), "images_per_second": self.images_per_second}


def usual_loop(recipe: Recipe, data: Dataset, steps: int, device: torch.device) -> Timing:
    """``steps`` optimiser steps of the notebook-style loop (PIL images, per-sample transforms)."""
    from PIL import Image
    from torchvision import transforms

    mean, std = cards.card(recipe.dataset).normalisation
    augment = [transforms.RandomHorizontalFlip(recipe.hflip)] if recipe.hflip else []
    if recipe.rotation:
        augment.append(transforms.RandomRotation(recipe.rotation))
    if recipe.crop_padding:
        augment.append(transforms.RandomCrop(data.image_shape[1], padding=recipe.crop_padding))
    tf = transforms.Compose([*augment, transforms.ToTensor()])
    idx = data.train_idx[: steps * recipe.batch_size]
    arr = data.train_x[idx].permute(0, 2, 3, 1).numpy()
    labels = data.train_y[idx].tolist()
    mode = "L" if arr.shape[-1] == 1 else "RGB"
    images = [Image.fromarray(a[..., 0] if mode == "L" else a, mode) for a in arr]

    class PILDataset(torch.utils.data.Dataset):
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            return tf(images[i]), labels[i]

    loader = torch.utils.data.DataLoader(PILDataset(), batch_size=recipe.batch_size, shuffle=True, num_workers=0)
    torch.manual_seed(recipe.seed)
    model = models.for_data(recipe.arch, data).to(device).train()
    # the model normalises internally; a notebook's Normalize transform does the same arithmetic
    opt = (torch.optim.Adam(model.parameters(), lr=recipe.lr) if recipe.optimizer == "adam" else
           torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay))
    del mean, std
    seen = 0
    t0 = time.perf_counter()
    for xb, yb in loader:
        xb, yb = xb.to(device), yb.to(device)
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen += len(yb)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return Timing("usual", seen, time.perf_counter() - t0)


def harness_loop(recipe: Recipe, data: Dataset, steps: int, device: torch.device,
                 runtime: train.Runtime | None = None) -> Timing:
    """``steps`` optimiser steps of the harness's own training loop (``train.Trainer``)."""
    trainer = train.Trainer(recipe, data, device, runtime or train.Runtime.default(device))
    trainer.warm_up()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    seen = trainer.run_steps(steps)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return Timing("harness", seen, time.perf_counter() - t0)


def flops_per_image(recipe: Recipe, data: Dataset) -> float:
    """FLOPs of one training step (forward + backward) per image, counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    model = models.for_data(recipe.arch, data).train()
    x = torch.rand(recipe.batch_size, *data.image_shape)
    y = torch.randint(0, data.num_classes, (recipe.batch_size,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return counter.get_total_flops() / recipe.batch_size


# H100 SXM dense: 989 TFLOP/s bf16, 67 TFLOP/s fp32 (NVIDIA's datasheet).
GPU_PEAKS = {"H100": {"bf16": 989e12, "fp32": 67e12}, "H200": {"bf16": 989e12, "fp32": 67e12}}


def gflop_per_image(model: torch.nn.Module, image_shape) -> float | None:
    """GFLOP of one forward pass of ``model`` on one image (inference: what measuring it costs;
    ``cards.measurement_sizes`` scales the measurements with it), or None when the counter
    cannot follow the model."""
    from torch.utils.flop_counter import FlopCounterMode

    was = model.training
    try:
        model.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *image_shape))
        return counter.get_total_flops() / 1e9
    except Exception:  # noqa: BLE001 - measured at the profile's sizes instead
        return None
    finally:
        model.train(was)


def peak_flops(device: torch.device, dtype: str) -> tuple[float | None, str]:
    """(peak FLOP/s, how it was found). CPU: cores x clock x FLOPs per cycle (AVX-512: two FMA
    units x 16 fp32 lanes x 2), an estimate; CUDA: the datasheet of a known GPU."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peaks in GPU_PEAKS.items():
            if key in name:
                return peaks.get(dtype), f"{name} datasheet ({dtype}, dense)"
        return None, f"{name}: peak unknown"
    cores = torch.get_num_threads()
    mhz = None
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("cpu MHz"):
                mhz = float(line.split(":")[1])
                break
    except OSError:
        pass
    if mhz is None:
        return None, "CPU clock unknown"
    lanes = 16 if "avx512" in torch.backends.cpu.get_cpu_capability().lower() else 8
    per_cycle = 2 * lanes * 2
    return cores * mhz * 1e6 * per_cycle, (f"estimate: {cores} cores x {mhz:.0f} MHz x {per_cycle} fp32 FLOPs/cycle "
                                           f"({platform.processor() or platform.machine()})")


def compare(recipe: Recipe, data: Dataset, steps: int = 60, rounds: int = 3, device: str = "auto",
            runtime: train.Runtime | None = None) -> dict:
    """Both loops on the same recipe and images; the best of ``rounds`` each, interleaved."""
    dev = train.resolve_device(device)
    best: dict[str, Timing] = {}
    for _ in range(rounds):
        for fn in (usual_loop, harness_loop):
            t = fn(recipe, data, steps, dev) if fn is usual_loop else fn(recipe, data, steps, dev, runtime)
            if t.loop not in best or t.images_per_second > best[t.loop].images_per_second:
                best[t.loop] = t
    rt = runtime or train.Runtime.default(dev)
    fpi = flops_per_image(recipe, data)
    peak, how = peak_flops(dev, "bf16" if rt.amp else "fp32")
    h = best["harness"].images_per_second
    return {
        "recipe": recipe.key, "arch": recipe.arch, "batch_size": recipe.batch_size, "steps": steps, "rounds": rounds,
        "device": str(dev), "runtime": rt.to_dict(),
        "usual": best["usual"].to_dict(), "harness": best["harness"].to_dict(),
        "ratio": h / best["usual"].images_per_second,
        "flops_per_image": fpi, "achieved_flops": h * fpi, "peak_flops": peak, "peak_source": how,
        "utilisation": (h * fpi / peak) if peak else None,
    }


def epochs_estimate(result: dict, train_images: int, epochs: int) -> float:
    """Seconds of training for a recipe at the measured harness throughput."""
    return math.ceil(train_images * epochs) / result["harness"]["images_per_second"]


def table(results: list[dict]) -> str:
    from tabulate import tabulate

    rows = [[r["recipe"], r["device"], r["batch_size"], f"{r['usual']['images_per_second']:.0f}",
             f"{r['harness']['images_per_second']:.0f}", f"{r['ratio']:.2f}x",
             f"{r['achieved_flops'] / 1e9:.1f} GFLOP/s",
             "-" if r["utilisation"] is None else f"{r['utilisation']:.1%} ({r['peak_source']})"]
            for r in results]
    return tabulate(rows, headers=["recipe", "device", "batch", "usual img/s", "harness img/s", "ratio",
                                   "achieved", "of peak"], tablefmt="github")


def synthetic(name: str, shape: tuple[int, int, int], classes: int, n_train: int, n_test: int = 100) -> Dataset:
    """Random uint8 images of a dataset's shape (timing only: no CIFAR files reach these
    machines, so the CIFAR figures are measured on tensors of CIFAR's shape)."""
    rng = np.random.default_rng(0)
    tx = torch.from_numpy(rng.integers(0, 256, (n_train, *shape), dtype=np.uint8))
    ty = torch.from_numpy(rng.integers(0, classes, n_train))
    sx = torch.from_numpy(rng.integers(0, 256, (n_test, *shape), dtype=np.uint8))
    sy = torch.from_numpy(rng.integers(0, classes, n_test))
    n_val = max(1, n_train // 10)
    return Dataset(name, tuple(f"class {i}" for i in range(classes)), tx, ty, sx, sy,
                   torch.arange(n_train - n_val), torch.arange(n_train - n_val, n_train), "synthetic (timing only)")
