"""Weak segments (evidence ``segments``: a ``harness.segments.Search`` over the test split;
``image_properties``: the properties of each split and their shift; harness/segments.py):

* weak_segment_accuracy_ratio = accuracy in the worst weak segment (the lowest accuracy among
  the segments whose excess of errors survives Holm's correction over every segment searched)
  divided by the whole test split's accuracy; 1 when no segment is weak;
* weak_segment_confident_error_rate = the share of that segment's images the model gets wrong
  with >= 99% confidence; 0 when no segment is weak;
* weak_segments, weak_segment_share = how many segments are weak, and the share of test images
  in any of them (reported);
* weak_segment_accuracy_change = a candidate's accuracy on the images of its baseline's worst
  weak segments (the ``segments.REPORTED`` worst, the ones the report shows) minus the baseline's accuracy there (did the improvement help where the baseline was
  weak?). The segments were chosen for the baseline's errors, so even a model as good as the
  baseline gains there (regression to the mean): its bound comes from sound candidates' spread;
* split_shifted_properties = image properties whose distribution differs between the training
  and the test split (KS distance, permutation test, Holm at 1%): a property of the data;
* new_images_shifted_properties = the same for a new batch of images (``--new-images``).
"""

from __future__ import annotations

from .registry import register, register_family
from .samples import HIGHER, LOWER, NEUTRAL, NotApplicable

register_family("segments", "weak segments: the kinds of images (dark, low-contrast, blurry, one source) a model "
                            "fails on, found with a multiple-testing correction; property shift between splits")


def _worst(found):
    if found.n == 0 or found.accuracy == 0:
        raise NotApplicable("the model gets no test image right: no segment is weaker than the whole")
    return found.worst


@register("weak_segment_accuracy_ratio", "segments", "accuracy in the worst weak segment (excess errors after Holm "
          "over all searched) over the whole split's; 1: none",
          HIGHER, "share", needs=("segments",), paired=False)
def weak_segment_accuracy_ratio(found) -> float:
    w = _worst(found)
    return 1.0 if w is None else float(w["accuracy"] / found.accuracy)


@register("weak_segment_confident_error_rate", "segments", "share of the worst weak segment's images wrong with "
          ">= 99% confidence (0: none is weak)", LOWER, "share", needs=("segments",), paired=False)
def weak_segment_confident_error_rate(found) -> float:
    w = _worst(found)
    return 0.0 if w is None else float(w["confident_error_rate"])


@register("weak_segments", "segments", "segments of the test split (property bins, metadata values, pairs) whose "
          "excess of errors survives Holm", NEUTRAL, "count", needs=("segments",), paired=False,
          gated=False)
def weak_segments(found) -> float:
    return float(len(found.segments))


@register("weak_segment_share", "segments", "share of test images in any weak segment", NEUTRAL, "share",
          needs=("segments",), paired=False, gated=False)
def weak_segment_share(found) -> float:
    return float(len(found.members(0)) / found.n) if found.n else 0.0


@register("weak_segment_accuracy_change", "segments", "a candidate's accuracy on its baseline's weak segments minus "
          "the baseline's there (> 0: it helps there)", HIGHER, "share",
          needs=("test", "baseline.test", "baseline.segments"), paired=False, range_=(-1.0, 1.0))
def weak_segment_accuracy_change(s, base, base_found) -> float:
    if s is base:
        raise NotApplicable("this model is the baseline: its own weak segments")
    if not base_found.segments:
        raise NotApplicable("the baseline has no weak segment")
    union = base_found.members()
    return float(s.hit[union].mean() - base.hit[union].mean())


def _shifted(props, split: str) -> float:
    if split not in props["shift"]:
        raise NotApplicable("no new batch of images (--new-images PATH compares one with the training split)")
    return float(sum(bool(r["shifted"]) for r in props["shift"][split].values()))


@register("split_shifted_properties", "segments", "image properties whose distribution differs between the training "
          "and test splits (KS, permutation test, Holm at 1%)", LOWER, "count",
          needs=("image_properties",), paired=False)
def split_shifted_properties(props) -> float:
    return _shifted(props, "test")


@register("new_images_shifted_properties", "segments", "image properties of a new batch (--new-images) whose "
          "distribution left the training split's (KS, Holm at 1%)", LOWER, "count",
          needs=("image_properties",), paired=False)
def new_images_shifted_properties(props) -> float:
    return _shifted(props, "new")
