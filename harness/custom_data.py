"""Datasets of one's own, from disk, into the same uint8 tensors as the built-in datasets.

Two layouts, named by a path (``--dataset PATH``) or by a name registered in a TOML file
(``datasets.toml`` beside the run, or ``--datasets FILE``)::

    my-defects/                       my-data.npz
      train/<class>/*.png|jpg|...       x_train, y_train, x_test, y_test
      test/<class>/...                  optional: x_val, y_val, classes
      val/<class>/...   (optional)      images uint8, NHWC or NCHW, grey or RGB

    # datasets.toml
    [defects]
    path = "~/data/my-defects"
    image_size = 64          # optional: resize every image to 64 x 64
    flip_invariant = false   # optional: does a horizontal flip keep every class?

* Class names are the folder names (sorted), or the npz's ``classes``, or ``class 0``...
* Every image keeps its size when all share one; otherwise ``image_size`` resizes them all
  (bilinear, antialiased) and is required, with an error saying so.
* Without a validation split, a seeded 10% of the training images is held out (seed 42, as the
  built-in datasets are split).
* Sample ids are positions in the split, and ``test_names`` points each test id back to its
  file (``test/Shirt/0042.png``) or array row (``x_test[42]``).
* The fingerprint covers every decoded pixel, every label and every file name: changing one
  pixel changes the model-cache key.
* Decoding uses Pillow (torchvision's decoders are deprecated since 0.29) in a thread pool:
  10,000 28x28 PNGs in about 6 s on 2 cores. Normalisation for the models is the per-channel
  mean and standard deviation of the training images.

Everything is checked before any training; each error names the file and how to fix it.
"""

from __future__ import annotations

import os
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .data import DATASETS, SPLIT_SEED, Dataset, DatasetFormatError, DatasetNotFoundError, fingerprint, seed_split
from .io import UnsafeNameError, plain_name

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
VAL_FRACTION = 0.1
REGISTRY_FILE = "datasets.toml"


class DatasetRegistryError(ValueError):
    pass


# ============================================================================ naming a dataset


def registered(registry: str | os.PathLike | None = None) -> dict[str, dict]:
    """The datasets a TOML registry names: {name: {"path", "image_size", "flip_invariant"}}."""
    path = Path(registry) if registry else Path(REGISTRY_FILE)
    if not path.is_file():
        if registry:
            raise DatasetRegistryError(f"dataset registry {path} does not exist")
        return {}
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise DatasetRegistryError(f"dataset registry {path} cannot be read: {exc}") from exc
    out = {}
    for name, spec in doc.items():
        try:  # it names cache files and reports
            plain_name(name, f"dataset registry {path}: [{name}]")
        except UnsafeNameError as exc:
            raise DatasetRegistryError(str(exc)) from None
        if name in DATASETS:  # the built-in one would be loaded under this name, and this entry never read
            raise DatasetRegistryError(
                f"{path}: [{name}] is the name of a built-in dataset, which --dataset {name} always loads: this "
                f"entry would be ignored. Register your data under another name ([my-{name}])")
        if not isinstance(spec, dict) or not isinstance(spec.get("path"), str):
            raise DatasetRegistryError(f"{path}: [{name}] needs path = \"...\" (an ImageFolder tree or a .npz)")
        unknown = set(spec) - {"path", "image_size", "flip_invariant"}
        if unknown:
            raise DatasetRegistryError(f"{path}: [{name}] has unknown key(s) {', '.join(sorted(unknown))}; "
                                       "valid: path, image_size, flip_invariant")
        size = spec.get("image_size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 8):
            raise DatasetRegistryError(f"{path}: [{name}] image_size = {size!r}: a whole number of pixels >= 8")
        p = Path(os.path.expanduser(spec["path"]))
        if not p.is_absolute():
            p = (path.parent / p).resolve()
        out[name] = {"path": p, "image_size": size, "flip_invariant": bool(spec.get("flip_invariant", False))}
    return out


def is_path(dataset: str) -> bool:
    return os.sep in dataset or dataset.endswith(".npz") or Path(dataset).expanduser().exists()


def name_of(path: Path) -> str:
    """A dataset's name from its path: the folder's or file's name."""
    return (path.stem if path.suffix == ".npz" else path.name) or "data"


def load(dataset: str, image_size: int | None = None, registry: str | os.PathLike | None = None,
         flip_invariant: bool | None = None) -> Dataset:
    """A dataset of one's own, by path or registered name."""
    known = registered(registry)
    if dataset in known:
        spec = known[dataset]
        path, name = spec["path"], dataset
        image_size = image_size or spec["image_size"]
        flip = spec["flip_invariant"] if flip_invariant is None else flip_invariant
        if not path.exists():
            raise DatasetNotFoundError(f"{registry or REGISTRY_FILE} [{dataset}]: path = {str(path)!r} does not exist; "
                                       "point it at an ImageFolder tree or a .npz (relative paths are read from the "
                                       "registry's folder)")
    else:
        path, name = Path(dataset).expanduser(), name_of(Path(dataset).expanduser())
        flip = bool(flip_invariant)
        if not path.exists():
            hint = f"; registered names: {', '.join(known)}" if known else ""
            raise DatasetNotFoundError(f"--dataset {dataset!r}: not a built-in dataset ({', '.join(DATASETS)}), no such "
                                       f"file or folder (an ImageFolder tree or a .npz), and no such name in "
                                       f"{registry or REGISTRY_FILE}{hint}")
    if name in DATASETS:  # a path is always one's own data: it must not pass for the built-in one
        raise DatasetFormatError(
            f"--dataset {dataset}: your data is named {name!r}, the name of a built-in dataset, whose recipe, gates and "
            f"report would be applied to it. Rename the {'file' if path.is_file() else 'folder'} (e.g. my-{name}), or "
            f"register it under another name in {REGISTRY_FILE} ([my-{name}] path = \"{path}\")")
    if path.is_file() and path.suffix == ".npz":
        return _from_npz(path, name, image_size, flip)
    if path.is_dir():
        return _from_folders(path, name, image_size, flip)
    raise DatasetFormatError(f"{path}: a dataset is an ImageFolder tree (train/<class>/..., test/<class>/...) or a "
                             ".npz with x_train, y_train, x_test, y_test")


# ============================================================================ arrays


def _nchw(x: np.ndarray, what: str, path: Path) -> np.ndarray:
    """uint8 NCHW from NHWC, NCHW or NHW (grey)."""
    x = np.asarray(x)
    if x.dtype != np.uint8:
        hint = _float_hint(x) if np.issubdtype(x.dtype, np.number) and x.size else "convert them to uint8 (0-255)"
        raise DatasetFormatError(f"{path}: {what} is {x.dtype}; images must be uint8 (0-255): {hint}")
    if x.ndim == 3:
        return x[:, None]
    if x.ndim != 4:
        raise DatasetFormatError(f"{path}: {what} has shape {x.shape}; expected (N, H, W), (N, H, W, C) or (N, C, H, W)")
    if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    if x.shape[1] in (1, 3):
        return x
    raise DatasetFormatError(f"{path}: {what} has shape {x.shape}: no axis of 1 (grey) or 3 (RGB) channels")


def _resize(x: torch.Tensor, size: int | None) -> torch.Tensor:
    if size is None or tuple(x.shape[-2:]) == (size, size):
        return x
    y = torch.nn.functional.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True,
                                        align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8)


def _from_npz(path: Path, name: str, image_size: int | None, flip: bool) -> Dataset:
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise DatasetFormatError(f"{path}: cannot read it ({exc})") from exc
    if head[:2] != b"PK":
        raise DatasetFormatError(f"{path}: not a .npz file (a .npz is a zip archive; this file starts with {head!r}): "
                                 "write it with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)")
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any reading problem is the file's
        raise DatasetFormatError(f"{path}: cannot read it as a .npz ({type(exc).__name__}: {exc})") from exc
    with z:
        missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in z.files]
        if missing:
            raise DatasetFormatError(f"{path}: missing {', '.join(missing)} (it holds {', '.join(z.files) or 'nothing'})")
        arrays = {}
        for k in z.files:
            try:
                arrays[k] = z[k]
            except ValueError as exc:  # an object array: reading it would need pickle (it could run code)
                fix = ("store the names as strings: classes=np.array(names, dtype=str)" if k == "classes" else
                       "store it as a numeric or string array")
                raise DatasetFormatError(f"{path}: {k} is stored as an object array, which is not read (loading it "
                                         f"would need pickle): {fix}") from exc
    splits = [s for s in ("train", "val", "test") if f"x_{s}" in arrays]
    if ("x_val" in arrays) != ("y_val" in arrays):
        raise DatasetFormatError(f"{path}: x_val and y_val go together")
    xs, ys = {}, {}
    for s in splits:
        x = _nchw(arrays[f"x_{s}"], f"x_{s}", path)
        y = np.asarray(arrays[f"y_{s}"])
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DatasetFormatError(f"{path}: y_{s} must be whole-number class labels of shape (N,), got {y.dtype} {y.shape}")
        if len(y) != len(x):
            raise DatasetFormatError(f"{path}: x_{s} holds {len(x)} images but y_{s} {len(y)} labels")
        if len(x) == 0:
            raise DatasetFormatError(f"{path}: x_{s} is empty")
        xs[s], ys[s] = x, y.astype(np.int64)
    shapes = {s: xs[s].shape[1:] for s in xs}
    channels = {s: sh[0] for s, sh in shapes.items()}
    if len(set(channels.values())) > 1:
        raise DatasetFormatError(f"{path}: the splits have different channel counts ({channels}); give every image "
                                 "the same (all grey or all RGB)")
    if len({sh[1:] for sh in shapes.values()}) > 1 and image_size is None:
        raise DatasetFormatError(f"{path}: the splits' images differ in size ({ {s: sh[1:] for s, sh in shapes.items()} }):"
                                 " pass --image-size N to resize them all to N x N")
    if "classes" in arrays:
        classes = tuple(str(c) for c in np.asarray(arrays["classes"]).reshape(-1).tolist())
    else:  # the class count from the labels: they must be 0..K-1, each in training and in test
        k = int(max(int(y.max()) for y in ys.values())) + 1
        for s in ("train", "test"):
            absent = sorted(set(range(k)) - set(np.unique(ys[s]).tolist()))
            if absent:
                shown = ", ".join(map(str, absent[:10])) + (f" and {len(absent) - 10} more" if len(absent) > 10 else "")
                raise DatasetFormatError(
                    f"{path}: without a classes array the labels must be 0..{k - 1} (the largest is {k - 1}), each "
                    f"present in every split; y_{s} has no label {shown}. Give the class names "
                    f"(classes=np.array([...], dtype=str), one per label) or relabel to 0..K-1 (1-based labels: y - 1)")
        classes = tuple(f"class {i}" for i in range(k))
    names = {s: [f"x_{s}[{i}]" for i in range(len(xs[s]))] for s in xs}
    return _assemble(name, path, classes, xs, ys, names, image_size, flip)


# ============================================================================ image folders


def _decode(path: Path, keep_float: bool = False) -> np.ndarray:
    """HWC uint8 (C = 1 or 3) with Pillow; raises DatasetFormatError naming the file. A 32-bit
    float image ("F") is read by its range, never cast (a cast makes [0, 1] all black), and a
    16/32-bit integer one likewise (8-bit values in a 16-bit file are kept, not divided by
    65535): with ``keep_float`` they are returned as float64 / int64 for ``scale_floats`` to scale
    with their folder (a dark image of a [0, 255] folder would otherwise look like one in [0, 1])."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "F":
                arr = np.asarray(im, dtype=np.float64)
                arr = _checked_float(arr, path) if keep_float else _from_float(arr, path)
            elif im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16- and 32-bit integers: scaled by their folder's range
                arr = np.asarray(im, dtype=np.int64)
                arr = arr if keep_float else _from_wide(arr, path)
            else:
                if im.mode not in ("L", "RGB"):
                    im = im.convert("L" if im.mode in ("1", "LA", "P") and im.getbands()[0] in ("L", "1") else "RGB")
                arr = np.asarray(im)
    except DatasetFormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the reason, the file is the problem
        raise DatasetFormatError(f"{path}: not an image that can be decoded ({type(exc).__name__}: {exc}); "
                                 "remove it or convert it to PNG or JPEG") from exc
    if arr.ndim == 2:
        arr = arr[..., None]
    return np.ascontiguousarray(arr, dtype=arr.dtype if arr.dtype in (np.float64, np.int64) else np.uint8)


def _checked_float(a: np.ndarray, path: Path) -> np.ndarray:
    if not np.isfinite(a).all():
        raise DatasetFormatError(f"{path}: a float image with NaN or infinite values: fix or remove it")
    return a


def scale_floats(decoded: dict, where) -> None:
    """Float and 16/32-bit integer images (``_decode(keep_float=True)``) of one folder as 8-bit,
    in place, each kind by one scale decided by the whole folder's range (``_folder_scale``)."""
    for kind, of_kind in (("float", np.float64), ("integer", np.int64)):
        found = {p: a for p, a in decoded.items() if a.dtype == of_kind}
        if found:
            factor = _folder_scale(found, where, kind)
            for p, a in found.items():
                decoded[p] = (a * factor).round().astype(np.uint8)


def _folder_scale(found: dict, where, kind: str) -> float:
    """The factor that brings a folder's float or wide-integer images to 0-255. Floats: [0, 1]
    scaled by 255, [0, 255] kept; 16/32-bit integers: [0, 255] kept (8-bit values in a wider
    file), [0, 65535] scaled by 255 / 65535. One folder is one range: a few images past the
    range the rest keep (one pixel at 1.5 among floats in [0, 1]) are refused, naming them,
    rather than switching the whole folder to another reading; so is anything past 65535."""
    peaks = {p: float(a.max()) for p, a in found.items()}
    lo_p = min(found, key=lambda p: float(found[p].min()))
    lo = float(found[lo_p].min())
    hi_p = max(peaks, key=peaks.get)
    hi = peaks[hi_p]
    small, full = (1.0, 255.0) if kind == "float" else (255.0, 65535.0)
    if lo < 0 or hi > full:
        bad = lo_p if lo < 0 else hi_p
        fix = ("rescale them, e.g. to (x - x.min()) / (x.max() - x.min())" if kind == "float" else
               "save them as 8- or 16-bit images")
        raise DatasetFormatError(
            f"{where}: {kind} images with values from {lo:.6g} to {hi:.6g} ({bad} leaves 0-{full:g}): the harness reads "
            f"{'float images in [0, 1] or in [0, 255]' if kind == 'float' else '16-bit images in 0-255 or 0-65535'}; "
            f"{fix}")
    over = sorted(p for p, v in peaks.items() if v > small)
    if over and len(over) < len(peaks) / 2:  # most images in the small range: the others leave it
        shown = ", ".join(f"{p} (max {peaks[p]:.4g})" for p in over[:3]) + (f" and {len(over) - 3} more" if len(over) > 3
                                                                             else "")
        raise DatasetFormatError(
            f"{where}: {len(peaks) - len(over)} of {len(peaks)} {kind} images lie in 0-{small:g} but {len(over)} go past "
            f"it: {shown}. One folder is read at one scale, and theirs would change every image's; clip or rescale "
            "those images (or all of them) to one range")
    if kind == "float":
        return 255.0 if hi <= 1.0 else 1.0
    return 1.0 if hi <= 255 else 255.0 / 65535.0


def _from_wide(a: np.ndarray, path: Path) -> np.ndarray:
    """One 16/32-bit integer image as 8-bit, by its own range (``_folder_scale``'s rule)."""
    return (a * _folder_scale({path: a}, path, "integer")).round().astype(np.uint8)


def _from_float(a: np.ndarray, path: Path) -> np.ndarray:
    """A float image as 8-bit: values in [0, 1] are scaled by 255, values in [0, 255] kept; any
    other range (or NaN) is refused, naming it."""
    if not np.isfinite(a).all():
        raise DatasetFormatError(f"{path}: a float image with NaN or infinite values: fix or remove it")
    lo, hi = float(a.min()), float(a.max())
    if lo >= 0 and hi <= 1.0:
        return (a * 255).round().astype(np.uint8)
    if lo >= 0 and hi <= 255:
        return a.round().astype(np.uint8)
    raise DatasetFormatError(f"{path}: a float image with values from {lo:.4g} to {hi:.4g}: the harness reads images in "
                             "0-255 (or floats in [0, 1]); rescale it, e.g. to (x - x.min()) / (x.max() - x.min())")


def _float_hint(x: np.ndarray) -> str:
    """How to make float images uint8, from their range."""
    finite = x[np.isfinite(x)] if np.issubdtype(x.dtype, np.floating) else x
    hi = float(finite.max()) if finite.size else 0.0
    lo = float(finite.min()) if finite.size else 0.0
    if lo >= 0 and hi <= 1:
        return f"they lie in [{lo:.3g}, {hi:.3g}]: convert with (x * 255).round().astype(np.uint8)"
    if lo >= 0 and hi <= 255:
        return f"they lie in [{lo:.3g}, {hi:.3g}]: convert with x.round().astype(np.uint8) (no scaling)"
    return (f"they lie in [{lo:.4g}, {hi:.4g}], outside 0-255: rescale to 0-255 first, e.g. "
            "((x - x.min()) / (x.max() - x.min()) * 255).round().astype(np.uint8)")


def check_not_blank(source, xs: dict) -> None:
    """Most images of a split with one value throughout is a decoding or export problem (float
    images cast to integers, 16-bit read as 8-bit, all-black exports): refused before training."""
    for s, x in xs.items():
        flat = x.reshape(len(x), -1)
        blank = int((flat.max(1) == flat.min(1)).sum())
        if blank > 0.5 * len(x):
            raise DatasetFormatError(
                f"{source}: {blank} of {len(x)} {s} images hold one value throughout (blank): a model cannot learn "
                "from them. Check how they were exported (floats cast to integers make images in [0, 1] all black; "
                "a 16-bit image may hold 8-bit values)")


def _scan(root: Path, split: str, classes: tuple[str, ...] | None) -> tuple[tuple[str, ...], list[Path], list[int]]:
    folder = root / split
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DatasetFormatError(f"{folder}: no class folders; expected {split}/<class>/<images>")
    names = tuple(p.name for p in class_dirs)
    if classes is not None:
        extra = sorted(set(names) - set(classes))
        if extra:
            raise DatasetFormatError(f"{folder}: class(es) {', '.join(extra)} are not in train/ ({', '.join(classes)}): "
                                     "every class tested must be trained on")
    else:
        classes = names
        if len(classes) < 2:
            raise DatasetFormatError(f"{folder}: {len(classes)} class folder ({', '.join(classes)}); a classifier "
                                     "needs at least two classes")
    files, labels = [], []
    for d in class_dirs:
        found = sorted(p for p in d.rglob("*") if p.is_file() and not p.name.startswith("."))
        images = [p for p in found if p.suffix.lower() in IMAGE_SUFFIXES]
        if not images:
            what = f" (it holds {', '.join(p.name for p in found[:3])}{'...' if len(found) > 3 else ''})" if found else ""
            raise DatasetFormatError(f"{d}: class folder without images{what}; add images or remove the folder")
        others = [p for p in found if p.suffix.lower() not in IMAGE_SUFFIXES]
        if others:
            raise DatasetFormatError(f"{others[0]}: not an image file (suffix {others[0].suffix or 'none'}); image "
                                     f"folders hold only {', '.join(sorted(IMAGE_SUFFIXES))}")
        files += images
        labels += [classes.index(d.name)] * len(images)
    return classes, files, labels


def _from_folders(root: Path, name: str, image_size: int | None, flip: bool) -> Dataset:
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise DatasetFormatError(f"{root}: no {split}/ folder; an image dataset is {root}/train/<class>/<images> "
                                     f"and {root}/test/<class>/<images> (val/ optional)")
    classes, train_files, train_labels = _scan(root, "train", None)
    split_files = {"train": (train_files, train_labels)}
    for split in ("val", "test"):
        if (root / split).is_dir():
            _, f, lab = _scan(root, split, classes)
            split_files[split] = (f, lab)
    all_files = [p for f, _ in split_files.values() for p in f]
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
        decoded = dict(zip(all_files, pool.map(lambda p: _decode(p, keep_float=True), all_files)))
    scale_floats(decoded, root)
    channels = {}
    sizes = {}
    for p, arr in decoded.items():
        channels.setdefault(arr.shape[2], p)
        sizes.setdefault(arr.shape[:2], p)
    if len(channels) > 1:
        examples = "; ".join(f"{c} channel(s): {p.relative_to(root)}" for c, p in channels.items())
        raise DatasetFormatError(f"{root}: images with different channel counts ({examples}); make them all grey or all "
                                 "RGB")
    if len(sizes) > 1 and image_size is None:
        examples = "; ".join(f"{h}x{w}: {p.relative_to(root)}" for (h, w), p in list(sizes.items())[:3])
        raise DatasetFormatError(f"{root}: images of different sizes ({examples}); pass --image-size N (or image_size in "
                                 "the dataset registry) to resize them all to N x N")
    xs, ys, names = {}, {}, {}
    for split, (files, labels) in split_files.items():
        if len(sizes) > 1:
            stack = [_resize(torch.from_numpy(decoded[p].transpose(2, 0, 1).copy())[None], image_size)[0].numpy()
                     for p in files]
        else:
            stack = [decoded[p].transpose(2, 0, 1) for p in files]
        xs[split] = np.stack(stack).astype(np.uint8)
        ys[split] = np.asarray(labels, dtype=np.int64)
        names[split] = [p.relative_to(root).as_posix() for p in files]
    return _assemble(name, root, classes, xs, ys, names, image_size, flip)


# ============================================================================ into a Dataset


def _assemble(name: str, source: Path, classes: tuple[str, ...], xs: dict, ys: dict, names: dict,
              image_size: int | None, flip: bool) -> Dataset:
    k = len(classes)
    if k < 2:
        raise DatasetFormatError(f"{source}: {k} class; a classifier needs at least two")
    twice = sorted({c for c in classes if classes.count(c) > 1})
    if twice:
        raise DatasetFormatError(f"{source}: class name(s) {', '.join(map(repr, twice))} given more than once: each "
                                 "class needs a name of its own (per-class gates and reports are keyed by name)")
    for s, y in ys.items():
        if y.min() < 0 or y.max() >= k:
            raise DatasetFormatError(f"{source}: y_{s} holds labels from {int(y.min())} to {int(y.max())}, but there "
                                     f"are {k} classes (labels 0 to {k - 1})")
    untrained = sorted(set(range(k)) - set(np.unique(ys["train"]).tolist()))
    if untrained:
        raise DatasetFormatError(f"{source}: class(es) {', '.join(classes[i] for i in untrained[:10])} have no training "
                                 "images: remove them from the class names or add images")
    check_not_blank(source, xs)
    t = {s: _resize(torch.from_numpy(x), image_size) for s, x in xs.items()}
    train_x = torch.cat([t["train"], t["val"]]) if "val" in t else t["train"]
    train_y = torch.from_numpy(np.concatenate([ys["train"], ys["val"]]) if "val" in ys else ys["train"])
    n_train = len(ys["train"])
    if "val" in t:
        train_idx, val_idx = torch.arange(n_train), torch.arange(n_train, len(train_y))
    else:
        if n_train < 2:
            raise DatasetFormatError(f"{source}: {n_train} training image(s): too few to hold out a validation split")
        train_idx, val_idx = seed_split(n_train, max(1, round(n_train * VAL_FRACTION)), SPLIT_SEED)
    test_x, test_y = t["test"], torch.from_numpy(ys["test"])
    x = train_x.float() / 255
    mean = tuple(float(v) for v in x.mean((0, 2, 3)))
    std = tuple(max(float(v), 1e-3) for v in x.std((0, 2, 3)))
    train_names = names["train"] + names.get("val", [])
    name_blob = torch.frombuffer(bytearray("\n".join([*train_names, *names["test"], *classes]).encode()), dtype=torch.uint8)
    return Dataset(
        name=name, classes=tuple(classes), train_x=train_x, train_y=train_y.long(), test_x=test_x,
        test_y=test_y.long(), train_idx=train_idx, val_idx=val_idx, source=str(source),
        fingerprint=fingerprint(train_x, train_y, test_x, test_y, val_idx, name_blob), flip_invariant=flip,
        test_names=tuple(names["test"]), normalisation=(mean, std),
    )
