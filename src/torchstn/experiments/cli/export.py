"""Export a trained model for deployment: ``torchstn export CHECKPOINT [--out FILE.onnx|FILE.pt2]``.

CHECKPOINT is a ``last.pt`` file or a run directory. The format follows the suffix of ``--out`` (``.onnx`` or
``.pt2``; ``--format`` when there is no ``--out``). The example input is the first ``-n`` images of the run's fixed
test set; the exported model takes any batch size. ONNX files are checked with onnxruntime against PyTorch on those
images (``--no-check`` skips it) and carry the input range, class count and run config in their metadata.
``--module st`` exports only the model's first spatial transformer (image in, transformed image out). The logic
lives in :mod:`torchstn.export`; ``docs/deploy.md`` has the support table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from torchstn.errors import OptionError
from torchstn.experiments.engine.runs import checkpoint_path, eval_dataset, load_run
from torchstn.export import DEFAULT_OPSET, check_onnx, export_onnx, export_program

_SUFFIX = {"onnx": ".onnx", "pt2": ".pt2"}


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="torchstn export", description=__doc__)
    parser.add_argument("checkpoint", help="a checkpoint file or a run directory")
    parser.add_argument(
        "--format",
        choices=sorted(_SUFFIX),
        help="onnx or pt2 (a torch.export program, for torch.export.load); default: the suffix of --out, else onnx",
    )
    parser.add_argument(
        "--out", help="output file, .onnx or .pt2 (default: next to the checkpoint, e.g. run/last.onnx)"
    )
    parser.add_argument(
        "--exporter",
        choices=["dynamo", "torchscript"],
        default="dynamo",
        help="ONNX exporter: torch.onnx.export(dynamo=True) (default) or dynamo=False, the "
        "TorchScript exporter (faster, no onnxscript)",
    )
    parser.add_argument(
        "--opset", type=int, help=f"ONNX opset, 16 or later for 2D, 20 or later for 3D (default {DEFAULT_OPSET})"
    )
    parser.add_argument(
        "--module",
        choices=["model", "st"],
        default="model",
        help="the whole classifier (default) or only its first spatial transformer",
    )
    parser.add_argument("-n", "--num-images", type=int, default=8, help="test images to trace and check with")
    parser.add_argument(
        "--check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compare the export with PyTorch on the images (default: on)",
    )
    parser.add_argument("--atol", type=float, default=1e-4, help="largest accepted difference (default 1e-4)")
    parser.add_argument("--fixed-batch", action="store_true", help="fix the batch size to -n instead of a free one")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    return parser


def main(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.num_images < 1:
        raise OptionError(f"--num-images must be at least 1, got {args.num_images}")
    fmt = _format(args.format, args.out)
    if fmt != "onnx" and (args.opset is not None or args.exporter != "dynamo"):
        raise OptionError(f"--opset and --exporter apply to ONNX files only, not to {fmt}")
    cfg, model, payload = load_run(args.checkpoint)
    dataset = eval_dataset(cfg, payload)
    n = min(args.num_images, len(dataset))
    images = dataset.batch(torch.arange(n))[0]  # (N, C, H, W), as torchstn eval reads it
    if args.module == "st":
        model, images = _first_transformer(model, images)
    ckpt = checkpoint_path(args.checkpoint)
    suffix = (".st" if args.module == "st" else "") + _SUFFIX[fmt]
    out = Path(args.out) if args.out else ckpt.with_suffix(suffix)
    what = type(model).__name__ + (" (first spatial transformer)" if args.module == "st" else "")

    if fmt == "pt2":
        program = export_program(model, images, out, dynamic_batch=not args.fixed_batch)
        if args.check:
            with torch.no_grad():
                diff = float((program.module()(images) - model(images)).abs().max())
            print(f"torch.export program matches PyTorch on {n} test images: max abs diff {diff:.2g}")
    else:
        opset = DEFAULT_OPSET if args.opset is None else args.opset
        export_onnx(
            model,
            images,
            out,
            opset=opset,
            dynamic_batch=not args.fixed_batch,
            check=args.check,
            atol=args.atol,
            dynamo=args.exporter == "dynamo",
            metadata=_run_metadata(cfg, payload, args.module),
        )
        if args.check:
            diff = check_onnx(out, model, images)
            print(f"onnxruntime matches PyTorch on {n} test images: max abs diff {diff:.2g} (atol {args.atol:g})")
    print(f"{ckpt}: {what} -> {out}" + (f" (opset {opset})" if fmt == "onnx" else ""))
    return 0


def _format(fmt: str | None, out: str | None) -> str:
    """The format: ``--format``, else the suffix of ``--out``, else onnx; a suffix that disagrees is an error."""
    if out is None:
        return fmt or "onnx"
    by_suffix = {v: k for k, v in _SUFFIX.items()}.get(Path(out).suffix.lower())
    if by_suffix is None:
        raise OptionError(
            f"--out {out}: cannot tell the format from the suffix {Path(out).suffix!r}; name the "
            f"file .onnx (ONNX) or .pt2 (a torch.export program)"
        )
    if fmt is not None and fmt != by_suffix:
        raise OptionError(
            f"--format {fmt} would write {fmt} into --out {out}; name the file {_SUFFIX[fmt]} or drop --format"
        )
    return by_suffix


def _run_metadata(cfg, payload: dict, module: str) -> dict[str, str]:
    """What a deployer needs to know, for the ONNX file's ``metadata_props``."""
    from torchstn.experiments.engine.config_io import to_toml

    meta = {"input_range": "[0, 1]", "config": to_toml(cfg)}
    if module == "model":
        meta["num_classes"] = str(int(payload["num_classes"]))
        meta["output"] = "logits (batch, num_classes)"
    else:
        meta["output"] = "the first spatial transformer's output image"
    return meta


def _first_transformer(model: nn.Module, images: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    """The model's first SpatialTransformer and the input it receives when the model runs on ``images``."""
    from torchstn.nn import SpatialTransformer

    st = next((m for m in model.modules() if isinstance(m, SpatialTransformer)), None)
    if st is None:
        raise OptionError(f"--module st: {type(model).__name__} has no spatial transformer; export --module model")
    seen: list[tuple[tuple, dict]] = []
    handle = st.register_forward_pre_hook(lambda _, args, kwargs: seen.append((args, kwargs)), with_kwargs=True)
    try:
        with torch.no_grad():
            model(images)
    finally:
        handle.remove()
    if not seen:
        raise OptionError(f"--module st: {type(model).__name__} does not call its spatial transformer")
    args, kwargs = seen[0]
    if len(args) != 1 or kwargs.get("loc_input") is not None:
        raise OptionError(
            "--module st: the first spatial transformer takes a separate localisation input; export --module model"
        )
    return st, args[0]
