"""Small custom ANNs for Fashion-MNIST, written as a user would (not with dietsnn's builders),
and a plain training loop. Shared by tests/test_convert_custom.py and benchmarks/bench_convert.py,
so that the benchmark measures the models the tests check."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BiasNet(nn.Module):
    """conv-ReLU-pool twice, two linear layers; every layer has a bias; `pool` average or max."""

    def __init__(self, pool: str = "avg", width: int = 16) -> None:
        super().__init__()
        P = nn.AvgPool2d if pool == "avg" else nn.MaxPool2d
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(inplace=True), P(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(inplace=True), P(2))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * width * 49, 128), nn.ReLU(), nn.Dropout(0.1),
            nn.Linear(128, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


class BNNet(nn.Module):
    """conv-BatchNorm-ReLU blocks and a BatchNorm1d after the hidden linear layer; the ReLUs
    are `nn.ReLU` modules, or with `functional` the calls `F.relu` and `torch.relu`."""

    def __init__(self, functional: bool = False, width: int = 16) -> None:
        super().__init__()
        self.functional = functional
        self.conv1 = nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1, self.relu2, self.relu3 = nn.ReLU(), nn.ReLU(), nn.ReLU()
        self.pool = nn.AvgPool2d(2)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.fc1 = nn.Linear(2 * width * 49, 128)
        self.bn3 = nn.BatchNorm1d(128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        if self.functional:
            x = F.avg_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
            x = F.avg_pool2d(torch.relu(self.bn2(self.conv2(x))), 2)
            x = x.view(x.size(0), -1)
            return self.fc2(F.relu(self.bn3(self.fc1(x))))
        x = self.pool(self.relu1(self.bn1(self.conv1(x))))
        x = self.pool(self.relu2(self.bn2(self.conv2(x))))
        return self.fc2(self.relu3(self.bn3(self.fc1(torch.flatten(x, 1)))))


class ResNetLike(nn.Module):
    """A torchvision-style residual network: one `nn.ReLU(inplace=True)` instance called at
    every activation, BatchNorm, residual adds, a max-pooled stem (`pool="max"`) or an average
    pooled one."""

    def __init__(self, pool: str = "avg", width: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.down = nn.Sequential(nn.Conv2d(width, 2 * width, 1, stride=2, bias=False),
                                  nn.BatchNorm2d(2 * width))
        self.conv4 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False)
        self.bn4 = nn.BatchNorm2d(2 * width)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, 10)

    def forward(self, x):
        x = self.pool(self.relu(self.bn1(self.conv1(x))))
        out = self.relu(self.bn2(self.conv2(x)))
        x = self.relu(self.bn3(self.conv3(out)) + x)
        x = self.relu(self.bn4(self.conv4(x)) + self.down(x))
        return self.fc(torch.flatten(self.gap(x), 1))


MODELS = {"bias": lambda: BiasNet("avg"), "bn": BNNet, "bn-functional": lambda: BNNet(True),
          "maxpool": lambda: BiasNet("max"),
          "residual": ResNetLike, "residual-maxpool": lambda: ResNetLike("max")}


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 2,
          batch_size: int = 64, lr: float = 2e-3, seed: int = 0) -> nn.Module:
    """A plain Adam loop, as a user would write it; returns the model in eval mode."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(batch_size):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def build_and_train(kind: str, x: torch.Tensor, y: torch.Tensor, epochs: int = 2,
                    seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return train(MODELS[kind](), x, y, epochs, seed=seed)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int = 100) -> torch.Tensor:
    return torch.cat([model(xb).argmax(1) for xb in x.split(batch)])
