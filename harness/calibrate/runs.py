"""The calibration runs: every model of a calibration trained with one seed at one CPU thread
count, in a worker process started with that many threads, and every gated metric measured
(models and evidence from their caches where earlier runs left them)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from .. import metrics
from ..gates import Gates
from .rule import stored

HERE = Path(__file__).resolve().parent.parent

@dataclass(frozen=True)
class Task:
    """One calibration run: every model of the calibration trained with one seed at one CPU
    thread count, and every gated metric measured."""

    dataset: str
    profile: str
    seed: int
    threads: int
    candidates: tuple[str, ...] = ()
    imbalance: float = 1.0
    data_root: str | None = None
    cache_dir: str | None = None
    recipe_files: tuple[str, ...] = ()
    image_size: int | None = None
    arch: str | None = None
    autoattack: int | None = None
    gates: str = str(HERE.parent / "gates.toml")

    @property
    def label(self) -> str:
        return f"seed {self.seed}, {self.threads} thread{'s' if self.threads > 1 else ''}"


def _init_threads(threads: int) -> None:
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def _quantum(m: metrics.Metric, evidence) -> float:
    """The metric's smallest step (``Metric.resolution``): 1 for a count, 1/N for a share of N
    images, 0 where it has none."""
    if m.resolution == "one":
        return 1.0
    if m.resolution == "image":
        if isinstance(evidence, dict) and "labels" in evidence:  # conformal sets: one outcome per test image
            return 1.0 / len(evidence["labels"])
        try:
            return 1.0 / metrics.evidence_size(evidence)
        except (TypeError, ValueError, AttributeError):
            return 0.0
    return 0.0


def run_task(task: Task) -> dict:
    """Train (or load) every model of one calibration run and measure every gated metric:
    {"models": {recipe: {metric or metric[class]: value or None}}, "quanta": {...}, ...}. The
    models come from the model cache and the evidence from the evidence cache (both under the
    task's cache folder) where earlier runs left them: an interrupted calibration resumes, and
    one after a change to the metrics or to one kind of measurement redoes only what changed."""
    import torch

    from ..run import Options, Session

    _init_threads(task.threads)
    t0 = time.perf_counter()
    opts = Options(dataset=task.dataset, profile=task.profile, device="cpu", data_root=task.data_root,
                   gates_path=Path(task.gates), candidates=list(task.candidates),
                   recipe_files=[Path(p) for p in task.recipe_files], cache_dir=Path(task.cache_dir) if task.cache_dir
                   else None, imbalance=task.imbalance, image_size=task.image_size, arch=task.arch, seed=task.seed,
                   autoattack=task.autoattack, threads=task.threads)
    s = Session.create(opts, Gates.load(task.gates))
    data = s.data
    out: dict = {"seed": task.seed, "threads": torch.get_num_threads(), "models": {}, "quanta": {},
                 "classes": list(data.classes), "regime": s.plan.regime}
    for m in s.plan.models:
        values, quanta = {}, {}
        ev = s.run.evaluation(m)
        for name, metric in metrics.REGISTRY.items():
            if not metric.gated:
                continue
            labels = s.plan.labels_of(metric.per) if metric.per else [None]
            for label in labels:
                key = name if label is None else f"{name}[{label}]"
                i = None if label is None else s.plan.label_index(metric.per, label)
                try:
                    values[key] = stored(s.value(m, name, i))
                except metrics.NotApplicable:
                    values[key] = None
                    continue
                if metric.per == "class":
                    quanta[key] = 1.0 / max(1, int((ev.samples("test").labels == i).sum()))
                elif metric.per == "ood_set":
                    n = len(ev.evidence("ood")[label]["msp"])
                    quanta[key] = 1.0 / n if metric.resolution == "image" else 0.0
                else:
                    quanta[key] = _quantum(metric, ev.evidence(metric.needs[0]))
        out["models"][m] = values
        out["quanta"][m] = quanta
    out["seconds"] = time.perf_counter() - t0
    return out


def run_tasks(tasks: list[Task], jobs_for, progress=print) -> list[dict]:
    """Run the tasks, grouped by thread count, each group in a pool of worker processes started
    with that many threads (``jobs_for(threads)`` workers at a time)."""
    import multiprocessing as mp

    results: list[dict] = []
    done = 0
    t0 = time.perf_counter()
    for threads in sorted({t.threads for t in tasks}):
        group = [t for t in tasks if t.threads == threads]
        ctx = mp.get_context("spawn")
        old = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = str(threads)  # the workers' torch reads it when it starts
        try:
            with ctx.Pool(processes=max(1, min(jobs_for(threads), len(group))), initializer=_init_threads,
                          initargs=(threads,), maxtasksperchild=1) as pool:
                for res in pool.imap_unordered(run_task, group):
                    done += 1
                    results.append(res)
                    took = f"{res['seconds']:.0f}s"
                    progress(f"[calibrate] {done}/{len(tasks)} seed {res['seed']}, {res['threads']} thread(s): "
                             f"{', '.join(res['models'])} measured ({took}; {time.perf_counter() - t0:.0f}s so far)")
        finally:
            if old is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = old
    return sorted(results, key=lambda r: (r["seed"], r["threads"]))
