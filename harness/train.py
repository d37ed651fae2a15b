"""train(recipe) -> trained model + history (through the model cache, ``cache.py``).

The whole training split lives as a uint8 tensor on the training device; each batch is
converted to float and augmented there with batched tensor ops (``augment.py``). The
checkpoint kept is the one with the best validation accuracy, as the seeds do. With the
kept weights, the model's logits on the validation split, the test split and a fixed
sample of its training images (``train_sample_indices``) are stored with it.
"""

from __future__ import annotations

import contextlib
import copy
import math
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
from .io import inside
from .losses import TemperatureScaled, _loss, fit_temperature  # noqa: F401 - the objectives (harness/losses.py)
from .recipes import Recipe
from .runtime import Runtime, resolve_device  # noqa: F401 - how training runs (harness/runtime.py)

TRAIN_SAMPLE_SEED = 4242


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
    trained_in: dict = field(default_factory=dict)  # Runtime.to_dict() when it was trained (threads, kernels)

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


def cache_key(recipe: Recipe, profile: str, data_fingerprint: str, device: torch.device,
              runtime: Runtime | None = None) -> str:
    runtime = runtime or Runtime.default(device)
    fields = {**training_recipe(recipe).to_dict(), "runtime": runtime.key_fields()}
    if models.arch_fingerprint(recipe.arch):  # a model of one's own: its source is in the key too
        fields["arch_source"] = models.arch_fingerprint(recipe.arch)
    return cache.key(fields, profile, data_fingerprint, device.type)


# ------------------------------------------------------------------ training


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


class TrainingDiverged(RuntimeError):
    """Training produced no usable model (non-finite loss, or validation accuracy at chance);
    nothing is cached."""


NAN_CHECK_EVERY = 25  # CUDA: steps between checks of the loss (a check waits for the device)


class Trainer:
    """One recipe's training: the model, its optimiser and schedule, the training images on
    the device, and a step that never waits for the device (randomness drawn on the device
    or per epoch on the CPU; losses accumulated on the device)."""

    def __init__(self, recipe: Recipe, data: Dataset, device: torch.device, runtime: Runtime | None = None,
                 label: str = "", progress=None):
        from .progress import Silent

        self.recipe, self.data, self.device = recipe, data, device
        self.runtime = runtime or Runtime.default(device)
        self.label = label or f"[{recipe.key}]"
        self.progress = progress or Silent()
        torch.manual_seed(recipe.seed)
        np.random.seed(recipe.seed)
        if device.type == "cuda":
            torch.backends.cudnn.deterministic = self.runtime.deterministic
            torch.backends.cudnn.benchmark = not self.runtime.deterministic
        model = models.for_data(recipe.arch, data).to(device)
        if self.runtime.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.forward = torch.compile(model) if self.runtime.compile else model
        idx = select_training_indices(recipe, data)
        self.x = data.train_x[idx].to(device)
        self.y = data.train_y[idx].to(device)
        x_val, y_val, _ = data.split("val")
        self.x_val, self.y_val = x_val.to(device), y_val.to(device)
        self.n, self.k = len(idx), data.num_classes
        self.steps_per_epoch = math.ceil(self.n / recipe.batch_size)
        self.class_weight = None
        if recipe.class_weights:
            counts = torch.bincount(self.y, minlength=self.k).float().clamp(min=1)
            self.class_weight = (counts.sum() / (self.k * counts)).to(device)
        fused = self.runtime.fused and (recipe.optimizer == "adam" or device.type == "cuda")
        if recipe.optimizer == "adam":
            self.opt = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay,
                                        fused=fused or None)
        else:
            self.opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                       weight_decay=recipe.weight_decay, nesterov=recipe.nesterov, fused=fused or None)
        self.sched = torch.optim.lr_scheduler.MultiStepLR(self.opt, milestones=list(recipe.milestones),
                                                          gamma=recipe.gamma)
        self.gen = torch.Generator(device=device).manual_seed(recipe.seed)  # augmentation, on the device
        self.cpu_gen = torch.Generator().manual_seed(recipe.seed)  # CutMix / MixUp plans, per epoch
        self.steps = 0
        self.best_val_logits: torch.Tensor | None = None  # the kept epoch's, set by fit()
        self.training_layout = True  # channels-last while training (runtime.channels_last); fit() ends contiguous
        self.epoch_index = 0

    def _amp(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.runtime.amp)

    def _epoch_plan(self):
        r = self.recipe
        perm = torch.randperm(self.n, generator=self.gen, device=self.device)
        plan = None
        if r.cutmix_prob or r.mixup_prob:
            h, w = self.data.image_shape[1:]
            plan = augment.MixPlan.draw(self.steps_per_epoch, h, w, r.cutmix_prob, r.cutmix_alpha, r.mixup_prob,
                                        r.mixup_alpha, self.cpu_gen)
        return perm, plan

    def step(self, bidx: torch.Tensor, plan, si: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step on the images ``bidx``; (loss x batch, right predictions), on the device."""
        r, gen = self.recipe, self.gen
        xb = to_float(self.x[bidx])
        yb = self.y[bidx]
        if r.crop_padding:
            xb = augment.random_crop(xb, r.crop_padding, gen)
        if r.hflip:
            xb = augment.hflip(xb, r.hflip, gen)
        if r.rotation:
            xb = augment.rotate(xb, r.rotation, gen)
        if r.color_jitter:
            xb = augment.color_jitter(xb, r.color_jitter, gen)
        target, hard = yb, yb
        if plan is not None and plan.kind[si]:
            perm = torch.randperm(len(yb), generator=gen, device=self.device)
            xb, target, hard = plan.apply(si, xb, F.one_hot(yb, self.k).float(), perm)
        if self.runtime.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        if r.fgsm_eps:
            xb_adv = xb.detach().clone().requires_grad_(True)
            with self._amp():
                adv_loss = _loss(self.forward(xb_adv), target, r, self.class_weight)
            (grad,) = torch.autograd.grad(adv_loss, xb_adv)
            xb_adv = (xb + r.fgsm_eps * grad.sign()).clamp_(0, 1).detach()
            with self._amp():
                logits = self.forward(xb)
                loss = 0.5 * _loss(logits, target, r, self.class_weight) + 0.5 * _loss(
                    self.forward(xb_adv), target, r, self.class_weight)
        else:
            with self._amp():
                logits = self.forward(xb)
                loss = _loss(logits, target, r, self.class_weight)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.steps += 1
        return loss.detach().float(), (logits.detach().argmax(1) == hard).sum()

    def _check_finite(self, loss: torch.Tensor, epoch: int, step: int) -> None:
        if not bool(torch.isfinite(loss)):
            lr = self.opt.param_groups[0]["lr"]
            raise TrainingDiverged(
                f"{self.recipe.key}: the training loss became {float(loss)} at epoch {epoch}, step {step} "
                f"(learning rate {lr:g}): training stopped, nothing is cached. Lower the learning rate "
                f"(lr = {lr / 10:g} in the recipe) or check the data for NaN or extreme values.")

    def run_steps(self, steps: int) -> int:
        """``steps`` optimiser steps (crossing epochs, no validation): images seen."""
        seen = 0
        while steps > 0:
            perm, plan = self._epoch_plan()
            for si, start in enumerate(range(0, self.n, self.recipe.batch_size)):
                if steps == 0:
                    break
                bidx = perm[start : start + self.recipe.batch_size]
                self.step(bidx, plan, si)
                seen += len(bidx)
                steps -= 1
        return seen

    def warm_up(self, steps: int = 3) -> None:
        self.run_steps(steps)

    def evaluate(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """Logits (float32, CPU) in eval mode, in the contiguous layout the kept model is used in
        (a channels-last forward pass differs in the last bits), so the best epoch's validation
        logits are the kept model's; bf16 and large batches on CUDA."""
        layout = self.runtime.channels_last and self.training_layout
        if layout:
            self.model.to(memory_format=torch.contiguous_format)
        try:
            return logits_of(self.model, x_uint8, self.device, amp=self.runtime.amp and self.device.type == "cuda")
        finally:
            if layout:
                self.model.to(memory_format=torch.channels_last)

    def fit(self) -> tuple[nn.Module, list[dict], int, float, int]:
        """Train every epoch, keep the best validation checkpoint: (model, history, best epoch,
        seconds, training images)."""
        r = self.recipe
        history: list[dict] = []
        best_acc, best_epoch, best_state = -1.0, 0, None
        t_start = time.perf_counter()
        note = f" on {self.device.type}" + (", bf16" if self.runtime.amp else "")
        self.progress.start(self.label, r.epochs, self.steps_per_epoch, self.n, note)
        images_seen = 0
        for epoch in range(1, r.epochs + 1):
            self.model.train()
            t0 = time.perf_counter()
            lr = self.opt.param_groups[0]["lr"]
            perm, plan = self._epoch_plan()
            loss_sum = torch.zeros((), device=self.device)
            correct = torch.zeros((), device=self.device, dtype=torch.long)
            seen = 0
            check = 1 if self.device.type == "cpu" else NAN_CHECK_EVERY
            for si, start in enumerate(range(0, self.n, r.batch_size)):
                bidx = perm[start : start + r.batch_size]
                loss, right = self.step(bidx, plan, si)
                if si % check == 0 or si == self.steps_per_epoch - 1:
                    self._check_finite(loss, epoch, si + 1)
                loss_sum += loss * len(bidx)
                correct += right
                seen += len(bidx)
                images_seen += len(bidx)
                self.progress.update(epoch, si + 1, images_seen, time.perf_counter() - t_start,
                                     lambda ls=loss_sum, c=correct, n=seen: (float(ls) / max(n, 1), float(c) / max(n, 1)))
                if r.max_steps and self.steps >= r.max_steps:
                    break
            self.sched.step()
            epoch_seconds = time.perf_counter() - t0
            val_logits = self.evaluate(self.x_val)
            y_val = self.y_val.cpu()
            val_loss = float(F.cross_entropy(val_logits, y_val))
            val_acc = float((val_logits.argmax(1) == y_val).float().mean())
            train_loss = float(loss_sum) / max(seen, 1)
            if not math.isfinite(train_loss) or not math.isfinite(val_loss):
                self._check_finite(torch.tensor(train_loss if not math.isfinite(train_loss) else val_loss), epoch, si + 1)
            row = {
                "epoch": epoch, "train_loss": train_loss, "train_accuracy": float(correct) / max(seen, 1),
                "val_loss": val_loss, "val_accuracy": val_acc, "lr": lr, "seconds": epoch_seconds,
                "images_per_second": seen / max(epoch_seconds, 1e-9), "steps": self.steps,
            }
            history.append(row)
            best = val_acc > best_acc
            if best:
                best_acc, best_epoch, self.best_val_logits = val_acc, epoch, val_logits
                best_state = copy.deepcopy({k_: v.detach().cpu() for k_, v in self.model.state_dict().items()})
            done = epoch == r.epochs or bool(r.max_steps and self.steps >= r.max_steps)
            per_epoch = (time.perf_counter() - t_start) / epoch
            self.progress.epoch(row, best, None if done else per_epoch * (r.epochs - epoch))
            if done:
                break
        seconds = time.perf_counter() - t_start
        self._check_not_chance(best_acc)
        self.model.load_state_dict(best_state)
        self.model = self.model.to(memory_format=torch.contiguous_format)
        self.training_layout = False
        return self.model, history, best_epoch, seconds, self.n

    def _check_not_chance(self, best_acc: float) -> None:
        """A model whose best validation accuracy is within three standard errors of chance
        learned nothing: it is reported as diverged, not gated as a model, and not cached."""
        chance = 1.0 / self.k
        n_val = len(self.y_val)
        if self.recipe.max_steps and self.recipe.max_steps < 3 * self.steps_per_epoch:
            return  # a deliberately short run (a test's barely trained model)
        margin = 3 * math.sqrt(chance * (1 - chance) / max(n_val, 1))
        if best_acc <= chance + margin:
            raise TrainingDiverged(
                f"{self.recipe.key}: the best validation accuracy, {best_acc:.2%}, stayed at chance ({chance:.2%} "
                f"+ {margin:.2%}, three standard errors on {n_val} images): the model learned nothing and is "
                f"reported as diverged, not cached. Check the learning rate (lr = {self.recipe.lr:g}) and the data.")


def cache_path(recipe: Recipe, profile: str, data: Dataset, device: torch.device, runtime: Runtime,
               cache_dir: str | Path | None = None) -> Path:
    """Where the model cache keeps ``recipe`` trained on ``data`` (whether or not it is there)."""
    key = cache_key(recipe, profile, data.fingerprint, device, runtime)
    cache_dir = Path(cache_dir) if cache_dir else cache.default_cache_dir()
    return inside(cache_dir, f"{recipe.dataset}_{profile}_{key}.pt", "the model cache file")


def train(
    recipe: Recipe,
    data: Dataset,
    profile: str,
    device: str | torch.device = "auto",
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    runtime: Runtime | None = None,
    progress=None,
) -> TrainResult:
    """Train ``recipe`` on ``data``, or load it from the model cache. ``progress``: where
    training progress goes (``harness.progress``; default: this process's stderr)."""
    from . import progress as progress_mod

    if recipe.dataset != data.name:
        raise ValueError(f"recipe {recipe.key} is for {recipe.dataset}, but the data is {data.name}")
    t0 = time.perf_counter()
    dev = resolve_device(device)
    runtime = runtime or Runtime.default(dev)
    progress = progress if progress is not None else progress_mod.stderr()
    _progress = progress.message
    key = cache_key(recipe, profile, data.fingerprint, dev, runtime)
    cache_dir = Path(cache_dir) if cache_dir else cache.default_cache_dir()
    path = cache_path(recipe, profile, data, dev, runtime, cache_dir)
    label = f"[{recipe.key} {profile}]"
    sample_ids = train_sample_indices(recipe, data)

    payload = None
    if use_cache:
        cache.remove_stale_temporaries(cache_dir)
    lock = (cache.training_lock(path, lambda: _progress(f"{label} another process is training it; waiting"))
            if use_cache else contextlib.nullcontext())
    with lock:  # looked up, trained and saved by one process at a time: each model is trained once
        if use_cache and path.exists():
            expected = {"recipe": training_recipe(recipe).to_dict(), "profile": profile, "data_fingerprint": data.fingerprint}
            try:
                payload = cache.load_entry(path, key, expected)
            except cache.CacheError as exc:
                warnings.warn(f"model cache entry {path} is damaged: {exc}; retraining {recipe.key}", RuntimeWarning, stacklevel=2)
                _progress(f"{label} cache entry damaged ({exc}); retraining")
        if payload is not None:
            model = models.for_data(recipe.arch, data)
            model.load_state_dict(payload["state_dict"])
            model.to(dev)
            history, best_epoch = payload["history"], payload["best_epoch"]
            train_seconds, n = payload["train_seconds"], payload["train_size"]
            logits = {split: payload[f"{split}_logits"] for split in cache.LOGIT_SPLITS}
            sample_ids = torch.as_tensor(payload["train_sample_ids"], dtype=torch.int64)
            trained_in = {**(payload.get("runtime") or {}), "torch": payload.get("torch")}
            cached = True
            _progress(f"{label} loaded from cache {path.name}")
        else:
            trainer = Trainer(recipe, data, dev, runtime, label, progress)
            model, history, best_epoch, train_seconds, n = trainer.fit()
            state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
            # Predictions are a pure function of the kept weights and the data (both in the key):
            # storing them makes a cache hit cost a file read, not an evaluation pass.
            # the validation logits are the kept epoch's (the same weights and layout: bit for bit)
            logits = {"val": trainer.best_val_logits, "test": trainer.evaluate(data.split("test")[0])}
            logits["train_sample"] = trainer.evaluate(data.train_x[sample_ids])
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
                "runtime": runtime.to_dict(),
            }
            if use_cache:
                cache.save_entry(path, cache.seal(entry))
            trained_in = {**entry["runtime"], "torch": entry["torch"]}
            cached = False
            kept = history[best_epoch - 1]
            progress.finish(f"{label} trained in {train_seconds:.1f}s on {dev.type}; kept epoch {best_epoch} "
                            f"(validation accuracy {kept['val_accuracy']:.2%})")
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
        trained_in=trained_in,
    )
