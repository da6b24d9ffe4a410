"""VGG-16 with batch norm, CIFAR variant (one linear classifier after the conv blocks)."""

from __future__ import annotations

from torch import nn

# channel multipliers of the 64-channel base; "M" is a 2x2 max-pool
_CFG = [1, 1, "M", 2, 2, "M", 4, 4, 4, "M", 8, 8, 8, "M", 8, 8, 8, "M"]


class VGG16BN(nn.Module):
    def __init__(self, *, in_channels: int, num_classes: int, width: int, normalize: nn.Module, input_size: int = 32):
        super().__init__()
        self.normalize = normalize
        layers: list[nn.Module] = []
        cin = in_channels
        for v in _CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            else:
                cout = v * width
                layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
                cin = cout
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def features(self, x):
        return self.body(self.normalize(x))

    def head(self, z):
        return self.fc(self.pool(z).flatten(1))

    def forward(self, x):
        return self.head(self.features(x))
