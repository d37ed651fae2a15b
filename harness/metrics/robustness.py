"""Robustness metrics: accuracy, calibration and confident errors under the stresses of
``harness/stress.py`` (corruptions, attacks, occlusion, scale, position), and invariance."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from .classification import accuracy, ece, ece_over
from .registry import register, register_family
from .samples import HIGHER, LOWER, NotApplicable, Samples, confident_errors_at

register_family("robustness", "corruption, adversarial, occlusion, scale and position stress tests")
register_family("invariance", "predictions that a transformation which keeps the class must not change")

# ---------------------------------------------------------------------------- robustness
# Evidence ``robustness``: {condition: Samples} on one seeded subset of the test split (the
# same images for every model); ``adversarial``: the same for the attacks, on the first
# images of that subset; conditions are named in harness/stress.py. E_{c,s} = 1 - accuracy
# under corruption c at severity s; E_clean the error on the same images without stress.


def _condition(ev: Mapping, name: str) -> Samples:
    if name not in ev:
        raise NotApplicable(f"the stress {name!r} was not run for this model")
    return ev[name]


def severities_run(ev: Mapping) -> list[int]:
    """The corruption severities in robustness evidence, in order (1-5; 1, 3, 5 for a costly
    model on a CPU: ``cards.severities_for``)."""
    return sorted({int(k.split("/")[2]) for k in ev if k.startswith("corruption/")})


def corruption_table(ev: Mapping) -> dict[str, list[Samples]]:
    """{corruption: [Samples at each severity run, in order]} from robustness evidence."""
    out: dict[str, dict[int, Samples]] = {}
    for key, smp in ev.items():
        if key.startswith("corruption/"):
            _, name, sev = key.split("/")
            out.setdefault(name, {})[int(sev)] = smp
    if not out:
        raise NotApplicable("no corruption was run for this model")
    return {name: [sevs[k] for k in sorted(sevs)] for name, sevs in out.items()}


def _mean_over(ev: Mapping, prefix: str, fn: Callable[[Samples], float]) -> float:
    found = [fn(v) for k, v in ev.items() if k.startswith(prefix)]
    if not found:
        raise NotApplicable(f"no {prefix.rstrip('/')} stress was run for this model")
    return float(np.mean(found))


def flip_share(s: Samples, clean: Samples) -> float:
    """Share of images whose prediction differs from the unstressed prediction."""
    return float((s.pred != clean.pred).mean())


def _flips(ev: Mapping, prefix: str) -> float:
    clean = _condition(ev, "clean")
    return _mean_over(ev, prefix, lambda s: flip_share(s, clean))


def _robust(name, description, direction=HIGHER, unit="share", needs=("robustness",), family="robustness",
            paired=True, **kwargs):
    return register(name, family, description, direction, unit, needs=needs, paired=paired, **kwargs)


@_robust("clean_accuracy", "accuracy on the robustness subset without stress (the reference for the stresses)", gated=False)
def clean_accuracy(ev: Mapping) -> float:
    return accuracy(_condition(ev, "clean"))


@_robust("corruption_accuracy", "accuracy under the common corruptions, mean over every kind and severity run (1-5)")
def corruption_accuracy(ev: Mapping) -> float:
    return float(np.mean([accuracy(s) for sevs in corruption_table(ev).values() for s in sevs]))


@_robust("mean_corruption_error", "error under the common corruptions: mean over kinds of the mean over "
         "severities (unnormalised mCE)", LOWER)
def mean_corruption_error(ev: Mapping) -> float:
    return float(np.mean([np.mean([1 - accuracy(s) for s in sevs]) for sevs in corruption_table(ev).values()]))


@_robust("worst_corruption_accuracy", "accuracy under the corruption kind that hurts most (mean over severities)")
def worst_corruption_accuracy(ev: Mapping) -> float:
    return float(min(np.mean([accuracy(s) for s in sevs]) for sevs in corruption_table(ev).values()))


@_robust("corruption_ece", "ECE under the common corruptions, mean over every kind and severity", LOWER,
         "probability")
def corruption_ece(ev: Mapping) -> float:
    return float(np.mean([ece(s) for sevs in corruption_table(ev).values() for s in sevs]))


@_robust("corruption_ece_over", "the overconfident part of the ECE under the common corruptions, mean over every "
         "kind and severity", LOWER,
         "probability")
def corruption_ece_over(ev: Mapping) -> float:
    return float(np.mean([ece_over(s) for sevs in corruption_table(ev).values() for s in sevs]))


@_robust("corruption_confident_error_rate", "share of corrupted images predicted wrong with confidence >= 90%, "
         "mean over every kind and severity", LOWER)
def corruption_confident_error_rate(ev: Mapping) -> float:
    return float(np.mean([confident_errors_at(s, 0.9) / len(s) for sevs in corruption_table(ev).values()
                          for s in sevs]))


def _register_corruption_mean(corruption: str, label: str) -> None:
    def fn(ev: Mapping) -> float:
        sevs = corruption_table(ev).get(corruption)
        if not sevs:
            raise NotApplicable(f"the corruption {corruption!r} was not run for this model")
        return float(np.mean([accuracy(s) for s in sevs]))

    _robust(f"{label}_accuracy", f"accuracy under {corruption.replace('_', ' ')}, mean over the severities run (1-5)")(fn)


for _c, _label in (("gaussian_noise", "noise"), ("brightness", "brightness"), ("contrast", "contrast")):
    _register_corruption_mean(_c, _label)


def _ce_ratio(ev: Mapping, base: Mapping, relative: bool) -> float:
    mine, theirs = corruption_table(ev), corruption_table(base)
    e_clean = 1 - accuracy(_condition(ev, "clean"))
    b_clean = 1 - accuracy(_condition(base, "clean"))
    ratios = []
    for name, sevs in mine.items():
        if name not in theirs:
            continue
        num = sum(1 - accuracy(s) - (e_clean if relative else 0.0) for s in sevs)
        den = sum(1 - accuracy(s) - (b_clean if relative else 0.0) for s in theirs[name])
        if den > 0:
            ratios.append(num / den)
    if not ratios:
        raise NotApplicable("the baseline's corruption errors are all zero (or, relative, no worse than clean)")
    return float(np.mean(ratios))


@_robust("corruption_mce", "mean corruption error normalised by the run's baseline (mCE; baseline = 1)", LOWER,
         "score", needs=("robustness", "baseline.robustness"), paired=False, range_=(0.0, math.inf))
def corruption_mce(ev: Mapping, base: Mapping) -> float:
    """mCE = mean_c (sum_s E_{c,s} / sum_s E^baseline_{c,s}). Hendrycks & Dietterich normalise by
    AlexNet, which means nothing for these models: the run's baseline is the reference."""
    return _ce_ratio(ev, base, relative=False)


@_robust("relative_corruption_mce", "relative mCE: the drop from clean error, normalised by the baseline's "
         "drop (baseline = 1)", LOWER, "score", needs=("robustness", "baseline.robustness"), paired=False)
def relative_corruption_mce(ev: Mapping, base: Mapping) -> float:
    """mean_c (sum_s (E_{c,s} - E_clean) / sum_s (E^b_{c,s} - E^b_clean))."""
    return _ce_ratio(ev, base, relative=True)


@_robust("occlusion_accuracy", "accuracy with a grey square at each image's worst placement (occlusion sweep)")
def occlusion_accuracy(ev: Mapping) -> float:
    return accuracy(_condition(ev, "occlusion"))


@_robust("occlusion_flip_share", "share of predictions changed by a grey square at the worst placement", LOWER)
def occlusion_flip_share(ev: Mapping) -> float:
    return flip_share(_condition(ev, "occlusion"), _condition(ev, "clean"))


@_robust("scale_accuracy", "accuracy at lower effective resolution (down-sampled by 0.5 and 0.75 and back)")
def scale_accuracy(ev: Mapping) -> float:
    return _mean_over(ev, "scale/", accuracy)


@_robust("scale_flip_share", "share of predictions changed by lowering the effective resolution", LOWER)
def scale_flip_share(ev: Mapping) -> float:
    return _flips(ev, "scale/")


@_robust("shift_accuracy", "accuracy with the image moved by 1-4 pixels (mean over distances)")
def shift_accuracy(ev: Mapping) -> float:
    return _mean_over(ev, "shift/", accuracy)


@_robust("shift_flip_share", "share of predictions changed by moving the image 1-4 pixels", LOWER)
def shift_flip_share(ev: Mapping) -> float:
    return _flips(ev, "shift/")


@_robust("rotation_accuracy", "accuracy with the image rotated by 5-15 degrees (mean over angles)")
def rotation_accuracy(ev: Mapping) -> float:
    return _mean_over(ev, "rotate/", accuracy)


@_robust("rotation_flip_share", "share of predictions changed by a 5-15 degree rotation", LOWER)
def rotation_flip_share(ev: Mapping) -> float:
    return _flips(ev, "rotate/")


@_robust("shift1_flip_share", "invariance: share of predictions a one-pixel shift changes", LOWER,
         family="invariance")
def shift1_flip_share(ev: Mapping) -> float:
    return flip_share(_condition(ev, "shift/1"), _condition(ev, "clean"))


@_robust("hflip_flip_share", "invariance: share of predictions a horizontal flip changes (classes a flip keeps)",
         LOWER, family="invariance")
def hflip_flip_share(ev: Mapping) -> float:
    if "hflip" not in ev:
        raise NotApplicable("a flip is not known to keep this dataset's classes (flip_invariant is off)")
    return flip_share(ev["hflip"], _condition(ev, "clean"))


@_robust("fgsm_accuracy", "accuracy under an FGSM attack at the dataset's reference budget (L-inf)",
         needs=("adversarial",))
def fgsm_accuracy(ev: Mapping) -> float:
    return accuracy(_condition(ev, "fgsm"))


@_robust("pgd_accuracy", "accuracy under a 10-step PGD attack at the dataset's reference budget (L-inf)",
         needs=("adversarial",))
def pgd_accuracy(ev: Mapping) -> float:
    return accuracy(_condition(ev, "pgd"))


@_robust("pgd_confident_error_rate", "share of attacked images (PGD, reference budget) predicted wrong with "
         "confidence >= 90%", LOWER, needs=("adversarial",))
def pgd_confident_error_rate(ev: Mapping) -> float:
    s = _condition(ev, "pgd")
    return confident_errors_at(s, 0.9) / len(s)


@_robust("autoattack_accuracy", "accuracy under AutoAttack (APGD-CE, APGD-T, FAB-T, Square) at the reference "
         "budget (L-inf)", needs=("autoattack",))
def autoattack_accuracy(ev: Mapping) -> float:
    return accuracy(ev["autoattack"])


@_robust("pgd_autoattack_gap", "PGD-10 accuracy minus AutoAttack accuracy on the same images: a large gap flags "
         "gradient masking", LOWER, needs=("adversarial", "autoattack"),
         paired=False, range_=(-1.0, 1.0))
def pgd_autoattack_gap(adv: Mapping, aa: Mapping) -> float:
    pgd = _condition(adv, "pgd")
    n = len(aa["autoattack"])
    if len(pgd) < n or not np.array_equal(pgd.ids[:n], aa["autoattack"].ids):
        raise NotApplicable("PGD and AutoAttack were not run on the same images")
    return accuracy(pgd.take(np.arange(n))) - accuracy(aa["autoattack"])
