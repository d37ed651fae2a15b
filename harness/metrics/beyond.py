"""Beyond the test set: out-of-distribution inputs (``ood``: per OOD set, scored by the maximum
softmax probability), train/test leakage (``leakage``) and conformal prediction sets
(``conformal``). Definitions: harness/ood.py, harness/leakage.py, harness/conformal.py.

Evidence ``ood``: {"test": scores, "<set>": scores} with scores {"msp", "maxlogit",
"energy"} per image; ``leakage``: a ``harness.leakage.Leakage`` over the test split;
``conformal``: {"lac" | "aps": {"covered", "size"} per test image, "labels"};
``conformal_shift``: {"<corruption>": covered per image} at severity 3 (LAC).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from . import attention  # noqa: F401 - registered after it: REGISTRY keeps the documented order
from .registry import register, register_family, register_label_kind
from .samples import HIGHER, LOWER, NEUTRAL, NotApplicable, Samples

register_family("ood", "out-of-distribution inputs (noise, blank, shuffled tiles, other domains)")
register_family("leakage", "near-duplicates between the training and test splits")
register_family("conformal", "conformal prediction sets (coverage, set size, under shift)")


def _ood_sets(plan) -> list[str]:
    """The OOD sets a run measures (the built-in ones its screen keeps, and one's own)."""
    from ..kinds.beyond import ood_names

    return ood_names(plan.data, plan.settings)


register_label_kind("ood_set", "ood_set", _ood_sets)

CONFIDENT = 0.99


def _set(ev: Mapping, name) -> Mapping:
    if name not in ev:
        raise NotApplicable(f"the OOD set {name!r} was not measured for this model")
    return ev[name]


def _ood(name, description, direction, unit="share", resolution=None, gated=True, scale=None, null=None):
    return register(name, "ood", description, direction, unit, needs=("ood",), per="ood_set", paired=False,
                    resolution=resolution, gated=gated, scale=scale, null=null)


@_ood("ood_auroc", "AUROC of the maximum softmax probability telling the test images (positive) from an OOD set",
      HIGHER, resolution="image", null=0.5)
def ood_auroc(ev: Mapping, name) -> float:
    from ..ood import auroc

    return auroc(ev["test"]["msp"], _set(ev, name)["msp"])


@_ood("ood_fpr95", "share of an OOD set scored above the confidence that keeps 95% of the test images (FPR at 95% "
      "TPR)", LOWER, resolution="image", null=0.95)
def ood_fpr95(ev: Mapping, name) -> float:
    from ..ood import fpr_at_tpr

    return fpr_at_tpr(ev["test"]["msp"], _set(ev, name)["msp"])


# reported, not gated: 0 on most sound runs and heavy-tailed on the rest (docs/verdicts.md);
# ood_mean_confidence carries its signal to a gate
@_ood("ood_confident_share", "share of an OOD set predicted with >= 99% confidence (confident on garbage)", LOWER,
      resolution="image", gated=False)
def ood_confident_share(ev: Mapping, name) -> float:
    return float((np.asarray(_set(ev, name)["msp"]) >= CONFIDENT).mean())


@_ood("ood_mean_confidence", "mean top-class probability on an OOD set (how sure the model is of garbage)", LOWER,
      unit="probability", scale="logit")
def ood_mean_confidence(ev: Mapping, name) -> float:
    return float(np.mean(_set(ev, name)["msp"]))


@register("leakage_share", "leakage", "share of test images with a near-duplicate in the training split (a property "
          "of the data)", LOWER, "share", needs=("leakage",), paired=False)
def leakage_share(leak) -> float:
    return float(np.mean(leak.leaked))


@register("leaked_accuracy_gap", "leakage", "accuracy on the test images with a near-duplicate in training minus "
          "accuracy on the rest (what leakage inflates)", NEUTRAL, "share", needs=("test", "leakage"), paired=False,
          range_=(-1.0, 1.0), gated=False)
def leaked_accuracy_gap(s: Samples, leak) -> float:
    leaked = np.asarray(leak.leaked)
    if not leaked.any() or leaked.all():
        raise NotApplicable("no test image has a near-duplicate in training" if not leaked.any() else
                            "every test image has a near-duplicate in training")
    hit = s.hit
    return float(hit[leaked].mean() - hit[~leaked].mean())


def _conf(ev: Mapping, method: str) -> Mapping:
    return ev[method]


def _conformal(name, description, direction, unit="share", needs=("conformal",), **kw):
    return register(name, "conformal", description, direction, unit, needs=needs, paired=False, **kw)


def _margin(ev: Mapping, method: str) -> float:
    from ..conformal import coverage_floor

    covered = np.asarray(_conf(ev, method)["covered"])
    return float(covered.mean() - coverage_floor(int(ev["n_cal"]), len(covered), float(ev["alpha"])))


@_conformal("lac_coverage", "share of test images whose LAC prediction set (calibrated on the validation split) "
            "holds the true class", HIGHER, gated=False)
def lac_coverage(ev: Mapping) -> float:
    return float(np.mean(_conf(ev, "lac")["covered"]))


@_conformal("lac_coverage_margin", "LAC coverage minus the least a sound run reaches (1 in 10,000; "
            "conformal.coverage_floor): below 0, the guarantee failed",
            HIGHER, "share", range_=(-1.0, 1.0))
def lac_coverage_margin(ev: Mapping) -> float:
    return _margin(ev, "lac")


@_conformal("lac_set_size", "mean number of classes in the LAC prediction sets", LOWER, "score", range_=(0.0, np.inf))
def lac_set_size(ev: Mapping) -> float:
    return float(np.mean(_conf(ev, "lac")["size"]))


@_conformal("lac_max_set_size", "the largest LAC prediction set", LOWER, "count", gated=False)
def lac_max_set_size(ev: Mapping) -> float:
    return float(np.max(_conf(ev, "lac")["size"]))


@_conformal("aps_coverage", "share of test images whose APS prediction set holds the true class", HIGHER, gated=False)
def aps_coverage(ev: Mapping) -> float:
    return float(np.mean(_conf(ev, "aps")["covered"]))


@_conformal("aps_coverage_margin", "APS coverage minus the least a sound run reaches (1 in 10,000) for this many "
            "validation and test images at this alpha", HIGHER, "share", range_=(-1.0, 1.0))
def aps_coverage_margin(ev: Mapping) -> float:
    return _margin(ev, "aps")


@_conformal("aps_set_size", "mean number of classes in the APS prediction sets", LOWER, "score", range_=(0.0, np.inf))
def aps_set_size(ev: Mapping) -> float:
    return float(np.mean(_conf(ev, "aps")["size"]))


@_conformal("conformal_worst_class_coverage", "LAC coverage of the class it covers least (where guarantees break)",
            HIGHER, resolution=None)
def conformal_worst_class_coverage(ev: Mapping) -> float:
    covered, labels = np.asarray(_conf(ev, "lac")["covered"], dtype=float), np.asarray(ev["labels"])
    per = [covered[labels == c].mean() for c in np.unique(labels)]
    return float(min(per))


@_conformal("conformal_shift_coverage", "LAC coverage under the common corruptions at severity 3, mean over "
            "corruption kinds", HIGHER, needs=("conformal_shift",))
def conformal_shift_coverage(ev: Mapping) -> float:
    if not ev:
        raise NotApplicable("no corruption was run for this model")
    return float(np.mean([np.mean(v) for v in ev.values()]))
