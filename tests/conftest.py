
import pytest
import torch

from dietsnn.functional import neuron


@pytest.fixture(autouse=True)
def _seed_and_backend():
    torch.manual_seed(0)
    threads = torch.get_num_threads()  # in-process CLI calls with --threads change it
    with neuron.use_backend("eager"):  # fast to start; the compiled backend has its own tests
        yield
    torch.set_num_threads(threads)
