"""Test error of a trained model: ``torchstn eval CHECKPOINT [--data FILE.npz]``.

CHECKPOINT is a ``last.pt`` file or a run directory. Without ``--data`` it evaluates on the fixed test set of the
run's variant; with it, on your own tensor file (see :class:`torchstn.data.TensorFile`).
"""

from __future__ import annotations

import argparse

import torch

from torchstn.experiments.engine.arguments import positive_int
from torchstn.experiments.engine.config import parse_device
from torchstn.experiments.engine.runs import checkpoint_path, eval_dataset, load_run
from torchstn.experiments.engine.trainer import task_of


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="torchstn eval", description=__doc__)
    parser.add_argument("checkpoint", help="a checkpoint file or a run directory")
    parser.add_argument("--data", help="evaluate on this tensor file (.npz) instead of the variant's test set")
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=500,
        help="images per forward pass (default 500; the result does not depend on it)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--threads", type=positive_int, help="CPU threads (default: torch's)")
    return parser


def main(args: argparse.Namespace) -> int:
    device = parse_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg, model, payload = load_run(args.checkpoint, device)
    dataset = eval_dataset(cfg, payload, args.data)
    res = task_of(cfg).evaluate(model, dataset, batch_size=args.batch_size, device=device, limit=0, amp="off")
    assert res is not None  # only a should_stop callback abandons an evaluation
    what = args.data or f"the fixed {cfg.data.variant} test set"
    model_name = cfg.model.name + (f" ({cfg.model.transform})" if cfg.model.transform else "")
    wrong = round(res["error"] * res["n"] / 100)
    print(f"{checkpoint_path(args.checkpoint)}: {model_name}, iteration {payload.get('step', '?')}")
    print(f"test error {res['error']:.2f}% ({wrong}/{res['n']} wrong), loss {res['loss']:.4f} on {what}")
    return 0
