"""Datasets as uint8 tensors, the seeds' splits, and where the files are found.

Three datasets are supported, read from their official file formats:

* ``fashion-mnist``: the four idx files (``.gz`` or uncompressed), in a data root
  directly, in torchvision's ``FashionMNIST/raw/`` layout, or where Debian's
  ``dataset-fashion-mnist`` package puts them (``/usr/share/datasets/fashion-mnist``).
* ``cifar10`` / ``cifar100``: the ``cifar-10-batches-py`` / ``cifar-100-python`` pickle
  folders (or the ``.tar.gz`` archive next to them, which is extracted): ``harness/cifar.py``.

Every sample keeps its index in the official split as its id: ``test #3640`` is the
3641st image of the official test set in every report.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from . import cards
from .cards import BUILTIN as DATASETS  # noqa: F401 - the built-in datasets' names
from .cards import FASHION_MNIST_CLASSES, SPLIT_SEED

DATA_ROOT_ENV = "CNN_STRESS_DATA"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

_FMNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are in none of the places searched."""


class DatasetFormatError(ValueError):
    """The dataset's files exist but are not in the expected format."""


def default_data_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnn-stress" / "data"


def search_roots(data_root: str | os.PathLike | None = None) -> list[Path]:
    """Data roots in the order they are searched: environment, default cache. A data root
    given explicitly (``--data-root``) is the only one searched: data from anywhere else
    would be a silent fallback to other data."""
    if data_root:
        return [Path(data_root).expanduser()]
    roots: list[Path] = []
    if os.environ.get(DATA_ROOT_ENV):
        roots.append(Path(os.environ[DATA_ROOT_ENV]).expanduser())
    roots.append(default_data_root())
    out: list[Path] = []
    for r in roots:
        if r not in out:
            out.append(r)
    return out


@dataclass(frozen=True)
class Dataset:
    """A dataset held as uint8 NCHW tensors plus the seeds' train/validation split.

    ``train_idx`` and ``val_idx`` index the official training split; ids of test
    samples are their index in the official test split.
    """

    name: str
    classes: tuple[str, ...]
    train_x: torch.Tensor  # uint8 (N, C, H, W), the whole official training split
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor
    train_idx: torch.Tensor  # int64 indices into train_x
    val_idx: torch.Tensor
    source: str
    fingerprint: str = field(default="")
    # Whether a horizontal flip keeps every class (the hflip invariance test needs it): true of
    # clothes, animals, vehicles and scenes; False for data whose classes a mirror changes.
    flip_invariant: bool = True
    # Datasets of one's own (harness/custom_data.py): where each test id comes from (a file or an
    # array row), and the per-channel (mean, std) the models normalise with.
    test_names: tuple[str, ...] | None = None
    normalisation: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    # Evaluated on part of its splits (``evaluation_subset``): what was kept, in words, and the
    # official test split's size (the first ``len(test_y)`` of them are held: ids stay positions).
    subset: str = ""
    official_test_size: int | None = None

    @property
    def full_test_size(self) -> int:
        """Images in the official test split (the rows per severity of a published corrupted
        set), whether this dataset holds all of them or only the first (``evaluation_subset``)."""
        return self.official_test_size or len(self.test_y)

    @property
    def builtin(self) -> bool:
        return self.name in DATASETS

    @property
    def card(self) -> cards.DatasetCard:
        """The dataset's facts: its built-in card, or one made from a dataset of one's own
        (``cards.for_data``). Code after planning reads them here, never by the name."""
        return cards.for_data(self)

    def test_name(self, i: int) -> str:
        """What a test id points to: ``test #3640`` for the built-in sets, the file otherwise."""
        return self.test_names[i] if self.test_names else f"test #{i}"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images uint8, labels, ids) of ``train``, ``val`` or ``test``."""
        if name == "train":
            return self.train_x[self.train_idx], self.train_y[self.train_idx], self.train_idx
        if name == "val":
            return self.train_x[self.val_idx], self.train_y[self.val_idx], self.val_idx
        if name == "test":
            ids = torch.arange(len(self.test_y))
            return self.test_x, self.test_y, ids
        raise ValueError(f"unknown split {name!r}: use 'train', 'val' or 'test'")


def evaluation_subset(ds: Dataset, n_val: int, n_test: int, why: str) -> Dataset:
    """``ds`` evaluated on fewer images: the first ``n_val`` of its validation split (a seeded
    random subset already: ``seed_split``) and the first ``n_test`` images of its test split, so
    a test id is still the image's position in the official split. Training images are
    unchanged. The fingerprint covers what is kept (models and evidence are keyed apart)."""
    n_val, n_test = min(n_val, len(ds.val_idx)), min(n_test, len(ds.test_y))
    if (n_val, n_test) == (len(ds.val_idx), len(ds.test_y)):
        return ds
    if n_val < 1 or n_test < 1:
        raise ValueError(f"an evaluation subset needs images in both splits (validation {n_val}, test {n_test})")
    val_idx, test_x, test_y = ds.val_idx[:n_val], ds.test_x[:n_test], ds.test_y[:n_test]
    subset = (f"validation: {n_val:,} of {len(ds.val_idx):,} images; test: the first {n_test:,} of "
              f"{len(ds.test_y):,} ({why})")
    return replace(ds, val_idx=val_idx, test_x=test_x, test_y=test_y, subset=subset,
                   test_names=ds.test_names[:n_test] if ds.test_names else None,
                   official_test_size=ds.full_test_size,
                   fingerprint=fingerprint(ds.train_x, ds.train_y, test_x, test_y, val_idx))


def seed_split(n: int, val_size: int, seed: int = SPLIT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """The split of ``torch.utils.data.random_split(range(n), [n - val, val], seed)``.

    The seeds split with ``random_split`` and ``torch.Generator().manual_seed(42)``;
    this returns the same indices without building a Subset.
    """
    if not 0 < val_size < n:
        raise ValueError(f"validation size {val_size} must be between 1 and {n - 1}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[: n - val_size].clone(), perm[n - val_size :].clone()


def fingerprint(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        t = t.contiguous()
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def class_names(name: str, data_root: str | os.PathLike | None = None) -> tuple[str, ...]:
    """The class names, read from the dataset (cheap: CIFAR reads only its meta file)."""
    _check_name(name)
    if name == "fashion-mnist":
        return FASHION_MNIST_CLASSES
    from . import cifar

    return cifar.classes(name, cifar.find(name, data_root, download=False))


def load(name: str, data_root: str | os.PathLike | None = None, *, download: bool = True) -> Dataset:
    """Load a dataset as tensors with the seeds' split (seed 42)."""
    _check_name(name)
    if name == "fashion-mnist":
        folder = _find_fashion_mnist(data_root, download)
        train_x = _read_idx(folder, "train_images")
        train_y = _read_idx(folder, "train_labels")
        test_x = _read_idx(folder, "test_images")
        test_y = _read_idx(folder, "test_labels")
        if train_x.ndim != 3 or test_x.ndim != 3 or len(train_x) != len(train_y) or len(test_x) != len(test_y):
            raise DatasetFormatError(
                f"fashion-mnist files in {folder} do not agree: {_FMNIST_FILES['train_images']} holds "
                f"{tuple(train_x.shape)}, {_FMNIST_FILES['train_labels']} {tuple(train_y.shape)}, "
                f"{_FMNIST_FILES['test_images']} {tuple(test_x.shape)}, {_FMNIST_FILES['test_labels']} "
                f"{tuple(test_y.shape)}: images (N, 28, 28) and N labels in each split")
        train_x, test_x = train_x[:, None], test_x[:, None]
        classes = class_names(name)
        source = str(folder)
    else:
        from . import cifar

        folder = cifar.find(name, data_root, download)
        train_x, train_y, test_x, test_y = cifar.read(name, folder)
        classes = cifar.classes(name, folder)
        source = str(folder)
    train_y = train_y.long()
    test_y = test_y.long()
    for split, y in (("train", train_y), ("test", test_y)):
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
            raise DatasetFormatError(
                f"{name} {split} labels range over [{int(y.min())}, {int(y.max())}] "
                f"but the dataset names {len(classes)} classes ({source})"
            )
    n = len(train_y)
    card = cards.card(name)
    val_size = card.val_size if n > card.val_size * 2 else max(1, n // 10)
    train_idx, val_idx = seed_split(n, val_size)
    return Dataset(
        name=name,
        classes=tuple(classes),
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        train_idx=train_idx,
        val_idx=val_idx,
        source=source,
        fingerprint=fingerprint(train_x, train_y, test_x, test_y),
        normalisation=card.normalisation,
    )



def cifar_c(ds: Dataset, data_root: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """The published CIFAR-10-C / CIFAR-100-C corruptions of ``ds`` when their files are under a
    data root, else {} (``harness.cifar.cifar_c``)."""
    from .cifar import cifar_c as published

    return published(ds, data_root)


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")


# ---------------------------------------------------------------- Fashion-MNIST


def _fmnist_candidates(data_root) -> list[Path]:
    out = []
    for root in search_roots(data_root):
        out += [root / "FashionMNIST" / "raw", root / "fashion-mnist", root]
    if not data_root:
        out.append(DEBIAN_FASHION_MNIST)
    return out


def _missing_parents(path: Path) -> list[Path]:
    """The folders a download into ``path`` would create, deepest first."""
    out = []
    for p in [path, *path.parents]:
        if p.exists():
            break
        out.append(p)
    return out


def _remove_if_empty(folders: list[Path]) -> None:
    """Undo a failed download's folders (only those it created, only if still empty)."""
    for p in folders:
        try:
            p.rmdir()
        except OSError:
            break


def _holds(root: Path, limit: int = 15) -> str:
    """What a folder holds, for an error message."""
    if not root.exists():
        return f"{root} does not exist"
    if not root.is_dir():
        return f"{root} is not a folder"
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    if not entries:
        return f"{root} is empty"
    more = f" and {len(entries) - limit} more" if len(entries) > limit else ""
    return f"{root} holds {', '.join(entries[:limit])}{more}"


def _fmnist_file(folder: Path, key: str) -> Path | None:
    stem = _FMNIST_FILES[key]
    for p in (folder / stem, folder / (stem + ".gz")):
        if p.is_file():
            return p
    return None


def _find_fashion_mnist(data_root, download: bool) -> Path:
    candidates = _fmnist_candidates(data_root)
    for folder in candidates:
        if all(_fmnist_file(folder, k) for k in _FMNIST_FILES):
            return folder
    if download:
        target = search_roots(data_root)[0] / "FashionMNIST" / "raw"
        created = _missing_parents(target)
        try:
            from torchvision.datasets import FashionMNIST
            from torchvision.datasets.utils import download_url

            for filename, md5 in FashionMNIST.resources:
                download_url(FashionMNIST.mirrors[0] + filename, str(target), filename=filename, md5=md5)
            return target
        except Exception as exc:  # offline, refused, checksum: report every path searched
            _remove_if_empty(created)
            reason = f"download failed: {exc}"
    else:
        reason = "downloading was disabled"
    if data_root:
        raise DatasetNotFoundError(
            f"--data-root {data_root} does not hold fashion-mnist ({_holds(Path(data_root).expanduser())}); expected "
            "the four idx files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte"
            "[.gz], t10k-labels-idx1-ubyte[.gz]) in it, in its fashion-mnist/ or in its FashionMNIST/raw/. "
            f"({reason}; a data root given is the only place searched)")
    raise DatasetNotFoundError(
        "fashion-mnist not found; searched:\n  "
        + "\n  ".join(str(c) for c in candidates)
        + f"\n({reason})\nTo get it: `apt-get install -y dataset-fashion-mnist` (Debian), or put the four "
        "idx files (train-images-idx3-ubyte.gz, ...) in one of those folders, or pass "
        f"--data-root / set {DATA_ROOT_ENV} to where they are."
    )


def _read_idx(folder: Path, key: str) -> torch.Tensor:
    path = _fmnist_file(folder, key)
    assert path is not None
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DatasetFormatError(f"cannot read {path}: {exc}") from exc
    if len(data) < 4:
        raise DatasetFormatError(f"{path} is too short to be an idx file")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DatasetFormatError(f"{path} is not an unsigned-byte idx file (magic {data[:4].hex()})")
    if len(data) < 4 + 4 * ndim:
        raise DatasetFormatError(f"{path}: the header declares {ndim} dimensions but the file ends after {len(data)} bytes")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = data[4 + 4 * ndim :]
    if len(body) != int(np.prod(dims)):
        raise DatasetFormatError(f"{path}: header says {dims} but holds {len(body)} bytes")
    return torch.from_numpy(np.frombuffer(body, dtype=np.uint8).reshape(dims).copy())


# ---------------------------------------------------------------- CIFAR
