"""The package's one registry: a name -> object table with registration by decorator, look-up with a suggestion,
and option checks against the object's signature.

Transform families, models, distortions, the harness's backbones, schedules, tasks and experiments are each one
:class:`Registry`; a new one is one ``register`` line, and tests parametrise over ``names()``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from torchstn._checks import check_keywords, keyword_options, look_up_option
from torchstn.errors import OptionError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Named objects of one ``kind`` (e.g. ``"transform"``), each with optional metadata.

    Args:
        kind: what the names name, used in messages (``transform must be one of [...]``).
        error: the error raised for an unknown name or option (:class:`OptionError`; the harness uses
            :class:`~torchstn.errors.ConfigError`).
        ignore_case: accept a name that differs only in case (``"rts"`` for ``"RTS"``).
        in_order: list names in the order they were registered (e.g. the paper's order of experiments) instead of
            sorted.

    Example:
        >>> colours = Registry("colour")
        >>> @colours.register("red", hex="#f00")
        ... def red(alpha=1.0): return ("red", alpha)
        >>> colours.names(), colours.info("red"), colours.build("red", alpha=0.5)
        (['red'], {'hex': '#f00'}, ('red', 0.5))
        >>> colours.get("rde")
        Traceback (most recent call last):
        ...
        torchstn.errors.OptionError: colour must be one of ['red'], got 'rde'. Did you mean 'red'?
        >>> colours.build("red", alpa=0.5)
        Traceback (most recent call last):
        ...
        torchstn.errors.OptionError: unknown keyword 'alpa' for colour 'red' (it takes ['alpha']). Did you mean 'alpha'?
    """

    def __init__(
        self, kind: str, *, error: type[Exception] = OptionError, ignore_case: bool = False, in_order: bool = False
    ):
        self.kind, self.error, self.ignore_case, self.in_order = kind, error, ignore_case, in_order
        self._items: dict[str, T] = {}
        self._info: dict[str, dict[str, Any]] = {}

    def register(self, name: str, obj: T | None = None, **info: Any) -> Any:
        """Register ``obj`` under ``name`` with metadata ``info``; without ``obj``, a decorator that registers what it
        decorates (and returns it unchanged).

        Raises:
            OptionError: ``name`` is taken, or is not a non-empty string.
        """
        if not isinstance(name, str) or not name:
            raise OptionError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        if name in self._items or (self.ignore_case and name.lower() in {n.lower() for n in self._items}):
            raise OptionError(f"{self.kind} {name!r} is already registered")

        def add(o: T) -> T:
            self._items[name] = o
            self._info[name] = dict(info)
            return o

        return add if obj is None else add(obj)

    def canonical(self, name: object) -> str:
        """The registered spelling of ``name``.

        Raises:
            ``error``: an unknown name, with the nearest registered one.
        """
        if self.ignore_case and isinstance(name, str):
            name = {n.lower(): n for n in self._items}.get(name.lower(), name)
        return look_up_option(self.kind, name, self.names(), error=self.error)

    def get(self, name: object) -> T:
        """The object registered under ``name`` (see :meth:`canonical`)."""
        return self._items[self.canonical(name)]

    def info(self, name: object) -> dict[str, Any]:
        """The metadata ``name`` was registered with."""
        return dict(self._info[self.canonical(name)])

    def options(self, name: object, exclude: tuple[str, ...] = ("self",)) -> tuple[str, ...]:
        """The keyword options the object takes (a class's ``__init__``, a function's own), without ``exclude``.

        Raises:
            TypeError: the object is not callable (e.g. a registry of presets), so it takes no options.

        Example:
            >>> sizes = Registry("size")
            >>> sizes.register("small", 8)
            8
            >>> sizes.options("small")
            Traceback (most recent call last):
            ...
            TypeError: size 'small' is int, not callable: it takes no options
        """
        obj = self.get(name)
        if isinstance(obj, type):
            cls: type[Any] = obj  # a class: its __init__ read from the class, unbound (``self`` is excluded)
            return keyword_options(cls.__init__, exclude)
        if not callable(obj):
            raise TypeError(
                f"{self.kind} {self.canonical(name)!r} is {type(obj).__name__}, not callable: it takes no options"
            )
        return keyword_options(obj, exclude)

    def check_options(self, name: object, given, exclude: tuple[str, ...] = ("self",)) -> None:
        """Refuse option names ``given`` that ``name``'s object does not take; the message lists those it takes and
        suggests the nearest one."""
        allowed = self.options(name, exclude)
        takes = f"it takes {list(allowed)}" if allowed else "it takes no options"
        check_keywords(f"{self.kind} {self.canonical(name)!r} ({takes})", given, allowed, error=self.error)

    def build(self, name: object, /, *args: Any, **options: Any) -> Any:
        """Call the object registered under ``name`` with ``args`` and ``options``, the options checked first."""
        self.check_options(name, options)
        return self.get(name)(*args, **options)  # type: ignore[operator]

    def names(self) -> list[str]:
        """Every registered name, sorted (or in registration order with ``in_order=True``)."""
        return list(self._items) if self.in_order else sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"
