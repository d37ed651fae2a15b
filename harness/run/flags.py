"""Every command-line option, declared once: its flag, its parser (which validates it when the
command line is read) and its help. ``declare(add, names)`` adds the named ones to any parser
whose ``add(*flags, **kwargs)`` takes argparse's keywords: pytest's option group (the suite)
and argparse's subcommands (``python -m harness``) alike, so a name means one thing everywhere
and is checked one way."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
MAX_SEED = 2**32 - 1  # what every generator the harness seeds (torch, numpy, Python) accepts
DATASET_HELP = ("the dataset: fashion-mnist, cifar10, cifar100, a folder (train/<class>/..., test/<class>/...), a .npz "
                "(x_train, y_train, x_test, y_test), or a name in datasets.toml")


class Once(argparse._StoreAction):
    """A single-valued option given twice with different values is an error, not a silent choice
    of the last (``--ood A --ood B`` would measure B alone)."""

    def __call__(self, parser, namespace, values, option_string=None):
        before = getattr(namespace, self.dest, self.default)
        if before not in (None, self.default) and before != values:
            raise argparse.ArgumentError(self, f"given twice ({before} and {values}): it takes one value; give it once")
        setattr(namespace, self.dest, values)


ONCE = ("dataset", "datasets", "model", "arch", "gates", "report-dir", "data-root", "cache-dir", "cases-file", "ood",
        "new-images", "segment-metadata")  # single-valued paths and names: given twice is a mistake


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: {what} is a whole number") from None


MAX_IMAGE_SIZE = 1024  # pixels a side: a dataset of larger images needs far more memory than this harness plans for


def image_size(text: str) -> int:
    v = _int(text, "an image size")
    if not 8 <= v <= MAX_IMAGE_SIZE:
        raise argparse.ArgumentTypeError(f"{text}: give a size from 8 to {MAX_IMAGE_SIZE} pixels a side (every image "
                                         "is resized to N x N and held in memory)")
    return v


def positive_int(text: str) -> int:
    v = _int(text, "it")
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text}: give 1 or more")
    return v


def nonnegative_int(text: str) -> int:
    v = _int(text, "it")
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text}: give 0 or more")
    return v


def parse_seed(text: str) -> int:
    """A seed: a whole number from 0 to ``MAX_SEED``."""
    v = _int(text, "a seed")
    if not 0 <= v <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{text}: give a seed from 0 to {MAX_SEED}")
    return v


def imbalance(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: the imbalance ratio is a number in (0, 1]") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"{text}: the imbalance ratio is in (0, 1] (1 = balanced; 0.1 = long-tailed)")
    return v


def probability(what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: {what} is a number in (0, 1)") from None
        if not 0 < v < 1:
            raise argparse.ArgumentTypeError(f"{text}: {what} is in (0, 1)")
        return v

    parse.__name__ = what.replace(" ", "_")
    return parse


def resolve_profile(profile: str, device: str) -> str:
    """``auto``: the seed recipes (full) on a CUDA device, the CI-sized smoke profile on a CPU."""
    if profile != "auto":
        return profile
    from ..train import resolve_device

    return "full" if resolve_device(device).type == "cuda" else "smoke"


def thread_counts(text: str) -> list[int]:
    """``1,2`` -> [1, 2]: CPU thread counts, each 1 or more."""
    try:
        counts = [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        counts = []
    if not counts or any(t < 1 for t in counts):
        raise argparse.ArgumentTypeError(f"{text!r}: give CPU thread counts of 1 or more, e.g. 1,2")
    return counts


def _options() -> dict[str, dict]:
    from .. import data, explain, recipes

    candidates = [n for n in recipes.names() if n != "baseline"]
    return {
        # the data
        "dataset": dict(default="fashion-mnist", help=f"{DATASET_HELP} (default: fashion-mnist)"),
        "datasets": dict(default=None, help="the registry of named datasets of one's own (default: ./datasets.toml)"),
        "image-size": dict(type=image_size, default=None,
                           help="resize every image of one's own dataset to N x N (required when their sizes differ)"),
        "flip-invariant": dict(action="store_true",
                               help="one's own dataset: a horizontal flip keeps every class (enables the flip test)"),
        "data-root": dict(default=None, help=f"folder holding the datasets (also ${data.DATA_ROOT_ENV})"),
        "imbalance": dict(type=imbalance, default=1.0,
                          help="train every model on a long-tailed subsample: class k keeps IMBALANCE**(k/(K-1)) of "
                               "its images (e.g. 0.1)"),
        # the models
        "arch": dict(default=None,
                     help="the architecture to train: small-cnn, resnet18, any torchvision classification model by "
                          "name (resnet50, mobilenet_v3_small, ...), timm:<name> (any timm model, from scratch; pip "
                          "install -e '.[timm]'), or module:function building an nn.Module"),
        "model": dict(default=None, help="module:function that builds your model (same as --arch module:function), or an "
                                          "ONNX file (model.onnx) stressed as it is with onnxruntime"),
        "weights": dict(action="append", default=None, metavar="[NAME=]PATH",
                        help="a trained state dict (torch.save(model.state_dict())) for --arch/--model: PATH alone is "
                             "the baseline, stressed as it is without training; NAME=PATH adds a candidate checkpoint "
                             "NAME (repeatable). Two checkpoints' documented effects are decided on the paired interval "
                             "over test images"),
        "candidate": dict(action="append", default=None, choices=candidates,
                          help="improvement(s) to compare with the baseline (default: the seed's: "
                               + ", ".join(f"{d}={c}" for d, c in recipes.DEFAULT_CANDIDATE.items()) + ")"),
        "baseline-only": dict(action="store_true", help="stress the baseline alone"),
        "recipe-file": dict(action="append", default=None,
                            help="a TOML recipe to stress as an extra candidate (repeatable; see README)"),
        "profile": dict(default="auto", choices=("auto", *recipes.PROFILES),
                        help="full: the seed recipes exactly; smoke: CI-sized (a subset, a few epochs); auto "
                             "(default): full on a CUDA device, smoke on a CPU"),
        "seed": dict(type=parse_seed, default=None,
                     help="the base training seed of every recipe (default: each recipe's own, 42): rerun a verdict "
                          "with other seeds; it is in the run header, the model-cache key and the report"),
        "seeds": dict(type=positive_int, default=1,
                      help="train every recipe with N seeds (its seed, +1, ...): each seed's model is tested, "
                           "comparisons pair by seed, documented effects are decided across >= 6 seeds, the report "
                           "shows mean, std and range (gates.toml seed_gates: worst or mean)"),
        # how they run
        "device": dict(default="auto", choices=("auto", "cpu", "cuda"),
                       help="training device (default: auto = cuda if present)"),
        "precision": dict(default="auto", choices=("auto", "fp32", "bf16"),
                          help="training precision: auto (default: bf16 autocast on CUDA, fp32 on a CPU), fp32 or "
                               "bf16. The calibrated bounds are fp32's: a bf16 run on a CPU reports them without "
                               "gating"),
        "threads": dict(type=positive_int, default=None, metavar="N",
                        help="CPU threads (default: 2, the count the calibrated bounds were measured at, where they "
                             "gate the run; else every core). Another count computes other numbers: calibrated "
                             "bounds are then reported, not gated"),
        "deterministic": dict(action="store_true",
                              help="bit-exact reruns on CUDA (cudnn.deterministic, no cudnn.benchmark); the CPU path "
                                   "always is"),
        "compile": dict(action="store_true", help="train with torch.compile (measured no faster on a 2-core CPU)"),
        "cache-dir": dict(default=None, help="model cache folder (also $CNN_STRESS_CACHE)"),
        "executor": dict(default="local", choices=("local", "ray"),
                         help="where models are trained and measured: local (default) or ray (a Ray cluster: every "
                              "model the cache lacks as one Ray task, then its slow measurements; see README)"),
        "ray-address": dict(default=None, metavar="HOST:PORT",
                            help="the Ray cluster to join (default: start or join a local one)"),
        "ray-gpus-per-model": dict(type=float, default=None, metavar="F",
                                   help="GPUs per Ray task on a CUDA cluster (a fraction packs small models; default 1)"),
        # what is measured and checked
        "gates": dict(default=str(ROOT / "gates.toml"), help="gates file (default: gates.toml)"),
        "report-dir": dict(default=str(ROOT / "reports"), help="where run reports go (default: reports/)"),
        "no-report": dict(action="store_true", help="write no report"),
        "cases": dict(default=None, help="test samples to follow through every model: ids or file names, "
                                         "comma-separated"),
        "cases-file": dict(default=None, help="a file of test ids or file names to follow, one per line"),
        "cam-method": dict(default="gradcam", choices=explain.METHODS,
                           help="CAM method of pytorch-grad-cam for the attention tests (default: gradcam)"),
        "cam-layer": dict(default=None,
                          help="the layer CAMs are computed at (small-cnn: block2, block3 (default, 7x7), "
                               "block3-pool; resnet18: layer2, layer3 (default, 8x8), layer4)"),
        "ood": dict(default=None, metavar="PATH",
                    help="an out-of-distribution set of your own (an image folder or a .npz, any classes) measured "
                         "next to the built-in ones (noise, blank, shuffled tiles, digits, the sibling CIFAR)"),
        "new-images": dict(default=None, metavar="PATH",
                           help="a new batch of images (a folder or a .npz, any classes): each image property's "
                                "distribution is compared with the training split's (a permutation test); a "
                                "property that left the training range fails the shift gate"),
        "segment-metadata": dict(default=None, metavar="CSV",
                                 help="per-image metadata of the test images (an 'id' or 'path' column, then any "
                                      "columns: source, camera, ...): its values are segments the weak-segment "
                                      "search tries too"),
        "conformal-alpha": dict(type=probability("alpha"), default=0.1,
                                help="conformal prediction sets that hold the true class of 1 - ALPHA of the images "
                                     "(default 0.1)"),
        "selective-risk": dict(type=probability("the selective risk"), default=0.05, metavar="R",
                               help="selective prediction at your risk: the confidence threshold whose accepted "
                                    "predictions are wrong at most R of the time, with 99%% confidence from the "
                                    "validation split (default 0.05)"),
        "autoattack": dict(type=nonnegative_int, default=None, metavar="N",
                           help="AutoAttack (standard, torchattacks) on N attacked images (default: 1,000 in the full "
                                "profile, off in smoke: about 5 minutes per 100 images on a CPU)"),
        # the calibration and the audit
        "first-seed": dict(type=parse_seed, default=1000,
                           help="the first of the --seeds seeds (S, S+1, ...; default 1000: the main command's 42 and "
                                "the nox sessions' 42-47 stay held out)"),
        "thread-counts": dict(type=thread_counts, default=[1, 2], metavar="1,2",
                              help="CPU thread counts to train each seed with (default 1,2: the counts a gated run "
                                   "may use)"),
    }


SUITE = ("dataset", "datasets", "image-size", "flip-invariant", "arch", "model", "weights", "cases", "cases-file",
         "profile", "device", "data-root", "gates", "report-dir", "no-report", "candidate", "baseline-only", "seed",
         "seeds", "recipe-file", "cache-dir", "cam-method", "cam-layer", "deterministic", "compile", "precision",
         "threads", "ood", "new-images", "segment-metadata", "conformal-alpha", "selective-risk", "autoattack", "executor", "ray-address", "ray-gpus-per-model",
         "imbalance")


def declare(add: Callable, names, **overrides) -> None:
    """``add(--name, **kwargs)`` for each of ``names`` (their declarations, updated with
    ``overrides[name]``: a subcommand's own default or requiredness)."""
    table = _options()
    for name in names:
        kwargs = {**table[name], **overrides.get(name.replace("-", "_"), {})}
        if name in ONCE and "action" not in kwargs:
            kwargs["action"] = Once
        add(f"--{name}", **kwargs)
