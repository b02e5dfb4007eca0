"""Convert your own PyTorch ANN to a DIET-SNN: a torchvision-style VGG and ResNet, defined here
(torchvision is not needed), trained briefly on Fashion-MNIST with a plain PyTorch loop, then

  1. `dietsnn.convert` + `dietsnn.calibrate_thresholds`: the converted SNN at T steps, its
     threshold scale and the units of its biases chosen on the validation split;
  2. DIET-SNN training (BPTT of weights, leaks and thresholds) with `dietsnn.training.fit`;

printing the ANN, converted and DIET-trained test accuracy of each.

    python examples/convert_custom.py                 # a few minutes on 2 CPU cores
    python examples/convert_custom.py --train 2000    # fewer training images, faster
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn

import dietsnn
from dietsnn.config import SNN_TRAIN
from dietsnn.data import load
from dietsnn.training import evaluate, fit

# -- a torchvision-style VGG: make_layers(cfg, batch_norm), max pooling, dropout classifier ----


def make_layers(cfg: list, batch_norm: bool = True, in_channels: int = 1) -> nn.Sequential:
    layers: list[nn.Module] = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            conv = nn.Conv2d(in_channels, v, kernel_size=3, padding=1)
            layers += [conv, nn.BatchNorm2d(v), nn.ReLU(inplace=True)] if batch_norm else \
                [conv, nn.ReLU(inplace=True)]
            in_channels = v
    return nn.Sequential(*layers)


class VGG(nn.Module):
    def __init__(self, features: nn.Module, num_classes: int = 10, width: int = 64) -> None:
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((3, 3))
        self.classifier = nn.Sequential(
            nn.Linear(width * 3 * 3, 256), nn.ReLU(True), nn.Dropout(0.2),
            nn.Linear(256, 256), nn.ReLU(True), nn.Dropout(0.2),
            nn.Linear(256, num_classes))

    def forward(self, x):
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def vgg_small() -> VGG:
    return VGG(make_layers([16, "M", 32, "M", 64, 64, "M"]), width=64)


# -- a torchvision-style ResNet: BasicBlock with one shared ReLU, `out += identity` ----------


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    def __init__(self, layers: list[int], widths=(16, 32, 64), num_classes: int = 10) -> None:
        super().__init__()
        self.inplanes = widths[0]
        self.conv1 = conv3x3(1, widths[0])  # 28x28 grey images: a 3x3 stem, not 7x7/2
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.layer1 = self._make_layer(widths[0], layers[0])
        self.layer2 = self._make_layer(widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(widths[2], layers[2], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[2], num_classes)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def resnet_small() -> ResNet:
    return ResNet([1, 1, 1])


# -- the user's own training loop, then dietsnn -----------------------------------------------


def train_ann(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(64):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def main() -> None:
    p = argparse.ArgumentParser(description="Convert a torchvision-style VGG and ResNet")
    p.add_argument("--train", type=int, default=10000, help="training images")
    p.add_argument("--test", type=int, default=2000, help="test images")
    p.add_argument("--epochs", type=int, default=1, help="ANN epochs")
    p.add_argument("--timesteps", "-T", type=int, default=5)
    p.add_argument("--models", default="vgg,resnet")
    p.add_argument("--engine", default="auto", choices=dietsnn.config.ENGINES,
                   help="how the neurons run (default: auto, dietsnn's C kernels on the CPU)")
    a = p.parse_args()
    with dietsnn.use_engine(a.engine):
        run(a)


def run(a: argparse.Namespace) -> None:
    data = load("fashion-mnist", limit_train=a.train, limit_test=a.test, val_size=1000)
    calib = data.train_x[:512]
    for name in a.models.split(","):
        t0 = time.time()
        torch.manual_seed(0)
        ann = train_ann({"vgg": vgg_small, "resnet": resnet_small}[name](), data.train_x,
                        data.train_y, a.epochs)
        ann_acc = evaluate(ann, data.test_x, data.test_y)["accuracy"]

        snn = dietsnn.convert(ann, timesteps=a.timesteps)
        # thresholds x the scale of config.SCALES that runs best at T on the validation split,
        # biases and residual gains in the units that run best with it (docs/CONVERSION.md)
        dietsnn.calibrate_thresholds(snn, calib, scale="auto",
                                     validation=(data.val_x, data.val_y))
        conv_acc = evaluate(snn, data.test_x, data.test_y)["accuracy"]

        cfg = dataclasses.replace(SNN_TRAIN, epochs=1)
        with tempfile.TemporaryDirectory() as out:
            fit(snn, data, cfg, out, progress=False, log=lambda *_: None)
            snn = dietsnn.load_model(f"{out}/model.safetensors")  # the best epoch, eval mode
        diet_acc = evaluate(snn, data.test_x, data.test_y)["accuracy"]
        print(f"{name}: ANN {ann_acc:.4f} | converted SNN T={a.timesteps} {conv_acc:.4f} | "
              f"DIET-SNN T={a.timesteps} {diet_acc:.4f}  ({time.time() - t0:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
