"""Architectures, defined once. Each builds the ANN (ReLU); `ann_to_snn` turns the same module
tree into the SNN by swapping every ReLU for a LIF layer. `Network.forward` runs either."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from . import compact
from .functional import encoding as _encoding
from .modules import AvgPool2d, Dropout, lif_layers, set_time

# 3x3 convs (int = output channels), "A" = 2x2 average pooling.
VGG_FEATURES: dict[str, list[int | str]] = {
    "vgg_small": [32, "A", 64, 64, "A"],
    "vgg5": [64, "A", 128, 128, "A"],
    "vgg9": [64, "A", 128, 256, "A", 256, 512, "A", 512, "A", 512],
    "vgg11": [64, "A", 128, 256, "A", 512, 512, "A", 512, "A", 512, 512],
    "vgg16": [64, 64, "A", 128, 128, "A", 256, 256, 256, "A", 512, 512, 512, "A", 512, 512, 512],
}
VGG_HIDDEN: dict[str, list[int]] = {"vgg_small": [256], "vgg5": [1024, 1024]}
DEFAULT_HIDDEN = [4096, 4096]
# basic blocks per stage (dietsnn.resnet): the paper's ResNet20 and a ResNet34 of the same rules
RESNET_BLOCKS: dict[str, tuple[int, ...]] = {"resnet20": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}


class Network(nn.Module):
    """Base of every architecture. `timesteps is None`: an ANN. Otherwise an SNN run for
    `timesteps` steps with `encoding`, whose output layer accumulates over time (SPEC 3)."""

    def __init__(self) -> None:
        super().__init__()
        self.timesteps: int | None = None
        self.encoding: str = "direct"
        self.config: dict = {}

    def body(self, x: Tensor) -> Tensor:  # the layers, the same code for ANN and SNN
        raise NotImplementedError

    def units(self) -> list[nn.Module]:
        """Top-level layers in execution order (for layer-by-layer calibration and analysis)."""
        raise NotImplementedError

    @property
    def is_spiking(self) -> bool:
        return self.timesteps is not None

    def forward(self, x: Tensor) -> Tensor:
        if self.timesteps is None:
            return self.body(x)
        T, B = self.timesteps, x.shape[0]
        set_time(self, T, B)
        with compact.saving_spikes():  # only acts when autograd saves tensors
            out = self.body(_encoding.ENCODINGS[self.encoding](x, T))
        if out.shape[0] == B and T > 1:  # never driven by spikes: constant over time
            return out * T
        return out.view(T, B, *out.shape[1:]).sum(0)

    def spiking_config(self) -> dict:
        if not self.is_spiking:
            return {}
        first = lif_layers(self)[0][1] if lif_layers(self) else None
        return {
            "timesteps": self.timesteps,
            "encoding": self.encoding,
            "gamma": first.gamma if first else 0.3,
            "surrogate": first.surrogate if first else "linear",
        }


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)


class VGG(Network):
    def __init__(
        self,
        cfg: list[int | str],
        hidden: list[int],
        num_classes: int,
        in_channels: int,
        image_size: int,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c, size = in_channels, image_size
        for v in cfg:
            if v == "A":
                layers.append(AvgPool2d(2))
                size //= 2
            else:
                layers += [nn.Conv2d(c, int(v), 3, 1, 1, bias=False), nn.ReLU(), Dropout(dropout)]
                c = int(v)
        if size < 1:
            raise ValueError(f"image size {image_size} is too small for this network's pooling")
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.Flatten()]
        f = c * size * size
        for h in hidden:
            head += [nn.Linear(f, h, bias=False), nn.ReLU(), Dropout(dropout)]
            f = h
        head.append(nn.Linear(f, num_classes, bias=False))
        self.classifier = nn.Sequential(*head)
        _init_weights(self)

    def body(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))

    def units(self) -> list[nn.Module]:
        return [*self.features, *self.classifier]


ARCHS = sorted([*VGG_FEATURES, *RESNET_BLOCKS])


def build_ann(
    arch: str,
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
    dropout: float = 0.2,
) -> Network:
    """Build the ANN of `arch` (ReLU, no bias, no batch-norm, average pooling, dropout)."""
    if arch in RESNET_BLOCKS:
        from .resnet import ResNet

        model: Network = ResNet(RESNET_BLOCKS[arch], num_classes, in_channels, image_size, dropout)
    elif arch in VGG_FEATURES:
        cfg = list(VGG_FEATURES[arch])
        pools = cfg.count("A")
        if arch == "vgg16" and image_size // 2**pools > 4:  # ImageNet: 224 -> 7x7 before classifier
            cfg.append("A")
        model = VGG(cfg, VGG_HIDDEN.get(arch, DEFAULT_HIDDEN), num_classes, in_channels,
                    image_size, dropout)
    else:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    model.config = {
        "arch": arch,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "image_size": image_size,
        "dropout": dropout,
    }
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def example_input(model: Network, batch: int = 1) -> Tensor:
    c = model.config
    return torch.zeros(batch, c["in_channels"], c["image_size"], c["image_size"])
