"""Pure tensor functions: neuron dynamics and operators, surrogates, encoders, energy math."""

from . import dropout, encoding, energy, engine, neuron, ops, surrogate
from .neuron import lif, lif_forward, lif_reference, spike

__all__ = ["lif", "lif_forward", "lif_reference", "spike", "engine", "neuron", "ops", "surrogate",
           "encoding", "energy", "dropout"]
