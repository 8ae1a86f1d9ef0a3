"""The TPS rectifier (imported TRBA weights: their frame and kernel) through every export route the families take:
ONNX by both exporters at opset 16 and 17, torch.export, torch.jit.trace; each checked on another batch size and
another input width than the traced one."""

from __future__ import annotations

import io
import warnings

import pytest
import torch

from tests.nn.trba_reference import trba_state_dict
from torchstn.errors import ExportError, OptionError
from torchstn.export import check_onnx, export_onnx, export_program
from torchstn.nn import TPSRectifier, load_trba_tps

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

pytestmark = pytest.mark.usefixtures("one_thread")
ATOL = 1e-4
TRACED, OTHER = (3, 1, 16, 50), (5, 1, 16, 72)  # another batch size and another width


def rectifier() -> TPSRectifier:
    sd = trba_state_dict(channels=(4, 4, 8, 8), fc=8, seed=7)
    return load_trba_tps(sd, out_size=(8, 25)).eval()


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run(session, x):
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


def _moves(rect, x):
    """The rectifier really warps (the export is not checked on a near-identity)."""
    with torch.no_grad():
        plain = torch.nn.functional.interpolate(x, rect.out_size, mode="bilinear")
        return (rect(x) - plain).abs().max() > 0.05


@pytest.mark.parametrize("opset", [16, 17])
def test_torchscript_onnx_exporter_any_batch_and_width(opset, tmp_path):
    rect, x, other = rectifier(), torch.rand(*TRACED), torch.rand(*OTHER)
    assert _moves(rect, other)
    axes = {0: "batch", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            rect,
            (x,),
            tmp_path / "r.onnx",
            dynamo=False,
            opset_version=opset,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": axes, "output": {0: "batch"}},
        )
    with torch.no_grad():
        assert (_run(_session(tmp_path / "r.onnx"), other) - rect(other)).abs().max() < ATOL


@pytest.mark.parametrize("opset", [16, 17])
def test_dynamo_onnx_exporter_any_batch_and_width(opset, tmp_path):
    rect, x, other = rectifier(), torch.rand(*TRACED), torch.rand(*OTHER)
    path = export_onnx(rect, x, tmp_path / "r.onnx", opset=opset)  # dynamic batch, checked on x
    assert check_onnx(path, rect, torch.rand(2, *TRACED[1:])) < ATOL
    dims = ({0: torch.export.Dim("batch"), 3: torch.export.Dim("width", min=16, max=512)},)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(rect, (x,), dynamo=True, opset_version=opset, dynamic_shapes=dims)
    program.save(str(tmp_path / "w.onnx"))
    with torch.no_grad():
        assert (_run(_session(tmp_path / "w.onnx"), other) - rect(other)).abs().max() < ATOL


def test_torch_export_any_batch_and_width():
    rect, x, other = rectifier(), torch.rand(*TRACED), torch.rand(*OTHER)
    two = torch.rand(2, *TRACED[1:])
    with torch.no_grad():
        torch.testing.assert_close(export_program(rect, x).module()(two), rect(two), atol=1e-6, rtol=0)
    dims = ({0: torch.export.Dim("batch"), 3: torch.export.Dim("width", min=16, max=512)},)
    program = torch.export.export(rect, (x,), dynamic_shapes=dims)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(other), rect(other), atol=1e-6, rtol=0)


def test_jit_trace_any_batch_and_width_and_script_is_refused():
    rect, x, other = rectifier(), torch.rand(*TRACED), torch.rand(*OTHER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(rect, x)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
        buffer.seek(0)
        loaded = torch.jit.load(buffer)
    with torch.no_grad():
        torch.testing.assert_close(loaded(other), rect(other), atol=1e-6, rtol=0)
    with pytest.raises(ExportError, match="torch.jit.trace"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(rect)


def test_below_opset_16_is_refused_clearly(tmp_path):
    with pytest.raises(OptionError, match="no GridSample"):
        export_onnx(rectifier(), torch.rand(*TRACED), tmp_path / "r.onnx", opset=15)
    assert not list(tmp_path.iterdir())
