"""Reproduce the paper's classification experiments: run every cell of an experiment's spec over seeds, write the
table.

An experiment is a spec (:data:`~torchstn.experiments.specs.EXPERIMENTS`): its cells, each one model on one data
variant beside the paper's error, in table order:

* ``table1``: Table 1, distorted MNIST R / RTS / P / E (:mod:`torchstn.experiments.table1`);
* ``tc``: the translated-cluttered column of Table 1 (the same module);
* ``addition``: MNIST addition, Appendix A.1 (:mod:`torchstn.experiments.addition`);
* ``3d``: the 3D transformer, Appendix A.3 (:mod:`torchstn.experiments.volume3d`).

A cell is named ``<VARIANT>/<model>[_<transform>]``, e.g. ``RTS/st_cnn_affine``, and trains alone as
``torchstn train table1:RTS/st_cnn_affine``. Runs go to ``<runs>/<cell>/<schedule>[+<overrides>]/seed<k>`` (overrides
that change what is computed, such as ``optim.iterations=1000``, get their own directory) and are resumed or skipped
when already there, so an interrupted reproduction picks up where it stopped. The table (markdown and CSV) is
rewritten after every run, beside the runs unless ``out`` says otherwise (the project's docs/results tables are
written with ``--out docs/results`` from the repository root). Each row records the command that makes it, with paths
relative to the working directory (or under ``~``), never an absolute machine path.
"""

from __future__ import annotations

import csv
import datetime
import json
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torchstn.errors import ConfigError
from torchstn.experiments.engine.checkpoint import code_version
from torchstn.experiments.engine.config import TrainConfig
from torchstn.experiments.engine.config_io import apply_overrides, load_config
from torchstn.experiments.engine.runs import display_path
from torchstn.experiments.specs import EXPERIMENTS, Cell

__all__ = ["EXPERIMENTS", "experiment_cells", "reproduce", "write_table"]


def experiment_cells(experiment: str, only: Sequence[str] = ()) -> dict[str, str]:
    """``{cell: config name}`` of an experiment's cells in table order, filtered by ``only`` (cell names or globs
    such as ``RTS/*``; the variant is matched case-insensitively). The config name is what ``torchstn train`` takes.

    Raises:
        ConfigError: an unknown experiment, or a name in ``only`` that matches no cell.

    Example:
        >>> experiment_cells("tc", ["tc/st_*"])
        {'TC/st_fcn_affine': 'tc:TC/st_fcn_affine', 'TC/st_cnn_affine': 'tc:TC/st_cnn_affine'}
    """
    spec = EXPERIMENTS.get(experiment)
    return {cell.name: spec.config_name(cell) for cell in spec.select(only)}


def _run_key(schedule: str, overrides: Sequence[str]) -> str:
    """The run directory's name: the schedule, plus the overrides that change what is computed."""
    from torchstn.experiments.engine.trainer import RESUMABLE_RUN_KEYS

    kept = sorted(o for o in overrides if o.partition("=")[0].strip() not in {f"run.{k}" for k in RESUMABLE_RUN_KEYS})
    return "+".join([schedule, *("".join(c if c.isalnum() or c in ".=-_" else "-" for c in o) for o in kept)])


def _summary(
    cell: Cell,
    config: str,
    results: list[dict[str, Any]],
    schedule: str,
    overrides: Sequence[str] = (),
    experiment: str = "table1",
    where: str = "",
) -> dict[str, Any]:
    variant, model = cell.name.split("/", 1)
    errors = [r["test_error"] for r in results]
    return {
        "variant": variant,
        "model": model,
        "paper_error": cell.paper,
        "ours_mean": statistics.fmean(errors),
        "ours_std": statistics.stdev(errors) if len(errors) > 1 else None,
        "seeds": len(errors),
        "errors": errors,
        "parameters": results[0]["parameters"],
        "wall_s": statistics.fmean(r["train_s"] for r in results),
        "iterations": results[0]["iterations"],
        "completed": all(r["completed"] for r in results),
        "device": results[0]["device"],
        "command": f"torchstn reproduce {experiment} --schedule {schedule} --seeds {len(errors)} "
        f"--only {cell.name}" + "".join(f" --set {o}" for o in overrides) + where,
        "config": config,
    }


def write_table(
    rows: list[dict[str, Any]],
    out_dir: str | Path,
    schedule: str,
    *,
    note: str = "",
    experiment: str = "table1",
    key: str | None = None,
    version: dict | None = None,
) -> tuple[Path, Path]:
    """Write ``<experiment>_<key>.md`` and ``.csv`` into ``out_dir``; returns their paths.

    ``key`` is the run key (:func:`_run_key`: the schedule plus the overrides that change what is computed, e.g.
    ``cpu+optim.iterations=40000``), so a shortened or lengthened reproduction writes its own table instead of
    overwriting the schedule's; it defaults to ``schedule``. ``version`` (:func:`code_version`, taken now when not
    given) is the code the table names: :func:`reproduce` takes it once before its first write, since the tables it
    writes make the tree dirty.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{experiment}_{key or schedule}"
    csv_path, md_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    cols = [
        "variant",
        "model",
        "paper_error",
        "ours_mean",
        "ours_std",
        "seeds",
        "errors",
        "parameters",
        "wall_s",
        "iterations",
        "completed",
        "device",
        "command",
    ]
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            std = "" if r["ours_std"] is None else f"{r['ours_std']:.3f}"  # one seed has no spread
            w.writerow(
                {
                    **r,
                    "errors": ";".join(f"{e:.2f}" for e in r["errors"]),
                    "wall_s": f"{r['wall_s']:.0f}",
                    "ours_mean": f"{r['ours_mean']:.3f}",
                    "ours_std": std,
                }
            )
    v = version or code_version()
    title = EXPERIMENTS.get(experiment).title if experiment in EXPERIMENTS else experiment
    lines = [
        f"# {title}, `{key or schedule}` schedule",
        "",
        f"% test error on the fixed test sets; ours is mean +- std over seeds (one seed: its error, n=1). "
        f"torchstn {v['torchstn']} "
        f"(git {v['git'] or 'unknown'}), torch {v['torch']}, {datetime.date.today().isoformat()}.",
        *([note] if note else []),
        "",
        "| Set | Model | Paper | Ours | Seeds | Parameters | Iterations | Train time / seed | Device | Command |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        paper = "-" if r["paper_error"] is None else f"{r['paper_error']:.1f}"
        spread = " (n=1)" if r["ours_std"] is None else f" +- {r['ours_std']:.2f}"
        ours = f"{r['ours_mean']:.2f}{spread}" + ("" if r["completed"] else " (stopped early)")
        lines.append(
            f"| {r['variant']} | {r['model']} | {paper} | {ours} | {r['seeds']} | {r['parameters']:,} | "
            f"{r['iterations']:,} | {r['wall_s'] / 60:.1f} min | {r['device']} | `{r['command']}` |"
        )
    md_path.write_text("\n".join(lines) + "\n")
    return md_path, csv_path


def _check_reused(run_dir: Path, result: dict[str, Any], cfg: TrainConfig) -> None:
    """Refuse to reuse a finished run trained with another config than the one the cell has now (its spec changed
    since): its number would stand in the table for a model that is no longer the cell's."""
    from torchstn.experiments.engine.config import from_dict
    from torchstn.experiments.engine.trainer import config_differences

    if "config" not in result:
        raise ConfigError(
            f"{run_dir / 'result.json'} records no config, so it cannot be checked against the cell's; "
            "move the run directory away to train the cell again"
        )
    diff = config_differences(from_dict(result["config"]), cfg)
    if diff:
        raise ConfigError(
            f"{run_dir} was trained with another config than the cell's now (it differs in "
            f"{', '.join(diff)}); move it away to train the cell again, or pass another --runs"
        )


def reproduce(
    experiment: str = "table1",
    *,
    schedule: str = "cpu",
    seeds: int = 3,
    only: Sequence[str] = (),
    out: str | Path | None = None,
    runs: str | Path | None = None,
    overrides: Sequence[str] = (),
    progress: bool = True,
    fit_fn: Callable[..., dict] | None = None,
    say: Callable[[str], None] = print,
) -> list[dict]:
    """Train every selected cell of ``experiment`` for ``seeds`` seeds with ``schedule`` and write the table after
    each run.

    Args:
        experiment: a name of :data:`~torchstn.experiments.specs.EXPERIMENTS` (``table1``, ``tc``, ``addition``,
            ``3d``).
        schedule: ``cpu``, ``cpu_long`` or ``paper`` (any name of :data:`~torchstn.experiments.engine.schedules.SCHEDULES`).
        seeds: seeds ``0 .. seeds - 1``.
        only: cells or globs to run (default all).
        out: directory for the table ``<experiment>_<schedule>[+<overrides>].md`` / ``.csv`` (overrides as in the
            run directories' names, so a shortened run does not overwrite the schedule's table); default ``runs``.
        runs: directory for the run directories (default ``runs/<experiment>``).
        overrides: extra ``key=value`` config overrides for every run (e.g. ``run.threads=2``,
            ``optim.iterations=1000`` for a shortened run).
        fit_fn: the training function (default :func:`torchstn.experiments.engine.trainer.fit`; tests pass a fake).

    Returns:
        One summary dict per selected cell. The table written holds these and every other cell of the experiment
        with finished runs in ``runs`` under the same schedule and overrides, so ``--only`` fills a table in.

    Raises:
        ConfigError: an unknown experiment or ``only`` name, or a finished run in ``runs`` whose saved config is no
            longer the cell's (for example after its spec changed): move it away or pass another ``runs``.
    """
    if fit_fn is None:
        from torchstn.experiments.engine.trainer import fit

        fit_fn = fit
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    spec = EXPERIMENTS.get(experiment)
    cells = spec.select(only)
    default_runs = Path(f"runs/{experiment}")
    runs = Path(runs) if runs is not None else default_runs
    out = Path(out) if out is not None else runs
    where = (f" --runs {display_path(runs)}" if runs != default_runs else "") + (
        f" --out {display_path(out)}" if out != runs else ""
    )
    key, version = _run_key(schedule, overrides), code_version()

    def run_dir_of(cell: Cell, seed: int) -> Path:
        return runs / cell.name.replace("/", "_") / key / f"seed{seed}"

    def cfg_of(cell: Cell, seed: int) -> TrainConfig:
        return apply_overrides(
            load_config(spec.config_name(cell)), [f"optim.schedule={schedule}", f"run.seed={seed}", *overrides]
        )

    def finished(cell: Cell, seed: int) -> dict[str, Any] | None:
        """The seed's result when its run finished with the cell's config now (ConfigError when its config is not)."""
        path = run_dir_of(cell, seed) / "result.json"
        if not path.is_file():
            return None
        result = json.loads(path.read_text())
        _check_reused(path.parent, result, cfg_of(cell, seed))
        return result if result.get("completed") else None

    # The table covers every cell finished in `runs` with this key, not only the selected ones, so that `--only`
    # fills in a table instead of overwriting it with its own cells; the others are read again at every write, so
    # that two reproductions sharing `runs` (say, one per core) each write the table of both.
    rows_of: dict[str, dict[str, Any]] = {}
    said: set[str] = set()

    def table_rows() -> list[dict[str, Any]]:
        rows = []
        for cell in spec.cells:
            if cell in cells:
                rows += [rows_of[cell.name]] if cell.name in rows_of else []
                continue
            try:
                done = [r for r in (finished(cell, seed) for seed in range(seeds)) if r is not None]
            except ConfigError as e:
                if str(e) not in said:
                    said.add(str(e))
                    say(f"left out of the table: {e}")
                continue
            if done:
                rows.append(_summary(cell, spec.config_name(cell), done, schedule, overrides, experiment, where))
        return rows

    for i, cell in enumerate(cells):
        config, results = spec.config_name(cell), []
        for seed in range(seeds):
            run_dir = run_dir_of(cell, seed)
            result = finished(cell, seed)
            if result is not None:
                say(f"[{i + 1}/{len(cells)}] {cell.name} seed {seed}: done before, {result['test_error']:.2f}%")
                results.append(result)
                continue
            say(f"[{i + 1}/{len(cells)}] {cell.name} seed {seed} -> {run_dir}")
            t0 = time.monotonic()
            command = f"torchstn train {config} --set optim.schedule={schedule} --set run.seed={seed}"
            result = fit_fn(
                cfg_of(cell, seed),
                run_dir,
                resume="auto",
                progress=progress,
                command=command + "".join(f" --set {o}" for o in overrides),
            )
            say(f"  {cell.name} seed {seed}: {result['test_error']:.2f}% in {(time.monotonic() - t0) / 60:.1f} min")
            results.append(result)
        rows_of[cell.name] = _summary(cell, config, results, schedule, overrides, experiment, where)
        md, _ = write_table(table_rows(), out, schedule, experiment=experiment, key=key, version=version)
    if cells:
        say(f"wrote {md} and {md.with_suffix('.csv')}")
    return [rows_of[c.name] for c in cells]


def reproduce_table1(**kwargs) -> list[dict]:
    """Deprecated: ``reproduce("table1", **kwargs)`` says the same (runs default to ``runs/table1``)."""
    warnings.warn('reproduce_table1(...) is deprecated: use reproduce("table1", ...)', DeprecationWarning, stacklevel=2)
    return reproduce("table1", **kwargs)
