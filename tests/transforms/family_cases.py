"""The families the contract and export tests run over: every registered name, plus the control-point layouts a
family takes besides its default (``tps``: a 2 x 10 lattice, the text rectifier's, and explicit scattered points).
A registered family needs no edit here; a new kind of layout gets one line in ``LAYOUTS``."""

from __future__ import annotations

from torchstn.transforms import TransformFamily, get_transform, list_transforms

#: Seven scattered points, not a lattice (not symmetric, some inside, some on the edges).
SCATTERED = ((-1.0, -1.0), (0.9, -0.8), (1.0, 1.0), (-0.7, 0.95), (0.1, 0.2), (-0.3, -0.4), (0.5, 0.35))

#: case id -> (family name, options)
LAYOUTS: dict[str, tuple[str, dict]] = {
    "tps[2x10]": ("tps", {"layout": (2, 10)}),
    "tps[points]": ("tps", {"layout": SCATTERED}),
}

CASES = [*list_transforms(), *LAYOUTS]


def build(case: str) -> TransformFamily:
    """A fresh family for a case id (a registered name or a ``LAYOUTS`` key)."""
    name, options = LAYOUTS.get(case, (case, {}))
    return get_transform(name, **options)
