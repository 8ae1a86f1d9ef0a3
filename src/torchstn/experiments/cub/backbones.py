"""The CUB models' backbones: :func:`build_backbone` gives ``(module, feature_dim)``, the module mapping images
``(B, 3, H, W)`` to features ``(B, D)``. Names: ``"tiny"`` (a 3-layer CNN for tests, random init),
``"torchvision:<arch>"`` (e.g. ``torchvision:inception_v3``, ``torchvision:resnet50``) and ``"timm:<name>"``
(e.g. ``timm:inception_v3``, ``timm:resnet50``), imported only when asked for; :func:`register_backbone` adds your
own to :data:`BACKBONES`; a callable returning ``(module, dim)`` also works. The paper's Inception-BN is in neither
library; ``inception_v3`` is the closest.

**Pretrained weights are never downloaded**: pass ``weights=PATH`` (a state dict saved from the library on a machine
with internet, ``torch.save(model.state_dict(), PATH)``; classifier keys are ignored, missing keys are an error). A
backbone registered as pretrained with no ``weights`` raises :class:`~torchstn.errors.ConfigError` unless
``allow_random_init=True``, which warns: the paper's numbers need ImageNet pre-training.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable

import torch
from torch import nn

from torchstn._checks import look_up_option
from torchstn._registry import Registry
from torchstn.errors import ConfigError, DataError

__all__ = ["Backbone", "BACKBONES", "register_backbone", "list_backbones", "tiny_backbone", "build_backbone"]

Backbone = tuple[nn.Module, int]
#: Backbone factories ``factory(**options) -> (module, feature_dim)``, each registered with ``pretrained=``.
BACKBONES: Registry[Callable[..., Backbone]] = Registry("backbone")
_LIBRARY_HINTS = ("torchvision:<arch>", "timm:<name>")


def register_backbone(name: str, *, pretrained: bool = True) -> Callable:
    """Decorator registering ``factory(**options) -> (module, feature_dim)`` under ``name`` in :data:`BACKBONES`.
    ``pretrained=True`` means the backbone is meant to start from ImageNet weights (so :func:`build_backbone` asks
    for them).

    Raises:
        OptionError: ``name`` is already registered.
    """

    def deco(fn):
        return BACKBONES.register(name, fn, pretrained=bool(pretrained))

    return deco


def list_backbones() -> list[str]:
    """Registered backbone names (``torchvision:<arch>`` and ``timm:<name>`` are accepted besides these)."""
    return BACKBONES.names()


@register_backbone("tiny", pretrained=False)
def tiny_backbone(width: int = 16) -> Backbone:
    """Three 3x3 stride-2 conv-BN-ReLU layers (``width``, ``2 width``, ``2 width``) and global average pooling.

    Example:
        >>> net, dim = tiny_backbone(8)
        >>> net(torch.rand(2, 3, 32, 32)).shape, dim
        (torch.Size([2, 16]), 16)
    """
    w = int(width)
    layers: list[nn.Module] = []
    for c_in, c_out in ((3, w), (w, 2 * w), (2 * w, 2 * w)):
        layers += [
            nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten()), 2 * w


def _strip_head(net: nn.Module, arch: str) -> int:
    """Replace a torchvision model's classifier by ``Identity``; returns the feature dim."""
    for attr in ("fc", "classifier", "head", "heads"):
        head = getattr(net, attr, None)
        if isinstance(head, nn.Linear):
            setattr(net, attr, nn.Identity())
            return head.in_features
        if isinstance(head, nn.Sequential) and isinstance(head[-1], nn.Linear):
            dim = head[-1].in_features
            head[-1] = nn.Identity()
            return dim
    raise ConfigError(f"torchvision:{arch}: cannot find its final linear classifier to remove")


def _library_backbone(name: str, options: dict) -> Backbone:
    lib, arch = name.split(":", 1)
    try:
        module = importlib.import_module("torchvision.models" if lib == "torchvision" else "timm")
    except ImportError:
        raise ImportError(f"backbone {name!r} needs {lib}: pip install {lib} (a build matching your torch)") from None
    if lib == "timm":
        net = module.create_model(arch, pretrained=False, num_classes=0, **options)
        return net, int(net.num_features)
    if arch == "inception_v3":
        options = {"aux_logits": False, "init_weights": False, **options}
    net = module.get_model(arch, weights=None, **options)
    return net, _strip_head(net, arch)


def _load_weights(net: nn.Module, path: str | os.PathLike[str], name: str) -> None:
    if not os.path.isfile(path):
        raise DataError(f"{path}: weights file for backbone {name!r} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DataError(f"{path}: cannot read weights ({type(e).__name__}: {e})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise DataError(f"{path}: not a state dict (holds a {type(state).__name__})")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        missing, _unexpected = net.load_state_dict(state, strict=False)  # unexpected: the classifier we removed
    except RuntimeError as e:  # shape mismatches
        raise DataError(f"{path}: does not match backbone {name!r} ({str(e).splitlines()[0]} ...)") from None
    if missing:
        raise DataError(f"{path}: does not match backbone {name!r}: {len(missing)} missing keys, e.g. {missing[:3]}")


def build_backbone(
    name: str | Callable[..., Backbone],
    *,
    weights: str | os.PathLike[str] | None = None,
    allow_random_init: bool = False,
    **options,
) -> Backbone:
    """``(module, feature_dim)`` of a backbone; ``options`` go to its factory.

    Raises:
        ConfigError: a pretrained backbone without ``weights`` and without ``allow_random_init=True``.
        DataError: a ``weights`` file that is missing, unreadable or does not fit the architecture.
        OptionError: an unknown name or option (with a suggestion).
        ImportError: torchvision / timm asked for but not installed.

    Example:
        >>> build_backbone("tiny", width=4)[1]
        8
    """
    if callable(name):
        net, dim = name(**options)
        pretrained, label = True, getattr(name, "__name__", "callable")
    elif isinstance(name, str) and name.split(":", 1)[0] in ("torchvision", "timm") and ":" in name:
        net, dim = _library_backbone(name, options)
        pretrained, label = True, name
    else:
        look_up_option("backbone", name, [*BACKBONES.names(), *_LIBRARY_HINTS])
        net, dim = BACKBONES.build(name, **options)
        pretrained, label = BACKBONES.info(name)["pretrained"], name
    if weights is not None:
        _load_weights(net, weights, label)
    elif pretrained:
        msg = (
            f"backbone {label!r} is meant to start from ImageNet weights, and torchstn downloads none: pass "
            "weights=PATH (a state dict saved with torch.save(model.state_dict(), PATH) where the library can "
            "fetch them)"
        )
        if not allow_random_init:
            raise ConfigError(msg + ", or allow_random_init=True to train from scratch (far from the paper's numbers)")
        warnings.warn(f"{msg}; training it from RANDOM initialisation as allow_random_init=True asks", stacklevel=2)
    return net, int(dim)
