"""torch.compile parity of every paper model (and the 3D experiment's volume model): no graph breaks
(``fullgraph=True``), same outputs and gradients.

The ``eager`` backend checks what Dynamo traces (graph breaks, guards) in a second or two per model; one inductor
case (slow) checks the generated code as well. Timings: ``benchmarks/bench_compile.py``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from torchstn.models import TutorialSTN, build_model, model_spatial_dims

IN_SHAPE, NUM_CLASSES, BATCH = (1, 28, 28), 10, 2
TABLE1_TRANSFORMS = ("affine", "projective", "tps")
# (model, transform, build options): the paper's Table 1 models, the 2xST models, the tutorial STN peer, and the
# options that change the traced code (st_pool, the deterministic sampler)
CASES = [
    ("fcn", None, {}),
    ("cnn", None, {}),
    *[(name, t, {}) for name in ("st_fcn", "st_cnn") for t in TABLE1_TRANSFORMS],
    ("st_fcn_2x", "affine", {}),
    ("st_cnn_2x", "tps", {}),
    ("st_fcn", "projective", {"st_pool": True}),
    ("st_cnn", "affine", {"st_options": {"deterministic": True}}),
    ("tutorial_stn", None, {}),
    ("st3d_cnn", "affine3d", {}),
]
IDS = [f"{n}-{t}" + "".join(f"-{k}" for k in opts) for n, t, opts in CASES]


@pytest.fixture(autouse=True)
def _fresh_dynamo_one_thread(one_thread):
    """A fresh Dynamo cache per test (every model is another instance of the same class: without a reset the
    recompile limit would be reached and later models would silently run eagerly), and one thread."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _in_shape(name):
    return (1, 28, 28, 28) if model_spatial_dims(name) == 3 else IN_SHAPE


def _model(name, transform, opts):
    """The model in eval mode (no dropout) with its transform heads moved off the identity."""
    torch.manual_seed(0)
    model = build_model(name, in_shape=_in_shape(name), num_classes=NUM_CLASSES, transform=transform, **opts).eval()
    heads = [model.fc_loc[2]] if isinstance(model, TutorialSTN) else [st.head.linear for st in model.transformers]
    with torch.no_grad():
        for head in heads:
            head.weight.normal_(0.0, 0.02)
    return model


def _logits_and_grads(fn, model, x):
    """``fn(x)`` (the model or its compiled wrapper) and the gradients of a loss w.r.t. ``model``'s parameters."""
    model.zero_grad(set_to_none=True)
    logits = fn(x)
    F.cross_entropy(logits, torch.arange(x.shape[0]) % NUM_CLASSES).backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _check_parity(model, compiled, x, atol):
    # compiled first: users compile a model that never ran eagerly (a lazily computed value traced inside the
    # compiled region broke fullgraph on Python 3.11); compiled wraps the same module, so the same parameters
    c_logits, c_grads = _logits_and_grads(compiled, model, x)
    logits, grads = _logits_and_grads(model, model, x)
    torch.testing.assert_close(c_logits, logits, atol=atol, rtol=atol)
    assert c_grads.keys() == grads.keys() and len(grads) == len(list(model.parameters()))
    for k in grads:
        torch.testing.assert_close(c_grads[k], grads[k], atol=atol, rtol=atol, msg=lambda m, k=k: f"{k}: {m}")


@pytest.mark.parametrize("name,transform,opts", CASES, ids=IDS)
def test_compiles_without_graph_breaks_and_matches_eager(name, transform, opts):
    model = _model(name, transform, opts)
    x = torch.rand(BATCH, *_in_shape(name), generator=torch.Generator().manual_seed(1))
    compiled = torch.compile(model, backend="eager", fullgraph=True)  # fullgraph: a graph break raises
    _check_parity(model, compiled, x, atol=1e-6)


@pytest.mark.slow
def test_inductor_st_cnn_matches_eager():
    model = _model("st_cnn", "affine", {})
    x = torch.rand(BATCH, *IN_SHAPE, generator=torch.Generator().manual_seed(1))
    _check_parity(model, torch.compile(model, fullgraph=True), x, atol=1e-4)
