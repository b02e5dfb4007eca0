"""Pure tensor functions: neuron dynamics, surrogates, encoders, energy math."""

from . import encoding, energy, neuron, surrogate
from .neuron import lif, lif_forward, lif_reference, spike

__all__ = ["lif", "lif_forward", "lif_reference", "spike", "neuron", "surrogate", "encoding", "energy"]
