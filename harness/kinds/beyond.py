"""Beyond the test set: OOD sets scored by the model (``harness/ood.py``), near-duplicates of
test images in training (``harness/leakage.py``), conformal prediction sets and their coverage
under corruption (``harness/conformal.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import stress
from ..evaluate import logits_of
from ..metrics import Samples
from . import recorder, register

OOD_BINS = np.linspace(0.0, 1.0, 21)  # the report's histograms of the maximum softmax probability
SHIFT_SEVERITY = 3  # conformal coverage under shift: every common corruption at this severity


def ood_names(data, settings) -> list[str]:
    """The OOD sets a model of ``data`` is measured on: the built-in ones the screen keeps
    (``ood.left_out`` says why any other is not used) and one's own."""
    from .. import ood

    gone = ood.left_out(data, settings.data_root, settings.ood_images, settings.cache_dir)
    names = [n for n in ood.builtin_names(data, settings.data_root) if n not in gone]
    return names + (["own"] if settings.ood_path else [])


def file_stamp(path: str) -> str:
    """What a user's OOD set is: its path, size and modification time (a change measures again)."""
    p = Path(path).expanduser()
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
    return f"{p}|" + "|".join(f"{q.name}:{q.stat().st_size}:{q.stat().st_mtime_ns}" for q in files[:5000])


def _fit_images(ev) -> int:
    """Training images the feature scores are fitted on: 5 per OOD image measured (5,000 at the
    smoke profile; fewer for a costly model on a CPU, like every measurement size)."""
    from .. import ood_features

    return min(ood_features.FIT_IMAGES, 5 * ev.settings.ood_images, len(ev.data.train_idx))


def _ood_context(ev) -> dict:
    from .. import ood_features

    s = ev.settings
    return {"ood_images": s.ood_images, "ood_path": s.ood_path and file_stamp(s.ood_path),
            "ood_sets": ood_names(ev.data, s), "fit_images": _fit_images(ev), "knn_k": ood_features.KNN_K}


@register("ood", ("ood.py", "ood_features.py"), remote=True, context=_ood_context,
          driver_only=lambda s: bool(s.ood_path),  # one's own set: files on the driver
          units=lambda ev: (len(ood_names(ev.data, ev.settings)) + 2, "set"),
          description="in-distribution scores of the test images and of every OOD set: from the logits (ood.scores) "
                      "and from the penultimate features (ood_features.scores)")
def ood(ev) -> dict:
    from .. import ood as ood_mod
    from .. import ood_features

    ev.samples("test")  # the test logits (evaluated here for a model the harness did not train)
    out = {"test": ood_mod.scores(ev.result.logits["test"].numpy())}
    s, data = ev.settings, ev.data
    feats = {}
    with ood_features.Tap(ev.model) as tap:
        train_pos = data.train_idx.numpy()[ood_features.fit_positions(data.train_y[data.train_idx].numpy(),
                                                                      _fit_images(ev))]
        logits_of(ev.model, data.train_x[torch.as_tensor(train_pos)], ev.device)
        fit_z, fit_y = tap.take(), data.train_y[torch.as_tensor(train_pos)]
        ev.tick(1)
        logits_of(ev.model, data.test_x, ev.device)  # the test images' features (their logits are the run's)
        feats["test"] = tap.take()
        ev.tick(1)
        for name, x in ood_mod.sets(data, s.data_root, s.ood_path, s.ood_images, s.cache_dir).items():
            out[name] = ood_mod.scores(logits_of(ev.model, x, ev.device).numpy())
            feats[name] = tap.take()
            ev.tick(1)
    if fit_z is not None:  # a model with a linear head: its penultimate features score too
        for name, sc in ood_features.scores(fit_z, fit_y, feats).items():
            out[name].update(sc)
    return out


def _leakage_units(ev) -> tuple[int, str]:
    from ..leakage import chunks

    return chunks(len(ev.data.test_y)), "chunk"


@register("leakage", ("leakage.py",), per_dataset=True, units=_leakage_units, evidence_classes=("harness.leakage:Leakage",),
          description="each test image's nearest training image (a property of the data)")
def leakage(ev):
    from .. import leakage as leakage_mod

    return leakage_mod.near_duplicates(ev.data.train_x, ev.data.test_x, tick=ev.tick)


@register("conformal", (), cheap=True,
          description="LAC, APS, randomised APS and RAPS prediction sets of the test images, calibrated on the "
                      "validation split")
def conformal(ev) -> dict:
    from .. import conformal as conformal_mod

    val, test = ev.samples("val"), ev.samples("test")
    alpha = ev.settings.conformal_alpha
    out = {"labels": test.labels, "alpha": alpha, "n_cal": len(val)}
    for method in conformal_mod.ALL_METHODS:
        if method in conformal_mod.METHODS:
            cal_scores = conformal_mod.scores(val.probs, val.labels, method)
            q = conformal_mod.threshold(cal_scores, alpha)
            fit = {"q": q, "n_cal": len(val), "ties": conformal_mod.ties_at(cal_scores, q)}
            inside = conformal_mod.sets(test.probs, q, method)
        else:
            fit = conformal_mod.fit_randomised(val.probs, val.labels, alpha, method)
            inside = conformal_mod.randomised_sets(test.probs, fit)
        out[method] = {**fit, "covered": inside[np.arange(len(test)), test.labels], "size": inside.sum(axis=1),
                       "sizes": np.bincount(inside.sum(axis=1), minlength=test.num_classes + 1)}
    return out


@register("conformal_shift", ("conformal.py", "stress.py", "corruptions", "filters.py", "perturb.py"), battery=True,
          remote=True, context=lambda ev: {"alpha": ev.settings.conformal_alpha},
          units=lambda ev: (len(ev.battery.corruptions), "corruption"),
          first=lambda ev: ("robustness",) if SHIFT_SEVERITY in ev.battery.severities else (),
          description="LAC coverage under each common corruption at severity 3")
def conformal_shift(ev) -> dict:
    """LAC coverage of the stressed subset under each common corruption at severity 3, with the
    threshold calibrated on the (unshifted) validation split. The class is in the set when
    1 - p_y <= q, so the robustness battery's outcomes at that severity (the same corrupted
    images) decide it; a battery without severity 3 corrupts the images here."""
    from .. import conformal as conformal_mod

    val = ev.samples("val")
    q = conformal_mod.calibrate(val.probs, val.labels, ev.settings.conformal_alpha, "lac")
    b = ev.battery
    if SHIFT_SEVERITY in b.severities:
        rob = ev.evidence("robustness")
        ev.tick(len(b.corruptions))
        return {name: 1.0 - np.exp(-rob[f"corruption/{name}/{SHIFT_SEVERITY}"].nll) <= q for name in b.corruptions}
    pos = ev.stress_positions()
    idx = torch.as_tensor(pos)
    x, y = ev.data.test_x[idx], ev.data.test_y[idx]
    logits = stress.run_corruptions_at(ev.model, x, b, ev.device, SHIFT_SEVERITY, pos, ev.data.full_test_size,
                                       tick=ev.tick)
    out = {}
    for name, z in logits.items():
        smp = Samples.from_logits(z.numpy(), y.numpy(), pos, keep_probs=True)
        out[name] = conformal_mod.sets(smp.probs, q, "lac")[np.arange(len(smp)), smp.labels]
    return out


@recorder("ood")
def ood_record(run, m: str) -> dict:
    """Per OOD set: AUROC and FPR at 95% TPR for each score, the share predicted with >= 99%
    confidence; and histograms of the maximum softmax probability, test vs each set."""
    ev = run.evaluation(m)
    if not ev.has("ood"):
        return {}
    from .. import ood

    found = ev.evidence("ood")
    test = found["test"]
    scores = [k for k in ood.SCORE_NAMES if k in test]  # the feature scores need a linear head
    sets = {}
    for name, sc in found.items():
        if name == "test":
            continue
        sets[name] = {"images": len(sc["msp"]), "group": ood.group(name),
                      "auroc": {k: ood.auroc(test[k], sc[k]) for k in scores if k in sc},
                      "fpr95": {k: ood.fpr_at_tpr(test[k], sc[k]) for k in scores if k in sc},
                      "confident_share": float((sc["msp"] >= ood.CONFIDENT).mean())}
    hist = {name: np.histogram(sc["msp"], OOD_BINS)[0].tolist() for name, sc in found.items()}
    return {"sets": sets, "histogram": {"edges": OOD_BINS.tolist(), "counts": hist}}


@recorder("conformal")
def conformal_record(run, m: str) -> dict:
    """Coverage and set sizes of each method, coverage per class, and under shift (LAC)."""
    ev, classes = run.evaluation(m), list(run.data.classes)
    if not ev.has("conformal"):
        return {}
    from .. import conformal as conformal_mod
    from ..conformal import coverage_floor
    from ..metrics.beyond import size_strata

    c = ev.evidence("conformal")
    labels = np.asarray(c["labels"])
    out = {"alpha": c["alpha"], "calibration_images": int(c["n_cal"]),
           "floor": coverage_floor(int(c["n_cal"]), len(labels), float(c["alpha"]))}
    for method in conformal_mod.ALL_METHODS:
        if method not in c:
            continue
        m = c[method]
        covered = np.asarray(m["covered"], dtype=float)
        size = np.asarray(m["size"])
        n_cal = int(m.get("n_cal", c["n_cal"]))
        out[method] = {"threshold": float(m["q"]), "coverage": float(covered.mean()),
                       "floor": coverage_floor(n_cal, len(labels), float(c["alpha"])),
                       "ceiling": conformal_mod.coverage_ceiling(n_cal, len(labels), float(c["alpha"])),
                       "calibration_images": n_cal, "tuning_images": int(m.get("n_tune", 0)),
                       "lam": m.get("lam"), "k_reg": m.get("k_reg"), "ties_at_threshold": int(m.get("ties", 0)),
                       "size_mean": float(np.mean(size)), "size_max": int(np.max(size)),
                       "size_histogram": np.asarray(m["sizes"]).tolist(),
                       "by_size": size_strata(covered, size),
                       "per_class": {classes[k]: float(covered[labels == k].mean()) for k in np.unique(labels)},
                       "size_per_class": {classes[k]: float(size[labels == k].mean()) for k in np.unique(labels)}}
    if ev.has("conformal_shift"):
        out["shift"] = {name: float(np.mean(v)) for name, v in ev.evidence("conformal_shift").items()}
    return out


@recorder("leakage")
def leakage_record(run, examples: int = 12) -> tuple[dict, dict | None]:
    """The near-duplicates between training and test (a property of the data), the accuracy of
    each model on them against the rest, and example pairs."""
    measured = [m for m in run.trained if run.evaluation(m).has("leakage")]
    if not measured:
        return {}, None
    leak = run.evaluation(measured[0]).evidence("leakage")
    leaked = np.flatnonzero(leak.leaked)
    order = leaked[np.argsort(-leak.similarity[leaked], kind="stable")]
    rec = {"threshold": leak.threshold, "count": int(len(leaked)), "share": float(len(leaked) / len(leak)),
           "exact": int(np.asarray(leak.exact).sum()),
           "pairs": [[int(i), int(leak.nearest[i]), float(leak.similarity[i])] for i in order[:examples]],
           "accuracy": {}}
    for m in run.trained:
        hit = run.samples(m).hit
        rec["accuracy"][m] = {"leaked": float(hit[leaked].mean()) if len(leaked) else None,
                              "rest": float(np.delete(hit, leaked).mean())}
    if not len(order):
        return rec, None
    from ..evaluate import to_float

    shown = order[:examples]
    data = run.data
    arrays = {"test": to_float(data.test_x[torch.as_tensor(shown)]).numpy(),
              "train": to_float(data.train_x[torch.as_tensor(leak.nearest[shown])]).numpy(),
              "test_ids": shown, "train_ids": np.asarray(leak.nearest[shown]),
              "similarity": np.asarray(leak.similarity[shown])}
    return rec, arrays
