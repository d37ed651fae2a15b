"""Report figures beyond the test set: OOD score histograms, conformal set sizes, leakage pairs
(the same conventions as ``figures.py``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from .figures import _as_hwc, _pct_axis, colours, new_figure, short


def ood_histograms(hists: Mapping[str, Mapping], edges: Sequence[float]) -> Figure:
    """Per model: the maximum softmax probability of the test images (filled) and of each OOD
    set (lines), as shares of their images."""
    models = list(hists)
    fig = new_figure(4.2 * len(models), 3.0)
    centers = (np.asarray(edges[:-1]) + np.asarray(edges[1:])) / 2
    for i, m in enumerate(models):
        ax = fig.add_subplot(1, len(models), i + 1)
        counts = hists[m]
        test = np.asarray(counts["test"], dtype=float)
        ax.bar(centers, test / max(test.sum(), 1), width=np.diff(edges), color="#bbbbbb", label="test (in-distribution)")
        for name, c in counts.items():
            if name == "test":
                continue
            c = np.asarray(c, dtype=float)
            ax.plot(centers, c / max(c.sum(), 1), marker=".", lw=1, label=name)
        ax.set_title(short(m), fontsize=9)
        ax.set_xlabel("maximum softmax probability")
        _pct_axis(ax)
        if i == 0:
            ax.set_ylabel("share of images")
            ax.legend(fontsize=6)
    return fig


def set_size_histograms(sizes: Mapping[str, Mapping[str, Sequence[int]]]) -> Figure:
    """Per method: the distribution of conformal prediction-set sizes, one bar group per model."""
    methods = sorted({meth for v in sizes.values() for meth in v})
    fig = new_figure(4.2 * len(methods), 3.0)
    col = colours(list(sizes))
    for i, meth in enumerate(methods):
        ax = fig.add_subplot(1, len(methods), i + 1)
        width = 0.8 / max(len(sizes), 1)
        for j, (m, per) in enumerate(sizes.items()):
            h = np.asarray(per.get(meth, []), dtype=float)
            if not len(h):
                continue
            ax.bar(np.arange(len(h)) + j * width, h / max(h.sum(), 1), width=width, color=col[m], label=short(m))
        ax.set_title(f"{meth.upper()} set sizes", fontsize=9)
        ax.set_xlabel("classes in the set")
        _pct_axis(ax)
        if i == 0:
            ax.set_ylabel("share of test images")
            ax.legend(fontsize=7)
    return fig


def leakage_pairs(test: np.ndarray, train: np.ndarray, test_ids: np.ndarray, train_ids: np.ndarray,
                  similarity: np.ndarray) -> Figure:
    """Test images (top) and their nearest training images (bottom), with the cosine."""
    n = len(test)
    fig = new_figure(1.1 * max(n, 2), 2.6)
    for i in range(n):
        for row, (img, label) in enumerate(((test[i], f"test #{int(test_ids[i])}\n{similarity[i]:.4f}"),
                                            (train[i], f"train #{int(train_ids[i])}"))):
            ax = fig.add_subplot(2, n, row * n + i + 1)
            shown, cmap = _as_hwc(img)
            ax.imshow(shown, cmap=cmap, vmin=0, vmax=1)
            ax.set_title(label, fontsize=6)
            ax.axis("off")
    return fig


def accuracy_by_property(per_model: Mapping[str, Mapping[str, Mapping]], overall: Mapping[str, float]) -> Figure:
    """One small plot per image property: each model's accuracy in each quantile bin (or value),
    with its Clopper-Pearson interval, and its whole-test accuracy (dotted)."""
    props = list(dict.fromkeys(p for v in per_model.values() for p in v))
    cols = min(len(props), 4) or 1
    rows = (len(props) + cols - 1) // cols
    fig = new_figure(3.0 * cols, 2.3 * rows)
    col = colours(list(per_model))
    for i, p in enumerate(props):
        ax = fig.add_subplot(rows, cols, i + 1)
        for m, by in per_model.items():
            if p not in by:
                continue
            b = by[p]
            x = np.arange(len(b["accuracy"]))
            acc, lo, hi = (np.asarray(b[k], dtype=float) for k in ("accuracy", "lo", "hi"))
            ax.errorbar(x, acc, yerr=[acc - lo, hi - acc], color=col[m], marker=".", lw=1, capsize=2, label=short(m))
            if overall.get(m) is not None:
                ax.axhline(overall[m], color=col[m], ls=":", lw=0.8)
        labels = per_model[next(m for m in per_model if p in per_model[m])][p]["labels"]
        ax.set_xticks(np.arange(len(labels)))
        ax.set_xticklabels([lb.split(" (")[0].replace(" of ", "/") for lb in labels], fontsize=6)
        ax.set_title(p, fontsize=8)
        _pct_axis(ax)
        if i == 0:
            ax.legend(fontsize=6)
    return fig


def segment_examples(images: np.ndarray, ids: np.ndarray, segment: np.ndarray, titles: Sequence[str],
                     names: Mapping | None = None) -> Figure:
    """A few example images of each weak segment (one row per segment, its errors first)."""
    groups = list(dict.fromkeys(int(s) for s in segment))
    per_row = max(int(np.sum(segment == g)) for g in groups)
    fig = new_figure(1.2 * per_row + 3.2, 1.3 * len(groups))
    for r, g in enumerate(groups):
        idx = np.flatnonzero(segment == g)
        for c, i in enumerate(idx):
            ax = fig.add_subplot(len(groups), per_row + 2, r * (per_row + 2) + c + 1)
            shown, cmap = _as_hwc(images[i])
            ax.imshow(shown, cmap=cmap, vmin=0, vmax=1)
            ax.set_title((names or {}).get(str(int(ids[i])), f"#{int(ids[i])}"), fontsize=5)
            ax.axis("off")
        ax = fig.add_subplot(len(groups), per_row + 2, r * (per_row + 2) + per_row + 1)
        ax.axis("off")
        ax.text(0.0, 0.5, titles[g] if g < len(titles) else "", fontsize=6, va="center", wrap=True)
    return fig
