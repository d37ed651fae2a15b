"""Power: how often the gates catch a defect of a given kind and strength, over many sound models.

    python -m harness power --dataset fashion-mnist --models DIR:THREADS --seeds 1000-1011 --group 1,3,6

Each sound model (read from a model cache: nothing is trained) gets graded defects planted at
evaluation: its stored logits on every split are changed as the defect says, and every gate of
its table that the changed predictions decide is checked. A defect is *detected* on a model when
at least one of those gates fails; the detection rate over models is given with its exact
(Clopper-Pearson) two-sided 95% interval, and a gate-level table says which gates carried the
detections. With ``--group N`` the models are also judged as ``--seeds N`` judges a recipe: N
models of consecutive seeds at one thread count, the mean of their values against the bound for
a mean of N seeds (``calibrate.rule.mean_bound``), the defect planted in all of them.

Defects (``plan``): the logits multiplied (sharper: overconfident) or divided (flatter:
underconfident) by a factor; one class handing a share of the images it predicts to its
runner-up class, *narrowly* (the class's logit set just below the runner-up's: no confident
error) or *confidently* (the two logits swapped: as sure of the runner-up as it was of the
class); two neighbouring classes (the pair the model confuses most) swapping a share of their
predictions confidently; and a preprocessing change at inference (every input brightened by an
offset before the model sees it: the one defect evaluated by running the model again).

Only the gates decided by the predictions are checked (accuracy, confidence, calibration,
selective prediction, conformal sets, risk control, generalisation): the robustness, OOD and
attention gates, which would need the battery measured again per defect, are left out, so a
detection rate here is a lower bound on the whole suite's. The sound model itself is checked
too: its failures are false alarms, and a defect counts as detected only by a gate the sound
model passed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .. import metrics

# The kinds of evidence computed from a model's stored logits alone (no forward pass, no battery)
FROM_LOGITS = frozenset({"test", "val", "train_sample", "class_frequency", "conformal", "risk_control"})
SHARES = (0.05, 0.10, 0.20, 0.30)
FACTORS = {"sharpened": (1.1, 1.25, 1.5), "flattened": (1.25, 1.5)}
BRIGHTNESS = (0.05, 0.1, 0.2)
GOLDEN = 0.6180339887498949


@dataclass(frozen=True)
class Planted:
    """One defect at one strength: ``kind`` in sharpened, flattened, handed-narrowly,
    handed-confidently, swapped-with-neighbour, brightened."""

    kind: str
    strength: float
    cls: int | None = None

    def label(self, classes) -> str:
        if self.kind == "sharpened":
            return f"logits x {self.strength:g}"
        if self.kind == "flattened":
            return f"logits / {self.strength:g}"
        if self.kind == "brightened":
            return f"inputs brightened by {self.strength:g}"
        who = "the most confused pair" if self.cls is None else classes[self.cls]
        return f"{who} {self.kind.replace('-', ' ')} on {self.strength:.0%}"


def plan(num_classes: int) -> list[Planted]:
    out = [Planted("sharpened", f) for f in FACTORS["sharpened"]]
    out += [Planted("flattened", f) for f in FACTORS["flattened"]]
    for mode in ("handed-narrowly", "handed-confidently"):
        out += [Planted(mode, s, c) for c in range(num_classes) for s in SHARES]
    out += [Planted("swapped-with-neighbour", s) for s in SHARES]
    out += [Planted("brightened", b) for b in BRIGHTNESS]
    return out


def chosen(ids: np.ndarray, share: float) -> np.ndarray:
    """A fixed share of a split's images, by their ids (a low-discrepancy sequence: the share
    is exact to one image, and the same images on every model)."""
    return np.mod((np.asarray(ids, dtype=np.float64) + 1) * GOLDEN, 1.0) < share


def _runner_up(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-z, axis=1, kind="stable")
    return order[:, 0], order[:, 1]


def hand_over(z: np.ndarray, ids: np.ndarray, cls: int, share: float, confident: bool) -> np.ndarray:
    """Of the images predicted ``cls``, ``share`` handed to their runner-up class: narrowly (the
    class's logit just below the runner-up's) or confidently (the two logits swapped)."""
    z = np.array(z, dtype=np.float64, copy=True)
    top, second = _runner_up(z)
    rows = np.flatnonzero((top == cls) & chosen(ids, share))
    r = second[rows]
    if confident:
        z[rows, cls], z[rows, r] = z[rows, r], z[rows, cls].copy()
    else:
        z[rows, cls] = z[rows, r] - 1e-3
    return z


def swap_pair(z: np.ndarray, ids: np.ndarray, a: int, b: int, share: float) -> np.ndarray:
    """Of the images predicted ``a`` or ``b``, ``share`` swap the two classes' logits."""
    z = np.array(z, dtype=np.float64, copy=True)
    top = z.argmax(axis=1)
    rows = np.flatnonzero(((top == a) | (top == b)) & chosen(ids, share))
    z[rows, a], z[rows, b] = z[rows, b], z[rows, a].copy()
    return z


def most_confused(z: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[int, int]:
    """The pair of classes the model mixes up most on the validation split (both directions)."""
    pred = z.argmax(axis=1)
    conf = np.zeros((num_classes, num_classes))
    np.add.at(conf, (labels, pred), 1)
    sym = conf + conf.T
    np.fill_diagonal(sym, -1)
    a, b = np.unravel_index(int(np.argmax(sym)), sym.shape)
    return int(min(a, b)), int(max(a, b))


class _Brightened(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, offset: float):
        super().__init__()
        self.model, self.offset = model, float(offset)

    def forward(self, x):
        return self.model((x + self.offset).clamp(0, 1))


def planted_logits(d: Planted, ev, pair: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Every stored split's logits with the defect planted."""
    from ..evaluate import logits_of

    res, data = ev.result, ev.data
    out = {}
    for split, z in res.logits.items():
        if d.kind == "brightened":
            x = data.train_x[res.train_sample_ids] if split == "train_sample" else data.split(split)[0]
            out[split] = logits_of(_Brightened(res.model, d.strength).eval(), x, ev.device)
            continue
        zz = z.detach().cpu().double().numpy()
        ids = np.arange(len(zz))
        if d.kind == "sharpened":
            new = zz * d.strength
        elif d.kind == "flattened":
            new = zz / d.strength
        elif d.kind in ("handed-narrowly", "handed-confidently"):
            new = hand_over(zz, ids, d.cls, d.strength, d.kind == "handed-confidently")
        elif d.kind == "swapped-with-neighbour":
            new = swap_pair(zz, ids, *pair, d.strength)
        else:
            raise ValueError(f"unknown defect {d.kind!r}")
        out[split] = torch.as_tensor(new, dtype=z.dtype)
    return out


def decided_by_predictions(metric: str) -> bool:
    return set(metrics.get(metric).needs) <= FROM_LOGITS


def gate_values(session, model: str) -> tuple[dict[str, float], dict[str, object]]:
    """Every gate of ``model`` decided by its predictions: ({gate key: the value checked},
    {gate key: the gate}), a gate key ``metric[label]_side``; not applicable ones left out."""
    book = session.book
    start = len(book.records)
    records = book.check_every_bound(model, "power", decided_by_predictions)
    del book.records[start:]  # measured for the power table, not records of a run
    values, gates = {}, {}
    for r in records:
        if r.outcome.checked:
            key = f"{r.outcome.gate.metric}{f'[{r.label}]' if r.label else ''}_{r.outcome.gate.kind}"
            values[key] = float(r.outcome.value)
            gates[key] = r.outcome.gate  # narrowed to the label by the check
    return values, gates


def _fails(gate, value: float) -> bool:
    from ..gates import check

    return not check(gate, value).passed


def interval(hits: int, n: int) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided 95% interval of a rate (``segments.clopper_pearson``)."""
    from ..segments import clopper_pearson

    lo, hi = clopper_pearson(hits, n)
    return float(lo), float(hi)


def measure(dataset: str, profile: str, sources: list[tuple[Path, int, list[int]]], gates_path: Path,
            models: tuple[str, ...] = ("baseline",), defects: list[Planted] | None = None, progress=print,
            data_root: str | None = None) -> dict:
    """Every defect planted in every cached sound model of ``sources`` ((cache folder, CPU threads,
    seeds)); per model the gates that fail. Models missing from a cache are skipped, said so."""
    from ..gates import Gates
    from ..measure import ModelEvaluation
    from ..run import Options, Session
    from ..train import cache_path

    t0 = time.perf_counter()
    rows: list[dict] = []
    skipped: list[str] = []
    gates_of: dict[str, dict] = {}
    classes: list[str] = []
    for cache_dir, threads, seeds in sources:
        torch.set_num_threads(threads)
        for seed in seeds:
            opts = Options(dataset=dataset, profile=profile, device="cpu", gates_path=gates_path,
                           candidates=[m for m in models if m != "baseline"], cache_dir=Path(cache_dir), seed=seed,
                           threads=threads, data_root=data_root)
            s = Session.create(opts, Gates.load(gates_path))
            data = s.data
            classes = list(data.classes)
            for m in models:
                recipe = s.plan.recipes[m]
                if not cache_path(recipe, s.plan.options.profile, data, s.plan.device, s.plan.runtime,
                                  cache_dir).exists():
                    skipped.append(f"{m} seed {seed}, {threads} thread(s): not in {cache_dir}")
                    continue
                sound = s.run.evaluation(m)
                val = sound.result.logits["val"].double().numpy()
                pair = most_confused(val, sound.samples("val").labels, data.num_classes)
                base_values, gates = gate_values(s, m)
                gates_of.setdefault(m, {}).update({k: g.to_state() for k, g in gates.items()})
                row = {"model": m, "seed": seed, "threads": threads, "sound": base_values,
                       "pair": [classes[pair[0]], classes[pair[1]]], "defects": {}}
                for d in defects if defects is not None else plan(data.num_classes):
                    planted = replace(sound.result, logits=planted_logits(d, sound, pair))
                    s.run._evaluations[m] = ModelEvaluation(m, planted, data, sound.device, sound.settings)
                    row["defects"][d.label(classes)] = gate_values(s, m)[0]
                s.run._evaluations[m] = sound
                rows.append(row)
                caught = sum(bool(_detections(row, gates, row["defects"][k])) for k in row["defects"])
                progress(f"[power] {m} seed {seed}, {threads} thread(s): the sound model fails "
                         f"{sum(_fails(gates[k], v) for k, v in base_values.items())} of {len(base_values)} gates; "
                         f"{caught} of {len(row['defects'])} defects detected ({time.perf_counter() - t0:.0f}s)")
    return {"rows": rows, "skipped": skipped, "classes": classes, "seconds": time.perf_counter() - t0,
            "gates": str(gates_path), "gates_of": gates_of, "dataset": dataset, "profile": profile}


def _detections(row: dict, gates: dict, values: dict[str, float], sound: dict[str, float] | None = None) -> list[str]:
    """The gates the defect's values fail that the sound model's (or group's) values pass."""
    sound = row["sound"] if sound is None else sound
    return [k for k, v in values.items() if k in gates and _fails(gates[k], v)
            and not (k in sound and _fails(gates[k], sound[k]))]


def groups(rows: list[dict], seeds: int) -> list[list[dict]]:
    """The recipes judged: N models of one recipe of consecutive seeds, disjoint groups (N = 1:
    each model alone), one thread count (the most threads measured: the main command's). The
    seed is the unit: a seed's 1- and 2-thread runs share its data subset and initialisation,
    so counting both would count one draw twice."""
    top = max(r["threads"] for r in rows)
    by: dict[str, list[dict]] = {}
    for r in sorted(rows, key=lambda r: (r["model"], r["seed"])):
        if r["threads"] == top:
            by.setdefault(r["model"], []).append(r)
    out = []
    for members in by.values():
        out += [members[i:i + seeds] for i in range(0, len(members) - seeds + 1, seeds)]
    return out


def in_sample(result: dict) -> list[int]:
    """The seeds of ``result`` that calibrated the gates they were checked against: their sound
    models pass by construction and their power is optimistic."""
    from ..gates import Gates

    seeds = {r["seed"] for r in result["rows"]}
    cal = set()
    for c in Gates.load(result["gates"]).calibrations_for(result["dataset"], result["profile"],
                                                           sorted({r["model"] for r in result["rows"]})).values():
        cal |= set(c.get("seeds") or [])
    return sorted(seeds & cal)


def summarise(result: dict, seeds: int = 1) -> dict:
    """Per defect: the recipes judged (models, or groups of ``seeds`` models whose mean is held to
    the bound for a mean of that many seeds), detections, rate and its interval; per gate: the
    detections it carried; and how many sound recipes fail a gate themselves."""
    from ..gates import Gate
    from ..run.book import _for_mean

    per_defect: dict[str, dict] = {}
    per_gate: dict[str, int] = {}
    gates_of = {m: {k: Gate.from_state(g) for k, g in gs.items()} for m, gs in result["gates_of"].items()}
    recipes = groups(result["rows"], seeds)
    sound_fail = 0
    for group in recipes:
        single = gates_of[group[0]["model"]]

        def judged(dicts, single=single):
            """{gate key: (its bound for this many seeds, the value it checks)}: the mean on the
            metric's scale against the bound for a mean (``run.book._for_mean``)."""
            keys = set.intersection(*(set(d) for d in dicts)) & set(single)
            return {k: _for_mean(single[k], [d[k] for d in dicts]) for k in keys}

        sound = judged([r["sound"] for r in group])
        sound_bad = {k for k, (g, v) in sound.items() if _fails(g, v)}
        sound_fail += bool(sound_bad)
        for label in group[0]["defects"]:
            found = [k for k, (g, v) in judged([r["defects"][label] for r in group]).items()
                     if _fails(g, v) and k not in sound_bad]
            e = per_defect.setdefault(label, {"judged": 0, "detected": 0})
            e["judged"] += 1
            e["detected"] += int(bool(found))
            for g in found:
                per_gate[g] = per_gate.get(g, 0) + 1
    for e in per_defect.values():
        e["rate"] = e["detected"] / e["judged"]
        e["interval"] = list(interval(e["detected"], e["judged"]))
    return {"seeds": seeds, "defects": per_defect, "gates": dict(sorted(per_gate.items(), key=lambda kv: -kv[1])),
            "judged": len(recipes), "sound_with_failures": sound_fail}


def render(result: dict, summaries: list[dict], title: str) -> str:
    rows = result["rows"]
    top = max(r["threads"] for r in rows)
    seen = in_sample(result)
    lines = [f"# Power: {title}", "",
             f"Sound models {', '.join(sorted({r['model'] for r in rows}))} of seeds "
             f"{min(r['seed'] for r in rows)}-{max(r['seed'] for r in rows)} at {top} thread(s) (one run per seed: "
             f"the seed is the unit), every defect planted at evaluation and checked against {result['gates']} (the "
             f"gates decided by the predictions; see harness/audit/power.py). Time: {result['seconds'] / 60:.1f} min.",
             ""]
    if seen:
        lines += [f"**In sample**: seeds {', '.join(map(str, seen))} calibrated these gates, so their sound models pass "
                  "by construction and a detection rate here is optimistic; measure on held-out models (python -m "
                  "harness audit --keep-models DIR) for the fair figure.", ""]
    for summary in summaries:
        n = summary["seeds"]
        what = "one model" if n == 1 else f"--seeds {n}: the mean of {n} seeds' models against the bound for a mean"
        lines += [f"## Judged on {what}", "",
                  f"{summary['judged']} recipes judged; {summary['sound_with_failures']} of them fail a gate without "
                  "any defect (a false alarm: a defect counts only through gates the sound recipe passes).", "",
                  "| defect | judged | detected | rate | 95% interval |", "| --- | --- | --- | --- | --- |"]
        for label, e in summary["defects"].items():
            lo, hi = e["interval"]
            lines.append(f"| {label} | {e['judged']} | {e['detected']} | {e['rate']:.0%} | {lo:.0%}-{hi:.0%} |")
        lines += ["", "Gates that carried the detections (recipe x defect pairs):", "", "| gate | detections |",
                  "| --- | --- |"]
        lines += [f"| {g} | {k} |" for g, k in list(summary["gates"].items())[:30]]
        lines.append("")
    if result["skipped"]:
        lines += ["Skipped (not in the model cache):", *[f"- {s}" for s in result["skipped"]], ""]
    return "\n".join(lines)
