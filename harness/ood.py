"""Out-of-distribution inputs: images of none of the model's classes, and how well its scores
tell them from the test images (the in-distribution positives).

Sets (uint8 images shaped like the data's, ``OOD_IMAGES`` each, seeded; every image its own):

* ``uniform``: every pixel uniform in 0..255; ``gaussian``: N(128, 64) per pixel, clipped;
* ``blank``: near-black frames, each different: a dark level (0-24), a faint gradient in a random
  direction (up to 16 levels across the frame) and sensor-like noise (sd 0.5-4 levels), as a
  lens cap or an unlit scene gives; ``constant``: flat fields of one random level per image (per
  channel) with faint sensor noise (sd 0.5-2 levels);
* ``shuffled``: test images cut into a 4 x 4 grid of tiles put back in a random order: their
  pixel statistics stay, their objects do not;
* ``digits``: scikit-learn's 8x8 handwritten digits, upscaled (grey data only): a real other
  domain that ships with a dependency;
* ``cifar10`` / ``cifar100``: the sibling CIFAR test set, when it is under the data root;
* ``own``: ``--ood PATH``, a set of one's own (an image folder or a ``.npz``, any classes).

Every built-in set is checked against the test split before it is used (``screen``): a set with
near-duplicates of test images, or whose images lie as close to the test images as those lie to
each other, is not out of distribution for this data (digits on a dataset of handwritten digits)
and is left out, with a line saying why.

Scores of in-distribution-ness (higher: more like the training data): maximum softmax
probability (``msp``), maximum logit (``maxlogit``) and the negative energy
``logsumexp(logits)`` (``energy``; Liu et al. 2020). Metrics per set: AUROC (test images
positive) and FPR at 95% TPR (the share of OOD images scored above the score that keeps 95%
of test images), and the share of OOD images predicted with >= 99% confidence ("confident on
garbage"). Checked against scikit-learn's ``roc_auc_score`` / ``roc_curve`` in the tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

OOD_IMAGES = 1_000
SEED = 11
SYNTHETIC = ("uniform", "gaussian", "blank", "constant", "shuffled")
SCORES = ("msp", "maxlogit", "energy")  # from the logits; harness/ood_features.py adds the feature ones
SCORE_NAMES = {"msp": "MSP", "maxlogit": "max logit", "energy": "energy", "mahalanobis": "Mahalanobis", "knn": "KNN"}
NEAR = ("digits", "own")  # and the sibling CIFAR: another domain of real images (OpenOOD's near-OOD); the rest far
CONFIDENT = 0.99
GRID = 4


def _shuffled(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n, c, h, w = x.shape
    th, tw = h // GRID, w // GRID
    out = x.clone()
    for i in range(n):
        order = torch.randperm(GRID * GRID, generator=g)
        tiles = [x[i, :, r * th:(r + 1) * th, q * tw:(q + 1) * tw] for r in range(GRID) for q in range(GRID)]
        for k, src in enumerate(order.tolist()):
            r, q = divmod(k, GRID)
            out[i, :, r * th:(r + 1) * th, q * tw:(q + 1) * tw] = tiles[src]
    return out


def _digits(shape: tuple[int, int, int], n: int) -> torch.Tensor | None:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        return None
    d = torch.as_tensor(load_digits().images[:n], dtype=torch.float32)[:, None] / 16.0
    up = torch.nn.functional.interpolate(d, size=shape[1:], mode="bilinear", align_corners=False)
    return (up.clamp(0, 1) * 255).round().to(torch.uint8)


def _u(g: torch.Generator, n: int, lo: float, hi: float, *shape: int) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand((n, *shape), generator=g)


def _near_blank(g: torch.Generator, n: int, c: int, h: int, w: int) -> torch.Tensor:
    """Dark frames: a level in 0..24 (per channel within 3 of each other), a linear gradient of
    up to 16 levels across the frame in a random direction, sensor noise of sd 0.5-4 levels."""
    level = _u(g, n, 0, 24, 1, 1, 1) + _u(g, n, -3, 3, c, 1, 1)
    angle = _u(g, n, 0, 2 * np.pi, 1, 1, 1)
    yy, xx = torch.meshgrid(torch.linspace(-0.5, 0.5, h), torch.linspace(-0.5, 0.5, w), indexing="ij")
    ramp = _u(g, n, 0, 16, 1, 1, 1) * (torch.cos(angle) * xx + torch.sin(angle) * yy)
    noise = _u(g, n, 0.5, 4, 1, 1, 1) * torch.randn((n, c, h, w), generator=g)
    return (level + ramp + noise).round().clamp(0, 255).to(torch.uint8)


def synthetic(name: str, data, n: int = OOD_IMAGES) -> torch.Tensor:
    """A synthetic OOD set for ``data`` (a ``harness.data.Dataset``)."""
    c, h, w = data.image_shape
    g = torch.Generator().manual_seed(SEED + SYNTHETIC.index(name))
    if name == "uniform":
        return torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)
    if name == "gaussian":
        return (128 + 64 * torch.randn((n, c, h, w), generator=g)).round().clamp(0, 255).to(torch.uint8)
    if name == "blank":
        return _near_blank(g, n, c, h, w)
    if name == "constant":
        level = torch.randint(0, 256, (n, c, 1, 1), generator=g).float()
        noise = _u(g, n, 0.5, 2, 1, 1, 1) * torch.randn((n, c, h, w), generator=g)
        return (level + noise).round().clamp(0, 255).to(torch.uint8)
    if name == "shuffled":
        idx = torch.randperm(len(data.test_x), generator=g)[:n]
        return _shuffled(data.test_x[idx], g)
    raise ValueError(f"unknown OOD set {name!r}")


def sets(data, data_root=None, own: str | Path | None = None, n: int = OOD_IMAGES,
         cache_dir: str | Path | None = None) -> dict[str, torch.Tensor]:
    """Every OOD set that applies to ``data``: the synthetic ones, digits for grey images, the
    sibling CIFAR test set when present (each kept only where ``screen`` finds it out of
    distribution for this data), and one's own (``own``)."""
    out = {k: v for k, v in _builtin(data, data_root, n).items() if k not in left_out(data, data_root, n, cache_dir)}
    if own is not None:
        out["own"] = load_own(own, data.image_shape, n)
    return out


# ============================================================================ out of distribution?

NEAR_DUPLICATE_SHARE_MAX = 0.01  # a set with more of its images near-duplicates of test images is not OOD
MIN_OWN_IMAGES = 50  # an --ood set of one's own: fewer images give an AUROC too coarse to gate
INLIER_SHARE_MAX = 0.10  # ... nor one with more of its images inliers (see ``screen``)
MIXING_SHARE_MAX = 0.20  # ... whose images also mix with the test images (see ``screen``)
REFERENCE_IMAGES = 1000  # test images whose nearest other test image sets the inlier threshold


def _reference(test_x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The test split's image vectors and the median similarity of a test image to its most
    similar other test image (over ``REFERENCE_IMAGES`` of them)."""
    from . import leakage

    te = leakage._vectors(test_x)
    g = torch.Generator().manual_seed(SEED)
    ref = torch.randperm(len(te), generator=g)[:REFERENCE_IMAGES]
    with torch.inference_mode():
        own = te[ref] @ te.T
        own[torch.arange(len(ref)), ref] = -2.0  # not itself
        return te, float(own.max(1).values.median())


def screen(x: torch.Tensor, test_x: torch.Tensor, reference=None) -> dict:
    """Whether a set is out of distribution for a test split, by two checks on the leakage
    search's image vectors (``leakage._vectors``: mean-centred, unit length; larger images
    area-averaged to 16 x 16): its share of near-duplicates of test images (cosine >=
    ``leakage.THRESHOLD``), and its *inlier share*: the share of its images whose most similar
    test image is at least as similar as the median test image's most similar other test
    image. An in-distribution sample scores about 0.5 (Fashion-MNIST training images against
    its test split: 0.52; sklearn's digits against other writers' digits: 0.31); Fashion-MNIST's
    built-in sets 0 to 0.004. A test split with no tight neighbourhoods (a small or diffuse one)
    makes everything look like an inlier, so a set is the same kind of image only if its images
    also *mix* with the test images: the share of its images whose nearest neighbour, among as
    many of its own images and test images, is a test image (a k-NN two-sample statistic: about
    0.5 for one distribution, 0.53 for Fashion-MNIST's training images, 0.27 for the digits of
    other writers; 0 to 0.14 for Fashion-MNIST's built-in sets, noise mixing by chance).
    {"near_duplicates", "inlier_share", "mixing_share", "ood": bool, "why"}."""
    from . import leakage

    te, typical = reference if reference is not None else _reference(test_x)
    with torch.inference_mode():
        nearest = torch.cat([(leakage._vectors(x[i:i + leakage.CHUNK]) @ te.T).max(1).values
                             for i in range(0, len(x), leakage.CHUNK)])
    dup = float((nearest >= leakage.THRESHOLD).float().mean())
    inlier = float((nearest >= typical).float().mean())
    mixing = mixing_share(x, test_x) if inlier > INLIER_SHARE_MAX else None
    why = None
    if dup > NEAR_DUPLICATE_SHARE_MAX:
        why = f"{dup:.1%} of its images are near-duplicates of test images"
    elif mixing is not None and mixing > MIXING_SHARE_MAX:
        why = (f"{inlier:.0%} of its images lie as close to a test image as test images lie to each other, and "
               f"{mixing:.0%} have a test image for nearest neighbour (an in-distribution sample: about 50% each; the "
               f"limits {INLIER_SHARE_MAX:.0%} and {MIXING_SHARE_MAX:.0%}): the same kind of image as the test split")
    return {"near_duplicates": dup, "inlier_share": inlier, "mixing_share": mixing, "typical_similarity": typical,
            "ood": why is None, "why": why}


def mixing_share(x: torch.Tensor, test_x: torch.Tensor, m: int = REFERENCE_IMAGES) -> float:
    """The share of ``m`` of the set's images whose nearest neighbour among ``m`` of its images and
    ``m`` test images (itself excluded) is a test image (seeded samples)."""
    from . import leakage

    g = torch.Generator().manual_seed(SEED)
    m = min(m, len(x), len(test_x))
    a = leakage._vectors(x[torch.randperm(len(x), generator=g)[:m]])
    b = leakage._vectors(test_x[torch.randperm(len(test_x), generator=g)[:m]])
    with torch.inference_mode():
        sims = a @ torch.cat([a, b]).T
        sims[torch.arange(m), torch.arange(m)] = -2.0
        return float((sims.argmax(1) >= m).float().mean())


_SCREENED: dict[tuple, dict[str, str]] = {}


def left_out(data, data_root=None, n: int = OOD_IMAGES, cache_dir: str | Path | None = None) -> dict[str, str]:
    """{built-in set: why it is left out} for ``data``: screened once per data and set size, and
    kept in ``cache_dir`` (the evidence cache: a few seconds on Fashion-MNIST, not on every run)."""
    import json

    from .evidence import code_hash
    from .io import atomic_write_text

    key = (data.fingerprint, str(data_root), n)
    if key in _SCREENED:
        return _SCREENED[key]
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"ood-screen_{data.fingerprint}_{n}_{code_hash('ood_screen')}.json"
        try:
            found = json.loads(path.read_text())
            if isinstance(found, dict) and all(isinstance(v, str) for v in found.values()):
                _SCREENED[key] = found
                return found
        except (OSError, ValueError):
            pass
    ref = _reference(data.test_x)
    _SCREENED[key] = {name: f"not out of distribution for {data.name}: {r['why']}"
                      for name, x in _builtin(data, data_root, n).items()
                      for r in [screen(x, data.test_x, ref)] if not r["ood"]}
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(_SCREENED[key]))
        except OSError:
            pass  # a read-only cache: screened again next run
    return _SCREENED[key]


def builtin_names(data, data_root=None) -> list[str]:
    """The built-in sets that apply to ``data`` before screening (without making them)."""
    names = list(SYNTHETIC)
    if data.image_shape[0] == 1:
        try:
            import sklearn  # noqa: F401 - the digits ship with scikit-learn
            names.append("digits")
        except ImportError:
            pass
    sibling = _sibling(data)
    if sibling:
        from . import data as data_mod

        try:
            data_mod.class_names(sibling, data_root)
            names.append(sibling)
        except (data_mod.DatasetNotFoundError, data_mod.DatasetFormatError):
            pass
    return names


def group(name: str) -> str:
    """``near`` for a real other domain (digits, the sibling CIFAR, one's own set), ``far`` for
    the synthetic sets (noise, blank and flat frames, shuffled tiles), as OpenOOD v1.5 splits them."""
    return "far" if name in SYNTHETIC else "near"


def _sibling(data) -> str | None:
    return data.card.sibling


def _builtin(data, data_root=None, n: int = OOD_IMAGES) -> dict[str, torch.Tensor]:
    out = {name: synthetic(name, data, n) for name in SYNTHETIC}
    c, h, w = data.image_shape
    if c == 1:
        digits = _digits(data.image_shape, n)
        if digits is not None:
            out["digits"] = digits
    sibling = _sibling(data)
    if sibling:
        from . import data as data_mod

        try:
            other = data_mod.load(sibling, data_root, download=False)
            g = torch.Generator().manual_seed(SEED)
            out[sibling] = other.test_x[torch.randperm(len(other.test_x), generator=g)[:n]]
        except (data_mod.DatasetNotFoundError, data_mod.DatasetFormatError):
            pass
    return out


def load_own(path: str | Path, shape: tuple[int, int, int], n: int = OOD_IMAGES) -> torch.Tensor:
    """One's own OOD images: every image under a folder (any subfolders) or ``x``/``x_test`` of
    a ``.npz``, resized to the data's size and channel count; checked like ``--dataset``."""
    from . import custom_data
    from .data import DatasetFormatError

    path = Path(path).expanduser()
    c, h, w = shape
    if not path.exists():
        raise DatasetFormatError(f"--ood {path}: no such file or folder (give an image folder or a .npz with x)")
    if path.is_file() and path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            key = next((k for k in ("x", "x_test", "x_train") if k in z.files), None)
            if key is None:
                raise DatasetFormatError(f"--ood {path}: no x, x_test or x_train array (it holds {', '.join(z.files)})")
            x = torch.from_numpy(custom_data._nchw(z[key], key, path))
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in custom_data.IMAGE_SUFFIXES)
        if not files:
            raise DatasetFormatError(f"--ood {path}: no images under it ({', '.join(sorted(custom_data.IMAGE_SUFFIXES))})")
        decoded = {p: custom_data._decode(p, keep_float=True) for p in files[:n]}
        custom_data.scale_floats(decoded, f"--ood {path}")
        decoded = list(decoded.values())
        x = torch.stack([torch.nn.functional.interpolate(torch.from_numpy(a.transpose(2, 0, 1).copy())[None].float(),
                                                         size=(h, w), mode="bilinear", antialias=True,
                                                         align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
                         for a in decoded])
    else:
        raise DatasetFormatError(f"--ood {path}: not an image folder or a .npz")
    if x.shape[1] != c:
        x = x.float().mean(1, keepdim=True) if c == 1 else x.expand(-1, 3, -1, -1)
        x = x.round().to(torch.uint8)
    if tuple(x.shape[-2:]) != (h, w):
        x = torch.nn.functional.interpolate(x.float(), size=(h, w), mode="bilinear", antialias=True,
                                            align_corners=False).round().clamp(0, 255).to(torch.uint8)
    return x[:n]


# ============================================================================ scores and metrics


def scores(logits: np.ndarray) -> dict[str, np.ndarray]:
    """In-distribution scores of each image (higher: more like the training data)."""
    z = np.asarray(logits, dtype=np.float64)
    m = z.max(axis=1)
    lse = m + np.log(np.exp(z - m[:, None]).sum(axis=1))
    return {"msp": np.exp(m - lse), "maxlogit": m, "energy": lse}


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counted half (the Mann-Whitney statistic)."""
    from scipy.stats import rankdata

    r = rankdata(np.concatenate([pos, neg]))
    n1, n0 = len(pos), len(neg)
    return float((r[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def fpr_at_tpr(pos: np.ndarray, neg: np.ndarray, tpr: float = 0.95) -> float:
    """The share of negatives scored at or above the highest threshold that keeps ``tpr`` of
    the positives (the k-th highest positive score, k = ceil(tpr n)): the first point of
    scikit-learn's ROC curve that reaches ``tpr``."""
    k = int(np.ceil(tpr * len(pos)))
    t = np.sort(pos)[::-1][max(k, 1) - 1]
    return float((np.asarray(neg) >= t).mean())
