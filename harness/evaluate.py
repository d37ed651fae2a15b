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


@torch.no_grad()
def logits_of(model: nn.Module, x_uint8: torch.Tensor, device: torch.device, batch_size: int = 1000,
              amp: bool = False) -> torch.Tensor:
    """Logits (float32, on CPU) of uint8 images, in eval mode, in batches (``amp``: bf16 autocast)."""
    model.eval()
    device = torch.device(device)
    out = []
    for i in range(0, len(x_uint8), batch_size):
        xb = to_float(x_uint8[i : i + batch_size].to(device, non_blocking=True))
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            out.append(model(xb).float().cpu())
    if not out:
        return torch.empty(0)
    return torch.cat(out)

