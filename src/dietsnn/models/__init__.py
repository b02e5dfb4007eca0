"""Architectures, defined once for the ANN and the SNN, and a registry by name."""

from __future__ import annotations

from ..config import DROPOUT
from .base import Network, example_input, init_weights
from .resnet import RESNET_BLOCKS, ResNet
from .vgg import BN_SUFFIX, VGG, VGG_FEATURES, build_vgg

VGGS = [*VGG_FEATURES, *(a + BN_SUFFIX for a in VGG_FEATURES)]
ARCHS = sorted([*VGGS, *RESNET_BLOCKS])


def build_ann(
    arch: str,
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
    dropout: float = DROPOUT,
) -> Network:
    """Build the ANN of `arch` (ReLU, no bias, average pooling, dropout; batch norm only in the
    `_bn` VGGs)."""
    if arch in RESNET_BLOCKS:
        model: Network = ResNet(RESNET_BLOCKS[arch], num_classes, in_channels, image_size, dropout)
    elif arch in VGGS:
        model = build_vgg(arch, num_classes, in_channels, image_size, dropout)
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


__all__ = ["ARCHS", "RESNET_BLOCKS", "VGG", "VGG_FEATURES", "Network", "ResNet", "build_ann",
           "example_input", "init_weights"]
