"""ResNet20 of the DIET-SNN paper and a ResNet34 of the same rules (docs/METHOD.md section 6).

Stem: three 3x3 convs (each ReLU + dropout) then 2x2 average pooling; four stages of basic
blocks (64/128/256/512 channels, strides 1/2/2/2); flatten -> Linear(classes). No bias, no
batch-norm. A basic block is `relu2(conv2(drop(relu1(conv1(x)))) + shortcut(x))`, the shortcut
an identity or a 1x1 strided conv when the shape changes: in the SNN the shortcut current adds
into the membrane of the block's second LIF. As in the reference code there is no dropout after
`relu2`. On inputs larger than CIFAR's 32x32 (final map above 2x2, e.g. 14x14 on ImageNet) a
global average pooling precedes the flatten, so the classifier stays 512 -> classes.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..config import DROPOUT
from ..layers import AvgPool2d, Dropout
from .base import Network, init_weights

# basic blocks per stage: the paper's ResNet20 and a ResNet34 of the same rules
RESNET_BLOCKS: dict[str, tuple[int, ...]] = {"resnet20": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
WIDTHS = (64, 128, 256, 512)
STRIDES = (1, 2, 2, 2)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual shortcut. The shortcut is registered first: the order of
    the ANN's parameters, by which a saved optimizer state (resume) is indexed."""

    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float) -> None:
        super().__init__()
        if stride != 1 or c_in != c_out:
            self.shortcut: nn.Module = nn.Conv2d(c_in, c_out, 1, stride, 0, bias=False)
        else:
            self.shortcut = nn.Identity()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.relu1 = nn.ReLU()
        self.drop = Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.drop(self.relu1(self.conv1(x))))
        return self.relu2(out + self.shortcut(x))


class ResNet(Network):
    def __init__(
        self,
        blocks: Sequence[int],
        num_classes: int,
        in_channels: int,
        image_size: int,
        dropout: float = DROPOUT,
        widths: Sequence[int] = WIDTHS,
        stem_width: int = 64,
    ) -> None:
        super().__init__()
        stem: list[nn.Module] = []
        c = in_channels
        for _ in range(3):
            stem += [nn.Conv2d(c, stem_width, 3, 1, 1, bias=False), nn.ReLU(), Dropout(dropout)]
            c = stem_width
        stem.append(AvgPool2d(2))
        self.stem = nn.Sequential(*stem)
        size = image_size // 2
        layers: list[nn.Module] = []
        for n, w, s in zip(blocks, widths, STRIDES):
            for i in range(n):
                stride = s if i == 0 else 1
                layers.append(BasicBlock(c, w, stride, dropout))
                size = (size - 1) // stride + 1
                c = w
        if size < 1 or image_size < 2:
            raise ValueError(f"image size {image_size} is too small for this network's pooling")
        self.layers = nn.Sequential(*layers)
        head: list[nn.Module] = []
        if size > 2:  # ImageNet-sized input: global average pooling keeps the classifier small
            head.append(AvgPool2d(size))
            size = 1
        head += [nn.Flatten(), nn.Linear(c * size * size, num_classes, bias=False)]
        self.classifier = nn.Sequential(*head)
        init_weights(self)
        # build_ann replaces "arch" by its name; a custom ResNet cannot be rebuilt from a checkpoint
        self.config = {"arch": "resnet-custom", "num_classes": num_classes,
                       "in_channels": in_channels, "image_size": image_size, "dropout": dropout}

    input_dims = 4  # [B, C, H, W]; [T, B, C, H, W] is time-varying input

    def body(self, x: Tensor) -> Tensor:
        return self.classifier(self.layers(self.stem(x)))
