"""Fixtures shared by the test packages."""

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
