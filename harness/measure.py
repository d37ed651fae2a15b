"""Everything measured about one model, computed lazily and once: the machinery.

``ModelEvaluation`` turns a trained model into the evidence the metric registry reads
(``metrics.Metric.needs``) and evaluates registry metrics on it. What each kind of evidence is,
how it is measured and what decides it live with its code in ``harness/kinds/`` (the registry);
here: evidence measured once per model (``evidence``), timed with its progress shown
(``_timed``), kept in the evidence cache across runs and in the run's store across processes
(``_cached``), and the values of registry metrics (``value``). ``baseline.<kind>`` is the run
baseline's evidence (for metrics normalised by the baseline, such as mCE).

Nothing here defines a metric (``metrics``) or a kind of evidence (``kinds``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict as dataclass_asdict
from dataclasses import dataclass

import numpy as np
import torch

from . import corruptions, kinds, metrics, progress, stress, taxonomy
from .data import Dataset
from .evidence import EvidenceCache, EvidenceStore
from .kinds.attention import as_set, explanation_set
from .kinds.beyond import SHIFT_SEVERITY, ood_names
from .metrics import NotApplicable
from .train import TrainResult


@dataclass(frozen=True)
class Settings:
    """How much of each kind of evidence to collect (set by the profile)."""

    profile: str = "smoke"
    stress_samples: int = 1000  # test images in the robustness subset
    attack_samples: int | None = None  # its first images attacked (None: the profile card's)
    taxonomy_errors: int = taxonomy.LIMIT  # the most confident errors whose failure mode is analysed
    cam_samples: int = 32  # each model's most confident errors in the shared explanation set
    cam_method: str = "gradcam"
    cam_layer: str | None = None  # None: the architecture's default (explain.default_cam_layer)
    published: dict | None = None  # CIFAR-C arrays (data.cifar_c) to use instead of synthesising
    ood_images: int = 1000  # images per out-of-distribution set
    ood_path: str | None = None  # --ood: a set of one's own
    data_root: str | None = None  # where a sibling dataset (an OOD set) is looked for
    conformal_alpha: float = 0.1  # --conformal-alpha: sets for 1 - alpha of the test images
    selective_risk: float = 0.05  # --selective-risk: the error rate accepted predictions may have
    autoattack_images: int = 0  # AutoAttack on this many images of the attacked subset (0: not run)
    severities: tuple[int, ...] = corruptions.SEVERITIES  # corruption severities (cards.severities_for)
    new_images: str | None = None  # --new-images: a batch whose image properties are compared with training
    segment_metadata: str | None = None  # --segment-metadata: a CSV of per-image metadata (more weak segments)
    cache_dir: str | None = None  # the evidence cache folder (data-side screens kept there; None: not kept)


__all__ = ["ModelEvaluation", "SHIFT_SEVERITY", "Settings", "as_set", "explanation_set", "ood_names"]


class ModelEvaluation:
    """One model of a run: its evidence and the registry metrics measured on it."""

    def __init__(self, name: str, result: TrainResult, data: Dataset, device: torch.device,
                 settings: Settings | None = None, baseline: Callable[[], ModelEvaluation] | None = None,
                 attention_set: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None,
                 store: EvidenceStore | None = None, cache: EvidenceCache | None = None, model_key: str | None = None,
                 named: Callable[[], list[int]] | None = None):
        self.name = name
        self.store = store  # shared with the run's other processes (pytest-xdist), or None
        self.cache = cache  # measured evidence across runs (keyed by model_key), or None
        self.model_key = model_key  # what the model is: its cache key, or its weights' checksum
        self.attention_maps: dict = {}  # the CAM method, layer and its resolution (the report shows them)
        self._named = named or list  # the run's named cases (in every model's explanation set)
        self.progress = progress.Silent()  # where a measurement's progress goes (the run sets its own)
        self.timings: dict[str, dict] = {}  # kind -> seconds it took and whether it came from the cache
        self._tick = None
        self.result = result
        self.data = data
        self.device = device
        self.settings = settings or Settings()
        self._baseline = baseline  # the run's baseline, when asked for (None: this model is it)
        # the run's shared explanation set: (test positions, roles); default: own confident errors
        self._attention_set = attention_set or self.own_set
        self._evidence: dict[str, object] = {}
        self._values: dict[tuple[str, int | None], float | NotApplicable] = {}

    @property
    def model(self) -> torch.nn.Module:
        return self.result.model

    # ------------------------------------------------------------------ evidence
    def samples(self, split: str) -> metrics.Samples:
        return self.evidence(split)  # type: ignore[return-value]

    def has(self, kind: str) -> bool:
        """Whether this kind of evidence has been collected (by a test that needed it)."""
        return kind in self._evidence

    def evidence(self, kind: str):
        if kind.startswith("baseline."):
            base = self if self._baseline is None else self._baseline()
            return base.evidence(kind.split(".", 1)[1])
        if kind not in self._evidence:
            k = kinds.get(kind)
            if k.gradients and not getattr(self.model, "differentiable", True):
                raise NotApplicable(f"{kind.replace('_', ' ')} differentiates the model, and {self.name} is an ONNX "
                                    "graph run by onnxruntime: it has no gradients (stress the PyTorch model for it)")
            for first in k.first(self) if k.first else ():
                self.evidence(first)  # read by this kind: measured (and timed) first
            measure = lambda: k.measure(self)  # noqa: E731
            if k.cheap:
                self._evidence[kind] = measure()
            elif self.store is None:
                self._evidence[kind] = self._timed(kind, measure)
            else:
                self._evidence[kind] = self.store.get_or_measure(self.name, kind, lambda: self._timed(kind, measure))
        return self._evidence[kind]

    def attention_set(self) -> tuple[np.ndarray, np.ndarray]:
        """The run's shared explanation set (test positions, roles); alone: its own set."""
        return self._attention_set()

    def _units(self, kind: str) -> tuple[int, str]:
        k = kinds.get(kind)
        return k.units(self) if k.units else (1, kind)

    def _timed(self, kind: str, measure: Callable[[], object], positions=None):
        """``_cached`` with its progress shown and its time kept (``timings``)."""
        t0 = time.perf_counter()
        measured = []

        def run():
            measured.append(True)
            total, unit = self._units(kind)
            step = self.progress.task(f"[{self.name}] {kind.replace('_', ' ')}", total, unit)
            self._tick = step.advance
            try:
                return measure()
            finally:
                self._tick = None
                step.done(f"[{self.name}] {kind.replace('_', ' ')} measured in {time.perf_counter() - t0:.1f}s")

        value = self._cached(kind, run, positions)
        self.timings[kind] = {"seconds": time.perf_counter() - t0, "cached": not measured}
        return value

    def tick(self, n: int = 1) -> None:
        if self._tick is not None:
            self._tick(n)

    def _context(self, kind: str) -> dict:
        """What besides the model and the code decides this kind of evidence: the data, device,
        profile and stressed images of every kind, the battery's settings where it is decided by
        them, and what the kind itself declares (``Kind.context``)."""
        k = kinds.get(kind)
        if k.per_dataset:  # what the kind declares decides it too (a new batch of images, by its files)
            return {"data": self.data.fingerprint, **(k.context(self) if k.context else {})}
        s = self.settings
        ctx = {"data": self.data.fingerprint, "device": self.device.type, "profile": s.profile,
               "stress_samples": s.stress_samples, "published": sorted(s.published or {}),
               "flip_invariant": self.data.flip_invariant}
        if k.battery:
            ctx["battery"] = {k: v for k, v in dataclass_asdict(self.battery).items() if k != "published"}
        if k.context:
            ctx.update(k.context(self))
        return ctx

    def _cached(self, kind: str, measure: Callable[[], object], positions=None):
        """``kind`` read from the evidence cache, or measured and stored there. Attention
        evidence is keyed by the test positions it explains (an own set, or the extra images
        of a shared one) and the roles do not enter it."""
        if self.cache is None or self.model_key is None:
            return measure()
        evidence, meta = self.cache.get_or_measure(self.evidence_key(kind, positions),
                                                   lambda: (measure(), self._meta(kind)))
        if kinds.get(kind).keyed_by_positions:  # an attention set: its maps' layer and method come with it
            self.attention_maps = dict(meta)
        return evidence

    def evidence_key(self, kind: str, positions=None) -> str:
        """The evidence cache's key of ``kind`` for this model (attention: of the positions it
        explains, its own set by default)."""
        ctx = self._context(kind)
        k = kinds.get(kind)
        if k.keyed_by_positions:
            pos = self.own_set()[0] if positions is None else positions
            ctx["positions"] = hashlib.sha256(np.asarray(pos, dtype=np.int64).tobytes()).hexdigest()[:16]
        return EvidenceCache.key("dataset" if k.per_dataset else self.model_key, kind, ctx)

    def _meta(self, kind: str) -> dict:
        return dict(self.attention_maps) if kinds.get(kind).keyed_by_positions else {}

    def preload(self) -> None:
        """Read every kind of evidence the run's other processes stored for this model (the
        report then shows what they measured)."""
        if self.store is not None:
            for kind in self.store.kinds(self.name):
                if kind not in self._evidence:
                    self._evidence[kind] = self.store.read(self.name, kind)

    @property
    def battery(self) -> stress.Battery:
        return stress.battery(self.data.name, self.data.image_shape, self.settings.profile,
                              self.data.flip_invariant, self.settings.published, self.settings.attack_samples,
                              self.settings.severities)

    def stress_positions(self) -> np.ndarray:
        return stress.stress_subset(len(self.data.test_y), self.settings.stress_samples)

    def own_set(self) -> tuple[np.ndarray, np.ndarray]:
        """This model's own explanation set: (test positions, roles) of the named cases, its most
        confident errors and a right prediction of the same class for each (a function of the
        model and the data alone)."""
        return as_set(explanation_set(self.name, self.samples("test"), self._named(), self.settings.cam_samples))

    # ------------------------------------------------------------------ values
    def value(self, metric: str, index: int | None = None) -> float:
        """The registry metric's value; raises NotApplicable (remembered) when it does not apply."""
        key = (metric, index)
        if key not in self._values:
            try:
                self._values[key] = metrics.measure(metric, self.evidence, index)
            except NotApplicable as exc:
                self._values[key] = exc
        v = self._values[key]
        if isinstance(v, NotApplicable):
            raise v
        return v

    def measured(self) -> dict[tuple[str, int | None], float | NotApplicable]:
        """Every value measured so far (NotApplicable for those that do not apply)."""
        return dict(self._values)

    def summary(self) -> dict[str, float | None]:
        """Every whole-model metric whose evidence is at hand (the splits' always: their logits
        come with the model), None where it does not apply; the report's table of numbers."""
        out: dict[str, float | None] = {}
        for name, m in metrics.REGISTRY.items():
            if m.per is not None or not all(k in self._evidence or getattr(kinds.KINDS.get(k), "cheap", False)
                                            for k in m.needs):
                continue
            try:
                out[name] = self.value(name)
            except NotApplicable:
                out[name] = None
        return out

    def not_applicable(self) -> dict[str, str]:
        """metric -> why it does not apply, for the whole-model metrics measured so far."""
        return {m: str(v) for (m, i), v in self._values.items() if i is None and isinstance(v, NotApplicable)}
