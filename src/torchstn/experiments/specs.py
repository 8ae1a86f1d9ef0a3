"""Experiment specs: each paper experiment declared once (its cells, the config they share, the per-cell overrides,
the paper's number of every cell and the order of the table) and expanded here.

A spec (:class:`ExperimentSpec`) lists its cells (:class:`Cell`: a model, with its transform family, on a data
variant, beside the paper's % test error) in the order its table shows them; :func:`grid` builds them from a table
laid out as in the paper. A cell's config is the spec's ``base``, then the cell's model, transform and variant, then
every ``overrides`` entry whose glob matches the cell's name (``RTS/st_*``: the RTS cells with a transformer), in the
order they are declared.

:func:`register` adds a spec to :data:`EXPERIMENTS` (``torchstn reproduce NAME``) and each cell to the engine's named
configs (:data:`~torchstn.experiments.engine.config_io.NAMED_CONFIGS`) as ``<experiment>:<cell>``, so
``torchstn train table1:RTS/st_cnn_affine`` trains one cell. The name a cell had as a packaged TOML file
(``table1_rts_st_cnn_affine``) still loads, with a DeprecationWarning naming the new one, and stays the default run
directory of ``torchstn train`` (``runs/table1_rts_st_cnn_affine``).

Example:
    >>> toy = ExperimentSpec("toy", "A toy table", grid(("R", "RTS"), {("fcn", None): (2.1, 5.2),
    ...                                                               ("st_cnn", "affine"): (0.7, 0.5)}),
    ...                      overrides={"RTS/st_*": {"model.st_pool": True}})
    >>> [(c.name, c.paper) for c in toy.cells]
    [('R/fcn', 2.1), ('R/st_cnn_affine', 0.7), ('RTS/fcn', 5.2), ('RTS/st_cnn_affine', 0.5)]
    >>> data = toy.config_data(toy.cells[3])
    >>> data["model"], data["data"], data["optim"]
    ({'name': 'st_cnn', 'transform': 'affine', 'st_pool': True}, {'variant': 'RTS'}, {'schedule': 'cpu'})
    >>> [c.name for c in toy.select(["rts/*"])], toy.config_name(toy.cells[0])
    (['RTS/fcn', 'RTS/st_cnn_affine'], 'toy:R/fcn')
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torchstn._registry import Registry
from torchstn.errors import ConfigError
from torchstn.experiments.engine.config_io import NAMED_CONFIGS

__all__ = ["Cell", "ExperimentSpec", "grid", "register", "EXPERIMENTS"]

#: The experiments with a results table, by name (``table1``, ``tc``, ``addition``, ``3d``); each is one spec module.
EXPERIMENTS: Registry[ExperimentSpec] = Registry("experiment", error=ConfigError, in_order=True)


@dataclass(frozen=True)
class Cell:
    """One cell of a table: ``model`` (with its ``transform`` family; ``None`` for a net without a transformer) on
    data ``variant``, and the paper's % test error (``None`` where the paper gives none)."""

    variant: str
    model: str
    transform: str | None
    paper: float | None

    @property
    def name(self) -> str:
        """``<variant>/<model>[_<transform>]``, e.g. ``RTS/st_cnn_affine``: the table's row, ``--only``'s name and
        the run directory (with ``/`` as ``_``)."""
        return f"{self.variant}/{self.model}" + (f"_{self.transform}" if self.transform else "")


def grid(variants: Sequence[str], rows: Mapping[tuple[str, str | None], Sequence[float | None]]) -> tuple[Cell, ...]:
    """The cells of a table laid out as the paper's: one column per variant, one row per ``(model, transform)``
    holding the paper's errors in the order of ``variants``. Cells come variant by variant, rows in their order.

    Raises:
        ConfigError: a row with another number of errors than there are variants.

    Example:
        >>> [c.name for c in grid(("R", "P"), {("fcn", None): (2.1, 3.1), ("st_fcn", "tps"): (1.1, 1.4)})]
        ['R/fcn', 'R/st_fcn_tps', 'P/fcn', 'P/st_fcn_tps']
    """
    for (model, transform), errors in rows.items():
        if len(errors) != len(variants):
            raise ConfigError(f"row {model}/{transform} has {len(errors)} paper errors for {len(variants)} variants")
    return tuple(
        Cell(v, model, transform, errors[i])
        for i, v in enumerate(variants)
        for (model, transform), errors in rows.items()
    )


@dataclass(frozen=True)
class ExperimentSpec:
    """A paper experiment with a results table: its cells and how each becomes a config.

    Attributes:
        name: ``torchstn reproduce NAME``; a cell trains as ``torchstn train NAME:<cell>``.
        title: the table's title.
        cells: the cells in the order the table lists them (see :func:`grid`).
        old_names: the format of a cell's packaged-config name before the specs, from ``{variant}`` (lower case),
            ``{model}`` and ``{_transform}`` (``_tps``, or empty), e.g. ``table1_{variant}_{model}{_transform}``;
            empty for an experiment that had none.
        base: config values every cell shares, by dotted key (``optim.batch_size``).
        overrides: ``{glob over cell names: {dotted key: value}}``, applied after ``base`` and the cell's own fields,
            in the order given.

    Raises:
        ConfigError: two cells with one name, or an ``overrides`` glob that matches no cell (a typo).
    """

    name: str
    title: str
    cells: tuple[Cell, ...]
    old_names: str = ""
    base: Mapping[str, Any] = field(default_factory=lambda: {"optim.schedule": "cpu"})
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [c.name for c in self.cells]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(f"experiment {self.name!r} lists the cells {twice} twice")
        unused = [glob for glob in self.overrides if not any(fnmatch.fnmatchcase(n, glob) for n in names)]
        if unused:
            raise ConfigError(
                f"experiment {self.name!r}: the overrides for {unused} match no cell; cells: {', '.join(names)}"
            )

    def config_name(self, cell: Cell) -> str:
        """``<experiment>:<cell>``, the name ``torchstn train`` and ``load_config`` take."""
        return f"{self.name}:{cell.name}"

    def old_name(self, cell: Cell) -> str | None:
        """The cell's packaged-config name before the specs (``table1_rts_st_cnn_affine``), or ``None``."""
        if not self.old_names:
            return None
        return self.old_names.format(
            variant=cell.variant.lower(), model=cell.model, _transform=f"_{cell.transform}" if cell.transform else ""
        )

    def config_data(self, cell: Cell) -> dict[str, dict[str, Any]]:
        """The cell's config as the nested data a TOML file would hold (a new dict each call)."""
        flat = {
            "model.name": cell.model,
            **({"model.transform": cell.transform} if cell.transform else {}),
            "data.variant": cell.variant,
            **self.base,
        }
        for glob, values in self.overrides.items():
            if fnmatch.fnmatchcase(cell.name, glob):
                flat.update(values)
        data: dict[str, dict[str, Any]] = {}
        for key, value in flat.items():
            section, _, key = key.partition(".")
            data.setdefault(section, {})[key] = value
        return data

    def select(self, only: Sequence[str] = ()) -> tuple[Cell, ...]:
        """The cells named by ``only`` (cell names or globs such as ``RTS/*`` or ``R``; the variant is matched
        case-insensitively), in table order; every cell when ``only`` is empty.

        Raises:
            ConfigError: a name in ``only`` that matches no cell.
        """
        if not only:
            return self.cells
        variants = {c.variant.lower(): c.variant for c in self.cells}
        chosen: set[str] = set()
        for pattern in only:
            variant, _, model = pattern.partition("/")
            pattern = f"{variants.get(variant.lower(), variant)}/{model or '*'}"
            hits = {c.name for c in self.cells if fnmatch.fnmatchcase(c.name, pattern)}
            if not hits:
                raise ConfigError(
                    f"--only {pattern!r} matches no {self.name} cell; cells: {', '.join(c.name for c in self.cells)}"
                )
            chosen |= hits
        return tuple(c for c in self.cells if c.name in chosen)


def register(spec: ExperimentSpec) -> ExperimentSpec:
    """Add ``spec`` to :data:`EXPERIMENTS` and each of its cells to the engine's named configs (its old name too,
    marked ``replaced_by`` the new one); returns ``spec``.

    Raises:
        OptionError: the experiment or one of its cells' names is registered already.
    """
    EXPERIMENTS.register(spec.name, spec)
    for cell in spec.cells:
        new, old = spec.config_name(cell), spec.old_name(cell)
        run_name = old or f"{spec.name}_{cell.name.replace('/', '_')}"
        load = functools.partial(spec.config_data, cell)
        NAMED_CONFIGS.register(new, load, run_name=run_name)
        if old:
            NAMED_CONFIGS.register(old, load, run_name=run_name, replaced_by=new)
    return spec
