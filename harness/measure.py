"""Everything measured about one model, computed lazily and once.

``ModelEvaluation`` turns a trained model into the evidence the metric registry reads
(``metrics.Metric.needs``) and evaluates registry metrics on it:

* ``test`` / ``val`` / ``train_sample``: per-sample outcomes from the logits stored with the
  model (``train.TrainResult``), or computed here for a model the harness did not train;
* ``robustness``: outcomes under each stress (``stress.py``) on a seeded subset of the test
  split, the same images for every model of a run; ``adversarial``: under attack, on the
  first ``Battery.attack_samples`` images of that subset; ``baseline.<kind>``: the run
  baseline's evidence (for metrics normalised by the baseline, such as mCE);
* ``shared_attention``: per-image heatmap scores (``explain.py``) on the run's shared
  explanation set; ``attention``: the model's own part of it (what its gates read);
* ``taxonomy``: the failure modes of the confident errors (``taxonomy.py``).

Nothing here defines a metric: values come from ``metrics.measure``.

Evidence that takes time to measure is kept in ``harness.evidence``: the run's store (shared
by its pytest-xdist workers) and the evidence cache (across runs, beside the model cache).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict as dataclass_asdict
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from dataclasses import replace as dataclass_replace

import numpy as np
import torch

from . import corruptions, explain, metrics, progress, stress, taxonomy
from .data import Dataset
from .evaluate import logits_of, to_float
from .evidence import EvidenceCache, EvidenceStore
from .metrics import NotApplicable, Samples
from .train import TrainResult, select_training_indices, train_sample_indices

# Evidence about the data, not the model: cached by the data's fingerprint alone.
DATASET_KINDS = frozenset({"leakage"})
# Evidence read straight from the stored logits and the recipe: cheaper to rebuild than to
# share between processes, and always at hand for the report's table of numbers.
CHEAP_KINDS = frozenset({"test", "val", "train_sample", "class_frequency", "shared_attention", "conformal"})


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
    autoattack_images: int = 0  # AutoAttack on this many images of the attacked subset (0: not run)
    severities: tuple[int, ...] = corruptions.SEVERITIES  # corruption severities (cards.severities_for)
    cache_dir: str | None = None  # the evidence cache folder (data-side screens kept there; None: not kept)


ATTENTION_SEED = 7
SHIFT_SEVERITY = 3  # conformal coverage under shift: every common corruption at this severity


def ood_names(data: Dataset, settings: Settings) -> list[str]:
    """The OOD sets a model of ``data`` is measured on: the built-in ones the screen keeps
    (``ood.left_out`` says why any other is not used) and one's own."""
    from . import ood

    gone = ood.left_out(data, settings.data_root, settings.ood_images, settings.cache_dir)
    names = [n for n in ood.builtin_names(data, settings.data_root) if n not in gone]
    return names + (["own"] if settings.ood_path else [])


def _file_stamp(path: str) -> str:
    """What a user's OOD set is: its path, size and modification time (a change measures again)."""
    from pathlib import Path

    p = Path(path).expanduser()
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
    return f"{p}|" + "|".join(f"{q.name}:{q.stat().st_size}:{q.stat().st_mtime_ns}" for q in files[:5000])


def explanation_set(name: str, s: Samples, named, errors: int) -> dict[int, list[str]]:
    """One model's own explanation set, {test position: roles}: the named cases, its ``errors``
    most confident errors, and for each a right prediction of the same true class (seeded,
    chosen from this model's predictions alone): a function of the model and the data only."""
    roles: dict[int, list[str]] = {int(p): ["named"] for p in named}
    rng = np.random.default_rng(ATTENTION_SEED)
    wrong = metrics.most_confident_errors(s)[:errors]
    for p in wrong:
        roles.setdefault(int(p), []).append(f"error:{name}")
    for p in wrong:
        pool = np.flatnonzero(s.hit & (s.labels == s.labels[p]))
        if len(pool):
            roles.setdefault(int(rng.choice(pool)), []).append(f"correct:{name}")
    return roles


def as_set(roles: dict[int, list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """{position: roles} -> (sorted positions, "role,role" per position)."""
    pos = np.array(sorted(roles), dtype=np.int64)
    return pos, np.array([",".join(dict.fromkeys(roles[int(p)])) for p in pos], dtype=str)


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
    def samples(self, split: str) -> Samples:
        return self.evidence(split)  # type: ignore[return-value]

    def has(self, kind: str) -> bool:
        """Whether this kind of evidence has been collected (by a test that needed it)."""
        return kind in self._evidence

    def evidence(self, kind: str):
        if kind.startswith("baseline."):
            base = self if self._baseline is None else self._baseline()
            return base.evidence(kind.split(".", 1)[1])
        if kind not in self._evidence:
            if kind == "conformal_shift" and SHIFT_SEVERITY in self.battery.severities:
                self.evidence("robustness")  # read from its logits: measured (and timed) first
            measure = getattr(self, f"_evidence_{kind}")
            if kind in CHEAP_KINDS:
                self._evidence[kind] = measure()
            elif self.store is None:
                self._evidence[kind] = self._timed(kind, measure)
            else:
                self._evidence[kind] = self.store.get_or_measure(self.name, kind, lambda: self._timed(kind, measure))
        return self._evidence[kind]

    def _units(self, kind: str) -> tuple[int, str]:
        if kind == "robustness":
            return stress.robustness_units(self.battery, len(self.stress_positions())), "condition-batch"
        if kind == "adversarial":
            return 2 * len(self.battery.epsilons), "attack"
        if kind == "ood":
            return len(ood_names(self.data, self.settings)), "set"
        if kind == "leakage":
            from .leakage import chunks

            return chunks(len(self.data.test_y)), "chunk"
        if kind == "conformal_shift":
            return len(self.battery.corruptions), "corruption"
        if kind == "autoattack":
            return 4, "attack"
        return 1, kind

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
        """What besides the model and the code decides this kind of evidence."""
        s = self.settings
        ctx = {"data": self.data.fingerprint, "device": self.device.type, "profile": s.profile,
               "stress_samples": s.stress_samples, "published": sorted(s.published or {}),
               "flip_invariant": self.data.flip_invariant}
        if kind in ("robustness", "adversarial", "taxonomy", "conformal_shift", "autoattack"):
            ctx["battery"] = {k: v for k, v in dataclass_asdict(self.battery).items() if k != "published"}
        if kind == "ood":
            ctx.update(ood_images=s.ood_images, ood_path=s.ood_path and _file_stamp(s.ood_path),
                       ood_sets=ood_names(self.data, s))
        if kind == "conformal_shift":
            ctx["alpha"] = s.conformal_alpha
        if kind == "autoattack":
            ctx["images"] = s.autoattack_images
        if kind in DATASET_KINDS:
            ctx = {"data": self.data.fingerprint}
        if kind in ("attention", "attention_extra", "taxonomy"):
            ctx.update(cam_method=s.cam_method, cam_layer=s.cam_layer)
        if kind == "taxonomy" and s.taxonomy_errors != taxonomy.LIMIT:  # (the default keeps the keys it had)
            ctx["taxonomy_errors"] = s.taxonomy_errors
        return ctx

    def _cached(self, kind: str, measure: Callable[[], object], positions=None):
        """``kind`` read from the evidence cache, or measured and stored there. Attention
        evidence is keyed by the test positions it explains (an own set, or the extra images
        of a shared one) and the roles do not enter it."""
        if self.cache is None or self.model_key is None:
            return measure()
        evidence, meta = self.cache.get_or_measure(self.evidence_key(kind, positions),
                                                   lambda: (measure(), self._meta(kind)))
        if kind in ("attention", "attention_extra"):
            self.attention_maps = dict(meta)
        return evidence

    def evidence_key(self, kind: str, positions=None) -> str:
        """The evidence cache's key of ``kind`` for this model (attention: of the positions it
        explains, its own set by default)."""
        ctx = self._context(kind)
        if kind in ("attention", "attention_extra"):
            pos = self.own_set()[0] if positions is None else positions
            ctx["positions"] = hashlib.sha256(np.asarray(pos, dtype=np.int64).tobytes()).hexdigest()[:16]
        return EvidenceCache.key("dataset" if kind in DATASET_KINDS else self.model_key, kind, ctx)

    def _meta(self, kind: str) -> dict:
        return dict(self.attention_maps) if kind in ("attention", "attention_extra") else {}

    def preload(self) -> None:
        """Read every kind of evidence the run's other processes stored for this model (the
        report then shows what they measured)."""
        if self.store is not None:
            for kind in self.store.kinds(self.name):
                if kind not in self._evidence:
                    self._evidence[kind] = self.store.read(self.name, kind)

    def _split_samples(self, split: str) -> Samples:
        res = self.result
        if split not in res.logits:  # a model the harness did not train: evaluate it here
            if split == "train_sample":
                res.train_sample_ids = train_sample_indices(res.recipe, self.data)
                x = self.data.train_x[res.train_sample_ids]
            else:
                x = self.data.split(split)[0]
            res.logits[split] = logits_of(self.model, x, self.device)
        p = res.predictions(self.data, split)
        return Samples.from_logits(p.logits, p.labels, p.ids, keep_probs=True)

    def _evidence_test(self) -> Samples:
        return self._split_samples("test")

    def _evidence_val(self) -> Samples:
        return self._split_samples("val")

    def _evidence_train_sample(self) -> Samples:
        return self._split_samples("train_sample")

    @property
    def battery(self) -> stress.Battery:
        return stress.battery(self.data.name, self.data.image_shape, self.settings.profile,
                              self.data.flip_invariant, self.settings.published, self.settings.attack_samples,
                              self.settings.severities)

    def stress_positions(self) -> np.ndarray:
        return stress.stress_subset(len(self.data.test_y), self.settings.stress_samples)

    def _evidence_class_frequency(self) -> np.ndarray:
        """Training images per class for this model's recipe (long-tailed runs: the subsample)."""
        idx = select_training_indices(self.result.recipe, self.data)
        return np.bincount(self.data.train_y[idx].numpy(), minlength=self.data.num_classes)

    def _evidence_robustness(self) -> dict[str, Samples]:
        pos = self.stress_positions()
        idx = torch.as_tensor(pos)
        x, y = self.data.test_x[idx], self.data.test_y[idx]
        logits = stress.run_robustness(self.model, x, y, self.battery, self.device, pos, self.data.full_test_size,
                                       tick=self.tick)
        labels = y.numpy()
        return {k: Samples.from_logits(z.numpy(), labels, pos) for k, z in logits.items()}

    def _evidence_adversarial(self) -> dict[str, Samples]:
        b = self.battery
        pos = self.stress_positions()[: b.attack_samples]
        idx = torch.as_tensor(pos)
        x, y = self.data.test_x[idx], self.data.test_y[idx]
        logits = stress.run_adversarial(self.model, x, y, b, self.device, tick=self.tick)
        labels = y.numpy()
        out = {k: Samples.from_logits(z.numpy(), labels, pos) for k, z in logits.items()}
        ref = f"{b.reference_eps:.6g}"
        for attack in ("fgsm", "pgd"):  # the reference budget, under the attack's own name
            if f"{attack}/{ref}" in out:
                out[attack] = out[f"{attack}/{ref}"]
        return out

    def _evidence_taxonomy(self) -> taxonomy.Taxonomy:
        s = self.samples("test")
        p = self.result.predictions(self.data, "test")
        b = self.battery
        return taxonomy.analyse(self.model, s, p.probs, self.data.test_x, self.device, b.occlusion_patch,
                                b.occlusion_stride, limit=self.settings.taxonomy_errors)

    def _evidence_ood(self) -> dict:
        """In-distribution scores (``ood.scores``) of the test images and of every OOD set."""
        from . import ood

        self.samples("test")  # the test logits (evaluated here for a model the harness did not train)
        out = {"test": ood.scores(self.result.logits["test"].numpy())}
        for name, x in ood.sets(self.data, self.settings.data_root, self.settings.ood_path,
                                self.settings.ood_images, self.settings.cache_dir).items():
            out[name] = ood.scores(logits_of(self.model, x, self.device).numpy())
            self.tick(1)
        return out

    def _evidence_leakage(self):
        """Each test image's nearest training image (a property of the data: cached by its
        fingerprint alone)."""
        from . import leakage

        return leakage.near_duplicates(self.data.train_x, self.data.test_x, tick=self.tick)

    def _evidence_conformal(self) -> dict:
        """LAC and APS prediction sets of the test images, calibrated on the validation split."""
        from . import conformal

        val, test = self.samples("val"), self.samples("test")
        out = {"labels": test.labels, "alpha": self.settings.conformal_alpha, "n_cal": len(val)}
        for method in conformal.METHODS:
            q = conformal.calibrate(val.probs, val.labels, self.settings.conformal_alpha, method)
            inside = conformal.sets(test.probs, q, method)
            out[method] = {"q": q, "covered": inside[np.arange(len(test)), test.labels], "size": inside.sum(axis=1),
                           "sizes": np.bincount(inside.sum(axis=1), minlength=test.num_classes + 1)}
        return out

    def _evidence_conformal_shift(self) -> dict:
        """LAC coverage of the stressed subset under each common corruption at severity 3, with
        the threshold calibrated on the (unshifted) validation split. The class is in the set
        when 1 - p_y <= q, so the robustness battery's outcomes at that severity (the same
        corrupted images) decide it; a battery without severity 3 corrupts the images here."""
        from . import conformal

        val = self.samples("val")
        q = conformal.calibrate(val.probs, val.labels, self.settings.conformal_alpha, "lac")
        b = self.battery
        if SHIFT_SEVERITY in b.severities:
            rob = self.evidence("robustness")
            self.tick(len(b.corruptions))
            return {name: 1.0 - np.exp(-rob[f"corruption/{name}/{SHIFT_SEVERITY}"].nll) <= q for name in b.corruptions}
        pos = self.stress_positions()
        idx = torch.as_tensor(pos)
        x, y = self.data.test_x[idx], self.data.test_y[idx]
        logits = stress.run_corruptions_at(self.model, x, b, self.device, SHIFT_SEVERITY, pos, self.data.full_test_size,
                                           tick=self.tick)
        out = {}
        for name, z in logits.items():
            smp = Samples.from_logits(z.numpy(), y.numpy(), pos, keep_probs=True)
            out[name] = conformal.sets(smp.probs, q, "lac")[np.arange(len(smp)), smp.labels]
        return out

    def _evidence_autoattack(self) -> dict:
        """AutoAttack (standard) at the reference budget on the first ``autoattack_images`` of
        the attacked subset: outcomes, and which attack broke each image."""
        from . import autoattack

        n = self.settings.autoattack_images
        if n <= 0:
            raise NotApplicable("AutoAttack runs in the full profile, or with --autoattack N (minutes per 100 images "
                                "on a CPU)")
        if not autoattack.available():
            raise NotApplicable("torchattacks is not installed (setup.sh installs it)")
        b = self.battery
        pos = self.stress_positions()[: min(n, b.attack_samples)]
        idx = torch.as_tensor(pos)
        x, y = to_float(self.data.test_x[idx]).to(self.device), self.data.test_y[idx].to(self.device)
        adv, broken = autoattack.run(self.model, x, y, b.reference_eps, self.data.num_classes, tick=self.tick)
        with torch.no_grad():
            z = torch.cat([self.model(adv[i:i + 250]).float().cpu() for i in range(0, len(adv), 250)])
        return {"autoattack": Samples.from_logits(z.numpy(), y.cpu().numpy(), pos), "broken_by": broken}

    def own_set(self) -> tuple[np.ndarray, np.ndarray]:
        """This model's own explanation set: (test positions, roles) of the named cases, its most
        confident errors and a right prediction of the same class for each (a function of the
        model and the data alone)."""
        return as_set(explanation_set(self.name, self.samples("test"), self._named(), self.settings.cam_samples))

    def _explain(self, pos: np.ndarray, roles: np.ndarray, sanity: bool = True) -> metrics.Attention:
        """Grad-CAM scores of this model on test positions ``pos``, per image: each is a function
        of the model and the image alone (random maps seeded per test id; the randomisation
        check, unless ``sanity`` is off, on every image: NaN where it is not run)."""
        s = self.samples("test")
        n = len(pos)
        if n == 0:
            e = np.zeros(0)
            return metrics.Attention(e.astype(np.int64), e.astype(str), e.astype(str), e.astype(bool), *([e] * 7))
        x = to_float(self.data.test_x[torch.as_tensor(pos)])
        out = explain.attention_summary(self.model, x, s.pred[pos], method=self.settings.cam_method,
                                        layer=self.settings.cam_layer, device=self.device, ids=s.ids[pos],
                                        randomisation_images=None if sanity else 0)
        change = explain.confidence_change(self.model, x, out["maps"], out["targets"], self.device)
        randomised = np.full(n, np.nan)
        rand = out.get("randomisation")
        if rand:
            step = rand["cam_step"] if rand.get("cam_step") is not None else len(rand["correlation"]) - 1
            randomised[np.asarray(rand["indices"])] = np.asarray(rand["correlation"])[step]
        self.attention_maps = {"layer": out["layer"], "layer_shape": list(out["layer_shape"]), "method": out["method"]}
        return metrics.Attention(
            ids=s.ids[pos], roles=np.asarray(roles), reason=np.asarray(out["reason"]), hit=s.hit[pos],
            gini=np.asarray(out["gini"]), entropy=np.asarray(out["entropy"]), top10=np.asarray(out["top10"]),
            deletion_gap=np.asarray(out["deletion_gap"]), insertion_gap=np.asarray(out["insertion_gap"]),
            randomisation=randomised, confidence_change=np.asarray(change, dtype=np.float64))

    def _evidence_attention(self) -> metrics.Attention:
        """Grad-CAM scores on the model's own explanation set (``own_set``): what its attention
        metrics are gated on, so they do not depend on which other models are in the run."""
        return self._explain(*self.own_set())

    def _evidence_shared_attention(self) -> metrics.Attention:
        """Grad-CAM scores on the run's shared explanation set (the union of the own sets of the
        models compared with this one: the paired comparison and the report): its own set's
        scores, and the other images' measured once more (cached under their positions)."""
        pos, roles = self._attention_set()
        own_pos = self.own_set()[0]
        own = self.evidence("attention")
        missing = pos[~np.isin(pos, own_pos)]
        # the randomisation check is a property of the model, gated on its own set: not repeated here
        extra = self._timed("attention_extra", lambda: self._explain(missing, np.full(len(missing), ""), sanity=False),
                            missing)
        both = metrics.Attention(*(np.concatenate([getattr(own, f.name), getattr(extra, f.name)])
                                   for f in dataclass_fields(metrics.Attention)))
        where = {int(p): i for i, p in enumerate(np.concatenate([own_pos, missing]))}
        return dataclass_replace(both.take(np.array([where[int(p)] for p in pos], dtype=np.int64)),
                                 roles=np.asarray(roles))

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
            if m.per is not None or not all(k in self._evidence or k in CHEAP_KINDS for k in m.needs):
                continue
            try:
                out[name] = self.value(name)
            except NotApplicable:
                out[name] = None
        return out

    def not_applicable(self) -> dict[str, str]:
        """metric -> why it does not apply, for the whole-model metrics measured so far."""
        return {m: str(v) for (m, i), v in self._values.items() if i is None and isinstance(v, NotApplicable)}
