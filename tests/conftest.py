"""Suite-wide settings."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

# CI runs the fuzzers on a fixed example sequence (a red build is then reproducible); local runs explore.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """The tests run small batched ops, bound by per-op overhead; on a shared 2-core machine a second
    intra-op thread only spin-waits and contends (batched IK measured ~15x slower). Restored after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
