"""Feature-based OOD scores: how far an image's penultimate-layer features lie from the training
images' (the scores that often separate what the softmax cannot; OpenOOD v1.5's protocol).

* ``mahalanobis`` (Lee et al., NeurIPS 2018): minus the smallest Mahalanobis distance to a class
  mean of the training features, with one covariance shared by the classes.
* ``knn`` (Sun et al., ICML 2022): minus the distance of the image's unit-normalised features to
  their ``KNN_K``-th nearest neighbour among the training images' (unit-normalised) features.

Both from pytorch-ood (``pytorch_ood.detector.Mahalanobis`` and ``KNN``, fitted on features with
``fit_features``: the library's own definitions, with its outlier sign flipped so that, like the
logit scores of ``harness.ood``, higher means more like the training data). The tests check both
against a direct implementation.

The features are the input of the model's last ``nn.Linear`` (the penultimate layer: 128 values
for the small CNN, 512 for ResNet-18), read by a forward hook during the same passes that give
the logits. The fit set is ``fit_images`` training images, as many of each class as the split
allows (Mahalanobis needs every class): 5,000 at the smoke profile; Sun et al. fit KNN on the
whole CIFAR-10 training set with k = 50 (a 0.1% neighbourhood), so k = 10 on 5,000 images keeps
about the same share.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

SCORES = ("mahalanobis", "knn")
KNN_K = 10
FIT_IMAGES = 5_000
FIT_SEED = 12


def penultimate(model: nn.Module) -> nn.Linear | None:
    """The model's last ``nn.Linear`` (its classifier head), whose input are the features."""
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    return last


class Tap:
    """``with Tap(model) as tap:`` every forward pass of the model leaves the input of its last
    linear layer in ``tap.batches`` (flattened, float64, on CPU); ``tap.features()`` joins them."""

    def __init__(self, model: nn.Module):
        self.layer = penultimate(model)
        self.batches: list[torch.Tensor] = []
        self._hook = None

    def __enter__(self):
        if self.layer is not None:
            self._hook = self.layer.register_forward_pre_hook(
                lambda mod, args: self.batches.append(args[0].detach().flatten(1).double().cpu()))
        return self

    def __exit__(self, *exc):
        if self._hook is not None:
            self._hook.remove()

    def take(self) -> torch.Tensor | None:
        """The features of the passes since the last ``take`` (None: no linear layer)."""
        if self.layer is None:
            return None
        out = torch.cat(self.batches) if self.batches else torch.empty(0)
        self.batches = []
        return out


def fit_positions(labels: np.ndarray, n: int, seed: int = FIT_SEED) -> np.ndarray:
    """Positions of about ``n`` training images, as many of each class as it has (up to n / K):
    every class is in the fit set (Mahalanobis needs a mean per class), seeded."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per = max(1, n // len(classes))
    picked = [rng.permutation(np.flatnonzero(labels == c))[:per] for c in classes]
    return np.sort(np.concatenate(picked))


def scores(fit_z: torch.Tensor, fit_y: torch.Tensor, features: dict[str, torch.Tensor],
           k: int = KNN_K) -> dict[str, dict[str, np.ndarray]]:
    """{set: {"mahalanobis": ..., "knn": ...}} for each set's features (higher: more like the
    training data), the detectors fitted on ``fit_z`` (features) and ``fit_y`` (labels 0..K-1)."""
    from pytorch_ood.detector import KNN, Mahalanobis

    y = torch.as_tensor(fit_y).long()
    _, y = torch.unique(y, return_inverse=True)  # pytorch-ood wants labels 0..C-1, every one present
    maha = Mahalanobis(None).fit_features(fit_z.float(), y)  # the library computes in float32
    knn = KNN(None, k=min(k, len(fit_z)), algorithm="brute").fit_features(fit_z.float(), y)  # exact, by matrix products
    out = {}
    for name, z in features.items():
        out[name] = {"mahalanobis": -maha.predict_features(z.float()).numpy().astype(np.float64),
                     "knn": -knn.predict_features(z.float()).numpy().astype(np.float64)}
    return out
