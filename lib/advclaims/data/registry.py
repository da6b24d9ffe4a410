"""The dataset registry: every dataset's shape, classes, normalisation, threat radius and where its files go.

Plain data, no torch: the verdict layer (expected/ validation) reads it without loading a tensor library.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


class DatasetMissing(RuntimeError):
    """The dataset's files are not under the data root; the message says how to provide them."""


class DatasetCorrupt(RuntimeError):
    """Files were found but do not hold what the format promises; the message names the file."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    channels: int
    size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    eps: float          # L-inf radius of the threat model, in pixels of [0, 1]
    crop_pad: int       # random-crop padding for training augmentation, in pixels
    flip: bool          # horizontal flips are label-preserving
    how_to: str         # how to put the files under the data root


DATASETS: dict[str, DatasetInfo] = {
    "fashion_mnist": DatasetInfo(
        "fashion_mnist", 1, 28, 10, (0.2860,), (0.3530,), 0.1, 2, True,
        "apt-get install -y dataset-fashion-mnist (files land in /usr/share/datasets/fashion-mnist), "
        "or put the four idx .gz files under {root}/FashionMNIST/raw, or pass --repro-download",
    ),
    "mnist": DatasetInfo(
        "mnist", 1, 28, 10, (0.1307,), (0.3081,), 0.3, 2, False,
        "put train/t10k-images-idx3-ubyte(.gz) and the label files under {root}/MNIST/raw, "
        "or pass --repro-download",
    ),
    "cifar10": DatasetInfo(
        "cifar10", 3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616), 8 / 255, 4, True,
        "extract cifar-10-python.tar.gz so that {root}/cifar-10-batches-py/data_batch_1 exists, "
        "or pass --repro-download",
    ),
    "cifar100": DatasetInfo(
        "cifar100", 3, 32, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 8 / 255, 4, True,
        "extract cifar-100-python.tar.gz so that {root}/cifar-100-python/train exists, "
        "or pass --repro-download",
    ),
    "svhn": DatasetInfo(
        "svhn", 3, 32, 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), 8 / 255, 4, False,
        "put train_32x32.mat and test_32x32.mat under {root}/svhn, or pass --repro-download",
    ),
    "tiny_imagenet": DatasetInfo(
        "tiny_imagenet", 3, 64, 200, (0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821), 8 / 255, 8, True,
        "extract tiny-imagenet-200.zip so that {root}/tiny-imagenet-200/train exists",
    ),
    "imagenet": DatasetInfo(
        "imagenet", 3, 224, 1000, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 4 / 255, 0, True,
        "put the ImageNet train/ and val/ class folders (ImageFolder layout) under {root}/imagenet",
    ),
}


# the folder under the data root that holds each dataset's files
FOLDERS = {"fashion_mnist": "FashionMNIST", "mnist": "MNIST", "cifar10": "cifar-10-batches-py",
           "cifar100": "cifar-100-python", "svhn": "svhn", "tiny_imagenet": "tiny-imagenet-200", "imagenet": "imagenet"}
PROXY_MARKER = "advclaims-proxy.json"  # written by advclaims.data.proxy beside a proxy dataset's files


def proxy_marker(name: str, root: str | Path) -> dict | None:
    """The proxy description of dataset ``name`` under ``root`` when its files are a proxy
    (advclaims.data.proxy: other content in the dataset's layout), else None."""
    path = Path(root).expanduser() / FOLDERS[info(name).name] / PROXY_MARKER
    if not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DatasetCorrupt(f"{path} is not the JSON proxy marker advclaims writes ({err}); remove it if the "
                             f"files beside it are the real {name}") from None
    return marker if isinstance(marker, dict) else {"proxy_of": name}


def info(name: str) -> DatasetInfo:
    """The dataset's metadata; an unknown name is one error naming the known datasets."""
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def default_root() -> Path:
    env = os.environ.get("ADVCLAIMS_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "advclaims" / "data"
