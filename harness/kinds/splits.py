"""Predictions on each split, read from the logits stored with the model (or evaluated here
for a model the harness did not train), and the training images per class."""

from __future__ import annotations

import numpy as np

from ..evaluate import logits_of
from ..metrics import Samples
from ..train import select_training_indices, train_sample_indices
from . import register


def split_samples(ev, split: str) -> Samples:
    res = ev.result
    if split not in res.logits:  # a model the harness did not train: evaluate it here
        if split == "train_sample":
            res.train_sample_ids = train_sample_indices(res.recipe, ev.data)
            x = ev.data.train_x[res.train_sample_ids]
        else:
            x = ev.data.split(split)[0]
        res.logits[split] = logits_of(ev.model, x, ev.device)
    p = res.predictions(ev.data, split)
    return Samples.from_logits(p.logits, p.labels, p.ids, keep_probs=True)


@register("test", (), cheap=True, description="per-sample outcomes on the test split")
def test(ev) -> Samples:
    return split_samples(ev, "test")


@register("val", (), cheap=True, description="per-sample outcomes on the validation split")
def val(ev) -> Samples:
    return split_samples(ev, "val")


@register("train_sample", (), cheap=True,
          description="per-sample outcomes on a fixed seeded sample of the training images, in eval mode")
def train_sample(ev) -> Samples:
    return split_samples(ev, "train_sample")


@register("class_frequency", (), cheap=True, description="training images per class (long-tailed runs: the subsample)")
def class_frequency(ev) -> np.ndarray:
    idx = select_training_indices(ev.result.recipe, ev.data)
    return np.bincount(ev.data.train_y[idx].numpy(), minlength=ev.data.num_classes)
