"""harness.data: the CIFAR loaders on generated archives in the official format, the
seeds' split, error reporting, and Fashion-MNIST from the real idx files."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import struct

import numpy as np
import pytest
import torch
from datagen import CIFAR100_COARSE, decode_index, gz_bytes, idx_bytes, write_cifar

from conftest import DEBIAN_FMNIST
from harness import cards, data

# The official Fashion-MNIST idx files (torchvision.datasets.FashionMNIST.resources) give
# this fingerprint; it is part of every model-cache key, so it must not drift.
FASHION_MNIST_FINGERPRINT = "40fd0cda080eeb75"


def random_split_indices(n: int, val: int) -> tuple[list[int], list[int]]:
    """The seeds' split, computed the way the seeds computed it."""
    train, val_ = torch.utils.data.random_split(range(n), [n - val, val], generator=torch.Generator().manual_seed(42))
    return list(train.indices), list(val_.indices)


# ------------------------------------------------------------------ CIFAR: loading


@pytest.mark.parametrize("archive", [False, True], ids=["folder", "tar.gz"])
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_loads_official_format(cifar_root, name, archive):
    files = cifar_root(name, n_train=53, n_test=17, archive=archive)
    ds = data.load(name, files.root, download=False)

    assert ds.name == name
    assert ds.train_x.dtype == torch.uint8 and ds.test_x.dtype == torch.uint8
    assert tuple(ds.train_x.shape) == (53, 3, 32, 32)
    assert tuple(ds.test_x.shape) == (17, 3, 32, 32)
    assert ds.image_shape == (3, 32, 32)
    assert ds.train_y.dtype == torch.int64 and ds.test_y.dtype == torch.int64
    # every image and label, in the official order (CIFAR-10's five batches concatenated)
    assert np.array_equal(ds.train_x.numpy(), files.train_x)
    assert np.array_equal(ds.test_x.numpy(), files.test_x)
    assert ds.train_y.tolist() == files.train_y.tolist()
    assert ds.test_y.tolist() == files.test_y.tolist()
    # class names come from the meta file, in label order
    assert ds.classes == files.classes
    assert ds.num_classes == (10 if name == "cifar10" else 100)
    assert data.class_names(name, files.root) == files.classes
    assert ds.source == str(files.folder)
    if archive:  # extracted next to the archive, nothing half-extracted left behind
        assert files.folder.is_dir()
        assert sorted(p.name for p in files.root.iterdir()) == sorted([files.folder.name, files.path.name])


def test_cifar_archive_is_extracted_once_and_reused(cifar_root):
    files = cifar_root("cifar10", archive=True)
    first = data.load("cifar10", files.root, download=False)
    files.path.unlink()  # the extracted folder alone must now suffice
    second = data.load("cifar10", files.root, download=False)
    assert first.fingerprint == second.fingerprint
    assert torch.equal(first.train_x, second.train_x)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_pixel_layout_is_channel_major(cifar_root, name):
    """A CIFAR row is 1024 red bytes, 1024 green, 1024 blue, each row-major: the loader must
    return it as CHW with red[h, w] = row[32 h + w], green = row[1024 + ...], ..."""
    h = np.arange(32)[:, None]
    w = np.arange(32)[None, :]
    red = (h * 7 + w) % 256  # varies along both axes, differently
    green = np.full((32, 32), 200)
    blue = (255 - w * 3 - h) % 256
    row = np.concatenate([red.ravel(), green.ravel(), blue.ravel()]).astype(np.uint8)
    assert row.shape == (3072,)
    x = np.zeros((10, 3, 32, 32), dtype=np.uint8)
    x[3] = row.reshape(3, 32, 32)  # the official reshape; also checked by hand below
    files = cifar_root(name, n_train=10, n_test=2, train_x=x, test_x=x[3:5])
    ds = data.load(name, files.root, download=False)
    img = ds.train_x[3].numpy()
    assert img.shape == (3, 32, 32)
    assert np.array_equal(img[0], red)
    assert np.array_equal(img[1], green)
    assert np.array_equal(img[2], blue)
    # spot checks straight from the flat row
    assert img[0, 5, 9] == row[5 * 32 + 9]
    assert img[1, 31, 0] == row[1024 + 31 * 32]
    assert img[2, 2, 30] == row[2048 + 2 * 32 + 30]
    assert np.array_equal(ds.test_x[0].numpy(), img)


def test_cifar100_reads_fine_labels_and_ignores_coarse(cifar_root):
    # Fine labels above 19 exist only in the fine scheme: reading coarse_labels would differ.
    y = np.arange(40) * 2 + 10  # 10..88
    files = cifar_root("cifar100", n_train=40, n_test=5, train_y=y)
    ds = data.load("cifar100", files.root, download=False)
    assert ds.train_y.tolist() == y.tolist()
    assert ds.classes[0] != CIFAR100_COARSE[0]
    assert len(ds.classes) == 100


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_ids_are_indices_in_the_official_split(cifar_root, split):
    files = cifar_root("cifar10", n_train=60, n_test=25)
    ds = data.load("cifar10", files.root, download=False)
    x, y, ids = ds.split(split)
    assert ids.dtype == torch.int64
    assert len(x) == len(y) == len(ids)
    # every image carries its index in the official split in its pixels
    assert decode_index(x.numpy()).tolist() == ids.tolist()
    official_y = files.test_y if split == "test" else files.train_y
    assert y.tolist() == official_y[ids.numpy()].tolist()
    if split == "test":
        assert ids.tolist() == list(range(25))


def test_unknown_split_name_is_rejected(cifar_root):
    ds = data.load("cifar10", cifar_root("cifar10").root, download=False)
    with pytest.raises(ValueError, match="validation"):
        ds.split("validation")


# ------------------------------------------------------------------ the seeds' split


@pytest.mark.parametrize("n,val", [(60_000, 6_000), (50_000, 5_000), (50, 5), (2, 1)])
def test_seed_split_equals_random_split_with_seed_42(n, val):
    train_idx, val_idx = data.seed_split(n, val)
    exp_train, exp_val = random_split_indices(n, val)
    assert train_idx.tolist() == exp_train
    assert val_idx.tolist() == exp_val
    assert len(train_idx) == n - val and len(val_idx) == val
    assert sorted(train_idx.tolist() + val_idx.tolist()) == list(range(n))


def test_seed_split_is_deterministic_and_seeded():
    a = data.seed_split(1000, 100)
    b = data.seed_split(1000, 100)
    c = data.seed_split(1000, 100, seed=43)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


@pytest.mark.parametrize("val", [0, 10, 11, -1])
def test_seed_split_rejects_impossible_sizes(val):
    with pytest.raises(ValueError):
        data.seed_split(10, val)


def test_small_cifar_split_is_a_tenth_and_the_seed_split(cifar_root):
    files = cifar_root("cifar100", n_train=70, n_test=5)
    ds = data.load("cifar100", files.root, download=False)
    exp_train, exp_val = random_split_indices(70, 7)
    assert ds.train_idx.tolist() == exp_train
    assert ds.val_idx.tolist() == exp_val
    assert len(ds.split("train")[0]) == 63 and len(ds.split("val")[0]) == 7


def test_cifar_split_uses_the_seed_validation_size(cifar_root):
    """Above twice the seed's validation size, the split is the seed's: 5,000 images."""
    n = 10_003
    x = np.zeros((n, 3, 32, 32), dtype=np.uint8)
    files = cifar_root("cifar10", train_x=x, test_x=x[:3])
    ds = data.load("cifar10", files.root, download=False)
    assert len(ds.val_idx) == cards.DATASETS["cifar10"].val_size == 5_000
    assert len(ds.train_idx) == n - 5_000
    exp_train, exp_val = random_split_indices(n, 5_000)
    assert ds.val_idx.tolist() == exp_val
    assert ds.train_idx.tolist() == exp_train


def test_fingerprint_depends_on_content(cifar_root):
    a = data.load("cifar10", cifar_root("cifar10", seed=1).root, download=False)
    b = data.load("cifar10", cifar_root("cifar10", seed=1).root, download=False)
    c = data.load("cifar10", cifar_root("cifar10", seed=2).root, download=False)
    assert a.fingerprint == b.fingerprint
    assert a.fingerprint != c.fingerprint
    assert len(a.fingerprint) == 16 and int(a.fingerprint, 16) >= 0


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_missing_cifar_names_dataset_and_every_path(isolated_data_env, name):
    tmp = isolated_data_env
    with pytest.raises(data.DatasetNotFoundError) as info:
        data.load(name, None, download=False)
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    folder = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
    archive = "cifar-10-python.tar.gz" if name == "cifar10" else "cifar-100-python.tar.gz"
    assert msg.startswith(f"{name} not found")
    roots = [tmp / "env-data", tmp / "xdg-cache" / "cnn-stress" / "data"]
    assert data.search_roots(None) == roots
    for r in roots:
        assert str(r / folder) in msg
        assert str(r / archive) in msg
    assert "downloading was disabled" in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in msg  # how to get it
    assert "--data-root" in msg and data.DATA_ROOT_ENV in msg
    # class_names searches the same places
    with pytest.raises(data.DatasetNotFoundError):
        data.class_names(name, None)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "fashion-mnist"])
def test_a_data_root_given_is_the_only_place_searched_and_its_contents_are_named(isolated_data_env, name, cifar_root):
    """--data-root that lacks the dataset is an error listing what it holds, never a silent
    fallback to the environment's, the cache's or Debian's copy."""
    tmp = isolated_data_env
    elsewhere = cifar_root(name) if name != "fashion-mnist" else None  # the data exists elsewhere...
    if elsewhere is not None:
        import os

        os.environ[data.DATA_ROOT_ENV] = str(elsewhere.root)  # ...and the environment points at it
    root = tmp / "my-data"
    root.mkdir()
    (root / "notes.txt").write_text("x")
    (root / "other").mkdir()
    assert data.search_roots(root) == [root]
    with pytest.raises(data.DatasetNotFoundError) as info:
        data.load(name, root, download=False)
    msg = str(info.value)
    assert msg.startswith(f"--data-root {root} does not hold {name} ({root} holds notes.txt, other/)")
    assert "the only place searched" in msg
    empty = tmp / "empty"
    empty.mkdir()
    with pytest.raises(data.DatasetNotFoundError, match=f"{empty} is empty"):
        data.load(name, empty, download=False)


def test_missing_fashion_mnist_names_every_path(isolated_data_env, monkeypatch):
    tmp = isolated_data_env
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp / "no-debian")
    with pytest.raises(data.DatasetNotFoundError) as info:
        data.load("fashion-mnist", None, download=False)
    msg = str(info.value)
    assert msg.startswith("fashion-mnist not found")
    searched = [line.strip() for line in msg.splitlines()[1:] if line.startswith("  ")]
    expected = [
        folder
        for r in (tmp / "env-data", tmp / "xdg-cache" / "cnn-stress" / "data")
        for folder in (r / "FashionMNIST" / "raw", r / "fashion-mnist", r)
    ] + [tmp / "no-debian"]
    assert searched == [str(p) for p in expected]
    assert "downloading was disabled" in msg
    assert "apt-get install -y dataset-fashion-mnist" in msg


def test_unknown_dataset_is_rejected():
    with pytest.raises(ValueError, match="mnist-digits"):
        data.load("mnist-digits", download=False)


def test_corrupt_cifar_pickle_is_a_format_error(cifar_root):
    files = cifar_root("cifar10")
    (files.folder / "data_batch_3").write_bytes(b"\x80\x02}q\x00(X\x04\x00\x00\x00dat")  # truncated pickle
    with pytest.raises(data.DatasetFormatError, match="data_batch_3"):
        data.load("cifar10", files.root, download=False)


def test_cifar_pickle_of_garbage_bytes_is_a_format_error(cifar_root):
    files = cifar_root("cifar100")
    (files.folder / "test").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(data.DatasetFormatError, match="test"):
        data.load("cifar100", files.root, download=False)


def test_cifar_batch_with_wrong_shape_is_a_format_error(cifar_root, tmp_path):
    files = cifar_root("cifar10")
    import pickle

    with open(files.folder / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((4, 3, 32, 32), np.uint8), "labels": [0, 1, 2, 3]}, f, protocol=2)
    with pytest.raises(data.DatasetFormatError, match="3072"):
        data.load("cifar10", files.root, download=False)


def test_cifar_batch_without_labels_is_a_format_error(cifar_root):
    files = cifar_root("cifar10")
    import pickle

    with open(files.folder / "data_batch_5", "wb") as f:
        pickle.dump({"data": np.zeros((4, 3072), np.uint8), "fine_labels": [0, 1, 2, 3]}, f, protocol=2)
    with pytest.raises(data.DatasetFormatError, match="labels"):
        data.load("cifar10", files.root, download=False)


def test_cifar_label_count_mismatch_is_a_format_error(cifar_root):
    files = cifar_root("cifar10")
    import pickle

    with open(files.folder / "data_batch_1", "wb") as f:
        pickle.dump({"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2]}, f, protocol=2)
    with pytest.raises(data.DatasetFormatError, match="4 images but 3 labels"):
        data.load("cifar10", files.root, download=False)


@pytest.mark.parametrize(
    "name,split,bad",
    [("cifar10", "train", 10), ("cifar10", "test", 10), ("cifar10", "train", -1), ("cifar100", "train", 100), ("cifar100", "test", -3)],
)
def test_labels_out_of_range_are_a_format_error(cifar_root, name, split, bad):
    rng = np.random.default_rng(0)
    k = 10 if name == "cifar10" else 100
    train_y = rng.integers(0, k, 30)
    test_y = rng.integers(0, k, 10)
    (train_y if split == "train" else test_y)[4] = bad
    files = cifar_root(name, n_train=30, n_test=10, train_y=train_y, test_y=test_y)
    with pytest.raises(data.DatasetFormatError) as info:
        data.load(name, files.root, download=False)
    assert f"{name} {split} labels" in str(info.value)
    assert str(bad) in str(info.value)


def test_meta_without_label_names_is_a_format_error(cifar_root):
    files = cifar_root("cifar100")
    import pickle

    with open(files.folder / "meta", "wb") as f:
        pickle.dump({"coarse_label_names": list(CIFAR100_COARSE)}, f, protocol=2)
    with pytest.raises(data.DatasetFormatError, match="fine_label_names"):
        data.load("cifar100", files.root, download=False)


def test_corrupt_archive_is_a_format_error(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b\x08\x00" + b"not really gzip" * 10)
    with pytest.raises(data.DatasetFormatError, match="cifar-10-python.tar.gz"):
        data.load("cifar10", root, download=False)
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-python.tar.gz"]  # no temporary left


def test_archive_without_the_official_folder_is_a_format_error(tmp_path):
    staging = tmp_path / "staging"
    x = np.zeros((10, 3, 32, 32), np.uint8)
    folder = write_cifar(staging, "cifar10", x, np.zeros(10, int), x[:2], np.zeros(2, int))
    folder.rename(staging / "some-other-name")
    root = tmp_path / "data"
    root.mkdir()
    import tarfile

    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(staging / "some-other-name", arcname="some-other-name")
    with pytest.raises(data.DatasetFormatError, match="cifar-10-batches-py"):
        data.load("cifar10", root, download=False)


# ------------------------------------------------------------------ idx files


def write_fmnist(folder, n_train=12, n_test=5, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    for fname, arr in arrays.items():
        raw = idx_bytes(arr)
        if gz:
            (folder / (fname + ".gz")).write_bytes(gz_bytes(raw))
        else:
            (folder / fname).write_bytes(raw)
    return arrays


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("layout", [("FashionMNIST", "raw"), ("fashion-mnist",), ()], ids=["torchvision", "named", "root"])
def test_small_idx_dataset_loads_from_every_layout(tmp_path, gz, layout):
    folder = tmp_path.joinpath(*layout) if layout else tmp_path
    arrays = write_fmnist(folder, gz=gz)
    ds = data.load("fashion-mnist", tmp_path, download=False)
    assert ds.source == str(folder)
    assert tuple(ds.train_x.shape) == (12, 1, 28, 28) and ds.train_x.dtype == torch.uint8
    assert tuple(ds.test_x.shape) == (5, 1, 28, 28)
    assert np.array_equal(ds.train_x[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert np.array_equal(ds.test_x[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    assert ds.train_y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert ds.test_y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert ds.classes == data.FASHION_MNIST_CLASSES


def _header(ndim_dims, code=0x08, zero=0):
    return struct.pack(f">HBB{len(ndim_dims)}I", zero, code, len(ndim_dims), *ndim_dims)


@pytest.mark.parametrize(
    "label_file",
    [
        pytest.param(_header((5,), code=0x0D) + bytes(20), id="float-dtype-code"),
        pytest.param(_header((5,), zero=1) + bytes(5), id="nonzero-magic"),
        pytest.param(_header((5,)) + bytes(4), id="body-shorter-than-header"),
        pytest.param(_header((5,)) + bytes(6), id="body-longer-than-header"),
        pytest.param(b"\x00\x00", id="shorter-than-magic"),
        pytest.param(
            struct.pack(">HBB", 0, 0x08, 3) + b"\x00\x00",
            id="header-truncated",
        ),
    ],
)
def test_idx_file_with_wrong_header_is_a_format_error(tmp_path, label_file):
    folder = tmp_path / "fashion-mnist"
    write_fmnist(folder, n_test=5)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(label_file)
    with pytest.raises(data.DatasetFormatError, match="t10k-labels-idx1-ubyte"):
        data.load("fashion-mnist", tmp_path, download=False)


def test_truncated_gz_idx_is_a_format_error(tmp_path):
    folder = tmp_path / "fashion-mnist"
    write_fmnist(folder, gz=True)
    p = folder / "train-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:40])
    with pytest.raises(data.DatasetFormatError, match="train-images-idx3-ubyte.gz"):
        data.load("fashion-mnist", tmp_path, download=False)


def test_idx_images_and_labels_of_different_lengths_are_a_format_error(tmp_path):
    folder = tmp_path / "fashion-mnist"
    write_fmnist(folder)
    (folder / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(11)))
    with pytest.raises(data.DatasetFormatError, match=r"do not agree: train-images-idx3-ubyte holds \(\d+, 28, 28\), "
                                                      r"train-labels-idx1-ubyte \(11,\)"):
        data.load("fashion-mnist", tmp_path, download=False)


def test_idx_labels_out_of_range_are_a_format_error(tmp_path):
    folder = tmp_path / "fashion-mnist"
    write_fmnist(folder)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([0, 1, 2, 10, 3])))
    with pytest.raises(data.DatasetFormatError, match="fashion-mnist test labels"):
        data.load("fashion-mnist", tmp_path, download=False)


# ------------------------------------------------------------------ the real Fashion-MNIST

needs_debian_fmnist = pytest.mark.skipif(
    not all((DEBIAN_FMNIST / f"{s}-idx{d}-ubyte.gz").is_file() for s, d in
            [("train-images", 3), ("train-labels", 1), ("t10k-images", 3), ("t10k-labels", 1)]),
    reason=f"Fashion-MNIST idx files not found in {DEBIAN_FMNIST} (apt-get install dataset-fashion-mnist)",
)


@needs_debian_fmnist
def test_fashion_mnist_sizes_split_and_classes(fashion_mnist):
    ds = fashion_mnist
    assert tuple(ds.train_x.shape) == (60_000, 1, 28, 28) and ds.train_x.dtype == torch.uint8
    assert tuple(ds.test_x.shape) == (10_000, 1, 28, 28)
    assert len(ds.train_y) == 60_000 and len(ds.test_y) == 10_000
    assert len(ds.train_idx) == 54_000 and len(ds.val_idx) == 6_000
    exp_train, exp_val = random_split_indices(60_000, 6_000)
    assert ds.train_idx.tolist() == exp_train
    assert ds.val_idx.tolist() == exp_val
    # every class is present, balanced as published: 6,000 train and 1,000 test images each
    assert torch.bincount(ds.train_y, minlength=10).tolist() == [6_000] * 10
    assert torch.bincount(ds.test_y, minlength=10).tolist() == [1_000] * 10


def test_fashion_mnist_class_names_equal_torchvision():
    from torchvision.datasets import FashionMNIST

    assert data.FASHION_MNIST_CLASSES == tuple(FashionMNIST.classes)
    assert data.class_names("fashion-mnist") == tuple(FashionMNIST.classes)


@needs_debian_fmnist
def test_fashion_mnist_fingerprint_is_stable(fashion_mnist):
    again = data.load("fashion-mnist", DEBIAN_FMNIST, download=False)
    assert again.fingerprint == fashion_mnist.fingerprint
    assert again.fingerprint == data.fingerprint(again.train_x, again.train_y, again.test_x, again.test_y)
    from torchvision.datasets import FashionMNIST

    md5 = {name: hashlib.md5((DEBIAN_FMNIST / name).read_bytes()).hexdigest() for name, _ in FashionMNIST.resources}
    if md5 == dict(FashionMNIST.resources):  # the official files: the fingerprint is known
        assert fashion_mnist.fingerprint == FASHION_MNIST_FINGERPRINT


@needs_debian_fmnist
def test_fashion_mnist_from_torchvision_raw_layout(tmp_path, fashion_mnist):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for p in DEBIAN_FMNIST.glob("*-ubyte.gz"):
        with gzip.open(p, "rb") as src, open(raw / p.name[: -len(".gz")], "wb") as dst:
            shutil.copyfileobj(src, dst)
    ds = data.load("fashion-mnist", tmp_path, download=False)
    assert ds.source == str(raw)
    assert ds.fingerprint == fashion_mnist.fingerprint
    assert torch.equal(ds.test_x, fashion_mnist.test_x)
    assert torch.equal(ds.train_idx, fashion_mnist.train_idx)
