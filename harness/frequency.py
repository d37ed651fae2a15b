"""Frequency bias: how a model does when only the low or only the high spatial frequencies of
an image remain. Shapes live in the low frequencies and texture in the high ones, so this is a
procedural stand-in for the shape-versus-texture studies (Geirhos et al., ICLR 2019) that needs
no download: a model that leans on fine detail loses its low-pass accuracy.

Filters act on the image's 2-D Fourier transform (each channel), with a Gaussian transfer
function in the radial frequency r (cycles per pixel, Nyquist = 0.5), which rings less than a
sharp cut: low-pass keeps exp(-r^2 / (2 s^2)) of each frequency, s = ``CUTOFF`` x Nyquist;
high-pass keeps the rest and the image's mean (so brightness stays). Results are clipped to
[0, 1].
"""

from __future__ import annotations

import torch

CUTOFF = 0.25  # the Gaussian's sd as a share of the Nyquist frequency: about the coarsest 8x8 of a 28x28 image
FILTERS = ("lowpass", "highpass")


def _transfer(h: int, w: int, cutoff: float) -> torch.Tensor:
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(w, dtype=torch.float64)[None, :]
    s = cutoff * 0.5
    return torch.exp(-(fy**2 + fx**2) / (2 * s * s))


def filtered(x: torch.Tensor, kind: str, cutoff: float = CUTOFF) -> torch.Tensor:
    """``x`` (N, C, H, W) in [0, 1] with only its low (``lowpass``) or high (``highpass``)
    spatial frequencies kept."""
    if kind not in FILTERS:
        raise ValueError(f"unknown filter {kind!r}: one of {', '.join(FILTERS)}")
    xd = x.double()
    g = _transfer(x.shape[-2], x.shape[-1], cutoff).to(xd.device)
    low = torch.fft.ifft2(torch.fft.fft2(xd) * g).real
    out = low if kind == "lowpass" else xd - low + xd.mean(dim=(-2, -1), keepdim=True)
    return out.clamp(0, 1).to(x.dtype)


def run(model, x_uint8: torch.Tensor, device, batch: int = 500, tick=None) -> dict[str, torch.Tensor]:
    """The model's logits on each filtered version of the images: {filter: (N, K)}."""
    from .evaluate import to_float

    out = {}
    model.eval()
    for kind in FILTERS:
        parts = []
        for i in range(0, len(x_uint8), batch):
            xb = filtered(to_float(x_uint8[i:i + batch]), kind).to(device)
            with torch.no_grad():
                parts.append(model(xb).float().cpu())
        out[kind] = torch.cat(parts)
        if tick is not None:
            tick(1)
    return out
