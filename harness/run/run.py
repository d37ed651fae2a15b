"""The run: the plan's models trained (or loaded, or provided), everything measured about
each (``measure.ModelEvaluation``, lazily and once), and what the models' comparison needs:
paired changes, changes across seeds, documented effects and where they can be decided, the
spread over seeds, and the report's gallery (the only Grad-CAM the report shows; the report
itself measures nothing)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import compare, evaluate, explain, metrics, recipes, train
from ..evidence import EvidenceCache, EvidenceStore
from ..gates import MIN_EFFECT_SEEDS, recipe_of
from ..measure import ModelEvaluation, as_set
from ..metrics import NotApplicable
from .plan import Plan

GALLERY_SIZE = 8
# paired on the shared set; the randomisation check is run on each model's own set only
ATTENTION_COMPARED = ("cam_gini", "cam_entropy", "cam_top10", "cam_deletion_gap", "cam_insertion_gap")
SPREAD_METRICS = ("accuracy", "loss", "ece", "ece_over", "confident_errors_90", "confident_errors_99",
                  "worst_class_accuracy", "generalisation_gap")


@dataclass
class Run:
    plan: Plan
    hook: object = None  # pluggy hook relay for pytest_stress_model (a model of the user's conftest.py)
    store: EvidenceStore | None = None  # evidence shared with the run's other processes (pytest-xdist)
    started: float = field(default_factory=time.time)
    diverged: dict[str, str] = field(default_factory=dict)
    unavailable: set[str] = field(default_factory=set)  # of ``diverged``: trained but not kept (a full cache)
    diverged_reported: dict[str, str] = field(default_factory=dict)  # model -> the test that failed with why
    fixed: set[str] = field(default_factory=set)  # models the harness did not train (checkpoints, the hook)
    _evaluations: dict[str, ModelEvaluation] = field(default_factory=dict)
    _comparisons: dict[str, dict] = field(default_factory=dict)
    _changes: dict[tuple[str, str], dict] = field(default_factory=dict)  # (model, metric) -> paired change
    _attention: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    _seed_summary: tuple[tuple[str, ...], dict] | None = None

    def __post_init__(self):
        from .. import progress

        self.progress = progress.Silent()  # the pytest plugin sets one that writes to its terminal

    # ------------------------------------------------------------------ models
    @property
    def data(self):
        return self.plan.data

    @property
    def active(self) -> bool:
        return bool(self._evaluations)

    @property
    def trained(self) -> list[str]:
        """The models evaluated in this run so far, in run order."""
        return [m for m in self.plan.models if m in self._evaluations]

    def failure(self, name: str) -> str:
        """What stopped a model in ``diverged``: its training diverged, or it could not be kept."""
        return "could not be kept" if name in self.unavailable else "diverged"

    def evaluation(self, name: str) -> ModelEvaluation:
        if name in self.diverged:
            raise train.TrainingDiverged(self.diverged[name])
        if name not in self._evaluations:
            base = None if recipe_of(name) == "baseline" else (lambda: self.evaluation(self.plan.baseline_of(name)))
            result = self._result(name)
            self._evaluations[name] = ModelEvaluation(
                name, result, self.data, self.plan.device, self.plan.settings, baseline=base,
                attention_set=lambda: self.attention_set(name), store=self.store, cache=self.evidence_cache,
                model_key=self._model_key(name, result), named=self.plan.named_positions)
            self._evaluations[name].progress = self.progress
        return self._evaluations[name]

    def time_spent(self) -> dict[str, dict]:
        """Where the run's time went: training (or loading) and each kind of measurement, with
        the seconds, the models and how many of them came from a cache."""
        out: dict[str, dict] = {}

        def add(family: str, seconds: float, cached: bool) -> None:
            t = out.setdefault(family, {"seconds": 0.0, "models": 0, "cached": 0})
            t["seconds"] += seconds
            t["models"] += 1
            t["cached"] += int(cached)

        for m in self.trained:
            ev = self._evaluations[m]
            add("training", ev.result.seconds, ev.result.cached or m in self.fixed)
            for kind, t in ev.timings.items():
                add(kind, t["seconds"], t["cached"])
        return out

    @property
    def evidence_cache(self) -> EvidenceCache | None:
        """Evidence kept across runs beside the model cache (none when the cache is off)."""
        folder = self.plan.evidence_dir
        return None if folder is None else EvidenceCache(folder)

    def _model_key(self, name: str, result: train.TrainResult) -> str | None:
        """What the model is, for the evidence cache: its model-cache key (and fitted
        temperature); for a checkpoint (--weights) its architecture and the file's checksum;
        None for a model built in code (the hook, a provider), whose weights do not say what
        it computes: its evidence is measured every run."""
        if name not in self.fixed:
            return f"{result.cache_key}/T={result.temperature}"
        path = getattr(self.plan.providers.get(name), "weights_path", None)
        if path is None:
            return None
        import hashlib

        from .. import cache, models

        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:20]
        return f"{self.plan.recipes[name].arch}/{models.arch_fingerprint(self.plan.recipes[name].arch)}/" \
               f"{cache.code_hash()}/{digest}"

    def _result(self, name: str) -> train.TrainResult:
        plan = self.plan
        recipe = plan.recipes[name]
        t0 = time.perf_counter()
        model = None
        if name in plan.providers:
            model = plan.providers[name](recipe, self.data, plan.device)
        elif self.hook is not None:
            model = self.hook.pytest_stress_model(recipe=recipe, data=self.data, device=plan.device)
        if model is None:
            try:
                return train.train(recipe, self.data, plan.options.profile, plan.device, plan.options.cache_dir,
                                   use_cache=plan.options.use_cache, runtime=plan.runtime, progress=self.progress)
            except train.TrainingDiverged as exc:
                self.diverged[name] = str(exc)
                raise
            except OSError as exc:  # a full or read-only cache: said once, not trained again by every test
                import errno

                if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
                    raise
                where = plan.options.cache_dir or "the model cache (~/.cache/cnn-stress/models or $CNN_STRESS_CACHE)"
                self.diverged[name] = (f"{name} could not be kept: {where} cannot be written ({exc.strerror}), so "
                                       "every test would train it again. Free space there, or give --cache-dir a "
                                       "folder that can be written")
                self.unavailable.add(name)
                raise train.TrainingDiverged(self.diverged[name]) from None
        self.fixed.add(name)
        model = model.to(plan.device).eval()
        logits = {s: evaluate.logits_of(model, self.data.split(s)[0], plan.device) for s in ("val", "test")}
        bad = {s: int((~torch.isfinite(z)).any(1).sum()) for s, z in logits.items()}
        from .plan import looks_like_probabilities

        if looks_like_probabilities(logits["val"]) and looks_like_probabilities(logits["test"]):
            self.diverged[name] = (f"{name} returns probabilities (every output in [0, 1], each row summing to 1), not "
                                   "logits: the harness applies the softmax itself, so every confidence would be wrong; "
                                   "remove the model's final softmax (a log-softmax is fine)")
            raise train.TrainingDiverged(self.diverged[name])
        if any(bad.values()):
            self.diverged[name] = (f"{name} gives non-finite outputs (NaN or inf) for {bad['test']} of "
                                   f"{len(logits['test'])} test and {bad['val']} of {len(logits['val'])} validation "
                                   "images in eval mode: its numbers would be meaningless, so it is not measured")
            raise train.TrainingDiverged(self.diverged[name])
        return train.TrainResult(
            recipe=recipe, profile=plan.options.profile, model=model, history=[], best_epoch=0,
            train_seconds=0.0, cached=False, seconds=time.perf_counter() - t0,
            cache_key="user model (not trained by the harness)", logits=logits,
        )

    def result(self, name: str) -> train.TrainResult:
        return self.evaluation(name).result

    def model_regime(self, name: str) -> dict:
        """The regime a model's numbers were computed in: the run's, with the precision, kernels
        and CPU threads it was trained with (a cached model keeps those of its training)."""
        from .. import regime

        r = dict(self.plan.regime)
        trained = self.result(name).trained_in if name not in self.fixed else {}
        if trained:
            rt = self.plan.runtime
            r.update(regime.of_run(self.plan.device.type, trained.get("precision", rt.precision),
                                   int(trained.get("cpu_threads") or r.get("threads") or 1), trained))
            r["kernels"] = trained.get("kernels", r.get("kernels"))
            r["torch"] = str(trained.get("torch", r["torch"])).split("+")[0]
        return r

    def samples(self, name: str, split: str = "test") -> metrics.Samples:
        return self.evaluation(name).samples(split)

    def value(self, name: str, metric: str, index: int | None = None) -> float:
        """A registry metric of one model; raises NotApplicable when it does not apply."""
        return self.evaluation(name).value(metric, index)

    def seed_values(self, model: str, metric: str, index: int | None = None) -> list[float]:
        return [self.value(m, metric, index) for m in self.plan.replicas(model)]

    def attention_set(self, model: str) -> tuple[np.ndarray, np.ndarray]:
        """The shared explanation set ``model`` is explained on, with the roles of each image:
        the union of the own sets (``measure.explanation_set``: named cases, most confident
        errors, right predictions of the same classes) of the run's models of the same training
        seed, the same images for each of them, so before/after is paired. Each model's gates
        read its own part only, so its numbers do not depend on which other models are in the run."""
        group = tuple(self.plan.same_seed(model))
        if group not in self._attention:
            roles: dict[int, list[str]] = {}
            for m in group:
                for p, r in zip(*self.evaluation(m).own_set()):
                    roles.setdefault(int(p), []).extend(str(r).split(","))
            self._attention[group] = as_set(roles)
        return self._attention[group]

    def shared_attention(self, name: str):
        """The model's Grad-CAM scores on the shared explanation set of its seed's models, where a
        test measured its attention (None otherwise: the report shows what tests asked for)."""
        ev = self.evaluation(name)
        return ev.evidence("shared_attention") if ev.has("attention") else None

    def load_evaluations(self, names) -> None:
        """Evaluate ``names`` in this process with the evidence other processes stored (the
        models come from the cache: the workers trained them)."""
        for name in self.plan.models:
            if name in names and name not in self.diverged:
                self.evaluation(name).preload()

    # ------------------------------------------------------------------ changes and effects
    def paired_change(self, model: str, metric: str) -> dict:
        """The candidate-minus-baseline change of a paired metric with its bootstrap interval
        (computed once: a gate and the report's effect check ask for the same one)."""
        if (model, metric) not in self._changes:
            kind = metrics.get(metric).needs[0]
            base = self.plan.baseline_of(model)
            self._changes[model, metric] = self._paired(
                "paired_change", base, model, {"metric": metric, "evidence": kind},
                lambda: compare.paired_interval(metric, self.evaluation(base).evidence(kind),
                                                self.evaluation(model).evidence(kind)))
        return dict(self._changes[model, metric])

    def _paired(self, kind: str, base: str, model: str, context: dict, compute):
        """A paired statistic of two models, from the evidence cache when both models are known by
        their keys (a bootstrap of a thousand resamples is seconds; it cannot change while the
        models, the data and the comparing code stay the same), else computed."""
        cache = self.evidence_cache
        ka, kb = self.evaluation(base).model_key, self.evaluation(model).model_key
        if cache is None or ka is None or kb is None:
            return compute()
        ctx = {"data": self.data.fingerprint, "n_boot": compare.BOOTSTRAP_SAMPLES, "seed": compare.BOOTSTRAP_SEED,
               "level": compare.LEVEL, **context}
        return cache.get_or_measure(EvidenceCache.key(f"{ka}|{kb}", kind, ctx), lambda: (compute(), {}))[0]

    def seed_change(self, model: str, metric: str) -> dict:
        """The paired change of ``metric`` seed by seed (each candidate seed against the baseline
        of the same seed): the mean change, its 95% t-interval across seeds (training-run
        spread), the share of seeds on which the candidate is better, and the first seed's
        bootstrap interval over test images (sampling spread)."""
        pairs = [(m, self.plan.baseline_of(m)) for m in self.plan.replicas(model)]
        deltas = [self.value(m, metric) - self.value(b, metric) for m, b in pairs]
        direction = metrics.get(metric).direction
        return {"metric": metric, "deltas": deltas, "delta": float(np.mean(deltas)),
                "seed_ci": compare.seed_interval(deltas), "better_share": compare.better_share(deltas, direction),
                "bootstrap_ci": self.paired_change(pairs[0][0], metric)["ci"] if metrics.get(metric).paired else None,
                "direction": direction}

    def effect_family(self, model: str) -> list[str]:
        """The metrics of a candidate's documented effects (its ``*_effect`` gates and the
        recipe's documented effect): one family, Holm-corrected together."""
        found = [] if self.plan.gates is None else [
            g.metric for g in self.plan.gates.relative(self.plan.dataset_name, self.plan.gate_profile, model).values()
            if g.kind == "effect"]
        effect = recipes.DOCUMENTED_EFFECTS.get(recipe_of(model))
        return list(dict.fromkeys(found + ([] if effect is None else [c[0] for c in effect.checks])))

    def effect_decision(self, model: str, metric: str, expect: str, margin: float) -> dict:
        """A documented effect decided across seeds: the per-seed changes (``seed_change``), the
        exact sign-flip test of them (``compare.effect_test``) and Holm's decision over the
        candidate's family of effects at ``compare.EFFECT_LEVEL``: {"held", "p", "level", ...}."""
        from ..gates import recipe_of as _recipe

        first = self.plan.replicas(model)[0]
        key = (first, "effects")
        if key not in self._changes:
            tests = {}
            checks = {c[0]: c for c in (recipes.DOCUMENTED_EFFECTS[_recipe(first)].checks
                                        if _recipe(first) in recipes.DOCUMENTED_EFFECTS else [])}
            for g in ([] if self.plan.gates is None else
                      self.plan.gates.relative(self.plan.dataset_name, self.plan.gate_profile, first).values()):
                if g.kind == "effect":
                    checks[g.metric] = (g.metric, str(g.bound), g.margin)
            for name in self.effect_family(first):
                if name not in checks:
                    continue
                try:
                    sc = self.seed_change(first, name)
                except NotApplicable:
                    continue
                _, exp, mar = checks[name]
                tests[name] = {**sc, **compare.effect_test(sc["deltas"], exp, sc["direction"], mar)}
            decided = compare.holm({k: v["p"] for k, v in tests.items()})
            self._changes[key] = {k: {**v, "held": decided[k][0], "level": decided[k][1], "family": len(tests)}
                                  for k, v in tests.items()}
        family = self._changes[key]
        if metric not in family:  # an effect gate outside the family (its metric does not apply): tested alone
            sc = self.seed_change(first, metric)
            t = compare.effect_test(sc["deltas"], expect, sc["direction"], margin)
            return {**sc, **t, "held": t["p"] <= compare.EFFECT_LEVEL, "level": compare.EFFECT_LEVEL, "family": 1}
        return family[metric]

    def effect_basis(self, model: str) -> str:
        """What a documented effect of ``model`` can be decided on: ``"checkpoints"`` (both
        models are fixed artefacts: the paired interval over test images is the claim),
        ``"seeds"`` (both trained by the harness with at least MIN_EFFECT_SEEDS paired seeds:
        the interval across seeds), or ``"undecided"`` (one training run says nothing about a
        recipe's effect)."""
        base = self.plan.baseline_of(model)
        self.evaluation(model), self.evaluation(base)  # noqa: B018 - trains or loads both: who made them
        if model in self.fixed and base in self.fixed:
            return "checkpoints"
        if model in self.fixed or base in self.fixed:
            return "undecided"
        return "seeds" if len(self.plan.replicas(model)) >= MIN_EFFECT_SEEDS else "undecided"

    def effect_check(self, name: str, metric: str, expect: str, margin: float) -> dict:
        """One documented effect of a candidate for the report: the change with its bootstrap
        interval over test images, and where the run can decide it (``effect_basis``) the
        verdict on the interval that decides it (across seeds, or over test images for two
        fixed checkpoints) with the share of seeds on which the candidate is better."""
        try:
            d = self.paired_change(name, metric)
        except NotApplicable as exc:
            return {"metric": metric, "expect": expect, "margin": margin, "delta": None, "ci": None, "held": None,
                    "basis": None, "not_applicable": str(exc)}
        out = {"metric": metric, "expect": expect, "margin": margin, "delta": d["delta"], "ci": d["ci"],
               "basis": self.effect_basis(name), "held": None}
        if out["basis"] == "checkpoints":
            out["held"] = compare.effect_holds(expect, d["ci"], d["direction"], margin)
        elif out["basis"] == "seeds":
            sc = self.effect_decision(name, metric, expect, margin)
            out.update(seed_delta=sc["delta"], seed_ci=sc["seed_ci"], deltas=sc["deltas"],
                       better_share=sc["better_share"], p=sc["p"], level=sc["level"], held=sc["held"])
        return out

    def comparison(self, name: str) -> dict:
        """Candidate vs baseline on the same test images, with the documented effect judged."""
        if name not in self._comparisons:
            against = self.plan.baseline_of(name)
            out = self._paired("comparison", against, name, {"metrics": list(compare.COMPARED)},
                               lambda: compare.compare(self.samples(against), self.samples(name)))
            out["against"] = against
            effect = recipes.DOCUMENTED_EFFECTS.get(recipe_of(name))
            out["expected_effect"] = None if effect is None else f"{effect.text} ({effect.source})"
            checks = [] if effect is None else [self.effect_check(name, *c) for c in effect.checks]
            decided = [c["held"] for c in checks if c["held"] is not None]
            out["effect_held"] = all(decided) if decided and len(decided) == len(checks) else None
            out["effect_checks"] = checks
            a, b = self.shared_attention(against), self.shared_attention(name)
            if a is not None and b is not None:
                out["attention_deltas"] = compare.paired_intervals(ATTENTION_COMPARED, a, b)
            self._comparisons[name] = out
        return self._comparisons[name]

    def seed_summary(self) -> dict:
        """With ``--seeds N``: each recipe's metrics over its seeds (mean, std, range, interval)
        and each candidate's paired change seed by seed; empty otherwise."""
        out: dict = {"recipes": {}, "changes": {}}
        if self.plan.options.seeds < 2:
            return out
        done = tuple(self.trained)  # asked by the record and the terminal summary: computed once
        if self._seed_summary is not None and self._seed_summary[0] == done:
            return self._seed_summary[1]
        for recipe in dict.fromkeys(recipe_of(m) for m in self.trained):
            models = [m for m in self.plan.replicas(recipe) if m in self._evaluations]
            if len(models) < 2:
                continue
            per = {}
            for metric in SPREAD_METRICS:
                try:
                    per[metric] = compare.seed_spread([self.value(m, metric) for m in models])
                except NotApplicable:
                    continue
            out["recipes"][recipe] = per
            if recipe != "baseline" and all(self.plan.baseline_of(m) in self._evaluations for m in models):
                changes = {}
                for metric in SPREAD_METRICS:
                    try:
                        changes[metric] = self.seed_change(recipe, metric)
                    except NotApplicable:
                        continue
                out["changes"][recipe] = changes
        self._seed_summary = (done, out)
        return out

    # ------------------------------------------------------------------ the report's gallery
    def gallery_ids(self) -> list[int]:
        """Test ids of the failure cases the report follows through every model (the Grad-CAM
        gallery and the per-case folders): the named cases, then the baseline's most confident
        errors, then each candidate's own most confident errors not shown yet."""
        ids = self.plan.named_positions()
        per_model = [(m, GALLERY_SIZE if m == "baseline" else GALLERY_SIZE + 2 * (i + 1))
                     for i, m in enumerate(self.trained)]
        for m, upto in per_model:
            smp = self.samples(m)
            for i in metrics.most_confident_errors(smp):
                if len(ids) >= upto:
                    break
                if int(smp.ids[i]) not in ids:
                    ids.append(int(smp.ids[i]))
        return ids

    def gallery_cams(self, name: str, ids: list[int]) -> np.ndarray:
        """Grad-CAM maps of one model on the gallery's images, for its own predictions."""
        import torch

        if not getattr(self.result(name).model, "differentiable", True):
            raise NotApplicable(f"{name} is an ONNX graph: it has no gradients for Grad-CAM")
        images = evaluate.to_float(self.data.test_x[torch.as_tensor(ids)])
        preds = self.samples(name).pred[ids]
        s = self.plan.settings
        return explain.gradcam(self.result(name).model, images, preds.tolist(), self.plan.device,
                               layer=s.cam_layer, method=s.cam_method)
