"""Tests for the CUB models (torchstn.experiments.cub.models): parts, gradients, optimiser groups, backbones and
their registry, and the part drawing of ``torchstn cub show``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.fixtures import make_cub
from torchstn.errors import ConfigError, DataError, OptionError
from torchstn.experiments.cub.models import (
    BACKBONES,
    CUB_MODELS,
    build_backbone,
    cub_cnn,
    cub_param_groups,
    cub_st_cnn,
    list_backbones,
    register_backbone,
    tiny_backbone,
)
from torchstn.models.registry import build_model, list_models

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _perturb_heads(model: nn.Module) -> None:
    with torch.no_grad():
        for st in model.transformers:
            st.head.linear.weight.normal_(0.0, 1e-3)


def _missing_grads(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]


def test_registered_under_their_names():
    assert set(CUB_MODELS) <= set(list_models())
    assert build_model("cub_cnn", in_shape=(3, 32, 32), num_classes=3)(torch.rand(2, 3, 32, 32)).shape == (2, 3)
    with pytest.raises(OptionError, match="Did you mean 'num_parts'"):
        build_model("cub_st_cnn", in_shape=(3, 32, 32), num_classes=3, num_part=4)


def test_backbone_registry():
    assert "tiny" in list_backbones() and list_backbones() == BACKBONES.names()
    with pytest.raises(OptionError, match="already registered"):
        register_backbone("tiny", pretrained=False)(tiny_backbone)
    with pytest.raises(OptionError, match="Did you mean 'width'"):
        build_backbone("tiny", widht=4)
    with pytest.raises(OptionError, match=r"torchvision:<arch>"):
        build_backbone("resnet50")


def test_cub_parts_start_tiled_and_crop_exactly():
    model = cub_st_cnn((3, 64, 64), 3, num_parts=4, part_size=32, loc_size=32, backbone_options={"width": 4})
    assert [st.family.centre for st in model.transformers] == [(-0.5, -0.5), (0.5, -0.5), (-0.5, 0.5), (0.5, 0.5)]
    x = torch.rand(2, 3, 64, 64)
    feats = model.localisation_features(x)
    quads = [x[..., :32, :32], x[..., :32, 32:], x[..., 32:, :32], x[..., 32:, 32:]]
    for st, q in zip(model.transformers, quads):  # half-size windows read at 1:1: the quadrants, exactly
        torch.testing.assert_close(st(x, loc_input=feats), q, atol=1e-5, rtol=0)
    assert model(x).shape == (2, 3) and model.part_boxes(x).shape == (2, 4, 4)
    assert [st.family.centre for st in cub_st_cnn((3, 64, 64), 3, part_size=32).transformers] == [(-0.5, 0), (0.5, 0)]
    assert cub_cnn((3, 32, 32), 5)(torch.rand(2, 3, 32, 32)).shape == (2, 5)


def test_every_cub_parameter_gets_a_gradient_and_loc_lr_groups():
    torch.manual_seed(0)
    model = cub_st_cnn((3, 64, 64), 3, part_size=32, loc_size=32, dropout=0.0, backbone_options={"width": 4})
    x, y = torch.rand(2, 3, 64, 64), torch.tensor([0, 2])
    _perturb_heads(model)
    F.cross_entropy(model(x), y).backward()
    assert _missing_grads(model) == []  # the shared localisation backbone included
    base, loc = cub_param_groups(model, 0.1, 1e-4, weight_decay=1e-5)
    loc_ids = {id(p) for p in loc["params"]}
    assert loc["lr"] == pytest.approx(1e-5) and loc["weight_decay"] == 1e-5
    assert loc_ids == {id(p) for m in (model.localisation, *model.transformers) for p in m.parameters()}
    assert not loc_ids & {id(p) for p in base["params"]}
    assert len(loc["params"]) + len(base["params"]) == len(list(model.parameters()))


def test_cub_models_overfit_fixture_images(tmp_path):
    pytest.importorskip("PIL")
    pytest.importorskip("numpy")
    from torchstn.experiments.cub.data import CUBDataset

    root, _, _ = make_cub.make_cub(tmp_path)
    data = CUBDataset(root, "train", size=64, augment=False)
    x, y = torch.stack([data[i][0] for i in range(len(data))]), torch.tensor([data[i][1] for i in range(len(data))])
    for make in (
        lambda: cub_cnn((3, 64, 64), 3, dropout=0.0, backbone_options={"width": 8}),
        lambda: cub_st_cnn((3, 64, 64), 3, part_size=32, loc_size=32, dropout=0.0, backbone_options={"width": 8}),
    ):
        torch.manual_seed(0)
        model = make()
        opt = torch.optim.Adam(cub_param_groups(model, 3e-3, 0.1))
        losses = []
        for _ in range(30):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < losses[0] / 2, losses[::6]


def test_pretrained_backbones_need_weights(tmp_path):
    name = "_test_pretrained_tiny"
    if name not in list_backbones():
        register_backbone(name)(lambda width=4: tiny_backbone(width))
    assert BACKBONES.info(name) == {"pretrained": True} and BACKBONES.info("tiny") == {"pretrained": False}
    with pytest.raises(ConfigError, match="weights=PATH.*allow_random_init=True"):
        build_backbone(name)
    with pytest.raises(ConfigError, match="weights=PATH"):
        build_model("cub_cnn", in_shape=(3, 32, 32), num_classes=3, backbone=name)
    with pytest.warns(UserWarning, match="RANDOM initialisation"):
        build_backbone(name, allow_random_init=True)
    source, _ = tiny_backbone(4)
    torch.save({"state_dict": source.state_dict()}, tmp_path / "w.pt")
    net, dim = build_backbone(name, weights=tmp_path / "w.pt")
    assert dim == 8 and all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), source.state_dict().values()))
    with pytest.raises(DataError, match="not found"):
        build_backbone(name, weights=tmp_path / "missing.pt")
    torch.save(tiny_backbone(2)[0].state_dict(), tmp_path / "small.pt")
    with pytest.raises(DataError, match="does not match"):
        build_backbone(name, weights=tmp_path / "small.pt")  # wrong shapes
    torch.save({"other": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(DataError, match="missing keys"):
        build_backbone(name, weights=tmp_path / "other.pt")
    with pytest.raises(OptionError, match="Did you mean 'tiny'"):
        build_backbone("tiyn")


@pytest.mark.parametrize("lib", ["torchvision", "timm"])
def test_library_backbones_are_optional(lib):
    if importlib.util.find_spec(lib) is not None:
        pytest.skip(f"{lib} is installed")
    with pytest.raises(ImportError, match=f"pip install {lib}"):
        build_backbone(f"{lib}:resnet50", allow_random_init=True)


def test_draw_part_boxes_puts_the_boxes_where_they_are():
    pytest.importorskip("PIL")
    pytest.importorskip("numpy")
    from PIL import Image

    from torchstn.experiments.cub import draw_part_boxes

    out = draw_part_boxes(
        torch.zeros(1, 3, 16, 16),
        torch.tensor([[[-1.0, -1.0, 0.0, 0.0]]]),
        Path(__import__("tempfile").mkdtemp()) / "b.png",
    )
    grey = Image.open(out).convert("L").tobytes()
    img = torch.frombuffer(bytearray(grey), dtype=torch.uint8).view(20, 20)[2:18, 2:18]  # the 16x16 tile
    lit = img > 0
    assert lit[0, :8].all() and lit[:8, 0].all() and lit[7, :8].all() and lit[:8, 7].all()  # top-left quadrant
    assert not lit[9:, :].any() and not lit[:, 9:].any()
