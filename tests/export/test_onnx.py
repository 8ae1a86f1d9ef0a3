"""ONNX and torch.export: every registered family exports, and onnxruntime agrees with PyTorch for any batch size."""

import pytest
import torch
from torch import nn

from torchstn.errors import OptionError, ShapeError
from torchstn.export import ExportError, check_onnx, check_opset, export_onnx, export_program
from torchstn.models import build_model
from torchstn.nn import SpatialTransformer
from torchstn.transforms import get_transform, list_transforms

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

ATOL = 1e-4


def small_st(family: str, **kwargs) -> tuple[SpatialTransformer, tuple[int, ...]]:
    """A SpatialTransformer with a random (not identity) head, and its input shape (C, H, W) or (C, D, H, W)."""
    shape = (2, 8, 8) if get_transform(family).spatial_rank == 2 else (2, 5, 6, 7)
    features = 1
    for s in shape:
        features *= s
    torch.manual_seed(0)
    loc = nn.Sequential(nn.Flatten(), nn.Linear(features, 16), nn.Tanh())
    st = SpatialTransformer(loc, family, in_features=16, **kwargs)
    with torch.no_grad():
        for p in st.head.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.1)  # away from the identity, so the grid really moves
    return st.eval(), shape


@pytest.mark.parametrize("family", list_transforms())
def test_every_family_exports_with_dynamic_batch(family, tmp_path):
    st, shape = small_st(family)
    path = export_onnx(st, torch.rand(3, *shape), tmp_path / "st.onnx")  # checks batch 3 within ATOL itself
    assert [p.name for p in tmp_path.iterdir()] == ["st.onnx"]  # no temporary left behind
    assert check_onnx(path, st, torch.rand(5, *shape)) < ATOL  # a batch size it was not traced with
    x = torch.rand(4, *shape)
    assert torch.allclose(export_program(st, torch.rand(3, *shape)).module()(x), st(x), atol=1e-6)


def test_opset_16_for_2d_and_batch_of_one(tmp_path):
    st, shape = small_st("tps", mode="bicubic", padding_mode="fill", fill_value=0.5)
    path = export_onnx(st, torch.rand(1, *shape), tmp_path / "st.onnx", opset=16)
    assert check_onnx(path, st, torch.rand(6, *shape)) < ATOL


def test_paper_model(tmp_path):
    model = build_model("st_cnn", in_shape=(1, 28, 28), num_classes=10, transform="affine")
    path = export_onnx(model, torch.rand(2, 1, 28, 28), tmp_path / "st_cnn.onnx")
    assert check_onnx(path, model, torch.rand(7, 1, 28, 28)) < ATOL
    assert model.training  # export traced in eval mode and gave the mode back


def test_errors(tmp_path):
    st, shape = small_st("affine")
    with pytest.raises(OptionError, match="no GridSample"):
        export_onnx(st, torch.rand(2, *shape), tmp_path / "a.onnx", opset=13)
    with pytest.raises(OptionError, match="5-D inputs from opset 20"):
        check_opset(18, spatial_rank=3)
    with pytest.raises(OptionError, match="must be an int"):
        check_opset("20")
    with pytest.raises(ShapeError, match="4-D or 5-D"):
        export_onnx(st, torch.rand(2, 8, 8), tmp_path / "a.onnx")
    aa, _ = small_st("affine", antialias=True)
    with pytest.raises(ExportError, match="antialias=True"):
        export_onnx(aa, torch.rand(2, *shape), tmp_path / "a.onnx")
    with pytest.raises(ExportError, match="antialias=True"):
        export_program(aa, torch.rand(2, *shape))
    assert not list(tmp_path.iterdir())


class Noisy(nn.Module):
    """Exports fine, but ONNX's random numbers are not PyTorch's: the check must fail."""

    def forward(self, x):
        return x + torch.rand_like(x)


def test_failed_check_leaves_no_file(tmp_path):
    path = tmp_path / "noisy.onnx"
    with pytest.raises(ExportError, match="differs from PyTorch by up to"):
        export_onnx(Noisy(), torch.rand(2, 1, 4, 4), path)
    assert not list(tmp_path.iterdir())  # neither the file nor its temporary
    st, shape = small_st("affine")
    export_onnx(st, torch.rand(2, *shape), path)
    with torch.no_grad():
        st.head.linear.bias.add_(0.3)  # the file no longer matches the module
    with pytest.raises(ExportError, match="more than atol"):
        check_onnx(path, st, torch.rand(2, *shape), atol=ATOL)


TINY = """
[model]
name = "st_fcn"
transform = "affine"
hidden = [16, 16]

[data]
variant = "RTS"
synthetic = 40

[optim]
schedule = "cpu"
batch_size = 8
iterations = 2
warmup = 0

[run]
threads = 1
log_every = 1
"""


def test_cli(tmp_path, capsys):
    from torchstn.cli import main

    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run), "--quiet"]) == 0

    assert main(["export", str(run), "-n", "4"]) == 0
    out = capsys.readouterr().out
    assert (run / "last.onnx").stat().st_size > 1000
    assert "max abs diff" in out and str(run / "last.onnx") in out

    assert main(["export", str(run / "last.pt"), "--module", "st", "--out", str(tmp_path / "st.onnx")]) == 0
    assert (tmp_path / "st.onnx").is_file()
    assert main(["export", str(run), "--format", "pt2"]) == 0
    in_shape = torch.load(run / "last.pt", weights_only=False)["in_shape"]
    assert torch.export.load(run / "last.pt2").module()(torch.rand(3, *in_shape)).shape == (3, 10)

    capsys.readouterr()
    assert main(["export", str(run), "--opset", "12"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("torchstn export: error: opset 12 has no GridSample") and "Traceback" not in err
