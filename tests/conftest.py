
import pytest
import torch

from dietsnn.functional import neuron


@pytest.fixture(autouse=True)
def _seed_and_backend():
    torch.manual_seed(0)
    with neuron.use_backend("eager"):  # fast to start; the compiled backend has its own tests
        yield
