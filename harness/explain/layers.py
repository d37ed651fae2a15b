"""Which layer a CAM is computed at: the model's named CAM layers, its default, a name or a module."""

from __future__ import annotations

from torch import nn


def _cam_owner(model: nn.Module) -> nn.Module | None:
    """The model itself or the first submodule (a wrapped model) that names CAM layers."""
    for m in model.modules():
        if callable(getattr(m, "cam_layers", None)):
            return m
    return None


def cam_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The model's named Grad-CAM layers: ``cam_layers()`` (of the model or of the model it
    wraps), else ``{"cam_layer": model.cam_layer()}``, else ``{"last-conv": <last Conv2d>}``."""
    owner = _cam_owner(model)
    if owner is not None:
        return dict(owner.cam_layers())
    if callable(getattr(model, "cam_layer", None)):
        return {"cam_layer": model.cam_layer()}
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("model has no cam_layers(), no cam_layer() and no Conv2d layer for Grad-CAM")
    return {"last-conv": convs[-1]}


def default_cam_layer(model: nn.Module) -> str:
    """The name of the default layer (``DEFAULT_CAM_LAYER``, else the only fallback)."""
    owner = _cam_owner(model)
    if owner is not None and getattr(owner, "DEFAULT_CAM_LAYER", None):
        return owner.DEFAULT_CAM_LAYER
    return next(iter(cam_layers(model)))


def resolve_layer(model: nn.Module, layer: str | nn.Module | None = None) -> tuple[str, nn.Module]:
    """(name, module) for ``layer``: None (the default), a name from ``cam_layers()``, or a
    submodule of ``model`` (named by its qualified name)."""
    if layer is None:
        layer = default_cam_layer(model)
    if isinstance(layer, nn.Module):
        for name, m in model.named_modules():
            if m is layer:
                return name or "model", m
        raise ValueError("the layer given is not a submodule of the model")
    layers = cam_layers(model)
    if layer not in layers:
        raise ValueError(f"unknown CAM layer {layer!r}: choose one of {', '.join(layers)}")
    return layer, layers[layer]


def _qualified_name(model: nn.Module, module: nn.Module) -> str:
    for name, m in model.named_modules():
        if m is module:
            return name
    raise ValueError("module is not a submodule of the model")
