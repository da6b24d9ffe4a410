"""ResNet-18, CIFAR variant (3x3 stem, no max-pool), and PreAct-ResNet-18.

The stages the local_properties paper probes are attributes, so forward hooks reach them:
``conv1`` (first conv output), ``layer0`` (stem BN + ReLU), ``layer1`` .. ``layer4`` (stage outputs).
ReLUs are not in-place, so a hooked output is never modified afterwards.
"""

from __future__ import annotations

from torch import nn
import torch.nn.functional as F

RESNET_STAGES = ("conv1", "layer0", "layer1", "layer2", "layer3", "layer4")


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


def _stage(block, cin: int, cout: int, stride: int, n: int = 2) -> nn.Sequential:
    layers = []
    for s in [stride] + [1] * (n - 1):
        layers.append(block(cin, cout, s))
        cin = cout
    return nn.Sequential(*layers)


class ResNet18(nn.Module):
    def __init__(self, *, in_channels: int, num_classes: int, width: int, normalize: nn.Module, input_size: int = 32):
        super().__init__()
        w = width
        self.normalize = normalize
        self.conv1 = nn.Conv2d(in_channels, w, 3, 1, 1, bias=False)
        self.layer0 = nn.Sequential(nn.BatchNorm2d(w), nn.ReLU())
        self.layer1 = _stage(BasicBlock, w, w, 1)
        self.layer2 = _stage(BasicBlock, w, 2 * w, 2)
        self.layer3 = _stage(BasicBlock, 2 * w, 4 * w, 2)
        self.layer4 = _stage(BasicBlock, 4 * w, 8 * w, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * w, num_classes)

    def features(self, x):
        """Input pixels -> layer4 output (the last convolutional block)."""
        out = self.layer0(self.conv1(self.normalize(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(out))))

    def head(self, z):
        return self.fc(self.pool(z).flatten(1))

    def forward(self, x):
        return self.head(self.features(x))


class PreActResNet18(nn.Module):
    def __init__(self, *, in_channels: int, num_classes: int, width: int, normalize: nn.Module, input_size: int = 32):
        super().__init__()
        w = width
        self.normalize = normalize
        self.conv1 = nn.Conv2d(in_channels, w, 3, 1, 1, bias=False)
        self.layer1 = _stage(PreActBlock, w, w, 1)
        self.layer2 = _stage(PreActBlock, w, 2 * w, 2)
        self.layer3 = _stage(PreActBlock, 2 * w, 4 * w, 2)
        self.layer4 = _stage(PreActBlock, 4 * w, 8 * w, 2)
        self.bn = nn.BatchNorm2d(8 * w)
        self.fc = nn.Linear(8 * w, num_classes)

    def features(self, x):
        out = self.conv1(self.normalize(x))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return F.relu(self.bn(out))

    def head(self, z):
        return self.fc(F.adaptive_avg_pool2d(z, 1).flatten(1))

    def forward(self, x):
        return self.head(self.features(x))
