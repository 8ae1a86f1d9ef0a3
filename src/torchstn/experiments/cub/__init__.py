"""CUB-200-2011 (paper §4.3, Table 3): ``torchstn cub train | eval | show``.

::

    torchstn cub train --root ~/data/CUB_200_2011 --model cub_st_cnn --num-parts 4 \\
        --backbone torchvision:inception_v3 --weights ~/weights/inception_v3.pth --out runs/cub-4x
    torchstn cub eval --checkpoint runs/cub-4x/last.pt
    torchstn cub show --checkpoint runs/cub-4x/last.pt --out parts.png

Schedule ``paper`` (:data:`SCHEDULES`) [S]: SGD, lr 0.1 x0.1 at 10k / 20k / 25k iterations, localisation lr x1e-4,
weight decay 1e-5 (dropout 0.7 is the models' default). Not given by the paper, our choices [?]: 30k iterations,
batch 32, momentum 0.9. ``--set key=value`` overrides any field. Training images: the shorter side resized to
``size * 8 / 7``, random ``size`` crops and flips; evaluation: the central crop (see :mod:`torchstn.experiments.cub.data`).
Pretrained backbones need ``--weights`` (nothing is downloaded); ``--allow-random-init`` trains from scratch, loudly.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from torchstn.experiments.cub.data import IMAGENET_MEAN, IMAGENET_STD, CUBDataset, read_cub
from torchstn.errors import ConfigError
from torchstn.experiments.sgd_loop import SGDSchedule, epoch_batches, load_run, override, train_loop
from torchstn.experiments.cub import models as cub_models
from torchstn.models.registry import build_model

__all__ = ["SCHEDULES", "get_args_parser", "main", "run", "train", "evaluate", "show", "draw_part_boxes",
           "model_from_checkpoint"]

SCHEDULES = {
    "paper": SGDSchedule("paper", lr=0.1, momentum=0.9, weight_decay=1e-5, batch_size=32, iterations=30_000,
                         lr_steps=(10_000, 20_000, 25_000), gamma=0.1, loc_lr_mult=1e-4),
    "smoke": SGDSchedule("smoke", lr=0.01, momentum=0.9, weight_decay=1e-5, batch_size=4, iterations=10,
                         lr_steps=(8,), gamma=0.1, loc_lr_mult=1e-2),
}  # fmt: skip


class _StepBatches:
    """A DataLoader batch sampler giving the batches of steps ``start, start + 1, ...``."""

    def __init__(self, indices, start: int):
        self.indices, self.start = indices, start

    def __iter__(self):
        step = self.start
        while True:
            yield self.indices(step).tolist()
            step += 1


def _build(name: str, in_shape: Sequence[int], num_classes: int, options: dict) -> torch.nn.Module:
    if name not in cub_models.CUB_MODELS:
        raise ConfigError(f"model must be one of {list(cub_models.CUB_MODELS)}, got {name!r}")
    return build_model(name, in_shape=tuple(in_shape), num_classes=num_classes, **options)


@torch.no_grad()
def _accuracy(model, dataset: CUBDataset, batch_size: int, workers: int, device) -> dict:
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    right = n = 0
    for x, y in loader:
        right += int((model(x.to(device)).argmax(1).cpu() == y).sum())
        n += len(y)
    return {"accuracy": right / max(n, 1), "n": n}


def train(root: str, out_dir: str, *, model: str = "cub_st_cnn", size: int = 448,
          schedule: str | SGDSchedule = "paper", overrides: Sequence[str] = (), model_options: dict | None = None,
          exclude: str | None = None, seed: int = 0, workers: int = 4, eval_every: int = 0, resume: bool = False,
          device: str = "cpu", log=print) -> dict:  # fmt: skip
    """Train a CUB model; returns the result (also ``out_dir/result.json``, with the test accuracy).

    ``model_options`` go to the builder (``num_parts``, ``backbone``, ``weights``, ``allow_random_init``, ...).

    Raises:
        ConfigError: unknown model / schedule key / option, or a pretrained backbone without weights.
        DataError: a bad CUB folder (the missing file is named).
    """
    if isinstance(schedule, str):
        if schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
        schedule = SCHEDULES[schedule]
    schedule = override(schedule, overrides)
    index = read_cub(root, exclude)
    train_set, test_set = CUBDataset(index, "train", size=size), CUBDataset(index, "test", size=size)
    options = dict(model_options or {})
    net = _build(model, (3, size, size), len(index.class_names), options)
    groups = cub_models.cub_param_groups(net, schedule.lr, schedule.loc_lr_mult)
    indices = epoch_batches(len(train_set), schedule.batch_size, seed)
    state: dict = {"next": None}

    def batch(step: int):
        if state["next"] != step:  # (re)start the loader at this step
            torch.manual_seed(seed * 1_000_003 + step)  # crops and flips
            state["it"] = iter(torch.utils.data.DataLoader(train_set, batch_sampler=_StepBatches(indices, step),
                                                           num_workers=workers))  # fmt: skip
        state["next"] = step + 1
        return next(state["it"])

    meta = {"task": "cub", "model": model, "in_shape": [3, size, size], "num_classes": len(index.class_names),
            "options": options, "size": size, "root": str(index.root), "excluded": list(index.excluded),
            "seed": seed}  # fmt: skip
    def evaluate(m: torch.nn.Module) -> dict:
        return {f"test_{k}": v for k, v in _accuracy(m, test_set, schedule.batch_size, workers, device).items()}

    return train_loop(net, batch=batch, loss_fn=torch.nn.functional.cross_entropy, schedule=schedule,
                      groups=groups, out_dir=out_dir, meta=meta, resume=resume, eval_every=eval_every, device=device,
                      log=log, evaluate=evaluate)


def model_from_checkpoint(path: str, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """``(model in eval mode, meta)``; the backbone weights come from the checkpoint, not from ``weights``."""
    ckpt = load_run(path)
    meta = ckpt["meta"]
    options = {**meta["options"], "allow_random_init": True}
    for key in ("weights", "loc_weights"):
        if key in options:
            options[key] = None
    with warnings.catch_warnings():  # random init, about to be overwritten by the checkpoint
        warnings.simplefilter("ignore")
        model = _build(meta["model"], meta["in_shape"], meta["num_classes"], options)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), meta


def evaluate(checkpoint: str, root: str | None = None, split: str = "test", *, batch_size: int = 32,
             workers: int = 4, device: str = "cpu") -> dict:  # fmt: skip
    """Top-1 accuracy of a checkpoint (``root`` defaults to the folder it was trained on; same exclusions)."""
    model, meta = model_from_checkpoint(checkpoint, device)
    index = read_cub(root or meta["root"], meta["excluded"] or None)
    data = CUBDataset(index, split, size=meta["size"], augment=False)
    return {"checkpoint": str(checkpoint), "split": split, **_accuracy(model, data, batch_size, workers, device)}


def draw_part_boxes(images: torch.Tensor, boxes: torch.Tensor, out: str | os.PathLike[str], *,
                    truth: torch.Tensor | None = None, columns: int = 4) -> Path:  # fmt: skip
    """Draw each image ``(B, 3, H, W)`` in [0, 1] with its part windows ``boxes (B, N, 4)`` (normalised
    ``(x1, y1, x2, y2)``, one colour per part) and, if given, the bird's box ``truth (B, 4)`` in pixels (white),
    tiled ``columns`` wide, to a PNG. Needs pillow.

    Example:
        >>> import tempfile, os
        >>> path = draw_part_boxes(torch.rand(2, 3, 16, 16), torch.tensor([[[-1.0, -1.0, 0.0, 0.0]]] * 2),
        ...                        os.path.join(tempfile.mkdtemp(), "parts.png"))
        >>> path.name
        'parts.png'
    """
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        raise ImportError("drawing needs pillow: pip install pillow (or 'torchstn[experiments]')") from None
    colours = ((255, 64, 64), (64, 200, 255), (255, 220, 0), (120, 255, 120), (255, 120, 255), (255, 160, 60))
    B, _, H, W = images.shape
    cols = min(columns, B)
    rows = -(-B // cols)
    sheet = Image.new("RGB", (cols * (W + 4), rows * (H + 4)), (0, 0, 0))
    for b in range(B):
        tile = Image.fromarray((images[b].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).contiguous().numpy())
        draw = ImageDraw.Draw(tile)
        if truth is not None:
            draw.rectangle([float(v) for v in truth[b]], outline=(255, 255, 255), width=1)
        for k, box in enumerate(boxes[b]):
            x1, y1, x2, y2 = ((box + 1) / 2 * torch.tensor([W, H, W, H], dtype=box.dtype)).tolist()  # pixel edges
            draw.rectangle([x1, y1, x2 - 1, y2 - 1], outline=colours[k % len(colours)], width=max(1, W // 112))
        r, c = divmod(b, cols)
        sheet.paste(tile, (c * (W + 4) + 2, r * (H + 4) + 2))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def show(checkpoint: str, out: str, root: str | None = None, *, split: str = "test", n: int = 8,
         device: str = "cpu") -> Path:  # fmt: skip
    """Draw the windows each transformer of a ``cub_st_cnn`` checkpoint picks on the first ``n`` images of
    ``split`` (the bird's box in white) to the PNG ``out``.

    Raises:
        ConfigError: the checkpoint's model has no spatial transformers.
    """
    model, meta = model_from_checkpoint(checkpoint, device)
    if not isinstance(model, cub_models.CUBPartsNet):
        raise ConfigError(f"{checkpoint}: model {meta['model']!r} has no spatial transformers to show")
    index = read_cub(root or meta["root"], meta["excluded"] or None)
    data = CUBDataset(index, split, size=meta["size"], augment=False, return_box=True)
    items = [data[i] for i in range(min(n, len(data)))]
    x = torch.stack([it[0] for it in items])
    boxes = model.part_boxes(x.to(device)).cpu()
    images = x * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    return draw_part_boxes(images, boxes, out, truth=torch.stack([it[2] for it in items]))


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The ``cub`` command's parser (subcommands ``train``, ``eval``, ``show``)."""
    parser = parser or argparse.ArgumentParser(prog="torchstn cub", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cub_command", metavar="{train,eval,show}", required=True)
    t = sub.add_parser("train", help="train a CUB model")
    t.add_argument("--root", required=True, help="the CUB_200_2011 folder")
    t.add_argument("--out", required=True, help="run folder (last.pt, metrics.jsonl, result.json)")
    t.add_argument("--model", default="cub_st_cnn", choices=cub_models.CUB_MODELS,
                   help="the backbone alone or with parallel spatial transformers (default cub_st_cnn)")
    t.add_argument("--size", type=int, default=448, help="input side (448; 224 for the CNN baseline)")
    t.add_argument("--num-parts", type=int, default=2, help="parallel transformers (2 or 4)")
    t.add_argument("--part-size", type=int, default=224, help="side of each transformer's output (default 224)")
    t.add_argument("--scale", type=float, default=0.5, help="fixed window half-size (0.5: half the image)")
    t.add_argument("--loc-size", type=int, default=224, help="the localisation net sees the input resized to this")
    t.add_argument("--backbone", required=True, help="tiny | torchvision:<arch> | timm:<name>")
    t.add_argument("--weights", default=None, help="state dict of the pretrained backbone")
    t.add_argument("--allow-random-init", action="store_true", help="train a pretrained backbone from scratch")
    t.add_argument("--exclude", default=None, help="file of image ids / names to leave out (ImageNet overlap)")
    t.add_argument("--schedule", default="paper", choices=sorted(SCHEDULES),
                   help="paper (30k iterations, default) or smoke (10 iterations: does the pipeline run)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a schedule field")
    t.add_argument("--seed", type=int, default=0, help="seed of the batch order and augmentation (default 0)")
    t.add_argument("--workers", type=int, default=4, help="data-loading processes (default 4)")
    t.add_argument("--eval-every", type=int, default=0,
                   help="evaluate every N iterations (default 0: at the end only)")
    t.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    t.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    e = sub.add_parser("eval", help="top-1 accuracy of a checkpoint")
    e.add_argument("--checkpoint", required=True, help="a last.pt of cub train")
    e.add_argument("--root", default=None, help="CUB_200_2011 folder (default: the run's)")
    e.add_argument("--split", default="test", choices=("train", "test", "all"), help="default test")
    e.add_argument("--workers", type=int, default=4, help="data-loading processes (default 4)")
    e.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    s = sub.add_parser("show", help="draw the parts each transformer picks")
    s.add_argument("--checkpoint", required=True, help="a last.pt of cub train with --model cub_st_cnn")
    s.add_argument("--out", required=True, help="PNG to write")
    s.add_argument("--root", default=None, help="CUB_200_2011 folder (default: the run's)")
    s.add_argument("--split", default="test", choices=("train", "test", "all"), help="default test")
    s.add_argument("-n", type=int, default=8, help="images")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run parsed arguments (for a CLI that builds the parser with :func:`get_args_parser`)."""
    if args.cub_command == "train":
        options: dict = {"backbone": args.backbone, "weights": args.weights,
                         "allow_random_init": args.allow_random_init}
        if args.model == "cub_st_cnn":
            options.update(num_parts=args.num_parts, part_size=args.part_size, scale=args.scale,
                           loc_size=args.loc_size)
        result = train(args.root, args.out, model=args.model, size=args.size, schedule=args.schedule,
                       overrides=args.set, model_options=options, exclude=args.exclude, seed=args.seed,
                       workers=args.workers, eval_every=args.eval_every, resume=args.resume, device=args.device)
        print(json.dumps({k: v for k, v in result.items() if k != "meta"}, indent=2, default=str))
    elif args.cub_command == "eval":
        print(json.dumps(evaluate(args.checkpoint, args.root, args.split, workers=args.workers, device=args.device),
                         indent=2))  # fmt: skip
    else:
        print(show(args.checkpoint, args.out, args.root, split=args.split, n=args.n))
    return 0


def main(argv: Sequence[str] | argparse.Namespace | None = None) -> int:
    """``torchstn cub ...``: parse ``argv`` (or take an already parsed namespace) and run it; returns 0."""
    args = argv if isinstance(argv, argparse.Namespace) else get_args_parser().parse_args(argv)
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
