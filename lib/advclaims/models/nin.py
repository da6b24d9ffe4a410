"""Network in Network (Lin et al. 2014), the curvature paper's CIFAR-10/100 model; ``width`` = 192 there.

BatchNorm variant: every convolution is followed by BatchNorm before its ReLU. The authors trained
MatConvNet's NiN; the plain network (no normalisation, PyTorch's default initialisation) does not learn
under this suite's SGD recipes: on 3-channel 32x32 data at lr 0.1 its loss stayed at 2.30 (2.308 ->
2.303 over 4 epochs, 10% accuracy, chance). BatchNorm makes it trainable with the same recipe as every
other model (one recipe for all architectures instead of a NiN-specific warm-up), and in eval mode it is
an affine map, so the network stays piecewise linear (what the curvature claims measure) and attacks fold
it into the convolutions (``fast_model``).
"""

from __future__ import annotations

from torch import nn


def _conv(cin: int, cout: int, k: int, pad: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=pad, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


def _mlpconv(cin: int, cout: int, k: int, pad: int) -> list[nn.Module]:
    return [*_conv(cin, cout, k, pad), *_conv(cout, cout, 1, 0), *_conv(cout, cout, 1, 0)]


class NiN(nn.Module):
    def __init__(self, *, in_channels: int, num_classes: int, width: int, normalize: nn.Module, input_size: int = 32):
        super().__init__()
        w = width
        self.normalize = normalize
        self.body = nn.Sequential(
            *_mlpconv(in_channels, w, 5, 2), nn.MaxPool2d(3, 2, 1), nn.Dropout(0.5),
            *_mlpconv(w, w, 5, 2), nn.AvgPool2d(3, 2, 1), nn.Dropout(0.5),
            *_conv(w, w, 3, 1), *_conv(w, w, 1, 0),
        )
        self.classifier = nn.Conv2d(w, num_classes, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def features(self, x):
        return self.body(self.normalize(x))

    def head(self, z):
        return self.pool(self.classifier(z)).flatten(1)

    def forward(self, x):
        return self.head(self.features(x))
