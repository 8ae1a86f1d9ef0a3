"""The IC-STN experiment (Lin & Lucey, CVPR 2017, perturbed MNIST): ``torchstn reproduce icstn``.

Five cells on the ICSTN perturbation (:class:`~torchstn.data.distortions.icstn.CornerPerturbation`), all at the
Table 1 parameter budget (237k on 28x28): the CNN, the ST-CNN with a homography (``STN``), and the compositional
``ic_stn1`` / ``ic_stn2`` / ``ic_stn4`` (one localisation net shared by 1, 2 or 4 steps;
:mod:`torchstn.models.compositional`). ``torchstn train icstn:ICSTN/ic_stn4_projective`` trains one cell.

**The protocol of the public code.** The CNN and the STN see the perturbed digit; the compositional nets see the
*undistorted* digit and start from the perturbation as their first warp, so every step resamples the undistorted
digit and what the perturbation pushed out of the frame can come back. Here the ``icstn`` task gives every model the
digit and its perturbation packed into one tensor (:func:`pack`; channel 0 the digit, channel 1's first row the
perturbation's 8 homography parameters minus the identity's), so that every path of the engine (training,
evaluation, DDP, checkpoints, ``torchstn evaluate``) carries it unchanged, and :class:`PerturbedInput` unpacks it:
it warps the digit by the perturbation for the CNN and the STN, and hands digit and perturbation to the
compositional transformer (``theta_init``). The perturbation of the fixed test set is the ICSTN variant's
(seeded like every variant's test set).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from torchstn.data.contract import to_float
from torchstn.data.distortions import CornerPerturbation, select_params
from torchstn.errors import ConfigError, ShapeError
from torchstn.experiments.engine.classify import ClassifyTask
from torchstn.experiments.engine.data import build_datasets
from torchstn.experiments.engine.steps import model_from_config
from torchstn.experiments.engine.tasks import TASKS
from torchstn.experiments.specs import ExperimentSpec, grid, register
from torchstn.functional import sample
from torchstn.models import PaperNet
from torchstn.nn import CompositionalSpatialTransformer
from torchstn.transforms import get_transform

__all__ = ["ICSTN", "ICSTNTask", "PerturbedDigits", "PerturbedInput", "pack", "unpack", "warps_figure"]

_PROJECTIVE = get_transform("projective")
_P = _PROJECTIVE.num_params  # 8


def pack(digits: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Digits ``(B, 1, H, W)`` and their perturbations ``theta (B, 8)`` (projective parameters) in one
    ``(B, 2, H, W)`` tensor: channel 0 the digits, channel 1's first row ``theta - identity`` (zeros elsewhere, so
    an all-zero input is a blank digit under the identity).

    Raises:
        ShapeError: shapes that do not fit (``W < 8``, a batch mismatch, more than one channel).

    Example:
        >>> x, theta = torch.rand(2, 1, 28, 28), torch.rand(2, 8)
        >>> [torch.equal(a, b) for a, b in zip(unpack(pack(x, theta)), (x, theta))]
        [True, True]
    """
    if digits.dim() != 4 or digits.shape[1] != 1 or digits.shape[-1] < _P or theta.shape != (digits.shape[0], _P):
        raise ShapeError(
            f"pack takes digits (B, 1, H, W >= {_P}) and theta (B, {_P}), got {tuple(digits.shape)} and "
            f"{tuple(theta.shape)}"
        )
    extra = digits.new_zeros(digits.shape)
    extra[:, 0, 0, :_P] = theta.to(digits.dtype) - _PROJECTIVE.identity(dtype=digits.dtype, device=digits.device)
    return torch.cat((digits, extra), dim=1)


def unpack(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(digits (B, 1, H, W), theta (B, 8))`` of a :func:`pack` ed tensor.

    Raises:
        ShapeError: not a ``(B, 2, H, W >= 8)`` tensor.
    """
    if packed.dim() != 4 or packed.shape[1] != 2 or packed.shape[-1] < _P:
        raise ShapeError(
            f"the icstn task's inputs are (B, 2, H, W >= {_P}): the digit and its perturbation (see "
            f"torchstn.experiments.icstn.pack), got {tuple(packed.shape)}"
        )
    theta = packed[:, 1, 0, :_P] + _PROJECTIVE.identity(dtype=packed.dtype, device=packed.device)
    return packed[:, :1], theta


class PerturbedDigits:
    """The ICSTN digits packed with their perturbations (:func:`pack`): the engine's dataset contract
    (``image_shape``, ``num_classes``, ``len``, ``batch``) over a ``DistortedMNIST("ICSTN")`` set, whose digits,
    labels and (for a fixed set) perturbations it uses; a training set draws new perturbations on every call.

    Raises:
        ConfigError: a set of another variant.
    """

    def __init__(self, inner: Any):
        if not isinstance(getattr(inner, "distortion", None), CornerPerturbation):
            raise ConfigError(f"the icstn task needs data.variant = 'ICSTN', got {inner!r}")
        self.inner = inner
        self.num_classes = inner.num_classes
        self.image_shape = (2, *inner.image_shape[1:])
        self._generator = torch.Generator().manual_seed(int(getattr(inner, "seed", 0)))

    def __len__(self) -> int:
        return len(self.inner)

    def batch(self, indices, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        index = self.inner._check_indices(indices)
        d = self.inner.distortion
        if self.inner.fixed:
            params = select_params(self.inner.fixed_params(), index)
        else:
            params = d.sample_params(generator if generator is not None else self._generator, index.numel())
        theta = d.matrix(params).reshape(-1, 9)[:, :_P].float()
        return pack(to_float(self.inner.images[index]), theta), self.inner.labels[index]


class PerturbedInput(nn.Module):
    """A paper model (:class:`~torchstn.models.PaperNet`) on :func:`pack` ed inputs: a compositional transformer
    starts from the perturbation on the undistorted digit; any other model sees the digit warped by the
    perturbation (bilinear, zero padding: the ICSTN distortion's rendering)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @property
    def compositional(self) -> bool:
        return isinstance(getattr(self.model, "st", None), CompositionalSpatialTransformer)

    def perturbed(self, packed: torch.Tensor) -> torch.Tensor:
        """The perturbed digits ``(B, 1, H, W)`` of packed inputs (what the CNN and the STN see)."""
        digits, theta = unpack(packed)
        return sample(digits, _PROJECTIVE.grid(theta, digits.shape[2:]), check_finite=False)

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        if self.compositional:
            digits, theta = unpack(packed)
            m = cast(PaperNet, self.model)
            return m.classifier(m.pool(m.st(digits, theta)))
        return self.model(self.perturbed(packed))


@TASKS.register("icstn")
class ICSTNTask(ClassifyTask):
    """Classification of the ICSTN digits under the public code's protocol (module docstring)."""

    variants = ("ICSTN",)

    def datasets(self, *, train: bool = True, test: bool = True) -> tuple[Any, Any]:
        train_set, test_set = build_datasets(self.cfg, train=train, test=test)
        return tuple(None if s is None else PerturbedDigits(s) for s in (train_set, test_set))  # type: ignore[return-value]

    def build_model(self, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return PerturbedInput(model_from_config(self.cfg, (1, *tuple(in_shape)[1:]), num_classes))


def warps_figure(run: str | os.PathLike[str], out: str | os.PathLike[str], *, n: int = 6) -> Path:
    """A PNG (or any format matplotlib writes, by ``out``'s suffix) of a trained compositional cell's warps, step by
    step, on the first ``n`` digits of its fixed test set: per digit, the undistorted digit with the frame each
    step's composite reads, what each step saw (the first: the perturbed digit) and the output
    (:func:`~torchstn.experiments.viz.compositional_figure`).

    Args:
        run: the run directory (or checkpoint) of an ``icstn:ICSTN/ic_stn*`` cell.

    Raises:
        ConfigError: the run is not a compositional cell of this experiment.
        DataError: no checkpoint there.
    """
    from torchstn.experiments.engine.runs import load_run
    from torchstn.experiments.viz import check_figure_path, compositional_figure

    out = check_figure_path(out)
    cfg, model, _ = load_run(run)
    if not isinstance(model, PerturbedInput) or not model.compositional:
        raise ConfigError(f"{run}: not a compositional cell of the icstn experiment (model {cfg.model.name!r})")
    _, test_set = ICSTNTask(cfg).datasets(train=False)
    packed, labels = test_set.batch(torch.arange(min(n, len(test_set))))
    digits, theta = unpack(packed)
    title = f"{cfg.model.name}: labels {labels.tolist()}"
    return compositional_figure(model.model, digits, out, theta_init=theta, title=title)


ICSTN = register(
    ExperimentSpec(
        "icstn",
        "IC-STN perturbed MNIST (Lin & Lucey 2017)",
        grid(
            ("ICSTN",),
            {
                ("cnn", None): (None,),
                ("st_cnn", "projective"): (None,),
                ("ic_stn1", "projective"): (None,),
                ("ic_stn2", "projective"): (None,),
                ("ic_stn4", "projective"): (None,),
            },
        ),
        # every cell's localisation net at the classifier's rate: in 300-iteration checks IC-STN-4 learned faster at
        # x1 than at x0.1 and did not diverge (docs/icstn.md); --set optim.loc_lr_mult=0.1 if a run does
        base={"optim.schedule": "cpu", "task.name": "icstn"},
    )
)
