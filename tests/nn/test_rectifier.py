"""The TPS text rectifier: the RARE preset's geometry, any input width, a state_dict free of size-dependent buffers,
and the TRBA importer against an independent reference written from the published formulas."""

from __future__ import annotations

import pytest
import torch

import torchstn
from tests.nn.trba_reference import PREFIX, reference_trba_tps, trba_state_dict
from torchstn.errors import DataError, OptionError, ShapeError
from torchstn.nn import TPSRectifier, load_trba_tps, rare_initial_points, text_localisation, trba_tps_key_map

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = {"channels": (4, 4, 8, 8), "fc": 8}


def test_rare_preset_geometry():
    rect = TPSRectifier.rare(**TINY)
    assert rect.family.layout == (2, 10) and rect.family.num_params == 40
    assert rect.out_size == (32, 100) and rect.padding_mode == "border" and rect.mode == "bilinear"
    fid = rect.fiducial_points()  # (20, 2): top row at y = -1, bottom row at y = 1
    x = torch.linspace(-1, 1, 10)
    torch.testing.assert_close(
        fid, torch.cat((torch.stack((x, -torch.ones(10)), 1), torch.stack((x, torch.ones(10)), 1)))
    )
    start = rare_initial_points(20)  # Fig. 6(a): a slanted band, the identity it is not
    torch.testing.assert_close(start[:10, 1], torch.linspace(0, -1, 10))
    torch.testing.assert_close(start[10:, 1], torch.linspace(1, 0, 10))
    torch.testing.assert_close(start[:, 0], torch.cat((x, x)))
    torch.testing.assert_close(rect.head.linear.bias, start.reshape(-1))
    assert not rect.head.linear.weight.any()
    U = torch.rand(2, 1, 20, 60)  # the untrained rectifier reads the input through the TPS of those points
    want = torchstn.sample(U, rect.family.grid(start.reshape(1, -1).expand(2, -1), (32, 100)), padding_mode="border")
    torch.testing.assert_close(rect(U), want)
    for bad in (7, 4, 21, True):
        with pytest.raises(OptionError, match="even int >= 6"):
            TPSRectifier.rare(num_fiducial=bad, **TINY)
    with pytest.raises(OptionError, match="init"):
        TPSRectifier(text_localisation(1, **TINY), init="rar")


def test_identity_init_resamples_the_input_and_any_width_works():
    rect = TPSRectifier(text_localisation(3, **TINY), out_size=(16, 48), init="identity").eval()
    U = torch.rand(2, 3, 16, 48)
    torch.testing.assert_close(rect(U), U, atol=1e-5, rtol=0)  # float32 rounding of a 48-wide grid
    for width in (30, 100, 257):  # any input width; the output size stays
        assert rect(torch.rand(3, 3, 16, width)).shape == (3, 3, 16, 48)
    with pytest.raises(ShapeError, match=r"\(B, C, H, W\)"):
        rect(torch.rand(3, 16, 48))
    with pytest.raises(ShapeError, match="loc_input must hold batch 2"):
        rect(U, torch.rand(3, 3, 16, 48))


def test_state_dict_holds_no_size_dependent_buffer():
    a = TPSRectifier.rare(**TINY, out_size=(32, 100))
    keys = set(a.state_dict())
    assert {k for k in keys if not k.startswith("localisation.")} == {"head.linear.weight", "head.linear.bias"}
    b = TPSRectifier.rare(**TINY, out_size=(16, 200))  # another output size loads the same weights
    b.load_state_dict(a.state_dict())
    assert all(v.numel() < 1000 or k.endswith("weight") for k, v in a.state_dict().items())


def test_key_map_covers_every_trba_tps_tensor_but_the_size_dependent_buffers():
    sd = trba_state_dict()
    theirs = {k[len(PREFIX) :] for k in sd if k.startswith(PREFIX)}
    assert theirs - set(trba_tps_key_map()) == {"GridGenerator.inv_delta_C", "GridGenerator.P_hat"}
    assert set(trba_tps_key_map().values()) == set(TPSRectifier.rare(**TINY).state_dict())


@pytest.mark.parametrize("in_size", [(32, 100), (32, 140), (24, 64)])
def test_imported_trba_weights_reproduce_the_reference(in_size):
    """Max abs difference from the float64 reference (images in [0, 1]): float64 module < 1e-9, float32 module
    < 5e-5; with the exact kernel (``kernel_eps=0``) against the reference's exact kernel < 1e-9, and against their
    ``r^2 log(r + 1e-6)`` between 1e-6 and 1e-4 (docs/tps.md has the measured numbers)."""
    sd = trba_state_dict(seed=1)
    x = torch.rand(3, 1, *in_size, generator=torch.Generator().manual_seed(2))
    want = reference_trba_tps(sd, x, (32, 100))
    exact = reference_trba_tps(sd, x, (32, 100), eps=0.0)
    rect = load_trba_tps(sd).eval()
    assert rect.theta_align_corners and rect.family.layout == (2, 10) and rect.family.kernel_eps == 1e-6
    with torch.no_grad():
        got32 = rect(x)
        got64 = rect.double()(x.double())
        ours_exact = load_trba_tps(sd, kernel_eps=0.0).double().eval()(x.double())
    assert (got64 - want).abs().max() < 1e-9
    assert (got32.double() - want).abs().max() < 5e-5
    assert (ours_exact - exact).abs().max() < 1e-9
    assert 1e-6 < (ours_exact - want).abs().max() < 1e-4
    moved = (want - torch.nn.functional.interpolate(x.double(), (32, 100), mode="bilinear")).abs().max()
    assert moved > 0.1  # the points really moved: the comparison is not of two near-identities


def test_the_frame_matters_and_the_importer_absorbs_it():
    """Read in torchstn's own frame (theta_align_corners=False) the same weights give another picture."""
    sd = trba_state_dict(seed=3)
    x = torch.rand(2, 1, 32, 100)
    want = reference_trba_tps(sd, x)
    ours = load_trba_tps(sd, theta_align_corners=False).eval()
    with torch.no_grad():
        assert (ours.double()(x.double()) - want).abs().max() > 1e-3


def test_importer_options_and_other_shapes():
    sd = trba_state_dict(num_fiducial=12, in_channels=3, seed=4)
    rect = load_trba_tps(sd, out_size=(16, 40)).eval()
    assert rect.family.layout == (2, 6) and rect.out_size == (16, 40)
    x = torch.rand(2, 3, 20, 50)
    with torch.no_grad():
        assert (rect.double()(x.double()) - reference_trba_tps(sd, x, (16, 40))).abs().max() < 1e-9
    bare = {k[len(PREFIX) :]: v for k, v in sd.items() if k.startswith(PREFIX)}  # saved without DataParallel
    assert load_trba_tps(bare).family.layout == (2, 6)


def test_importer_errors():
    sd = trba_state_dict()
    with pytest.raises(DataError, match="found no key"):
        load_trba_tps({"module.FeatureExtraction.w": torch.zeros(1)})
    two = {**sd, **{"model2." + k[len("module.") :]: v for k, v in sd.items()}}
    with pytest.raises(DataError, match="found 2 keys.*pass prefix="):
        load_trba_tps(two)
    assert load_trba_tps(two, prefix=PREFIX).family.layout == (2, 10)
    lacking = {k: v for k, v in sd.items() if "conv.5.running_var" not in k}
    with pytest.raises(DataError, match=r"lack \['module.Transformation.LocalizationNetwork.conv.5.running_var'\]"):
        load_trba_tps(lacking)
    odd = dict(sd)
    odd[PREFIX + "LocalizationNetwork.localization_fc2.weight"] = torch.zeros(21, 32)
    with pytest.raises(DataError, match=r"must be \(2F, features\)"):
        load_trba_tps(odd)
    bad_fc1 = dict(sd)
    bad_fc1[PREFIX + "LocalizationNetwork.localization_fc1.0.weight"] = torch.zeros(32, 7)
    with pytest.raises(DataError, match="do not fit the layout"):
        load_trba_tps(bad_fc1)


def test_gradients_reach_every_parameter_and_compile_matches():
    torch.manual_seed(0)
    rect = TPSRectifier.rare(**TINY, out_size=(8, 24))
    with torch.no_grad():
        rect.head.linear.weight.normal_(0, 1e-2)
    out = rect(torch.rand(2, 1, 16, 40))
    (out * torch.randn_like(out)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in rect.parameters())
    rect.eval()
    x = torch.rand(2, 1, 16, 40)
    torch._dynamo.reset()
    compiled = torch.compile(rect, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), rect(x), atol=1e-6, rtol=1e-6)
    torch._dynamo.reset()
