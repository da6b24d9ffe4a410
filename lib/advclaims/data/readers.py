"""On-disk readers: each dataset's files in torchvision's layout (or Debian's for Fashion-MNIST) as uint8 arrays.

The readers parse the files themselves (no torchvision checksums), so small files in the real format work too;
torchvision only downloads, and only when asked (``download=True``): a test run never reaches the network
unless told to. ``advclaims.data.proxy`` writes the same formats.
"""

from __future__ import annotations

import gzip
import pickle
import warnings
import zlib
from pathlib import Path

import numpy as np

from advclaims.data.registry import DEBIAN_FASHION_MNIST, DatasetCorrupt, DatasetMissing, info


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


def download_with_torchvision(name: str, root: Path) -> None:
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
