"""The IC-STN experiment's compositional models: ``ic_stn`` (any number of steps) and ``ic_stn1`` / ``ic_stn2`` /
``ic_stn4`` (the table's rows, one name per step count so that each is a config cell).

Each is the ST-CNN of :mod:`torchstn.models.mnist` with its one spatial transformer replaced by a
:class:`~torchstn.nn.CompositionalSpatialTransformer`: the same conv localisation net (input max-pooled x2, two 5x5
convs of ``loc_channels``, FC ``loc_fc``), shared across the steps by default (IC-STN) or one per step
(``shared=False``, the paper's c-STN), then the CNN classifier whose width is fitted so that the total parameter count
is closest to the experiment's budget (:func:`~torchstn.models.budget.reference_budget`, as for Table 1). With shared
weights the count does not grow with the steps, so ``ic_stn1`` .. ``ic_stn4`` and ``st_cnn`` get the same widths.
"""

from __future__ import annotations

from torchstn.errors import OptionError
from torchstn.models.budget import check_widths, fit_width, meta_parameter_count, reference_budget
from torchstn.models.classifiers import cnn_classifier
from torchstn.models.mnist import PaperNet
from torchstn.models.registry import count_parameters, register_model
from torchstn.nn import CompositionalSpatialTransformer, conv_localisation

__all__ = ["ic_stn"]

_FIXED = ("localisation", "transform", "out_size", "steps", "shared")


def ic_stn(
    in_shape: tuple[int, int, int],
    num_classes: int = 10,
    *,
    transform: str = "projective",
    steps: int = 4,
    shared: bool = True,
    st_pool: bool = False,
    channels: tuple[int, int] | None = None,
    budget: int | None = None,
    loc_channels: int = 20,
    loc_fc: int = 20,
    bound: float | None = None,
    st_options: dict | None = None,
) -> PaperNet:
    """IC-STN (``shared=True``) or c-STN (``shared=False``) with ``steps`` compositional passes, then the CNN.
    ``channels=(c1, c2)`` fixes the classifier's widths, else they fit ``budget`` (default: the reference CNN's count).
    ``bound`` and ``st_options`` go to every step's :class:`~torchstn.nn.SpatialTransformer`; ``st_pool`` pools the
    output x2 as in :func:`~torchstn.models.mnist.st_cnn`.

    Raises:
        OptionError: a family that cannot compose, a bad ``steps`` / ``shared`` / width / budget, or ``st_options``
            setting what the model sets itself.

    Example:
        >>> import torch
        >>> model = ic_stn((1, 28, 28), steps=2)
        >>> model(torch.rand(3, 1, 28, 28)).shape, model.arch["channels"], len(model.transformers)
        (torch.Size([3, 10]), (62, 62), 1)
    """
    C, H, W = in_shape
    st_options = dict(st_options or {})
    fixed = [key for key in st_options if key in _FIXED]
    if fixed:
        raise OptionError(f"st_options may not set {fixed[0]!r}: the model sets it")
    if bound is not None:
        st_options["bound"] = bound
    st = CompositionalSpatialTransformer(
        lambda: conv_localisation(C, (H, W), channels=loc_channels, fc=loc_fc),
        transform,
        steps=steps,
        shared=shared,
        **st_options,
    )
    Hc, Wc = (H // 2, W // 2) if st_pool else (H, W)
    st_count = count_parameters(st)
    if channels is not None:
        if budget is not None:
            raise OptionError("give either channels or budget, not both")
        widths = check_widths("channels", channels)
    else:
        if budget is None:
            budget = reference_budget(in_shape, num_classes)
        elif isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
            raise OptionError(f"budget must be a positive int or None, got {budget!r}")
        w = fit_width(
            lambda w: st_count + meta_parameter_count(lambda: cnn_classifier(C, (Hc, Wc), (w, w), num_classes)),
            budget,
        )
        widths = (w, w)
    arch = {
        "name": "ic_stn" if shared else "c_stn",
        "transform": transform,
        "steps": steps,
        "shared": shared,
        "st_pool": st_pool,
        "channels": widths,
        "budget": budget,
    }
    return PaperNet(cnn_classifier(C, (Hc, Wc), widths, num_classes), st, st_pool=st_pool, arch=arch)


def _fixed_steps(steps: int):
    """The builder of ``ic_stn<steps>``: :func:`ic_stn` with ``steps`` fixed (a config cell names its model)."""

    def build(
        in_shape: tuple[int, int, int],
        num_classes: int = 10,
        *,
        transform: str = "projective",
        shared: bool = True,
        st_pool: bool = False,
        channels: tuple[int, int] | None = None,
        budget: int | None = None,
        loc_channels: int = 20,
        loc_fc: int = 20,
        bound: float | None = None,
        st_options: dict | None = None,
    ) -> PaperNet:
        return ic_stn(
            in_shape,
            num_classes,
            transform=transform,
            steps=steps,
            shared=shared,
            st_pool=st_pool,
            channels=channels,
            budget=budget,
            loc_channels=loc_channels,
            loc_fc=loc_fc,
            bound=bound,
            st_options=st_options,
        )

    build.__name__ = build.__qualname__ = f"ic_stn{steps}"
    build.__doc__ = f"IC-STN with {steps} step{'s' if steps > 1 else ''}: :func:`ic_stn` with ``steps={steps}``."
    return build


register_model("ic_stn")(ic_stn)
for _steps in (1, 2, 4):
    register_model(f"ic_stn{_steps}")(_fixed_steps(_steps))
