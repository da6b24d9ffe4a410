"""Datasets as whole tensors on the model's device.

Every dataset follows torchvision's on-disk layout under one data root (``--repro-data-root`` or
``ADVCLAIMS_DATA``). Fashion-MNIST, the embedded default, is also found where Debian's
``dataset-fashion-mnist`` package puts it. Readers parse the files themselves (no torchvision
checksums), so small files in the real format work too; torchvision only downloads, and only
when asked (``download=True``): a test run never reaches the network unless told to.

Images are kept as uint8 (N, C, H, W) and turned into floats in [0, 1] batch by batch.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

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
PROXY_MARKER = "advclaims-proxy.json"  # written by advclaims.proxy beside a proxy dataset's files


def proxy_marker(name: str, root: str | Path) -> dict | None:
    """The proxy description of dataset ``name`` under ``root`` when its files are a proxy
    (advclaims.proxy: other content in the dataset's layout), else None."""
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


@dataclass
class Split:
    """One split held as tensors: ``x`` uint8 (N, C, H, W), ``y`` int64 (N,)."""

    name: str
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def device(self) -> torch.device:
        return self.x.device

    def to(self, device) -> "Split":
        return Split(self.name, self.x.to(device), self.y.to(device))

    def images(self, idx=None) -> torch.Tensor:
        """Float pixels in [0, 1] for the given indices (all when None)."""
        x = self.x if idx is None else self.x[idx]
        return x.float().div_(255.0)

    def subset(self, n: int | None, *, seed: int = 0) -> "Split":
        """The same ``n`` examples for every run with this seed (a seeded permutation's prefix)."""
        if n is None or n >= len(self):
            return self
        if n <= 0:
            raise ValueError(f"subset size must be positive, got {n}")
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(self), generator=g)[:n].sort().values.to(self.x.device)
        return Split(self.name, self.x[idx], self.y[idx])

    def head(self, n: int | None) -> "Split":
        """The first ``n`` examples (test sets: the canonical order)."""
        if n is None or n >= len(self):
            return self
        return Split(self.name, self.x[:n], self.y[:n])

    def batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self)
        order = torch.randperm(n, generator=generator, device=_drawn_on(generator)).to(self.x.device) if shuffle else None
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size] if shuffle else slice(start, start + batch_size)
            yield self.images(idx), self.y[idx]


def _drawn_on(generator: torch.Generator | None):
    """Where a draw from ``generator`` is made: its own device (a CUDA generator draws on the GPU, no host copy)."""
    return generator.device if generator is not None else None


def augment(x: torch.Tensor, *, pad: int, flip: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop after zero padding, and random horizontal flip, as tensor ops on x's device."""
    n, _, h, w = x.shape
    if flip:
        mask = torch.rand(n, generator=generator, device=_drawn_on(generator)).to(x.device) < 0.5
        x = torch.where(mask.view(-1, 1, 1, 1), x.flip(3), x)
    if pad > 0:
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=_drawn_on(generator)).to(x.device)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=_drawn_on(generator)).to(x.device)
        rows = (dy.view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
        cols = (dx.view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w)
        batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
        chan = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
        x = padded[batch, chan, rows, cols]
    return x


# ---------------------------------------------------------------------------------------------
# readers


def _open_maybe_gz(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format: magic, dims, big-endian uint8 payload)."""
    try:
        with _open_maybe_gz(path) as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as err:  # truncated or non-gzip .gz files
        raise DatasetCorrupt(f"{path} cannot be read as a (gzipped) IDX file: {err}") from err
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetCorrupt(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims)) if dims else 0
    if len(data) - offset != expected:
        raise DatasetCorrupt(f"{path} is truncated or padded: {len(data) - offset} bytes for shape {dims}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def _find(dirs: list[Path], stem: str) -> Path | None:
    for d in dirs:
        for cand in (d / stem, d / f"{stem}.gz"):
            if cand.is_file():
                return cand
    return None


def _read_idx_pair(dirs: list[Path], split: str, name: str, root: Path) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    img = _find(dirs, f"{prefix}-images-idx3-ubyte")
    lab = _find(dirs, f"{prefix}-labels-idx1-ubyte")
    if img is None or lab is None:
        raise DatasetMissing(_missing(name, root, dirs))
    x, y = read_idx(img), read_idx(lab)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise DatasetCorrupt(f"{img} and {lab} disagree: images {x.shape}, labels {y.shape}")
    return x[:, None], y


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
            IndexError, KeyError, UnicodeDecodeError, OSError) as err:
        raise DatasetCorrupt(f"{path} is not a CIFAR pickle: {err}") from err
    if not isinstance(d, dict):
        raise DatasetCorrupt(f"{path} is not a CIFAR pickle: it holds a {type(d).__name__}, not a dict")
    return d


def _read_cifar(root: Path, split: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    if name == "cifar10":
        base = root / "cifar-10-batches-py"
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        label_key = "labels"
    else:
        base = root / "cifar-100-python"
        files = ["train" if split == "train" else "test"]
        label_key = "fine_labels"
    if not all((base / f).is_file() for f in files):
        raise DatasetMissing(_missing(name, root, [base]))
    xs, ys = [], []
    for f in files:
        d = _unpickle(base / f)
        if "data" not in d or label_key not in d:
            raise DatasetCorrupt(f"{base / f} lacks the 'data' or '{label_key}' entry of the CIFAR format")
        x = np.asarray(d["data"], dtype=np.uint8)
        y = np.asarray(d[label_key], dtype=np.int64).reshape(-1)
        if x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or len(x) != len(y):
            raise DatasetCorrupt(
                f"{base / f} holds data of shape {x.shape} and {len(y)} labels; the CIFAR format has "
                f"N x 3072 pixel rows and N labels: the files under {root} are not {name}"
            )
        xs.append(x.reshape(-1, 3, 32, 32))
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def _read_svhn(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    import scipy.io

    for base in (root / "svhn", root):
        path = base / f"{split}_32x32.mat"
        if path.is_file():
            try:
                m = scipy.io.loadmat(path)
            except (scipy.io.matlab.MatReadError, ValueError, TypeError, OSError, IndexError, EOFError) as err:
                raise DatasetCorrupt(f"{path} is not a MATLAB file: {err}") from err
            if "X" not in m or "y" not in m or np.ndim(m["X"]) != 4 or m["X"].shape[3] != np.size(m["y"]):
                raise DatasetCorrupt(
                    f"{path} lacks the X (H, W, C, N) and y (N, 1) arrays of the SVHN format: "
                    f"the files under {root} are not svhn"
                )
            x = np.transpose(m["X"], (3, 2, 0, 1)).astype(np.uint8)
            y = m["y"].astype(np.int64).reshape(-1)
            if len(y) and (y.min() < 1 or y.max() > 10):
                raise DatasetCorrupt(f"{path} has labels outside 1..10 (SVHN stores digit 0 as 10): not svhn")
            return x, y % 10  # SVHN stores digit 0 as label 10
    raise DatasetMissing(_missing("svhn", root, [root / "svhn", root]))


def _decode_rgb(path: Path, size: int) -> np.ndarray:
    """One image file as uint8 (3, size, size), resized and centre-cropped if needed; a file that is
    not an image is DatasetCorrupt naming it."""
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2.functional import center_crop, resize

    try:
        with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders (once per image, 16000 lines)
            warnings.simplefilter("ignore", DeprecationWarning)
            img = decode_image(str(path), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError, OSError) as err:
        raise DatasetCorrupt(f"{path} cannot be decoded as an image ({err}); replace or remove it") from err
    if img.shape[-1] != size or img.shape[-2] != size:
        img = center_crop(resize(img, [int(size * 256 / 224)], antialias=True), [size, size])
    return img.numpy()


def _read_image_folder(split_dir: Path, classes: list[str], size: int, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    files, labels = [], []
    for label, wnid in enumerate(classes):
        found = sorted(p for p in (split_dir / wnid).rglob("*") if p.suffix.lower() in {".jpeg", ".jpg", ".png"})
        files += found
        labels += [label] * len(found)
    if not files:
        raise DatasetCorrupt(f"{split_dir} holds no class folders with .jpeg/.png images; the ImageFolder layout "
                             f"is {split_dir}/<class>/<image>.jpeg")
    if limit is not None and len(files) > limit:  # choose before decoding: a limit of 1 decodes one image
        keep = np.sort(np.random.default_rng(0).choice(len(files), limit, replace=False))
        files, labels = [files[i] for i in keep], [labels[i] for i in keep]
    return np.stack([_decode_rgb(p, size) for p in files]), np.asarray(labels, dtype=np.int64)


def _read_tiny_imagenet(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    base = root / "tiny-imagenet-200"
    if not (base / "train").is_dir():
        raise DatasetMissing(_missing("tiny_imagenet", root, [base]))
    classes = sorted(p.name for p in (base / "train").iterdir() if p.is_dir())
    if split == "train":
        return _read_image_folder(base / "train", classes, 64, None)
    annotations = base / "val" / "val_annotations.txt"
    if not annotations.is_file():
        raise DatasetCorrupt(f"{annotations} is missing: the files under {root} are not a complete tiny_imagenet; "
                             f"{info('tiny_imagenet').how_to.format(root=root)}")
    index = {c: i for i, c in enumerate(classes)}
    xs, ys = [], []
    for number, line in enumerate(annotations.read_text(errors="replace").splitlines(), 1):
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise DatasetCorrupt(f"{annotations} line {number} is not '<image>\\t<class of train/>...': {line[:60]!r}")
        xs.append(_decode_rgb(base / "val" / "images" / fields[0], 64))
        ys.append(index[fields[1]])
    if not xs:
        raise DatasetCorrupt(f"{annotations} lists no images")
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def _read_imagenet(root: Path, split: str, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    base = root / "imagenet" / ("train" if split == "train" else "val")
    if not base.is_dir():
        raise DatasetMissing(_missing("imagenet", root, [base]))
    classes = sorted(p.name for p in base.iterdir() if p.is_dir())
    return _read_image_folder(base, classes, 224, limit)


def _missing(name: str, root: Path, looked: list[Path]) -> str:
    where = ", ".join(str(p) for p in looked)
    return f"dataset {name!r} not found (looked in {where}). To provide it: {info(name).how_to.format(root=root)}."


def _download(name: str, root: Path) -> None:
    import torchvision.datasets as tvd

    makers = {
        "fashion_mnist": lambda s: tvd.FashionMNIST(str(root), train=s, download=True),
        "mnist": lambda s: tvd.MNIST(str(root), train=s, download=True),
        "cifar10": lambda s: tvd.CIFAR10(str(root), train=s, download=True),
        "cifar100": lambda s: tvd.CIFAR100(str(root), train=s, download=True),
        "svhn": lambda s: tvd.SVHN(str(root / "svhn"), split="train" if s else "test", download=True),
    }
    if name not in makers:
        raise DatasetMissing(f"dataset {name!r} cannot be downloaded automatically. {info(name).how_to.format(root=root)}.")
    try:
        for train in (True, False):
            makers[name](train)
    except Exception as err:  # network errors come in many types; one message for all
        raise DatasetMissing(f"downloading {name!r} into {root} failed ({err}). {info(name).how_to.format(root=root)}.") from err


def read_arrays(name: str, split: str, root: Path, *, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if name == "fashion_mnist":
        return _read_idx_pair([root / "FashionMNIST" / "raw", DEBIAN_FASHION_MNIST], split, name, root)
    if name == "mnist":
        return _read_idx_pair([root / "MNIST" / "raw"], split, name, root)
    if name in ("cifar10", "cifar100"):
        return _read_cifar(root, split, name)
    if name == "svhn":
        return _read_svhn(root, split)
    if name == "tiny_imagenet":
        return _read_tiny_imagenet(root, split)
    if name == "imagenet":
        return _read_imagenet(root, split, limit)
    info(name)  # raises the unknown-dataset error
    raise AssertionError("unreachable")


def load(name: str, split: str, *, root: str | Path | None = None, device="cpu", download: bool = False,
         limit: int | None = None) -> Split:
    """Load a whole split onto ``device``. Raises DatasetMissing with instructions when absent."""
    meta = info(name)
    root = Path(root).expanduser() if root is not None else default_root()
    try:
        x, y = read_arrays(name, split, root, limit=limit)
    except DatasetMissing:
        if not download:
            raise
        _download(name, root)
        x, y = read_arrays(name, split, root, limit=limit)
    if x.shape[1:] != (meta.channels, meta.size, meta.size):
        raise DatasetCorrupt(
            f"{name} {split} images have shape {x.shape[1:]}, expected {(meta.channels, meta.size, meta.size)}: "
            f"the files under {root} are not {name}"
        )
    if len(y) == 0:
        raise DatasetCorrupt(f"{name} {split} under {root} holds no examples")
    if y.min() < 0 or y.max() >= meta.num_classes:
        raise DatasetCorrupt(f"{name} {split} labels fall outside 0..{meta.num_classes - 1}: the files under {root} are not {name}")
    # np.require copies read-only arrays (read_idx's np.frombuffer views an immutable bytes object):
    # a tensor over them would let in-place writes mutate that bytes object.
    x = np.require(x, dtype=np.uint8, requirements=["C_CONTIGUOUS", "WRITEABLE"])
    return Split(name, torch.from_numpy(x).to(device), torch.from_numpy(y.astype(np.int64)).to(device))
