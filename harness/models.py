"""The seed models. Inputs are images in [0, 1]; normalisation is the first layer.

* ``small-cnn`` (seed 000): three conv blocks and a three-layer head,
  Linear(1152->256)->ReLU->Dropout->Linear(256->128)->ReLU->Linear(128->classes).
  1152 = 128 x 3 x 3 fixes the geometry: 3x3 convolutions with padding 1 and a 2x2
  max-pool in every block take 28 -> 14 -> 7 -> 3. The seed's "approximately 150K
  parameters" cannot hold with a 1152x256 layer (295K weights alone); the model as
  described has 422,474.
* ``resnet18`` (seeds 001, 004): torchvision's resnet18 with a 3x3 stride-1 stem and no
  max-pool, trained from scratch, as is standard for 32x32 inputs.

Datasets and models of one's own: both built-in architectures adapt to the images' channels
and size (the small CNN's head to 128 x H/8 x W/8; the ResNet-18's stem to the channels) and to
the number of classes, normalising with the dataset's per-channel mean and standard deviation.
``--arch`` also takes any torchvision classification model by name (``torchvision:<name>``;
trained from scratch: a pretrained one would need a download, which these machines cannot
make, so its weights come from a local file with ``--weights``), and ``module:function``
(``python:<module>:<function>``), a function of yours returning an ``nn.Module`` that takes
float images in [0, 1]; it is called with whichever of ``num_classes``, ``in_channels`` and
``image_size`` it accepts. ``load_weights`` reads a trained state dict with
``torch.load(weights_only=True)`` and names the first key that does not fit.

Grad-CAM target layers (``harness.explain``): each model names its candidate layers in
``cam_layers()`` (name -> module, map size at the native input size) and its default in
``DEFAULT_CAM_LAYER``. Every named layer's output is left untouched by the rest of the
forward pass (no in-place op writes into it), so a hooked activation is the value the
gradient refers to on every device.

* small-cnn (28x28): ``block2`` 14x14, ``block3`` 7x7 (default: block 3 before its
  max-pool), ``block3-pool`` 3x3 (after the last max-pool and its in-place ReLU).
* resnet18 (32x32): ``layer2`` 16x16, ``layer3`` 8x8 (default), ``layer4`` 4x4.

``cam_layer()`` (one module) is the older interface, kept for callers that use it.

This file's source is part of the model-cache key (``cache.code_hash``): any change here
retrains the models it builds.
"""

from __future__ import annotations

import torch
from torch import nn

from . import cards


class Normalize(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class SmallCNN(nn.Module):
    """Seed 000's Fashion-MNIST CNN (layer order of each block as the seed lists it)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, mean=(0.5,), std=(0.5,), image_size=(28, 28)):
        super().__init__()
        h, w = image_size
        if min(h, w) < 8:
            raise ValueError(f"small-cnn halves the image three times: {h}x{w} is too small (8 px at least)")
        self.normalize = Normalize(mean, std)
        self.features = nn.Sequential(
            # block 1
            nn.Conv2d(in_channels, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            # block 2
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            # block 3: Conv -> ReLU -> BatchNorm -> MaxPool -> ReLU -> Dropout
            nn.Conv2d(64, 128, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.BatchNorm2d(128),
            nn.MaxPool2d(2),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(128 * (h // 8) * (w // 8), 256),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(256, 128),
            nn.ReLU(inplace=True),
            nn.Linear(128, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(self.normalize(x)))

    # Grad-CAM layers (harness.explain). Output sizes at 28x28 input.
    DEFAULT_CAM_LAYER = "block3"

    def cam_layers(self) -> dict[str, nn.Module]:
        """Grad-CAM target layers by name; none of their outputs is modified in place later.

        * ``block2``: block 2's ReLU, before its max-pool: 64 x 14 x 14.
        * ``block3`` (default): block 3's BatchNorm (Conv -> ReLU -> BatchNorm), before its
          max-pool: 128 x 7 x 7.
        * ``block3-pool``: the in-place ReLU after block 3's max-pool: 128 x 3 x 3, the
          resolution of ``cam_layer()`` but hooked after the ReLU, which overwrites the
          max-pool's output in place (a hook on the max-pool stores a tensor that the ReLU
          then changes when it is not copied, as on the CPU).
        """
        return {"block2": self.features[6], "block3": self.features[10], "block3-pool": self.features[12]}

    def cam_layer(self) -> nn.Module:
        """The older single Grad-CAM layer: the last block's max-pool (3x3 maps). Its output is
        then modified by an in-place ReLU; ``harness.explain`` uses ``cam_layers()`` instead."""
        return self.features[-3]


class CifarResNet18(nn.Module):
    def __init__(self, num_classes: int, mean, std):
        super().__init__()
        from torchvision.models import resnet18

        self.normalize = Normalize(mean, std)
        net = resnet18(weights=None, num_classes=num_classes)
        net.conv1 = nn.Conv2d(len(mean), 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
        self.net = net

    def forward(self, x):
        return self.net(self.normalize(x))

    # Grad-CAM layers (harness.explain). Output sizes at 32x32 input.
    DEFAULT_CAM_LAYER = "layer3"

    def cam_layers(self) -> dict[str, nn.Module]:
        """Grad-CAM target layers by name (each stage's output, the final ReLU of its last
        block; nothing later modifies it in place).

        * ``layer2``: 128 x 16 x 16.
        * ``layer3`` (default): 256 x 8 x 8.
        * ``layer4``: 512 x 4 x 4 (seed 001's layer, the same output as ``cam_layer()``).
        """
        return {"layer2": self.net.layer2, "layer3": self.net.layer3, "layer4": self.net.layer4}

    def cam_layer(self) -> nn.Module:
        """The older single Grad-CAM layer: layer4's last block, as in seed 001 (4x4 maps)."""
        return self.net.layer4[-1]


class Wrapped(nn.Module):
    """A network of someone else's (a torchvision model) behind the harness's normalisation; grey
    images are repeated to the three channels ImageNet models expect."""

    def __init__(self, net: nn.Module, mean, std, channels: int = 3):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.repeat = channels if len(mean) == 1 else 1
        self.net = net

    def forward(self, x):
        x = self.normalize(x)
        return self.net(x.expand(-1, self.repeat, -1, -1) if self.repeat > 1 else x)


ARCHITECTURES = ("small-cnn", "resnet18")
_TORCHVISION, _PYTHON = "torchvision:", "python:"


def torchvision_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def resolve_arch(arch: str) -> str:
    """An architecture as the recipe stores it: a built-in name, ``torchvision:<name>`` or
    ``python:<module>:<function>``; checked now (importable, known), before any training."""
    if arch in ARCHITECTURES or arch.startswith((_TORCHVISION, _PYTHON)):
        name = arch
    elif ":" in arch:
        name = _PYTHON + arch
    elif arch in torchvision_names():
        name = _TORCHVISION + arch
    else:
        raise ValueError(f"unknown architecture {arch!r}: small-cnn, resnet18, a torchvision classification model "
                         f"({', '.join(torchvision_names()[:8])}, ...), or module:function")
    if name.startswith(_PYTHON):
        _user_function(name)
    elif name.startswith(_TORCHVISION) and name[len(_TORCHVISION):] not in torchvision_names():
        raise ValueError(f"{name[len(_TORCHVISION):]!r} is not a torchvision classification model")
    return name


def _user_function(arch: str):
    import importlib

    spec = arch[len(_PYTHON):]
    module, _, fn = spec.rpartition(":")
    if not module or not fn:
        raise ValueError(f"--model {spec!r}: give module:function, e.g. mymodels:make_net")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"--model {spec!r}: cannot import {module!r} ({exc}); run from the folder that holds it or "
                          "put it on PYTHONPATH") from exc
    if not callable(getattr(mod, fn, None)):
        raise ValueError(f"--model {spec!r}: {module} has no function {fn!r}")
    return mod, getattr(mod, fn)


def arch_fingerprint(arch: str) -> str:
    """For ``python:`` architectures, a hash of the module's source (part of the cache key: an
    edit retrains); empty for the others, whose code the cache key already covers."""
    if not arch.startswith(_PYTHON):
        return ""
    import hashlib
    import inspect

    mod, _ = _user_function(arch)
    try:
        return hashlib.sha256(inspect.getsource(mod).encode()).hexdigest()[:16]
    except (OSError, TypeError):
        return "unhashable"


def build(arch: str, dataset: str, num_classes: int, in_channels: int | None = None,
          image_shape: tuple[int, int, int] | None = None, normalisation=None) -> nn.Module:
    """A freshly initialised model (seed the RNG before calling for reproducible weights).
    ``normalisation``: (mean, std) per channel; default: the built-in dataset's."""
    if normalisation is not None:
        mean, std = normalisation
    elif dataset in cards.DATASETS:  # the built-in dataset's card
        mean, std = cards.DATASETS[dataset].normalisation
    else:
        c = in_channels or (image_shape[0] if image_shape else 3)
        mean, std = (0.5,) * c, (0.5,) * c
    c = in_channels or len(mean)
    size = tuple(image_shape[1:]) if image_shape else ((28, 28) if c == 1 else (32, 32))
    if arch == "small-cnn":
        return SmallCNN(num_classes, c, mean, std, size)
    if arch == "resnet18":
        return CifarResNet18(num_classes, mean, std)
    if arch.startswith(_TORCHVISION):
        import torchvision

        net = torchvision.models.get_model(arch[len(_TORCHVISION):], weights=None, num_classes=num_classes)
        return Wrapped(net, mean, std)
    if arch.startswith(_PYTHON):
        import inspect

        _, fn = _user_function(arch)
        offered = {"num_classes": num_classes, "in_channels": c, "image_size": size}
        params = inspect.signature(fn).parameters
        takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
        model = fn(**{k: v for k, v in offered.items() if takes_all or k in params})
        if not isinstance(model, nn.Module):
            raise TypeError(f"--model {arch[len(_PYTHON):]} returned a {type(model).__name__}, not a torch.nn.Module")
        return model
    raise ValueError(f"unknown architecture {arch!r}: choose one of {', '.join(ARCHITECTURES)}, a torchvision name, "
                     "or module:function")


def for_data(arch: str, data) -> nn.Module:
    """``build`` for a dataset: its classes, channels, size and normalisation."""
    return build(arch, data.name, data.num_classes, data.image_shape[0], data.image_shape, data.normalisation)


def load_weights(arch: str, data, path) -> nn.Module:
    """``arch`` built for ``data`` with a trained state dict from ``path`` (``weights_only``: no
    code in the file runs). A torchvision network's own state dict (without the harness's
    normaliser) is accepted too. Any mismatch names the first key that does not fit."""
    from pathlib import Path

    path = Path(path)
    model = for_data(arch, data)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - the file is the problem, whatever the reason
        lines = [ln for ln in str(exc).splitlines() if ln.strip()] or [""]
        raise ValueError(f"--weights {path}: cannot be read as a weights-only state dict ({lines[-1][:200]}); save it "
                         "with torch.save(model.state_dict(), path)") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"--weights {path}: holds a {type(state).__name__}, not a state dict of tensors")
    target = model
    if isinstance(model, Wrapped) and not any(k.startswith("net.") for k in state):
        target = model.net  # the torchvision network's own keys
    own = target.state_dict()
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise ValueError(f"--weights {path} does not fit {arch}: {key} is {tuple(value.shape)} in the file but "
                             f"{tuple(own[key].shape)} in the model (classes: {data.num_classes}, image "
                             f"{'x'.join(map(str, data.image_shape))})")
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    if missing or extra:
        raise ValueError(f"--weights {path} does not fit {arch}: "
                         + (f"the model's {missing[0]} is not in the file" if missing else "")
                         + ("; " if missing and extra else "")
                         + (f"the file's {extra[0]} is not in the model" if extra else "")
                         + f" ({len(missing)} missing, {len(extra)} unexpected)")
    target.load_state_dict(state)
    return model.eval()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
