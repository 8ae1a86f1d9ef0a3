"""Export models for deployment: ONNX files (checked against onnxruntime) and ``torch.export`` programs.

ONNX goes through PyTorch's dynamo exporter (``torch.onnx.export(..., dynamo=True)``, which needs ``onnxscript``)
by default, or with ``dynamo=False`` through the TorchScript exporter (faster, no ``onnxscript``; it traces with
``torch.jit.trace``, during which :func:`torchstn.affine_grid` builds its grid from plain broadcast ops instead of
its custom autograd function). Either way a spatial transformer becomes ``Gemm``/``MatMul``/``Mul``/``Add`` nodes
(the TPS basis is a constant) and one ``GridSample``; no ``AffineGrid`` node is emitted. The batch dimension is
dynamic (named ``batch``). Each file carries ``metadata_props`` (torchstn version, input layout and shape, exporter,
plus what the caller adds, e.g. the input range and class count that ``torchstn export`` writes).

**Opset.** ``GridSample`` exists from opset 16 for 4-D inputs (2D images) only; opset 20 generalised it to N-D
(volumes). The default is 20: the lowest opset that is valid for every family, 2D and 3D, and PyTorch's own default
for the dynamo exporter. Opsets 16-19 are accepted for 2D models; 3D models need 20 or later. Running opset 20
needs onnxruntime >= 1.17 (its first release with ``GridSample``-20, 5-D included, on the CPU provider); 5-D
``GridSample`` on onnxruntime's CUDA provider was not checked here.

**Support** (torch 2.13, onnx 1.23, onnxruntime 1.32, CPU; ``tests/export/``, ``docs/scripts/export_matrix.py``).
Every registered family exports to ONNX with either exporter (opsets 16-20 for 2D, 20 for 3D) and to
``torch.export``, with a dynamic batch. onnxruntime matches PyTorch to 1.6e-6 on small random models and 2.9e-5 on
a trained ST-CNN's logits (``docs/deploy.md``), so the default check tolerance is ``1e-4``:

======================================================  ====================  ==============
family / option                                          ONNX                  torch.export
======================================================  ====================  ==============
affine, attention, similarity, translation, projective   yes (opset >= 16)     yes
tps                                                      yes (opset >= 16)     yes
affine3d, attention3d, translation3d                     yes (opset >= 20)     yes
every mode (bicubic: 2D) and padding mode                yes                   yes
``antialias=True``                                       no                    no
======================================================  ====================  ==============

``antialias=True`` cannot be traced: the sampler picks the pyramid levels and tap counts from the data (``.item()``
on the footprint), so the graph's shape depends on the input. Build an export copy with ``antialias=False`` (the
outputs then differ where the transform zooms out). The paper models (``fcn``, ``cnn``, ``st_fcn``, ``st_cnn``, the
``_2x`` variants, ``tutorial_stn``) export whole. The ``check_finite`` test on theta is not in the exported graph:
a non-finite theta gives NaN outputs instead of an error.

The command line is ``torchstn export CHECKPOINT`` (:mod:`torchstn.experiments.cli.export`); see ``docs/deploy.md``.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import nn

from torchstn._checks import check_float_tensor, check_rank
from torchstn._io import atomic_path
from torchstn.errors import ExportError, OptionError, TorchstnError

__all__ = ["DEFAULT_OPSET", "ExportError", "check_onnx", "check_opset", "export_onnx", "export_program"]

#: Default ONNX opset: the first with N-D ``GridSample`` (so 2D and 3D models share it).
DEFAULT_OPSET = 20
MIN_OPSET_2D = 16  # GridSample-16: 4-D inputs only
MIN_OPSET_3D = 20  # GridSample-20: N-D inputs
_INSTALL = "pip install torchstn[export]"


def check_opset(opset: object, spatial_rank: int = 2) -> int:
    """Return ``opset`` if ONNX can express a ``spatial_rank``-D spatial transformer in it.

    Raises:
        OptionError: not an int, below 16 (no ``GridSample``), below 20 for 3D (``GridSample`` was 4-D only before
            opset 20), or newer than the installed ``onnx`` knows.

    Example:
        >>> check_opset(17)
        17
        >>> check_opset(17, spatial_rank=3)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        torchstn.errors.OptionError: opset 17 cannot express a 3D spatial transformer: ... from opset 20; ...
    """
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise OptionError(f"opset must be an int, got {opset!r}")
    if opset < MIN_OPSET_2D:
        raise OptionError(
            f"opset {opset} has no GridSample (added in opset {MIN_OPSET_2D}); use opset "
            f"{MIN_OPSET_2D} or later (default {DEFAULT_OPSET})"
        )
    if spatial_rank == 3 and opset < MIN_OPSET_3D:
        raise OptionError(
            f"opset {opset} cannot express a 3D spatial transformer: ONNX GridSample takes 5-D inputs "
            f"from opset {MIN_OPSET_3D}; use opset {MIN_OPSET_3D} or later"
        )
    try:
        import onnx
    except ImportError:  # export_onnx says what to install; only the upper bound goes unchecked here
        return opset
    if opset > onnx.defs.onnx_opset_version():
        raise OptionError(
            f"opset {opset} is newer than the installed onnx {onnx.__version__} knows "
            f"(at most {onnx.defs.onnx_opset_version()})"
        )
    return opset


def export_onnx(
    model: nn.Module,
    example_input: torch.Tensor,
    path: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    check: bool = True,
    atol: float = 1e-4,
    dynamo: bool = True,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Export ``model`` (one image or volume batch in, one tensor out) to the ONNX file ``path``.

    The model is traced in eval mode (its mode is restored afterwards). The file is written to a temporary name
    next to ``path`` and moved into place only once it is complete and, with ``check``, verified: onnxruntime runs
    it on ``example_input`` and its output must match PyTorch's within ``atol``. A failed export or check leaves
    ``path`` untouched.

    Args:
        model: e.g. a :class:`~torchstn.nn.SpatialTransformer` or a paper model.
        example_input: ``(B, C, H, W)`` or ``(B, C, D, H, W)`` float tensor; fixes every size but the batch.
        path: the ``.onnx`` file to write (parent directories are created).
        opset: ONNX opset (see :func:`check_opset`).
        dynamic_batch: export the batch size as a free dimension ``batch``; otherwise it is fixed to ``B``.
        check: verify the file with onnxruntime (see :func:`check_onnx`).
        atol: largest accepted absolute difference from PyTorch.
        dynamo: use PyTorch's dynamo exporter (default); ``False`` uses the TorchScript exporter (0.1 s instead
            of about 3 s for a small ST, and needs no ``onnxscript``; deprecated by PyTorch).
        metadata: extra ``metadata_props`` entries (string to string), e.g. ``{"input_range": "[0, 1]"}``; they
            are added to ``torchstn_version``, ``input_layout``, ``input_shape``, ``exporter`` and ``opset``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ImportError: ``onnx``/``onnxscript`` (or, with ``check``, ``onnxruntime``) is not installed.
        ShapeError: ``example_input`` is not 4-D or 5-D.
        OptionError: bad ``opset`` for the input's rank.
        ExportError: the model cannot be traced (e.g. ``antialias=True``), or onnxruntime disagrees beyond ``atol``.

    Example:
        >>> import tempfile
        >>> from torchstn.nn import SpatialTransformer
        >>> loc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 8 * 8, 16), torch.nn.Tanh())
        >>> st = SpatialTransformer(loc, "affine", in_features=16)
        >>> path = export_onnx(st, torch.rand(2, 2, 8, 8), Path(tempfile.mkdtemp()) / "st.onnx")
        >>> path.name, check_onnx(path, st, torch.rand(5, 2, 8, 8)) < 1e-4  # any batch size
        ('st.onnx', True)
        >>> import onnx
        >>> {p.key: p.value for p in onnx.load(path).metadata_props}["input_layout"]
        'NCHW'
    """
    example_input = _check_example(example_input)
    opset = check_opset(opset, example_input.dim() - 2)
    onnx = _require("onnx")
    if dynamo:
        _require("onnxscript")  # the dynamo exporter's op library
    if check:
        _require("onnxruntime")
    _refuse_untraceable(model)
    path = Path(path)
    props = _metadata(example_input, dynamo, opset, metadata)
    trace_input = _trace_input(example_input, dynamic_batch)

    def write(tmp: Path) -> None:
        with _eval_mode(model), _quiet_exporter(), _export_errors(model):
            if dynamo:
                program = torch.onnx.export(
                    model,
                    (trace_input,),
                    dynamo=True,
                    opset_version=opset,
                    verbose=False,
                    dynamic_shapes=_batch_dim(dynamic_batch),
                    input_names=["input"],
                    output_names=["output"],
                )
                assert program is not None  # dynamo=True returns the ONNXProgram (None is the TorchScript exporter's)
                program.save(tmp, external_data=False)
            else:
                axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None
                torch.onnx.export(
                    model,
                    (trace_input,),
                    tmp,
                    dynamo=False,
                    opset_version=opset,
                    input_names=["input"],
                    output_names=["output"],
                    dynamic_axes=axes,
                )
        proto = onnx.load(tmp)
        onnx.helper.set_model_props(proto, props)
        proto.doc_string = f"{type(model).__name__} exported by torchstn {props['torchstn_version']}"
        onnx.save(proto, tmp)
        if check:  # errors name the file the user asked for, which is not written
            _compare(tmp, f"{path} (not written)", model, example_input, atol)

    with atomic_path(path) as tmp:
        write(tmp)
    return path


def check_onnx(
    path: str | os.PathLike[str], model: nn.Module, inputs: torch.Tensor, *, atol: float | None = None
) -> float:
    """Run the ONNX file ``path`` with onnxruntime (CPU) on ``inputs`` and return the largest absolute difference
    from ``model(inputs)`` (computed in eval mode, without gradients).

    Raises:
        ImportError: ``onnxruntime`` is not installed.
        ExportError: the difference exceeds ``atol`` (when given), or the shapes differ.
    """
    return _compare(path, str(path), model, inputs, atol)


def _compare(
    path: str | os.PathLike[str], name: str, model: nn.Module, inputs: torch.Tensor, atol: float | None
) -> float:
    """:func:`check_onnx` of the file ``path``; its errors call the file ``name``."""
    ort = _require("onnxruntime")
    inputs = _check_example(inputs)
    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: inputs.detach().cpu().numpy()})
    with _eval_mode(model), torch.no_grad():
        want = model(inputs).detach().cpu()
    got = torch.from_numpy(got)
    if got.shape != want.shape:
        raise ExportError(f"{name}: onnxruntime returned shape {tuple(got.shape)}, PyTorch {tuple(want.shape)}")
    diff = float((got.double() - want.double()).abs().max()) if want.numel() else 0.0
    if atol is not None and not diff <= atol:
        raise ExportError(
            f"{name}: onnxruntime differs from PyTorch by up to {diff:.3g} on {len(inputs)} inputs, "
            f"more than atol={atol:g}"
        )
    return diff


def export_program(
    model: nn.Module,
    example_input: torch.Tensor,
    path: str | os.PathLike[str] | None = None,
    *,
    dynamic_batch: bool = True,
) -> torch.export.ExportedProgram:
    """Trace ``model`` (in eval mode) with :func:`torch.export.export`; with ``path``, also save it there
    atomically with :func:`torch.export.save` (a ``.pt2`` file; load it with :func:`torch.export.load`).

    Raises:
        ShapeError: ``example_input`` is not 4-D or 5-D.
        ExportError: the model cannot be traced (e.g. ``antialias=True``).

    Example:
        >>> from torchstn.nn import SpatialTransformer
        >>> loc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 8 * 8, 16), torch.nn.Tanh())
        >>> st = SpatialTransformer(loc, "tps", in_features=16)
        >>> program = export_program(st, torch.rand(2, 2, 8, 8))
        >>> x = torch.rand(5, 2, 8, 8)
        >>> torch.allclose(program.module()(x), st(x), atol=1e-6)
        True
    """
    example_input = _check_example(example_input)
    _refuse_untraceable(model)
    with _eval_mode(model):
        try:
            program = torch.export.export(
                model, (_trace_input(example_input, dynamic_batch),), dynamic_shapes=_batch_dim(dynamic_batch)
            )
        except TorchstnError:
            raise
        except Exception as e:
            raise ExportError(f"torch.export.export failed for {type(model).__name__}: {_first_line(e)}") from e
    if path is not None:
        with atomic_path(path) as tmp:
            torch.export.save(program, tmp)
    return program


# -- helpers -------------------------------------------------------------------------------------------------------
def _require(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise ImportError(f"exporting to ONNX needs the {name!r} package: {_INSTALL}") from e


def _metadata(example: torch.Tensor, dynamo: bool, opset: int, extra: Mapping[str, str] | None) -> dict[str, str]:
    """The ``metadata_props`` of an exported file: what a deployer needs to feed it, plus ``extra``."""
    from torchstn import __version__

    props = {
        "torchstn_version": __version__,
        "input_layout": "NCHW" if example.dim() == 4 else "NCDHW",
        "input_shape": "batch," + ",".join(str(s) for s in example.shape[1:]),
        "input_dtype": str(example.dtype).removeprefix("torch."),
        "exporter": "dynamo" if dynamo else "torchscript",
        "opset": str(opset),
    }
    for key, value in (extra or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise OptionError(f"metadata must map str to str, got {key!r}: {value!r}")
        props[key] = value
    return props


def _check_example(x: object) -> torch.Tensor:
    x = check_float_tensor("example_input", x)
    check_rank("example_input", x, (4, 5), "(B, C, H, W) or (B, C, D, H, W)")
    return x


def _trace_input(x: torch.Tensor, dynamic_batch: bool) -> torch.Tensor:
    """The tensor to trace with: a batch of 1 is repeated to 2, since the tracer specialises size-1 dimensions."""
    return torch.cat([x, x]) if dynamic_batch and x.shape[0] == 1 else x


def _batch_dim(dynamic_batch: bool):
    return ({0: torch.export.Dim("batch")},) if dynamic_batch else None


def _refuse_untraceable(model: nn.Module) -> None:
    from torchstn.nn import SpatialTransformer

    for name, m in model.named_modules():
        if isinstance(m, SpatialTransformer) and m.antialias:
            raise ExportError(
                f"{type(model).__name__}{'.' + name if name else ''} samples with antialias=True, which "
                "cannot be exported: it picks pyramid levels and tap counts from the data. Rebuild it "
                "with antialias=False and load the same state_dict (outputs then differ where the "
                "transform zooms out)"
            )


def _first_line(e: BaseException) -> str:
    """``Type: first line`` of the innermost cause (the exporter wraps the real error in generic ones)."""
    while e.__cause__ is not None:
        e = e.__cause__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()  # without terminal colours
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


@contextlib.contextmanager
def _export_errors(model: nn.Module) -> Iterator[None]:
    """Let torchstn's own errors through (the model refused its input: already the clear message); wrap the
    exporter's in an :class:`ExportError`, chained for ``--debug``."""
    try:
        yield
    except TorchstnError:
        raise
    except Exception as e:
        raise ExportError(f"torch.onnx.export failed for {type(model).__name__}: {_first_line(e)}") from e


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's warnings about unrelated optional packages (torchvision ops) and deprecations."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's notice
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # trace-time input checks (docs/deploy.md)
            yield
    finally:
        logger.setLevel(level)
