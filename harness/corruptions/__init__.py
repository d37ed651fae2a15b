"""CIFAR-10-C-style common corruptions for small images (28x28 grey, 32x32 colour): a batched,
seeded re-implementation of Hendrycks & Dietterich's CIFAR-10-C generator (``make_cifar_c.py``).
``table`` holds the severities (calibrated for 28 and 32 px), ``kinds`` the corruptions and
``corrupt``; what each does, and its reference: docs/corruptions.md."""

from .kinds import CORRUPTIONS, corrupt
from .table import (
    CALIBRATED_SIZES,
    COLOUR_ONLY,
    PARAMS,
    RANDOM,
    SEVERITIES,
    SPATIAL,
    corruptions_for,
    params,
    reference_size,
)

__all__ = ["CALIBRATED_SIZES", "COLOUR_ONLY", "CORRUPTIONS", "PARAMS", "RANDOM", "SEVERITIES", "SPATIAL", "corrupt",
           "corruptions_for", "params", "reference_size"]
