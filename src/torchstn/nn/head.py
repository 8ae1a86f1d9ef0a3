"""The identity-initialised regression head that turns localisation features into theta."""

from __future__ import annotations

import torch
from torch import nn

from torchstn._checks import autocast_enabled, autocast_off, check_float_tensor, check_positive_int
from torchstn.errors import OptionError, ShapeError

__all__ = ["ThetaHead"]


class _LazyIdentityLinear(nn.LazyLinear):
    """A LazyLinear that materialises with zero weights and the identity as bias, then becomes a plain Linear."""

    cls_to_become = nn.Linear

    def __init__(self, identity: torch.Tensor):
        super().__init__(identity.numel())
        self._identity_init = identity.detach().clone()

    def reset_parameters(self) -> None:
        if not self.has_uninitialized_params() and self.in_features != 0:
            _identity_init_(self, self._identity_init)


def _identity_init_(linear: nn.Linear, identity: torch.Tensor) -> None:
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.copy_(identity.to(linear.bias))


class ThetaHead(nn.Module):
    """Linear regression ``features (B, F) -> theta (B, P)`` starting at **zero weights and identity bias** (paper
    §4.2), so an untrained spatial transformer is exactly the identity.

    Args:
        in_features: ``F``; ``None`` infers it at the first forward (build the optimiser after that forward).
        identity: ``(P,)`` identity parameters of the transform family.
        bound: if given, ``theta = identity + bound * tanh((raw - identity) / bound)``: each parameter stays within
            ``bound`` of the identity and the map has slope 1 at the identity (for a transformer that drifts away or
            collapses; see "When a spatial transformer collapses" in ``docs/training.md``).

    Example:
        >>> head = ThetaHead(5, torch.tensor([1.0, 0.0, 0.0]))
        >>> head(torch.randn(2, 5))
        tensor([[1., 0., 0.],
                [1., 0., 0.]], grad_fn=<AddmmBackward0>)
    """

    identity: torch.Tensor  # the (P,) identity parameters: a non-persistent buffer

    def __init__(self, in_features: int | None, identity: torch.Tensor, bound: float | None = None):
        super().__init__()
        if bound is not None and not float(bound) > 0:
            raise OptionError(f"bound must be a positive number or None, got {bound!r}")
        self.bound = None if bound is None else float(bound)
        self.register_buffer("identity", identity.detach().clone(), persistent=False)
        if in_features is None:
            self.linear: nn.Module = _LazyIdentityLinear(identity)
        else:
            self.linear = nn.Linear(check_positive_int("in_features", in_features), identity.numel())
            _identity_init_(self.linear, identity)

    def reset_parameters(self) -> None:
        """Back to zero weights and identity bias."""
        if isinstance(self.linear, nn.Linear) and not isinstance(self.linear, nn.LazyLinear):
            _identity_init_(self.linear, self.identity)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``features (B, ...)`` (flattened to ``(B, F)``) -> ``theta (B, P)``; under autocast computed in float32
        (a bfloat16 theta would move the sampling grid by up to a tenth of a pixel on MNIST sizes).

        Raises:
            ShapeError: ``F`` differs from ``in_features`` (once known), or ``features`` has no batch dim.
        """
        check_float_tensor("localisation output", features)
        if features.dim() < 2:
            raise ShapeError(f"the localisation output must be (B, F) features, got shape {tuple(features.shape)}")
        flat = features.flatten(1)  # (B, F)
        expected = self.linear.in_features  # 0 while a lazy head waits for its first input
        if expected and not torch.jit.is_tracing() and flat.shape[1] != expected:  # (a trace keeps no check)
            raise ShapeError(
                f"the head expects {expected} localisation features, got {flat.shape[1]} (localisation output "
                f"{tuple(features.shape)}, in_features={expected}): pass in_features={flat.shape[1]}, or None to "
                "infer it at the first forward"
            )
        if autocast_enabled(flat.device):
            dtype = next(self.linear.parameters()).dtype  # float32 as a rule; a float64 head stays float64
            with autocast_off(flat.device):
                raw = self.linear(flat.to(dtype))
        else:
            raw = self.linear(flat)  # (B, P)
        if self.bound is None:
            return raw
        ident = self.identity.to(raw.dtype)
        return ident + self.bound * torch.tanh((raw - ident) / self.bound)
