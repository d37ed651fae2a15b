"""An automatic failure taxonomy: one dominant mode for every confident error.

Seed 002 sorts failures by hand into scale, background and occlusion and calls automatic
categorisation future work. Here every error made with confidence >= ``THRESHOLD`` gets the
first mode whose measured signal fires, in this order:

1. ``ambiguous label``: confident learning (cleanlab's ``find_label_issues`` on the test
   split's out-of-sample probabilities) flags the label as likely wrong AND the labelled
   class is the model's runner-up: the image plausibly shows either of two classes (seed
   001's lobster vs crab). The flag alone is not enough: confident learning flags exactly
   the confident disagreements between model and label, so it fires for nearly every error
   made with >= 90% confidence (92% of the smoke baseline's).
2. ``background or context``: more than ``BORDER_MASS`` of the Grad-CAM heatmap of the
   predicted class lies in the outer band of the image (``BORDER`` of each side: 4 px of a
   28 px image, 49% of its pixels, so a uniform map puts 0.49 there): the model decided
   from the surroundings (seed 001: castle -> road, sea -> plain).
3. ``occlusion or part``: hiding one ``patch`` x ``patch`` square (any placement of the
   occlusion sweep) changes the wrong prediction: the decision rests on one small part, so
   a part missing or hidden in the image decides the class (seed 001: TV -> man).
4. ``scale``: down-sampling by 0.5 or 0.75 and back changes the prediction: the error
   depends on detail at one resolution (seed 002's dominant mode).
5. ``unexplained``: none of the signals fires.

Limits: the rules see only what these signals measure. A border-mass threshold cannot tell
an object that fills the frame from attention on the background; occlusion and rescaling
flips say that a local part or fine detail drives the decision, not that the image is
occluded or small; cleanlab's label-issue flags on a test split are estimates (they need
the model's probabilities to be reasonably calibrated); the order decides between modes
that fire together. The per-error signals are kept, so another reading is one query away.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import explain, perturb, stress
from .evaluate import to_float
from .metrics import Samples, most_confident_errors

THRESHOLD = 0.90
LIMIT = 500  # the most confident errors analysed per model (seed 000's baseline has 381 at >= 90%)
BORDER = 1 / 7
BORDER_MASS = 0.7
MODES = ("ambiguous label", "background or context", "occlusion or part", "scale", "unexplained")


@dataclass
class Taxonomy:
    """Per confident error (positions in the test split, most confident first); ``total``: the
    model's errors at >= THRESHOLD, of which the first ``len(positions)`` were analysed."""

    positions: np.ndarray
    modes: list[str]
    label_issue: np.ndarray
    runner_up_is_label: np.ndarray
    border_mass: np.ndarray
    occlusion_flip: np.ndarray
    scale_flip: np.ndarray
    total: int = 0

    def counts(self) -> dict[str, int]:
        return {m: self.modes.count(m) for m in MODES}

    def by_class(self, labels: np.ndarray, num_classes: int) -> np.ndarray:
        """(K, len(MODES)) counts of each mode among the errors on each true class."""
        out = np.zeros((num_classes, len(MODES)), dtype=np.int64)
        for pos, mode in zip(self.positions, self.modes):
            out[int(labels[pos]), MODES.index(mode)] += 1
        return out


def classify(label_issue, runner_up_is_label, border_mass, occlusion_flip, scale_flip) -> list[str]:
    """The dominant mode of each error from its signals (the rules of the module docstring)."""
    modes = []
    for li, ru, bm, of, sf in zip(label_issue, runner_up_is_label, border_mass, occlusion_flip, scale_flip):
        if li and ru:
            modes.append(MODES[0])
        elif np.isfinite(bm) and bm > BORDER_MASS:
            modes.append(MODES[1])
        elif of:
            modes.append(MODES[2])
        elif sf:
            modes.append(MODES[3])
        else:
            modes.append(MODES[4])
    return modes


def border_mass(maps: np.ndarray, band: float = BORDER) -> np.ndarray:
    """Share of each map's mass in the outer ``band`` of each side (NaN for an empty map)."""
    m = np.clip(np.asarray(maps, dtype=np.float64), 0, None)
    _, h, w = m.shape
    bh, bw = max(1, round(h * band)), max(1, round(w * band))
    inner = m[:, bh : h - bh, bw : w - bw].sum((1, 2))
    total = m.sum((1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 1.0 - inner / np.where(total > 0, total, 1), np.nan)


def label_issues(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """cleanlab's confident-learning label-issue mask for the whole split."""
    from cleanlab.filter import find_label_issues

    k = probs.shape[1]
    present = np.unique(labels)
    if len(present) < 2 or len(labels) < 2 * k:
        return np.zeros(len(labels), dtype=bool)  # too little data for confident learning
    return np.asarray(find_label_issues(labels, probs, n_jobs=1), dtype=bool)


def analyse(model: torch.nn.Module, s: Samples, probs: np.ndarray, test_x: torch.Tensor, device,
            patch: int = 8, stride: int = 4, limit: int | None = None) -> Taxonomy:
    """The taxonomy of a model's confident errors on the test split (``s`` and ``probs`` over
    the whole split, ``test_x`` its uint8 images)."""
    errors = most_confident_errors(s)
    errors = errors[s.conf[errors] >= THRESHOLD]
    total = len(errors)
    if limit is not None:
        errors = errors[:limit]
    issues = label_issues(probs, s.labels)[errors]
    p = probs[errors]
    runner = np.argsort(-p, axis=1)[:, 1] if len(errors) and p.shape[1] > 1 else np.zeros(len(errors), int)
    runner_up = runner == s.labels[errors]
    if len(errors) == 0:
        empty = np.zeros(0)
        return Taxonomy(errors, [], issues, runner_up, empty, empty.astype(bool), empty.astype(bool), total)
    x = to_float(test_x[torch.as_tensor(errors)].to(device))
    pred = torch.as_tensor(s.pred[errors], device=device)
    model = model.eval().to(device)
    maps = explain.gradcam(model, x, pred.tolist(), device)
    bmass = border_mass(maps)
    # occlusion: does hiding one square change the (wrong) prediction? The sweep measures the
    # probability of the class passed as "true": pass the prediction.
    occ = perturb.occlusion_sweep(model, x, pred, patch, stride)
    occlusion_flip = (~occ.worst_correct).cpu().numpy()
    with torch.no_grad():
        scale_flip = np.zeros(len(errors), dtype=bool)
        for f in stress.SCALES:
            scale_flip |= (model(perturb.rescale(x, f)).argmax(1) != pred).cpu().numpy()
    modes = classify(issues, runner_up, bmass, occlusion_flip, scale_flip)
    return Taxonomy(errors, modes, issues, runner_up, bmass, occlusion_flip, scale_flip, total)


def confused_pairs(s: Samples, top: int = 10) -> list[tuple[int, int, int]]:
    """The most confused class pairs, both directions together: (class a, class b, errors)."""
    k = s.num_classes
    cm = np.bincount(s.labels * k + s.pred, minlength=k * k).reshape(k, k)
    sym = cm + cm.T
    iu = np.triu_indices(k, 1)
    counts = sym[iu]
    order = np.argsort(-counts, kind="stable")[:top]
    return [(int(iu[0][i]), int(iu[1][i]), int(counts[i])) for i in order if counts[i] > 0]
