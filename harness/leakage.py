"""Train/test leakage: test images with a near-duplicate in the training split (Barz & Denzler,
"Do we train on test data? Purging CIFAR of near-duplicates", 2020). Leakage inflates test
accuracy and hides errors, so the share and the accuracy on those images are reported.

Similarity: the cosine between mean-centred pixel vectors (each image minus its own mean, so
a uniformly brighter copy is still a copy); images larger than 1,024 values are area-averaged
to 16 x 16 first (CIFAR: 768 values), which keeps near-duplicates near and makes the search
cheap. Every test image's most similar training image is found by chunked matrix products
(Fashion-MNIST: 10,000 x 60,000 x 784 in about 10-25 s on 2 CPU cores; cached by the data's
fingerprint). A pair at cosine >= ``THRESHOLD`` is a near-duplicate.

The threshold, 0.995, from Fashion-MNIST's pairs (looked at, not assumed): every pair at or
above 0.999 is the same product photo (7 test images); between 0.995 and 0.999, textured items
(a patterned dress, a printed shirt, a bag) are the same product and plain silhouettes (plain
trousers) can be two different items of the same cut; below 0.99 almost all are different
items of one class. The count at 0.995 is therefore an upper bound for plain shapes. Exact
pixel copies are counted apart (``exact``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

THRESHOLD = 0.995
MAX_VALUES = 1024  # images with more values are area-averaged to 16 x 16 before comparing
CHUNK = 512


@dataclass(frozen=True)
class Leakage:
    """For each test image: its most similar training image (index into the official training
    split), the cosine, and whether the two are pixel-identical."""

    nearest: np.ndarray
    similarity: np.ndarray
    exact: np.ndarray
    threshold: float = THRESHOLD

    @property
    def leaked(self) -> np.ndarray:
        return self.similarity >= self.threshold

    def take(self, idx):
        return Leakage(self.nearest[idx], self.similarity[idx], self.exact[idx], self.threshold)

    def __len__(self) -> int:
        return len(self.nearest)


def _vectors(x_uint8: torch.Tensor) -> torch.Tensor:
    x = x_uint8.float()
    if x[0].numel() > MAX_VALUES:
        x = F.adaptive_avg_pool2d(x, (16, 16))
    v = x.flatten(1)
    v = v - v.mean(1, keepdim=True)
    return v / v.norm(dim=1, keepdim=True).clamp_min(1e-6)


def near_duplicates(train_x: torch.Tensor, test_x: torch.Tensor, threshold: float = THRESHOLD, tick=None) -> Leakage:
    """Each test image's most similar training image (see the module)."""
    tr, te = _vectors(train_x), _vectors(test_x)
    best = torch.empty(len(te))
    arg = torch.empty(len(te), dtype=torch.long)
    with torch.inference_mode():
        for i in range(0, len(te), CHUNK):
            v, a = (te[i:i + CHUNK] @ tr.T).max(dim=1)
            best[i:i + CHUNK], arg[i:i + CHUNK] = v, a
            if tick is not None:
                tick(1)
    flat_tr, flat_te = train_x.flatten(1), test_x.flatten(1)
    exact = (flat_te == flat_tr[arg]).all(dim=1)
    return Leakage(arg.numpy(), best.clamp(-1, 1).numpy().astype(np.float64), exact.numpy(), float(threshold))


def chunks(n_test: int) -> int:
    return -(-n_test // CHUNK)
