"""Out-of-distribution inputs: images of none of the model's classes, and how well its scores
tell them from the test images (the in-distribution positives).

Sets (uint8 images shaped like the data's, ``OOD_IMAGES`` each, seeded):

* ``uniform``: every pixel uniform in 0..255; ``gaussian``: N(128, 64) per pixel, clipped;
* ``blank``: black frames; ``constant``: one random grey level per image (per channel);
* ``shuffled``: test images cut into a 4 x 4 grid of tiles put back in a random order: their
  pixel statistics stay, their objects do not;
* ``digits``: scikit-learn's 8x8 handwritten digits, upscaled (grey data only): a real other
  domain that ships with a dependency;
* ``cifar10`` / ``cifar100``: the sibling CIFAR test set, when it is under the data root;
* ``own``: ``--ood PATH``, a set of one's own (an image folder or a ``.npz``, any classes).

Scores of in-distribution-ness (higher: more like the training data): maximum softmax
probability (``msp``), maximum logit (``maxlogit``) and the negative energy
``logsumexp(logits)`` (``energy``; Liu et al. 2020). Metrics per set: AUROC (test images
positive) and FPR at 95% TPR (the share of OOD images scored above the score that keeps 95%
of test images), and the share of OOD images predicted with >= 99% confidence ("confident on
garbage"). Checked against scikit-learn's ``roc_auc_score`` / ``roc_curve`` in the tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

OOD_IMAGES = 1_000
SEED = 11
SYNTHETIC = ("uniform", "gaussian", "blank", "constant", "shuffled")
SCORES = ("msp", "maxlogit", "energy")
CONFIDENT = 0.99
GRID = 4


def _shuffled(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n, c, h, w = x.shape
    th, tw = h // GRID, w // GRID
    out = x.clone()
    for i in range(n):
        order = torch.randperm(GRID * GRID, generator=g)
        tiles = [x[i, :, r * th:(r + 1) * th, q * tw:(q + 1) * tw] for r in range(GRID) for q in range(GRID)]
        for k, src in enumerate(order.tolist()):
            r, q = divmod(k, GRID)
            out[i, :, r * th:(r + 1) * th, q * tw:(q + 1) * tw] = tiles[src]
    return out


def _digits(shape: tuple[int, int, int], n: int) -> torch.Tensor | None:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        return None
    d = torch.as_tensor(load_digits().images[:n], dtype=torch.float32)[:, None] / 16.0
    up = torch.nn.functional.interpolate(d, size=shape[1:], mode="bilinear", align_corners=False)
    return (up.clamp(0, 1) * 255).round().to(torch.uint8)


def synthetic(name: str, data, n: int = OOD_IMAGES) -> torch.Tensor:
    """A synthetic OOD set for ``data`` (a ``harness.data.Dataset``)."""
    c, h, w = data.image_shape
    g = torch.Generator().manual_seed(SEED + SYNTHETIC.index(name))
    if name == "uniform":
        return torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)
    if name == "gaussian":
        return (128 + 64 * torch.randn((n, c, h, w), generator=g)).round().clamp(0, 255).to(torch.uint8)
    if name == "blank":
        return torch.zeros((n, c, h, w), dtype=torch.uint8)
    if name == "constant":
        return torch.randint(0, 256, (n, c, 1, 1), generator=g, dtype=torch.uint8).expand(n, c, h, w).clone()
    if name == "shuffled":
        idx = torch.randperm(len(data.test_x), generator=g)[:n]
        return _shuffled(data.test_x[idx], g)
    raise ValueError(f"unknown OOD set {name!r}")


def sets(data, data_root=None, own: str | Path | None = None, n: int = OOD_IMAGES) -> dict[str, torch.Tensor]:
    """Every OOD set that applies to ``data``: the synthetic ones, digits for grey images, the
    sibling CIFAR test set when present, and one's own (``own``)."""
    out = {name: synthetic(name, data, n) for name in SYNTHETIC}
    c, h, w = data.image_shape
    if c == 1:
        digits = _digits(data.image_shape, n)
        if digits is not None:
            out["digits"] = digits
    sibling = {"cifar10": "cifar100", "cifar100": "cifar10"}.get(data.name) if data.builtin else None
    if sibling:
        from . import data as data_mod

        try:
            other = data_mod.load(sibling, data_root, download=False)
            g = torch.Generator().manual_seed(SEED)
            out[sibling] = other.test_x[torch.randperm(len(other.test_x), generator=g)[:n]]
        except (data_mod.DatasetNotFoundError, data_mod.DatasetFormatError):
            pass
    if own is not None:
        out["own"] = load_own(own, data.image_shape, n)
    return out


def load_own(path: str | Path, shape: tuple[int, int, int], n: int = OOD_IMAGES) -> torch.Tensor:
    """One's own OOD images: every image under a folder (any subfolders) or ``x``/``x_test`` of
    a ``.npz``, resized to the data's size and channel count; checked like ``--dataset``."""
    from . import custom_data
    from .data import DatasetFormatError

    path = Path(path).expanduser()
    c, h, w = shape
    if path.is_file() and path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            key = next((k for k in ("x", "x_test", "x_train") if k in z.files), None)
            if key is None:
                raise DatasetFormatError(f"--ood {path}: no x, x_test or x_train array (it holds {', '.join(z.files)})")
            x = torch.from_numpy(custom_data._nchw(z[key], key, path))
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in custom_data.IMAGE_SUFFIXES)
        if not files:
            raise DatasetFormatError(f"--ood {path}: no images under it ({', '.join(sorted(custom_data.IMAGE_SUFFIXES))})")
        decoded = [custom_data._decode(p) for p in files[:n]]
        x = torch.stack([torch.nn.functional.interpolate(torch.from_numpy(a.transpose(2, 0, 1).copy())[None].float(),
                                                         size=(h, w), mode="bilinear", antialias=True,
                                                         align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
                         for a in decoded])
    else:
        raise DatasetFormatError(f"--ood {path}: not an image folder or a .npz")
    if x.shape[1] != c:
        x = x.float().mean(1, keepdim=True) if c == 1 else x.expand(-1, 3, -1, -1)
        x = x.round().to(torch.uint8)
    if tuple(x.shape[-2:]) != (h, w):
        x = torch.nn.functional.interpolate(x.float(), size=(h, w), mode="bilinear", antialias=True,
                                            align_corners=False).round().clamp(0, 255).to(torch.uint8)
    return x[:n]


# ============================================================================ scores and metrics


def scores(logits: np.ndarray) -> dict[str, np.ndarray]:
    """In-distribution scores of each image (higher: more like the training data)."""
    z = np.asarray(logits, dtype=np.float64)
    m = z.max(axis=1)
    lse = m + np.log(np.exp(z - m[:, None]).sum(axis=1))
    return {"msp": np.exp(m - lse), "maxlogit": m, "energy": lse}


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counted half (the Mann-Whitney statistic)."""
    from scipy.stats import rankdata

    r = rankdata(np.concatenate([pos, neg]))
    n1, n0 = len(pos), len(neg)
    return float((r[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def fpr_at_tpr(pos: np.ndarray, neg: np.ndarray, tpr: float = 0.95) -> float:
    """The share of negatives scored at or above the highest threshold that keeps ``tpr`` of
    the positives (the k-th highest positive score, k = ceil(tpr n)): the first point of
    scikit-learn's ROC curve that reaches ``tpr``."""
    k = int(np.ceil(tpr * len(pos)))
    t = np.sort(pos)[::-1][max(k, 1) - 1]
    return float((np.asarray(neg) >= t).mean())
