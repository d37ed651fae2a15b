"""Weak segments: where in the data a model fails, found by a search that reports only what
survives a correction for the many segments it tries.

* **Image properties** (``properties``), per image, from the uint8 pixels scaled to [0, 1]:
  brightness (mean grey level), contrast (RMS: the grey levels' standard deviation), sharpness
  (variance of the 4-neighbour Laplacian over the interior pixels), entropy (Shannon entropy of
  the 256-level grey histogram, bits), foreground (share of pixels more than ``FOREGROUND_DELTA``
  from the median of the image's border ring), extent (the foreground's bounding box over the
  image area; 0 without foreground); for colour images also the mean of each channel and
  colourfulness (Hasler and Suesstrunk 2003: sqrt(sd(rg)^2 + sd(yb)^2) + 0.3 sqrt(mean(rg)^2 +
  mean(yb)^2), rg = R - G, yb = (R + G) / 2 - B). Grey is the channel mean (ITU-R 601 luma for
  colour). A user's own per-image metadata (``read_metadata``) adds columns.
* **Segments** (``candidates``): every property cut into ``BINS`` quantile bins of the test
  split, every value of a metadata column, and every intersection of two of them, kept when it
  holds at least ``min_size`` test images (and leaves as many outside it).
* **The search** (``search``): a segment is weak when it holds more errors than chance would put
  there: the one-sided Fisher exact test (hypergeometric tail) of its errors against the rest of
  the test split, Holm-corrected over every segment searched at family-wise ``ALPHA``. Each
  segment carries its accuracy and its rate of errors made with >= 99% confidence with
  Clopper-Pearson intervals, and its ECE (a percentile-bootstrap interval for the ones reported).
* **Shift between splits** (``shift``): each property's distribution in the training split
  against the test split (or a new batch of images): the two-sample Kolmogorov-Smirnov distance,
  with a permutation p-value (``PERMUTATIONS`` relabellings) Holm-corrected over the properties
  at ``SHIFT_ALPHA``. Under exchangeability (both samples from one distribution) the chance of
  flagging any property is at most ``SHIFT_ALPHA``: that bound is theory, not measured spread.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import stats

GREY_PROPERTIES = ("brightness", "contrast", "sharpness", "entropy", "foreground", "extent")
COLOUR_PROPERTIES = ("red", "green", "blue", "colourfulness")
FOREGROUND_DELTA = 0.1  # a pixel this far from the border's median grey level is foreground
BINS = 5  # quantile bins per property (quintiles)
MIN_SEGMENT = 50  # test images a segment must hold (and leave outside it)
MIN_SEGMENT_SHARE = 0.02  # ... and this share of the test split
ALPHA = 0.05  # family-wise error of the search (Holm over every segment searched)
CONFIDENT = 0.99  # an error made with at least this confidence is a confident error
SHIFT_ALPHA = 0.01  # family-wise error of the shift test (Holm over the properties)
PERMUTATIONS = 999
SHIFT_IMAGES = 2000  # images of each split the shift test compares (a seeded sample)
TRAIN_IMAGES = 5000  # training images whose properties are computed
MAX_CATEGORIES = 20  # a metadata column with more distinct values is numeric (binned like a property)
REPORTED = 10  # weak segments the report shows (worst first)
ECE_BOOT = 200


class MetadataError(ValueError):
    """A metadata CSV that cannot key the test images."""


# --------------------------------------------------------------------------- properties

def _grey(x: torch.Tensor) -> torch.Tensor:
    x = x.float() / 255.0
    if x.shape[1] == 3:
        return 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    return x.mean(dim=1)


def _chunk_properties(x: torch.Tensor) -> dict[str, np.ndarray]:
    g = _grey(x)  # (N, H, W) in [0, 1]
    n, h, w = g.shape
    flat = g.reshape(n, -1)
    out = {"brightness": flat.mean(1), "contrast": flat.std(1, unbiased=False)}
    lap = g[:, 1:-1, :-2] + g[:, 1:-1, 2:] + g[:, :-2, 1:-1] + g[:, 2:, 1:-1] - 4 * g[:, 1:-1, 1:-1]
    out["sharpness"] = lap.reshape(n, -1).var(1, unbiased=False)
    levels = torch.round(flat * 255).long().clamp(0, 255)
    counts = torch.zeros(n, 256).scatter_add_(1, levels, torch.ones_like(flat))
    p = counts / flat.shape[1]
    out["entropy"] = -(torch.where(p > 0, p * torch.log2(p.clamp_min(1e-30)), torch.zeros_like(p))).sum(1)
    border = torch.cat([g[:, 0, :], g[:, -1, :], g[:, 1:-1, 0], g[:, 1:-1, -1]], dim=1)
    fg = (g - border.median(dim=1).values[:, None, None]).abs() > FOREGROUND_DELTA
    out["foreground"] = fg.reshape(n, -1).float().mean(1)
    rows, cols = fg.any(2), fg.any(1)
    ar = torch.arange(h)[None].expand(n, h)
    ac = torch.arange(w)[None].expand(n, w)
    big = max(h, w) + 1
    height = (torch.where(rows, ar, -1).max(1).values - torch.where(rows, ar, big).min(1).values + 1).clamp_min(0)
    width = (torch.where(cols, ac, -1).max(1).values - torch.where(cols, ac, big).min(1).values + 1).clamp_min(0)
    out["extent"] = (height * width).float() / (h * w)
    if x.shape[1] == 3:
        c = x.float() / 255.0
        r, gg, b = c[:, 0].reshape(n, -1), c[:, 1].reshape(n, -1), c[:, 2].reshape(n, -1)
        out["red"], out["green"], out["blue"] = r.mean(1), gg.mean(1), b.mean(1)
        rg, yb = r - gg, 0.5 * (r + gg) - b
        out["colourfulness"] = (torch.sqrt(rg.var(1, unbiased=False) + yb.var(1, unbiased=False))
                                + 0.3 * torch.sqrt(rg.mean(1) ** 2 + yb.mean(1) ** 2))
    return {k: v.double().numpy() for k, v in out.items()}


def property_names(channels: int) -> tuple[str, ...]:
    return GREY_PROPERTIES + (COLOUR_PROPERTIES if channels == 3 else ())


def properties(x: torch.Tensor, chunk: int = 2048, tick=None) -> dict[str, np.ndarray]:
    """The image properties of uint8 NCHW images (module docstring), one value per image."""
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise ValueError(f"properties need uint8 NCHW images, got {x.dtype} of shape {tuple(x.shape)}")
    parts = [_chunk_properties(x[i:i + chunk]) for i in range(0, len(x), chunk)]
    if tick:
        tick(1)
    return {k: np.concatenate([p[k] for p in parts]) for k in property_names(x.shape[1])}


def sample_positions(n: int, k: int, seed: int = 0) -> np.ndarray:
    """``k`` of ``n`` positions, seeded and sorted (all of them when ``k >= n``)."""
    if k >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


# --------------------------------------------------------------------------- inputs of one's own

NEW_IMAGES = 5000  # the most images of a new batch compared


def load_new_images(path: str | Path, shape: tuple[int, int, int], n: int = NEW_IMAGES) -> torch.Tensor:
    """A new batch of images (``--new-images``), read like an OOD set of one's own: a folder of
    images (any subfolders) or ``x`` of a ``.npz``, resized to the data's size and converted to
    its channel count (the channel mean for grey data), as the model would be given them."""
    from . import ood
    from .data import DatasetFormatError

    try:
        return ood.load_own(path, shape, n)
    except DatasetFormatError as exc:
        raise DatasetFormatError(str(exc).replace("--ood ", "--new-images ", 1)) from None


# --------------------------------------------------------------------------- metadata

def read_metadata(path: str | Path, test_names: tuple[str, ...] | None, n_test: int) -> dict[str, np.ndarray]:
    """Columns of a CSV of per-image metadata, aligned with the test split: keyed by ``id``
    (the test position) or ``path`` (the file, as the dataset names it: ``test/<class>/<file>``,
    or relative to the test folder). Every other column becomes a column of values (strings;
    numbers where every value parses). Every test image must have a row."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise MetadataError(f"--segment-metadata {str(path)!r}: no such file; give a CSV with an 'id' or a "
                            "'path' column and one column per property")
    try:
        with p.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise MetadataError(f"--segment-metadata {p}: not a CSV text file ({type(exc).__name__}: {exc}); give a "
                            "UTF-8 CSV with an 'id' or a 'path' column") from None
    if not rows:
        raise MetadataError(f"{p}: no rows; give a header line and one row per test image")
    header = list(rows[0])
    key = "id" if "id" in header else "path" if "path" in header else None
    if key is None:
        raise MetadataError(f"{p}: no 'id' or 'path' column (columns: {', '.join(header)}); key each row by the "
                            "test image's position (id) or its file (path)")
    columns = [c for c in header if c != key and c]
    if not columns:
        raise MetadataError(f"{p}: only the {key!r} column; add a column per property to segment by")
    at: list[int] = []  # each row's test position
    if key == "id":
        for r in rows:
            try:
                i = int(r["id"])  # "007" is 7
            except (TypeError, ValueError):
                raise MetadataError(f"{p}: id {r['id']!r} is not a whole number (a test position)") from None
            if not 0 <= i < n_test:
                raise MetadataError(f"{p}: id {i} is outside the test split (0-{n_test - 1})")
            at.append(i)
    else:
        if not test_names:
            raise MetadataError(f"{p}: keyed by 'path', but this dataset's test images have no file names; key "
                                "the rows by 'id' (the test position)")
        names = {}
        for i, nm in enumerate(test_names[:n_test]):
            names[nm] = i
            names[nm.split("/", 1)[1] if nm.startswith("test/") else nm] = i
        for r in rows:
            if r["path"] not in names:
                raise MetadataError(f"{p}: path {r['path']!r} is not a test image of this dataset (such as "
                                    f"{test_names[0]!r})")
            at.append(names[r["path"]])
    found = np.full(n_test, -1)
    for r_i, i in enumerate(at):
        if found[i] >= 0:  # two rows for one image: which one holds would be chance
            raise MetadataError(f"{p}: rows {found[i] + 2} and {r_i + 2} both describe test image "
                                f"{test_names[i] if test_names else f'id {i}'}: give each image one row")
        found[i] = r_i
    missing = np.flatnonzero(found < 0)
    if len(missing):
        raise MetadataError(f"{p}: {len(missing)} of {n_test} test images have no row (the first: "
                            f"{test_names[missing[0]] if test_names else f'id {missing[0]}'})")
    out = {}
    for c in columns:
        vals = [rows[found[i]][c] for i in range(n_test)]
        try:
            out[c] = np.array([float(v) for v in vals])
        except ValueError:
            out[c] = np.array(vals, dtype=object)
    return out


# --------------------------------------------------------------------------- segments

@dataclass(frozen=True)
class Part:
    """One side of a segment: a property's quantile bin, or one value of a metadata column."""
    column: str
    label: str  # "q1 (0.02-0.15)" or the value
    lo: float | None = None
    hi: float | None = None
    value: str | None = None

    def to_dict(self) -> dict:
        return {"column": self.column, "label": self.label, "lo": self.lo, "hi": self.hi, "value": self.value}


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def bins_of(values: np.ndarray, bins: int = BINS) -> tuple[np.ndarray, list[tuple[int, float, float]]]:
    """Each value's quantile bin (0..b-1) and the bins as (bin, low edge, high edge); fewer bins
    where values tie (a property constant on a fifth of the images has one bin less)."""
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        return np.zeros(len(values), int), []
    idx = np.searchsorted(edges[1:-1], values, side="right")
    return idx, [(b, float(edges[b]), float(edges[b + 1])) for b in range(len(edges) - 1)]


def _columns(columns: dict[str, np.ndarray], bins: int) -> list[tuple[str, np.ndarray, list[Part]]]:
    """Each column as (name, code per image, parts): numbers in quantile bins, categories by value."""
    out = []
    for name, v in columns.items():
        v = np.asarray(v)
        numeric = v.dtype != object and len(np.unique(v)) > MAX_CATEGORIES
        if numeric:
            idx, raw = bins_of(v.astype(float), bins)
            parts = [Part(name, f"q{b + 1} of {len(raw)} ({_fmt(lo)}-{_fmt(hi)})", float(lo), float(hi))
                     for b, lo, hi in raw]
        else:
            values = sorted({str(x) for x in v})
            lookup = {s: i for i, s in enumerate(values)}
            idx = np.array([lookup[str(x)] for x in v])
            parts = [Part(name, f"= {s}", value=s) for s in values]
        if len(parts) >= 2:
            out.append((name, idx, parts))
    return out


def min_size(n: int) -> int:
    return max(MIN_SEGMENT, math.ceil(MIN_SEGMENT_SHARE * n))


def candidates(columns: dict[str, np.ndarray], n: int, bins: int = BINS,
               smallest: int | None = None) -> list[tuple[tuple[Part, ...], np.ndarray]]:
    """Every segment the search tries: one column's bin or value, and every intersection of two
    columns' bins or values, holding at least ``smallest`` images and leaving as many outside."""
    smallest = min_size(n) if smallest is None else smallest
    cols = _columns(columns, bins)
    out = []

    def keep(parts, mask):
        k = int(mask.sum())
        if smallest <= k <= n - smallest:
            out.append((parts, np.flatnonzero(mask)))

    for _, idx, parts in cols:
        for b, part in enumerate(parts):
            keep((part,), idx == b)
    for i in range(len(cols)):
        for j in range(i + 1, len(cols)):
            (_, ia, pa), (_, ib, pb) = cols[i], cols[j]
            for a, part_a in enumerate(pa):
                in_a = ia == a
                for b, part_b in enumerate(pb):
                    keep((part_a, part_b), in_a & (ib == b))
    return out


def clopper_pearson(k: np.ndarray, n: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Exact two-sided binomial interval of k successes in n trials."""
    k, n = np.asarray(k, float), np.asarray(n, float)
    a = (1 - level) / 2
    lo = np.where(k > 0, stats.beta.ppf(a, np.maximum(k, 1e-12), n - k + 1), 0.0)
    hi = np.where(k < n, stats.beta.ppf(1 - a, k + 1, np.maximum(n - k, 1e-12)), 1.0)
    return lo, hi


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control)."""
    p = np.asarray(p, float)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out = np.empty(m)
    out[order] = adj
    return out


@dataclass
class Search:
    """What the search found for one model (``search``)."""
    n: int
    accuracy: float
    searched: int
    segments: list[dict] = field(default_factory=list)  # the weak ones, worst accuracy first
    min_size: int = 0

    @property
    def worst(self) -> dict | None:
        return self.segments[0] if self.segments else None

    def members(self, worst: int = REPORTED) -> np.ndarray:
        """Test positions in any of the ``worst`` weak segments (the ones the report shows; all
        of them with ``worst=0``)."""
        shown = self.segments[:worst] if worst else self.segments
        if not shown:
            return np.zeros(0, int)
        return np.unique(np.concatenate([np.asarray(s["members"]) for s in shown]))


def search(cands, hit: np.ndarray, conf: np.ndarray, alpha: float = ALPHA, seed: int = 0) -> Search:
    """The weak segments among ``cands`` (``candidates``) for a model whose test outcomes are
    ``hit`` (correct or not) and ``conf`` (top-class probability): Fisher's one-sided exact
    test of each segment's errors against the rest, Holm-corrected over every candidate."""
    from .metrics.samples import calibration_error

    hit = np.asarray(hit, bool)
    conf = np.asarray(conf, float)
    n, errors = len(hit), int((~hit).sum())
    res = Search(n=n, accuracy=float(hit.mean()) if n else float("nan"), searched=len(cands), min_size=min_size(n))
    if not cands or errors == 0:
        return res
    size = np.array([len(m) for _, m in cands])
    wrong = np.array([int((~hit[m]).sum()) for _, m in cands])
    # P(X >= wrong) for X ~ Hypergeometric(n, errors, size): more errors than chance puts there
    p = stats.hypergeom.sf(wrong - 1, n, errors, size)
    adj = holm(p)
    weak = np.flatnonzero(adj <= alpha)
    confident_wrong = (~hit) & (conf >= CONFIDENT)
    rng = np.random.default_rng(seed)
    rows = []
    for i in weak:
        parts, members = cands[i]
        k = int(size[i] - wrong[i])
        cw = int(confident_wrong[members].sum())
        (alo,), (ahi,) = clopper_pearson([k], [size[i]])
        (clo,), (chi,) = clopper_pearson([cw], [size[i]])
        rows.append({"parts": [pt.to_dict() for pt in parts], "name": " & ".join(f"{pt.column} {pt.label}" for pt in parts),
                     "images": int(size[i]), "accuracy": k / size[i], "accuracy_ci": [float(alo), float(ahi)],
                     "rest_accuracy": float(1 - (errors - wrong[i]) / (n - size[i])),
                     "confident_error_rate": cw / size[i], "confident_error_ci": [float(clo), float(chi)],
                     "ece": calibration_error(conf[members], hit[members]), "p": float(p[i]), "p_holm": float(adj[i]),
                     "members": members})
    rows.sort(key=lambda r: (r["accuracy"], r["p"]))
    for r in rows[:REPORTED]:  # a percentile-bootstrap interval of the ECE of the segments shown
        m = r["members"]
        draws = rng.integers(0, len(m), size=(ECE_BOOT, len(m)))
        boots = [calibration_error(conf[m[d]], hit[m[d]]) for d in draws]
        r["ece_ci"] = [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]
    res.segments = rows
    return res


def accuracy_by_bin(columns: dict[str, np.ndarray], hit: np.ndarray, bins: int = BINS) -> dict[str, dict]:
    """Accuracy in each quantile bin (or value) of each column, with Clopper-Pearson intervals:
    the report's accuracy-against-property plots."""
    out = {}
    hit = np.asarray(hit, bool)
    for name, idx, parts in _columns(columns, bins):
        n = np.bincount(idx, minlength=len(parts))
        k = np.bincount(idx, weights=hit.astype(float), minlength=len(parts))
        lo, hi = clopper_pearson(k, np.maximum(n, 1))
        out[name] = {"labels": [p.label for p in parts], "images": n.tolist(),
                     "accuracy": (k / np.maximum(n, 1)).tolist(), "lo": lo.tolist(), "hi": hi.tolist()}
    return out


# --------------------------------------------------------------------------- shift

def ks_permutation(a: np.ndarray, b: np.ndarray, permutations: int = PERMUTATIONS,
                   seed: int = 0) -> tuple[float, float]:
    """The two-sample Kolmogorov-Smirnov distance of ``a`` and ``b`` and its permutation
    p-value: (1 + relabellings at least as far apart) / (1 + relabellings)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    pooled = np.concatenate([a, b])
    order = np.argsort(pooled, kind="stable")
    sorted_vals = pooled[order]
    last = np.r_[sorted_vals[1:] != sorted_vals[:-1], True]  # the ECDFs are compared after each run of ties
    na, nb = len(a), len(b)

    def dist(is_a: np.ndarray) -> np.ndarray:  # is_a: (R, n) in sorted order
        ca = np.cumsum(is_a, axis=1)[:, last] / na
        cb = np.cumsum(~is_a, axis=1)[:, last] / nb
        return np.abs(ca - cb).max(axis=1)

    labels = np.r_[np.ones(na, bool), np.zeros(nb, bool)]
    observed = float(dist(labels[order][None])[0])
    rng = np.random.default_rng(seed)
    exceed = 0
    for start in range(0, permutations, 200):
        r = min(200, permutations - start)
        perm = np.argsort(rng.random((r, na + nb)), axis=1)
        exceed += int((dist(labels[perm]) >= observed - 1e-12).sum())
    return observed, (1 + exceed) / (1 + permutations)


def shift(reference: dict[str, np.ndarray], other: dict[str, np.ndarray], alpha: float = SHIFT_ALPHA,
          seed: int = 0) -> dict[str, dict]:
    """Per property: the KS distance between ``reference`` (the training split) and ``other``,
    its permutation p-value, Holm-adjusted over the properties, whether it shifted (adjusted p
    <= ``alpha``), and the share of ``other`` outside the reference's 0.5-99.5% range."""
    names = [k for k in reference if k in other]
    rows = {}
    for i, k in enumerate(names):
        d, p = ks_permutation(reference[k], other[k], seed=seed + i)
        lo, hi = np.quantile(reference[k], [0.005, 0.995])
        rows[k] = {"distance": d, "p": p, "outside_range": float(np.mean((other[k] < lo) | (other[k] > hi))),
                   "reference_median": float(np.median(reference[k])), "median": float(np.median(other[k]))}
    adj = holm(np.array([rows[k]["p"] for k in names]))
    for k, a in zip(names, adj):
        rows[k]["p_holm"] = float(a)
        rows[k]["shifted"] = bool(a <= alpha)
    return rows
