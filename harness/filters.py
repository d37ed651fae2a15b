"""Separable filters with chosen edge handling (scipy / cv2 / skimage conventions), as matrix
products on whole batches: the Gaussian blur the corruptions and the Grad-CAM deletion
baseline share, and bilinear sampling at pixel coordinates with mirrored edges."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


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


def gaussian_blur(x: torch.Tensor, sigma: float, truncate: float = 4.0, mode: str = "edge") -> torch.Tensor:
    """A Gaussian of std ``sigma`` px on every image and channel of x (B, C, H, W), its kernel
    sampled as scipy.ndimage does (radius int(truncate sigma + 0.5), normalised) and applied
    with ``mode`` edges ("edge": repeated, as skimage's ``gaussian``)."""
    h, w = x.shape[-2:]
    k = _gauss_1d(sigma, truncate)
    return _separable(x, [(_conv_matrix(h, k, mode), _conv_matrix(w, k, mode))])
