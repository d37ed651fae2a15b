"""The seed models. Inputs are images in [0, 1]; normalisation is the first layer.

* ``small-cnn`` (seed 000): three conv blocks and a three-layer head,
  Linear(1152->256)->ReLU->Dropout->Linear(256->128)->ReLU->Linear(128->classes).
  1152 = 128 x 3 x 3 fixes the geometry: 3x3 convolutions with padding 1 and a 2x2
  max-pool in every block take 28 -> 14 -> 7 -> 3. The seed's "approximately 150K
  parameters" cannot hold with a 1152x256 layer (295K weights alone); the model as
  described has 422,474.
* ``resnet18`` (seeds 001, 004): torchvision's resnet18 with a 3x3 stride-1 stem and no
  max-pool, trained from scratch, as is standard for 32x32 inputs.

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

# Per-channel normalisation constants. Fashion-MNIST: seed 000's (x - 0.5) / 0.5.
# CIFAR: the usual per-channel training-set statistics.
NORMALISATION = {
    "fashion-mnist": ((0.5,), (0.5,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


class Normalize(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class SmallCNN(nn.Module):
    """Seed 000's Fashion-MNIST CNN (layer order of each block as the seed lists it)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, mean=(0.5,), std=(0.5,)):
        super().__init__()
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
            nn.Linear(128 * 3 * 3, 256),
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
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
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


ARCHITECTURES = ("small-cnn", "resnet18")


def build(arch: str, dataset: str, num_classes: int, in_channels: int | None = None) -> nn.Module:
    """A freshly initialised model (seed the RNG before calling for reproducible weights)."""
    mean, std = NORMALISATION[dataset]
    if arch == "small-cnn":
        return SmallCNN(num_classes, in_channels or len(mean), mean, std)
    if arch == "resnet18":
        if len(mean) != 3:
            raise ValueError(f"resnet18 expects 3-channel images; {dataset} has {len(mean)} channel(s)")
        return CifarResNet18(num_classes, mean, std)
    raise ValueError(f"unknown architecture {arch!r}: choose one of {', '.join(ARCHITECTURES)}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
