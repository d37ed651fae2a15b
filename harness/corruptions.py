"""CIFAR-10-C-style common corruptions for small images (28x28 grey, 32x32 colour).

A batched, seeded re-implementation of the corruptions of Hendrycks & Dietterich,
"Benchmarking Neural Network Robustness to Common Corruptions and Perturbations" (ICLR
2019), following their CIFAR-10-C generator ``make_cifar_c.py`` (repository
hendrycks/robustness, ``ImageNet-C/create_c/make_cifar_c.py``). The ``imagecorruptions``
package rejects images under 32 px and breaks on NumPy 2, hence this module.

Images are float (B, C, H, W) in [0, 1], C in {1, 3}, H, W >= 8, on any device. Every
corruption transforms the whole batch with a few tensor operations (no per-pixel Python
loops), draws its randomness only from the ``torch.Generator`` it is given, and returns a
tensor of the same shape, dtype and device, clipped to [0, 1]. ``c`` below is the
severity's parameter from ``PARAMS``; N(0, 1) and U(a, b) are drawn per element unless
said otherwise; clip(.) is to [0, 1].

Noise (per pixel and channel):

* ``gaussian_noise``: x + c N(0, 1).
* ``shot_noise``: Poisson(c x) / c (photon noise with c photons at full intensity).
* ``impulse_noise``: salt and pepper, each value replaced with probability c by 0 or 1
  (half each), as ``skimage.util.random_noise(mode='s&p', amount=c)``.
* ``speckle_noise``: x + x c N(0, 1).

Blur:

* ``gaussian_blur``: Gaussian of std c px, kernel truncated at 4 std (scipy), edges
  repeated (skimage's ``gaussian`` defaults).
* ``defocus_blur``: c = (r, s). Kernel = the disk {(i, j) integer : i^2 + j^2 <= r^2},
  normalised, smoothed by the 3x3 Gaussian of std s (cv2.GaussianBlur), applied with
  mirrored edges (cv2.filter2D, BORDER_REFLECT_101).
* ``motion_blur``: ImageMagick's MotionBlurImage, c = (radius, sigma): a one-sided trail
  of K = 2 ceil(radius) + 1 taps, out(p) = sum_k w_k x(p + round(k u)), w_k proportional
  to exp(-k^2 / (2 sigma^2)), u = (cos a, sin a), angle a ~ U(-45, 45) degrees per image,
  edges repeated.
* ``zoom_blur``: mean of x and of x zoomed about its centre by z = 1, 1.01, ..., c
  (bilinear, scipy ``zoom`` with CIFAR-10-C's ``clipped_zoom`` crop), i.e.
  (x + sum_z zoom_z(x)) / (n_z + 1).

Weather and digital:

* ``contrast``: (x - m) c + m, m = the mean of each image's channel.
* ``brightness``: HSV value + c. In RGB: V = max_ch x, V' = min(V + c, 1); scaling the
  pixel by V'/V keeps hue and saturation, so out = x V'/V (black pixels: V' grey). No HSV
  round trip; for one channel this is min(x + c, 1).
* ``saturate`` (colour only): HSV saturation S' = clip(S a + b), c = (a, b). With
  S = (V - min)/V: out = V - (V - x) S'/S; grey pixels (S = 0, hue 0 in skimage) become
  (V, V(1 - S'), V(1 - S')), a red tint when b > 0, as in CIFAR-10-C.
* ``fog``: c = (t, d): F = a diamond-square plasma fractal in [0, 1] (one per image,
  wibble decay d, on the 2^k >= side map, cropped); out = (x + t F) M / (M + t),
  M = the image's maximum.
* ``pixelate``: Pillow's BOX resize to int(H c) x int(W c) and back (for whole factors:
  average pooling, then nearest upsampling), as two (side x side) matrices.
* ``jpeg``: a real JPEG round trip (torchvision.io.encode_jpeg / decode_jpeg, libjpeg,
  4:2:0 chroma) at quality c, on CPU, of the image rounded to uint8.
* ``elastic_transform``: c = (alpha, sigma, m) px: a random affine map (three control
  points moved by U(-m, m), cv2 warpAffine, mirrored edges), then a displacement field
  alpha G_sigma * U(-1, 1) per axis (Gaussian-smoothed noise, truncated at 3 std),
  bilinear with mirrored edges.

Severity 1 is the mildest, 5 the strongest: the mean |out - x| grows with severity. CIFAR-10-C's
levels are kept in their order except for ``elastic_transform`` and ``saturate``, whose five
levels CIFAR-10-C does not order by strength; here they are re-ranked (see their tables).

Sizes: ``PARAMS`` holds one table per corruption with the 32 px values (CIFAR-10-C's
wherever they transfer) and the 28 px values, with the reasons for each difference.
Other sizes use the table of the nearer calibrated size (28 for min(H, W) <= 30, else
32) and scale its spatial parameters (pixels: blur widths, motion trail, elastic
amplitudes) by min(H, W) / that size, except that the defocus disk's radius never
shrinks (a smaller lattice disk is the centre pixel alone); pixelate uses int(side c) per
axis, with CIFAR-10-C's factors c, and fog a larger fractal past 32 px. Per-pixel
parameters (noise, contrast, brightness, saturation, JPEG quality, zoom factors) never
change with size. ``params(name, severity, H, W)`` returns the values used.

Implementation: the fixed linear blurs (Gaussian, defocus, pixelate, zoom, and the
smoothing of the elastic field) are small per-axis matrices applied as A x B^T (zoom blur
up to 32x32 as one (HW x HW) matrix): on images this small they are much cheaper than
conv2d. Given the same random numbers, the outputs agree with make_cifar_c.py's
scipy / skimage / cv2 / ImageMagick formulas to float rounding (pixelate: to Pillow's
uint8 rounding; jpeg: with Pillow's libjpeg output); the tests check the deterministic
ones against scipy, Pillow and matplotlib's HSV.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

SEVERITIES = (1, 2, 3, 4, 5)
CALIBRATED_SIZES = (28, 32)

# ------------------------------------------------------------------ severity tables
#
# One table per corruption: {32: five severities, 28: five severities}. The CIFAR-10-C
# values quoted are those of make_cifar_c.py (hendrycks/robustness, commit ca36008).
PARAMS: dict[str, dict[int, tuple]] = {
    # CIFAR-10-C: std c = [.04, .06, .08, .09, .10]. Per pixel, no spatial extent: 28 px identical.
    "gaussian_noise": {32: (0.04, 0.06, 0.08, 0.09, 0.10), 28: (0.04, 0.06, 0.08, 0.09, 0.10)},
    # CIFAR-10-C: photons c = [500, 250, 100, 75, 50]. Per pixel: 28 px identical.
    "shot_noise": {32: (500, 250, 100, 75, 50), 28: (500, 250, 100, 75, 50)},
    # CIFAR-10-C: s&p amount c = [.01, .02, .03, .05, .07]. Per pixel: 28 px identical.
    "impulse_noise": {32: (0.01, 0.02, 0.03, 0.05, 0.07), 28: (0.01, 0.02, 0.03, 0.05, 0.07)},
    # CIFAR-10-C: c = [.06, .1, .12, .16, .2]. Per pixel: 28 px identical.
    "speckle_noise": {32: (0.06, 0.10, 0.12, 0.16, 0.20), 28: (0.06, 0.10, 0.12, 0.16, 0.20)},
    # CIFAR-10-C: sigma c = [.4, .6, .7, .8, 1] px. A width in pixels: 28 px = 32 px x 28/32, so the blur
    # is the same fraction of the object (Fashion-MNIST items fill their frame as CIFAR objects do).
    "gaussian_blur": {32: (0.4, 0.6, 0.7, 0.8, 1.0), 28: (0.35, 0.525, 0.6125, 0.7, 0.875)},
    # CIFAR-10-C: (radius, alias sigma) = [(.3, .4), (.4, .5), (.5, .6), (1, .2), (1.5, .1)]. The disk lives
    # on the integer lattice: radii < 1 are the centre pixel alone (severities 1-3 are the 3x3 Gaussian of
    # std s), radius 1 the 5-pixel cross, 1.5 the 3x3 square. Scaling radius 1 by 28/32 would shrink the
    # cross to one pixel (severity 4 = severity 3), so 28 px keeps the radii and scales the Gaussian stds
    # by 28/32 (the only continuous width).
    "defocus_blur": {
        32: ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1)),
        28: ((0.3, 0.35), (0.4, 0.4375), (0.5, 0.525), (1.0, 0.175), (1.5, 0.0875)),
    },
    # CIFAR-10-C: ImageMagick (radius, sigma) = [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)] px, angle
    # U(-45, 45). Widths in pixels: 28 px = x 28/32 (trail of 13, 13, 13, 15, 17 taps instead of 13, 13, 13,
    # 17, 19). As in CIFAR-10-C, severities 3 and 4 differ only in taps whose weight is < e^-18: practically
    # the same blur.
    "motion_blur": {
        32: ((6.0, 1.0), (6.0, 1.5), (6.0, 2.0), (8.0, 2.0), (9.0, 2.5)),
        28: ((5.25, 0.875), (5.25, 1.3125), (5.25, 1.75), (7.0, 1.75), (7.875, 2.1875)),
    },
    # CIFAR-10-C: zooms np.arange(1, c_max, .01) with c_max = [1.06, 1.11, 1.16, 1.21, 1.26]; float rounding
    # makes those 1..1.06, 1..1.11, 1..1.15, 1..1.20, 1..1.25 (7, 12, 16, 21, 26 zooms), stored here as the
    # largest zoom. Zoom factors are relative to the image: 28 px identical.
    "zoom_blur": {32: (1.06, 1.11, 1.15, 1.20, 1.25), 28: (1.06, 1.11, 1.15, 1.20, 1.25)},
    # CIFAR-10-C: c = [.75, .5, .4, .3, .15]. Global per image: 28 px identical.
    "contrast": {32: (0.75, 0.5, 0.4, 0.3, 0.15), 28: (0.75, 0.5, 0.4, 0.3, 0.15)},
    # CIFAR-10-C: HSV value + c, c = [.05, .1, .15, .2, .3]. Per pixel: 28 px identical.
    "brightness": {32: (0.05, 0.1, 0.15, 0.2, 0.3), 28: (0.05, 0.1, 0.15, 0.2, 0.3)},
    # CIFAR-10-C: (t, decay) = [(.2, 3), (.5, 3), (.75, 2.5), (1, 2), (1.5, 1.75)], fractal 32x32 map. 28 px
    # identical: the fractal is drawn on the same 32x32 map and cropped to 28x28, as CIFAR-10-C crops its
    # map to the image.
    "fog": {
        32: ((0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75)),
        28: ((0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75)),
    },
    # CIFAR-10-C: BOX resize to int(32 c) with c = [.95, .9, .85, .75, .65]. The factor is kept and the
    # downsampled side is the whole number int(side c), as make_cifar_c.py computes it: 30, 28, 27, 24, 20
    # px at 32; 26, 25, 23, 21, 18 px at 28 (ratios .93, .89, .82, .75, .64 vs .94, .88, .84, .75, .63).
    # Stored as the downsampled side.
    "pixelate": {32: (30, 28, 27, 24, 20), 28: (26, 25, 23, 21, 18)},
    # CIFAR-10-C: PIL JPEG quality c = [80, 65, 58, 50, 40]. Quality is per 8x8 block, not per object
    # size: 28 px identical (the encoder pads 28 to 32 internally).
    "jpeg": {32: (80, 65, 58, 50, 40), 28: (80, 65, 58, 50, 40)},
    # CIFAR-10-C: (alpha, sigma, affine) = IMSIZE x [(0, 0, .08), (.05, .2, .07), (.08, .06, .06),
    # (.1, .04, .05), (.1, .03, .03)] with IMSIZE = 32: fractions of the image size by construction, so
    # 28 px = the same fractions x 28. ORDER CHANGED: the pixel change is dominated by the random affine
    # part, whose amplitude CIFAR-10-C lowers from level 1 to 5 (.08 -> .03) while it raises the
    # elastic part (which moves pixels by < 0.6 px rms): its levels 1..5 change the image less and less
    # (mean |out - x| on Fashion-MNIST: .105, .096, .088, .083, .072). Severities 1..5 here are
    # CIFAR-10-C's levels 5, 4, 3, 2, 1, i.e. ordered by the affine amplitude.
    "elastic_transform": {
        32: ((3.2, 0.96, 0.96), (3.2, 1.28, 1.6), (2.56, 1.92, 1.92), (1.6, 6.4, 2.24), (0.0, 0.0, 2.56)),
        28: ((2.8, 0.84, 0.84), (2.8, 1.12, 1.4), (2.24, 1.68, 1.68), (1.4, 5.6, 1.96), (0.0, 0.0, 2.24)),
    },
    # CIFAR-10-C: HSV S' = S a + b with (a, b) = [(.3, 0), (.1, 0), (1.5, 0), (2, .1), (2.5, .2)]. Per pixel:
    # 28 px identical (28 px data are grey, where saturate does not apply). ORDER CHANGED: CIFAR-10-C's
    # level 3 (x1.5) changes a pixel of saturation S by min(S/2, 1 - S), less than level 1 (0.7 S), so
    # its levels are not ordered by strength. Severities 1..5 here are its levels 3, 1, 2, 4, 5:
    # |S' - S| = min(S/2, 1-S) <= 0.7 S <= 0.9 S <= min(S + .1, 1-S) <= min(1.5 S + .2, 1-S) for the
    # moderately saturated pixels of natural images (S < 0.45); very saturated images (S > 0.5), where
    # oversaturation clips at 1, can rank levels 4-5 below 3.
    "saturate": {
        32: ((1.5, 0.0), (0.3, 0.0), (0.1, 0.0), (2.0, 0.1), (2.5, 0.2)),
        28: ((1.5, 0.0), (0.3, 0.0), (0.1, 0.0), (2.0, 0.1), (2.5, 0.2)),
    },
}

# Corruptions whose parameters are all lengths in pixels (scaled by side / calibrated size at other sizes).
SPATIAL = frozenset({"gaussian_blur", "defocus_blur", "motion_blur", "elastic_transform"})
# Corruptions that draw random numbers (the others ignore the generator).
RANDOM = frozenset(
    {"gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "motion_blur", "fog", "elastic_transform"}
)
COLOUR_ONLY = frozenset({"saturate"})

# CIFAR-10-C's pixelate factors, used at uncalibrated sizes (int(side c) per axis).
_PIXELATE_FACTORS = (0.95, 0.9, 0.85, 0.75, 0.65)


def reference_size(height: int, width: int) -> int:
    """The calibrated size whose table applies: 28 when min(H, W) <= 30, else 32."""
    return 28 if min(height, width) <= 30 else 32


def params(name: str, severity: int, height: int, width: int):
    """The parameter(s) ``name`` uses at ``severity`` on H x W images: the table entry of the
    nearer calibrated size, spatial ones scaled by min(H, W) / that size (pixelate: the
    downsampled (height, width))."""
    _check(name, severity)
    ref = reference_size(height, width)
    value = PARAMS[name][ref][severity - 1]
    if name == "pixelate":
        if (height, width) == (ref, ref):
            return (value, value)
        c = _PIXELATE_FACTORS[severity - 1]
        return (max(1, int(height * c)), max(1, int(width * c)))
    side = min(height, width)
    if name not in SPATIAL or side == ref:
        return value
    if name == "defocus_blur":  # the lattice disk only grows: a smaller one collapses to the centre pixel
        return (value[0] * max(side / ref, 1.0), value[1] * side / ref)
    return tuple(v * side / ref for v in value) if isinstance(value, tuple) else value * side / ref


def corruptions_for(channels: int) -> list[str]:
    """The corruptions applicable to images with ``channels`` channels (saturate needs colour)."""
    if channels not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, not {channels}")
    return [n for n in CORRUPTIONS if channels == 3 or n not in COLOUR_ONLY]


def _check(name: str, severity: int) -> None:
    if name not in PARAMS:
        raise ValueError(f"unknown corruption {name!r}: choose one of {', '.join(PARAMS)}")
    if isinstance(severity, bool) or severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, not {severity!r}")


# ------------------------------------------------------------------ helpers


def _pad_index(n: int, p: int, mode: str, device) -> torch.Tensor:
    """Source indices of positions -p .. n+p-1 for edge ``mode``: 'edge' (repeat), 'reflect101'
    (cv2 BORDER_REFLECT_101, dcb|abcd|cba) or 'symmetric' (scipy 'reflect', ba|abcd|dc); any p."""
    i = torch.arange(-p, n + p, device=device)
    if mode == "edge" or n == 1:
        return i.clamp(0, n - 1)
    if mode == "reflect101":
        period = 2 * n - 2
        m = i.remainder(period)
        return torch.where(m < n, m, period - m)
    m = i.remainder(2 * n)
    return torch.where(m < n, m, 2 * n - 1 - m)


def _gauss_1d(sigma: float, truncate: float) -> tuple[float, ...]:
    """scipy.ndimage's sampled Gaussian: radius int(truncate sigma + 0.5), normalised."""
    r = int(truncate * sigma + 0.5)
    if sigma <= 0 or r == 0:
        return (1.0,)
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float64) / sigma) ** 2)
    return tuple((k / k.sum()).tolist())


@functools.lru_cache(maxsize=512)
def _conv_matrix(n: int, taps: tuple[float, ...], mode: str) -> torch.Tensor:
    """(n x n) matrix M of the 1-D correlation with ``taps`` (odd length) and ``mode`` edges:
    (M v)_i = sum_t taps[t] v[i + t - r] with out-of-range indices mirrored or repeated."""
    r = len(taps) // 2
    src = _pad_index(n, r, mode, "cpu")
    m = torch.zeros(n, n, dtype=torch.float64)
    i = torch.arange(n)
    for t, v in enumerate(taps):  # one vectorised scatter per tap
        m.index_put_((i, src[i + t]), torch.full((n,), v, dtype=torch.float64), accumulate=True)
    return m


def _separable(x: torch.Tensor, terms) -> torch.Tensor:
    """sum over (row matrix A, column matrix B) of A x B^T, on every image and channel."""
    out = None
    for a, b in terms:
        y = a.to(x.device, x.dtype) @ x @ b.to(x.device, x.dtype).T
        out = y if out is None else out + y
    return out


def _grid(h: int, w: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates (column, row), each (1, H, W)."""
    rows = torch.arange(h, device=device, dtype=dtype)[:, None].expand(h, w)
    cols = torch.arange(w, device=device, dtype=dtype)[None, :].expand(h, w)
    return cols[None], rows[None]


def _sample(x: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, align_corners: bool) -> torch.Tensor:
    """Bilinear x at pixel coordinates (cx, cy), each (B, H, W), mirrored edges: about the edge
    pixels' centres (reflect-101) with align_corners, about their outer edges (symmetric) without."""
    h, w = x.shape[-2:]
    if align_corners:
        gx, gy = 2 * cx / max(w - 1, 1) - 1, 2 * cy / max(h - 1, 1) - 1
    else:
        gx, gy = (2 * cx + 1) / w - 1, (2 * cy + 1) / h - 1
    grid = torch.stack([gx, gy], -1).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=align_corners)


# ------------------------------------------------------------------ noise


def _gaussian_noise(x, c, g):
    return x + c * torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)


def _shot_noise(x, c, g):
    return torch.poisson((x * c).clamp_min(0), generator=g) / c


def _impulse_noise(x, c, g):
    flip = torch.rand(x.shape, generator=g, device=x.device, dtype=x.dtype) < c
    salt = torch.rand(x.shape, generator=g, device=x.device, dtype=x.dtype) < 0.5
    return torch.where(flip, salt.to(x.dtype), x)


def _speckle_noise(x, c, g):
    return x + x * c * torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)


# ------------------------------------------------------------------ blur


def _gaussian_blur(x, c, g):
    h, w = x.shape[-2:]
    k = _gauss_1d(c, 4.0)
    return _separable(x, [(_conv_matrix(h, k, "edge"), _conv_matrix(w, k, "edge"))])


@functools.lru_cache(maxsize=64)
def _disk_kernel(radius: float, alias: float) -> torch.Tensor:
    """make_cifar_c.disk: the lattice disk of ``radius`` on a 17x17 grid (larger past radius
    8), normalised, then cv2.GaussianBlur with a 3x3 (5x5 past radius 8) kernel of std
    ``alias`` (reflect-101 edges); trimmed to its non-zero support."""
    half = 8 if radius <= 8 else math.ceil(radius)
    ksize = 3 if radius <= 8 else 5
    ij = torch.arange(-half, half + 1, dtype=torch.float64)
    disk = ((ij[:, None] ** 2 + ij[None, :] ** 2) <= radius**2).double()
    disk /= disk.sum()
    t = torch.arange(ksize, dtype=torch.float64) - (ksize - 1) / 2
    gk = torch.exp(-(t**2) / (2 * alias**2)) if alias > 0 else (t == 0).double()
    gk = tuple((gk / gk.sum()).tolist())
    n = 2 * half + 1
    k = _separable(disk, [(_conv_matrix(n, gk, "reflect101"), _conv_matrix(n, gk, "reflect101"))])
    r = min(int(math.floor(radius)) + ksize // 2, half)  # support of disk (+) Gaussian
    return k[half - r : half + r + 1, half - r : half + r + 1].contiguous()


@functools.lru_cache(maxsize=128)
def _defocus_terms(h: int, w: int, radius: float, alias: float):
    """The disk kernel as a sum of separable terms (its SVD, rank <= 3 here), each a pair of
    (row, column) correlation matrices with reflect-101 edges (cv2.filter2D's default)."""
    u, s, vt = torch.linalg.svd(_disk_kernel(radius, alias))
    terms = []
    for i in range(len(s)):
        if s[i] <= 1e-12 * s[0]:
            break
        col, row = tuple((u[:, i] * s[i]).tolist()), tuple(vt[i].tolist())
        terms.append((_conv_matrix(h, col, "reflect101"), _conv_matrix(w, row, "reflect101")))
    return terms


def _defocus_blur(x, c, g):
    radius, alias = c
    return _separable(x, _defocus_terms(*x.shape[-2:], float(radius), float(alias)))


def _motion_blur(x, c, g):
    radius, sigma = c
    b, ch, h, w = x.shape
    taps = int(2 * math.ceil(radius) + 1)
    i = torch.arange(taps, device=x.device, dtype=torch.float32)
    weight = torch.exp(-(i**2) / (2 * sigma**2))
    weight = (weight / weight.sum()).tolist()
    angle = torch.deg2rad(torch.rand(b, generator=g, device=x.device, dtype=x.dtype).float() * 90 - 45)
    # ImageMagick: tap k reads the pixel ceil(k cos a - 0.5) columns right, ceil(k sin a - 0.5) rows down.
    dx = torch.ceil(i[None] * torch.cos(angle)[:, None] - 0.5).long()  # (B, K)
    dy = torch.ceil(i[None] * torch.sin(angle)[:, None] - 0.5).long()
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    flat = x.reshape(b, ch, h * w)
    out = torch.zeros_like(flat)
    for k in range(taps):  # 13 to 19 taps, each one gather over the whole batch; edges repeated
        r = (rows[None] + dy[:, k, None]).clamp_(0, h - 1)  # (B, H)
        q = (cols[None] + dx[:, k, None]).clamp_(0, w - 1)  # (B, W)
        idx = (r[:, :, None] * w + q[:, None, :]).reshape(b, 1, h * w).expand(b, ch, h * w)
        out.add_(flat.gather(2, idx), alpha=weight[k])
    return out.reshape(x.shape)


@functools.lru_cache(maxsize=256)
def _zoom_matrix(n: int, z: float) -> torch.Tensor:
    """(n x n) linear map of CIFAR-10-C's clipped_zoom along one axis: crop the central
    ceil(n / z) pixels, scipy.ndimage.zoom (order 1, corner-aligned) to round(ch z), trim back
    to the central n."""
    ch = math.ceil(n / z)
    top = (n - ch) // 2
    out = int(round(ch * z))
    trim = (out - n) // 2
    i = torch.arange(n, dtype=torch.float64)
    coord = top + (i + trim) * ((ch - 1) / (out - 1) if out > 1 else 0.0)
    i0 = coord.floor().clamp(0, n - 1)
    frac = coord - i0
    i1 = (i0 + 1).clamp(max=n - 1)
    m = torch.zeros(n, n, dtype=torch.float64)
    m.index_put_((i.long(), i0.long()), 1 - frac, accumulate=True)
    m.index_put_((i.long(), i1.long()), frac, accumulate=True)
    return m


def _zoom_factors(zmax: float) -> list[float]:
    """1, 1.01, ..., zmax exactly as np.arange(1, stop, .01) computes them (1 + k ((1 + .01) - 1)):
    scipy's zoom rounds the zoomed size, so 1.25 and 1.2500000000000002 differ."""
    step = (1 + 0.01) - 1
    return [1 + k * step for k in range(int(round((zmax - 1) / 0.01)) + 1)]


_DENSE_MAX = 32 * 32  # images up to this many pixels get zoom blur as one (HW x HW) operator (8 MB)


@functools.lru_cache(maxsize=10)
def _zoom_operator(h: int, w: int, zmax: float) -> torch.Tensor:
    """(HW x HW) matrix of zoom blur: (I + sum_z Z_h(z) (x) Z_w(z)) / (n_z + 1)."""
    zooms = _zoom_factors(zmax)
    zh = torch.stack([_zoom_matrix(h, z) for z in zooms])
    zw = torch.stack([_zoom_matrix(w, z) for z in zooms])
    op = torch.einsum("zab,zcd->acbd", zh, zw).reshape(h * w, h * w) + torch.eye(h * w, dtype=torch.float64)
    return op / (len(zooms) + 1)


def _zoom_blur(x, c, g):
    b, ch, h, w = x.shape
    if h * w <= _DENSE_MAX:  # one matrix product for the whole batch
        op = _zoom_operator(h, w, float(c)).to(x.device, x.dtype)
        return (x.reshape(b * ch, h * w) @ op.T).reshape(x.shape)
    zooms = _zoom_factors(c)
    return (x + _separable(x, [(_zoom_matrix(h, z), _zoom_matrix(w, z)) for z in zooms])) / (len(zooms) + 1)


# ------------------------------------------------------------------ weather and digital


def _contrast(x, c, g):
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (x - mean) * c + mean


def _channel_max_min(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x.shape[1] == 1:
        return x, x
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return torch.maximum(torch.maximum(r, g), b), torch.minimum(torch.minimum(r, g), b)


def _brightness(x, c, g):
    if x.shape[1] == 1:  # V = x: HSV brightness is min(x + c, 1)
        return (x + c).clamp(max=1)
    v, _ = _channel_max_min(x)
    v_new = (v + c).clamp(max=1)
    return torch.where(v > 0, x * (v_new / v.clamp_min(torch.finfo(x.dtype).tiny)), v_new)


def _saturate(x, c, g):
    a, b = c
    v, low = _channel_max_min(x)
    delta = v - low
    coloured = delta > 0
    tiny = torch.finfo(x.dtype).tiny
    s_new = (torch.where(coloured, delta / v.clamp_min(tiny), 0.0) * a + b).clamp(0, 1)
    # Same hue and value, saturation s_new: out = V - (V - x) S'/S with S = delta / V.
    out = v - (v - x) * (s_new * v / delta.clamp_min(tiny))
    grey = torch.cat([v, v * (1 - s_new), v * (1 - s_new)], dim=1)  # skimage: hue 0 (red) where S = 0
    return torch.where(coloured, out, grey)


def _plasma(b: int, n: int, decay: float, g: torch.Generator, device, dtype) -> torch.Tensor:
    """make_cifar_c.plasma_fractal for a batch: diamond-square on an n x n (power of two)
    torus, (B, n, n) in [0, 1]. Each midpoint is the mean of its 4 neighbours + wibble * U(-wibble,
    wibble) (sic, as in the original), wibble = 100 divided by ``decay`` per octave."""
    m = torch.zeros(b, n, n, device=device, dtype=dtype)
    step, wibble = n, 100.0

    def wibbled_mean(a):
        return a / 4 + wibble * wibble * (torch.rand(a.shape, generator=g, device=device, dtype=dtype) * 2 - 1)

    while step >= 2:
        half = step // 2
        corner = m[:, 0:n:step, 0:n:step]
        square = corner + corner.roll(-1, 1)
        square = square + square.roll(-1, 2)
        m[:, half:n:step, half:n:step] = wibbled_mean(square)
        centre = m[:, half:n:step, half:n:step]
        corner = m[:, 0:n:step, 0:n:step]
        m[:, 0:n:step, half:n:step] = wibbled_mean(centre + centre.roll(1, 1) + corner + corner.roll(-1, 2))
        m[:, half:n:step, 0:n:step] = wibbled_mean(centre + centre.roll(1, 2) + corner + corner.roll(-1, 1))
        step = half
        wibble /= decay
    m = m - m.amin(dim=(1, 2), keepdim=True)
    return m / m.amax(dim=(1, 2), keepdim=True)


def _fog(x, c, g):
    t, decay = c
    b, _, h, w = x.shape
    n = max(32, 1 << (max(h, w) - 1).bit_length())
    fractal = _plasma(b, n, decay, g, x.device, torch.float32)[:, None, :h, :w].to(x.dtype)
    top = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x + t * fractal) * top / (top + t)


@functools.lru_cache(maxsize=256)
def _box_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out x n_in) weights of Pillow's BOX resampling (precompute_coeffs with box_filter):
    output pixel o averages the input pixels whose centres lie in its footprint, (o + 1/2) s
    +- s/2 with s = max(n_in / n_out, 1) (upsampling: the nearest pixel)."""
    scale = n_in / n_out
    fscale = max(scale, 1.0)
    support = 0.5 * fscale
    centre = (torch.arange(n_out, dtype=torch.float64) + 0.5) * scale
    lo = (centre - support + 0.5).floor().clamp(min=0)  # C's (int) truncation; the values are >= 0
    hi = (centre + support + 0.5).floor().clamp(max=n_in)
    j = torch.arange(n_in, dtype=torch.float64)
    t = (j[None] - centre[:, None] + 0.5) / fscale
    inside = (j[None] >= lo[:, None]) & (j[None] < hi[:, None]) & (t > -0.5) & (t <= 0.5)
    m = inside.double()
    return m / m.sum(1, keepdim=True)


def _pixelate(x, c, g):
    h, w = x.shape[-2:]
    sh, sw = c
    ph = (_box_matrix(sh, h) @ _box_matrix(h, sh)).to(x.device, x.dtype)
    pw = (_box_matrix(sw, w) @ _box_matrix(w, sw)).to(x.device, x.dtype)
    return ph @ x @ pw.T


def _jpeg(x, c, g):
    u8 = (x * 255).round().clamp(0, 255).to(torch.uint8).cpu()
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its image codecs in favour of TorchCodec
        warnings.filterwarnings("ignore", message="The image decoding and encoding", category=DeprecationWarning)
        encoded = encode_jpeg(list(u8), quality=int(c))
        decoded = decode_jpeg(encoded, mode=ImageReadMode.UNCHANGED)
    return torch.stack(decoded).to(x.device, x.dtype) / 255


def _elastic_transform(x, c, g):
    alpha, sigma, amp = c
    b, _, h, w = x.shape
    dev, dt = x.device, x.dtype
    # Random affine (cv2.getAffineTransform + warpAffine): three points around the centre moved
    # by U(-amp, amp); the output at p samples the input at A^-1 p, with A the map pts1 -> pts2.
    cx, cy, s = w // 2, h // 2, min(h, w) // 3
    pts1 = torch.tensor([[cx + s, cy + s], [cx + s, cy - s], [cx - s, cy - s]], device=dev, dtype=dt)
    pts2 = pts1 + (torch.rand(b, 3, 2, generator=g, device=dev, dtype=dt) * 2 - 1) * amp
    ones = torch.ones(b, 3, 1, device=dev, dtype=dt)
    inv = torch.linalg.solve(torch.cat([pts2, ones], 2), pts1.expand(b, 3, 2))  # (B, 3, 2): [p, 1] @ inv
    gx, gy = _grid(h, w, dev, dt)
    sx = gx * inv[:, 0, 0, None, None] + gy * inv[:, 1, 0, None, None] + inv[:, 2, 0, None, None]
    sy = gx * inv[:, 0, 1, None, None] + gy * inv[:, 1, 1, None, None] + inv[:, 2, 1, None, None]
    x = _sample(x, sx, sy, align_corners=True)  # BORDER_REFLECT_101
    # Elastic: displacement alpha * (Gaussian-smoothed U(-1, 1)), scipy map_coordinates mode 'reflect'.
    noise = torch.rand(b, 2, h, w, generator=g, device=dev, dtype=dt) * 2 - 1
    if alpha == 0:
        return x
    k = _gauss_1d(sigma, 3.0)
    d = _separable(noise, [(_conv_matrix(h, k, "symmetric"), _conv_matrix(w, k, "symmetric"))]) * alpha
    return _sample(x, gx + d[:, 1], gy + d[:, 0], align_corners=False)


# ------------------------------------------------------------------ registry and entry point

_IMPLEMENTATIONS: dict[str, Callable] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "speckle_noise": _speckle_noise,
    "gaussian_blur": _gaussian_blur,
    "defocus_blur": _defocus_blur,
    "motion_blur": _motion_blur,
    "zoom_blur": _zoom_blur,
    "contrast": _contrast,
    "brightness": _brightness,
    "fog": _fog,
    "pixelate": _pixelate,
    "jpeg": _jpeg,
    "elastic_transform": _elastic_transform,
    "saturate": _saturate,
}


def _validate(x: torch.Tensor, name: str, severity: int, generator: torch.Generator) -> None:
    _check(name, severity)
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise ValueError("images must be a float tensor (B, C, H, W)")
    b, ch, h, w = x.shape
    if ch not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, not {ch}")
    if h < 8 or w < 8:
        raise ValueError(f"images must be at least 8x8 pixels, not {h}x{w}")
    if name in COLOUR_ONLY and ch != 3:
        raise ValueError(f"{name} needs colour images; for {ch} channel(s) use one of {', '.join(corruptions_for(ch))}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, not {type(generator).__name__}")
    gd = generator.device
    if gd.type != x.device.type or (gd.index or 0) != (x.device.index or 0):
        raise ValueError(f"the generator is on {gd} but the images are on {x.device}")


def _make(name: str) -> Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]:
    impl = _IMPLEMENTATIONS[name]

    def apply(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
        _validate(x, name, severity, generator)
        work = x if x.dtype in (torch.float32, torch.float64) else x.float()
        out = impl(work, params(name, severity, *x.shape[-2:]), generator)
        return out.clamp(0, 1).to(x.dtype)

    apply.__name__ = apply.__qualname__ = name
    apply.__doc__ = f"{name} of images x (B, C, H, W) in [0, 1] at severity 1..5 (see the module docstring)."
    return apply


# name -> corruption(x, severity, generator); the order of the CIFAR-10-C-style report.
CORRUPTIONS: dict[str, Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]] = {
    n: _make(n) for n in _IMPLEMENTATIONS
}


def corrupt(x: torch.Tensor, name: str, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Corrupt a batch x (B, C, H, W), float in [0, 1], with ``name`` at ``severity`` (1..5).

    The result has x's shape, dtype and device, with values in [0, 1]; its randomness comes
    from ``generator`` alone (a torch.Generator on x's device; the deterministic corruptions
    ignore it). Unknown names, severities outside 1..5 and colour-only corruptions of grey
    images raise ValueError."""
    _check(name, severity)
    return CORRUPTIONS[name](x, severity, generator)
