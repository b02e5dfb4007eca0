import os

import pytest
import torch
from hypothesis import settings

# property tests draw the same examples on every run and machine: a failure is reproducible, and
# CI cannot find an example that a local run did not (HYPOTHESIS_PROFILE=explore draws anew)
settings.register_profile("deterministic", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))


@pytest.fixture(autouse=True)
def _seed_and_threads():
    """Every test runs the library's default neuron backend (native C kernels on the CPU where a
    compiler is found: what users get); torch.compile's backend has its own tests."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()  # in-process CLI calls with --threads change it
    yield
    torch.set_num_threads(threads)
