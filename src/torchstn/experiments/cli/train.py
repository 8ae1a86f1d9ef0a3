"""Train a model from a TOML config: ``torchstn train CONFIG [--set key=value ...] [--out DIR]``.

CONFIG is a ``.toml`` file, a cell of a paper experiment named ``EXPERIMENT:CELL`` (``table1:RTS/st_cnn_affine``, the
cell ``torchstn reproduce table1 --only RTS/st_cnn_affine`` trains; its run directory defaults to
``runs/table1_rts_st_cnn_affine``), or a packaged config (``demo``); ``--list`` shows the names. A cell's name from
before the experiment specs (``table1_rts_st_cnn_affine``) still works, with a warning naming the new one.
The run directory gets ``config.toml`` (resolved), ``metrics.csv``, ``last.pt`` and ``result.json``; a directory that
already holds a run is refused unless ``--resume`` (continue it) or ``--overwrite`` (delete it first).

Ctrl-C (SIGINT) or SIGTERM stops at the end of the iteration under way, saves a checkpoint and prints the command that
continues exactly: ``torchstn train --resume --out DIR`` (CONFIG defaults to DIR/config.toml); exit status 130 or
143. A second Ctrl-C stops at once, without a checkpoint.

Several processes: ``torchrun --nproc_per_node=N -m torchstn train CONFIG ...`` trains with DistributedDataParallel
(gloo on the CPU, NCCL with ``--device cuda``); ``optim.batch_size`` is the global batch; rank 0 writes the run
directory. Mixed precision: ``--amp bf16`` (CPU or GPU) or ``--amp fp16`` (GPU).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import warnings
from pathlib import Path

from torchstn.errors import ConfigError
from torchstn.experiments.engine import distributed
from torchstn.experiments.engine.arguments import add_set_option
from torchstn.experiments.engine.config_io import config_name, load_config, packaged_configs
from torchstn.experiments.engine.runs import run_files
from torchstn.experiments.engine.signals import TrainingInterrupted
from torchstn.experiments.engine.trainer import fit
from torchstn.experiments.specs import EXPERIMENTS


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="torchstn train", description=__doc__)
    parser.add_argument(
        "config",
        nargs="?",
        help="a .toml file, an experiment's cell (table1:RTS/st_cnn_affine) or a packaged config "
        "name; see --list (with --resume: default OUT/config.toml)",
    )
    add_set_option(parser, "--set optim.lr=0.01 --set model.transform=tps", "a config field")
    parser.add_argument("--out", help="run directory (default: run.out, else runs/<config name>)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/last.pt exactly where it stopped (an error if there is none)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the run OUT holds (last.pt, metrics.csv, result.json, tb/, gif/, ...) and start afresh",
    )
    parser.add_argument("--threads", type=int, help="CPU threads (run.threads)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (run.device)")
    parser.add_argument("--time-limit", type=float, metavar="MIN", help="stop after MIN minutes (run.time_limit)")
    parser.add_argument("--amp", help="mixed precision: off, bf16 or fp16 (CUDA only) (run.amp)")
    parser.add_argument("--gif", action="store_true", help="also write OUT/st.gif: the ST's output during training")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--list", action="store_true", help="list the config names (cells, packaged configs) and exit")
    return parser


def main(args: argparse.Namespace) -> int:
    if args.list:
        _list_configs()
        return 0
    if args.config is None and not (args.resume and args.out):
        print(
            "torchstn train: error: CONFIG is required (see --list for packaged configs); to continue a run: "
            "torchstn train --resume --out DIR",
            file=sys.stderr,
        )
        return 2
    config = args.config or _saved_config(Path(args.out))
    overrides = list(args.overrides)
    for flag, key in (
        (args.threads, "run.threads"),
        (args.device, "run.device"),
        (args.time_limit, "run.time_limit"),
        (args.amp, "run.amp"),
    ):
        if flag is not None:
            overrides.append(f"{key}={flag!r}" if not isinstance(flag, str) else f"{key}={flag}")
    with warnings.catch_warnings(record=True) as caught:  # an old config name: say so, also outside -W default
        warnings.simplefilter("always", DeprecationWarning)
        cfg = load_config(config, overrides)
    for w in caught:
        if distributed.is_main():
            print(f"torchstn train: warning: {w.message}", file=sys.stderr)
    out = args.out or cfg.run.out or f"runs/{config_name(config)}"
    if args.out is None and cfg.run.out and not (args.resume or args.overwrite) and run_files(out):
        raise ConfigError(
            f"{out} (run.out of {config}) already holds a run ({', '.join(run_files(out))}): train it "
            "again into a new directory (--out NEW), continue it (--resume) or replace it "
            "(--overwrite)"
        )
    command = "torchstn train " + " ".join(shlex.quote(a) for a in _argv(args, config))
    try:
        result = fit(
            cfg,
            out,
            resume=args.resume,
            overwrite=args.overwrite,
            gif=args.gif,
            progress=not args.quiet,
            command=command,
        )
    except TrainingInterrupted as e:
        if distributed.is_main():  # printed with --quiet too: it is the line needed to go on
            print(f"torchstn train: {e}; {_next_step(e, out, args.gif)}", file=sys.stderr, flush=True)
        return e.exit_status
    if args.quiet and distributed.is_main():
        print(
            f"test error {result['test_error']:.2f}% on {result['test_images']:,} images after "
            f"{result['steps']:,} iterations; run directory {out}"
        )
    return 0


def _list_configs() -> None:
    """Print every config name ``torchstn train`` takes: the experiments' cells, then the packaged TOML files."""
    specs = [EXPERIMENTS.get(name) for name in EXPERIMENTS]
    rows = [
        (spec.config_name(cell), spec.title + ("" if cell.paper is None else f", paper {cell.paper:.1f}%"))
        for spec in specs
        for cell in spec.cells
    ]
    rows += [(name, f"packaged config, {path.name}") for name, path in packaged_configs().items()]
    width = max(len(name) for name, _ in rows)
    for name, what in rows:
        print(f"{name:{width}s}  {what}")


def _saved_config(out: Path) -> str:
    """``OUT/config.toml``, the config ``--resume --out OUT`` continues without a CONFIG."""
    path = out / "config.toml"
    if not path.is_file():
        raise ConfigError(f"cannot resume: {out} holds no run ({path} does not exist); check --out")
    return str(path)


def resume_command(out: str, gif: bool = False) -> str:
    """The command that continues the run in ``out`` (its config is ``out/config.toml``).

    Example:
        >>> resume_command("runs/my run")
        "torchstn train --resume --out 'runs/my run'"
    """
    return f"torchstn train --resume --out {shlex.quote(str(out))}" + (" --gif" if gif else "")


def _next_step(e: TrainingInterrupted, out: str, gif: bool) -> str:
    if e.step is None:
        return "nothing to resume: start again with --overwrite"
    launcher = "under torchrun with the same launcher options, " if distributed.world_size() > 1 else ""
    return f"continue with: {launcher}{resume_command(out, gif)}"


def _argv(args: argparse.Namespace, config: str) -> list[str]:
    argv = [config] + [x for o in args.overrides for x in ("--set", o)]
    for flag, value in (
        ("--threads", args.threads),
        ("--device", args.device),
        ("--time-limit", args.time_limit),
        ("--amp", args.amp),
        ("--out", args.out),
    ):
        if value is not None:
            argv += [flag, str(value)]
    flags = (("--resume", args.resume), ("--overwrite", args.overwrite), ("--gif", args.gif))
    return argv + [flag for flag, on in flags if on]
