"""harness.recipes: the seeds' recipes field by field, the recipe hash, improvements,
validation and TOML recipe files."""

from __future__ import annotations

import dataclasses
import re

import pytest

from harness import cards, metrics, recipes
from harness.recipes import Recipe

# Every field's default, spelled out (not read from the dataclass): a changed default
# changes every seed recipe and must show up here.
DEFAULTS = {
    "momentum": 0.0, "weight_decay": 0.0, "nesterov": False, "milestones": (), "gamma": 0.1, "seed": 42,
    "hflip": 0.0, "rotation": 0.0, "crop_padding": 0, "color_jitter": 0.0,
    "cutmix_alpha": 0.0, "cutmix_prob": 0.0, "mixup_alpha": 0.0, "mixup_prob": 0.0,
    "label_smoothing": 0.0, "loss": "ce", "focal_gamma": 2.0, "class_weights": False, "fgsm_eps": 0.0,
    "temperature_scaling": False, "train_subset": 0, "imbalance": 1.0, "max_steps": 0,
}

SEEDS = {
    ("fashion-mnist", "baseline"): {  # seed 000
        "name": "baseline", "dataset": "fashion-mnist", "arch": "small-cnn",
        "optimizer": "adam", "lr": 1e-3, "batch_size": 64, "epochs": 30, "seed": 42,
    },
    ("fashion-mnist", "augment"): {  # seed 000's improvement: flips and +-10 degree rotations
        "name": "augment", "dataset": "fashion-mnist", "arch": "small-cnn",
        "optimizer": "adam", "lr": 1e-3, "batch_size": 64, "epochs": 30, "seed": 42,
        "hflip": 0.5, "rotation": 10.0,
    },
    ("cifar100", "baseline"): {  # seed 001
        "name": "baseline", "dataset": "cifar100", "arch": "resnet18",
        "optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "epochs": 50,
        "milestones": (25, 40), "gamma": 0.1, "batch_size": 128, "crop_padding": 4, "hflip": 0.5, "seed": 42,
    },
    ("cifar100", "cutmix"): {  # seed 001's improvement
        "name": "cutmix", "dataset": "cifar100", "arch": "resnet18",
        "optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "epochs": 50,
        "milestones": (25, 40), "gamma": 0.1, "batch_size": 128, "crop_padding": 4, "hflip": 0.5, "seed": 42,
        "cutmix_alpha": 1.0, "cutmix_prob": 0.5, "label_smoothing": 0.1,
    },
    ("cifar10", "baseline"): {  # seed 004: seed 001's recipe on CIFAR-10
        "name": "baseline", "dataset": "cifar10", "arch": "resnet18",
        "optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "epochs": 50,
        "milestones": (25, 40), "gamma": 0.1, "batch_size": 128, "crop_padding": 4, "hflip": 0.5, "seed": 42,
    },
    ("cifar10", "label-smoothing"): {  # seed 004's improvement
        "name": "label-smoothing", "dataset": "cifar10", "arch": "resnet18",
        "optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "epochs": 50,
        "milestones": (25, 40), "gamma": 0.1, "batch_size": 128, "crop_padding": 4, "hflip": 0.5, "seed": 42,
        "label_smoothing": 0.1,
    },
}

# recipes.get("fashion-mnist", "baseline", "full").hash() when these tests were written: the
# hash keys the model cache, so it must not change by accident (Python version, dict order...).
FMNIST_BASELINE_HASH = "2f0ed0d7a93865a2"


@pytest.mark.parametrize("dataset,name", list(SEEDS), ids=[f"{d}/{n}" for d, n in SEEDS])
def test_full_profile_equals_the_seed_field_by_field(dataset, name):
    recipe = recipes.get(dataset, name, "full")
    expected = {**DEFAULTS, **SEEDS[(dataset, name)]}
    field_names = [f.name for f in dataclasses.fields(Recipe)]
    assert sorted(expected) == sorted(field_names), "a Recipe field is missing from DEFAULTS"
    for f in field_names:
        got, want = getattr(recipe, f), expected[f]
        assert got == want and type(got) is type(want), f"{recipe.key}.{f} = {got!r}, the seed says {want!r}"


def test_default_candidates_are_the_seeds_improvements():
    assert recipes.DEFAULT_CANDIDATE == {"fashion-mnist": "augment", "cifar10": "label-smoothing", "cifar100": "cutmix"}


@pytest.mark.parametrize("dataset", list(recipes.BASELINES))
@pytest.mark.parametrize("name", recipes.names())
def test_smoke_profile_changes_only_the_smoke_fields(dataset, name):
    full = recipes.get(dataset, name, "full")
    smoke = recipes.get(dataset, name, "smoke")
    diff = full.diff(smoke)
    assert set(diff) <= set(cards.PROFILES["smoke"].shrink[dataset])
    for f, v in cards.PROFILES["smoke"].shrink[dataset].items():
        assert getattr(smoke, f) == v
    assert smoke.train_subset > 0  # the smoke profile never trains on everything


def test_smoke_fashion_mnist_baseline():
    r = recipes.get("fashion-mnist", "baseline", "smoke")
    assert (r.train_subset, r.epochs, r.milestones) == (20_000, 3, ())
    assert (r.optimizer, r.lr, r.batch_size) == ("adam", 1e-3, 64)


# ------------------------------------------------------------------ hash


def test_hash_is_stable_and_16_hex():
    h = recipes.get("fashion-mnist", "baseline", "full").hash()
    assert re.fullmatch(r"[0-9a-f]{16}", h)
    assert h == FMNIST_BASELINE_HASH
    # equal recipes built independently hash equally
    assert Recipe(**{**DEFAULTS, **SEEDS[("fashion-mnist", "baseline")]}).hash() == h


# A different valid value for every field, applied to HASH_BASE (which has alphas > 0 so the
# mix probabilities may change alone).
HASH_BASE = dataclasses.replace(
    recipes.get("fashion-mnist", "baseline", "full"), cutmix_alpha=1.0, mixup_alpha=0.2, milestones=(10,)
)
OTHER_VALUE = {
    "name": "other", "dataset": "cifar10", "arch": "resnet18", "optimizer": "sgd", "lr": 2e-3,
    "batch_size": 128, "epochs": 31, "momentum": 0.9, "weight_decay": 1e-4, "nesterov": True,
    "milestones": (10, 20), "gamma": 0.2, "seed": 43, "hflip": 0.5, "rotation": 5.0, "crop_padding": 2,
    "color_jitter": 0.2, "cutmix_alpha": 0.5, "cutmix_prob": 0.5, "mixup_alpha": 0.4, "mixup_prob": 0.5,
    "label_smoothing": 0.1, "loss": "focal", "focal_gamma": 1.0, "class_weights": True, "fgsm_eps": 0.01,
    "temperature_scaling": True, "train_subset": 100, "imbalance": 0.5, "max_steps": 10,
}


def test_every_field_has_another_value_to_hash():
    assert sorted(OTHER_VALUE) == sorted(f.name for f in dataclasses.fields(Recipe))


@pytest.mark.parametrize("field_name", [f.name for f in dataclasses.fields(Recipe)])
def test_hash_changes_with_every_field(field_name):
    changed = dataclasses.replace(HASH_BASE, **{field_name: OTHER_VALUE[field_name]})
    assert getattr(changed, field_name) != getattr(HASH_BASE, field_name)
    assert changed.diff(HASH_BASE) == {field_name: (OTHER_VALUE[field_name], getattr(HASH_BASE, field_name))}
    assert changed.hash() != HASH_BASE.hash()


def test_milestone_order_and_count_change_the_hash():
    a = dataclasses.replace(HASH_BASE, milestones=(10, 20))
    b = dataclasses.replace(HASH_BASE, milestones=(20, 10))
    c = dataclasses.replace(HASH_BASE, milestones=(10,))
    assert len({a.hash(), b.hash(), c.hash()}) == 3


def test_to_dict_round_trips():
    r = recipes.get("cifar100", "cutmix", "smoke")
    d = r.to_dict()
    assert d["milestones"] == list(r.milestones)
    assert Recipe(**{**d, "milestones": tuple(d["milestones"])}) == r


# ------------------------------------------------------------------ improvements


@pytest.mark.parametrize("dataset", list(recipes.BASELINES))
@pytest.mark.parametrize("improvement", list(recipes.IMPROVEMENTS))
def test_improvement_changes_only_its_own_fields(dataset, improvement):
    base = recipes.BASELINES[dataset]
    own = dict(recipes.IMPROVEMENTS[improvement])
    if improvement == "fgsm-training":
        own["fgsm_eps"] = cards.DATASETS[dataset].fgsm_training_eps
    improved = recipes.improve(base, improvement)
    diff = base.diff(improved)
    assert diff["name"] == ("baseline", improvement)
    assert set(diff) - {"name"} <= set(own)
    for f, v in own.items():
        assert getattr(improved, f) == v
    # a field the baseline already had at that value is simply not in the diff
    assert set(diff) - {"name"} == {f for f, v in own.items() if getattr(base, f) != v}
    # the same through get(), in both profiles
    for profile in recipes.PROFILES:
        via_get = recipes.get(dataset, improvement, profile)
        assert set(recipes.get(dataset, "baseline", profile).diff(via_get)) == set(diff)
    effect = recipes.DOCUMENTED_EFFECTS[improvement]
    assert effect.text and effect.source and effect.checks
    for metric, expect, margin in effect.checks:
        m = metrics.get(metric)
        assert m.paired and m.direction != metrics.NEUTRAL and expect in ("improves", "not_worse"), (improvement, metric)
        assert (margin > 0) == (expect == "not_worse"), "a non-inferiority claim states its margin; improves has none"


def test_adversarial_training_uses_the_budget_it_is_attacked_with():

    for dataset in recipes.BASELINES:
        trained = recipes.improve(recipes.BASELINES[dataset], "fgsm-training").fgsm_eps
        assert trained == pytest.approx(cards.DATASETS[dataset].reference_eps), dataset


def test_every_improvement_changes_something_on_every_dataset():
    for dataset, base in recipes.BASELINES.items():
        for improvement in recipes.IMPROVEMENTS:
            assert set(base.diff(recipes.improve(base, improvement))) - {"name"}, (dataset, improvement)


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="no-such"):
        recipes.get("fashion-mnist", "no-such")
    with pytest.raises(ValueError, match="mnist"):
        recipes.get("mnist")
    with pytest.raises(ValueError, match="tiny"):
        recipes.get("fashion-mnist", "baseline", "tiny")


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "field_name,value",
    [
        ("optimizer", "rmsprop"), ("loss", "hinge"), ("lr", 0.0), ("lr", -1e-3), ("batch_size", 0),
        ("epochs", 0), ("hflip", 1.5), ("hflip", -0.1), ("cutmix_prob", 2.0), ("mixup_prob", -0.5),
        ("label_smoothing", 1.0), ("label_smoothing", -0.1), ("imbalance", 0.0), ("imbalance", 1.5),
        ("color_jitter", 1.0), ("color_jitter", -0.1), ("milestones", (0, 10)),
    ],
)
def test_invalid_recipe_names_the_field(field_name, value):
    with pytest.raises(ValueError) as info:
        dataclasses.replace(recipes.get("fashion-mnist"), **{field_name: value})
    assert f"{field_name}=" in str(info.value)
    assert "fashion-mnist/baseline" in str(info.value)


@pytest.mark.parametrize("prob_field", ["cutmix_prob", "mixup_prob"])
def test_mixing_probability_needs_an_alpha(prob_field):
    with pytest.raises(ValueError, match="alpha"):
        dataclasses.replace(recipes.get("fashion-mnist"), **{prob_field: 0.5})


def test_several_problems_are_all_reported():
    with pytest.raises(ValueError) as info:
        dataclasses.replace(recipes.get("fashion-mnist"), lr=-1.0, epochs=0, optimizer="lbfgs")
    msg = str(info.value)
    assert "lr=" in msg and "epochs=" in msg and "optimizer=" in msg


# ------------------------------------------------------------------ recipe files


def write(tmp_path, text, name="my-recipe.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_from_file_applies_base_overrides_and_smoke_section(tmp_path):
    p = write(tmp_path, """
name = "wide-lr"
base = "augment"
lr = 3e-3
milestones = [5, 8]

[smoke]
epochs = 1
lr = 5e-3
""")
    full = recipes.from_file(p, "fashion-mnist", "full")
    smoke = recipes.from_file(p, "fashion-mnist", "smoke")
    augment_full = recipes.get("fashion-mnist", "augment", "full")
    assert augment_full.diff(full) == {"name": ("augment", "wide-lr"), "lr": (1e-3, 3e-3), "milestones": ((), (5, 8))}
    augment_smoke = recipes.get("fashion-mnist", "augment", "smoke")
    assert augment_smoke.diff(smoke) == {
        "name": ("augment", "wide-lr"), "lr": (1e-3, 5e-3), "epochs": (3, 1), "milestones": ((), (5, 8)),
    }
    assert smoke.train_subset == cards.PROFILES["smoke"].shrink["fashion-mnist"]["train_subset"]
    assert isinstance(smoke.milestones, tuple)


def test_from_file_defaults_name_to_stem_and_base_to_baseline(tmp_path):
    p = write(tmp_path, "seed = 7\n", name="seed7.toml")
    r = recipes.from_file(p, "cifar10", "full")
    assert recipes.get("cifar10").diff(r) == {"name": ("baseline", "seed7"), "seed": (42, 7)}


def test_from_file_rejects_unknown_fields_listing_them(tmp_path):
    p = write(tmp_path, """
name = "typos"
lrr = 0.1
epoch = 3
[smoke]
bach_size = 32
""")
    with pytest.raises(ValueError) as info:
        recipes.from_file(p, "fashion-mnist", "smoke")
    msg = str(info.value)
    assert "unknown recipe field(s) bach_size, epoch, lrr" in msg
    assert str(p) in msg
    assert "valid fields:" in msg and "batch_size" in msg


@pytest.mark.parametrize("fixed", ["dataset", "arch"])
def test_from_file_cannot_change_dataset_or_architecture(tmp_path, fixed):
    p = write(tmp_path, f'{fixed} = "cifar10"\n')
    with pytest.raises(ValueError, match=f"unknown recipe field\\(s\\) {fixed}"):
        recipes.from_file(p, "fashion-mnist", "full")


def test_from_file_rejects_unknown_fields_in_the_other_profile_section(tmp_path):
    p = write(tmp_path, "lr = 2e-3\n[full]\nepohcs = 100\n")
    with pytest.raises(ValueError, match="epohcs"):
        recipes.from_file(p, "fashion-mnist", "smoke")


def test_from_file_rejects_invalid_values_and_bad_toml(tmp_path):
    with pytest.raises(ValueError, match="lr="):
        recipes.from_file(write(tmp_path, "lr = -1.0\n", "neg.toml"), "fashion-mnist", "full")
    with pytest.raises(ValueError, match="cannot read recipe file"):
        recipes.from_file(write(tmp_path, "lr = = 1\n", "bad.toml"), "fashion-mnist", "full")
    with pytest.raises(ValueError, match="cannot read recipe file"):
        recipes.from_file(tmp_path / "missing.toml", "fashion-mnist", "full")
    with pytest.raises(ValueError, match="no-such-improvement"):
        recipes.from_file(write(tmp_path, 'base = "no-such-improvement"\n', "base.toml"), "fashion-mnist", "full")


def test_equal_recipes_from_a_file_hash_equally(tmp_path):
    p = write(tmp_path, 'name = "augment"\nhflip = 0.5\nrotation = 10\n', "augment-by-hand.toml")
    by_hand = recipes.from_file(p, "fashion-mnist", "full")
    assert by_hand == recipes.get("fashion-mnist", "augment", "full")
    assert by_hand.hash() == recipes.get("fashion-mnist", "augment", "full").hash()
