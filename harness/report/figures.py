"""Report figures: matplotlib, headless (Agg canvas, no pyplot), one function per figure.

Every function takes measured data (numbers from the run record, or ``metrics.Samples``
rebuilt from the saved predictions, drawn with the registry's own helpers such as
``metrics.reliability``) and returns a ``matplotlib.figure.Figure``; ``render_png`` turns one
into PNG bytes. Nothing here touches the disk or the run record: ``plan.py`` decides which
figures a run gets, ``render.py`` renders them and records failures.

The figures reproduce the seed studies' plots: training curves (seed 000 Fig 2, seed 001
Figs 1 and 4), confidence histograms of wrong vs correct predictions (seed 001 Fig 6), wrong
predictions by confidence threshold (seed 001 Fig 7), per-class accuracy change (seed 001
Fig 8) and the Grad-CAM failure gallery (seed 000 Fig 1, seed 001 Figs 3 and 5); plus a
reliability diagram, a confusion matrix and a risk-coverage curve per run.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure

from .. import metrics
from ..metrics import Samples

DPI = 100
REJECT_BELOW = metrics.REJECT_BELOW
IMPROVED, REGRESSED = "#2ca02c", "#d62728"


def colours(names: Sequence[str]) -> dict[str, str]:
    """A stable colour per model (tab10 order): the baseline first gets blue everywhere."""
    cycle = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
    return {n: cycle[i % len(cycle)] for i, n in enumerate(names)}


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def render_png(fig: Figure, dpi: int = DPI) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _pct_axis(ax, axis: str = "y") -> None:
    from matplotlib.ticker import PercentFormatter

    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(PercentFormatter(1.0, decimals=None))


# ----------------------------------------------------------------------------- training


def training_curves(histories: Mapping[str, Sequence[Mapping]], best_epochs: Mapping[str, int | None] | None = None) -> Figure:
    """Loss and accuracy per epoch, train (solid) vs validation (dashed), every model."""
    histories = {m: h for m, h in histories.items() if h}
    if not histories:
        raise ValueError("no model has a training history")
    best_epochs = best_epochs or {}
    col = colours(list(histories))
    fig = new_figure(12, 5.0 + 0.25 * ((2 * len(histories) - 1) // 6))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for m, hist in histories.items():
        ep = [r["epoch"] for r in hist]
        for ax, key in ((ax_loss, "loss"), (ax_acc, "accuracy")):
            tr = [r.get(f"train_{key}", np.nan) for r in hist]
            va = [r.get(f"val_{key}", np.nan) for r in hist]
            ax.plot(ep, tr, "-", color=col[m], lw=1.8, marker="o" if len(ep) <= 12 else None, ms=3, label=f"{m} train")
            ax.plot(ep, va, "--", color=col[m], lw=1.8, marker="s" if len(ep) <= 12 else None, ms=3, label=f"{m} validation")
        best = best_epochs.get(m)
        if best is not None:
            row = next((r for r in hist if r["epoch"] == best), None)
            if row is not None and row.get("val_accuracy") is not None:
                ax_acc.plot([best], [row["val_accuracy"]], "*", color=col[m], ms=14, mec="black", mew=0.6, zorder=5)
    ax_loss.set(title="Loss", xlabel="epoch", ylabel="cross-entropy loss")
    ax_acc.set(title="Accuracy (star: kept checkpoint)", xlabel="epoch", ylabel="accuracy")
    _pct_axis(ax_acc)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    handles, labels = ax_loss.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 6), fontsize=9, frameon=False)
    fig.suptitle("Training curves: train (solid) vs validation (dashed)")
    return fig


# ----------------------------------------------------------------------------- calibration


def reliability_diagram(model: str, s: Samples, ece: float | None = None, ece_over: float | None = None,
                        ece_under: float | None = None) -> Figure:
    """Accuracy vs confidence in the 15 bins of metrics.ece, with the gap and bin counts;
    bars below the diagonal are overconfident, above it underconfident; the line is the
    equal-mass view (the 15 bins of metrics.adaptive_ece)."""
    rel = metrics.reliability(s)
    edges, count = rel["edges"], rel["count"]
    centres = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    full = count > 0
    acc = np.where(full, rel["accuracy"], 0.0)
    conf = np.where(full, rel["confidence"], centres)
    fig = new_figure(5.6, 6.2)
    ax, axc = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    lo, hi = np.minimum(acc, conf), np.maximum(acc, conf)
    c, g, b = centres[full], (hi - lo)[full], lo[full]
    ax.bar(c, g, bottom=b, width=width * 0.95, color=REGRESSED, alpha=0.25, lw=0, zorder=1)
    ax.bar(c, acc[full], width=width * 0.95, color="#1f77b4", edgecolor="black", lw=0.5, label="accuracy in bin", zorder=2)
    ax.bar(c, g, bottom=b, width=width * 0.95, fill=False, hatch="///", edgecolor=REGRESSED, lw=0.8, zorder=3,
           label="gap to mean confidence")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    # the equal-mass view (adaptive ECE's 15 bins, each about as many images): where the
    # images are, the curve is dense; a gap there is what adaptive_ece weighs
    from ..metrics.classification import ECE_BINS, equal_mass_bins

    idx = equal_mass_bins(s.conf)
    n_eq = np.bincount(idx, minlength=ECE_BINS)
    seen = n_eq > 0
    eq_conf = np.bincount(idx, weights=s.conf, minlength=ECE_BINS)[seen] / n_eq[seen]
    eq_acc = np.bincount(idx, weights=s.hit.astype(float), minlength=ECE_BINS)[seen] / n_eq[seen]
    adaptive = float(np.abs(eq_conf - eq_acc) @ n_eq[seen] / len(s))
    ax.plot(eq_conf, eq_acc, "o-", color="#ff7f0e", ms=4, lw=1.2, zorder=4,
            label=f"equal-mass bins (adaptive ECE {adaptive:.4f})")
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy")
    parts = [f"ECE {ece:.4f}" if ece is not None else "",
             f"over {ece_over:.4f}" if ece_over is not None else "", f"under {ece_under:.4f}" if ece_under is not None else ""]
    ax.set_title(f"Reliability: {model} ({len(s)} test images, 15 bins)\n{'   '.join(p for p in parts if p)}")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    _pct_axis(ax)
    axc.bar(centres, count, width=width * 0.95, color="#7f7f7f")
    axc.set_yscale("log")
    axc.set(xlabel="confidence (top-class probability)", ylabel="images")
    axc.grid(alpha=0.3)
    _pct_axis(axc, "x")
    return fig


def confidence_histograms(data: Mapping[str, Samples]) -> Figure:
    """Seed 001 Fig 6: confidence of wrong (left) and correct (right) predictions, per model."""
    col = colours(list(data))
    fig = new_figure(12, 4.4)
    ax_w, ax_c = fig.subplots(1, 2)
    bins = np.linspace(0, 1, 26)
    for m, smp in data.items():
        conf, hit = smp.conf, smp.hit
        for ax, sel in ((ax_w, ~hit), (ax_c, hit)):
            n = int(sel.sum())
            ax.hist(conf[sel], bins=bins, histtype="stepfilled", alpha=0.25, color=col[m])
            ax.hist(conf[sel], bins=bins, histtype="step", lw=1.8, color=col[m], label=f"{m} (n={n})")
    ax_w.set(title="Wrong predictions", xlabel="confidence", ylabel="images")
    ax_c.set(title="Correct predictions", xlabel="confidence", ylabel="images")
    for ax in (ax_w, ax_c):
        _pct_axis(ax, "x")
        ax.set_xlim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9, loc="upper left")
    fig.suptitle("Confidence of wrong vs correct predictions")
    return fig


def confident_errors(counts: Mapping[str, Sequence[int]], thresholds: Sequence[float], n_images: int) -> Figure:
    """Seed 001 Fig 7: wrong predictions made with confidence >= t (as measured: ``counts[m][i]``
    at ``thresholds[i]``), grouped bars per model."""
    names = list(counts)
    col = colours(names)
    fig = new_figure(max(8, 1.1 * len(thresholds) * max(1, len(names)) * 0.6 + 3), 4.6)
    ax = fig.subplots()
    x = np.arange(len(thresholds))
    w = 0.8 / len(names)
    top = max((max(c) for c in counts.values()), default=0)
    for i, m in enumerate(names):
        pos = x - 0.4 + w * (i + 0.5)
        bars = ax.bar(pos, counts[m], width=w, color=col[m], label=m, edgecolor="black", lw=0.4)
        if len(names) <= 4:
            ax.bar_label(bars, labels=[str(c) for c in counts[m]], fontsize=8, padding=2)
    ax.set_xticks(x, [f"≥{round(t * 100, 2):g}%" for t in thresholds])
    ax.set(xlabel="confidence threshold", ylabel="wrong predictions with confidence ≥ threshold",
           title=f"Wrong predictions by confidence threshold ({n_images} test images)")
    ax.set_ylim(0, top * 1.15 + 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    return fig


def risk_coverage(data: Mapping[str, Samples], aurcs: Mapping[str, float] | None = None,
                  coverages: Mapping[str, float] | None = None, max_points: int = 2000) -> Figure:
    """Risk (error rate of the kept predictions) vs coverage, most confident first."""
    col = colours(list(data))
    aurcs = aurcs or {}
    fig = new_figure(7, 5)
    ax = fig.subplots()
    coverages = coverages or {}
    for m, smp in data.items():
        cov, risk = metrics.risk_coverage(smp)
        step = max(1, len(cov) // max_points)
        idx = np.unique(np.r_[np.arange(0, len(cov), step), len(cov) - 1])
        a = aurcs.get(m)
        ax.plot(cov[idx], risk[idx], color=col[m], lw=1.8, label=m if a is None else f"{m} (AURC {a:.4f})")
        keep = coverages.get(m)
        if keep:
            i = min(len(cov) - 1, max(0, int(round(keep * len(cov))) - 1))
            ax.plot([cov[i]], [risk[i]], "o", color=col[m], mec="black", ms=7, zorder=5)
    ax.set(xlim=(0, 1), ylim=(0, None), xlabel="coverage (share of test images kept, most confident first)",
           ylabel="risk (error rate of kept images)", title=f"Risk-coverage (dot: reject below {REJECT_BELOW:.0%} confidence)")
    _pct_axis(ax, "x")
    _pct_axis(ax, "y")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    return fig


# ----------------------------------------------------------------------------- per class


def class_accuracy_change(classes: Sequence[str], base_acc: Sequence[float], cand_acc: Sequence[float],
                          baseline: str, candidate: str) -> Figure:
    """Seed 001 Fig 8: per-class accuracy, candidate minus baseline, sorted; green up, red down."""
    def arr(v):
        return np.asarray([np.nan if x is None else x for x in v], dtype=np.float64)

    delta = arr(cand_acc) - arr(base_acc)
    k = len(classes)
    if len(delta) != k:
        raise ValueError(f"{len(delta)} per-class accuracies for {k} classes")
    order = np.argsort(-np.nan_to_num(delta, nan=0.0), kind="stable")
    d = delta[order] * 100
    names = [classes[i] for i in order]
    cols = [IMPROVED if v > 0 else REGRESSED if v < 0 else "#7f7f7f" for v in np.nan_to_num(d)]
    better = int((delta > 0).sum())
    same = int((delta == 0).sum())
    worse = int((delta < 0).sum())
    title = (f"Per-class accuracy change: {candidate} minus {baseline}\n"
             f"{better} improved, {same} unchanged, {worse} regressed of {k} classes")
    if k <= 20:
        fig = new_figure(8, 1.2 + 0.38 * k)
        ax = fig.subplots()
        y = np.arange(k)
        bars = ax.barh(y, d, color=cols, edgecolor="black", lw=0.4)
        ax.bar_label(bars, labels=[f"{v:+.1f}" for v in d], fontsize=8, padding=2)
        ax.set_yticks(y, [short(n, 30) for n in names])
        ax.invert_yaxis()
        ax.axvline(0, color="black", lw=0.8)
        ax.set(xlabel="accuracy change (percentage points)", title=title)
        lim = max(1.0, float(np.nanmax(np.abs(d))) if k else 1.0)
        ax.set_xlim(-lim * 1.25, lim * 1.25)
        ax.grid(axis="x", alpha=0.3)
    else:
        fig = new_figure(min(max(10, 0.16 * k + 2), 24), 5.2)
        ax = fig.subplots()
        x = np.arange(k)
        ax.bar(x, d, color=cols, width=0.85 if k <= 150 else 1.0)
        if k <= 150:
            ax.set_xticks(x, [short(n, 18) for n in names], rotation=90, fontsize=6 if k <= 120 else 4)
        else:  # too many to name: the per-class table and per_class.csv do
            ax.set_xticks([])
            ax.set_xlabel(f"{k} classes, sorted by change (names in per_class.csv)")
        ax.set_xlim(-1, k)
        ax.axhline(0, color="black", lw=0.8)
        ax.set(ylabel="accuracy change (percentage points)", title=title)
        ax.grid(axis="y", alpha=0.3)
    return fig


def confusion_matrix(model: str, s: Samples, classes: Sequence[str]) -> Figure:
    """Row-normalised confusion matrix; counts written in the cells for <= 12 classes."""
    k = len(classes)
    cm = metrics.confusion(s)
    rows = cm.sum(1, keepdims=True)
    rate = np.divide(cm, np.maximum(rows, 1), dtype=np.float64)
    size = 7.5 if k <= 20 else 9
    fig = new_figure(size + 1.2, size)
    ax = fig.subplots()
    im = ax.imshow(rate, cmap="Blues", norm=PowerNorm(0.5, vmin=0, vmax=1), interpolation="nearest")
    cb = fig.colorbar(im, ax=ax, shrink=0.8)
    cb.set_label("share of the true class (sqrt colour scale)")
    if k <= 20:
        ax.set_xticks(np.arange(k), [short(c) for c in classes], rotation=45, ha="right", fontsize=9)
        ax.set_yticks(np.arange(k), [short(c) for c in classes], fontsize=9)
    else:
        step = 10 if k <= 200 else 50
        ax.set_xticks(np.arange(0, k, step))
        ax.set_yticks(np.arange(0, k, step))
    if k <= 12:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if rate[i, j] > 0.5 else "black")
    acc = np.trace(cm) / max(cm.sum(), 1)
    ax.set(xlabel="predicted class" + ("" if k <= 20 else " (index)"), ylabel="true class" + ("" if k <= 20 else " (index)"),
           title=f"Confusion matrix: {model} (accuracy {acc:.2%}, {int(cm.sum())} images)")
    return fig


# ----------------------------------------------------------------------------- Grad-CAM


def _as_hwc(img: np.ndarray) -> tuple[np.ndarray, str | None]:
    img = np.clip(np.asarray(img, dtype=np.float32), 0, 1)
    if img.ndim == 2:
        return img, "gray"
    if img.shape[0] == 1:
        return img[0], "gray"
    return np.transpose(img, (1, 2, 0)), None


def short(name: str, limit: int = 22) -> str:
    """A class or sample name cut to fit a figure (the full name is in the tables and CSVs)."""
    return name if len(name) <= limit else name[: limit - 1] + "…"


def sample_label(i: int, names: Mapping[str, str] | None = None) -> str:
    """``test #3640`` for the built-in sets; the file (or array row) for datasets of one's own."""
    return short((names or {}).get(str(int(i)), f"test #{int(i)}"), 30)


def gradcam_gallery(images: np.ndarray, ids: np.ndarray, labels: np.ndarray, classes: Sequence[str],
                    cams: Mapping[str, np.ndarray], preds: Mapping[str, np.ndarray],
                    confidences: Mapping[str, np.ndarray], alpha: float = 0.5,
                    names: Mapping[str, str] | None = None) -> Figure:
    """One row per sample: the image, then each model's Grad-CAM overlay titled
    ``test #ID: true -> pred (conf%)`` (green when right, red when wrong)."""
    models = list(cams)
    n = len(images)
    if n == 0:
        raise ValueError("the Grad-CAM gallery has no samples")
    cols = 1 + len(models)
    fig = new_figure(3.4 * cols, 2.8 * n + 0.4)
    axes = np.atleast_2d(fig.subplots(n, cols, squeeze=False))
    for r in range(n):
        img, cmap = _as_hwc(images[r])
        h, w = img.shape[:2]
        true = classes[int(labels[r])]
        ax = axes[r, 0]
        ax.imshow(img, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"{sample_label(ids[r], names)}\ntrue: {short(true)}", fontsize=9)
        for c, m in enumerate(models, start=1):
            ax = axes[r, c]
            ax.imshow(img, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            cam = np.asarray(cams[m][r], dtype=np.float32)
            ax.imshow(cam, cmap="jet", alpha=alpha, vmin=0, vmax=1, interpolation="bilinear",
                      extent=(-0.5, w - 0.5, h - 0.5, -0.5))
            p = int(preds[m][r])
            conf = float(confidences[m][r])
            ok = p == int(labels[r])
            ax.set_title(f"{m}\n{short(true)} -> {short(classes[p])} ({conf:.1%})", fontsize=9,
                         color=IMPROVED if ok else REGRESSED)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("Grad-CAM on failure cases (red title: wrong, green: right)", fontsize=11)
    return fig


# ----------------------------------------------------------------------------- robustness


def corruption_curves(curves: Mapping[str, Mapping[str, Sequence[float]]], clean: Mapping[str, float],
                      severities: Sequence[int]) -> Figure:
    """Accuracy against severity, one panel per corruption, a line per model (clean accuracy
    dashed). ``curves[model][corruption]`` = accuracies at ``severities``."""
    models = list(curves)
    col = colours(models)
    names = sorted({c for m in models for c in curves[m]})
    if not names:
        raise ValueError("no corruption curves")
    ncol = 5
    nrow = (len(names) + ncol - 1) // ncol
    fig = new_figure(3.0 * ncol, 2.5 * nrow + 0.8)
    axes = np.atleast_2d(fig.subplots(nrow, ncol, sharex=True, sharey=True, squeeze=False))
    for i, name in enumerate(names):
        ax = axes[i // ncol, i % ncol]
        for m in models:
            ys = curves[m].get(name)
            if ys is None:
                continue
            ax.plot(list(severities)[: len(ys)], ys, "-o", color=col[m], ms=3, lw=1.6, label=m)
            if clean.get(m) is not None:
                ax.axhline(clean[m], color=col[m], ls="--", lw=0.8)
        ax.set_title(name.replace("_", " "), fontsize=9)
        ax.set_ylim(0, 1)
        ax.set_xticks(list(severities))
        ax.grid(alpha=0.3)
        _pct_axis(ax)
    for j in range(len(names), nrow * ncol):
        axes[j // ncol, j % ncol].set_visible(False)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 6), fontsize=9, frameon=False)
    fig.suptitle("Accuracy against corruption severity (dashed: clean accuracy on the same images)")
    fig.supxlabel("severity", fontsize=9)
    return fig


def adversarial_curves(eps: Sequence[float], acc: Mapping[str, Mapping[str, Sequence[float]]],
                       clean: Mapping[str, float], reference: float | None = None) -> Figure:
    """Accuracy against the L-inf budget: FGSM (dashed) and PGD (solid) per model."""
    models = list(acc)
    col = colours(models)
    fig = new_figure(7.5, 4.8)
    ax = fig.subplots()
    xs = [0.0, *eps]
    for m in models:
        for attack, style in (("fgsm", "--s"), ("pgd", "-o")):
            ys = acc[m].get(attack)
            if ys is not None:
                ax.plot(xs, [clean.get(m, np.nan), *ys], style, color=col[m], ms=4, lw=1.6, label=f"{m} {attack.upper()}")
    if reference is not None:
        ax.axvline(reference, color="black", lw=0.8, ls=":")
    ax.set(xlabel="L-inf budget eps (pixel units in [0, 1])", ylabel="accuracy", ylim=(0, 1),
           title="Accuracy under attack (dotted: the reference budget the gates read)")
    _pct_axis(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def taxonomy_bars(counts: Mapping[str, Mapping[str, int]], modes: Sequence[str]) -> Figure:
    """Stacked bars: each model's confident errors by dominant failure mode."""
    models = list(counts)
    palette = ["#9467bd", "#8c564b", "#ff7f0e", "#17becf", "#c7c7c7"]
    fig = new_figure(max(6.0, 1.6 * len(models) + 3), 4.6)
    ax = fig.subplots()
    bottom = np.zeros(len(models))
    for i, mode in enumerate(modes):
        vals = np.array([counts[m].get(mode, 0) for m in models], dtype=float)
        bars = ax.bar(models, vals, bottom=bottom, color=palette[i % len(palette)], label=mode, edgecolor="black", lw=0.4)
        ax.bar_label(bars, labels=[str(int(v)) if v else "" for v in vals], label_type="center", fontsize=8)
        bottom += vals
    ax.set(ylabel="errors with confidence >= 90%", title="Confident errors by dominant failure mode")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return fig


def failure_mode_examples(images: np.ndarray, ids: np.ndarray, labels: np.ndarray, preds: np.ndarray,
                          confidences: np.ndarray, modes: Sequence[str], classes: Sequence[str], model: str,
                          names: Mapping[str, str] | None = None) -> Figure:
    """A row of example images per failure mode: ``test #id: true -> predicted (confidence)``."""
    order = list(dict.fromkeys(modes))
    per_row = max(sum(1 for m in modes if m == mode) for mode in order)
    fig = new_figure(2.4 * per_row + 1.6, 2.5 * len(order) + 0.5)
    axes = np.atleast_2d(fig.subplots(len(order), per_row, squeeze=False))
    for r, mode in enumerate(order):
        picks = [i for i, m in enumerate(modes) if m == mode]
        for c in range(per_row):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(picks):
                ax.set_visible(False)
                continue
            i = picks[c]
            img, cmap = _as_hwc(images[i])
            ax.imshow(img, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"{sample_label(ids[i], names)}: {short(classes[int(labels[i])], 14)}\n-> {short(classes[int(preds[i])], 14)} "
                         f"({float(confidences[i]):.0%})", fontsize=8, color=REGRESSED)
            if c == 0:
                ax.set_ylabel(mode, fontsize=9)
    fig.suptitle(f"{model}: confident errors by dominant failure mode (examples)", fontsize=11)
    return fig
