"""The base of every architecture: one module tree that runs as the ANN (ReLU) or, after
`dietsnn.convert` swaps each ReLU for a LIF layer, as the SNN."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .. import compact
from ..config import GAMMA, SURROGATE
from ..functional import encoding as _encoding
from ..layers import lif_layers, set_time


class Network(nn.Module):
    """Base of every architecture. `timesteps is None`: an ANN. Otherwise an SNN run for
    `timesteps` steps with `encoding`, whose output layer accumulates over time
    (docs/METHOD.md section 3). An SNN whose `input_dims` is known (4 for images `[B, C, H,
    W]`) also takes time-varying input `[T, B, ...]` (event data): T is then its first dim."""

    input_dims: int | None = None  # dims of one ANN input batch; one more: time-varying input

    def __init__(self) -> None:
        super().__init__()
        self.timesteps: int | None = None
        self.encoding: str = "direct"
        self.config: dict = {}

    def body(self, x: Tensor) -> Tensor:  # the layers, the same code for ANN and SNN
        raise NotImplementedError

    @property
    def is_spiking(self) -> bool:
        return self.timesteps is not None

    def forward(self, x: Tensor) -> Tensor:
        if self.timesteps is None:
            self._check_batch(x)
            return self.body(x)
        h, T, B = self._encode(x)
        try:  # the body inline here: torch.compile traces it as one graph
            with compact.saving_spikes():  # only acts when autograd saves tensors
                out = self.body(h)
        finally:
            set_time(self, None, None)  # the time context lives only during the forward
        out = out.float() if out.dtype in (torch.bfloat16, torch.float16) else out
        if out.shape[0] == B and T > 1:  # never driven by spikes: constant over time
            return out * T
        return out.view(T, B, *out.shape[1:]).sum(0)

    def step_outputs(self, x: Tensor) -> Tensor:
        """The SNN's output at each step, `[T, B, ...]` (`forward` returns their sum over
        time). The network is causal: the first t steps of a run are the run at T=t."""
        if self.timesteps is None:
            raise ValueError("an ANN has no time steps; step_outputs needs a converted SNN")
        h, T, B = self._encode(x)
        try:
            with compact.saving_spikes():
                out = self.body(h)
        finally:
            set_time(self, None, None)
        out = out.float() if out.dtype in (torch.bfloat16, torch.float16) else out
        if out.shape[0] == B and T > 1:
            return out.unsqueeze(0).expand(T, *out.shape)
        return out.view(T, B, *out.shape[1:])

    def _check_batch(self, x: Tensor) -> None:
        if self.input_dims is not None and x.dim() == self.input_dims - 1:
            raise ValueError(self._one_sample(x))

    def _encode(self, x: Tensor) -> tuple[Tensor, int, int]:
        """The body's input for all steps, `[T*B, ...]`, with T and B, the time context set
        (autocast outputs are accumulated in float32 by the callers)."""
        self._check_batch(x)
        if self.input_dims is not None and x.dim() == self.input_dims + 1:  # [T, B, ...]
            T, B = x.shape[:2]
            h = x.flatten(0, 1)
        else:
            T, B = self.timesteps, x.shape[0]
            h = _encoding.ENCODINGS[self.encoding](x, T)
        set_time(self, T, B)
        return h, T, B

    def _one_sample(self, x: Tensor) -> str:
        c = self.config
        shape = (c["input_shape"] if "input_shape" in c else [c["in_channels"], c["image_size"],
                 c["image_size"]] if "in_channels" in c else ["..."])
        return (f"{type(self).__name__} takes a batch of shape [B, {', '.join(map(str, shape))}]"
                f" (B samples), got one sample of shape {list(x.shape)} without the batch "
                "dimension; pass x.unsqueeze(0) for a batch of one")

    def spiking_config(self) -> dict:
        if not self.is_spiking:
            return {}
        first = lif_layers(self)[0][1] if lif_layers(self) else None
        return {
            "timesteps": self.timesteps,
            "encoding": self.encoding,
            "gamma": first.gamma if first else GAMMA,
            "surrogate": first.surrogate if first else SURROGATE,
        }


def init_weights(model: nn.Module) -> None:
    """He-normal convolutions, N(0, 0.01) linear layers; nothing on the meta device (a model
    built there only has shapes)."""
    if any(p.is_meta for p in model.parameters()):
        return
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)


@torch.no_grad()
def example_input(model: Network, batch: int = 1) -> Tensor:
    c = model.config
    device = next(model.parameters(), torch.empty(0)).device
    if "input_shape" in c:  # a converted custom model: the shape of one input sample
        return torch.zeros(batch, *c["input_shape"], device=device)
    return torch.zeros(batch, c["in_channels"], c["image_size"], c["image_size"], device=device)
