"""Per-family test helpers: how to express a translation in each registered family's parameters."""

from __future__ import annotations

import torch

import torchstn


def translation_theta(name: str, shift: tuple[float, ...], batch: int = 1, dtype=torch.float64) -> torch.Tensor:
    """theta (batch, P) of family ``name`` that reads the input at ``output + shift`` (normalised units)."""
    family = torchstn.get_transform(name)
    ident = family.identity(dtype=dtype)
    t = torch.tensor(shift, dtype=dtype)
    if name == "affine":
        theta = ident.clone()
        theta[[2, 5]] += t
    elif name == "affine3d":
        theta = ident.clone()
        theta[[3, 7, 11]] += t
    elif name in ("attention", "attention3d"):
        theta = torch.cat((ident[:1], t))
    elif name in ("translation", "translation3d"):
        theta = t.clone()
    elif name == "similarity":
        theta = torch.cat((ident[:2], t))
    elif name == "projective":
        theta = ident.clone()
        theta[[2, 5]] += t
    elif name == "tps":
        theta = (ident.view(-1, 2) + t).reshape(-1)
    else:  # pragma: no cover - a new family must teach the contract tests how to translate
        raise KeyError(f"add family {name!r} to tests/transforms/_families.py")
    return theta.unsqueeze(0).expand(batch, -1).clone()


def rank(name: str) -> int:
    return torchstn.get_transform(name).spatial_rank
