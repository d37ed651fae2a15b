"""Which figures a run gets, in which section, with their captions.

Each ``FigureSpec.make`` says what to draw (``Drawing``) from the record (what was measured) and the saved per-sample
predictions; the functions live in ``figures.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .. import metrics
from . import figures, figures_beyond, findings
from .io import ModelData, candidates, model_order, record_classes, stems

SECTIONS = {
    "key": "Key figures",
    "failures": "Failure cases",
    "robustness": "Robustness",
    "training": "Training",
    "selective": "Selective prediction",
    "classes": "Per-class behaviour",
    "beyond": "Beyond the test set",
}


@dataclass(frozen=True)
class Drawing:
    """A figure to draw: ``fn(*args, **kwargs)``, a function of ``figures.py`` on measured data
    (what the figure cache keys)."""

    fn: Callable
    args: tuple
    kwargs: dict

    def __call__(self):
        return self.fn(*self.args, **self.kwargs)

    def key(self) -> str:
        from .figcache import fingerprint

        return fingerprint(self.fn, self.args, self.kwargs)


def draw(fn: Callable, *args, **kwargs) -> Drawing:
    return Drawing(fn, args, kwargs)


@dataclass
class FigureSpec:
    name: str
    caption: str
    section: str
    make: Callable[[], Drawing]  # what to draw (its arguments computed when the figure is rendered)


def _m(record: dict, model: str, key: str):
    return ((record.get("models") or {}).get(model) or {}).get("metrics", {}).get(key)


def figure_plan(record: dict, data: dict[str, ModelData], gradcam: dict | None,
                failure_modes: dict | None = None, leakage: dict | None = None,
                weak: dict | None = None) -> list[FigureSpec]:
    """The figures a run gets. Each ``make`` looks its function up in ``figures`` when called."""
    specs: list[FigureSpec] = []
    models = record.get("models") or {}
    order = model_order(record)
    # every model a figure is named after, those the example files name too (a file's name, not a path)
    names = stems(list(dict.fromkeys([*order, *(failure_modes or {}), *(weak or {})])))
    base = record.get("baseline")
    samples = {m: d.samples for m, d in data.items()}

    counts = {m: models[m].get("confident_errors_by_threshold") for m in order}
    counts = {m: c for m, c in counts.items() if c}
    if counts:
        ts = sorted({t for c in counts.values() for t in c}, key=float)
        n_images = len(next(iter(data.values())).labels) if data else (record.get("run") or {}).get("data", {}).get("test")
        specs.append(FigureSpec(
            "confident_errors",
            "Wrong predictions made with confidence at or above each threshold: the higher the threshold, the more "
            "dangerous the error (seed 001 Fig 7).",
            "key", lambda: draw(figures.confident_errors, {m: [c.get(t, 0) for t in ts] for m, c in counts.items()},
                                                    [float(t) for t in ts], n_images or 0),
        ))
    if samples:
        specs.append(FigureSpec(
            "confidence_histograms",
            "Confidence of wrong (left) and correct (right) predictions. A well-behaved model is unsure when it "
            "is wrong and sure when it is right (seed 001 Fig 6).",
            "key", lambda: draw(figures.confidence_histograms, samples),
        ))
        for m, smp in samples.items():
            specs.append(FigureSpec(
                f"reliability_{names[m]}",
                f"Reliability diagram of {m}: accuracy vs mean confidence in 15 equal-width bins (the ECE bins); "
                "bars below the diagonal are overconfident (ece_over), above it underconfident (ece_under). "
                "Bottom: images per bin (log scale).",
                "key",
                lambda m=m, smp=smp: draw(figures.reliability_diagram, m, smp, _m(record, m, "ece"), _m(record, m, "ece_over"),
                                                                 _m(record, m, "ece_under")),
            ))
    if gradcam is not None:
        g = gradcam
        cam_models = [m for m in order if m in g["cams"]] + [m for m in g["cams"] if m not in order]
        specs.append(FigureSpec(
            "gradcam_gallery",
            "Grad-CAM of each model on the gallery's test images (red: attention), for the predicted class. "
            "Titles: test id, true class -> predicted class (confidence).",
            "failures",
            lambda: draw(figures.gradcam_gallery,
                g["images"], g["ids"], g["labels"],
                record_classes(record, max(len(record.get("classes") or []), 1 + int(max(
                    g["labels"].max(initial=0), *[p.max(initial=0) for p in g["preds"].values()])))),
                {m: g["cams"][m] for m in cam_models}, g["preds"], g["confidences"],
                names=record.get("sample_names")),
        ))
    rob = {m: models[m].get("robustness") or {} for m in order}
    curves = {m: {c: [cell["accuracy"] for cell in sevs] for c, sevs in (r.get("corruptions") or {}).items()}
              for m, r in rob.items() if r.get("corruptions")}
    if curves:
        levels = max(len(v) for c in curves.values() for v in c.values())
        sevs = findings.severities_of([rob[m] for m in curves], levels)
        specs.append(FigureSpec(
            "corruption_curves",
            f"Accuracy against severity ({', '.join(map(str, sevs))}) for every corruption and model, on the "
            "robustness subset; dashed: the same images without corruption.",
            "robustness",
            lambda: draw(figures.corruption_curves, curves, {m: rob[m]["clean"]["accuracy"] for m in curves}, sevs),
        ))
    adv = {m: r["adversarial"] for m, r in rob.items() if r.get("adversarial")}
    if adv:
        first = next(iter(adv.values()))
        specs.append(FigureSpec(
            "adversarial_curves",
            "Accuracy against the L-inf budget under FGSM (dashed) and 10-step PGD (solid), per model.",
            "robustness",
            lambda: draw(figures.adversarial_curves,
                first["epsilons"], {m: {a: [c["accuracy"] for c in a_[a]] for a in ("fgsm", "pgd")} for m, a_ in adv.items()},
                {m: a_["clean"]["accuracy"] for m, a_ in adv.items()}, first.get("reference_eps")),
        ))
    tax = {m: models[m]["taxonomy"] for m in order if (models[m].get("taxonomy") or {}).get("counts")}
    if tax:
        modes = next(iter(tax.values()))["modes"]
        specs.append(FigureSpec(
            "failure_taxonomy",
            "Errors made with >= 90% confidence, by the dominant failure mode the rules of harness/taxonomy.py "
            "assign (label doubt, background, one local part, resolution, none).",
            "failures", lambda: draw(figures.taxonomy_bars, {m: t["counts"] for m, t in tax.items()}, modes),
        ))
    for m, ex in (failure_modes or {}).items():
        specs.append(FigureSpec(
            f"failure_modes_{names[m]}",
            f"Examples of {m}'s confident errors for each failure mode (test id: true -> predicted, confidence).",
            "failures",
            lambda m=m, ex=ex: draw(figures.failure_mode_examples,
                ex["images"], ex["ids"], ex["labels"], ex["preds"], ex["confidences"], [str(v) for v in ex["modes"]],
                record_classes(record, max(len(record.get("classes") or []), 1 + int(max(ex["labels"].max(), ex["preds"].max())))),
                m, names=record.get("sample_names")),
        ))
    ood_h = {m: models[m]["ood"]["histogram"]["counts"] for m in order if (models[m].get("ood") or {}).get("histogram")}
    if ood_h:
        edges = next(models[m]["ood"]["histogram"]["edges"] for m in ood_h)
        specs.append(FigureSpec(
            "ood_confidence",
            "Maximum softmax probability of the test images (grey bars) and of each out-of-distribution set (lines): "
            "a model aware of what it has never seen keeps the sets to the left.",
            "beyond", lambda: draw(figures_beyond.ood_histograms, ood_h, edges),
        ))
    sizes = {m: {k: v["size_histogram"] for k, v in models[m]["conformal"].items() if isinstance(v, dict)
                 and "size_histogram" in v} for m in order if models[m].get("conformal")}
    if sizes:
        specs.append(FigureSpec(
            "conformal_set_sizes",
            "Sizes of the conformal prediction sets (calibrated on the validation split): at the same coverage, "
            "smaller sets are more useful; a set of one class is a confident answer.",
            "beyond", lambda: draw(figures_beyond.set_size_histograms, sizes),
        ))
    if leakage is not None and len(leakage.get("test_ids", [])):
        specs.append(FigureSpec(
            "leakage_pairs",
            "Test images (top) with a near-duplicate in the training split (bottom), most similar first (cosine of "
            "the mean-centred pixels).",
            "beyond", lambda: draw(figures_beyond.leakage_pairs, leakage["test"], leakage["train"], leakage["test_ids"],
                                                    leakage["train_ids"], leakage["similarity"]),
        ))
    by_prop = {m: models[m]["segments"]["by_property"] for m in order
               if (models[m].get("segments") or {}).get("by_property")}
    if by_prop:
        specs.append(FigureSpec(
            "accuracy_by_property",
            "Accuracy in each quantile bin of each image property (test split; bars: 95% Clopper-Pearson intervals; "
            "dotted: the model's accuracy on the whole test split). Properties: harness/segments.py.",
            "segments", lambda: draw(figures_beyond.accuracy_by_property, by_prop,
                                     {m: _m(record, m, "accuracy") for m in by_prop}),
        ))
    for m, ex in (weak or {}).items():
        rows = (models.get(m) or {}).get("segments", {}).get("segments") or []
        titles = [f"{r['name']}\n{r['images']} images, accuracy {100 * r['accuracy']:.1f}% "
                  f"(rest {100 * r['rest_accuracy']:.1f}%)" for r in rows]
        specs.append(FigureSpec(
            f"weak_segments_{names[m]}",
            f"Examples of {m}'s weakest segments, worst first (its errors there first; test id above each image).",
            "segments", lambda ex=ex, titles=titles: draw(figures_beyond.segment_examples, ex["images"], ex["ids"],
                                                          ex["segment"], titles, names=record.get("sample_names")),
        ))
    histories = {m: models[m].get("history") or [] for m in order}
    if any(histories.values()):
        specs.append(FigureSpec(
            "training_curves",
            "Training and validation loss (left) and accuracy (right) per epoch for every model; the star marks "
            "the epoch whose checkpoint was kept (best validation accuracy). Training figures are running means "
            "over augmented batches in train mode; the generalisation gap is measured in eval mode.",
            "training",
            lambda: draw(figures.training_curves, histories, {m: models[m].get("best_epoch") for m in order}),
        ))
    if samples:
        specs.append(FigureSpec(
            "risk_coverage",
            "Risk-coverage: error rate of the predictions kept when the least confident are rejected; the area "
            "under each curve is its AURC (lower is better).",
            "selective",
            lambda: draw(figures.risk_coverage, samples, {m: _m(record, m, "aurc") for m in samples},
                                          {m: _m(record, m, "selective_coverage") for m in samples}),
        ))
    if base in samples:
        for c in (c for c in candidates(record) if c in samples):
            specs.append(FigureSpec(
                f"class_delta_{names[c]}",
                f"Per-class accuracy change, {c} minus {base}, sorted. Green: improved, red: regressed "
                "(seed 001 Fig 8).",
                "classes",
                lambda c=c: draw(figures.class_accuracy_change,
                    record_classes(record, samples[base].num_classes),
                    models[base].get("per_class_accuracy") or metrics.class_recall(samples[base]),
                    models[c].get("per_class_accuracy") or metrics.class_recall(samples[c]), base, c),
            ))
    for m, smp in samples.items():
        specs.append(FigureSpec(
            f"confusion_{names[m]}",
            f"Confusion matrix of {m} on the test split, normalised by true class (rows).",
            "classes",
            lambda m=m, smp=smp: draw(figures.confusion_matrix, m, smp, record_classes(record, smp.num_classes)),
        ))
    return specs
