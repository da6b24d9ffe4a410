"""Benchmarks share one small trained-from-scratch model and batch, so peers are timed on equal terms."""

import pytest
import torch

from advclaims import models


@pytest.fixture(scope="session")
def model_and_batch():
    torch.manual_seed(0)
    net = models.build("resnet18", in_channels=3, num_classes=10, width=8, input_size=32).eval()
    x = torch.rand(128, 3, 32, 32)
    y = net(x).argmax(1).detach()  # attack the model's own predictions: every image starts correct
    return net, x, y
