"""Numbers and intervals as the report shows them, with the metric's unit from the record."""

from __future__ import annotations

import math

import numpy as np

DASH = "—"
Table = tuple[list[str], list[list[str]]]


def is_num(v) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool) and math.isfinite(float(v))


def unit_kind(unit: str | None) -> str:
    return {"share": "pct", "count": "int"}.get(unit or "", "num")


def metric_kind(record: dict, key: str) -> str:
    info = (record.get("metric_info") or {}).get(key) or {}
    if info:
        return unit_kind(info.get("unit"))
    if key.startswith(("confident_errors", "errors")):
        return "int"
    return "pct" if key.endswith(("accuracy", "coverage", "share")) else "num"


def fmt(v, kind: str = "num") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return DASH
    if kind == "bool" or isinstance(v, bool):
        return "yes" if v else "no"
    if not is_num(v):
        return str(v)
    v = float(v)
    if kind == "pct":
        return f"{v * 100:.2f}%"
    if kind == "int":
        return f"{int(round(v))}"
    if kind == "sec":
        return f"{v:.1f} s"
    if kind == "p":
        return f"{v:.3g}"
    return f"{v:.4f}"


def fmt_delta(d, kind: str = "num") -> str:
    if d is None or not is_num(d):
        return DASH
    d = float(d)
    if kind == "pct":
        return f"{d * 100:+.2f} pp"
    if kind == "int":
        return f"{int(round(d)):+d}"
    if kind == "sec":
        return f"{d:+.1f} s"
    return f"{d:+.4f}"


def fmt_ci(ci, kind: str = "num") -> str:
    if not ci or len(ci) != 2 or not all(is_num(x) for x in ci):
        return DASH
    lo, hi = float(ci[0]), float(ci[1])
    if kind == "pct":
        return f"[{lo * 100:+.2f}, {hi * 100:+.2f}] pp"
    if kind == "int":
        return f"[{lo:+.0f}, {hi:+.0f}]"
    return f"[{lo:+.4f}, {hi:+.4f}]"


def fmt_change(d, ci, kind: str = "num") -> str:
    """A change with its interval: ``+1.28 [+0.74, +1.84] pp`` (the unit once)."""
    delta, interval = fmt_delta(d, kind), fmt_ci(ci, kind)
    if kind == "pct" and interval != DASH and delta != DASH:
        return f"{delta.removesuffix(' pp')} {interval}"
    return f"{delta} {interval}"


def fmt_value(v) -> str:
    if v is None:
        return DASH
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int | np.integer):
        return str(int(v))
    if is_num(v):
        return f"{float(v):.4g}"
    return str(v)


def label(record: dict, key: str) -> str:
    info = (record.get("metric_info") or {}).get(key) or {}
    return f"{key}: {info['description']}" if info.get("description") else key


def _metric(record: dict, model: str, key: str):
    return ((record.get("models") or {}).get(model) or {}).get("metrics", {}).get(key)


def _held(v) -> str:
    return "yes" if v is True else "NO" if v is False else "n/a"


def time_spent_line(spent: dict) -> str:
    """Where a run's time went, one phrase per step: ``training 0.1s (2 of 2 from cache); ...;
    report 3.2s (16 of 18 figures from cache)``."""
    parts = []
    for k, v in (spent or {}).items():
        text = f"{k.replace('_', ' ')} {float(v.get('seconds') or 0.0):.1f}s"
        if v.get("cached"):
            unit = f" {v['unit']}" if v.get("unit") else ""
            text += f" ({v['cached']} of {v.get('models', '?')}{unit} from cache)"
        parts.append(text)
    return "; ".join(parts)


def metric_list(names, spell_out: int = 6) -> str:
    """Metric names for a line of text, per-label ones with more than ``spell_out`` labels
    folded: ``loss, class_accuracy (100 labels: fine-00, fine-01, fine-02, ...), ece``."""
    groups: dict[str, list[str]] = {}
    for n in names:
        base, _, label = str(n).partition("[")
        groups.setdefault(base if label else str(n), []).append(label.rstrip("]") if label else "")
    parts = []
    for base, labels in groups.items():
        labels = [lb for lb in labels if lb]
        if not labels:
            parts.append(base)
        elif len(labels) <= spell_out:
            parts += [f"{base}[{lb}]" for lb in labels]
        else:
            parts.append(f"{base} ({len(labels)} labels: {', '.join(labels[:3])}, ...)")
    return ", ".join(parts)
