"""Wide ResNet-28-k (Zagoruyko & Komodakis), pre-activation blocks; ``width`` is k."""

from __future__ import annotations

from torch import nn
import torch.nn.functional as F


class _WideBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None if (cin == cout and stride == 1) else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv2(F.relu(self.bn2(self.conv1(out))))
        return out + shortcut


class WideResNet28(nn.Module):
    def __init__(self, *, in_channels: int, num_classes: int, width: int, normalize: nn.Module, input_size: int = 32):
        super().__init__()
        n = 4  # (28 - 4) / 6 blocks per stage
        ch = [16, 16 * width, 32 * width, 64 * width]
        self.normalize = normalize
        self.conv1 = nn.Conv2d(in_channels, ch[0], 3, 1, 1, bias=False)
        stages, cin = [], ch[0]
        for i, stride in enumerate((1, 2, 2)):
            blocks = []
            for j in range(n):
                blocks.append(_WideBlock(cin, ch[i + 1], stride if j == 0 else 1))
                cin = ch[i + 1]
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)

    def features(self, x):
        out = self.layer3(self.layer2(self.layer1(self.conv1(self.normalize(x)))))
        return F.relu(self.bn(out))

    def head(self, z):
        return self.fc(F.adaptive_avg_pool2d(z, 1).flatten(1))

    def forward(self, x):
        return self.head(self.features(x))
