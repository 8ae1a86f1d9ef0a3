"""Train a model from a TOML config: ``torchstn train CONFIG [--set key=value ...] [--resume] [--out DIR]``.

CONFIG is a ``.toml`` file or the name of a packaged config (``table1_rts_st_cnn_affine``; ``--list`` shows them).
The run directory gets ``config.toml`` (resolved), ``metrics.csv``, ``last.pt`` and ``result.json``.

Several processes: ``torchrun --nproc_per_node=N -m torchstn train CONFIG ...`` trains with DistributedDataParallel
(gloo on the CPU, NCCL with ``--device cuda``); ``optim.batch_size`` is the global batch; rank 0 writes the run
directory. Mixed precision: ``--amp bf16`` (CPU or GPU) or ``--amp fp16`` (GPU).
"""

from __future__ import annotations

import argparse
import shlex
import sys

from torchstn.train import distributed
from torchstn.train.config_io import config_name, load_config, packaged_configs
from torchstn.train.trainer import fit


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="torchstn train", description=__doc__)
    parser.add_argument("config", nargs="?", help="a .toml file or a packaged config name")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set optim.lr=0.01 --set model.transform=tps")
    parser.add_argument("--out", help="run directory (default: run.out, else runs/<config name>)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt exactly where it stopped")
    parser.add_argument("--threads", type=int, help="CPU threads (run.threads)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (run.device)")
    parser.add_argument("--time-limit", type=float, metavar="MIN", help="stop after MIN minutes (run.time_limit)")
    parser.add_argument("--amp", help="mixed precision: off, bf16 or fp16 (CUDA only) (run.amp)")
    parser.add_argument("--gif", action="store_true", help="also write OUT/st.gif: the ST's output during training")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--list", action="store_true", help="list the packaged configs and exit")
    return parser


def main(args: argparse.Namespace) -> int:
    if args.list:
        for name in packaged_configs():
            print(name)
        return 0
    if args.config is None:
        print("torchstn train: error: CONFIG is required (see --list for packaged configs)", file=sys.stderr)
        return 2
    overrides = list(args.overrides)
    for flag, key in ((args.threads, "run.threads"), (args.device, "run.device"), (args.time_limit, "run.time_limit"),
                      (args.amp, "run.amp")):  # fmt: skip
        if flag is not None:
            overrides.append(f"{key}={flag!r}" if not isinstance(flag, str) else f"{key}={flag}")
    cfg = load_config(args.config, overrides)
    out = args.out or cfg.run.out or f"runs/{config_name(args.config)}"
    command = "torchstn train " + " ".join(shlex.quote(a) for a in _argv(args))
    result = fit(cfg, out, resume=args.resume, gif=args.gif, progress=not args.quiet, command=command)
    if args.quiet and distributed.is_main():
        print(f"test error {result['test_error']:.2f}% on {result['test_images']:,} images after "
              f"{result['steps']:,} iterations; run directory {out}")
    return 0


def _argv(args: argparse.Namespace) -> list[str]:
    argv = [args.config] + [x for o in args.overrides for x in ("--set", o)]
    for flag, value in (("--threads", args.threads), ("--device", args.device), ("--time-limit", args.time_limit),
                        ("--amp", args.amp), ("--out", args.out)):
        if value is not None:
            argv += [flag, str(value)]
    return argv + (["--resume"] if args.resume else []) + (["--gif"] if args.gif else [])
