"""CIFAR-10 and CIFAR-100 in their official ``cifar-*-python`` pickle format (the folder, or the
``.tar.gz`` archive beside it, extracted), read without running code from the pickles, and the
published CIFAR-10-C / CIFAR-100-C corruptions where their files are present."""

from __future__ import annotations

import os
import pickle
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch

from .data import (
    DATA_ROOT_ENV,
    Dataset,
    DatasetFormatError,
    DatasetNotFoundError,
    _holds,
    _missing_parents,
    _remove_if_empty,
    search_roots,
)

_CIFAR = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "archive": "cifar-10-python.tar.gz",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": ("batches.meta", "label_names"),
        "label_key": "labels",
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "archive": "cifar-100-python.tar.gz",
        "train": ["train"],
        "test": ["test"],
        "meta": ("meta", "fine_label_names"),
        "label_key": "fine_labels",
    },
}


def read(name: str, folder: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train_x, train_y, test_x, test_y) of a CIFAR folder."""
    spec = _CIFAR[name]
    train_x, train_y = _read_cifar_batches(folder, spec["train"], spec["label_key"])
    test_x, test_y = _read_cifar_batches(folder, spec["test"], spec["label_key"])
    return train_x, train_y, test_x, test_y


def cifar_c(ds: Dataset, data_root: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """The published CIFAR-10-C / CIFAR-100-C corruptions (Hendrycks & Dietterich 2019) when
    their ``.npy`` files are under a data root (``CIFAR-10-C/<corruption>.npy``, 50,000 x 32 x
    32 x 3 uint8: severities 1-5 of the 10,000 test images in order, and ``labels.npy``):
    {corruption: memory-mapped array}. Empty when absent. Labels that do not match the test
    split are an error, not a silent mismatch."""
    folder_name = ds.card.cifar_c
    if folder_name is None:
        return {}
    for root in search_roots(data_root):
        folder = root / folder_name
        labels_path = folder / "labels.npy"
        if not labels_path.is_file():
            continue
        n = ds.full_test_size  # the published rows follow the whole test split
        labels = np.load(labels_path, mmap_mode="r", allow_pickle=False)
        if labels.shape != (5 * n,) or not np.array_equal(np.asarray(labels[: len(ds.test_y)]), ds.test_y.numpy()):
            raise DatasetFormatError(f"{labels_path}: expected the {n} test labels repeated for 5 severities "
                                     f"({5 * n} values) matching {ds.name}'s test split; got shape {labels.shape}")
        out = {}
        for path in sorted(folder.glob("*.npy")):
            if path.name == "labels.npy":
                continue
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            if arr.shape != (5 * n, 32, 32, 3) or arr.dtype != np.uint8:
                raise DatasetFormatError(f"{path}: expected uint8 of shape ({5 * n}, 32, 32, 3), got {arr.dtype} "
                                         f"{arr.shape}")
            out[path.stem] = arr
        return out
    return {}


def find(name: str, data_root, download: bool) -> Path:
    spec = _CIFAR[name]
    searched = []
    needed = spec["train"] + spec["test"] + [spec["meta"][0]]
    for root in search_roots(data_root):
        folder = root / spec["folder"]
        searched.append(folder)
        if all((folder / f).is_file() for f in needed):
            return folder
        archive = root / spec["archive"]
        searched.append(archive)
        if archive.is_file():
            _extract(archive, root)
            if all((folder / f).is_file() for f in needed):
                return folder
            raise DatasetFormatError(f"{archive} does not hold {spec['folder']}/ with {', '.join(needed)}")
    if download:
        target = search_roots(data_root)[0]
        created = _missing_parents(target)
        try:
            from torchvision.datasets import CIFAR10, CIFAR100
            from torchvision.datasets.utils import download_and_extract_archive

            cls = CIFAR10 if name == "cifar10" else CIFAR100
            download_and_extract_archive(cls.url, str(target), filename=cls.filename, md5=cls.tgz_md5)
            return target / spec["folder"]
        except Exception as exc:
            _remove_if_empty(created)
            reason = f"download failed: {exc}"
    else:
        reason = "downloading was disabled"
    if data_root:
        raise DatasetNotFoundError(
            f"--data-root {data_root} does not hold {name} ({_holds(Path(data_root).expanduser())}); expected "
            f"{spec['folder']}/ with {', '.join(needed)}, or {spec['archive']}, in it. ({reason}; a data root given "
            "is the only place searched)")
    raise DatasetNotFoundError(
        f"{name} not found; searched:\n  "
        + "\n  ".join(str(s) for s in searched)
        + f"\n({reason})\nTo get it: download {spec['archive']} from the CIFAR page "
        "(https://www.cs.toronto.edu/~kriz/cifar.html) on a machine with internet and put it (or the "
        f"extracted {spec['folder']}/ folder) in one of those places, or pass --data-root / set "
        f"{DATA_ROOT_ENV}."
    )


def _extract(archive: Path, root: Path) -> None:
    """Extract into a temporary folder first, then move into place (no half-extracted data)."""
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DatasetFormatError(f"cannot extract {archive}: {exc}") from exc
        for child in Path(tmp).iterdir():
            dest = root / child.name
            if not dest.exists():
                shutil.move(str(child), dest)


class _CifarUnpickler(pickle.Unpickler):
    """A pickle reader that builds only what the CIFAR format uses: dicts, lists, strings,
    bytes, numbers and NumPy arrays. Any other global (a function, a class with a
    ``__reduce__``) is refused before it is called, so no code in a crafted file runs."""

    ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refused to load the global {module}.{name}: a CIFAR batch holds only dicts, lists, strings, numbers "
            "and NumPy arrays, and anything else could run code")


def _unpickle(path: Path) -> dict:
    """The official CIFAR files are Python pickles of plain dicts, NumPy arrays and lists; read
    with ``_CifarUnpickler`` (torchvision's own reader would run any code a file holds)."""
    try:
        with open(path, "rb") as f:
            entry = _CifarUnpickler(f, encoding="latin1").load()
    except Exception as exc:
        raise DatasetFormatError(f"cannot read CIFAR pickle {path}: {exc}") from exc
    if not isinstance(entry, dict):
        raise DatasetFormatError(f"CIFAR pickle {path} holds a {type(entry).__name__}, not the dict of the official "
                                 "format (keys 'data' and the labels)")
    return entry


def _read_cifar_batches(folder: Path, files: list[str], label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for fname in files:
        entry = _unpickle(folder / fname)
        if "data" not in entry or label_key not in entry:
            raise DatasetFormatError(f"{folder / fname} lacks 'data' or '{label_key}' (keys: {sorted(entry)})")
        data = np.asarray(entry["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DatasetFormatError(f"{folder / fname}: data has shape {data.shape}, expected (N, 3072)")
        labels = np.asarray(entry[label_key], dtype=np.int64)
        if len(labels) != len(data):
            raise DatasetFormatError(f"{folder / fname}: {len(data)} images but {len(labels)} labels")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(labels)
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


def classes(name: str, folder: Path) -> tuple[str, ...]:
    meta_file, key = _CIFAR[name]["meta"]
    meta = _unpickle(folder / meta_file)
    if key not in meta:
        raise DatasetFormatError(f"{folder / meta_file} lacks '{key}'")
    return tuple(meta[key])
