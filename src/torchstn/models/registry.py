"""The paper-model registry: ``register_model`` / ``build_model`` / ``list_models``, and ``count_parameters``.

A model builder is a function ``builder(in_shape, num_classes, *, <options>) -> nn.Module`` whose keyword-only
options are its whole configuration: :func:`build_model` checks every option name against that signature, so a typo
raises :class:`~torchstn.errors.OptionError` with a suggestion instead of being swallowed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

from torch import nn

from torchstn._checks import check_keywords
from torchstn._registry import Registry
from torchstn.errors import OptionError, ShapeError

__all__ = [
    "register_model",
    "build_model",
    "list_models",
    "model_options",
    "model_spatial_dims",
    "count_parameters",
    "check_in_shape",
]

Builder = Callable[..., nn.Module]
#: Each builder with its ``spatial_dims`` (2 for image models ``(C, H, W)``, 3 for volume models ``(C, D, H, W)``).
_MODELS: Registry[Builder] = Registry("model")
# Arguments build_model passes itself; a builder may take ``transform`` / ``st_pool`` or not.
_RESERVED = ("in_shape", "num_classes", "transform", "st_pool")


def register_model(name: str, *, spatial_dims: int = 2) -> Callable[[Builder], Builder]:
    """Function decorator registering a model builder under ``name`` (used by :func:`build_model`).

    The builder takes ``(in_shape, num_classes)`` and keyword-only options; it takes ``transform`` and
    ``st_pool`` only if the model has a spatial transformer. ``spatial_dims`` is 2 for models of images
    (``in_shape = (C, H, W)``) and 3 for models of volumes (``(C, D, H, W)``).

    Raises:
        OptionError: ``name`` is already registered, or ``spatial_dims`` is not 2 or 3.
    """
    if spatial_dims not in (2, 3):
        raise OptionError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    return _MODELS.register(name, spatial_dims=spatial_dims)


def list_models() -> list[str]:
    """Names of every registered model.

    Example:
        >>> from torchstn.models import list_models
        >>> {"fcn", "cnn", "st_fcn", "st_cnn"} <= set(list_models())
        True
    """
    return _MODELS.names()


def model_options(name: str) -> dict[str, object]:
    """The keyword options model ``name`` takes, with their defaults (``transform`` / ``st_pool`` included when the
    model has a spatial transformer).

    Raises:
        OptionError: unknown model name.

    Example:
        >>> from torchstn.models import model_options
        >>> model_options("st_fcn")["transform"], "transform" in model_options("fcn")
        ('affine', False)
    """
    params = inspect.signature(_MODELS.get(name)).parameters
    return {k: p.default for k, p in params.items() if k not in ("in_shape", "num_classes")}


def model_spatial_dims(name: str) -> int:
    """2 if model ``name`` takes images ``(C, H, W)``, 3 if it takes volumes ``(C, D, H, W)``.

    Example:
        >>> from torchstn.models import model_spatial_dims
        >>> model_spatial_dims("st_cnn"), model_spatial_dims("st3d_cnn")
        (2, 3)
    """
    return _MODELS.info(name)["spatial_dims"]


def check_in_shape(in_shape: object, spatial_dims: int = 2) -> tuple[int, ...]:
    """Normalise an input shape to ``(C, H, W)`` (``spatial_dims=2``) or ``(C, D, H, W)`` (3) positive ints.

    Raises:
        ShapeError: not ``1 + spatial_dims`` positive ints.
    """
    n = 1 + spatial_dims
    if isinstance(in_shape, Sequence) and len(in_shape) == n:
        if all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in in_shape):
            return tuple(int(s) for s in in_shape)
    names = "(C, H, W)" if spatial_dims == 2 else "(C, D, H, W)"
    raise ShapeError(f"in_shape must be {n} positive ints {names}, got {in_shape!r}")


def build_model(
    name: str,
    *,
    in_shape: Sequence[int],
    num_classes: int = 10,
    transform: str | None = None,
    st_pool: bool = False,
    **options,
) -> nn.Module:
    """Build the registered model ``name`` for inputs ``(B, *in_shape)``; its ``forward(x)`` returns logits
    ``(B, num_classes)`` and its ``transformers`` attribute lists the spatial transformers it contains.

    Args:
        name: a name from :func:`list_models` (``fcn``, ``cnn``, ``st_fcn``, ``st_cnn``, ``st_fcn_2x``, ...).
        in_shape: ``(C, H, W)`` of one input (``(C, D, H, W)`` for the volume models).
        num_classes: classifier outputs (10 for MNIST, 19 for MNIST addition).
        transform: transform family of the model's spatial transformers (``affine``, ``projective``, ``tps``, any
            registered 2D family); ``None`` gives the builder's default. Only models with an ST take it.
        st_pool: average-pool the ST output x2 before the classifier (paper, RTS and TC). Ignored by the models
            without an ST (``fcn``, ``cnn``), so one experiment setting can build every model.
        **options: the builder's keyword-only options (see each builder, e.g. ``hidden``, ``channels``,
            ``budget``, ``st_options``).

    Raises:
        OptionError: unknown model name or option (with a suggestion), or ``transform`` / ``st_pool`` given to a
            model that does not take it.
        ShapeError: a bad ``in_shape`` or one too small for the model.

    Example:
        >>> import torch
        >>> from torchstn.models import build_model
        >>> model = build_model("st_cnn", in_shape=(1, 28, 28), transform="tps")
        >>> model(torch.rand(2, 1, 28, 28)).shape, len(model.transformers)
        (torch.Size([2, 10]), 1)
        >>> build_model("st_cnn", in_shape=(1, 28, 28), chanels=(8, 8))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        torchstn.errors.OptionError: unknown keyword 'chanels' for model 'st_cnn' (it takes [...]). Did you mean 'channels'?
    """
    builder = _MODELS.get(name)
    try:
        in_shape = check_in_shape(in_shape, model_spatial_dims(name))
    except ShapeError as e:
        raise ShapeError(f"model {name!r}: {e}") from None
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise OptionError(f"num_classes must be a positive int, got {num_classes!r}")
    params = _MODELS.options(name)
    kwargs: dict[str, object] = {"in_shape": in_shape, "num_classes": num_classes}
    if transform is not None:
        if "transform" not in params:
            raise OptionError(f"model {name!r} has no spatial transformer: transform must be None, got {transform!r}")
        kwargs["transform"] = transform
    if st_pool:
        if "st_pool" not in params:
            raise OptionError(f"model {name!r} does not take st_pool")
        kwargs["st_pool"] = True
    accepted = _MODELS.options(name, exclude=_RESERVED)
    owner = f"model {name!r} (it takes {list(accepted) if accepted else 'no options'})"
    check_keywords(owner, options, accepted + _RESERVED)  # build_model's own arguments (never in **options): suggested
    return builder(**kwargs, **options)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters in ``model`` (each shared tensor once).

    Example:
        >>> count_parameters(nn.Linear(3, 2))
        8
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
