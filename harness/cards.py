"""One card per dataset and one per profile: every fact about them, in one place.

A dataset card says what the harness needs to know about a built-in dataset besides its
files (``harness/data.py`` reads those): its classes (Fashion-MNIST's are fixed; CIFAR's are
read from its own meta file), image shape, normalisation, validation split, the attack budget
and sweep, the occlusion patch, the named cases a seed follows, the long-tailed ratio its
class-imbalance improvements run at, and the seed's improvement (the suite's default
candidate). A dataset of one's own gets a card made from its data (``for_data``).

A profile card says how much of each kind of evidence a run collects: ``full`` runs the seed
recipes exactly and measures on every test image; ``smoke`` is CI-sized.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .corruptions.table import SEVERITIES

SPLIT_SEED = 42  # the seeds' train/validation split: random_split(..., Generator().manual_seed(42))


@dataclass(frozen=True)
class DatasetCard:
    name: str
    channels: int
    size: tuple[int, int]
    normalisation: tuple[tuple[float, ...], tuple[float, ...]]  # per-channel (mean, std) of the model's first layer
    val_size: int  # images of the official training split held out for validation (seed split)
    classes: tuple[str, ...] = ()  # () = read from the dataset's own files
    # L-inf attacks: the sweep reported and the reference budget the gates read (harness/attacks.py
    # says why: Fashion-MNIST 0.05 is 13 grey levels; CIFAR 2/255 the customary small budget)
    attack_grid: tuple[float, ...] = (1 / 255, 2 / 255, 4 / 255, 8 / 255)
    reference_eps: float = 2 / 255
    fgsm_training_eps: float = 2 / 255  # adversarial training at the budget it is attacked with
    occlusion: tuple[int, int] = (8, 4)  # (patch, stride) of the worst-placement occlusion sweep
    named_cases: tuple[int, ...] = ()  # test ids the seed's study follows through every model
    default_candidate: str | None = None  # the improvement the seed compared with its baseline
    imbalance: float = 0.1  # class k keeps imbalance**(k/(K-1)) of its images in long-tailed runs
    flip_invariant: bool = True  # a horizontal flip keeps every class
    cifar_c: str | None = None  # the folder of the published corrupted test set, where one exists
    num_classes: int = 0  # the class count (0: len(classes)); CIFAR's names come from its files
    sibling: str | None = None  # a built-in dataset of other classes and the same kind of image (an OOD set)
    baseline: dict = field(default_factory=dict, compare=False)  # the seed's baseline recipe (harness.recipes.Recipe's fields)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.size)

    @property
    def class_count(self) -> int:
        return self.num_classes or len(self.classes)


FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

# Budgets (L-inf, pixel units in [0, 1]) to sweep per dataset.
#
# CIFAR (32x32 RGB): 1/255, 2/255, 4/255, 8/255. 8/255 is the standard CIFAR-10/100 budget
# (Madry et al. 2018; RobustBench); 2/255 is the smaller reference point used in
# robustness papers; 1/255 and
# 4/255 complete a doubling grid. An undefended ResNet is already near 0% under PGD at
# 4/255-8/255, so the low end is where standard models still differ.
#
# Fashion-MNIST (28x28 grey): 0.01, 0.02, 0.05, 0.1 (about 2.5, 5, 13 and 25 grey levels).
# MNIST-like images are near-binary (a black background, flat bright garments), and the
# literature uses much larger budgets there than on CIFAR: 0.1-0.3 for MNIST (Madry et al.
# 2018 use 0.3) and 0.1 for Fashion-MNIST (e.g. Wong & Kolter 2018, Croce & Hein 2019), the
# usual robust-training and evaluation budget. The grid ends at 0.1, so a number is
# comparable with that literature, and spans "mild" to "broken" for an undefended CNN in
# between. Measured on the harness's smoke-profile small CNN (87.2% clean, 1,000 test
# images), accuracy under FGSM / PGD-10 is 0.81 / 0.80 at 0.01, 0.75 / 0.73 at 0.02,
# 0.60 / 0.48 at 0.05 and 0.36 / 0.11 at 0.1 (8/255 = 0.031 gives 0.70 / 0.63). Larger
# budgets (0.2: PGD 0.00 on that model; 0.3) only separate adversarially trained models:
# add them for such candidates, not to the default sweep.
# The seeds' baseline recipes (the full profile; harness.recipes.Recipe's fields). seed 000: the
# small CNN, Adam 1e-3, batch 64, 30 epochs. seed 001: ResNet-18, SGD 0.1 momentum 0.9, weight
# decay 5e-4, 50 epochs, x0.1 at 25 and 40, crop 32 pad 4 + flip; the seed does not state its
# batch size: 128, the usual for this recipe. seed 004: the same for CIFAR-10.
SMALL_CNN_RECIPE = dict(arch="small-cnn", optimizer="adam", lr=1e-3, batch_size=64, epochs=30, seed=42)
RESNET_RECIPE = dict(arch="resnet18", optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, epochs=50,
                     milestones=(25, 40), gamma=0.1, batch_size=128, crop_padding=4, hflip=0.5, seed=42)

DATASETS: dict[str, DatasetCard] = {
    # seed 000: Fashion-MNIST, normalised (x - 0.5) / 0.5; 54,000 / 6,000 split
    "fashion-mnist": DatasetCard(
        "fashion-mnist", 1, (28, 28), ((0.5,), (0.5,)), 6_000, FASHION_MNIST_CLASSES,
        attack_grid=(0.01, 0.02, 0.05, 0.1), reference_eps=0.05, fgsm_training_eps=0.05,
        default_candidate="augment", baseline=SMALL_CNN_RECIPE),
    # seed 004: CIFAR-10, the usual per-channel training-set statistics; 45,000 / 5,000
    "cifar10": DatasetCard(
        "cifar10", 3, (32, 32), ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)), 5_000,
        default_candidate="label-smoothing", cifar_c="CIFAR-10-C", num_classes=10, sibling="cifar100",
        baseline=RESNET_RECIPE),
    # seed 001: CIFAR-100 and its five named failures
    "cifar100": DatasetCard(
        "cifar100", 3, (32, 32), ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)), 5_000,
        named_cases=(3640, 2372, 8225, 5864, 1214), default_candidate="cutmix", cifar_c="CIFAR-100-C",
        num_classes=100, sibling="cifar10", baseline=RESNET_RECIPE),
}
BUILTIN = tuple(DATASETS)

# Occlusion patches by image side: 28x28 and 32x32 both get an 8 px patch at stride 4, an exact
# tiling (6x6 = 36 and 7x7 = 49 placements): about the size of a sleeve or a wheel, a part,
# never the whole object (harness/perturb.py). Other sizes: a quarter of the side, stride an eighth.
OCCLUSION_BY_SIZE: dict[int, tuple[int, int]] = {28: (8, 4), 32: (8, 4)}


def occlusion_for(side: int) -> tuple[int, int]:
    return OCCLUSION_BY_SIZE.get(side, (max(2, side // 4), max(1, side // 8)))


def card(name: str) -> DatasetCard:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown built-in dataset {name!r}: choose one of {', '.join(DATASETS)}") from None


def for_data(ds) -> DatasetCard:
    """The card of a loaded dataset: the built-in card, or one made from a dataset of one's own
    (its shape, its own normalisation, no named cases, no seed improvement)."""
    if ds.name in DATASETS and ds.builtin:
        return DATASETS[ds.name]
    c, h, w = ds.image_shape
    norm = ds.normalisation or (tuple([0.5] * c), tuple([0.5] * c))
    return DatasetCard(ds.name, c, (h, w), norm, len(ds.val_idx), tuple(ds.classes),
                       occlusion=occlusion_for(min(h, w)), flip_invariant=ds.flip_invariant)


# ============================================================================ profiles


@dataclass(frozen=True)
class ProfileCard:
    name: str
    description: str
    stress_samples: int  # test images in the robustness subset (seeded, the same for every model)
    attack_samples: int  # the first images of that subset attacked with FGSM / PGD
    cam_samples: int = 32  # each model's most confident errors in its explanation set
    ood_images: int = 1_000  # images in each out-of-distribution set
    taxonomy_errors: int = 500  # the most confident errors whose failure mode is analysed (seed 000's baseline: 381)
    # AutoAttack (standard) on the first images of the attacked subset; 0 = off unless --autoattack N.
    # On 2 CPU cores 100 images take about 5 minutes for the smoke CNN (Square's 5,000 queries on
    # the images the gradient attacks leave), too long for the default smoke run.
    autoattack_images: int = 0
    # how the seed recipes shrink (per dataset, else per architecture for data of one's own)
    shrink: dict[str, dict] = field(default_factory=dict)


_SMALL = {"train_subset": 20_000, "epochs": 3, "milestones": ()}
_RESNET = {"train_subset": 2_000, "epochs": 2, "batch_size": 64, "lr": 0.05, "milestones": ()}

PROFILES: dict[str, ProfileCard] = {
    "smoke": ProfileCard(
        "smoke", "CI-sized: the seed recipes on a seeded training subset for a few epochs (Fashion-MNIST: "
        "20,000 images, 3 epochs, 86-87% test accuracy; CIFAR: 2,000 images, 2 epochs)",
        stress_samples=1_000, attack_samples=500,  # 250 attacked images left a +3.2 pp change undecided
        shrink={"fashion-mnist": _SMALL, "cifar10": _RESNET, "cifar100": _RESNET,
                "small-cnn": _SMALL, "resnet18": _RESNET}),
    "full": ProfileCard("full", "the seed recipes exactly, every test image measured", stress_samples=10_000,
                        attack_samples=10_000, ood_images=2_000, autoattack_images=1_000),  # RobustBench: 1,000
}
PROFILE_NAMES = tuple(PROFILES)

# Measurement sizes on a CPU scale with what one image costs the model. The smoke sizes above
# are the small CNN's (0.016 GFLOP per 28x28 image: its battery takes about 30 s on 2 cores);
# a model costing more than REFERENCE_GFLOP per image is measured on REFERENCE_GFLOP / cost of
# them, so its measurement takes about as long as a model of REFERENCE_GFLOP would, down to the
# floors below. A ResNet-18 on CIFAR (1.11 GFLOP, 70 times the small CNN; 60 images/s on 2 cores
# here) gets 45 stressed images, 22 attacked, 45 per OOD set, 8 confident errors explained and
# 22 analysed for their failure mode: minutes, where the small CNN's sizes took it about 27
# minutes for the battery alone. On a GPU, and in the full profile, every model gets the
# profile's sizes. The report's Run section says what each run measured on.
REFERENCE_GFLOP = 0.05
MIN_SIZES = {"stress_samples": 40, "attack_samples": 20, "ood_images": 40, "cam_samples": 8, "taxonomy_errors": 20}


def _shrink(card: ProfileCard, gflop_per_image: float | None, device_type: str) -> float | None:
    """The share of the profile's images a model of ``gflop_per_image`` gets on ``device_type``;
    None: all of them."""
    if card.name != "smoke" or device_type != "cpu" or not gflop_per_image or gflop_per_image <= REFERENCE_GFLOP:
        return None
    return REFERENCE_GFLOP / gflop_per_image


def measurement_sizes(card: ProfileCard, gflop_per_image: float | None, device_type: str) -> dict[str, int]:
    """How many images each measurement takes for a model of ``gflop_per_image`` (forward, one
    image) on ``device_type`` (see ``REFERENCE_GFLOP``)."""
    sizes = {k: getattr(card, k) for k in MIN_SIZES}
    f = _shrink(card, gflop_per_image, device_type)
    return sizes if f is None else {k: min(v, max(MIN_SIZES[k], int(v * f))) for k, v in sizes.items()}


# The validation and test splits are shrunk the same way, down to SPLIT_FLOOR images each (data.
# evaluation_subset: the first images of the validation split, a seeded random subset already, and
# of the test split, so test ids stay positions). Evaluating a smoke ResNet-18 on CIFAR's 5,000
# validation images after each epoch and on its 10,000 test images took about 6 of its 9 minutes
# on 2 cores. The floor keeps what the smoke run checks readable: on 2,000 validation images the
# check that a model learned something (3 standard errors above chance) needs 1.67% on CIFAR-100
# where chance is 1%, and an accuracy of 5% on 2,000 test images has a standard error of 0.5
# points, a tenth of the CIFAR smoke policy bounds' margin above chance (gates.toml).
SPLIT_FLOOR = 2_000


def split_sizes(card: ProfileCard, gflop_per_image: float | None, device_type: str, n_val: int,
                n_test: int) -> tuple[int, int]:
    """(validation, test) images a model of ``gflop_per_image`` is evaluated on (see SPLIT_FLOOR)."""
    f = _shrink(card, gflop_per_image, device_type)
    if f is None:
        return n_val, n_test
    return min(n_val, max(SPLIT_FLOOR, int(n_val * f))), min(n_test, max(SPLIT_FLOOR, int(n_test * f)))


# Corruption severities: all five, except for a model that gets fewer images (above): severities
# 1, 3 and 5 (the mildest, the middle one conformal coverage under shift reads, the worst), which
# keep each corruption's curve from mild to severe at 3/5 of the cost. The report's tables and
# curves are labelled with the severities run, and the Run section lists them.
ALL_SEVERITIES = SEVERITIES
COSTLY_SEVERITIES = (1, 3, 5)


def severities_for(card: ProfileCard, gflop_per_image: float | None, device_type: str) -> tuple[int, ...]:
    """The corruption severities a model of ``gflop_per_image`` is measured at on ``device_type``."""
    return ALL_SEVERITIES if _shrink(card, gflop_per_image, device_type) is None else COSTLY_SEVERITIES


IMBALANCE_SUFFIX = "-imbalance"


def profile(name: str) -> ProfileCard:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}: choose one of {', '.join(PROFILES)}") from None


def gate_profile(profile_name: str, imbalance: float = 1.0) -> str:
    """The gates.toml profile key of a run: ``smoke`` / ``full``, or ``smoke-imbalance`` for
    runs on a long-tailed subsample, whose models are held to bounds of their own."""
    return profile_name if imbalance == 1.0 else f"{profile_name}{IMBALANCE_SUFFIX}"


def gate_profiles() -> list[str]:
    return [*PROFILES, *(f"{p}{IMBALANCE_SUFFIX}" for p in PROFILES)]
