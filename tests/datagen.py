"""Writers of small datasets in the official file formats (CIFAR pickles, idx files),
used by ``conftest.py`` and the data tests."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
# Not the official CIFAR-100 names (not available offline), but 100 distinct names in an
# order that is not alphabetical, so a loader that sorted or invented names would be caught.
CIFAR100_FINE = tuple(f"fine-{(37 * i) % 100:02d}" for i in range(100))
CIFAR100_COARSE = tuple(f"coarse-{(7 * i) % 20:02d}" for i in range(20))


@dataclass
class CifarFiles:
    """What a ``cifar_root`` call wrote: the data root to pass to ``harness.data.load`` and
    the arrays in the official order (images as (N, 3, 32, 32) uint8)."""

    name: str
    root: Path
    path: Path  # the extracted folder, or the .tar.gz archive
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: tuple[str, ...]
    extra: dict = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.root / ("cifar-10-batches-py" if self.name == "cifar10" else "cifar-100-python")


def _dump(path: Path, obj) -> None:
    # The official files are Python 2 pickles (protocol 2) read with encoding="latin1".
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def index_images(n: int, rng: np.random.Generator, offset: int = 0) -> np.ndarray:
    """Random uint8 images (n, 3, 32, 32) whose first two red pixels encode their index
    (``decode_index`` reads it back), so ids can be checked against pixels."""
    x = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    i = np.arange(offset, offset + n)
    x[:, 0, 0, 0] = i % 256
    x[:, 0, 0, 1] = i // 256
    return x


def decode_index(x) -> np.ndarray:
    x = np.asarray(x)
    return x[:, 0, 0, 0].astype(np.int64) + 256 * x[:, 0, 0, 1].astype(np.int64)


def write_cifar(
    dest: Path,
    name: str,
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    classes: tuple[str, ...] | None = None,
) -> Path:
    """Write the official folder (``cifar-10-batches-py`` or ``cifar-100-python``) under
    ``dest``, images given as (N, 3, 32, 32) uint8 and stored as rows of 3072 bytes
    (1024 red, 1024 green, 1024 blue, each row-major): the official layout."""
    train_rows = np.ascontiguousarray(train_x.reshape(len(train_x), 3072))
    test_rows = np.ascontiguousarray(test_x.reshape(len(test_x), 3072))
    if name == "cifar10":
        folder = dest / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        classes = CIFAR10_CLASSES if classes is None else classes
        chunks = np.array_split(np.arange(len(train_y)), 5)
        for b, idx in enumerate(chunks, start=1):
            _dump(folder / f"data_batch_{b}", {
                "batch_label": f"training batch {b} of 5",
                "labels": [int(v) for v in train_y[idx]],
                "data": train_rows[idx],
                "filenames": [f"train_{i:05d}.png" for i in idx],
            })
        _dump(folder / "test_batch", {
            "batch_label": "testing batch 1 of 1",
            "labels": [int(v) for v in test_y],
            "data": test_rows,
            "filenames": [f"test_{i:05d}.png" for i in range(len(test_y))],
        })
        _dump(folder / "batches.meta", {
            "num_cases_per_batch": max(len(c) for c in chunks),
            "label_names": list(classes),
            "num_vis": 3072,
        })
        (folder / "readme.html").write_text("<html>synthetic CIFAR-10 for tests</html>")
    elif name == "cifar100":
        folder = dest / "cifar-100-python"
        folder.mkdir(parents=True)
        classes = CIFAR100_FINE if classes is None else classes
        for split, x, y in (("train", train_rows, train_y), ("test", test_rows, test_y)):
            fine = [int(v) for v in y]
            _dump(folder / split, {
                "filenames": [f"{split}_{i:05d}.png" for i in range(len(fine))],
                "batch_label": f"{'training' if split == 'train' else 'testing'} batch 1 of 1",
                "fine_labels": fine,
                "coarse_labels": [v % 20 for v in fine],
                "data": x,
            })
        _dump(folder / "meta", {"fine_label_names": list(classes), "coarse_label_names": list(CIFAR100_COARSE)})
    else:
        raise ValueError(name)
    return folder


def tar_gz(folder: Path, archive: Path) -> Path:
    """Pack ``folder`` as the official archive does (top-level entry: the folder)."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


ARCHIVE_NAME = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}


def gz_bytes(raw: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as f:
        f.write(raw)
    return buf.getvalue()


def idx_bytes(arr: np.ndarray) -> bytes:
    """An unsigned-byte idx file (big-endian header: 0, 0, 0x08, ndim, then the dims)."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    return struct.pack(f">HBB{arr.ndim}I", 0, 0x08, arr.ndim, *arr.shape) + arr.tobytes()
