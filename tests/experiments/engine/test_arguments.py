"""The run flags the experiments' training commands share (torchstn.experiments.engine.arguments.add_run_options):
one declaration, so ``svhn train``, ``cub train`` and ``reproduce colocalisation`` read them alike."""

from __future__ import annotations

import argparse

import pytest

from torchstn.errors import OptionError
from torchstn.experiments import cub, svhn
from torchstn.experiments.colocalisation import reproduce
from torchstn.experiments.engine.arguments import RUN_OPTIONS, add_run_options, run_keywords, run_overrides


def _flags(parser: argparse.ArgumentParser, *words: str) -> dict[str, argparse.Action]:
    """The actions of the (sub)command ``words`` of ``parser``, by dest."""
    for word in words:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return {a.dest: a for a in parser._actions}


def _spec(action: argparse.Action) -> tuple:
    return (action.option_strings, action.default, action.type, action.nargs, action.help)


def test_the_training_commands_declare_the_run_flags_alike():
    svhn_train, cub_train = _flags(svhn.get_args_parser(), "train"), _flags(cub.get_args_parser(), "train")
    shared = [name for name in RUN_OPTIONS if name in svhn_train and name in cub_train]
    assert set(shared) >= {"seed", "eval_every", "resume", "overwrite", "device", "amp", "quiet"}
    for name in shared:
        assert _spec(svhn_train[name]) == _spec(cub_train[name]), name
    coloc = {a.dest: a for a in reproduce.get_args_parser()._actions}
    assert coloc["threads"].option_strings == svhn_train["threads"].option_strings
    assert (coloc["seed"].type, coloc["seed"].default) == (int, 0)
    assert "sets" in coloc["seed"].help  # its own help: the seed draws the sets there


def test_parsed_run_flags_become_overrides_and_keywords():
    parser = add_run_options(argparse.ArgumentParser())
    args = parser.parse_args(["--seed", "3", "--threads", "2", "--amp", "bf16", "--resume", "--quiet"])
    assert run_overrides(args) == ["run.threads=2", "run.amp=bf16"]
    keywords = run_keywords(args)
    assert keywords == {"seed": 3, "eval_every": 0, "device": "cpu", "resume": True, "overwrite": False, "log": None}
    assert run_overrides(parser.parse_args([])) == []
    assert run_keywords(parser.parse_args([]))["log"] is print


def test_an_unknown_run_option_is_named_with_a_suggestion():
    with pytest.raises(OptionError, match="eval_every"):
        add_run_options(argparse.ArgumentParser(), ("eval_evry",))
