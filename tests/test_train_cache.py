"""harness.train: the model cache (hit, miss, key, damage, atomic writes, safe loading),
temperature fitting and the training-index selection.

The cache tests train a tiny recipe (512 images, one epoch) on the real Fashion-MNIST: once
on the whole dataset (miss, then hit), and otherwise on ``mini``, the same data with the
validation and test splits cut to 500 and 1,000 images, so that each of the retrainings
the damage tests cause costs seconds, not the evaluation of 16,000 images."""

from __future__ import annotations

import dataclasses
import math
import re
import shutil
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness import cache, data, recipes, train
from harness.data import Dataset
from harness.evaluate import logits_of

CPU = torch.device("cpu")
PROFILE = "smoke"


@pytest.fixture(scope="module")
def tiny_recipe():
    return dataclasses.replace(
        recipes.get("fashion-mnist", "baseline", "smoke"), train_subset=512, epochs=1, batch_size=64
    )


@pytest.fixture(scope="module")
def full_trained(fashion_mnist, tiny_recipe, cache_dir):
    """The tiny recipe trained once on the whole Fashion-MNIST into the session's cache (a miss)."""
    return train.train(tiny_recipe, fashion_mnist, PROFILE, device="cpu", cache_dir=cache_dir / "full")


@pytest.fixture(scope="module")
def mini(fashion_mnist):
    ds = fashion_mnist
    test_x, test_y, val_idx = ds.test_x[:1000], ds.test_y[:1000], ds.val_idx[:500]
    return dataclasses.replace(
        ds, test_x=test_x, test_y=test_y, val_idx=val_idx,
        fingerprint=data.fingerprint(ds.train_x, ds.train_y, test_x, test_y, val_idx),
    )


@pytest.fixture(scope="module")
def trained(mini, tiny_recipe, cache_dir):
    """The tiny recipe trained once on ``mini`` into the session's cache folder."""
    return train.train(tiny_recipe, mini, PROFILE, device="cpu", cache_dir=cache_dir / "mini")


def assert_same_result(a: train.TrainResult, b: train.TrainResult):
    assert a.cache_key == b.cache_key
    for split in ("val", "test"):
        assert torch.equal(a.logits[split], b.logits[split])
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert a.history == b.history
    assert a.best_epoch == b.best_epoch
    assert a.train_size == b.train_size


# ------------------------------------------------------------------ hit and miss


def test_miss_trains_then_hit_loads_the_same_model(full_trained, fashion_mnist, tiny_recipe, cache_dir):
    trained = full_trained
    assert trained.cached is False
    assert trained.cache_path is not None and trained.cache_path.is_file()
    assert trained.cache_path.parent == cache_dir / "full"
    assert trained.cache_path.name == f"fashion-mnist_{PROFILE}_{trained.cache_key}.pt"
    assert trained.train_size == 512
    assert len(trained.history) == 1 and trained.best_epoch == 1
    assert trained.logits["test"].shape == (10_000, 10)
    assert trained.logits["val"].shape == (6_000, 10)

    again = train.train(tiny_recipe, fashion_mnist, PROFILE, device="cpu", cache_dir=cache_dir / "full")
    assert again.cached is True
    assert_same_result(trained, again)
    # the loaded weights compute the stored predictions
    x_val = fashion_mnist.split("val")[0][:500]
    assert torch.equal(logits_of(again.model, x_val, CPU), again.logits["val"][:500])
    assert not again.model.training
    # predictions() serves the cached logits with the official ids
    p = again.predictions(fashion_mnist, "test")
    assert np.array_equal(p.ids, np.arange(10_000))
    assert np.array_equal(p.labels, fashion_mnist.test_y.numpy())


def test_validation_logits_are_the_kept_epochs_bit_for_bit(mini, tiny_recipe):
    """The stored validation logits are the ones the kept epoch was chosen on (not a second
    evaluation pass): equal, bit for bit, to the kept model's logits computed afresh."""
    recipe = dataclasses.replace(tiny_recipe, train_subset=256, epochs=2)
    res = train.train(recipe, mini, PROFILE, device="cpu", use_cache=False)
    x_val, y_val, _ = mini.split("val")
    assert torch.equal(logits_of(res.model, x_val, CPU), res.logits["val"])
    kept = res.history[res.best_epoch - 1]
    assert kept["val_accuracy"] == max(h["val_accuracy"] for h in res.history)
    assert kept["val_accuracy"] == float((res.logits["val"].argmax(1) == y_val).float().mean())


@pytest.mark.parametrize("arch, dataset, shape", [("small-cnn", "fashion-mnist", (1, 28, 28)),
                                                  ("resnet18", "cifar100", (3, 32, 32))])
def test_logits_do_not_depend_on_the_batch_beyond_rounding(arch, dataset, shape):
    """What evaluate.CPU_BATCH rests on: the batch an image is evaluated in changes its logits by
    float rounding at most (other kernel tails; measured up to 3e-8 here), in either layout."""
    from harness import models

    torch.manual_seed(0)
    model = models.build(arch, dataset, 10).eval()
    x = torch.randint(0, 256, (24, *shape), dtype=torch.uint8)
    for layout in (torch.contiguous_format, torch.channels_last):
        model = model.to(memory_format=layout)
        ref = logits_of(model, x, CPU, batch_size=24)
        for bs in (1, 7, 8, 12, 100):
            assert torch.allclose(logits_of(model, x, CPU, batch_size=bs), ref, rtol=1e-5, atol=1e-6), (layout, bs)


def test_cache_dir_defaults_to_the_environment(model_cache, monkeypatch):
    assert cache.default_cache_dir() == model_cache
    monkeypatch.delenv(cache.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(model_cache / "xdg"))
    assert cache.default_cache_dir() == model_cache / "xdg" / "cnn-stress" / "models"


def test_env_cache_dir_is_used_by_train(trained, mini, tiny_recipe, model_cache):
    shutil.copy(trained.cache_path, model_cache / trained.cache_path.name)
    result = train.train(tiny_recipe, mini, PROFILE, device="cpu")  # no cache_dir: $CNN_STRESS_CACHE
    assert result.cached is True
    assert result.cache_path == model_cache / trained.cache_path.name


def test_use_cache_false_neither_reads_nor_writes(trained, mini, tiny_recipe, tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    shutil.copy(trained.cache_path, folder / trained.cache_path.name)
    result = train.train(tiny_recipe, mini, PROFILE, device="cpu", cache_dir=folder, use_cache=False)
    assert result.cached is False and result.cache_path is None
    assert [p.name for p in folder.iterdir() if p.name != ".locks"] == [trained.cache_path.name]


# ------------------------------------------------------------------ key


KEY_CHANGES = {
    "lr": 2e-3, "seed": 7, "epochs": 2, "batch_size": 32, "hflip": 0.5, "train_subset": 256,
    "label_smoothing": 0.1, "imbalance": 0.5, "max_steps": 3, "optimizer": "sgd", "weight_decay": 1e-4,
}


@pytest.mark.parametrize("field_name", sorted(KEY_CHANGES))
def test_a_training_field_changes_the_cache_key(tiny_recipe, field_name):
    base = train.cache_key(tiny_recipe, PROFILE, "fp", CPU)
    other = dataclasses.replace(tiny_recipe, **{field_name: KEY_CHANGES[field_name]})
    assert train.cache_key(other, PROFILE, "fp", CPU) != base


def test_every_training_field_is_in_the_key():
    from test_recipes import HASH_BASE, OTHER_VALUE

    base = train.cache_key(HASH_BASE, PROFILE, "fp", CPU)
    for f in dataclasses.fields(recipes.Recipe):
        other = dataclasses.replace(HASH_BASE, **{f.name: OTHER_VALUE[f.name]})
        changed = train.cache_key(other, PROFILE, "fp", CPU) != base
        # the name is a label and temperature scaling is fitted after training
        assert changed == (f.name not in ("name", "temperature_scaling")), f.name


def test_profile_data_and_device_change_the_key(tiny_recipe):
    base = train.cache_key(tiny_recipe, PROFILE, "fp", CPU)
    assert train.cache_key(tiny_recipe, PROFILE, "fp", CPU) == base
    assert re.fullmatch(r"[0-9a-f]{20}", base)
    assert train.cache_key(tiny_recipe, "full", "fp", CPU) != base
    assert train.cache_key(tiny_recipe, PROFILE, "fp2", CPU) != base
    assert train.cache_key(tiny_recipe, PROFILE, "fp", torch.device("cuda")) != base


def test_a_different_recipe_misses_the_cache(trained, mini, tiny_recipe, tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    shutil.copy(trained.cache_path, folder / trained.cache_path.name)
    other = dataclasses.replace(tiny_recipe, max_steps=2)
    result = train.train(other, mini, PROFILE, device="cpu", cache_dir=folder)
    assert result.cached is False
    assert result.cache_key != trained.cache_key
    assert result.history[-1]["steps"] == 2
    assert len(list(folder.glob("*.pt"))) == 2


def test_renamed_recipe_and_temperature_scaling_hit_the_same_entry(trained, mini, tiny_recipe, tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    shutil.copy(trained.cache_path, folder / trained.cache_path.name)
    scaled = dataclasses.replace(tiny_recipe, name="temperature-scaling", temperature_scaling=True)
    result = train.train(scaled, mini, PROFILE, device="cpu", cache_dir=folder)
    assert result.cached is True
    assert result.temperature is not None and result.temperature > 0
    for split in ("val", "test"):
        assert torch.allclose(result.logits[split], trained.logits[split] / result.temperature)
    assert torch.equal(result.logits["test"].argmax(1), trained.logits["test"].argmax(1))


# ------------------------------------------------------------------ damage


def _copy_entry(trained, tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    path = folder / trained.cache_path.name
    shutil.copy(trained.cache_path, path)
    return folder, path


def _truncate(path):
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _flip_middle(path):
    raw = bytearray(path.read_bytes())
    mid = len(raw) // 2
    raw[mid : mid + 64] = bytes(b ^ 0xFF for b in raw[mid : mid + 64])
    path.write_bytes(bytes(raw))


def _foreign_file(path):
    torch.save({"format": 0, "state_dict": {}}, path)


def _empty(path):
    path.write_bytes(b"")


@pytest.mark.parametrize("damage", [_truncate, _flip_middle, _foreign_file, _empty], ids=["truncated", "flipped", "format-0", "empty"])
def test_damaged_entry_warns_retrains_and_is_rewritten(trained, mini, tiny_recipe, tmp_path, damage):
    folder, path = _copy_entry(trained, tmp_path)
    damage(path)
    with pytest.raises(cache.CacheError):
        cache.load_entry(path, trained.cache_key)
    with pytest.warns(RuntimeWarning, match="damaged") as record:
        result = train.train(tiny_recipe, mini, PROFILE, device="cpu", cache_dir=folder)
    assert any(str(path) in str(w.message) for w in record)
    assert result.cached is False
    # rewritten: loads clean, and the next call is a hit without a warning
    payload = cache.load_entry(path, trained.cache_key)
    assert payload["key"] == trained.cache_key
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = train.train(tiny_recipe, mini, PROFILE, device="cpu", cache_dir=folder)
    assert again.cached is True
    assert_same_result(result, again)
    assert not list(folder.glob("*.tmp")) and [p.name for p in folder.iterdir() if p.name != ".locks"] == [path.name]


def test_entry_under_another_key_is_rejected(trained, tmp_path):
    _, path = _copy_entry(trained, tmp_path)
    with pytest.raises(cache.CacheError, match="holds key"):
        cache.load_entry(path, "0" * 20)


def test_entry_with_non_finite_logits_is_rejected(trained, tmp_path):
    _, path = _copy_entry(trained, tmp_path)
    payload = torch.load(path, weights_only=True)
    payload["test_logits"][3, 2] = float("nan")
    torch.save(payload, path)
    with pytest.raises(cache.CacheError, match="test predictions"):
        cache.load_entry(path, trained.cache_key)


def test_entry_with_changed_weights_is_rejected(trained, tmp_path):
    _, path = _copy_entry(trained, tmp_path)
    payload = torch.load(path, weights_only=True)
    name = next(k for k, v in payload["state_dict"].items() if v.is_floating_point())
    payload["state_dict"][name] = payload["state_dict"][name] + 1e-3
    torch.save(payload, path)
    with pytest.raises(cache.CacheError, match="checksum"):
        cache.load_entry(path, trained.cache_key)


def test_flipped_bits_in_stored_predictions_are_detected(trained, tmp_path):
    _, path = _copy_entry(trained, tmp_path)
    payload = torch.load(path, weights_only=True)
    raw = bytearray(path.read_bytes())
    stored = payload["test_logits"].contiguous().numpy().tobytes()
    start = bytes(raw).find(stored)
    assert start > 0 and bytes(raw).find(stored, start + 1) == -1  # the logits are stored once, raw
    at = start + len(stored) // 2
    raw[at : at + 8] = bytes(b ^ 0x01 for b in raw[at : at + 8])  # low mantissa bits: still finite
    path.write_bytes(bytes(raw))
    try:
        loaded = cache.load_entry(path, trained.cache_key)
    except cache.CacheError:
        return
    assert torch.equal(loaded["test_logits"], payload["test_logits"]), "corrupted predictions were served"


# ------------------------------------------------------------------ atomic writes, safe loading


def test_no_temporary_files_are_left(trained, cache_dir):
    folder = trained.cache_path.parent
    assert not [p for p in folder.iterdir() if p.suffix == ".tmp" or ".tmp" in p.name]
    assert all(p.suffix == ".pt" for p in folder.iterdir() if p.name != ".locks")


def test_failed_write_leaves_the_old_entry_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "entry.pt"
    cache.save_entry(path, {"format": 1, "x": torch.ones(3)})
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        cache.save_entry(path, {"format": 1, "x": torch.zeros(3)})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["entry.pt"]


def test_entries_are_loaded_with_weights_only(trained, mini, tiny_recipe, monkeypatch):
    calls = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    result = train.train(tiny_recipe, mini, PROFILE, device="cpu", cache_dir=trained.cache_path.parent)
    assert result.cached is True
    assert calls, "the cache entry was not read with torch.load"
    assert all(kw.get("weights_only") is True for kw in calls)


def test_entry_with_pickled_code_is_refused(tmp_path):
    """weights_only loading refuses arbitrary objects: a planted entry cannot run code."""
    path = tmp_path / "evil.pt"
    torch.save({"format": cache.CACHE_FORMAT, "key": "k", "obj": _Planted()}, path)
    with pytest.raises(cache.CacheError, match="refused: it references the Python global .*weights-only"):
        cache.load_entry(path, "k")
    assert not _Planted.loaded


class _Planted:
    loaded = False

    def __reduce__(self):
        return (_Planted._mark, ())

    @staticmethod
    def _mark():
        _Planted.loaded = True
        return None


# ------------------------------------------------------------------ temperature


def test_fit_temperature_recovers_the_scale_and_lowers_nll():
    g = torch.Generator().manual_seed(0)
    n, k = 20_000, 10
    z = torch.randn(n, k, generator=g) * 2.0
    y = torch.multinomial(torch.softmax(z, 1), 1, generator=g).squeeze(1)  # calibrated at T = 1
    over = z * 3.0  # overconfident by a factor 3
    t = train.fit_temperature(over, y)
    assert t == pytest.approx(3.0, rel=0.08)
    nll_before = F.cross_entropy(over, y).item()
    nll_after = F.cross_entropy(over / t, y).item()
    assert nll_after < nll_before - 0.05
    # a minimum: nudging T either way does not lower the NLL
    for tt in (t * 0.97, t * 1.03):
        assert F.cross_entropy(over / tt, y).item() >= nll_after - 1e-6
    assert torch.equal((over / t).argmax(1), over.argmax(1))


def test_fit_temperature_of_calibrated_logits_is_about_one():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(20_000, 5, generator=g) * 1.5
    y = torch.multinomial(torch.softmax(z, 1), 1, generator=g).squeeze(1)
    assert train.fit_temperature(z, y) == pytest.approx(1.0, rel=0.08)
    under = z / 2.0  # underconfident: T < 1
    assert train.fit_temperature(under, y) == pytest.approx(0.5, rel=0.08)


# ------------------------------------------------------------------ training indices


def synthetic_dataset(per_class=(1000,) * 10, val_every=7):
    labels = torch.cat([torch.full((n,), c, dtype=torch.int64) for c, n in enumerate(per_class)])
    n = len(labels)
    labels = labels[torch.randperm(n, generator=torch.Generator().manual_seed(0))]
    all_idx = torch.arange(n)
    val = all_idx[all_idx % val_every == 0]
    tr = all_idx[all_idx % val_every != 0]
    x = torch.zeros(n, 1, 4, 4, dtype=torch.uint8)
    return Dataset(
        name="fashion-mnist", classes=tuple(str(c) for c in range(len(per_class))), train_x=x, train_y=labels,
        test_x=x[:5], test_y=labels[:5], train_idx=tr, val_idx=val, source="synthetic",
    )


def test_imbalance_keeps_all_of_class_0_and_a_tenth_of_the_last():
    ds = synthetic_dataset()
    r = dataclasses.replace(recipes.get("fashion-mnist"), imbalance=0.1)
    idx = train.select_training_indices(r, ds)
    assert set(idx.tolist()) <= set(ds.train_idx.tolist())  # never the validation split
    assert len(set(idx.tolist())) == len(idx)
    assert torch.equal(idx, idx.sort().values)
    avail = torch.bincount(ds.train_y[ds.train_idx], minlength=10)
    kept = torch.bincount(ds.train_y[idx], minlength=10)
    assert kept[0] == avail[0]
    assert kept[9] == round(avail[9].item() * 0.1)
    for c in range(10):
        assert kept[c] == max(1, round(avail[c].item() * 0.1 ** (c / 9)))
    assert all(kept[c] >= kept[c + 1] for c in range(9))
    # deterministic for a seed, different for another
    assert torch.equal(idx, train.select_training_indices(r, ds))
    other = train.select_training_indices(dataclasses.replace(r, seed=1), ds)
    assert not torch.equal(idx, other)


def test_balanced_recipe_trains_on_the_whole_training_split():
    ds = synthetic_dataset()
    idx = train.select_training_indices(recipes.get("fashion-mnist"), ds)
    assert torch.equal(idx, ds.train_idx)


def test_train_subset_is_a_seeded_subset_of_the_training_split():
    ds = synthetic_dataset()
    r = dataclasses.replace(recipes.get("fashion-mnist"), train_subset=500)
    idx = train.select_training_indices(r, ds)
    assert len(idx) == 500
    assert set(idx.tolist()) <= set(ds.train_idx.tolist())
    assert torch.equal(idx, train.select_training_indices(r, ds))
    # every class is represented in a random subset of this size
    assert (torch.bincount(ds.train_y[idx], minlength=10) > 0).all()
    both = dataclasses.replace(r, imbalance=0.1)
    idx2 = train.select_training_indices(both, ds)
    assert len(idx2) == 500 and set(idx2.tolist()) <= set(train.select_training_indices(
        dataclasses.replace(both, train_subset=0), ds).tolist())


def test_recipe_for_another_dataset_is_rejected(mini):
    with pytest.raises(ValueError, match="cifar10"):
        train.train(recipes.get("cifar10", "baseline", "smoke"), mini, PROFILE, device="cpu", use_cache=False)


def test_loss_matches_torch_cross_entropy_and_focal_definition():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(32, 5, generator=g)
    y = torch.randint(0, 5, (32,), generator=g)
    ce = recipes.get("fashion-mnist")
    assert torch.allclose(train._loss(logits, y, ce, None), F.cross_entropy(logits, y))
    focal = dataclasses.replace(ce, loss="focal", focal_gamma=2.0)
    p = torch.softmax(logits, 1)[torch.arange(32), y]
    expected = (-(1 - p) ** 2 * torch.log(p)).mean()
    assert torch.allclose(train._loss(logits, y, focal, None), expected, atol=1e-6)
    # gamma 0 is cross-entropy
    assert torch.allclose(train._loss(logits, y, dataclasses.replace(focal, focal_gamma=0.0), None), F.cross_entropy(logits, y), atol=1e-6)
    assert math.isfinite(train._loss(logits, y, focal, None).item())
