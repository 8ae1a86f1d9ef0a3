"""Which deployment route works for which transform family, measured: the table of ``docs/deploy.md``.

Every cell starts from a FRESH ``SpatialTransformer`` (it never ran eagerly), with the default ``out_size=None``, a
tiny localisation net and a random head (the grid really moves). The route traces / exports / compiles it on a batch
of 3 and runs the result on a batch of 5 (a size it was not traced with); the cell is the largest absolute difference
from an identical module run eagerly on that batch. A cell that is not a number names the error the route raised.

Run from the repository root::

    python docs/scripts/export_matrix.py              # a plain table
    python docs/scripts/export_matrix.py --markdown   # the table docs/deploy.md pastes

Needs ``onnx``, ``onnxscript`` and ``onnxruntime`` (``pip install torchstn[export]``); about a minute on a laptop CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import torchstn
from torchstn.errors import TorchstnError
from torchstn.nn import SpatialTransformer
from torchstn.transforms import get_transform, list_transforms

EXPORT_BATCH, CHECK_BATCH = 3, 5


def build(family: str, **options) -> tuple[SpatialTransformer, tuple[int, ...]]:
    """A fresh ST of ``family`` (same weights on every call) and its input shape without the batch."""
    shape = (2, 8, 8) if get_transform(family).spatial_rank == 2 else (2, 5, 6, 7)
    torch.manual_seed(0)
    loc = nn.Sequential(nn.Flatten(), nn.Linear(torch.Size(shape).numel(), 8), nn.Tanh())
    st = SpatialTransformer(loc, family, in_features=8, **options)
    with torch.no_grad():
        st.head.linear.weight.normal_(0, 0.1)  # away from the identity
    return st.eval(), shape


def _ort(path: Path, x: torch.Tensor) -> torch.Tensor:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


def onnx_legacy(opset: int) -> Callable:
    def route(st, x, x2, tmp):
        path = tmp / f"legacy{opset}.onnx"
        torch.onnx.export(
            st,
            (x,),
            path,
            dynamo=False,
            opset_version=opset,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        )
        return _ort(path, x2)

    return route


def onnx_dynamo(st, x, x2, tmp):
    path = tmp / "dynamo.onnx"
    program = torch.onnx.export(
        st,
        (x,),
        dynamo=True,
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        input_names=["input"],
        output_names=["output"],
        verbose=False,
    )
    program.save(path)
    return _ort(path, x2)


def jit_trace(st, x, x2, tmp):
    traced = torch.jit.trace(st, x)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)  # a traced model is deployed as a file: it must serialise
    buffer.seek(0)
    return torch.jit.load(buffer)(x2)


def jit_script(st, x, x2, tmp):
    return torch.jit.script(st)(x2)


def export_program(st, x, x2, tmp):
    program = torch.export.export(st, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    return program.module()(x2)


def compile_fullgraph(st, x, x2, tmp):
    compiled = torch.compile(st, fullgraph=True, backend="eager")
    compiled(x)
    return compiled(x2)


def compile_theta(st, x, x2, tmp):
    """``return_theta=True`` through a fullgraph compile; the cell compares both outputs."""
    compiled = torch.compile(st, fullgraph=True, backend="eager")
    v, theta = compiled(x2, return_theta=True)
    return torch.cat((v.flatten(1), theta), dim=1)


ROUTES: dict[str, Callable] = {
    "ONNX dynamo (opset 20)": onnx_dynamo,
    "ONNX TorchScript opset 16": onnx_legacy(16),
    "ONNX TorchScript opset 17": onnx_legacy(17),
    "ONNX TorchScript opset 20": onnx_legacy(20),
    "jit.trace (+ save/load)": jit_trace,
    "jit.script": jit_script,
    "torch.export": export_program,
    "compile fullgraph": compile_fullgraph,
    "compile fullgraph, return_theta": compile_theta,
}
#: Rows beyond the registry: options that change what can be traced.
OPTION_ROWS = {"affine, antialias=True": ("affine", {"antialias": True})}


def rows(families: list[str]) -> dict[str, tuple[str, dict]]:
    return {**{f: (f, {}) for f in families}, **OPTION_ROWS}


def cell(family: str, options: dict, route: Callable) -> str:
    """The measured difference, or the error the route raised."""
    st, shape = build(family, **options)
    x = torch.rand(EXPORT_BATCH, *shape, generator=torch.Generator().manual_seed(1))
    x2 = torch.rand(CHECK_BATCH, *shape, generator=torch.Generator().manual_seed(2))
    torch._dynamo.reset()
    with tempfile.TemporaryDirectory() as tmp, _quiet():
        try:
            with torch.no_grad():
                got = route(st, x, x2, Path(tmp))
        except TorchstnError as e:
            return f"refused: {type(e).__name__}"
        except Exception as e:  # noqa: BLE001 - the table reports what the user would see
            return f"torch error: {type(e).__name__}"
    ref, _ = build(family, **options)
    with torch.no_grad():
        want = ref(x2)
        if route is compile_theta:
            v, theta = ref(x2, return_theta=True)
            want = torch.cat((v.flatten(1), theta), dim=1)
    if got.shape != want.shape:
        return f"**wrong shape** {tuple(got.shape)}"
    return f"{float((got - want).abs().max()):.1e}"


@contextlib.contextmanager
def _quiet():
    """No warnings, logs or graph dumps (the exporters print some from C++, so file descriptors 1 and 2 go too)."""
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "w") as null, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.dup2(null.fileno(), 1)
        os.dup2(null.fileno(), 2)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def versions() -> str:
    import onnx
    import onnxruntime
    import onnxscript

    return (
        f"torch {torch.__version__}, onnx {onnx.__version__}, onnxscript {onnxscript.__version__}, "
        f"onnxruntime {onnxruntime.__version__}, torchstn {torchstn.__version__}, Python "
        f"{platform.python_version()}, {platform.machine()} CPU"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--families", nargs="*", default=list_transforms(), help="default: every registered one")
    parser.add_argument("--routes", nargs="*", default=list(ROUTES), help="default: every route")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    table = [
        [label] + [cell(family, options, ROUTES[r]) for r in args.routes]
        for label, (family, options) in rows(args.families).items()
    ]
    header = ["family"] + args.routes
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in table:
            print("| " + " | ".join([f"`{row[0]}`", *row[1:]]) + " |")
    else:
        for row in [header, *table]:
            print("  ".join(f"{c:<26}" for c in row))
    print(
        f"\n{versions()}; export batch {EXPORT_BATCH}, checked on batch {CHECK_BATCH}; "
        f"{time.perf_counter() - start:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
