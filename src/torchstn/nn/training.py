"""Training helpers for spatial transformers: learning-rate groups, theta recording, identity regulariser."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from torchstn.nn.spatial_transformer import SpatialTransformer

__all__ = ["param_groups", "record_theta", "identity_penalty", "theta_stats"]


def param_groups(model: nn.Module, lr: float, loc_lr_mult: float = 1.0, **group_options) -> list[dict]:
    """Optimiser parameter groups giving every spatial transformer's localisation net and head ``lr * loc_lr_mult``
    (paper SVHN: 1/10; CUB: 1e-4) and everything else ``lr``. Extra options (e.g. ``weight_decay``) go to both.

    Example:
        >>> from torchstn.nn.localisation import fc_localisation
        >>> model = torch.nn.Sequential(SpatialTransformer(fc_localisation(16)), torch.nn.Flatten(),
        ...                             torch.nn.Linear(16, 2))
        >>> groups = param_groups(model, lr=0.1, loc_lr_mult=0.1)
        >>> [round(g["lr"], 3) for g in groups], [len(g["params"]) for g in groups]
        ([0.1, 0.01], [2, 8])
    """
    loc_ids: set[int] = set()
    for m in model.modules():
        if isinstance(m, SpatialTransformer):
            loc_ids.update(id(p) for p in m.parameters())
    rest = [p for p in model.parameters() if id(p) not in loc_ids]
    loc = [p for p in model.parameters() if id(p) in loc_ids]
    groups = [dict(params=rest, lr=lr, **group_options)]
    if loc:
        groups.append(dict(params=loc, lr=lr * loc_lr_mult, **group_options))
    return groups


@contextlib.contextmanager
def record_theta(model: nn.Module, detach: bool = True) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Record the theta every spatial transformer in ``model`` produces while the context is open, without touching
    the modules' state. Yields ``{module_name: [theta per forward call]}``. Use ``detach=False`` to keep the graph
    (e.g. for :func:`identity_penalty`).

    Example:
        >>> from torchstn.nn.localisation import fc_localisation
        >>> st = SpatialTransformer(fc_localisation(16), "attention")
        >>> with record_theta(st) as thetas:
        ...     _ = st(torch.rand(2, 1, 4, 4))
        >>> thetas[""][0]
        tensor([[1., 0., 0.],
                [1., 0., 0.]])
    """
    records: dict[str, list[torch.Tensor]] = {}
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, SpatialTransformer):
            records[name] = []

            def hook(_mod, _inp, out, _name=name):
                records[_name].append(out.detach() if detach else out)

            handles.append(m.head.register_forward_hook(hook))
    try:
        yield records
    finally:
        for h in handles:
            h.remove()


def identity_penalty(theta: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the squared L2 distance of ``theta (B, P)`` from the identity ``(P,)``: add
    ``weight * penalty`` to the loss to keep a transformer from drifting into collapse (the trainer's
    ``optim.identity_weight``; see "When a spatial transformer collapses" in ``docs/training.md``).

    Example:
        >>> identity_penalty(torch.tensor([[1.0, 0.0], [1.0, 2.0]]), torch.tensor([1.0, 0.0]))  # (0 + 4) / 2
        tensor(2.)
    """
    return (theta - identity.to(theta)).pow(2).sum(-1).mean()


def theta_stats(theta: torch.Tensor) -> dict[str, float]:
    """Summary statistics of a batch of theta for logging: the mean, standard deviation, minimum and maximum over
    all its entries (every sample and parameter together).

    Returns:
        ``{"theta_mean", "theta_std", "theta_min", "theta_max"}`` as floats (``theta_std`` is 0 for one entry).

    Example:
        >>> theta_stats(torch.tensor([[1.0, 0.0], [3.0, 0.0]]))
        {'theta_mean': 1.0, 'theta_std': 1.4142135381698608, 'theta_min': 0.0, 'theta_max': 3.0}
    """
    t = theta.detach().float()
    return {
        "theta_mean": t.mean().item(),
        "theta_std": t.std().item() if t.numel() > 1 else 0.0,
        "theta_min": t.min().item(),
        "theta_max": t.max().item(),
    }
