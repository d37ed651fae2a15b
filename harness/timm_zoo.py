"""timm models by name (``--arch timm:<name>``): any timm model, trained from scratch
(``pretrained=False``: nothing is downloaded), built for the data's classes and channels.

The harness routes ``timm:<name>`` through its model-function mechanism
(``python:harness.timm_zoo:<name>``): this module answers every timm model name with a
function ``(num_classes, in_channels, image_size) -> nn.Module``, so the source of this module
is part of the model-cache key like any model function's, and ``--weights`` takes a timm state
dict (``torch.save(model.state_dict())`` of ``timm.create_model(name, num_classes=K,
in_chans=C)``) as it is. Inputs are images in [0, 1], as for any model function. timm is an
optional extra: ``pip install -e '.[timm]'``.
"""

from __future__ import annotations

PREFIX = "timm:"
ROUTE = "python:harness.timm_zoo:"


def route(arch: str) -> str:
    """``timm:<name>`` as the model function that builds it; checked now (timm installed, the
    name known), before any training."""
    name = arch[len(PREFIX):]
    try:
        import timm
    except ImportError as exc:
        raise ValueError(f"--arch {arch}: timm is not installed (pip install -e '.[timm]')") from exc
    if not name or name not in timm.list_models():
        close = timm.list_models(f"*{name}*")[:8] if name else []
        raise ValueError(f"--arch {arch}: timm has no model {name!r}" +
                         (f" (close: {', '.join(close)})" if close else "; timm.list_models() lists them"))
    return ROUTE + name


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    try:
        import timm
    except ImportError as exc:
        raise AttributeError(f"timm is not installed, so there is no timm model {name!r}") from exc
    if name not in timm.list_models():
        raise AttributeError(f"timm has no model {name!r}")

    def make(num_classes: int, in_channels: int, image_size: tuple[int, int]):
        kwargs = {"pretrained": False, "num_classes": num_classes, "in_chans": in_channels}
        try:
            return timm.create_model(name, img_size=image_size, **kwargs)  # models with a fixed input size
        except TypeError:
            return timm.create_model(name, **kwargs)

    make.__name__ = name
    return make
