"""Shared fixtures of the unit tests.

* ``cache_dir``: a model-cache folder shared by the whole session (tiny models trained
  once and reused by several tests).
* ``model_cache``: a per-test model-cache folder; a test that asks for it also gets
  ``$CNN_STRESS_CACHE`` pointed at it (autouse fixture below). Tests that do not ask for it
  see the environment untouched (the smoke training test relies on the default cache).
* ``cifar_root``: a factory writing small CIFAR-10 / CIFAR-100 data in the official
  ``cifar-10-batches-py`` / ``cifar-100-python`` pickle format (CIFAR itself is not
  available offline), as an extracted folder or as the official ``.tar.gz`` archive.
* ``fashion_mnist``: the real Fashion-MNIST, loaded once (skipped when absent).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from datagen import (
    ARCHIVE_NAME,
    CIFAR10_CLASSES,
    CIFAR100_FINE,
    CifarFiles,
    index_images,
    tar_gz,
    write_cifar,
)

from harness import data as data_mod
from harness.cache import CACHE_ENV, default_cache_dir

# The model cache of the environment the tests run in, read before any test changes HOME
# (pytester does): tests that run the suite in a subprocess reuse models trained here.
REAL_CACHE = default_cache_dir()

DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")

def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need CUDA: skipped, with the reason, where there is none."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (the CPU path is tested everywhere else)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# ------------------------------------------------------------------ model cache


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """A model-cache folder for the whole session."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture
def model_cache(tmp_path) -> Path:
    """A per-test model-cache folder (also set as $CNN_STRESS_CACHE for the test)."""
    d = tmp_path / "model-cache"
    d.mkdir()
    return d


@pytest.fixture(autouse=True)
def _model_cache_env(request, monkeypatch):
    """Point $CNN_STRESS_CACHE at the test's own folder, only for tests that ask for
    ``model_cache``; every other test keeps the environment as it is."""
    if "model_cache" in request.fixturenames:
        monkeypatch.setenv(CACHE_ENV, str(request.getfixturevalue("model_cache")))
    yield


# ------------------------------------------------------------------ Fashion-MNIST


@pytest.fixture(scope="session")
def fashion_mnist():
    """The real Fashion-MNIST (official idx files), loaded once per session."""
    try:
        return data_mod.load("fashion-mnist", download=False)
    except data_mod.DatasetNotFoundError as exc:
        pytest.skip(
            f"Fashion-MNIST is not installed ({DEBIAN_FMNIST} is absent and no data root holds it): "
            f"`apt-get install dataset-fashion-mnist` to run this test. {str(exc).splitlines()[0]}"
        )


# ------------------------------------------------------------------ CIFAR


@pytest.fixture
def cifar_root(tmp_path):
    """Factory: ``cifar_root(name, n_train=50, n_test=20, archive=False, seed=0, ...)`` writes
    a small CIFAR dataset in the official format into a fresh data root and returns a
    ``CifarFiles``. ``archive=True`` leaves only the official ``.tar.gz`` in the root.
    ``train_y`` / ``test_y`` / ``train_x`` / ``test_x`` override the generated arrays."""
    counter = iter(range(1_000_000))

    def make(
        name: str = "cifar10",
        n_train: int = 50,
        n_test: int = 20,
        archive: bool = False,
        seed: int = 0,
        train_x=None,
        train_y=None,
        test_x=None,
        test_y=None,
        classes=None,
    ) -> CifarFiles:
        rng = np.random.default_rng(seed)
        k = 10 if name == "cifar10" else 100
        train_x = index_images(n_train, rng) if train_x is None else np.asarray(train_x, dtype=np.uint8)
        test_x = index_images(n_test, rng) if test_x is None else np.asarray(test_x, dtype=np.uint8)
        train_y = rng.integers(0, k, len(train_x)) if train_y is None else np.asarray(train_y)
        test_y = rng.integers(0, k, len(test_x)) if test_y is None else np.asarray(test_y)
        root = tmp_path / f"data-{next(counter)}"
        root.mkdir()
        if archive:
            staging = tmp_path / f"staging-{next(counter)}"
            folder = write_cifar(staging, name, train_x, train_y, test_x, test_y, classes)
            path = tar_gz(folder, root / ARCHIVE_NAME[name])
        else:
            path = write_cifar(root, name, train_x, train_y, test_x, test_y, classes)
        if classes is None:
            classes = CIFAR10_CLASSES if name == "cifar10" else CIFAR100_FINE
        return CifarFiles(name, root, path, train_x, np.asarray(train_y), test_x, np.asarray(test_y), tuple(classes))

    return make


@pytest.fixture
def isolated_data_env(tmp_path, monkeypatch) -> Path:
    """HOME, XDG_CACHE_HOME and CNN_STRESS_DATA under tmp: the default data roots hold nothing."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv(data_mod.DATA_ROOT_ENV, str(tmp_path / "env-data"))
    return tmp_path
