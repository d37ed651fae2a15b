"""The corruptions' severity tables (CIFAR-10-C's, calibrated for 28 and 32 px) and which
corruptions apply to which images; what each corruption does: docs/corruptions.md."""

from __future__ import annotations

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
    return [n for n in PARAMS if channels == 3 or n not in COLOUR_ONLY]


def _check(name: str, severity: int) -> None:
    if name not in PARAMS:
        raise ValueError(f"unknown corruption {name!r}: choose one of {', '.join(PARAMS)}")
    if isinstance(severity, bool) or severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, not {severity!r}")
