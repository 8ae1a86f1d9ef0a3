"""Test error of a trained model: ``torchstn eval CHECKPOINT [--data FILE.npz] [--by-squash]``.

CHECKPOINT is a ``last.pt`` file or a run directory. Without ``--data`` it evaluates on the fixed test set of the
run's variant; with it, on your own tensor file (see :class:`torchstn.data.TensorFile`). ``--by-squash`` (a P run on
its fixed test set) adds the error in bins of how flat each test draw squeezes the digit
(:func:`torchstn.data.distortions.squash`; ``docs/datasets.md``, "Legible P").
"""

from __future__ import annotations

import argparse

import torch

from torchstn.errors import ConfigError
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
    parser.add_argument(
        "--by-squash",
        action="store_true",
        help="P runs: also the error in bins of each test draw's squash (how flat it squeezes the digit)",
    )
    parser.add_argument(
        "--squash-figure",
        metavar="PATH",
        help="with --by-squash: draw the 32 most squeezed test digits, each with its label and the model's answer",
    )
    return parser


def main(args: argparse.Namespace) -> int:
    device = parse_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.squash_figure:
        if not args.by_squash:
            raise ConfigError("--squash-figure draws what --by-squash measures: add --by-squash")
        from torchstn.experiments.viz import check_figure_path

        check_figure_path(args.squash_figure)
    cfg, model, payload = load_run(args.checkpoint, device)
    dataset = eval_dataset(cfg, payload, args.data)
    squashes = draw_squash(dataset) if args.by_squash else None  # a run it cannot bin fails before evaluating
    res = task_of(cfg).evaluate(model, dataset, batch_size=args.batch_size, device=device, limit=0, amp="off")
    assert res is not None  # only a should_stop callback abandons an evaluation
    what = args.data or f"the fixed {cfg.data.variant} test set"
    model_name = cfg.model.name + (f" ({cfg.model.transform})" if cfg.model.transform else "")
    wrong = round(res["error"] * res["n"] / 100)
    print(f"{checkpoint_path(args.checkpoint)}: {model_name}, iteration {payload.get('step', '?')}")
    print(f"test error {res['error']:.2f}% ({wrong}/{res['n']} wrong), loss {res['loss']:.4f} on {what}")
    if squashes is not None:
        print(
            squash_table(model, dataset, squashes, batch_size=args.batch_size, device=device, figure=args.squash_figure)
        )
    return 0


#: The squash bins of ``--by-squash`` (lower edges; the last bin is open).
SQUASH_BINS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5)


def draw_squash(dataset) -> torch.Tensor:
    """The squash of every item of a fixed P test set (:func:`torchstn.data.distortions.squash`) -> ``(n,)``.

    Raises:
        ConfigError: ``dataset`` is not a fixed P test set (its draws are unknown).
        OptionError: its recipe has a 42x42 frame, which squash does not measure.
    """
    from torchstn.data.distortions import ProjectiveJitter, squash

    distortion = getattr(dataset, "distortion", None)
    if not isinstance(distortion, ProjectiveJitter) or not hasattr(dataset, "fixed_params"):
        raise ConfigError(
            f"--by-squash needs a run on the fixed P test set (its draws are known), got {type(dataset).__name__}"
            + ("" if distortion is None else f" with {type(distortion).__name__}")
        )
    return squash(distortion, dataset.fixed_params())


def squash_table(
    model: torch.nn.Module,
    dataset,
    s: torch.Tensor,
    *,
    batch_size: int = 500,
    device="cpu",
    figure: str | None = None,
) -> str:
    """A markdown table of ``model``'s error on a P test set in bins of its items' squash ``s`` (:func:`draw_squash`,
    binned by :data:`SQUASH_BINS`); with ``figure``, a picture of the 32 most squeezed test digits (label, the
    model's answer, squash) there."""
    answers, truth = [], []
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            images, labels = dataset.batch(torch.arange(start, min(start + batch_size, len(dataset))))
            answers.append(model(images.to(device)).argmax(1).cpu())
            truth.append(labels)
    answer, label = torch.cat(answers), torch.cat(truth)
    miss = answer != label
    if figure:
        from torchstn.experiments.viz import labelled_grid

        worst = s.argsort()[:32]
        labelled_grid(
            dataset.batch(worst)[0],
            [f"{int(label[i])} as {int(answer[i])}, {float(s[i]):.2f}" for i in worst],
            figure,
            wrong=[bool(miss[i]) for i in worst],
            title="the 32 most squeezed test digits: label as answer, squash",
        )
    rows = ["| squash | test images | errors | error | share of all errors |", "|---|---|---|---|---|"]
    edges = (*SQUASH_BINS, float("inf"))
    for low, high in zip(edges[:-1], edges[1:]):
        m = (s >= low) & (s < high)
        n, k = int(m.sum()), int(miss[m].sum())
        name = f"{low:g}-{high:g}" if high != float("inf") else f">= {low:g}"
        rows.append(f"| {name} | {n:,} | {k} | {100 * k / max(n, 1):.2f}% | {100 * k / max(int(miss.sum()), 1):.0f}% |")
    return "\n".join(rows)
