"""train(recipe) -> trained model + history (through the model cache, ``cache.py``).

The whole training split lives as a uint8 tensor on the training device; each batch is
converted to float and augmented there with batched tensor ops (``augment.py``). The
checkpoint kept is the one with the best validation accuracy, as the seeds do. With the
kept weights, the model's logits on the validation split, the test split and a fixed
sample of its training images (``train_sample_indices``) are stored with it.
"""

from __future__ import annotations

import copy
import math
import sys
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import augment, cache, models
from .data import Dataset
from .evaluate import Predictions, logits_of, to_float
from .recipes import Recipe

TRAIN_SAMPLE_SEED = 4242


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but torch sees no CUDA device; use --device cpu or auto")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}: use auto, cpu or cuda")
    return torch.device(device)


class TemperatureScaled(nn.Module):
    """A model whose logits are divided by a temperature fitted after training."""

    def __init__(self, model: nn.Module, temperature: float):
        super().__init__()
        self.model = model
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def forward(self, x):
        return self.model(x) / self.temperature

    def cam_layer(self) -> nn.Module:
        return self.model.cam_layer()


@dataclass
class TrainResult:
    recipe: Recipe
    profile: str
    model: nn.Module
    history: list[dict]  # one row per epoch
    best_epoch: int  # 1-based epoch whose weights were kept
    train_seconds: float  # time the training itself took (when it ran)
    cached: bool
    seconds: float  # wall time of this call (load or train)
    cache_key: str
    cache_path: Path | None = None
    temperature: float | None = None
    train_size: int = 0
    logits: dict[str, torch.Tensor] = field(default_factory=dict)  # split -> (N, K) float32, after T
    train_sample_ids: torch.Tensor | None = None  # indices into the official training split

    def predictions(self, data: Dataset, split: str = "test") -> Predictions:
        """Per-sample predictions on ``split`` (cached with the model: no re-evaluation);
        ``train_sample``: the fixed sample of training images (``train_sample_indices``)."""
        if split == "train_sample":
            ids = self.train_sample_ids
            y = data.train_y[ids]
        else:
            _, y, ids = data.split(split)
        return Predictions(
            logits=self.logits[split].numpy(), labels=y.numpy().astype(np.int64),
            ids=ids.numpy().astype(np.int64), split=split,
        )

    @property
    def kept(self) -> dict:
        return self.history[self.best_epoch - 1] if self.history else {}


# ------------------------------------------------------------------ cache key


def training_recipe(recipe: Recipe) -> Recipe:
    """The part of a recipe that decides the trained weights: the name is a label and
    temperature scaling is post-hoc, so neither is in the key."""
    return replace(recipe, name="-", temperature_scaling=False)


def cache_key(recipe: Recipe, profile: str, data_fingerprint: str, device: torch.device) -> str:
    return cache.key(training_recipe(recipe).to_dict(), profile, data_fingerprint, device.type)


# ------------------------------------------------------------------ training


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def select_training_indices(recipe: Recipe, data: Dataset) -> torch.Tensor:
    """Indices (into the official training split) this recipe trains on: the seeds' training
    split, long-tailed if ``imbalance < 1``, then a seeded subset if ``train_subset``."""
    idx = data.train_idx
    g = torch.Generator().manual_seed(recipe.seed)
    if recipe.imbalance < 1:
        labels = data.train_y[idx]
        keep = []
        k = data.num_classes
        for c in range(k):
            members = idx[labels == c]
            frac = recipe.imbalance ** (c / max(k - 1, 1))
            n = max(1, int(round(len(members) * frac)))
            keep.append(members[torch.randperm(len(members), generator=g)[:n]])
        idx = torch.cat(keep).sort().values
    if recipe.train_subset and recipe.train_subset < len(idx):
        idx = idx[torch.randperm(len(idx), generator=g)[: recipe.train_subset]].sort().values
    return idx


def train_sample_indices(recipe: Recipe, data: Dataset) -> torch.Tensor:
    """A fixed, seeded sample of the images this recipe trains on, as many as the validation
    split holds (so both accuracies of the generalisation gap are equally precise)."""
    idx = select_training_indices(recipe, data)
    g = torch.Generator().manual_seed(TRAIN_SAMPLE_SEED)
    n = min(len(idx), len(data.val_idx))
    return idx[torch.randperm(len(idx), generator=g)[:n]].sort().values


def _loss(logits, target, recipe: Recipe, class_weight):
    """Cross-entropy (hard or soft targets, label smoothing, class weights) or focal loss."""
    if recipe.loss == "ce":
        return F.cross_entropy(logits, target, weight=class_weight, label_smoothing=recipe.label_smoothing)
    k = logits.shape[1]
    if target.ndim == 1:
        target = F.one_hot(target, k).float()
    if recipe.label_smoothing:
        target = target * (1 - recipe.label_smoothing) + recipe.label_smoothing / k
    logp = F.log_softmax(logits.float(), dim=1)
    per_class = -target * (1 - logp.exp()).pow(recipe.focal_gamma) * logp
    if class_weight is not None:
        per_class = per_class * class_weight
    return per_class.sum(1).mean()


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T > 0 that minimises the NLL of softmax(logits / T) (Guo et al. 2017).

    NLL is convex in 1/T, so a bounded scalar search finds the global minimum."""
    from scipy.optimize import minimize_scalar

    z = logits.double()
    y = labels.long()

    def nll(log_beta: float) -> float:
        return float(F.cross_entropy(z * math.exp(log_beta), y))

    res = minimize_scalar(nll, bounds=(math.log(1e-2), math.log(1e2)), method="bounded", options={"xatol": 1e-6})
    beta = math.exp(res.x)
    if nll(res.x) > nll(0.0):  # never worse than T = 1
        beta = 1.0
    return 1.0 / beta


def _run_training(recipe: Recipe, data: Dataset, device: torch.device, label: str) -> tuple[nn.Module, list[dict], int, float, int]:
    torch.manual_seed(recipe.seed)
    np.random.seed(recipe.seed)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    model = models.build(recipe.arch, recipe.dataset, data.num_classes, data.image_shape[0]).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)

    idx = select_training_indices(recipe, data)
    x_train = data.train_x[idx].to(device)
    y_train = data.train_y[idx].to(device)
    x_val, y_val, _ = data.split("val")
    n, k = len(idx), data.num_classes
    class_weight = None
    if recipe.class_weights:
        counts = torch.bincount(y_train, minlength=k).float().clamp(min=1)
        class_weight = (counts.sum() / (k * counts)).to(device)

    if recipe.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    else:
        opt = torch.optim.SGD(
            model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
            weight_decay=recipe.weight_decay, nesterov=recipe.nesterov,
        )
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(recipe.milestones), gamma=recipe.gamma)
    gen = torch.Generator(device=device).manual_seed(recipe.seed)
    amp = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    history: list[dict] = []
    best_acc, best_epoch, best_state = -1.0, 0, None
    steps = 0
    t_start = time.perf_counter()
    interactive = sys.stderr.isatty()
    for epoch in range(1, recipe.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        lr = opt.param_groups[0]["lr"]
        perm = torch.randperm(n, generator=gen, device=device)
        loss_sum, correct, seen = 0.0, 0.0, 0
        n_batches = math.ceil(n / recipe.batch_size)
        for bi, start in enumerate(range(0, n, recipe.batch_size)):
            bidx = perm[start : start + recipe.batch_size]
            xb = to_float(x_train[bidx])
            yb = y_train[bidx]
            if recipe.crop_padding:
                xb = augment.random_crop(xb, recipe.crop_padding, gen)
            if recipe.hflip:
                xb = augment.hflip(xb, recipe.hflip, gen)
            if recipe.rotation:
                xb = augment.rotate(xb, recipe.rotation, gen)
            if recipe.color_jitter:
                xb = augment.color_jitter(xb, recipe.color_jitter, gen)
            target, hard = yb, yb
            mix = torch.rand(2, generator=gen, device=device).tolist()
            if recipe.cutmix_prob and mix[0] < recipe.cutmix_prob:
                xb, target, lam = augment.cutmix(xb, F.one_hot(yb, k).float(), recipe.cutmix_alpha, gen)
                hard = target.argmax(1)  # the label covering most of the image
            elif recipe.mixup_prob and mix[1] < recipe.mixup_prob:
                xb, target, lam = augment.mixup(xb, F.one_hot(yb, k).float(), recipe.mixup_alpha, gen)
                hard = target.argmax(1)
            if device.type == "cuda":
                xb = xb.contiguous(memory_format=torch.channels_last)
            if recipe.fgsm_eps:
                xb_adv = xb.detach().clone().requires_grad_(True)
                with amp:
                    adv_loss = _loss(model(xb_adv), target, recipe, class_weight)
                (grad,) = torch.autograd.grad(adv_loss, xb_adv)
                xb_adv = (xb + recipe.fgsm_eps * grad.sign()).clamp_(0, 1).detach()
                with amp:
                    logits = model(xb)
                    loss = 0.5 * _loss(logits, target, recipe, class_weight) + 0.5 * _loss(
                        model(xb_adv), target, recipe, class_weight
                    )
            else:
                with amp:
                    logits = model(xb)
                    loss = _loss(logits, target, recipe, class_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            loss_sum += loss.detach() * len(yb)
            correct += (logits.detach().argmax(1) == hard).sum()
            seen += len(yb)
            if interactive and bi % 20 == 0:
                print(f"\r  {label} epoch {epoch}/{recipe.epochs} batch {bi + 1}/{n_batches}", end="", file=sys.stderr, flush=True)
            if recipe.max_steps and steps >= recipe.max_steps:
                break
        sched.step()
        if interactive:
            print("\r", end="", file=sys.stderr)
        val_logits = logits_of(model, x_val, device)
        val_loss = float(F.cross_entropy(val_logits, y_val))
        val_acc = float((val_logits.argmax(1) == y_val).float().mean())
        row = {
            "epoch": epoch,
            "train_loss": float(loss_sum) / max(seen, 1),
            "train_accuracy": float(correct) / max(seen, 1),
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "lr": lr,
            "seconds": time.perf_counter() - t0,
            "steps": steps,
        }
        history.append(row)
        if val_acc > best_acc:
            best_acc, best_epoch = val_acc, epoch
            best_state = copy.deepcopy({k_: v.detach().cpu() for k_, v in model.state_dict().items()})
        _progress(
            f"  {label} epoch {epoch:>3}/{recipe.epochs}  train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.2%}"
            f"  val loss {val_loss:.4f} acc {val_acc:.2%}  {row['seconds']:.1f}s"
            + ("  *" if best_epoch == epoch else "")
        )
        if recipe.max_steps and steps >= recipe.max_steps:
            break
    model.load_state_dict(best_state)
    return model, history, best_epoch, time.perf_counter() - t_start, n


def train(
    recipe: Recipe,
    data: Dataset,
    profile: str,
    device: str | torch.device = "auto",
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
) -> TrainResult:
    """Train ``recipe`` on ``data``, or load it from the model cache."""
    if recipe.dataset != data.name:
        raise ValueError(f"recipe {recipe.key} is for {recipe.dataset}, but the data is {data.name}")
    t0 = time.perf_counter()
    dev = resolve_device(device)
    key = cache_key(recipe, profile, data.fingerprint, dev)
    cache_dir = Path(cache_dir) if cache_dir else cache.default_cache_dir()
    path = cache_dir / f"{recipe.dataset}_{profile}_{key}.pt"
    label = f"[{recipe.key} {profile}]"
    sample_ids = train_sample_indices(recipe, data)

    payload = None
    if use_cache and path.exists():
        try:
            payload = cache.load_entry(path, key)
        except cache.CacheError as exc:
            warnings.warn(f"model cache entry {path} is damaged: {exc}; retraining {recipe.key}", RuntimeWarning, stacklevel=2)
            _progress(f"{label} cache entry damaged ({exc}); retraining")
    if payload is not None:
        model = models.build(recipe.arch, recipe.dataset, data.num_classes, data.image_shape[0])
        model.load_state_dict(payload["state_dict"])
        model.to(dev)
        history, best_epoch = payload["history"], payload["best_epoch"]
        train_seconds, n = payload["train_seconds"], payload["train_size"]
        logits = {split: payload[f"{split}_logits"] for split in cache.LOGIT_SPLITS}
        sample_ids = torch.as_tensor(payload["train_sample_ids"], dtype=torch.int64)
        cached = True
        _progress(f"{label} loaded from cache {path.name}")
    else:
        _progress(f"{label} training on {dev.type} ({recipe.epochs} epochs, batch {recipe.batch_size})")
        model, history, best_epoch, train_seconds, n = _run_training(recipe, data, dev, label)
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        # Predictions are a pure function of the kept weights and the data (both in the key):
        # storing them makes a cache hit cost a file read, not an evaluation pass.
        logits = {split: logits_of(model, data.split(split)[0], dev) for split in ("val", "test")}
        logits["train_sample"] = logits_of(model, data.train_x[sample_ids], dev)
        entry = {
            "key": key,
            "recipe": training_recipe(recipe).to_dict(),
            "profile": profile,
            "data_fingerprint": data.fingerprint,
            "state_dict": state,
            "history": history,
            "best_epoch": best_epoch,
            "train_seconds": train_seconds,
            "train_size": n,
            "train_sample_ids": sample_ids.tolist(),
            **{f"{split}_logits": z for split, z in logits.items()},
            "torch": str(torch.__version__),
        }
        if use_cache:
            cache.save_entry(path, cache.seal(entry))
        cached = False
        _progress(f"{label} trained in {train_seconds:.1f}s; kept epoch {best_epoch}")
    model.eval()
    temperature = None
    if recipe.temperature_scaling:
        temperature = fit_temperature(logits["val"], data.split("val")[1])
        model = TemperatureScaled(model, temperature).to(dev).eval()
        logits = {split: z / temperature for split, z in logits.items()}
        _progress(f"{label} fitted temperature T={temperature:.4f} on the validation split")
    return TrainResult(
        recipe=recipe,
        profile=profile,
        model=model,
        history=history,
        best_epoch=best_epoch,
        train_seconds=train_seconds,
        cached=cached,
        seconds=time.perf_counter() - t0,
        cache_key=key,
        cache_path=path if use_cache else None,
        temperature=temperature,
        train_size=n,
        logits=logits,
        train_sample_ids=sample_ids,
    )
