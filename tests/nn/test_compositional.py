"""CompositionalSpatialTransformer (IC-STN): composition semantics, identity at init, the steps' outputs, errors,
gradcheck, torch.compile, export routes and the training helpers that find its localisation nets."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from torch import nn

import torchstn
from torchstn.errors import ExportError, OptionError, ShapeError
from torchstn.functional import sample
from torchstn.nn import CompositionalSpatialTransformer, SpatialTransformer, composable_families, param_groups

COMPOSABLE = composable_families()


def _shape(family: str) -> tuple[int, ...]:
    return (2, 8, 8) if torchstn.get_transform(family).spatial_rank == 2 else (1, 5, 6, 7)


def _loc(shape, width=16):
    return nn.Sequential(nn.Flatten(), nn.Linear(torch.Size(shape).numel(), width), nn.Tanh())


def _random_cst(family="projective", steps=3, shared=True, seed=0, **kwargs):
    """A module whose heads are away from the identity (so every step moves the warp), and its input shape."""
    torch.manual_seed(seed)
    shape = _shape(family)
    cst = CompositionalSpatialTransformer(
        lambda: _loc(shape), family, steps=steps, shared=shared, in_features=16, **kwargs
    )
    with torch.no_grad():
        for st in cst.predictors:
            st.head.linear.weight.normal_(0, 0.05)
    return cst.eval(), shape


def test_the_composable_families_are_the_matrix_ones():
    assert set(COMPOSABLE) == {
        "affine",
        "attention",
        "similarity",
        "translation",
        "projective",
        "affine3d",
        "attention3d",
        "translation3d",
        "fixed_scale_translation",  # its defaults (scale 1, centre 0) start at the identity
    }


@pytest.mark.parametrize("family", COMPOSABLE)
@pytest.mark.parametrize("steps", [1, 3])
def test_identity_at_init_for_every_family(family, steps):
    shape = _shape(family)
    cst = CompositionalSpatialTransformer(_loc(shape), family, steps=steps, in_features=16)
    U = torch.rand(3, *shape)
    V, M = cst(U, return_theta=True)
    torch.testing.assert_close(V, U, atol=1e-5, rtol=0)
    n = len(shape) - 1
    eye = torch.eye(M.shape[-1])[: M.shape[-2]]
    torch.testing.assert_close(M, eye.expand_as(M), atol=1e-6, rtol=0)
    assert M.shape[-2:] == ((3, 3) if family == "projective" else (n, n + 1))


@pytest.mark.parametrize("family", ["affine", "projective", "similarity", "affine3d"])
def test_one_step_is_a_spatial_transformer_with_the_same_weights(family):
    cst, shape = _random_cst(family, steps=1)
    st = SpatialTransformer(_loc(shape), family, in_features=16)
    st.load_state_dict(cst.predictors[0].state_dict())
    U = torch.rand(4, *shape)
    torch.testing.assert_close(cst(U), st(U), atol=1e-5, rtol=1e-5)


class ConstantLoc(nn.Module):
    """Features that do not depend on the input: every step predicts the same correction (the head's bias)."""

    out_features = 1

    def forward(self, x):
        return x.new_zeros(x.shape[0], 1)


def test_steps_compose_and_resample_the_original_input():
    """Two steps of a one-pixel shift read the input at two pixels (one resampling of U, nothing lost at the
    border), where an ST applied twice to its own output loses the column it shifted out the first time."""
    fam = torchstn.get_transform("affine")
    cst = CompositionalSpatialTransformer(ConstantLoc(), "affine", steps=2)
    shift = fam.translation((2 / 8, 0.0))  # one pixel of an 8-wide image
    with torch.no_grad():
        cst.predictors[0].head.linear.bias.copy_(shift)
    U = torch.rand(2, 1, 8, 8)
    V, mats, views = cst(U, return_steps=True)
    want = torch.zeros_like(U)
    want[..., :6] = U[..., 2:]  # read two pixels to the right, zeros beyond the edge
    torch.testing.assert_close(V, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(mats[:, 1, :, 2], torch.tensor([[4 / 8, 0.0]]).expand(2, 2), atol=1e-6, rtol=0)
    torch.testing.assert_close(views[:, 0], U)  # the first step sees the input itself
    torch.testing.assert_close(views[:, 1], cst.warp(U, mats[:, 0]))


def test_composition_order_follows_compose_affine():
    """The correction of step k warps the view of step k: M_{k+1} = M_k @ matrix(d_k), not the other way."""
    cst, shape = _random_cst("affine", steps=2)
    U = torch.rand(3, *shape)
    _, mats, views = cst(U, return_steps=True)
    st = cst.predictors[0]
    d1 = st.family.matrix(st.predict_theta(views[:, 1]))
    torch.testing.assert_close(mats[:, 1], torchstn.compose_affine(mats[:, 0], d1), atol=1e-6, rtol=1e-6)


def test_theta_init_starts_the_warp():
    cst = CompositionalSpatialTransformer(ConstantLoc(), "projective", steps=2)  # corrections stay the identity
    fam = cst.family
    init = fam.translation((0.25, -0.5)).unsqueeze(0).expand(3, -1).clone()
    init[:, 6] = 0.1  # a perspective term
    U = torch.rand(3, 1, 8, 8)
    V, mats, views = cst(U, init, return_steps=True)
    torch.testing.assert_close(V, sample(U, fam.grid(init, (8, 8))), atol=1e-5, rtol=0)
    torch.testing.assert_close(views[:, 0], V)
    assert torch.allclose(mats[:, -1, 2, 2], torch.ones(3))  # h33 = 1 after every composition
    with pytest.raises(ShapeError, match="theta_init must hold one transform per sample"):
        cst(U, init[:2])
    with pytest.raises(ShapeError, match=r"\(B, 8\)"):
        cst(U, init[:, :6])


def test_shared_ties_one_predictor_and_separate_has_one_per_step():
    shared, _ = _random_cst("affine", steps=4, shared=True)
    separate, _ = _random_cst("affine", steps=4, shared=False)
    one = sum(p.numel() for p in shared.parameters())
    assert len(shared.predictors) == 1 and len(separate.predictors) == 4
    assert sum(p.numel() for p in separate.parameters()) == 4 * one
    # a module given with shared=False is deep-copied: same start, separate weights
    cst = CompositionalSpatialTransformer(_loc((1, 8, 8)), "affine", steps=2, shared=False, in_features=16)
    a, b = (st.localisation[1].weight for st in cst.predictors)
    assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()


def test_param_groups_and_record_theta_find_every_step():
    cst, shape = _random_cst("affine", steps=3, shared=False)
    model = nn.Sequential(cst, nn.Flatten(), nn.Linear(torch.Size(shape).numel(), 2))
    groups = param_groups(model, lr=0.1, loc_lr_mult=0.01)
    assert [len(g["params"]) for g in groups] == [2, 3 * 4]
    with torchstn.record_theta(model) as thetas:
        model(torch.rand(2, *shape))
    assert sorted(len(v) for v in thetas.values()) == [1, 1, 1]


def test_refused_families_and_bad_options_say_why():
    with pytest.raises(OptionError, match="'tps' has no matrix form.*Use a family from"):
        CompositionalSpatialTransformer(_loc((1, 8, 8)), "tps", in_features=16)
    fixed = torchstn.transforms.FixedScaleTranslation(0.5, (0.5, 0.5))
    with pytest.raises(OptionError, match="not the identity map"):
        CompositionalSpatialTransformer(_loc((1, 8, 8)), fixed, in_features=16)
    for bad in (0, 2.0, True):
        with pytest.raises(OptionError, match="steps must be a positive int"):
            CompositionalSpatialTransformer(_loc((1, 8, 8)), steps=bad, in_features=16)
    with pytest.raises(OptionError, match="shared must be True or False"):
        CompositionalSpatialTransformer(_loc((1, 8, 8)), shared="yes", in_features=16)
    with pytest.raises(OptionError, match="must be a torch.nn.Module or a callable"):
        CompositionalSpatialTransformer(3, in_features=16)
    with pytest.raises(OptionError, match="must return a torch.nn.Module"):
        CompositionalSpatialTransformer(lambda: 3, in_features=16)
    with pytest.raises(OptionError, match="Did you mean 'padding_mode'"):
        CompositionalSpatialTransformer(_loc((1, 8, 8)), padding_mod="border", in_features=16)
    with pytest.raises(ShapeError, match="out_size"):
        CompositionalSpatialTransformer(_loc((1, 8, 8)), out_size=(4, 4, 4), in_features=16)


def test_bad_inputs_at_forward():
    cst, shape = _random_cst("affine", steps=2)
    with pytest.raises(ShapeError, match="4-D"):
        cst(torch.rand(2, 1, 5, 6, 7))
    with pytest.raises(torchstn.DTypeError):
        cst(torch.ones(2, *shape, dtype=torch.long))
    bad = torch.rand(2, *shape)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(torchstn.NonFiniteError, match="theta"):
        cst(bad)


def test_out_size_and_another_batch_size_and_state_dict_round_trip():
    cst, shape = _random_cst("similarity", steps=3, out_size=(4, 5))
    U = torch.rand(5, *shape)
    V, mats, views = cst(U, return_steps=True)
    assert V.shape == (5, 2, 4, 5) and views.shape == (5, 3, 2, 8, 8) and mats.shape == (5, 3, 2, 3)
    torch.testing.assert_close(cst(U[:1]), V[:1], atol=1e-6, rtol=1e-6)
    other, _ = _random_cst("similarity", steps=3, out_size=(4, 5), seed=1)
    assert not torch.allclose(other(U), V)
    other.load_state_dict(cst.state_dict())
    torch.testing.assert_close(other(U), V)


def test_gradcheck_through_every_step():
    torch.manual_seed(0)
    cst = CompositionalSpatialTransformer(_loc((1, 5, 5), 4).double(), "projective", steps=3, in_features=4).double()
    with torch.no_grad():
        cst.predictors[0].head.linear.weight.normal_(0, 0.05)
    U = torch.rand(2, 1, 5, 5, dtype=torch.float64, requires_grad=True)
    weight = cst.predictors[0].head.linear.weight
    assert torch.autograd.gradcheck(lambda u, w: cst(u), (U, weight), eps=1e-6, atol=1e-5)


@pytest.mark.usefixtures("one_thread")
def test_compile_fullgraph_matches_eager():
    torch._dynamo.reset()
    cst, shape = _random_cst("projective", steps=2, shared=False)
    U = torch.rand(3, *shape)
    got = torch.compile(cst, backend="eager", fullgraph=True)(U, return_steps=True)
    want = cst(U, return_steps=True)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-6, rtol=1e-6)
    torch._dynamo.reset()


def test_jit_trace_and_torch_export_at_another_batch_size():
    from torchstn.export import export_program

    cst, shape = _random_cst("projective", steps=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(cst, torch.rand(2, *shape))
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
        buffer.seek(0)
        loaded = torch.jit.load(buffer)
    U = torch.rand(5, *shape)
    torch.testing.assert_close(loaded(U), cst(U), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(export_program(cst, torch.rand(3, *shape)).module()(U), cst(U), atol=1e-5, rtol=1e-5)


def test_jit_script_is_refused_with_the_way_out():
    cst, _ = _random_cst("affine", steps=2)
    with pytest.raises(ExportError, match="torch.jit.trace"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's deprecation notice of jit.script
        torch.jit.script(cst)


@pytest.mark.parametrize("family", ["affine", "projective"])
def test_onnx_by_both_exporters(family, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from torchstn.export import check_onnx, export_onnx

    cst, shape = _random_cst(family, steps=3)
    path = export_onnx(cst, torch.rand(2, *shape), tmp_path / "cst.onnx")
    assert check_onnx(path, cst, torch.rand(5, *shape)) < 1e-4
    legacy = tmp_path / "legacy.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            cst,
            (torch.rand(2, *shape),),
            str(legacy),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        )
    session = ort.InferenceSession(str(legacy), providers=["CPUExecutionProvider"])
    U = torch.rand(5, *shape)
    got = torch.from_numpy(session.run(None, {"input": U.numpy()})[0])
    torch.testing.assert_close(got, cst(U).detach(), atol=1e-4, rtol=1e-4)


def test_antialias_is_refused_when_traced():
    cst, shape = _random_cst("affine", steps=2, antialias=True)
    cst(torch.rand(2, *shape))  # eager is fine
    with pytest.raises(ExportError, match="antialias=True"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(cst, torch.rand(2, *shape))
