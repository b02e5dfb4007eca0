import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    """Every test runs the library's default neuron backend (native C kernels on the CPU where a
    compiler is found: what users get); torch.compile's backend has its own tests."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()  # in-process CLI calls with --threads change it
    yield
    torch.set_num_threads(threads)
