"""LeNet (Caffe's MNIST variant: 20 and 50 channels, 500 hidden units), the curvature paper's MNIST model."""

from __future__ import annotations

from torch import nn


class LeNet(nn.Module):
    FIXED_INPUT_SIZE = True  # the linear head's size follows the image size: other sizes are refused

    def __init__(self, *, in_channels: int, num_classes: int, width: int, normalize: nn.Module, input_size: int = 28):
        super().__init__()
        if input_size < 16:
            raise ValueError(f"LeNet needs images of at least 16x16 pixels (two 5x5 convs and 2x2 pools), "
                             f"got input_size={input_size}; use another architecture for smaller images")
        c1, c2, hidden = width, int(2.5 * width), 25 * width
        self.normalize = normalize
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5), nn.ReLU(), nn.MaxPool2d(2),
        )
        side = ((input_size - 4) // 2 - 4) // 2
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(c2 * side * side, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def features(self, x):
        return self.body(self.normalize(x))

    def head(self, z):
        return self.fc(z)

    def forward(self, x):
        return self.head(self.features(x))
