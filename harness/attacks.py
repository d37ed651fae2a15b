"""L-inf adversarial attacks on image classifiers: FGSM and PGD, batched, on tensors.

Images are float tensors in [0, 1], shape (B, C, H, W) (the models normalise inside their
first layer, so the budget ``eps`` is in pixel units: 8/255 is eight grey levels). Every
attack

* runs the model in eval mode and restores its training flag afterwards;
* takes gradients with respect to the input only (``torch.autograd.grad``), so no ``.grad``
  is ever accumulated on the model's parameters;
* returns a detached tensor on x's device with x's dtype, inside the L-inf ball of radius
  ``eps`` around x (up to float rounding of ``x +- eps``) and clipped to [0, 1].

The loss is the per-sample cross-entropy summed over the batch, so each sample's gradient
does not depend on which other samples share its batch.

``EPSILON_GRIDS`` / ``epsilon_grid`` hold the budgets to sweep per dataset, with reasons.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from . import cards

# The L-inf budgets (pixel units in [0, 1]) swept per dataset: its card's (the reasons: harness/cards.py).
EPSILON_GRIDS: dict[str, tuple[float, ...]] = {n: c.attack_grid for n, c in cards.DATASETS.items()}


def epsilon_grid(dataset: str) -> tuple[float, ...]:
    """The L-inf budgets to sweep for ``dataset`` (see ``EPSILON_GRIDS`` for the reasons)."""
    try:
        return EPSILON_GRIDS[dataset]
    except KeyError:
        raise ValueError(f"no epsilon grid for {dataset!r}: choose one of {', '.join(EPSILON_GRIDS)}") from None


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block; restore its training flag (and each
    submodule's) afterwards, even on error."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in flags:
            m.training = training


def _check_eps(eps: float) -> float:
    eps = float(eps)
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    return eps


def per_sample_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each sample (B,), in eval mode, without gradients."""
    with eval_mode(model), torch.no_grad():
        return F.cross_entropy(model(x), y, reduction="none")


def _loss_and_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample cross-entropy at x and its gradient w.r.t. x (the model is in eval mode)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x), y, reduction="none")
        (grad,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), grad


def _fgsm(x: torch.Tensor, grad: torch.Tensor, eps: float) -> torch.Tensor:
    return (x + eps * grad.sign()).clamp_(0, 1)


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015): ``clip(x + eps sign(grad_x CE), 0, 1)``.

    One gradient at x; the result is a corner of the eps-ball (where the gradient is not 0),
    clipped to [0, 1]. ``eps = 0`` returns a copy of x.
    """
    eps = _check_eps(eps)
    x = x.detach()
    if eps == 0:
        return x.clone()
    with eval_mode(model):
        _, grad = _loss_and_grad(model, x, y)
        return _fgsm(x, grad, eps)


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    keep_best: bool = True,
) -> torch.Tensor:
    """Projected gradient descent on the cross-entropy, L-inf (Madry et al. 2018).

    Start at x, or (``random_start``) at a point uniform in the eps-ball around x, clipped to
    [0, 1], drawn from ``generator`` (on x's device; the global RNG when None). Then ``steps``
    times: ``x_k+1 = Proj(x_k + step_size * sign(grad_x CE(x_k)))``, where Proj clips to the
    intersection of the eps-ball and [0, 1]. ``step_size`` defaults to ``2.5 * eps / steps``
    (the rule of MadryLab's ``robustness`` library: the steps add up to 2.5 eps, so the
    iterates can cross the ball and still end on its boundary).

    ``keep_best`` (default): return, per sample, the candidate with the highest loss among
    the FGSM point ``fgsm(model, x, y, eps)``, the start and every iterate. With the FGSM
    point a candidate, PGD's per-sample loss is never below FGSM's; a plain last iterate can
    be (the sign steps oscillate, a random start lands in a worse basin). Highest loss is
    not the same as misclassified (an earlier, lower-loss iterate may already have been
    misclassified), but it makes PGD at least as strong as FGSM per sample in the quantity
    both maximise. Cost: one extra gradient at x (shared with the first step when there is
    no random start) and two extra forward passes. ``keep_best=False`` returns the last
    iterate, as ART, cleverhans and torchattacks do (and matches ART's PGD exactly).

    ``eps = 0`` returns a copy of x.
    """
    eps = _check_eps(eps)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    x = x.detach()
    if eps == 0:
        return x.clone()
    alpha = 2.5 * eps / max(steps, 1) if step_size is None else float(step_size)
    lo, hi = (x - eps).clamp_(min=0), (x + eps).clamp_(max=1)

    with eval_mode(model):
        best = best_loss = at_x = None
        if keep_best:
            at_x = _loss_and_grad(model, x, y)
            best = _fgsm(x, at_x[1], eps)
            with torch.no_grad():
                best_loss = F.cross_entropy(model(best), y, reduction="none")

        if random_start:
            noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x_adv = torch.clamp(x + (2 * noise - 1) * eps, lo, hi)
        else:
            x_adv = x.clone()

        for k in range(steps):
            # without a random start the first iterate is x: reuse FGSM's gradient there
            loss, grad = at_x if (k == 0 and at_x is not None and not random_start) else _loss_and_grad(model, x_adv, y)
            if keep_best:
                best, best_loss = _keep_higher(best, best_loss, x_adv, loss)
            x_adv = torch.clamp(x_adv + alpha * grad.sign(), lo, hi)

        if not keep_best:
            return x_adv
        with torch.no_grad():
            loss = F.cross_entropy(model(x_adv), y, reduction="none")
        return _keep_higher(best, best_loss, x_adv, loss)[0]


def _keep_higher(best, best_loss, cand, cand_loss):
    better = cand_loss > best_loss
    mask = better.view(-1, *([1] * (cand.dim() - 1)))
    return torch.where(mask, cand, best), torch.where(better, cand_loss, best_loss)


Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def attack_in_batches(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    fn: Attack,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Run ``fn(model, xb, yb)`` on successive batches and concatenate the adversarial images.

    ``fn`` is an attack with its parameters bound, e.g.
    ``functools.partial(pgd, eps=0.05, generator=torch.Generator().manual_seed(0))``.
    ``device`` (optional): move each batch there for the attack (the model must be there);
    the result comes back on x's device. A seeded generator makes the whole run
    reproducible for a fixed ``batch_size``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = []
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        if device is not None:
            xb, yb = xb.to(device), yb.to(device)
        out.append(fn(model, xb, yb).to(x.device))
    if not out:
        return x.detach().clone()
    return torch.cat(out)


def accuracy_under_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    fn: Attack,
    batch_size: int = 256,
) -> float:
    """Fraction of samples still classified correctly after ``fn`` (batched)."""
    correct = 0
    with eval_mode(model):
        for i in range(0, len(x), batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            xa = fn(model, xb, yb)
            with torch.no_grad():
                correct += int((model(xa).argmax(1) == yb).sum())
    return correct / max(len(x), 1)
