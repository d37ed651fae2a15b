"""train(recipe) -> trained model + history, and the on-disk model cache.

The whole training split lives as a uint8 tensor on the training device; each batch is
converted to float and augmented there with batched tensor ops (``augment.py``). The
checkpoint kept is the one with the best validation accuracy, as the seeds do.

Cache: one file per key, where key = hash(recipe's training fields, profile, data
fingerprint, model code version, device type). Files are written to a temporary name and
renamed (atomic), read with ``torch.load(weights_only=True)`` (no pickled code runs), and
verified against a checksum; a damaged entry is reported with a warning and retrained.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import augment, models
from .data import Dataset
from .evaluate import Predictions, logits_of, to_float
from .recipes import Recipe

CACHE_ENV = "CNN_STRESS_CACHE"
CACHE_FORMAT = 2


def default_cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnn-stress" / "models"


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

    def predictions(self, data: Dataset, split: str = "test") -> Predictions:
        """Per-sample predictions on ``split`` (cached with the model: no re-evaluation)."""
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
    blob = json.dumps(
        {
            "recipe": training_recipe(recipe).to_dict(),
            "profile": profile,
            "data": data_fingerprint,
            "model_code": models.MODEL_CODE_VERSION,
            "format": CACHE_FORMAT,
            "device": device.type,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _state_checksum(state: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


_CHECKED_FIELDS = ("key", "recipe", "profile", "data_fingerprint", "model_code", "history", "best_epoch", "train_seconds", "train_size")


def _entry_checksum(payload: dict) -> str:
    """sha256 over the weights, the stored predictions and the metadata: torch's zip reader
    does not verify its CRCs, so flipped bits anywhere must be caught here."""
    h = hashlib.sha256(_state_checksum(payload["state_dict"]).encode())
    for split in ("val", "test"):
        z = payload[f"{split}_logits"].detach().cpu().contiguous()
        h.update(str((z.dtype, tuple(z.shape))).encode())
        h.update(z.reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(json.dumps({k: payload.get(k) for k in _CHECKED_FIELDS}, sort_keys=True, default=str).encode())
    return h.hexdigest()


class CacheError(RuntimeError):
    pass


def save_entry(path: Path, payload: dict) -> None:
    """Write atomically: a temporary file in the same folder, fsync, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_entry(path: Path, key: str) -> dict:
    """Load and verify a cache entry; raise CacheError saying what is wrong."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [""]
        raise CacheError(f"unreadable ({type(exc).__name__}: {lines[-1][:300]})") from exc
    if not isinstance(payload, dict) or payload.get("format") != CACHE_FORMAT:
        raise CacheError("not a cache entry of this harness version")
    if payload.get("key") != key:
        raise CacheError(f"holds key {payload.get('key')!r}, expected {key!r}")
    if not isinstance(payload.get("state_dict"), dict):
        raise CacheError("no weights")
    for split in ("val", "test"):
        z = payload.get(f"{split}_logits")
        if not isinstance(z, torch.Tensor) or z.ndim != 2 or not torch.isfinite(z).all():
            raise CacheError(f"{split} predictions missing or not finite")
    if _entry_checksum(payload) != payload.get("checksum"):
        raise CacheError("contents (weights, predictions or history) do not match their checksum")
    return payload


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
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    path = cache_dir / f"{recipe.dataset}_{profile}_{key}.pt"
    label = f"[{recipe.key} {profile}]"

    payload = None
    if use_cache and path.exists():
        try:
            payload = load_entry(path, key)
        except CacheError as exc:
            warnings.warn(f"model cache entry {path} is damaged: {exc}; retraining {recipe.key}", RuntimeWarning, stacklevel=2)
            _progress(f"{label} cache entry damaged ({exc}); retraining")
    if payload is not None:
        model = models.build(recipe.arch, recipe.dataset, data.num_classes, data.image_shape[0])
        model.load_state_dict(payload["state_dict"])
        model.to(dev)
        history, best_epoch = payload["history"], payload["best_epoch"]
        train_seconds, n = payload["train_seconds"], payload["train_size"]
        logits = {"val": payload["val_logits"], "test": payload["test_logits"]}
        cached = True
        _progress(f"{label} loaded from cache {path.name}")
    else:
        _progress(f"{label} training on {dev.type} ({recipe.epochs} epochs, batch {recipe.batch_size})")
        model, history, best_epoch, train_seconds, n = _run_training(recipe, data, dev, label)
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        # Predictions are a pure function of the kept weights and the data (both in the key):
        # storing them makes a cache hit cost a file read, not an evaluation pass.
        logits = {split: logits_of(model, data.split(split)[0], dev) for split in ("val", "test")}
        entry = {
            "format": CACHE_FORMAT,
            "key": key,
            "recipe": training_recipe(recipe).to_dict(),
            "profile": profile,
            "data_fingerprint": data.fingerprint,
            "model_code": models.MODEL_CODE_VERSION,
            "state_dict": state,
            "history": history,
            "best_epoch": best_epoch,
            "train_seconds": train_seconds,
            "train_size": n,
            "val_logits": logits["val"],
            "test_logits": logits["test"],
            "torch": str(torch.__version__),
        }
        entry["checksum"] = _entry_checksum(entry)
        if use_cache:
            save_entry(path, entry)
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
    )
