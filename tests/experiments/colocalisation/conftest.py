"""Fixtures of the co-localisation tests: a tiny encoder run trained by the engine, and tiny case configs."""

import pytest

from torchstn.experiments.colocalisation import ENCODER_CONFIG, case_config
from torchstn.experiments.engine.config_io import load_config
from torchstn.experiments.engine.trainer import fit

#: Synthetic digits for the sets (20 of each class) and the encoder: no MNIST download.
SYNTHETIC = 200


@pytest.fixture(scope="session")
def encoder_run(tmp_path_factory):
    """The run directory of a tiny encoder: the packaged ``colocalisation_encoder`` config with 4/4 channels, 30
    iterations on synthetic digits (about a second)."""
    out = tmp_path_factory.mktemp("coloc") / "encoder"
    cfg = load_config(
        ENCODER_CONFIG, [f"data.synthetic={SYNTHETIC}", "model.channels=[4, 4]", "optim.iterations=30", "run.threads=1"]
    )
    fit(cfg, out, progress=False)
    return out


@pytest.fixture
def tiny_case(encoder_run):
    """``tiny_case(digit=3, clutter=False, steps=12, n=16, sets=())``: the config of a tiny case (16 synthetic
    images, log every 2 steps, checkpoint every 4, one thread) with ``--set`` style ``sets``."""

    def make(digit=3, clutter=False, steps=12, n=16, sets=()):
        items = ["run.log_every=2", "run.checkpoint_every=4", "run.threads=1", *sets]
        return case_config(digit, clutter, encoder=encoder_run, steps=steps, n=n, synthetic=SYNTHETIC, overrides=items)

    return make
