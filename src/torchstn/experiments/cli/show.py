"""Picture of a trained spatial transformer: ``torchstn show CHECKPOINT --out fig.png``.

Draws test inputs with the transformer's sampling points and output-frame outline over them, and its outputs below:
one pair of rows per transformer (MNIST addition's two transformers each get theirs; two-channel inputs are drawn red
and green, one colour per digit), 16 images to a band of rows. For volumes (the 3D experiment) it draws each volume's
three axis-aligned projections beside the projection the model learned; for a compositional transformer (IC-STN)
its warps step by step (:func:`~torchstn.experiments.viz.compositional_figure`).
"""

from __future__ import annotations

import argparse

import torch

from torchstn.errors import OptionError
from torchstn.experiments.engine.arguments import positive_int
from torchstn.experiments.engine.runs import eval_dataset, load_run
from torchstn.experiments.icstn import PerturbedInput, unpack
from torchstn.nn import CompositionalSpatialTransformer

#: The most images one figure draws (16 bands of 16: a 2,700 x 5,800 px PNG for one transformer).
MAX_IMAGES = 256


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="torchstn show", description=__doc__)
    parser.add_argument("checkpoint", help="a checkpoint file or a run directory")
    parser.add_argument("--out", required=True, help="image file to write (.png, .pdf, .svg, ...)")
    parser.add_argument(
        "-n", type=positive_int, default=8, help=f"how many test images, at most {MAX_IMAGES} (default 8)"
    )
    parser.add_argument("--seed", type=int, default=0, help="which test images (0: the first n)")
    parser.add_argument("--data", help="take the images from this tensor file instead of the test set")
    return parser


def main(args: argparse.Namespace) -> int:
    from torchstn.experiments import viz

    if args.n > MAX_IMAGES:
        raise OptionError(
            f"-n {args.n}: a figure draws at most {MAX_IMAGES} images (16 to a row); make several figures with --seed"
        )
    out = viz.check_figure_path(args.out)
    cfg, model, payload = load_run(args.checkpoint)
    dataset = eval_dataset(cfg, payload, args.data)
    n = min(args.n, len(dataset))
    if args.seed:
        idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(args.seed))[:n]
    else:
        idx = torch.arange(n)
    images, labels = dataset.batch(idx)
    title = f"{cfg.model.name} {cfg.model.transform or ''} on {cfg.data.variant}, iteration {payload.get('step', '?')}"
    if images.dim() == 5:  # volumes (the 3D experiment): axis-aligned projections beside the learned one
        out = viz.volume_figure(model, images, out, labels=labels, title=title)
    elif any(isinstance(m, CompositionalSpatialTransformer) for m in model.modules()):  # its warps step by step
        theta = None
        if isinstance(model, PerturbedInput):  # the IC-STN protocol: the digit, with its perturbation the first warp
            (images, theta), model = unpack(images), model.model
        out = viz.compositional_figure(model, images, out, theta_init=theta, title=f"{title}: labels {labels.tolist()}")
    else:
        out = viz.st_figure(model, images, out, labels=labels, title=title)
    print(f"wrote {out}")
    return 0
