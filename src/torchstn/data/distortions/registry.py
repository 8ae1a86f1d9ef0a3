"""The variant registry: ``register_distortion`` adds a distortion under its paper name, ``get_distortion`` builds
one by name (case-insensitive), and :data:`DISTORTIONS` reads like the ``name -> class`` dict it replaces."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

from torchstn._registry import Registry
from torchstn.data.distortions.distortion import Distortion
from torchstn.errors import OptionError

__all__ = ["DistortionRegistry", "DISTORTIONS", "register_distortion", "get_distortion", "canonical_variant"]


class DistortionRegistry(Registry[type[Distortion]]):
    """A :class:`~torchstn._registry.Registry` of distortion classes that also reads as a mapping, as the dict
    ``DISTORTIONS`` did (``DISTORTIONS["RTS"]``, ``list(DISTORTIONS)``, ``DISTORTIONS.items()``); it cannot be
    written to except through :func:`register_distortion`.

    Example:
        >>> DISTORTIONS["rts"].__name__, DISTORTIONS.canonical("rts"), "TC" in DISTORTIONS
        ('RotateTranslateScale', 'RTS', True)
    """

    def __getitem__(self, name: str) -> type[Distortion]:
        try:
            return self.get(name)
        except OptionError:
            raise KeyError(name) from None

    def keys(self) -> list[str]:
        return self.names()

    def values(self) -> list[type[Distortion]]:
        return [self.get(n) for n in self.names()]

    def items(self) -> list[tuple[str, type[Distortion]]]:
        return [(n, self.get(n)) for n in self.names()]


#: Variant name -> distortion class (``DistortedMNIST(variant)`` uses it); names match case-insensitively.
DISTORTIONS = DistortionRegistry("variant", ignore_case=True)


def register_distortion(name: str) -> Callable[[type[Distortion]], type[Distortion]]:
    """Class decorator registering a distortion under the variant ``name`` (which it sets as the class's ``name``),
    so :func:`get_distortion` and :class:`~torchstn.data.DistortedMNIST` can build it.

    Raises:
        OptionError: ``name`` is already registered (in any case).
    """

    def deco(cls: type[Distortion]) -> type[Distortion]:
        DISTORTIONS.register(name, cls)
        cls.name = name
        return cls

    return deco


def get_distortion(variant: str, **options) -> Distortion:
    """Build the distortion of a paper variant (case-insensitive) with its options, e.g.
    ``get_distortion("R", canvas=42)``.

    Raises:
        OptionError: an unknown variant (with a suggestion) or an option the variant does not take.

    Example:
        >>> get_distortion("rts", scale_range=(1.0, 1.0))
        RotateTranslateScale(max_angle=45.0, scale_range=(1.0, 1.0), canvas=42, placement='box')
        >>> get_distortion("RST")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        torchstn.errors.OptionError: variant must be one of [...], got 'RST'. Did you mean 'RTS'?
    """
    return DISTORTIONS.build(variant, **options)


def canonical_variant(variant: object, allowed: Sequence[str] | None = None) -> str:
    """Deprecated: use ``DISTORTIONS.canonical(variant)``, the registered spelling of ``variant`` (``"rts"`` ->
    ``"RTS"``); ``allowed`` (also deprecated) matches among those names instead.

    Raises:
        OptionError: no match; the message suggests the closest name.
    """
    warnings.warn(
        "canonical_variant is deprecated; use torchstn.data.distortions.DISTORTIONS.canonical(variant)",
        DeprecationWarning,
        stacklevel=2,
    )
    if allowed is None:
        return DISTORTIONS.canonical(variant)
    names: Registry[str] = Registry("variant", ignore_case=True)
    for name in allowed:
        names.register(name, name)
    return names.canonical(variant)
