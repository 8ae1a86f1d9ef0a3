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
