"""Fixtures shared by the test packages."""

import signal

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run the test on one torch thread, then restore the count: small nets run faster on one thread, and tests do
    not fight other processes (pytest workers, training jobs) for the cores. Use it per module with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


#: The tiny training run the CLI and export tests start from: an ST-FCN on synthetic RTS digits (no MNIST download),
#: a few ms per iteration on one thread.
TINY_RUN = {
    "model": {"name": "st_fcn", "transform": "affine", "hidden": [16, 16], "st_pool": True},
    "data": {"variant": "RTS", "synthetic": 120},
    "optim": {"schedule": "cpu", "lr": 0.005, "batch_size": 16, "iterations": 6, "warmup": 0},
    "run": {"threads": 1, "log_every": 2},
}


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


@pytest.fixture(scope="session")
def tiny_toml():
    """``tiny_toml(**{"optim.iterations": 2, "model.st_pool": None})``: the TOML text of :data:`TINY_RUN` with
    dotted keys replaced (``None`` drops a key)."""

    def make(**overrides) -> str:
        sections = {name: dict(values) for name, values in TINY_RUN.items()}
        for key, value in overrides.items():
            section, _, name = key.partition(".")
            sections.setdefault(section, {})[name] = value
        return "\n".join(
            f"[{name}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in values.items() if v is not None)
            for name, values in sections.items()
        )

    return make


@pytest.fixture
def foreground_signals():
    """SIGINT and SIGTERM as in a foreground Python process for the test, restored after: pytest started as a
    background job (``cmd &`` in a script, some CI runners) has SIGINT ignored, which the trainer respects."""
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGINT, before[0])
    signal.signal(signal.SIGTERM, before[1])
