"""The plan of a run, built once from its options before anything is trained: the dataset,
which models (recipes x seeds, and checkpoints the harness does not train), the gates that
apply to them, the device and the measuring settings. Every mistake a plan can see is an
error here, before any training."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from .. import cards, custom_data, data, explain, metrics, recipes, train
from .. import models as models_mod
from ..gates import SEED_MARK, Gates, recipe_of
from ..io import plain_name
from ..measure import Settings
from .options import Options

# A model the harness does not train: provider(recipe, data, device) -> nn.Module
Provider = Callable[[recipes.Recipe, data.Dataset, torch.device], torch.nn.Module]


def worker_device(device: torch.device) -> torch.device:
    """Under pytest-xdist with several GPUs, worker ``gwN`` trains on GPU ``N mod count``, so
    models train in parallel; otherwise ``device`` as it is."""
    import os

    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if device.type != "cuda" or device.index is not None or not worker.startswith("gw"):
        return device
    count = torch.cuda.device_count()
    return torch.device("cuda", int(worker[2:]) % count) if count > 1 else device


def weights_provider(path: Path) -> Provider:
    """A checkpoint (a state dict) as a model of the run, for any recipe's architecture."""
    def provide(recipe, ds, device):
        if Path(path).suffix.lower() == ".onnx":  # an ONNX file of one's own: run by onnxruntime as it is
            from .. import deploy

            return deploy.load_artifact(path, ds)
        return models_mod.load_weights(recipe.arch, ds, path)

    provide.weights_path = Path(path)  # what the model is: the evidence cache keys it by this file
    return provide


def probe(model: torch.nn.Module, ds: data.Dataset, what: str, finite: bool = True, trained: bool = True) -> None:
    """One batch of two training images through a model, before any training: it must give
    one finite logit per class for each image (a model of one's own that returns the wrong
    width, one output, or NaN is a usage error now, not a wrong number later), the same ones
    on a second pass (no dropout at evaluation) and for an image alone (no batch statistics)."""
    from ..evaluate import to_float

    x = to_float(ds.train_x[:2])
    try:
        with torch.no_grad():
            out = model.eval()(x)
    except Exception as exc:
        raise ValueError(f"{what} fails on a batch of {tuple(x.shape)} images in [0, 1]: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200] if str(exc) else ''}") from exc
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape != (len(x), ds.num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{what} returns {shape} for {len(x)} images; it must return logits of shape "
                         f"({len(x)}, {ds.num_classes}): one per class of {ds.name} ({', '.join(ds.classes[:4])}"
                         f"{', ...' if ds.num_classes > 4 else ''})")
    if finite and not torch.isfinite(out).all():
        fix = ("check the checkpoint (a diverged training run?) and its BatchNorm statistics" if trained else
               "freshly built, before any training: look at its forward() (a division by zero, a log of 0 or of a "
               "negative, an uninitialised buffer)")
        raise ValueError(f"{what} gives non-finite outputs (NaN or inf) in eval mode on the first training images: "
                         f"{fix}")
    batch_stats = ("BatchNorm using the batch's statistics (track_running_stats=False, or a layer left in training "
                   "mode), so a prediction would depend on what it was evaluated with. Use running statistics in eval "
                   "mode")
    with torch.no_grad():
        again = model.eval()(x)
        try:
            alone = model.eval()(x[:1])
        except Exception as exc:  # noqa: BLE001 - e.g. BatchNorm on batch statistics cannot take one image
            raise ValueError(f"{what} fails on one image alone in eval mode ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:160]}): {batch_stats}") from exc
    scale = float(out.detach().abs().max()) + 1e-6
    if not torch.isfinite(out).all():
        pass  # an untrained model's non-finite outputs are its training's problem (checked there)
    elif not torch.allclose(out, again, rtol=1e-4, atol=1e-5 * scale):
        raise ValueError(f"{what} gives other outputs for the same images on a second pass in eval mode: randomness at "
                         "evaluation (dropout called with training=True, noise or sampling in forward()), so every "
                         "number would change from run to run. Make forward() deterministic in eval mode")
    elif not torch.allclose(out[:1], alone, rtol=1e-3, atol=1e-4 * scale):
        raise ValueError(f"{what}: an image's outputs depend on the other images in its batch in eval mode (alone "
                         f"{[round(v, 4) for v in alone[0, :3].tolist()]} vs in a batch of {len(x)} "
                         f"{[round(v, 4) for v in out[0, :3].tolist()]}): {batch_stats}")
    if looks_like_probabilities(out):
        raise ValueError(f"{what} returns probabilities (every output in [0, 1], each row summing to 1), not logits: "
                         "the harness applies the softmax itself, so its confidences would be a softmax of "
                         "probabilities (a 100%-accurate model reads as underconfident). Remove the final softmax "
                         "(a log-softmax is fine)")


COPIED_SHARE_MAX = 0.5  # more of the test split found byte for byte in the training images: not held out


def check_held_out(ds: data.Dataset) -> None:
    """The test split must not be a copy of the training images: with more than half of its
    images found byte for byte among them (a copied folder, a split written twice), every
    number would measure memory, not generalisation; refused before training. (Near-duplicates
    short of that are the leakage family's to measure.)"""
    import hashlib

    def digests(x) -> list[bytes]:
        a = x.numpy() if hasattr(x, "numpy") else x
        return [hashlib.blake2b(img.tobytes(), digest_size=16).digest() for img in a]

    train = set(digests(ds.train_x))
    test = digests(ds.test_x)
    copied = sum(d in train for d in test)
    if test and copied > COPIED_SHARE_MAX * len(test):
        raise ValueError(f"{ds.name}: {copied} of {len(test)} test images are byte-for-byte copies of training images: "
                         "the test split is not held out (a copied folder, or the training split written twice), so "
                         "every number would measure memory. Give a test split of other images")


def looks_like_probabilities(out: torch.Tensor) -> bool:
    """Outputs that are a softmax's: in [0, 1], each row summing to 1 (logits never are)."""
    out = out.detach().float()
    return bool(out.shape[-1] > 1 and torch.isfinite(out).all() and (out >= 0).all() and (out <= 1).all()
                and torch.allclose(out.sum(-1), torch.ones(out.shape[0]), atol=1e-4))


@dataclass
class Plan:
    options: Options
    gates: Gates | None  # None: a plan that trains only (python -m harness train): no gate is checked
    providers: dict[str, Provider] = field(default_factory=dict)  # model name -> a model of its own
    dataset: data.Dataset | None = None  # given: used instead of loading options.dataset
    recipes: dict[str, recipes.Recipe] = field(default_factory=dict)

    def __post_init__(self):
        o = self.options
        self.device = worker_device(train.resolve_device(o.device))
        self.runtime = train.Runtime.default(self.device, deterministic=o.deterministic, compile=o.compile,
                                             precision=o.precision)
        builtin = o.dataset in data.DATASETS
        if not builtin and self.dataset is None:  # one's own data: its shape decides the baseline, read now
            self.dataset = custom_data.load(o.dataset, o.image_size, o.datasets_file, o.flip_invariant)
        shape = self.dataset.image_shape if self.dataset is not None else None
        self._plan_recipes(builtin, shape)
        if self.gates is not None:
            known = (*data.DATASETS, *custom_data.registered(o.datasets_file))
            self.gates.check_run(self.dataset_name, self.gate_profile, self.models, known_datasets=known,
                                 known_models=recipes.names())
        self._set_threads()
        if o.cam_layer is not None:  # checked now, before any training: the layer must exist
            for r in {r.arch: r for r in self.recipes.values()}.values():
                probe = models_mod.build(r.arch, r.dataset, 10, 3 if shape is None else shape[0], shape)
                try:
                    explain.resolve_layer(probe, o.cam_layer)
                except ValueError as exc:
                    raise ValueError(f"--cam-layer {o.cam_layer!r} does not fit {r.arch}: {exc}") from None

    # ------------------------------------------------------------------ the regime
    def calibrations(self) -> dict[str, dict]:
        """The calibrated tables that bound this run's models: {file label: its [calibration]}."""
        if self.gates is None:
            return {}
        return self.gates.calibrations_for(self.dataset_name, self.gate_profile, self.models)

    def _set_threads(self) -> None:
        """CPU threads: ``--threads``, else ``OMP_NUM_THREADS``, else the reference count where
        calibrated bounds gate the run (``regime.REFERENCE_THREADS``: the counts they were measured
        at), else every core; pytest-xdist workers share the cores."""
        import os

        from .. import regime

        if self.device.type != "cpu":
            return
        workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
        if self.options.threads:
            torch.set_num_threads(self.options.threads)
        elif "OMP_NUM_THREADS" in os.environ:
            return
        elif self.calibrations():
            torch.set_num_threads(regime.default_threads(workers))
        elif workers > 1:  # N workers with every core each would oversubscribe the CPU
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))

    @property
    def regime(self) -> dict:
        """The arithmetic this run trains and measures in (``harness.regime``)."""
        from .. import regime

        return regime.of_run(self.device.type, self.runtime.precision, torch.get_num_threads(),
                             self.runtime.key_fields())

    def regime_notes(self) -> list[str]:
        """One line per calibrated table: whether it gates this run, and if not, why."""
        from .. import regime

        out = []
        for label, cal in self.calibrations().items():
            differs = regime.mismatch(self.regime, cal.get("regime"), cal.get("threads"))
            if differs:
                out.append(f"{label}: calibrated in another regime ({'; '.join(differs)}): its bounds are "
                           f"REPORTED, NOT GATED. {regime.HOW_TO_MATCH}")
            else:
                out.append(f"{label}: calibrated in this regime ({regime.describe(self.regime)}): gated")
        return out

    def _plan_recipes(self, builtin: bool, shape) -> None:
        """Baseline, candidates, recipe files, the base seed, checkpoints, imbalance, seeds."""
        o, name = self.options, self.dataset_name
        arch = o.arch
        if arch and arch.startswith("timm:"):
            from .. import timm_zoo

            arch = timm_zoo.route(arch)
        arch = models_mod.resolve_arch(arch) if arch else None
        base = recipes.baseline_for(name, shape, arch) if (not builtin or arch) else None
        self.recipes["baseline"] = recipes.get(name, "baseline", o.profile, base)
        for cand in self.candidates_asked(builtin):
            self.recipes[cand] = recipes.get(name, cand, o.profile, base)
        for path in o.recipe_files:
            r = recipes.from_file(path, name, o.profile, base)
            if r.name in recipes.names() or r.name in self.recipes:
                what = "a built-in recipe" if r.name in recipes.names() else "another model of this run"
                raise ValueError(
                    f"recipe file {path} names its recipe {r.name!r}, the name of {what}: it would replace that model "
                    f"and every comparison against it. Rename it (name = \"my-{r.name}\" in {path.name}).")
            self.recipes[r.name] = r
        if o.seed is not None:
            self.recipes = {n: replace(r, seed=o.seed) for n, r in self.recipes.items()}
        for model, path in o.candidate_weights.items():
            plain_name(model, f"--weights {model}={path}: the model's name")
            if model in self.recipes or model in self.providers:
                raise ValueError(f"--weights {model}={path}: {model!r} is already a model of this run; name the "
                                 f"checkpoint otherwise (--weights my-{model}={path})")
            self.providers[model] = weights_provider(path)
        for model in self.providers:
            self.recipes.setdefault(model, replace(self.recipes["baseline"], name=model))
        if o.imbalance != 1.0:  # every model, the baseline too, so the comparison stays fair
            self.recipes = {n: replace(r, imbalance=o.imbalance) for n, r in self.recipes.items()}
        if o.weights is not None:  # the baseline is the user's trained model: stressed as it is
            self.providers.setdefault("baseline", weights_provider(o.weights))
        if o.seeds > 1:
            if self.providers:
                raise ValueError(f"--seeds {o.seeds} trains every recipe {o.seeds} times: "
                                 f"{', '.join(self.providers)} is a model the harness does not train (--weights)")
            self.recipes = {m: r for n, first in self.recipes.items()
                            for m, r in [(n, first)] + [(f"{n}{SEED_MARK}{first.seed + i}", replace(first, seed=first.seed + i))
                                                        for i in range(1, o.seeds)]}

    def candidates_asked(self, builtin: bool) -> list[str]:
        """The candidates asked for; by default the built-in dataset's seed improvement (its
        card's), none for one's own data or model."""
        o = self.options
        if o.candidates is not None:
            return list(o.candidates)
        default = cards.DATASETS[o.dataset].default_candidate if builtin else None
        own_model = bool(o.weights or o.candidate_weights or (o.arch and ":" in o.arch))  # module:function
        return [default] if default and not own_model else []

    # ------------------------------------------------------------------ the data
    @property
    def dataset_name(self) -> str:
        """The dataset's name (gates.toml tables, recipes, test ids): the built-in name, or the
        registered / folder / file name of one's own."""
        return self.dataset.name if self.dataset is not None else self.options.dataset

    @property
    def data(self) -> data.Dataset:
        if self.dataset is None:
            self.dataset = data.load(self.options.dataset, self.options.data_root, download=self.options.download)
            self.dataset = self._evaluation_subset(self.dataset)
            self.validate()
        return self.dataset

    def _evaluation_subset(self, ds: data.Dataset) -> data.Dataset:
        """A built-in dataset as this run evaluates it: a costly model in the smoke profile on a
        CPU is evaluated on part of the validation and test splits (``cards.split_sizes``)."""
        g = self.model_gflop()
        n_val, n_test = cards.split_sizes(cards.profile(self.options.profile), g, self.device.type,
                                          len(ds.val_idx), len(ds.test_y))
        if (n_val, n_test) == (len(ds.val_idx), len(ds.test_y)):
            return ds
        outside = [i for i in cards.DATASETS[ds.name].named_cases if n_test <= i < len(ds.test_y)]
        why = (f"smoke profile on a CPU, a model of {g:.3g} GFLOP per image: harness/cards.py split_sizes; "
               "--profile full or a GPU evaluates every image"
               + (f"; the seed's named cases {', '.join(map(str, outside))} are outside it" if outside else ""))
        return data.evaluation_subset(ds, n_val, n_test, why)

    @property
    def card(self) -> cards.DatasetCard:
        return cards.for_data(self.data)

    def validate(self) -> None:
        """Checks that need the data (made before any training): the named cases exist, every
        class a per-class bound names exists, and a ``--weights`` file fits its model."""
        self.named_positions()
        check_held_out(self.data)
        if self.gates is not None:
            self.gates.check_classes(self.dataset_name, self.data.classes)
        checkpoints = {"baseline": self.options.weights} if self.options.weights is not None else {}
        checkpoints.update(self.options.candidate_weights)
        for model, path in checkpoints.items():
            what = f"{self.options.weights_flag if model == 'baseline' else '--weights'} {path}"
            if Path(path).suffix.lower() == ".onnx":  # its shape, classes and input convention against the data
                from .. import deploy

                probe(deploy.load_artifact(path, self.data, what), self.data, what)
                continue
            probe(models_mod.load_weights(self.recipes[model].arch, self.dataset, path), self.data, what)
        for arch in dict.fromkeys(r.arch for m, r in self.recipes.items() if m not in self.providers):
            try:
                built = models_mod.for_data(arch, self.data)
            except (TypeError, ValueError, RuntimeError, AttributeError) as exc:
                raise ValueError(f"the architecture {arch} cannot be built for {self.dataset_name} "
                                 f"({self.data.num_classes} classes, images {'x'.join(map(str, self.data.image_shape))}): "
                                 f"{type(exc).__name__}: {exc}") from exc
            own = ":" in arch  # module:function of the user's: an untrained model must still give finite logits
            probe(built, self.data, f"the architecture {arch}", finite=own, trained=False)
        if self.options.ood:  # one's own OOD set: read now (a missing or unreadable one is a usage error, once)
            from .. import ood

            own = ood.load_own(self.options.ood, self.data.image_shape)
            if len(own) < ood.MIN_OWN_IMAGES:
                raise ValueError(f"--ood {self.options.ood}: {len(own)} image(s); an AUROC or a mean confidence on fewer "
                                 f"than {ood.MIN_OWN_IMAGES} says little and would be gated: give at least "
                                 f"{ood.MIN_OWN_IMAGES} images")
            found = ood.screen(own, self.data.test_x)  # screened like the built-in sets: it must be out of distribution
            if not found["ood"]:
                raise ValueError(f"--ood {self.options.ood}: not out of distribution for {self.dataset_name}: "
                                 f"{found['why']}. An OOD set must be images of none of the classes (is it the test "
                                 "split, or a copy of it?)")
        if self.options.new_images:  # the same for the weak-segment inputs
            from ..segments import load_new_images

            load_new_images(self.options.new_images, self.data.image_shape, 1)
        if self.options.segment_metadata:
            from ..segments import read_metadata

            read_metadata(self.options.segment_metadata, self.data.test_names, len(self.data.test_y))
        import math

        n_train = len(self.data.train_idx)
        checked = [r for m, r in self.recipes.items() if m not in self.providers
                   and not (r.max_steps and r.max_steps < 3 * math.ceil(n_train / r.batch_size))]  # as training does
        if checked:
            self._check_validation_size()

    def _check_validation_size(self) -> None:
        """Training keeps a model only if its best validation accuracy is 3 standard errors above
        chance (``train.Trainer._check_not_chance``): on too small a validation split no model,
        not even a perfect one, can pass, and every test would fail alike after training."""
        import math

        n, k = len(self.data.val_idx), self.data.num_classes
        chance = 1.0 / k
        if chance + 3 * math.sqrt(chance * (1 - chance) / max(n, 1)) < 1:
            return
        need = math.floor(9 * chance / (1 - chance)) + 1
        raise ValueError(
            f"{self.dataset_name}: the validation split holds {n} image{'s' if n != 1 else ''}; training keeps a model "
            f"only if its validation accuracy is 3 standard errors above chance ({chance:.0%} for {k} classes), which "
            f"no model can show on fewer than {need}. Give more training images (the validation split is "
            f"{custom_data.VAL_FRACTION:.0%} of them) or a validation split of your own (x_val, y_val)")

    def named_positions(self) -> list[int]:
        """The named cases followed through every model: ``--cases`` (test ids, or file names of
        one's own data), else the seed's own (its dataset card's)."""
        if not self.options.cases:
            return [i for i in self.card.named_cases if i < len(self.data.test_y)]
        n = len(self.data.test_y)
        names = {v: i for i, v in enumerate(self.data.test_names or ())}
        out = []
        for case in self.options.cases:
            case = str(case).strip()
            if case.isdigit() and int(case) < n:
                out.append(int(case))
            elif case in names:
                out.append(names[case])
            else:
                what = f"a test id below {n}" + (" or a test file name such as " + repr(self.data.test_names[0])
                                                    if self.data.test_names else "")
                held = (f" (this run evaluates {self.data.subset})" if self.data.subset else "")
                raise ValueError(f"named case {case!r} is not in the test split{held}: give {what}")
        return list(dict.fromkeys(out))

    @property
    def settings(self) -> Settings:
        if getattr(self, "_settings", None) is None:
            o, p = self.options, cards.profile(self.options.profile)
            sizes = self.measurement_sizes()
            self._settings = Settings(profile=o.profile, stress_samples=sizes["stress_samples"],
                                      attack_samples=sizes["attack_samples"], cam_samples=sizes["cam_samples"],
                                      taxonomy_errors=sizes["taxonomy_errors"], severities=self.severities(),
                                      cam_method=o.cam_method, cam_layer=o.cam_layer,
                                      published=data.cifar_c(self.data, o.data_root), ood_images=sizes["ood_images"],
                                      ood_path=o.ood, new_images=o.new_images, segment_metadata=o.segment_metadata,
                                      data_root=o.data_root, conformal_alpha=o.conformal_alpha,
                                      selective_risk=o.selective_risk,
                                      autoattack_images=p.autoattack_images if o.autoattack is None else o.autoattack,
                                      cache_dir=self.evidence_dir)
        return self._settings

    @property
    def evidence_dir(self) -> str | None:
        """The evidence cache folder beside the model cache (None when the cache is off)."""
        from .. import cache

        if not self.options.use_cache:
            return None
        # absolute: Ray workers and pytest-xdist processes may run in another working directory
        return str(((self.options.cache_dir or cache.default_cache_dir()) / "evidence").expanduser().absolute())

    def ood_left_out(self) -> dict[str, str]:
        """Built-in OOD sets this run does not use, and why (``ood.screen``)."""
        from .. import ood

        s = self.settings
        return ood.left_out(self.data, s.data_root, s.ood_images, s.cache_dir)

    def model_gflop(self) -> float | None:
        """GFLOP per image of the baseline's architecture (what measurement sizes scale with on a
        CPU: ``cards.measurement_sizes``); None for a model the harness does not build."""
        if getattr(self, "_gflop", False) is False:
            recipe = self.recipes.get("baseline")
            self._gflop = None
            if recipe is not None and "baseline" not in self.providers:
                from .. import bench

                try:
                    self._gflop = bench.gflop_per_image(models_mod.for_data(recipe.arch, self.data),
                                                        self.data.image_shape)
                except (TypeError, ValueError, RuntimeError, AttributeError):
                    self._gflop = None
        return self._gflop

    def measurement_sizes(self) -> dict[str, int]:
        """Images per measurement for this run's models on its device (``cards.measurement_sizes``)."""
        return cards.measurement_sizes(cards.profile(self.options.profile), self.model_gflop(), self.device.type)

    def severities(self) -> tuple[int, ...]:
        """Corruption severities for this run's models on its device (``cards.severities_for``)."""
        return cards.severities_for(cards.profile(self.options.profile), self.model_gflop(), self.device.type)

    def labels_of(self, per: str) -> list[str]:
        """The labels a per-label metric takes one value for (``metrics.register_label_kind``):
        the classes, the OOD sets, ..."""
        if per not in metrics.LABELS:
            raise ValueError(f"unknown per-label kind {per!r}; one of {', '.join(metrics.LABELS)}")
        return metrics.LABELS[per](self)

    def label_index(self, per: str, label: str):
        """What a per-label metric's function is given for ``label``: a class's index, an OOD
        set's name."""
        return metrics.LABEL_VALUE[per](self, label)

    # ------------------------------------------------------------------ models
    @property
    def models(self) -> list[str]:
        return list(self.recipes)

    @property
    def candidates(self) -> list[str]:
        return [m for m in self.recipes if recipe_of(m) != "baseline"]

    def baseline_of(self, model: str) -> str:
        """The baseline a model is compared with: the baseline trained with the same seed."""
        same_seed = "baseline" + model[len(recipe_of(model)):]
        return same_seed if same_seed in self.recipes else "baseline"

    def replicas(self, model: str) -> list[str]:
        """The models of ``model``'s recipe, one per seed, first seed first."""
        return [m for m in self.models if recipe_of(m) == recipe_of(model)]

    def same_seed(self, model: str) -> list[str]:
        """The models trained with ``model``'s seed (the first seed's: those without ``@s``)."""
        seed = model[len(recipe_of(model)):]
        return [m for m in self.models if m[len(recipe_of(m)):] == seed]

    @property
    def seed_mean(self) -> bool:
        """Gates apply to the mean over seeds (gates.toml ``seed_gates = "mean"``)."""
        return self.options.seeds > 1 and self.gates is not None and self.gates.seed_gates == "mean"

    @property
    def gate_profile(self) -> str:
        return cards.gate_profile(self.options.profile, self.options.imbalance)
