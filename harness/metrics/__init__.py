"""The metric registry: every number the harness measures is defined here, once.

A metric is a ``Metric``: name, family, one line on what it measures, direction (is
higher or lower better), unit, and its function. The session, the paired comparison,
the gates and the report all read ``REGISTRY``; nothing else computes a metric.

Evidence
--------
Metric functions read *evidence* about one model, named by ``Metric.needs``:

* ``test`` / ``val`` / ``train_sample``: a ``Samples`` (per-sample outcomes of the model on
  the test split, the validation split, or a fixed seeded sample of the images it was
  trained on, evaluated in eval mode);
* ``robustness``: ``{condition: Samples}`` on the same stressed test images;
* ``attention``: an ``Attention`` (per-image heatmap scores, see ``harness/explain/``).

A function of one ``Samples`` (or of a dict of them on the same images) is a function of
per-sample arrays, so the paired bootstrap of ``compare.py`` reuses it on resampled
indices (``Metric.paired``).

The registry and its metrics, by module: ``samples`` (per-sample outcomes and shared building
blocks), ``registry`` (``Metric``, ``register``, ``measure``), ``classification`` (one
split's predictions: its docstring defines every one of them), ``robustness``, ``attention``.
"""

from . import attention, beyond, classification, robustness  # noqa: F401 - registers their metrics, in this order
from .attention import *  # noqa: F403
from .beyond import *  # noqa: F403
from .classification import *  # noqa: F403
from .registry import *  # noqa: F403
from .robustness import *  # noqa: F403
from .samples import *  # noqa: F403
from .samples import _bin_gaps  # noqa: F401


def _register_the_rest() -> None:
    """Every other module of this package registers its metrics too (a new family is one module)."""
    import importlib
    import pkgutil

    for m in pkgutil.iter_modules(__path__):  # noqa: F405 - the package's own __path__
        importlib.import_module(f"{__name__}.{m.name}")


_register_the_rest()
