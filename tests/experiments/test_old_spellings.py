"""Spellings users know from before the wing (torchstn.train) keep working, with a deprecation message."""

import importlib
import sys

import pytest

from torchstn.experiments import engine


def test_torchstn_train_warns_and_gives_the_engine():
    sys.modules.pop("torchstn.train", None)
    with pytest.warns(DeprecationWarning, match="torchstn.experiments.engine"):
        old = importlib.import_module("torchstn.train")
    assert old.fit is engine.fit and old.TrainConfig is engine.TrainConfig
    assert set(old.__all__) == set(engine.__all__)


def test_old_train_submodules_are_the_engines():
    for name in [m for m in sys.modules if m == "torchstn.train" or m.startswith("torchstn.train.")]:
        del sys.modules[name]
    with pytest.warns(DeprecationWarning):
        from torchstn.train.loop import train_steps
        from torchstn.train.trainer import fit
    from torchstn.experiments.engine import steps, trainer

    assert fit is trainer.fit and train_steps is steps.train_steps


def test_torchstn_viz_warns_and_is_the_wings_viz():
    from torchstn.experiments import viz

    sys.modules.pop("torchstn.viz", None)
    with pytest.warns(DeprecationWarning, match="torchstn.experiments.viz"):
        old = importlib.import_module("torchstn.viz")
    assert old is viz


def test_a_name_that_left_the_library_says_where_it_went():
    import torchstn.data

    with pytest.raises(AttributeError, match="torchstn.experiments.data_figure"):
        torchstn.data.save_samples_figure  # noqa: B018
