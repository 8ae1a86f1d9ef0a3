"""ONNX and torch.export: every registered family exports, and onnxruntime agrees with PyTorch for any batch size."""

import pytest
import torch
from torch import nn

import torchstn
from tests.transforms.family_cases import CASES, build
from torchstn.errors import OptionError, ShapeError
from torchstn.export import ExportError, check_onnx, check_opset, export_onnx, export_program
from torchstn.models import build_model
from torchstn.nn import SpatialTransformer

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

ATOL = 1e-4


def small_st(family: str, **kwargs) -> tuple[SpatialTransformer, tuple[int, ...]]:
    """A SpatialTransformer with a random (not identity) head, and its input shape (C, H, W) or (C, D, H, W)."""
    shape = (2, 8, 8) if build(family).spatial_rank == 2 else (2, 5, 6, 7)
    features = 1
    for s in shape:
        features *= s
    torch.manual_seed(0)
    loc = nn.Sequential(nn.Flatten(), nn.Linear(features, 16), nn.Tanh())
    st = SpatialTransformer(loc, build(family), in_features=16, **kwargs)
    with torch.no_grad():
        for p in st.head.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.1)  # away from the identity, so the grid really moves
    return st.eval(), shape


@pytest.mark.parametrize("family", CASES)
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
    with pytest.raises(ExportError, match="differs from PyTorch by up to") as err:
        export_onnx(Noisy(), torch.rand(2, 1, 4, 4), path)
    assert str(err.value).startswith(f"{path} (not written): ")  # the user's file, not the temporary
    assert not list(tmp_path.iterdir())  # neither the file nor its temporary
    st, shape = small_st("affine")
    export_onnx(st, torch.rand(2, *shape), path)
    with torch.no_grad():
        st.head.linear.bias.add_(0.3)  # the file no longer matches the module
    with pytest.raises(ExportError, match="more than atol"):
        check_onnx(path, st, torch.rand(2, *shape), atol=ATOL)


def test_torchscript_exporter_and_metadata(tmp_path):
    import onnx

    st, shape = small_st("projective")
    path = export_onnx(
        st, torch.rand(1, *shape), tmp_path / "st.onnx", opset=17, dynamo=False, metadata={"input_range": "[0, 1]"}
    )
    assert check_onnx(path, st, torch.rand(4, *shape)) < ATOL
    props = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert props == {
        "torchstn_version": torchstn.__version__,
        "input_layout": "NCHW",
        "input_shape": "batch,2,8,8",
        "input_dtype": "float32",
        "exporter": "torchscript",
        "opset": "17",
        "input_range": "[0, 1]",
    }
    with pytest.raises(OptionError, match="metadata must map str to str"):
        export_onnx(st, torch.rand(2, *shape), tmp_path / "b.onnx", dynamo=False, metadata={"num_classes": 10})
    assert [p.name for p in tmp_path.iterdir()] == ["st.onnx"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_toml):
    """A tiny trained run directory."""
    from torchstn.experiments.cli import main

    tmp = tmp_path_factory.mktemp("tiny")
    config = tmp / "tiny.toml"
    config.write_text(
        tiny_toml(
            **{
                "model.st_pool": None,
                "data.synthetic": 40,
                "optim.lr": None,
                "optim.batch_size": 8,
                "optim.iterations": 2,
                "run.log_every": 1,
            }
        )
    )
    assert main(["train", str(config), "--out", str(tmp / "run"), "--quiet"]) == 0
    return tmp / "run"


def test_cli(run, tmp_path, capsys):
    from torchstn.experiments.cli import main

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


def test_cli_format_from_suffix_metadata_and_messages(run, tmp_path, capsys):
    """#27: --out x.pt2 wrote ONNX into it; the --atol failure named the temporary. #28: the file says what it takes."""
    import onnx

    from torchstn.experiments.cli import main

    assert main(["export", str(run), "-n", "2", "--out", str(tmp_path / "m.pt2")]) == 0
    in_shape = torch.load(run / "last.pt", weights_only=False)["in_shape"]
    assert torch.export.load(tmp_path / "m.pt2").module()(torch.rand(3, *in_shape)).shape == (3, 10)

    assert main(["export", str(run), "-n", "2", "--exporter", "torchscript", "--out", str(tmp_path / "m.onnx")]) == 0
    props = {p.key: p.value for p in onnx.load(tmp_path / "m.onnx").metadata_props}
    assert props["input_range"] == "[0, 1]" and props["num_classes"] == "10" and props["exporter"] == "torchscript"
    assert props["input_shape"] == "batch," + ",".join(map(str, in_shape))
    assert 'name = "st_fcn"' in props["config"] and props["torchstn_version"] == torchstn.__version__

    capsys.readouterr()
    for argv, message in [
        (["--out", str(tmp_path / "m.xyz")], "cannot tell the format from the suffix '.xyz'"),
        (["--format", "pt2", "--out", str(tmp_path / "n.onnx")], "--format pt2 would write pt2 into"),
        (["--format", "pt2", "--opset", "17"], "--opset and --exporter apply to ONNX files only"),
        (
            ["--atol", "1e-12", "--out", str(tmp_path / "tight.onnx")],
            f"{tmp_path / 'tight.onnx'} (not written): onnxruntime differs",
        ),
    ]:
        assert main(["export", str(run), "-n", "2", *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and ".tmp" not in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.pt2"]
