"""The corruptions themselves (docs/corruptions.md), batched and seeded, and ``corrupt``."""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable

import torch

from ..filters import _conv_matrix, _gauss_1d, _grid, _sample, _separable, gaussian_blur
from .table import COLOUR_ONLY, _check, corruptions_for, params

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
    return gaussian_blur(x, c, 4.0)


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
        from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg  # here: importing torchvision takes seconds

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
