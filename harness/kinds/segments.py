"""Weak segments (``harness/segments.py``): the image properties of the test split, of a sample
of the training split and of a new batch (a property of the data, computed once per dataset),
their shift between splits, and per model the segments of the test split where it fails more
than chance allows."""

from __future__ import annotations

import functools

import numpy as np
import torch

from .. import segments as seg
from . import recorder, register
from .beyond import file_stamp

EXAMPLES = 4  # example images per weak segment in the report


def _properties_context(ev) -> dict:
    return {"train_images": seg.TRAIN_IMAGES, "shift_images": seg.SHIFT_IMAGES, "permutations": seg.PERMUTATIONS,
            "new_images": ev.settings.new_images and file_stamp(ev.settings.new_images)}


def _shift_sample(props: dict, seed: int) -> dict:
    n = len(next(iter(props.values())))
    pos = seg.sample_positions(n, seg.SHIFT_IMAGES, seed)
    return {k: v[pos] for k, v in props.items()}


@register("image_properties", ("segments.py",), per_dataset=True, context=_properties_context,
          units=lambda ev: (3 if ev.settings.new_images else 2, "split"),
          description="brightness, contrast, sharpness, entropy, foreground and extent (and colour) of every test "
                      "image, of a sample of training images and of a new batch; their shift from training")
def image_properties(ev) -> dict:
    data = ev.data
    out = {"test": seg.properties(data.test_x, tick=ev.tick)}
    pos = data.train_idx.numpy()[seg.sample_positions(len(data.train_idx), seg.TRAIN_IMAGES)]
    out["train"] = seg.properties(data.train_x[torch.as_tensor(pos)], tick=ev.tick)
    train = _shift_sample(out["train"], 1)
    out["shift"] = {"test": seg.shift(train, _shift_sample(out["test"], 2))}
    if ev.settings.new_images:
        x = seg.load_new_images(ev.settings.new_images, data.image_shape)
        out["new"] = seg.properties(x, tick=ev.tick)
        out["shift"]["new"] = seg.shift(train, _shift_sample(out["new"], 3))
    return out


@functools.lru_cache(maxsize=4)
def _metadata(path: str, stamp: str, names: tuple[str, ...] | None, n_test: int) -> dict[str, np.ndarray]:
    """The metadata CSV's columns, read once per file version (``stamp``) for every model."""
    return seg.read_metadata(path, names, n_test)


def test_columns(ev) -> dict[str, np.ndarray]:
    """What the search segments by, in the order of the model's test outcomes: the test images'
    properties and the metadata columns (each looked up by the image's test id)."""
    cols = {k: np.asarray(v) for k, v in ev.evidence("image_properties")["test"].items()}
    path = ev.settings.segment_metadata
    if path:
        meta = _metadata(path, file_stamp(path), ev.data.test_names, len(ev.data.test_y))
        cols.update({f"meta:{k}": v for k, v in meta.items()})
    ids = np.asarray(ev.samples("test").ids)
    return {k: v[ids] for k, v in cols.items()}


@register("segments", (), cheap=True,
          description="the weak segments of the test split: property bins, metadata values and their pairwise "
                      "intersections holding more errors than chance (Fisher's exact test, Holm over all searched)")
def segments(ev) -> seg.Search:
    test = ev.samples("test")  # its positions are the search's
    return seg.search(seg.candidates(test_columns(ev), len(test)), test.hit, test.conf)


@recorder("segments")
def segments_record(run, m: str) -> tuple[dict, dict | None]:
    """The weak segments of one model (worst first, with intervals and a few example images: its
    errors there), its accuracy in each property bin, and for a candidate its accuracy on the
    baseline's weak segments against the baseline's."""
    ev = run.evaluation(m)
    if not ev.has("segments"):
        return {}, None
    found = ev.evidence("segments")
    test = ev.samples("test")
    ids = np.asarray(test.ids)
    rows, shown = [], []
    for s in found.segments[:seg.REPORTED]:
        members = np.asarray(s["members"])  # positions in the test outcomes
        wrong = members[~test.hit[members]]
        pick = ids[(wrong if len(wrong) >= EXAMPLES else members)[:EXAMPLES]]
        shown.append(pick)
        rows.append({k: v for k, v in s.items() if k != "members"} | {"examples": [int(x) for x in pick]})
    out = {"searched": found.searched, "min_size": found.min_size, "alpha": seg.ALPHA, "accuracy": found.accuracy,
           "weak": len(found.segments), "weak_images": int(len(found.members(0))), "segments": rows,
           "by_property": seg.accuracy_by_bin(test_columns(ev), test.hit)}
    base = run.plan.baseline_of(m)
    if base != m and base in run.trained and run.evaluation(base).has("segments"):
        union = run.evaluation(base).evidence("segments").members()
        out["on_baseline_weak"] = {"baseline": base, "images": int(len(union))}
        if len(union):
            out["on_baseline_weak"].update(baseline_accuracy=float(run.samples(base).hit[union].mean()),
                                           accuracy=float(test.hit[union].mean()))
    if not shown:
        return out, None
    from ..evaluate import to_float

    flat = np.concatenate(shown)
    arrays = {"images": to_float(run.data.test_x[torch.as_tensor(flat)]).numpy(), "ids": flat,
              "segment": np.concatenate([np.full(len(v), i) for i, v in enumerate(shown)])}
    return out, arrays


@recorder("image_properties", key="property_shift")
def shift_record(run) -> dict:
    """Per property: its shift from the training split to the test split (and a new batch)."""
    measured = [m for m in run.trained if run.evaluation(m).has("image_properties")]
    if not measured:
        return {}
    props = run.evaluation(measured[0]).evidence("image_properties")
    return {"alpha": seg.SHIFT_ALPHA, "permutations": seg.PERMUTATIONS, "images": seg.SHIFT_IMAGES,
            "splits": {name: {k: dict(v) for k, v in rows.items()} for name, rows in props["shift"].items()}}
