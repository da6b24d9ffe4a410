"""Network in Network (Lin et al. 2014), the curvature paper's CIFAR-10 model; ``width`` = 192 there."""

from __future__ import annotations

from torch import nn


def _mlpconv(cin: int, cout: int, k: int, pad: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, k, padding=pad), nn.ReLU(),
        nn.Conv2d(cout, cout, 1), nn.ReLU(),
        nn.Conv2d(cout, cout, 1), nn.ReLU(),
    ]


class NiN(nn.Module):
    def __init__(self, *, in_channels: int, num_classes: int, width: int, normalize: nn.Module, input_size: int = 32):
        super().__init__()
        w = width
        self.normalize = normalize
        self.body = nn.Sequential(
            *_mlpconv(in_channels, w, 5, 2), nn.MaxPool2d(3, 2, 1), nn.Dropout(0.5),
            *_mlpconv(w, w, 5, 2), nn.AvgPool2d(3, 2, 1), nn.Dropout(0.5),
            nn.Conv2d(w, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, w, 1), nn.ReLU(),
        )
        self.classifier = nn.Conv2d(w, num_classes, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def features(self, x):
        return self.body(self.normalize(x))

    def head(self, z):
        return self.pool(self.classifier(z)).flatten(1)

    def forward(self, x):
        return self.head(self.features(x))
