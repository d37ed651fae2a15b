"""Datasets of one's own (harness/custom_data.py): ImageFolder trees and .npz files made here,
grey and RGB, two sizes; fingerprints, splits, ids back to files, and every bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness import custom_data, data
from harness.data import DatasetFormatError, DatasetNotFoundError


def make_folder(root: Path, classes=("ok", "scratch", "dent"), n_train=6, n_test=3, size=16, mode="L", val=0,
                seed=0, fmt="png") -> Path:
    rng = np.random.default_rng(seed)
    shape = (size, size) if mode == "L" else (size, size, 3)
    for split, n in (("train", n_train), ("test", n_test), ("val", val)):
        for c in classes:
            if not n:
                continue
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(d / f"{i:04d}.{fmt}")
    return root


def make_npz(path: Path, n_train=40, n_test=10, k=4, shape=(12, 12, 3), layout="nhwc", seed=0, **extra) -> Path:
    rng = np.random.default_rng(seed)

    def images(n):
        x = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
        return x.transpose(0, 3, 1, 2) if layout == "nchw" and x.ndim == 4 else x

    arrays = {"x_train": images(n_train), "y_train": rng.integers(0, k, n_train), "x_test": images(n_test),
              "y_test": rng.integers(0, k, n_test)}
    arrays["y_train"][:k] = np.arange(k)  # every class in training
    arrays.update(extra)
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("mode, size", [("L", 16), ("RGB", 20)])
def test_image_folders_load_grey_and_rgb_with_names_and_a_seeded_split(tmp_path, mode, size):
    root = make_folder(tmp_path / "defects", mode=mode, size=size, n_train=10, n_test=4)
    ds = custom_data.load(str(root))
    c = 1 if mode == "L" else 3
    assert ds.name == "defects" and ds.classes == ("dent", "ok", "scratch")  # sorted folder names
    assert ds.train_x.shape == (30, c, size, size) and ds.test_x.shape == (12, c, size, size)
    assert ds.train_x.dtype == torch.uint8 and ds.image_shape == (c, size, size)
    assert len(ds.val_idx) == 3 and set(ds.train_idx.tolist()) | set(ds.val_idx.tolist()) == set(range(30))
    again = custom_data.load(str(root))
    assert torch.equal(ds.val_idx, again.val_idx) and ds.fingerprint == again.fingerprint
    # ids point back to the files, and the pixels are the file's
    assert ds.test_name(0) == "test/dent/0000.png" and ds.test_name(11) == "test/scratch/0003.png"
    pix = np.asarray(Image.open(root / ds.test_name(5)))
    got = ds.test_x[5].numpy()
    assert np.array_equal(got[0] if mode == "L" else got.transpose(1, 2, 0), pix)
    assert int(ds.test_y[5]) == ds.classes.index(ds.test_name(5).split("/")[1])
    mean, std = ds.normalisation
    assert len(mean) == c and np.allclose(mean, (ds.train_x.float() / 255).mean((0, 2, 3)).numpy())
    assert not ds.builtin and not ds.flip_invariant


def test_a_val_folder_is_the_validation_split(tmp_path):
    root = make_folder(tmp_path / "d", n_train=5, n_test=2, val=2)
    ds = custom_data.load(str(root))
    assert ds.val_idx.tolist() == list(range(15, 21)) and ds.train_idx.tolist() == list(range(15))


def test_one_changed_pixel_changes_the_fingerprint(tmp_path):
    root = make_folder(tmp_path / "d")
    before = custom_data.load(str(root)).fingerprint
    f = root / "test" / "ok" / "0001.png"
    arr = np.asarray(Image.open(f)).copy()
    arr[3, 3] = (int(arr[3, 3]) + 1) % 256
    Image.fromarray(arr).save(f)
    assert custom_data.load(str(root)).fingerprint != before
    # renaming a file changes it too (ids point at names)
    f.rename(f.with_name("0001b.png"))
    assert custom_data.load(str(root)).fingerprint not in (before,)


@pytest.mark.parametrize("layout, shape", [("nhwc", (12, 12, 3)), ("nchw", (12, 12, 3)), ("nhw", (10, 10))])
def test_npz_in_every_layout(tmp_path, layout, shape):
    p = make_npz(tmp_path / "mine.npz", shape=shape, layout=layout, classes=np.array(["a", "b", "c", "d"]))
    ds = custom_data.load(str(p))
    c = 3 if len(shape) == 3 else 1
    assert ds.name == "mine" and ds.classes == ("a", "b", "c", "d")
    assert ds.train_x.shape[1:] == (c, shape[0], shape[1]) and ds.test_name(7) == "x_test[7]"
    with np.load(p) as z:
        x = z["x_test"]
    ref = x if layout == "nchw" else (x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2))
    assert np.array_equal(ds.test_x.numpy(), ref)


def test_different_sizes_need_an_image_size_and_are_resized_with_it(tmp_path):
    root = make_folder(tmp_path / "d", size=16)
    Image.fromarray(np.zeros((24, 20), np.uint8)).save(root / "train" / "ok" / "big.png")
    with pytest.raises(DatasetFormatError, match=r"images of different sizes \(.*24x20: train/ok/big\.png.*pass "
                                                 r"--image-size N"):
        custom_data.load(str(root))
    ds = custom_data.load(str(root), image_size=16)
    assert ds.image_shape == (1, 16, 16) and len(ds.train_y) == 19


@pytest.mark.parametrize("damage, match", [
    (lambda r: (r / "test" / "ok").rename(r / "test" / "new-class"), r"class\(es\) new-class are not in train/"),
    (lambda r: [p.unlink() for p in (r / "train" / "dent").iterdir()], r"train/dent: class folder without images"),
    (lambda r: (r / "train" / "ok" / "notes.txt").write_text("hi"), r"train/ok/notes\.txt: not an image file"),
    (lambda r: (r / "train" / "ok" / "0000.png").write_bytes(b"not a png"), r"train/ok/0000\.png: not an image that "
                                                                           r"can be decoded"),
    (lambda r: Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(r / "train" / "ok" / "rgb.png"),
     r"different channel counts \(1 channel\(s\): .*; 3 channel\(s\): train/ok/rgb\.png\)"),
])
def test_bad_image_folders_name_the_file(tmp_path, damage, match):
    root = make_folder(tmp_path / "d")
    damage(root)
    with pytest.raises(DatasetFormatError, match=match):
        custom_data.load(str(root))


def test_folders_with_too_little(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetFormatError, match=r"no train/ folder"):
        custom_data.load(str(empty))
    one = make_folder(tmp_path / "one", classes=("only",))
    with pytest.raises(DatasetFormatError, match=r"1 class folder \(only\); a classifier needs at least two"):
        custom_data.load(str(one))
    (tmp_path / "bare" / "train").mkdir(parents=True)
    (tmp_path / "bare" / "test").mkdir()
    with pytest.raises(DatasetFormatError, match=r"bare/train: no class folders"):
        custom_data.load(str(tmp_path / "bare"))


@pytest.mark.parametrize("extra, match", [
    ({"y_test": np.array([0, 1, 9, 2, 1, 0, 1, 2, 3, 0]), "classes": np.array(list("abcd"))},
     r"y_test holds labels from 0 to 9, but there are 4 classes"),
    ({"y_train": np.arange(39) % 4}, r"x_train holds 40 images but y_train 39 labels"),
    ({"x_test": np.zeros((10, 12, 12, 3), np.float32)}, r"x_test is float32; images must be uint8"),
    ({"x_val": np.zeros((3, 12, 12, 3), np.uint8)}, r"x_val and y_val go together"),
    ({"y_test": np.full(10, 3), "y_train": np.r_[np.arange(3), np.zeros(37, int)], "classes": np.array(list("abcd"))},
     r"class\(es\) d have no training images: remove them from the class names or add images"),
    ({"y_test": np.full(10, 3), "y_train": np.r_[np.arange(3), np.zeros(37, int)]},
     r"without a classes array the labels must be 0\.\.3 .* y_train has no label 3"),
])
def test_bad_npz_name_the_array(tmp_path, extra, match):
    p = make_npz(tmp_path / "bad.npz", **extra)
    with pytest.raises(DatasetFormatError, match=match):
        custom_data.load(str(p))


def test_npz_missing_arrays_and_unreadable(tmp_path):
    np.savez(tmp_path / "half.npz", x_train=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DatasetFormatError, match=r"missing y_train, x_test, y_test \(it holds x_train\)"):
        custom_data.load(str(tmp_path / "half.npz"))
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DatasetFormatError, match=r"junk\.npz: not a \.npz file \(a \.npz is a zip archive; this file starts "
                                                 r"with b.junk.\)"):
        custom_data.load(str(tmp_path / "junk.npz"))


def test_registered_names(tmp_path, monkeypatch):
    make_folder(tmp_path / "parts", size=16)
    reg = tmp_path / "datasets.toml"
    reg.write_text('[widgets]\npath = "parts"\nimage_size = 8\nflip_invariant = true\n')
    ds = custom_data.load("widgets", registry=reg)
    assert ds.name == "widgets" and ds.image_shape == (1, 8, 8) and ds.flip_invariant
    monkeypatch.chdir(tmp_path)  # datasets.toml beside the run is read by default
    assert custom_data.load("widgets").name == "widgets"
    with pytest.raises(DatasetNotFoundError, match=r"dataset 'gadgets': not a built-in dataset.*no such file or folder.*registered names: "
                                                   r"widgets"):
        custom_data.load("gadgets")
    reg.write_text('[widgets]\npath = "parts"\nsize = 8\n')
    with pytest.raises(custom_data.DatasetRegistryError, match=r"unknown key\(s\) size; valid: path, image_size"):
        custom_data.load("widgets")


def test_the_loaded_dataset_is_a_dataset_like_the_built_in_ones(tmp_path):
    ds = custom_data.load(str(make_npz(tmp_path / "m.npz")))
    assert isinstance(ds, data.Dataset)
    x, y, ids = ds.split("test")
    assert ids.tolist() == list(range(len(y)))
    assert ds.split("val")[0].shape[0] == len(ds.val_idx)


def test_ten_thousand_small_images_load_in_seconds(tmp_path, benchmark):
    """A 10,000-image folder of 28x28 PNGs: decoded in parallel (measured: see nox -s bench)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "big"
    for split, n in (("train", 900), ("test", 100)):
        for k in range(10):
            d = root / split / f"c{k}"
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(d / f"{i}.png", compress_level=1)
    ds = benchmark.pedantic(custom_data.load, args=(str(root),), rounds=1, iterations=1)
    assert len(ds.train_y) == 9000 and len(ds.test_y) == 1000
