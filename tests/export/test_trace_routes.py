"""The routes users take with a module that never ran eagerly: the TorchScript ONNX exporter (``dynamo=False``),
``torch.jit.trace`` and ``torch.jit.script``, for every registered family, checked on another batch size."""

import io
import warnings

import pytest
import torch
from torch import nn

from tests.transforms.family_cases import CASES, build
from torchstn.errors import ExportError
from torchstn.nn import SpatialTransformer

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

pytestmark = pytest.mark.usefixtures("one_thread")
ATOL = 1e-4


def fresh_st(family: str, **kwargs) -> tuple[SpatialTransformer, tuple[int, ...]]:
    """A fresh ST (default ``out_size=None``) with a random head, and its input shape without the batch."""
    shape = (2, 8, 8) if build(family).spatial_rank == 2 else (2, 5, 6, 7)
    torch.manual_seed(0)
    loc = nn.Sequential(nn.Flatten(), nn.Linear(torch.Size(shape).numel(), 8), nn.Tanh())
    st = SpatialTransformer(loc, build(family), in_features=8, **kwargs)
    with torch.no_grad():
        st.head.linear.weight.normal_(0, 0.1)  # away from the identity, so the grid really moves
    return st.eval(), shape


class MeanLoc(nn.Module):
    """A localisation net that takes any spatial size."""

    def forward(self, x):
        return torch.tanh(x.mean((2, 3)))


def size_free_st(family: str) -> SpatialTransformer:
    torch.manual_seed(0)
    st = SpatialTransformer(MeanLoc(), family, in_features=2)
    with torch.no_grad():
        st.head.linear.weight.normal_(0, 0.5)
    return st.eval()


def legacy_export(model, x, path, opset, spatial_axes=False):
    axes = {0: "batch", **({2: "height", 3: "width"} if spatial_axes else {})}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings of trace-time checks, the exporter's deprecation notice
        torch.onnx.export(
            model,
            (x,),
            path,
            dynamo=False,
            opset_version=opset,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": axes, "output": axes},
        )
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run(session, x):
    return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


LEGACY_CASES = [(f, opset) for f in CASES for opset in ((16, 17) if build(f).spatial_rank == 2 else (20,))]


@pytest.mark.parametrize("family,opset", LEGACY_CASES, ids=[f"{f}-{o}" for f, o in LEGACY_CASES])
def test_torchscript_onnx_exporter_writes_the_right_model(family, opset, tmp_path):
    st, shape = fresh_st(family)  # bare ST: the exporter passes return_theta's default positionally
    session = legacy_export(st, torch.rand(3, *shape), tmp_path / "st.onnx", opset)
    x = torch.rand(5, *shape)
    with torch.no_grad():
        assert (run(session, x) - st(x)).abs().max() < ATOL


def test_torchscript_onnx_exporter_keeps_the_localisation_net(tmp_path):
    """The probe's model: it exported as Cast, Constant, GridSample, Cast (a garbage constant grid), off by 0.65."""
    import onnx

    st, shape = fresh_st("affine", out_size=(6, 6))
    model = nn.Sequential(st).eval()
    x = torch.rand(2, *shape)
    session = legacy_export(model, x, tmp_path / "m.onnx", 17)
    ops = {node.op_type for node in onnx.load(tmp_path / "m.onnx").graph.node}
    assert {"Gemm", "GridSample"} <= ops
    with torch.no_grad():
        assert (run(session, x) - model(x)).abs().max() < ATOL


def test_torchscript_onnx_exporter_3d_below_opset_20_raises(tmp_path):
    st, shape = fresh_st("affine3d")
    with pytest.raises(torch.onnx.errors.OnnxExporterError, match="5D"):
        legacy_export(st, torch.rand(2, *shape), tmp_path / "st.onnx", 17)
    assert not (tmp_path / "st.onnx").exists()


@pytest.mark.parametrize("family", CASES)
def test_jit_trace_every_family(family):
    st, shape = fresh_st(family)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(st, torch.rand(3, *shape))  # its check traces twice: both graphs must agree
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)  # a Python autograd Function in the graph could not be saved
    buffer.seek(0)
    x = torch.rand(5, *shape)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(buffer)(x), st(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("family", ["affine", "affine3d"])
def test_jit_trace_of_the_deterministic_sampler_saves(family):
    """The gather-based sampler is a Python autograd Function eagerly; a trace records its plain gather instead."""
    st, shape = fresh_st(family, deterministic=True, padding_mode="border")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(st, torch.rand(3, *shape))
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)  # failed: Could not export Python function call '_GatherRows'
    buffer.seek(0)
    x = torch.rand(5, *shape)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(buffer)(x), st(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("family", ["affine", "projective"])
def test_traced_out_size_follows_the_input(family, tmp_path):
    """``out_size=None`` means the input's size: the trace and the exported file keep it so, on another size."""
    st = size_free_st(family)
    x, other = torch.rand(3, 2, 8, 8), torch.rand(2, 2, 12, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(st, x)
    session = legacy_export(st, x, tmp_path / "st.onnx", 17, spatial_axes=True)
    with torch.no_grad():
        torch.testing.assert_close(traced(other), st(other), atol=1e-6, rtol=0)
        assert (run(session, other) - st(other)).abs().max() < ATOL


def test_traced_tps_refuses_another_size(tmp_path):
    """The TPS basis is per size: the trace fixes it, and another size fails (16x4 has 8x8's pixel count)."""
    st = size_free_st("tps")
    x = torch.rand(3, 2, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(st, x)
    session = legacy_export(st, x, tmp_path / "st.onnx", 17, spatial_axes=True)
    with torch.no_grad():
        torch.testing.assert_close(traced(x[:2]), st(x[:2]), atol=1e-6, rtol=0)
    for other in (torch.rand(2, 2, 12, 10), torch.rand(2, 2, 16, 4)):
        with pytest.raises(RuntimeError, match="expand"):
            traced(other)
        with pytest.raises(Exception, match="(?i)expand"):
            run(session, other)


def test_antialias_is_refused_when_traced(tmp_path):
    st, shape = fresh_st("affine", antialias=True, out_size=(4, 4))
    x = torch.rand(2, *shape)
    with pytest.raises(ExportError, match="antialias=True cannot be traced"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(st, x)  # it traced: pyramid levels frozen from the example input
    with pytest.raises(ExportError, match="antialias=True cannot be traced"):
        legacy_export(st, x, tmp_path / "st.onnx", 17)
    assert not (tmp_path / "st.onnx").exists()


def test_jit_script_is_refused_with_the_way_out():
    st, _ = fresh_st("affine")
    warnings.simplefilter("ignore", DeprecationWarning)
    with pytest.raises(ExportError, match="torch.jit.trace"):
        torch.jit.script(st)
    with pytest.raises(ExportError, match="torch.jit.trace"):
        torch.jit.script(nn.Sequential(nn.Identity(), st))  # also as a submodule


def test_jit_trace_fresh_tps_with_cold_cache():
    """#5: the first of the tracer's two traces built the TPS basis (and the parameter count), the second found them
    cached: 'Graphs differed across invocations'."""
    from torchstn.functional import tps as tps_fn

    tps_fn._DEVICE_CACHE.clear()
    tps_fn._grid_matrix_cpu64.cache_clear()
    st, shape = fresh_st("tps", out_size=(7, 9))
    x = torch.rand(3, *shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(st, x)
    with torch.no_grad():
        torch.testing.assert_close(traced(x[:2]), st(x[:2]), atol=1e-6, rtol=0)


def test_torch_export_with_a_dynamic_spatial_size():
    """check_size rejected the SymInts of a dynamic height/width ('out_size must hold positive ints, got (s76,
    s73)')."""
    dims = ({0: torch.export.Dim("batch"), 2: torch.export.Dim("h", min=2), 3: torch.export.Dim("w", min=2)},)
    st = size_free_st("affine")
    program = torch.export.export(st, (torch.rand(3, 2, 8, 8),), dynamic_shapes=dims)
    other = torch.rand(2, 2, 12, 10)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(other), st(other), atol=1e-6, rtol=0)
    with pytest.raises(Exception, match="Constraints violated"):  # tps: one basis per size, torch says so
        torch.export.export(size_free_st("tps"), (torch.rand(3, 2, 8, 8),), dynamic_shapes=dims)
