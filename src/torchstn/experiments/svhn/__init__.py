"""SVHN (paper §4.2, Table 2): ``torchstn svhn prepare | train | eval``.

::

    torchstn svhn prepare --src ~/data/svhn --out ~/data/svhn-cache --size 64
    torchstn svhn train --data ~/data/svhn-cache --model svhn_st_cnn_multi --out runs/svhn64-multi
    torchstn svhn eval --data ~/data/svhn-cache --checkpoint runs/svhn64-multi/last.pt --split test

Schedules (:data:`SCHEDULES`): ``paper`` is the paper's [S]: SGD, batch 128, lr 0.01 x0.1 every 80k iterations,
400k iterations, weight decay 5e-4, localisation nets at lr / 10 (dropout 0.5 is the models' default). The momentum
is not given; we use 0.9 [?] (``--set momentum=0`` for plain SGD). ``smoke`` is a few CPU-minutes check that the
pipeline runs. ``--set key=value`` overrides any field; ``--model-option key=value`` any model option (e.g.
``batch_norm=True``, ``channels=[16,16,16,16,16,16,16,16]``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import torch

from torchstn.experiments.svhn.data import SVHNSequences, load_svhn, prepare_svhn
from torchstn.errors import ConfigError
from torchstn.experiments.sgd_loop import SGDSchedule, epoch_batches, load_run, override, parse_options, train_loop
from torchstn.experiments.svhn import models as svhn_models
from torchstn.models.registry import build_model
from torchstn.nn import param_groups

__all__ = ["SCHEDULES", "get_args_parser", "main", "run", "train", "evaluate", "model_from_checkpoint"]

SCHEDULES = {
    "paper": SGDSchedule("paper", lr=0.01, momentum=0.9, weight_decay=5e-4, batch_size=128, iterations=400_000,
                         lr_steps=(80_000, 160_000, 240_000, 320_000), gamma=0.1, loc_lr_mult=0.1),
    "smoke": SGDSchedule("smoke", lr=0.01, momentum=0.9, weight_decay=5e-4, batch_size=16, iterations=20,
                         lr_steps=(15,), gamma=0.1, loc_lr_mult=0.1),
}  # fmt: skip


def _build(name: str, in_shape: Sequence[int], options: dict) -> torch.nn.Module:
    if name not in svhn_models.SVHN_MODELS:
        raise ConfigError(f"model must be one of {list(svhn_models.SVHN_MODELS)}, got {name!r}")
    options = dict(options)
    transform = options.pop("transform", None)
    return build_model(name, in_shape=tuple(in_shape), num_classes=11, transform=transform, **options)


@torch.no_grad()
def _sequence_error(model: torch.nn.Module, data: SVHNSequences, batch_size: int, device) -> dict:
    wrong, n = 0, len(data)
    for start in range(0, n, batch_size):
        x, y = data.batch(torch.arange(start, min(n, start + batch_size)))
        wrong += int((~svhn_models.sequence_correct(model(x.to(device)), y.to(device))).sum())
    return {"sequence_error": wrong / max(n, 1), "n": n}


def train(data_dir: str, out_dir: str, *, model: str = "svhn_st_cnn_multi", size: int = 64,
          schedule: str | SGDSchedule = "paper", overrides: Sequence[str] = (), model_options: dict | None = None,
          crop: int | None = None, seed: int = 0, eval_every: int = 0, eval_split: str = "val",
          eval_limit: int | None = None, resume: bool = False, device: str = "cpu", log=print) -> dict:  # fmt: skip
    """Train an SVHN model on the cache written by ``prepare``; returns the result (also ``out_dir/result.json``).

    Raises:
        ConfigError: unknown model, schedule, schedule key or model option.
        DataError: the cache is missing (the message says how to make it).
    """
    if isinstance(schedule, str):
        if schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
        schedule = SCHEDULES[schedule]
    schedule = override(schedule, overrides)
    train_data = SVHNSequences(load_svhn(data_dir, "train", size), crop=crop, train=True)
    held_out = load_svhn(data_dir, eval_split, size)
    if eval_limit is not None:
        held_out = type(held_out)(*(f[:eval_limit] for f in (held_out.images, held_out.labels, held_out.lengths)),
                                  held_out.mean, held_out.std, held_out.names[:eval_limit])  # fmt: skip
    eval_data = SVHNSequences(held_out, crop=crop, train=False)
    side = crop or size
    options = dict(model_options or {})
    net = _build(model, (3, side, side), options)
    indices = epoch_batches(len(train_data), schedule.batch_size, seed)

    def batch(step: int):
        return train_data.batch(indices(step), torch.Generator().manual_seed(seed * 1_000_003 + step))

    meta = {"task": "svhn", "model": model, "in_shape": [3, side, side], "options": options, "size": size,
            "crop": crop, "seed": seed, "data_dir": str(data_dir)}
    groups = param_groups(net, schedule.lr, schedule.loc_lr_mult)
    result = train_loop(net, batch=batch, loss_fn=svhn_models.sequence_loss, schedule=schedule, groups=groups,
                        out_dir=out_dir, meta=meta, resume=resume, eval_every=eval_every, device=device, log=log,
                        evaluate=lambda m: {f"{eval_split}_{k}": v for k, v in
                                            _sequence_error(m, eval_data, 256, device).items()})  # fmt: skip
    return result


def model_from_checkpoint(path: str, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """``(model in eval mode, meta)`` from a checkpoint of :func:`train`."""
    ckpt = load_run(path)
    meta = ckpt["meta"]
    model = _build(meta["model"], meta["in_shape"], meta["options"])
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), meta


def evaluate(checkpoint: str, data_dir: str | None = None, split: str = "test", *, batch_size: int = 256,
             device: str = "cpu") -> dict:  # fmt: skip
    """Sequence error of a checkpoint on a cached split (``data_dir`` defaults to the one it was trained on)."""
    model, meta = model_from_checkpoint(checkpoint, device)
    data = SVHNSequences(load_svhn(data_dir or meta["data_dir"], split, meta["size"]), crop=meta["crop"])
    return {"checkpoint": str(checkpoint), "split": split, **_sequence_error(model, data, batch_size, device)}


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The ``svhn`` command's parser (subcommands ``prepare``, ``train``, ``eval``)."""
    parser = parser or argparse.ArgumentParser(prog="torchstn svhn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="svhn_command", metavar="{prepare,train,eval}", required=True)
    p = sub.add_parser("prepare", help="crop the format-1 release into a cache of 64px or 128px sequences")
    p.add_argument("--src", required=True, help="folder with train/, test/ (and extra/) of the format-1 release")
    p.add_argument("--out", required=True, help="cache folder")
    p.add_argument("--size", type=int, default=64, help="64 (default) or 128 (the looser crops)")
    p.add_argument("--no-extra", action="store_true", help="leave out the 202k extra images")
    p.add_argument("--val-size", type=int, default=5000,
                   help="training images held out as the val split (default 5000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the val draw (default 0)")
    p.add_argument("--context", type=float, default=None, help="extra enlargement (default 1, or size/64)")
    t = sub.add_parser("train", help="train a model on a prepared cache")
    t.add_argument("--data", required=True, help="the cache folder of `prepare`")
    t.add_argument("--out", required=True, help="run folder (last.pt, metrics.jsonl, result.json)")
    t.add_argument("--model", default="svhn_st_cnn_multi", choices=svhn_models.SVHN_MODELS,
                   help="the CNN, one ST in front, or an ST before each of the first four conv layers (default)")
    t.add_argument("--size", type=int, default=64, help="which prepared crops to read: 64 (default) or 128")
    t.add_argument("--schedule", default="paper", choices=sorted(SCHEDULES),
                   help="paper (400k iterations, default) or smoke (20 iterations: does the pipeline run)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a schedule field")
    t.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                   help="override a model option, e.g. batch_norm=True")
    t.add_argument("--crop", type=int, default=None, help="random crops of this size at train time (54: Goodfellow)")
    t.add_argument("--seed", type=int, default=0, help="seed of the batch order and the crops (default 0)")
    t.add_argument("--eval-every", type=int, default=0,
                   help="evaluate every N iterations (default 0: at the end only)")
    t.add_argument("--eval-split", default="val", choices=("val", "test"),
                   help="held-out split evaluated during training (default val)")
    t.add_argument("--eval-limit", type=int, default=None, help="evaluate on the first N held-out images only")
    t.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    t.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    e = sub.add_parser("eval", help="sequence error of a checkpoint")
    e.add_argument("--checkpoint", required=True, help="a last.pt of svhn train")
    e.add_argument("--data", default=None, help="cache folder (default: the one the run used)")
    e.add_argument("--split", default="test", choices=("train", "val", "test"), help="default test")
    e.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run parsed arguments (for a CLI that builds the parser with :func:`get_args_parser`)."""
    if args.svhn_command == "prepare":
        report = prepare_svhn(args.src, args.out, args.size, extra=not args.no_extra, val_size=args.val_size,
                              seed=args.seed, context=args.context)  # fmt: skip
        print(json.dumps(report, indent=2))
    elif args.svhn_command == "train":
        result = train(args.data, args.out, model=args.model, size=args.size, schedule=args.schedule,
                       overrides=args.set, model_options=parse_options(args.model_option, "a model option"),
                       crop=args.crop, seed=args.seed, eval_every=args.eval_every, eval_split=args.eval_split,
                       eval_limit=args.eval_limit, resume=args.resume, device=args.device)  # fmt: skip
        print(json.dumps({k: v for k, v in result.items() if k != "meta"}, indent=2, default=str))
    else:
        print(json.dumps(evaluate(args.checkpoint, args.data, args.split, device=args.device), indent=2))
    return 0


def main(argv: Sequence[str] | argparse.Namespace | None = None) -> int:
    """``torchstn svhn ...``: parse ``argv`` (or take an already parsed namespace) and run it; returns 0."""
    args = argv if isinstance(argv, argparse.Namespace) else get_args_parser().parse_args(argv)
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
