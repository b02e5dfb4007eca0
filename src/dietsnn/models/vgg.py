"""VGG networks of the paper's rules (docs/METHOD.md section 6): 3x3 convs without bias, ReLU,
dropout after each, 2x2 average pooling, a linear classifier. `NAME_bn` (e.g. `vgg_small_bn`)
adds batch norm after every convolution and hidden linear layer, folded into that layer when
the network is converted (docs/CONVERSION.md)."""

from __future__ import annotations

from torch import Tensor, nn

from ..config import DROPOUT
from ..layers import AvgPool2d, Dropout, Sequential
from .base import Network, init_weights

# 3x3 convs (int = output channels), "A" = 2x2 average pooling.
VGG_FEATURES: dict[str, list[int | str]] = {
    "vgg_small": [32, "A", 64, 64, "A"],
    "vgg_medium": [48, "A", 96, 96, "A"],  # vgg_small 1.5x as wide (docs/RESULTS.md 1.3)
    "vgg5": [64, "A", 128, 128, "A"],
    "vgg9": [64, "A", 128, 256, "A", 256, 512, "A", 512, "A", 512],
    "vgg11": [64, "A", 128, 256, "A", 512, 512, "A", 512, "A", 512, 512],
    "vgg16": [64, 64, "A", 128, 128, "A", 256, 256, 256, "A", 512, 512, 512, "A", 512, 512, 512],
}
VGG_HIDDEN: dict[str, list[int]] = {"vgg_small": [256], "vgg_medium": [256], "vgg5": [1024, 1024]}
DEFAULT_HIDDEN = [4096, 4096]


class VGG(Network):
    def __init__(
        self,
        cfg: list[int | str],
        hidden: list[int],
        num_classes: int,
        in_channels: int,
        image_size: int,
        dropout: float = DROPOUT,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c, size = in_channels, image_size
        for v in cfg:
            if v == "A":
                layers.append(AvgPool2d(2))
                size //= 2
            else:
                layers += [nn.Conv2d(c, int(v), 3, 1, 1, bias=False),
                           *[nn.BatchNorm2d(int(v))] * batch_norm, nn.ReLU(), Dropout(dropout)]
                c = int(v)
        if size < 1:
            raise ValueError(f"image size {image_size} is too small for this network's pooling")
        self.features = Sequential(*layers)
        head: list[nn.Module] = [nn.Flatten()]
        f = c * size * size
        for h in hidden:
            head += [nn.Linear(f, h, bias=False), *[nn.BatchNorm1d(h)] * batch_norm, nn.ReLU(),
                     Dropout(dropout)]
            f = h
        head.append(nn.Linear(f, num_classes, bias=False))
        self.classifier = Sequential(*head)
        init_weights(self)

    input_dims = 4  # [B, C, H, W]; [T, B, C, H, W] is time-varying input

    def body(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


BN_SUFFIX = "_bn"  # `vgg_small_bn`: vgg_small with batch norm


def build_vgg(arch: str, num_classes: int, in_channels: int, image_size: int,
              dropout: float) -> VGG:
    batch_norm = arch.endswith(BN_SUFFIX)
    arch = arch.removesuffix(BN_SUFFIX)
    cfg = list(VGG_FEATURES[arch])
    pools = cfg.count("A")
    if arch == "vgg16" and image_size // 2**pools > 4:  # ImageNet: 224 -> 7x7 before classifier
        cfg.append("A")
    return VGG(cfg, VGG_HIDDEN.get(arch, DEFAULT_HIDDEN), num_classes, in_channels, image_size,
               dropout, batch_norm)
