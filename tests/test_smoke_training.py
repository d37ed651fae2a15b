"""The smoke Fashion-MNIST baseline trains to a useful model (about 45 s on 2 CPU cores).

It uses the default model cache on purpose: the CI reuses the model this test trains.
"""

from __future__ import annotations

import numpy as np

from harness import cache, cards, metrics, recipes, train


def test_smoke_fashion_mnist_baseline_reaches_85_percent(fashion_mnist):
    ds = fashion_mnist
    recipe = recipes.get("fashion-mnist", "baseline", "smoke")
    result = train.train(recipe, ds, "smoke")
    assert result.cache_path is not None and result.cache_path.parent == cache.default_cache_dir()
    assert result.cache_path.is_file()
    assert result.train_size == cards.PROFILES["smoke"].shrink["fashion-mnist"]["train_subset"]
    assert len(result.history) == recipe.epochs
    assert result.best_epoch == 1 + int(np.argmax([row["val_accuracy"] for row in result.history]))

    preds = result.predictions(ds, "test")
    assert preds.probs.shape == (10_000, 10)
    acc = metrics.accuracy(metrics.Samples.from_logits(preds.logits, preds.labels))
    assert acc >= 0.85, f"smoke baseline test accuracy {acc:.4f} < 0.85"
    # the cached predictions are the model's: recompute a slice
    from harness.evaluate import logits_of

    fresh = logits_of(result.model, ds.test_x[:256], train.resolve_device("auto"))
    assert np.allclose(fresh.numpy(), preds.logits[:256], atol=1e-3)
    # the kept epoch's validation accuracy is what the history says
    val = result.predictions(ds, "val")
    assert abs(metrics.accuracy(metrics.Samples.from_logits(val.logits, val.labels)) - result.kept["val_accuracy"]) < 1e-6
    # the eval-mode training sample behind the generalisation gap: images it trained on
    sample = result.predictions(ds, "train_sample")
    assert len(sample.ids) == len(ds.val_idx) and set(sample.ids.tolist()) <= set(ds.train_idx.tolist())
