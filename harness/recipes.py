"""Training recipes as frozen dataclasses, the seeds' recipes, profiles and improvements.

A recipe is data: everything that decides what a trained model computes is a field, so
its hash (with the data fingerprint and the model code version) keys the model cache.

* ``full`` profile: the seed recipe exactly.
* ``smoke`` profile: the same recipe on a subset for a few epochs, small enough for CI on
  2 CPU cores (the smoke profile card's ``shrink``, harness/cards.py); it has its own gates.

Improvements (``IMPROVEMENTS``) are recipe variants that change only the fields they name;
``improve(recipe, name)`` applies one to any baseline.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path

from . import cards
from .io import plain_name

PROFILES = cards.PROFILE_NAMES


@dataclass(frozen=True)
class Recipe:
    name: str
    dataset: str
    arch: str
    # optimisation
    optimizer: str  # "adam" | "sgd"
    lr: float
    batch_size: int
    epochs: int
    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    milestones: tuple[int, ...] = ()  # epochs at which lr is multiplied by gamma
    gamma: float = 0.1
    seed: int = 42
    # augmentation (batched tensor ops, training only)
    hflip: float = 0.0  # probability of a horizontal flip
    rotation: float = 0.0  # max degrees, uniform in [-rotation, rotation]
    crop_padding: int = 0  # random crop to the input size after zero padding
    color_jitter: float = 0.0  # strength s: brightness, contrast, saturation factors in [1-s, 1+s]
    cutmix_alpha: float = 0.0
    cutmix_prob: float = 0.0
    mixup_alpha: float = 0.0
    mixup_prob: float = 0.0
    # loss
    label_smoothing: float = 0.0
    loss: str = "ce"  # "ce" | "focal"
    focal_gamma: float = 2.0
    class_weights: bool = False  # inverse-frequency weights of the training labels
    fgsm_eps: float = 0.0  # adversarial training: train on FGSM examples at this L-inf eps
    # post-hoc
    temperature_scaling: bool = False  # fit a temperature on the validation split
    # data
    train_subset: int = 0  # 0 = the whole training split; else a seeded subset of this size
    imbalance: float = 1.0  # long-tailed subsample: class k keeps imbalance**(k/(K-1)) of its images
    max_steps: int = 0  # 0 = no cap; else stop after this many optimiser steps

    def __post_init__(self):
        # Types first, each field named: a recipe file can say anything. Then 10 and 10.0 are
        # the same recipe: ints given for float fields are normalised so equal recipes hash equally.
        problems = []
        for f in fields(self):
            v = getattr(self, f.name)
            want = _FIELD_TYPES[f.type]
            if f.type == "float" and isinstance(v, int) and not isinstance(v, bool):
                object.__setattr__(self, f.name, float(v))
            elif f.type == "tuple[int, ...]" and isinstance(v, list | tuple):
                if not all(isinstance(e, int) and not isinstance(e, bool) for e in v):
                    problems.append(f"{f.name}={v!r} (a list of whole numbers, e.g. [25, 40])")
                else:
                    object.__setattr__(self, f.name, tuple(v))
            elif not isinstance(v, want) or (want is not bool and isinstance(v, bool)):
                problems.append(f"{f.name}={v!r} ({_TYPE_WORDS[f.type]}, not {type(v).__name__})")
            elif f.type == "float" and not math.isfinite(v):
                problems.append(f"{f.name}={v!r} (a finite number)")
        if problems:
            raise ValueError(f"invalid recipe {self.key}: " + "; ".join(problems))
        if self.optimizer not in ("adam", "sgd"):
            problems.append(f"optimizer={self.optimizer!r} (use 'adam' or 'sgd')")
        if self.loss not in ("ce", "focal"):
            problems.append(f"loss={self.loss!r} (use 'ce' or 'focal')")
        for name in ("lr", "batch_size", "epochs"):
            if getattr(self, name) <= 0:
                problems.append(f"{name}={getattr(self, name)} (must be > 0)")
        if not 0 <= self.seed <= 2**32 - 1:  # torch and numpy seed with an unsigned 32-bit number
            problems.append(f"seed={self.seed} (a seed from 0 to {2**32 - 1})")
        for name in ("hflip", "cutmix_prob", "mixup_prob"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name}={getattr(self, name)} (a probability in [0, 1])")
        if not 0 <= self.label_smoothing < 1:
            problems.append(f"label_smoothing={self.label_smoothing} (in [0, 1))")
        if not 0 < self.imbalance <= 1:
            problems.append(f"imbalance={self.imbalance} (in (0, 1]; 1 = balanced)")
        if not 0 <= self.color_jitter < 1:
            problems.append(f"color_jitter={self.color_jitter} (in [0, 1))")
        if self.cutmix_prob > 0 and self.cutmix_alpha <= 0 or self.mixup_prob > 0 and self.mixup_alpha <= 0:
            problems.append("cutmix/mixup with a probability > 0 need alpha > 0")
        if min((*self.milestones, 1)) < 1:
            problems.append(f"milestones={self.milestones} (epochs >= 1)")
        if problems:
            raise ValueError(f"invalid recipe {self.key}: " + "; ".join(problems))

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.name}"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    def hash(self) -> str:
        """Stable across runs and Python versions; changes with every field."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def diff(self, other: Recipe) -> dict[str, tuple]:
        """Fields whose values differ: {field: (self's, other's)}."""
        return {
            f.name: (getattr(self, f.name), getattr(other, f.name))
            for f in fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        }


_FIELD_TYPES = {"str": str, "float": float, "int": int, "bool": bool, "tuple[int, ...]": tuple}
_TYPE_WORDS = {"str": "a string", "float": "a number", "int": "a whole number", "bool": "true or false",
               "tuple[int, ...]": "a list of whole numbers"}


# ------------------------------------------------------------------ seed recipes (full profile)

# The seeds' baselines: each dataset card's recipe (harness/cards.py says which seed and why).
BASELINES = {name: Recipe(name="baseline", dataset=name, **card.baseline) for name, card in cards.DATASETS.items()}
_FMNIST = Recipe(name="baseline", dataset="fashion-mnist", **cards.SMALL_CNN_RECIPE)  # for data of one's own
_CIFAR100 = Recipe(name="baseline", dataset="cifar100", **cards.RESNET_RECIPE)

# Improvements: each changes only the fields it names (tests check the recipe diff).
IMPROVEMENTS: dict[str, dict] = {
    "augment": {"hflip": 0.5, "rotation": 10.0},  # seed 000
    "cutmix": {"cutmix_alpha": 1.0, "cutmix_prob": 0.5, "label_smoothing": 0.1},  # seed 001
    "cutmix-only": {"cutmix_alpha": 1.0, "cutmix_prob": 0.5},
    "label-smoothing": {"label_smoothing": 0.1},  # seed 004
    # mixup: alpha 0.2 is the value Zhang et al. (2018) used for ImageNet and torchvision's
    # reference recipes use; applied to every batch.
    "mixup": {"mixup_alpha": 0.2, "mixup_prob": 1.0},
    "color-jitter": {"color_jitter": 0.2},  # seed 003's robust augmentor: brightness, contrast, saturation 0.8-1.2
    "temperature-scaling": {"temperature_scaling": True},
    "class-weights": {"class_weights": True},
    "focal-loss": {"loss": "focal", "focal_gamma": 2.0},
    "fgsm-training": {"fgsm_eps": 2 / 255},  # datasets of one's own; built-in ones: their card's budget
}
# Adversarial training at the budget it is attacked with: the dataset card's fgsm_training_eps
# (a test keeps it equal to the reference budget). On Fashion-MNIST 2/255 is below one grey
# level's worth of change on its near-binary images and measured +3.2 pp [-0.8, +7.2] FGSM
# accuracy at 0.05 (smoke): no effect; 0.05 is what it is attacked with.


@dataclass(frozen=True)
class Effect:
    """What an improvement is documented to do, as paired checks against the baseline: each
    (metric, expectation, margin) holds when the 95% interval of the change lies on the
    metric's improving side ("improves"), or when its harmful end is within ``margin`` of no
    change ("not_worse": a non-inferiority margin, in the metric's units). The interval is
    the one across training seeds (a recipe's effect varies with the run), or over test
    images when both models are fixed checkpoints."""

    text: str
    source: str
    checks: tuple[tuple[str, str, float], ...]


# The largest drop in balanced accuracy still accepted as "kept" (1 point): smaller than the
# smallest change the seeds' studies report as an effect, larger than the spread of the mean
# paired change over 5 seeds (sd 0.3 points at smoke, gates/fashion-mnist.smoke-imbalance.toml).
KEPT_MARGIN = 0.01

DOCUMENTED_EFFECTS: dict[str, Effect] = {
    "augment": Effect("lower test loss at about the same accuracy, fewer >=99%-confident errors",
                      "seed 000: loss 0.3203 -> 0.2168",
                      (("loss", "improves", 0.0), ("confident_errors_99", "improves", 0.0))),
    "cutmix": Effect("higher accuracy and far fewer >=99%-confident errors",
                     "seed 001: 60.69% -> 75.70%, >=99% errors 54 -> 1",
                     (("accuracy", "improves", 0.0), ("confident_errors_99", "improves", 0.0))),
    "cutmix-only": Effect("fewer >=99%-confident errors", "seed 001 (CutMix without label smoothing)",
                          (("confident_errors_99", "improves", 0.0),)),
    "label-smoothing": Effect("fewer >=99%-confident errors at about the same accuracy", "seed 004",
                              (("confident_errors_99", "improves", 0.0),)),
    "mixup": Effect("less overconfidence", "Zhang et al. 2018; Thulasidasan et al. 2019",
                    (("ece_over", "improves", 0.0),)),
    "color-jitter": Effect("better accuracy under brightness and contrast changes", "seed 003 (robust augmentor)",
                           (("brightness_accuracy", "improves", 0.0), ("contrast_accuracy", "improves", 0.0))),
    "temperature-scaling": Effect("lower test NLL with the baseline's predictions", "Guo et al. 2017",
                                  (("loss", "improves", 0.0),)),
    # balanced accuracy: "not_worse", because on a balanced test set it moves only with accuracy
    "class-weights": Effect("higher worst-class accuracy on a long-tailed training set, balanced accuracy kept",
                            "seed 003 (class imbalance)",
                            (("worst_class_accuracy", "improves", 0.0), ("balanced_accuracy", "not_worse", KEPT_MARGIN))),
    "focal-loss": Effect("higher worst-class accuracy on a long-tailed training set, balanced accuracy kept",
                         "Lin et al. 2017; seed 003",
                         (("worst_class_accuracy", "improves", 0.0), ("balanced_accuracy", "not_worse", KEPT_MARGIN))),
    # judged on AutoAttack, not FGSM: a model trained against FGSM can mask its gradients, so that
    # FGSM and PGD overestimate its robustness (the reference attack is measured with --autoattack N)
    "fgsm-training": Effect("higher accuracy under attack (AutoAttack, the reference)", "seed 003 (adversarial training)",
                            (("autoattack_accuracy", "improves", 0.0),)),
}
# Improvements that fix class imbalance need imbalance to fix: they run on a long-tailed
# subsample of the training set (the dataset card's ratio: class k keeps ratio**(k/(K-1)) of
# its images), baseline included, and are bounded by the <profile>-imbalance gates.
LONG_TAILED = ("class-weights", "focal-loss")


def gate_profile_of(improvement: str, profile: str) -> str:
    """The gates.toml profile an improvement's session is bounded by."""
    return cards.gate_profile(profile, 0.5 if improvement in LONG_TAILED else 1.0)


# The improvement each seed compared against its baseline: the suite's default candidate.
DEFAULT_CANDIDATE = {n: c.default_candidate for n, c in cards.DATASETS.items() if c.default_candidate}

# Smoke profile: the recipe on a seeded subset for a few epochs (the smoke profile card's
# ``shrink``, by dataset, else by architecture for a dataset of one's own). Fashion-MNIST: a
# baseline and its improvement train in about a minute each on 2 CPU cores and still reach ~87%.


def baseline_for(dataset: str, image_shape: tuple[int, int, int], arch: str | None = None) -> Recipe:
    """The baseline of a dataset: the seed's recipe for a built-in one; for one's own, seed 000's
    small CNN and Adam recipe for grey or small (< 32 px) images, seed 001's ResNet-18 and SGD
    recipe otherwise (``arch`` overrides the architecture, keeping the recipe)."""
    if dataset in BASELINES:
        base = BASELINES[dataset]
    else:
        c, h, w = image_shape
        base = replace(_FMNIST if c == 1 or min(h, w) < 32 else _CIFAR100, dataset=dataset)
    return base if arch is None else replace(base, arch=arch)


def get(dataset: str, name: str = "baseline", profile: str = "full", base: Recipe | None = None) -> Recipe:
    """The recipe ``dataset/name`` in a profile; ``name`` is 'baseline' or an improvement;
    ``base``: the baseline to start from (``baseline_for``; default: the seed's)."""
    if base is None and dataset not in BASELINES:
        raise ValueError(f"unknown dataset {dataset!r}: choose one of {', '.join(BASELINES)} (or give its baseline)")
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}: choose one of {', '.join(PROFILES)}")
    recipe = base if base is not None else BASELINES[dataset]
    if name != "baseline":
        recipe = improve(recipe, name)
    return apply_profile(recipe, profile)


def improve(recipe: Recipe, improvement: str) -> Recipe:
    if improvement not in IMPROVEMENTS:
        raise ValueError(
            f"unknown improvement {improvement!r}: choose one of baseline, {', '.join(IMPROVEMENTS)}"
        )
    fields = dict(IMPROVEMENTS[improvement])
    if improvement == "fgsm-training" and recipe.dataset in cards.DATASETS:
        fields["fgsm_eps"] = cards.DATASETS[recipe.dataset].fgsm_training_eps
    return replace(recipe, name=improvement, **fields)


def apply_profile(recipe: Recipe, profile: str) -> Recipe:
    if profile == "full":
        return recipe
    if profile == "smoke":
        shrink = cards.profile(profile).shrink
        return replace(recipe, **shrink.get(recipe.dataset, shrink.get(recipe.arch, shrink["small-cnn"])))
    raise ValueError(f"unknown profile {profile!r}: choose one of {', '.join(PROFILES)}")


def names() -> list[str]:
    return ["baseline", *IMPROVEMENTS]


def from_file(path: str | Path, dataset: str, profile: str, base_recipe: Recipe | None = None) -> Recipe:
    """A user recipe from TOML: ``name``, optional ``base`` (baseline or an improvement),
    and any Recipe fields to override, e.g.::

        name = "wide-lr"
        base = "baseline"
        lr = 3e-3
        [smoke]        # optional: overrides applied only in the smoke profile
        epochs = 1
    """
    path = Path(path)
    try:
        spec = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read recipe file {path}: {exc}") from exc
    name = spec.pop("name", path.stem)
    base = spec.pop("base", "baseline")
    plain_name(name, f"{path}: name")  # it names the model's files: never a path out of the run
    if not isinstance(base, str) or base not in names():
        raise ValueError(f"{path}: base = {base!r}: choose one of {', '.join(names())}")
    per_profile = {p: spec.pop(p, {}) for p in PROFILES}
    valid = {f.name for f in fields(Recipe)} - {"name", "dataset", "arch"}
    for p, section in per_profile.items():
        if not isinstance(section, dict):
            raise ValueError(f"{path}: [{p}] must be a table of recipe fields")
    overrides = {**spec, **per_profile[profile]}
    unknown = sorted((set(spec) | {k for sec in per_profile.values() for k in sec}) - valid)
    if unknown:
        raise ValueError(
            f"{path}: unknown recipe field(s) {', '.join(unknown)}; valid fields: {', '.join(sorted(valid))}"
        )
    recipe = get(dataset, base, profile, base_recipe)
    try:
        return replace(recipe, name=name, **overrides)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from exc

