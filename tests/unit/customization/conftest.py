"""What every customization unit test runs under."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny models here (matrices of 32, convolutions of 8 channels) gain nothing from threads; on a busy
    machine threads wait on each other, and one thread keeps every run's sums in one order (exact resume)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
