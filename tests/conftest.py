import os

import pytest
import torch

from dietsnn.functional import neuron

FMNIST = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(autouse=True)
def _seed_and_backend():
    torch.manual_seed(0)
    neuron.set_backend("eager")
    yield


def has_fmnist() -> bool:
    return os.path.isfile(os.path.join(FMNIST, "train-images-idx3-ubyte.gz")) or bool(
        os.environ.get("DIETSNN_DATA"))


needs_fmnist = pytest.mark.skipif(not has_fmnist(), reason="Fashion-MNIST not installed")
