"""``optim.ema``: an exponential moving average of the weights, kept beside training without changing it, resumed
exactly, evaluated and loaded as the run's model."""

import json
import signal

import pytest
import torch

from torchstn.errors import ConfigError
from torchstn.experiments.engine import checkpoint as ckpt
from torchstn.experiments.engine.config import from_dict, resolve, to_dict
from torchstn.experiments.engine.runs import load_run
from torchstn.experiments.engine.signals import TrainingInterrupted
from torchstn.experiments.engine.trainer import config_differences, fit

from ._toy import toy_config, toy_datasets
from .test_interrupt import _Signalling

DECAY = 0.9


def _weights(run_dir):
    return ckpt.load_checkpoint(run_dir / "last.pt")


def test_average_leaves_training_alone_and_follows_the_recurrence(tmp_path):
    """The raw weights of a run with an average are those of the same run without one, bit for bit; the average is
    the recurrence ``a <- d a + (1 - d) w`` over every step's weights, starting from the first step's."""
    iterations = 12
    plain = toy_config(optim={"iterations": iterations})
    averaged = toy_config(optim={"iterations": iterations, "ema": DECAY})
    fit(plain, tmp_path / "plain", progress=False, datasets=toy_datasets())
    fit(averaged, tmp_path / "ema", progress=False, datasets=toy_datasets())
    a, b = _weights(tmp_path / "plain"), _weights(tmp_path / "ema")
    assert "ema" not in a and int(b["ema"]["n_averaged"]) == iterations
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k

    # replay: the weights after each step, from a run that stops after every one
    expected = None
    for step in range(1, iterations + 1):
        fit(plain, tmp_path / "replay", progress=False, datasets=toy_datasets(), stop_after=step, resume="auto")
        w = _weights(tmp_path / "replay")["model"]
        if expected is None:
            expected = {k: v.clone() for k, v in w.items()}
        else:
            for k, v in w.items():
                if v.is_floating_point():
                    expected[k] = DECAY * expected[k] + (1 - DECAY) * v
    for k, v in expected.items():
        if v.is_floating_point():
            torch.testing.assert_close(b["ema"][f"module.{k}"], v, rtol=1e-5, atol=1e-6)
    moved = [k for k, v in expected.items() if v.is_floating_point() and not torch.equal(v, b["model"][k])]
    assert moved  # the average is not the last weights


def test_average_resumes_exactly_after_a_stop(tmp_path):
    cfg = toy_config(optim={"iterations": 20, "ema": DECAY}, run={"checkpoint_every": 5})
    whole = fit(cfg, tmp_path / "whole", progress=False, datasets=toy_datasets())
    stopped = fit(cfg, tmp_path / "cut", progress=False, datasets=toy_datasets(), stop_after=7)
    assert stopped["stopped"] and _weights(tmp_path / "cut")["step"] == 7
    resumed = fit(cfg, tmp_path / "cut", resume=True, progress=False, datasets=toy_datasets())
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    for k, v in a["ema"].items():
        assert torch.equal(v, b["ema"][k]), k
    assert resumed["test_error"] == whole["test_error"] and resumed["test_error_raw"] == whole["test_error_raw"]


def test_the_average_is_the_runs_model(tmp_path):
    """result.json's test_error is the average's, test_error_raw the raw weights'; load_run gives the average (what
    ``torchstn evaluate``, ``show`` and ``export`` read), ``raw=True`` the optimiser's weights."""
    cfg = toy_config(optim={"iterations": 30, "ema": 0.8})
    out = tmp_path / "run"
    result = fit(cfg, out, progress=False, datasets=toy_datasets())
    assert json.loads((out / "result.json").read_text())["test_error_raw"] == result["test_error_raw"]
    _, model, payload = load_run(out)
    _, raw_model, _ = load_run(out, raw=True)
    for k, v in raw_model.state_dict().items():
        assert torch.equal(v, payload["model"][k]), k
    for k, v in model.state_dict().items():
        assert torch.equal(v, payload["ema"][f"module.{k}"]), k
    images, labels = toy_datasets()[1].batch(torch.arange(128))
    with torch.no_grad():
        error = 100.0 * (model(images).argmax(1) != labels).float().mean().item()
        raw_error = 100.0 * (raw_model(images).argmax(1) != labels).float().mean().item()
    assert error == pytest.approx(result["test_error"], abs=1e-6)
    assert raw_error == pytest.approx(result["test_error_raw"], abs=1e-6)


def test_runs_without_the_key_keep_no_average_and_still_match(tmp_path):
    """A run saved before ``optim.ema`` existed (no key) reads as one without an average, so it still resumes and
    is reused under today's config; a bad decay is refused with what is expected."""
    saved = to_dict(resolve(toy_config()))
    del saved["optim"]["ema"]
    old = from_dict(saved)
    assert old.optim.ema == 0.0 and config_differences(old, toy_config()) == []
    assert config_differences(old, toy_config(optim={"ema": 0.99})) == ["optim.ema"]
    for bad in (1.0, -0.5):
        with pytest.raises(ConfigError, match=r"optim.ema is a decay in \[0, 1\)"):
            toy_config(optim={"ema": bad})


@pytest.mark.usefixtures("one_thread", "foreground_signals")
@pytest.mark.parametrize("where", ["training", "raw evaluation"])
def test_a_real_sigterm_keeps_the_average_exact(tmp_path, where):
    """SIGTERM from inside an iteration, or inside the final evaluation of the raw weights (the second evaluation an
    averaged run makes): the resumed run's average, errors and result equal the uninterrupted run's."""
    cfg = toy_config(optim={"iterations": 10, "ema": DECAY}, run={"eval_batch_size": 16, "checkpoint_every": 100})
    whole = fit(cfg, tmp_path / "a", progress=False, datasets=toy_datasets())
    train, test = toy_datasets()
    if where == "training":
        data = (_Signalling(train, at=6, sig=signal.SIGTERM), test)
    else:  # the final evaluation reads 8 batches of 16 for the average, then 8 for the raw weights
        data = (train, _Signalling(test, at=8 + 2, sig=signal.SIGTERM))
    with pytest.raises(TrainingInterrupted) as info:
        fit(cfg, tmp_path / "b", progress=False, datasets=data)
    saved = _weights(tmp_path / "b")
    assert info.value.saved and saved["step"] == (6 if where == "training" else 10) and not saved["final"]
    assert not (tmp_path / "b" / "result.json").exists()
    resumed = fit(cfg, tmp_path / "b", resume=True, progress=False, datasets=toy_datasets())
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(v, b["ema"][k]) for k, v in a["ema"].items())
    assert (resumed["test_error"], resumed["test_error_raw"]) == (whole["test_error"], whole["test_error_raw"])
