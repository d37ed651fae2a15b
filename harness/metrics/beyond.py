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


# The per-set grid (5 scores x every set x AUROC / FPR95) is reported, not gated: a set's AUROC on
# noise spreads over half its range between seeds of a sound recipe. The pooled far and near
# AUROC of each score (below) carry the gates.
@_ood("ood_auroc", "AUROC of the maximum softmax probability telling the test images (positive) from an OOD set",
      HIGHER, resolution="image", null=0.5, gated=False)
def ood_auroc(ev: Mapping, name) -> float:
    from ..ood import auroc

    return auroc(ev["test"]["msp"], _set(ev, name)["msp"])


@_ood("ood_fpr95", "share of an OOD set scored above the confidence that keeps 95% of the test images (FPR at 95% "
      "TPR)", LOWER, resolution="image", null=0.95, gated=False)
def ood_fpr95(ev: Mapping, name) -> float:
    from ..ood import fpr_at_tpr

    return fpr_at_tpr(ev["test"]["msp"], _set(ev, name)["msp"])


def _scored(ev: Mapping, name, score: str) -> tuple[np.ndarray, np.ndarray]:
    """(test images' scores, the set's) of one OOD score."""
    test, found = ev["test"], _set(ev, name)
    if score not in test or score not in found:
        raise NotApplicable(f"the {score} score needs the input of the model's last linear layer (its penultimate "
                            "features): this model has no nn.Linear")
    return test[score], found[score]


# The field's other scores (OpenOOD v1.5): the maximum logit and the energy from the logits, and
# two from the penultimate features (harness/ood_features.py: pytorch-ood's Mahalanobis and KNN).
# MSP's keep their names (ood_auroc, ood_fpr95).
OTHER_SCORES = {"maxlogit": "the maximum logit", "energy": "the energy (logsumexp of the logits)",
                "mahalanobis": "the features' Mahalanobis score", "knn": "the features' k-NN score"}


def _register_score(score: str, what: str) -> None:
    from ..ood import auroc, fpr_at_tpr

    @_ood(f"ood_auroc_{score}", f"AUROC of {what} telling the test images (positive) from an OOD set", HIGHER,
          resolution="image", null=0.5, gated=False)
    def _auroc(ev: Mapping, name) -> float:
        return auroc(*_scored(ev, name, score))

    @_ood(f"ood_fpr95_{score}", f"FPR at 95% TPR of {what}: the OOD share above the score keeping 95% of test images",
          LOWER, resolution="image", null=0.95, gated=False)
    def _fpr(ev: Mapping, name) -> float:
        return fpr_at_tpr(*_scored(ev, name, score))


for _score, _what in OTHER_SCORES.items():
    _register_score(_score, _what)


def _scores_of(plan) -> list[str]:
    """The OOD scores a run's models are judged by (the feature scores need a linear head:
    not applicable otherwise)."""
    from ..ood import SCORE_NAMES

    return list(SCORE_NAMES)


register_label_kind("ood_score", "ood_score", _scores_of)


def pooled_auroc(ev: Mapping, score: str, group: str) -> float:
    """AUROC of ``score`` telling the test images from the union of the measured OOD sets of one
    group (``far``: noise, blank and flat frames, shuffled tiles; ``near``: other domains of real
    images), each set weighed by its images (the built-in sets are equally large)."""
    from ..ood import auroc
    from ..ood import group as group_of

    sets = [name for name in ev if name != "test" and group_of(name) == group]
    if not sets:
        raise NotApplicable(f"no {group} OOD set was measured (their screen left none, or none is available)")
    test, pooled = _scored(ev, sets[0], score)
    pooled = [pooled] + [_scored(ev, name, score)[1] for name in sets[1:]]
    return auroc(test, np.concatenate(pooled))


def _register_pooled(group: str, sets: str) -> None:
    @register(f"ood_{group}_auroc", "ood", f"AUROC of one OOD score: test images (positive) against every {group} "
              f"set pooled ({sets})", HIGHER, "share", needs=("ood",), per="ood_score", paired=False,
              resolution="image", null=0.5)
    def _pooled(ev: Mapping, score) -> float:
        return pooled_auroc(ev, score, group)


_register_pooled("far", "noise, blank, flat frames, shuffled tiles")
_register_pooled("near", "digits, the sibling CIFAR, --ood")


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


# Per method (harness/conformal.py: lac, aps, aps_rand, raps), besides the coverage margins and
# mean set sizes above: the coverage ceiling (for continuous scores), the mean set size of the
# class with the largest sets, the coverage of the worst set-size stratum (size-stratified
# coverage, Angelopoulos et al. 2021: where a method fails) and of the worst class.
METHOD_NAMES = {"lac": "LAC", "aps": "plain APS", "aps_rand": "randomised APS", "raps": "RAPS"}
MIN_STRATUM = 50  # a set size is a stratum of the size-stratified coverage when this many test images have it
MIN_STRATUM_SHARE = 0.01  # ... or this share of them, whichever is more


def size_strata(covered, size) -> dict[str, dict]:
    """{stratum: {"images", "coverage"}} of the set sizes held by enough test images
    (``MIN_STRATUM``): "0-1" (an empty set, which a randomised method may give, is a set of at
    most one class, as in Angelopoulos et al.'s bins), then each size from 2."""
    covered, size = np.asarray(covered, dtype=float), np.asarray(size)
    need = max(MIN_STRATUM, int(np.ceil(MIN_STRATUM_SHARE * len(size))))
    out = {}
    for k in np.unique(np.maximum(size, 1)):
        inside = (size <= 1) if k == 1 else (size == k)
        if inside.sum() >= need:
            out["0-1" if k == 1 else str(int(k))] = {"images": int(inside.sum()),
                                                      "coverage": float(covered[inside].mean())}
    return out


def _ceiling_margin(ev: Mapping, method: str) -> float:
    from ..conformal import coverage_ceiling

    m = _conf(ev, method)
    if int(m.get("ties", 0)) > 1:
        raise NotApplicable(f"{int(m['ties'])} calibration scores tie at the threshold: the coverage is discrete and "
                            "may exceed 1 - alpha by more than the law allows (no ceiling holds)")
    covered = np.asarray(m["covered"])
    return float(coverage_ceiling(int(m.get("n_cal", ev["n_cal"])), len(covered), float(ev["alpha"])) - covered.mean())


def _register_method(method: str, new: bool) -> None:
    label = METHOD_NAMES[method]
    if new:  # lac and aps have theirs above (their names kept)
        @_conformal(f"{method}_coverage", f"share of test images whose {label} prediction set holds the true class",
                    HIGHER, gated=False)
        def _coverage(ev: Mapping) -> float:
            return float(np.mean(_conf(ev, method)["covered"]))

        @_conformal(f"{method}_coverage_margin", f"{label} coverage minus the least a sound run reaches "
                    "(coverage_floor): below 0, the guarantee failed", HIGHER, "share", range_=(-1.0, 1.0))
        def _margin_m(ev: Mapping) -> float:
            return _margin(ev, method)

        @_conformal(f"{method}_set_size", f"mean number of classes in the {label} prediction sets", LOWER, "score",
                    range_=(0.0, np.inf))
        def _size(ev: Mapping) -> float:
            return float(np.mean(_conf(ev, method)["size"]))

        @_conformal(f"{method}_worst_class_coverage", f"{label} coverage of the class it covers least", HIGHER)
        def _worst_cov(ev: Mapping) -> float:
            covered, labels = np.asarray(_conf(ev, method)["covered"], dtype=float), np.asarray(ev["labels"])
            return float(min(covered[labels == c].mean() for c in np.unique(labels)))

    # a guarantee only for continuous scores and sets that may be empty: APS without randomisation
    # keeps the class that crosses its threshold and RAPS always keeps the top class, so both may
    # over-cover by construction (reported, not gated)
    @_conformal(f"{method}_coverage_ceiling_margin", f"the most a sound run's {label} covers (coverage_ceiling) minus "
                "its coverage: below 0, sets larger than needed",
                HIGHER, "share", range_=(-1.0, 1.0), gated=method in ("lac", "aps_rand"))
    def _ceiling(ev: Mapping) -> float:
        return _ceiling_margin(ev, method)

    @_conformal(f"{method}_worst_class_set_size", f"mean {label} set size of the class with the largest sets", LOWER,
                "score", range_=(0.0, np.inf))
    def _worst_size(ev: Mapping) -> float:
        size, labels = np.asarray(_conf(ev, method)["size"], dtype=float), np.asarray(ev["labels"])
        return float(max(size[labels == c].mean() for c in np.unique(labels)))

    @_conformal(f"{method}_size_stratified_coverage", f"{label} coverage of the set size it covers least (sizes of "
                f">= {MIN_STRATUM} test images)", HIGHER)
    def _ssc(ev: Mapping) -> float:
        m = _conf(ev, method)
        strata = size_strata(m["covered"], m["size"])
        if not strata:
            raise NotApplicable("no set size is held by enough test images to be a stratum")
        return float(min(v["coverage"] for v in strata.values()))


for _method in METHOD_NAMES:
    _register_method(_method, new=_method not in ("lac", "aps"))


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
