"""Predictions of a model on a split: logits, labels and sample ids, computed once."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Predictions:
    """Per-sample outputs of one model on one split. ``ids`` are indices in the official split."""

    logits: np.ndarray  # float32 (N, K)
    labels: np.ndarray  # int64 (N,)
    ids: np.ndarray  # int64 (N,)
    split: str = "test"

    @property
    def probs(self) -> np.ndarray:
        return softmax(self.logits)

    def __len__(self) -> int:
        return len(self.labels)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def to_float(x_uint8: torch.Tensor) -> torch.Tensor:
    return x_uint8.float().div_(255.0)


# Images per forward pass in evaluation. The batch an image is in changes its logits by float
# rounding at most (another kernel tail: up to 3e-8 measured; tested), so it is chosen for speed.
# On a 2-core AMD EPYC (AVX2), best of 3 runs, images/s at batch 64 / 100 / 128 / 200 / 1000:
# ResNet-18 on 32x32 86 / 81 / 73 / 68 / 66, the small CNN on 28x28 2287 / 2409 / 2563 / 2505 /
# 1535: large batches fall out of the CPU's caches. On CUDA, large batches keep the device busy.
# ``nox -s bench`` prints the ratio (tests/test_benchmarks.py).
CPU_BATCH = 100
CUDA_BATCH = 4096


def eval_batch(device) -> int:
    """Images per evaluation forward pass on ``device``."""
    return CUDA_BATCH if torch.device(device).type == "cuda" else CPU_BATCH


@torch.no_grad()
def logits_of(model: nn.Module, x_uint8: torch.Tensor, device: torch.device, batch_size: int | None = None,
              amp: bool = False) -> torch.Tensor:
    """Logits (float32, on CPU) of uint8 images, in eval mode, in batches (``amp``: bf16 autocast;
    ``batch_size``: ``eval_batch(device)`` when not given)."""
    model.eval()
    device = torch.device(device)
    batch_size = batch_size or eval_batch(device)
    out = []
    for i in range(0, len(x_uint8), batch_size):
        xb = to_float(x_uint8[i : i + batch_size].to(device, non_blocking=True))
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            out.append(model(xb).float().cpu())
    if not out:
        return torch.empty(0)
    return torch.cat(out)

