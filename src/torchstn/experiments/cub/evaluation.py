"""A finished (or checkpointed) CUB run: its model (:func:`model_from_checkpoint`), its accuracy
(:func:`evaluate`) and the parts its transformers pick (:func:`show`, drawn by :func:`draw_part_boxes`)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch

from torchstn.errors import ConfigError
from torchstn.experiments.cub.data import IMAGENET_MEAN, IMAGENET_STD
from torchstn.experiments.cub.models import CUBPartsNet
from torchstn.experiments.cub.task import CUBTask
from torchstn.experiments.engine.config import parse_device, to_dict
from torchstn.experiments.engine.runs import load_run

__all__ = ["model_from_checkpoint", "evaluate", "draw_part_boxes", "show"]


def _saved_run(
    checkpoint: str | os.PathLike[str], root: str | os.PathLike[str] | None, device: torch.device, **options: Any
) -> tuple[CUBTask, torch.nn.Module, dict]:
    """The task (``data.root`` replaced by ``root`` if given, ``[task]`` options by ``options``), the model (eval
    mode, on ``device``) and the checkpoint of a ``cub`` run."""
    cfg, model, payload = load_run(checkpoint, device)
    if cfg.task.name != "cub":
        raise ConfigError(f"{checkpoint}: a run of task {cfg.task.name!r}, not 'cub' (torchstn eval evaluates it)")
    data = cfg.data if root is None else dataclasses.replace(cfg.data, root=str(root))
    task = dataclasses.replace(cfg.task, options=dataclasses.replace(cfg.task.options, **options))
    return CUBTask(dataclasses.replace(cfg, data=data, task=task)), model, payload


def model_from_checkpoint(path: str | os.PathLike[str], device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """``(model in eval mode, meta)`` of a ``cub train`` run (``last.pt`` or its folder); ``meta`` holds ``model``,
    ``in_shape``, ``num_classes``, ``size``, ``root``, ``exclude``, ``seed``, ``step`` and the whole ``config``.
    The backbone weights come from the checkpoint, not from ``weights``.

    Raises:
        DataError: a missing or damaged checkpoint.
        ConfigError: not a CUB run.
    """
    task, model, payload = _saved_run(path, None, parse_device(device))
    cfg, o = task.cfg, task.options
    meta = {
        "model": cfg.model.name,
        "in_shape": list(payload["in_shape"]),
        "num_classes": payload["num_classes"],
        "size": o.size,
        "root": cfg.data.root,
        "exclude": o.exclude,
        "seed": cfg.run.seed,
        "step": payload.get("step"),
        "config": to_dict(cfg),
    }
    return model, meta


def evaluate(
    checkpoint: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    split: str = "test",
    *,
    batch_size: int = 32,
    workers: int = 4,
    device: str = "cpu",
) -> dict:
    """Top-1 ``accuracy`` (a fraction), ``error`` (%), ``loss`` and ``n`` of a checkpoint on ``split`` (central
    crops; ``root`` defaults to the folder it was trained on, with the same exclusions)."""
    dev = parse_device(device)
    task, model, _ = _saved_run(checkpoint, root, dev, workers=workers)
    res = task.evaluate(
        model, task.dataset(split, augment=False), batch_size=batch_size, device=dev, limit=0, amp="off"
    )
    return {"checkpoint": str(checkpoint), "split": split, **(res or {})}  # None only when a should_stop said so


def draw_part_boxes(
    images: torch.Tensor,
    boxes: torch.Tensor,
    out: str | os.PathLike[str],
    *,
    truth: torch.Tensor | None = None,
    columns: int = 4,
) -> Path:
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


def show(
    checkpoint: str | os.PathLike[str],
    out: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    *,
    split: str = "test",
    n: int = 8,
    device: str = "cpu",
) -> Path:
    """Draw the windows each transformer of a ``cub_st_cnn`` checkpoint picks on the first ``n`` images of
    ``split`` (the bird's box in white) to the PNG ``out``.

    Raises:
        ConfigError: the checkpoint's model has no spatial transformers.
    """
    dev = parse_device(device)
    task, model, _ = _saved_run(checkpoint, root, dev)
    if not isinstance(model, CUBPartsNet):
        raise ConfigError(f"{checkpoint}: model {task.cfg.model.name!r} has no spatial transformers to show")
    data = task.dataset(split, augment=False)
    items = [data.sample(i) for i in range(min(n, len(data)))]
    x = torch.stack([it[0] for it in items])
    boxes = model.part_boxes(x.to(dev)).cpu()
    images = x * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    return draw_part_boxes(images, boxes, out, truth=torch.stack([it[2] for it in items]))
