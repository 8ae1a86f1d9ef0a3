"""Test error of a trained model: ``torchstn eval CHECKPOINT [--data FILE.npz]``.

CHECKPOINT is a ``last.pt`` file or a run directory. Without ``--data`` it evaluates on the fixed test set of the
run's variant; with it, on your own tensor file (see :class:`torchstn.data.datasets.TensorFile`).
"""

from __future__ import annotations

import argparse

import torch

from torchstn.train.runs import checkpoint_path, eval_dataset, load_run
from torchstn.train.trainer import evaluate


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="torchstn eval", description=__doc__)
    parser.add_argument("checkpoint", help="a checkpoint file or a run directory")
    parser.add_argument("--data", help="evaluate on this tensor file instead of the variant's test set")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int)
    return parser


def main(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg, model, payload = load_run(args.checkpoint, args.device)
    dataset = eval_dataset(cfg, payload, args.data)
    res = evaluate(model, dataset, batch_size=args.batch_size, device=args.device)
    what = args.data or f"the fixed {cfg.data.variant} test set"
    model_name = cfg.model.name + (f" ({cfg.model.transform})" if cfg.model.transform else "")
    wrong = round(res["error"] * res["n"] / 100)
    print(f"{checkpoint_path(args.checkpoint)}: {model_name}, iteration {payload.get('step', '?')}")
    print(f"test error {res['error']:.2f}% ({wrong}/{res['n']} wrong), loss {res['loss']:.4f} on {what}")
    return 0
