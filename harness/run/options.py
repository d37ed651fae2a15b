"""What a run was asked to do: one namespace of options, passed whole (the pytest plugin and
the command line both build one)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .flags import DATASET_HELP, parse_seed  # noqa: F401 - where the command lines find them


@dataclass
class Options:
    """Everything a run was asked; building one needs only what differs from the defaults
    (``Options(dataset="fashion-mnist", seed=7)``)."""

    dataset: str  # a built-in name, a folder or .npz of one's own, or a name in datasets.toml
    profile: str = "smoke"  # smoke | full (what --profile auto resolved to)
    device: str = "auto"
    data_root: str | None = None
    gates_path: Path = field(default_factory=lambda: Path(__file__).resolve().parents[2] / "gates.toml")
    report_root: Path | None = None  # None: no report
    candidates: list[str] | None = None  # None: the dataset's default (its card's seed improvement), if any
    recipe_files: list[Path] = field(default_factory=list)
    cache_dir: Path | None = None  # None: the default model cache ($CNN_STRESS_CACHE or ~/.cache/cnn-stress/models)
    imbalance: float = 1.0
    cam_method: str = "gradcam"
    cam_layer: str | None = None
    profile_asked: str = ""  # what --profile said ("auto" resolves to smoke or full)
    deterministic: bool = False
    compile: bool = False
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on a CPU), fp32 or bf16 (harness.regime)
    threads: int | None = None  # CPU threads (None: the reference count where calibrated bounds gate the run)
    # a dataset of one's own (harness/custom_data.py) and one's own model (harness/models.py)
    image_size: int | None = None
    datasets_file: Path | None = None
    flip_invariant: bool | None = None
    arch: str | None = None  # an architecture: small-cnn, resnet18, a torchvision name, or module:function
    weights: Path | None = None  # a trained state dict: the baseline is stressed as it is, not trained
    weights_flag: str = "--weights"  # the option that named it (--model for an .onnx file): messages say it
    cases: list[str] = field(default_factory=list)  # named cases: test ids, or file names for one's own data
    seeds: int = 1  # each recipe trained with this many seeds (recipe.seed, +1, ...)
    seed: int | None = None  # the base seed of every recipe (None: each recipe's own, 42)
    candidate_weights: dict[str, Path] = field(default_factory=dict)  # candidate name -> a trained state dict
    ood: str | None = None  # --ood: an out-of-distribution set of one's own (a folder or a .npz)
    new_images: str | None = None  # --new-images: images whose properties are compared with the training split's
    segment_metadata: str | None = None  # --segment-metadata: a CSV of per-image metadata of the test images
    conformal_alpha: float = 0.1  # --conformal-alpha: prediction sets for 1 - alpha of the test images
    selective_risk: float = 0.05  # --selective-risk: the error rate accepted predictions may have
    autoattack: int | None = None  # --autoattack N: AutoAttack on N images (None: the profile's: full 1,000, smoke 0)
    executor: str = "local"  # where models are trained and measured: local (this process) or ray
    ray_address: str | None = None  # --ray-address (None: start or join a local Ray instance)
    ray_gpus_per_model: float | None = None  # a GPU fraction per Ray task on a CUDA cluster
    use_cache: bool = True  # False: train even if cached, and do not write the model cache
    download: bool = True  # a missing built-in dataset may be downloaded (when online)
