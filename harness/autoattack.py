"""AutoAttack (Croce & Hein 2020), the reference RobustBench scores models with, from
torchattacks (not re-implemented): APGD-CE, APGD-T, FAB-T and Square (5,000 queries), the
"standard" version, L-inf, each attack run on the images the ones before it left right.

Run here attack by attack, with the parameters of ``torchattacks.AutoAttack(version=
"standard")``, so that the attack that broke each image is known; the result is the same
as the library's ``MultiAttack``. A single PGD run overestimates robustness, most of all for a
model trained against FGSM (gradient masking): a large gap between PGD and AutoAttack accuracy
on the same images is a finding.

torchattacks pins ``requests~=2.25.1`` although it never imports requests; setup.sh installs
it with ``--no-deps`` (its other requirements are the harness's own).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")
SEED = 0


def available() -> bool:
    try:
        import torchattacks  # noqa: F401
    except ImportError:
        return False
    return True


def _attacks(model: nn.Module, eps: float, n_classes: int, seed: int) -> list:
    """The four attacks in ``ATTACKS`` order; None for APGD-T below 4 classes (its targeted DLR
    loss reads the 3rd and 4th largest logits, as in the reference implementation)."""
    import torchattacks as ta

    return [
        ta.APGD(model, eps=eps, norm="Linf", seed=seed, loss="ce", n_restarts=1),
        ta.APGDT(model, eps=eps, norm="Linf", seed=seed, n_classes=n_classes, n_restarts=1) if n_classes >= 4 else None,
        ta.FAB(model, eps=eps, norm="Linf", seed=seed, multi_targeted=True, n_classes=n_classes, n_restarts=1),
        ta.Square(model, eps=eps, norm="Linf", seed=seed, n_queries=5000, n_restarts=1),
    ]


def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, n_classes: int, seed: int = SEED,
        tick=None) -> tuple[torch.Tensor, np.ndarray]:
    """(adversarial images, the index in ``ATTACKS`` of the attack that broke each image: -1
    where none did, -2 where the clean image is already wrong)."""
    model = model.eval()
    with torch.no_grad():
        right = model(x).argmax(1) == y
    adv = x.clone()
    broken = np.where(right.cpu().numpy(), -1, -2)
    # 9 target classes for APGD-T and FAB-T, as RobustBench (torchattacks targets n_classes - 1)
    for k, attack in enumerate(_attacks(model, eps, min(n_classes, 10), seed)):
        todo = torch.as_tensor(np.flatnonzero(broken == -1))
        if len(todo) and attack is not None:
            cand = attack(x[todo], y[todo])
            with torch.no_grad():
                fooled = (model(cand).argmax(1) != y[todo]).cpu().numpy()
            adv[todo[fooled]] = cand[fooled]
            broken[todo.numpy()[fooled]] = k
        if tick is not None:
            tick(1)
    return adv, broken
