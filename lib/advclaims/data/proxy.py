"""Format-true proxy datasets: Fashion-MNIST content written in the exact on-disk layout of every dataset.

A new user's first run of ``pytest claims -m cifar10`` should not be the first time the CIFAR path runs.
``write(name, root)`` writes Fashion-MNIST images (learnable content) as the real files of MNIST (gzipped
IDX), CIFAR-10 (``cifar-10-batches-py`` pickles), CIFAR-100 (``cifar-100-python``), SVHN (``.mat``,
digit 0 stored as 10), Tiny-ImageNet (``tiny-imagenet-200`` JPEG folders, ``val_annotations.txt``) and
ImageNet (ImageFolder JPEGs), read back by ``advclaims.data`` like the real ones. Datasets with more
than 10 classes get a hue family per sub-class (label = Fashion-MNIST class x families + family), each image a
random colour of its family (``_family_colours``), so that every class is learnable, and not by one exact tint. Each dataset folder gets ``advclaims-proxy.json``: the suite then knows the
data are a proxy and holds no verdict against expected/ (``data.proxy_marker``).

    advclaims proxy-data DIR [--datasets cifar10 svhn] [--train N] [--test N]   (--train: 6,000; CIFAR-100 20,000)
"""

from __future__ import annotations

import colorsys
import gzip
import json
import pickle
import struct
import warnings
from pathlib import Path

import numpy as np
import scipy.io
import torch

from advclaims import __version__
from advclaims import data as data_mod

FOLDERS = data_mod.FOLDERS
NAMES = tuple(name for name in FOLDERS if name != "fashion_mnist")  # every dataset but the content's own
DEFAULT_TRAIN = 6000   # the smoke budget's training subset
SMOKE_TRAIN = {"cifar100": 20000}  # where the smoke budget trains on more (budgets.BUDGETS["smoke"].dataset_train)
DEFAULT_TEST = 1000    # LP-4's spectra need 1000 test images


def _fashion(split: str, n: int, source: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` Fashion-MNIST images (N, 28, 28) and labels of a split (the files are shuffled)."""
    x, y = data_mod.read_arrays("fashion_mnist", split, source if source is not None else data_mod.default_root())
    if n > len(y):
        raise ValueError(f"Fashion-MNIST {split} has {len(y)} images; asked for {n}")
    return np.ascontiguousarray(x[:n, 0]), y[:n].astype(np.int64)


def _rgb(gray: np.ndarray, size: int, tints: np.ndarray) -> np.ndarray:
    """Grey 28x28 images to tinted RGB (N, 3, size, size) uint8: zero-padded to 32, then resized to ``size``."""
    t = torch.from_numpy(np.array(gray)).float()[:, None]
    t = torch.nn.functional.pad(t, (2, 2, 2, 2))
    if size != 32:
        t = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    rgb = t * torch.from_numpy(tints).float()[:, :, None, None]
    return rgb.round().clamp(0, 255).to(torch.uint8).numpy()


def _content(split: str, n: int, classes: int, size: int, source: Path | None, seed: int, tint: str | None = None):
    """(images (N, 3, size, size) uint8, labels) with ``classes`` learnable classes; ``tint`` the families' colours
    (a key of TINTS), which more than 10 classes need."""
    gray, fm = _fashion(split, n, source)
    rng = np.random.default_rng(seed)
    if classes == 10:
        tints = rng.uniform(0.55, 1.0, size=(n, 3)).astype(np.float32)  # a colour cast unrelated to the class
        return _rgb(gray, size, tints), fm
    per = classes // 10
    sub = rng.integers(0, per, size=n)
    return _rgb(gray, size, _family_colours(sub, per, rng, *TINTS[tint])), fm * per + sub


# (saturation, value) ranges of a family's colours. Faint (CIFAR-100): a sub-class is told by a hue seen at 1.2 to
# 7.5% saturation. Vivid (Tiny-ImageNet, ImageNet): their smoke budget trains VGG-16 on 30 images a class of 200, and
# a faint tint there would need several times the data (beyond the info_bottleneck claims' CPU share), so these
# proxies are not shown to be as hard as the real sets (docs/datasets.md).
TINTS = {"faint": ((0.012, 0.075), (0.5, 1.0)), "vivid": ((0.45, 0.95), (0.55, 1.0))}
TINT = {"cifar100": "faint", "tiny_imagenet": "vivid", "imagenet": "vivid"}  # each many-class proxy's default


def _family_colours(sub: np.ndarray, families: int, rng: np.random.Generator,
                    saturation: tuple[float, float] = TINTS["faint"][0],
                    value: tuple[float, float] = TINTS["faint"][1]) -> np.ndarray:
    """A random colour per image within its hue family (N, 3): hue uniform over the family's own slice of the wheel
    (families side by side, no gap), saturation and value uniform in their ranges. Every sub-class stays learnable
    (hue alone tells it, with no overlap); a faint tint against a random brightness takes data to learn. Measured on
    NiN at the smoke recipe (4 epochs, docs/datasets.md): faint, 5.4% clean at 60 training images a class (the
    garment alone, without its hue, gives at most about 8.5%) and 24.2% at 200; vivid, 26.4% at 60."""
    hue = (sub + rng.uniform(0.0, 1.0, size=len(sub))) / families
    sat = rng.uniform(*saturation, size=len(sub))
    val = rng.uniform(*value, size=len(sub))
    return np.array([colorsys.hsv_to_rgb(h, s, v) for h, s, v in zip(hue, sat, val)], dtype=np.float32).reshape(-1, 3)


def _idx(path: Path, arr: np.ndarray) -> None:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    path.write_bytes(gzip.compress(header + arr.tobytes(), compresslevel=6))


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _rows(x: np.ndarray) -> np.ndarray:
    """CIFAR's row layout: 1024 red values (row-major), then green, then blue."""
    return x.reshape(len(x), -1)


def _jpeg(path: Path, img: np.ndarray) -> None:
    from torchvision.io import encode_jpeg

    with warnings.catch_warnings():  # torchvision 0.29 deprecates its encoders
        warnings.simplefilter("ignore", DeprecationWarning)
        path.write_bytes(encode_jpeg(torch.from_numpy(img), quality=95).numpy().tobytes())


def _mnist(root: Path, n_train: int, n_test: int, source: Path | None, tint: str | None) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        x, y = _fashion(split, n, source)
        _idx(raw / f"{prefix}-images-idx3-ubyte.gz", x)
        _idx(raw / f"{prefix}-labels-idx1-ubyte.gz", y)


def _cifar10(root: Path, n_train: int, n_test: int, source: Path | None, tint: str | None) -> None:
    base = root / FOLDERS["cifar10"]
    base.mkdir(parents=True, exist_ok=True)
    x, y = _content("train", n_train, 10, 32, source, seed=1)
    for b, part in enumerate(np.array_split(np.arange(n_train), 5), 1):  # five training batches, as the real files
        _pickle(base / f"data_batch_{b}", {"batch_label": f"training batch {b} of 5", "labels": y[part].tolist(),
                                           "data": _rows(x[part]), "filenames": [f"proxy_{i}.png" for i in part]})
    x, y = _content("test", n_test, 10, 32, source, seed=2)
    _pickle(base / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": y.tolist(), "data": _rows(x),
                                  "filenames": [f"proxy_test_{i}.png" for i in range(n_test)]})
    _pickle(base / "batches.meta", {"label_names": [f"class_{k}" for k in range(10)],
                                    "num_cases_per_batch": int(np.ceil(n_train / 5)), "num_vis": 3072})


def _cifar100(root: Path, n_train: int, n_test: int, source: Path | None, tint: str) -> None:
    base = root / FOLDERS["cifar100"]
    base.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 3), ("test", n_test, 4)):
        x, y = _content(split, n, 100, 32, source, seed=seed, tint=tint)
        _pickle(base / split, {"filenames": [f"proxy_{i}.png" for i in range(n)], "batch_label": f"{split}ing batch",
                               "fine_labels": y.tolist(), "coarse_labels": (y // 5).tolist(), "data": _rows(x)})
    _pickle(base / "meta", {"fine_label_names": [f"class_{k}" for k in range(100)],
                            "coarse_label_names": [f"superclass_{k}" for k in range(20)]})


def _svhn(root: Path, n_train: int, n_test: int, source: Path | None, tint: str | None) -> None:
    base = root / FOLDERS["svhn"]
    base.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 5), ("test", n_test, 6)):
        x, y = _content(split, n, 10, 32, source, seed=seed)
        y = np.where(y == 0, 10, y).astype(np.uint8)[:, None]  # SVHN stores digit 0 as label 10
        scipy.io.savemat(base / f"{split}_32x32.mat", {"X": np.transpose(x, (2, 3, 1, 0)), "y": y})


def _wnid(k: int) -> str:
    return f"n{k:08d}"  # sorts in class order, as the readers' sorted folder names need


def _tiny_imagenet(root: Path, n_train: int, n_test: int, source: Path | None, tint: str) -> None:
    base = root / FOLDERS["tiny_imagenet"]
    wnids = [_wnid(k) for k in range(200)]
    (base / "val" / "images").mkdir(parents=True, exist_ok=True)
    (base / "test" / "images").mkdir(parents=True, exist_ok=True)
    (base / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    (base / "words.txt").write_text("".join(f"{w}\tproxy class {k}\n" for k, w in enumerate(wnids)))
    x, y = _content("train", n_train, 200, 64, source, seed=7, tint=tint)
    counts = dict.fromkeys(wnids, 0)
    boxes: dict[str, list[str]] = {w: [] for w in wnids}
    for w in wnids:
        (base / "train" / w / "images").mkdir(parents=True, exist_ok=True)
    for img, label in zip(x, y):
        w = wnids[label]
        name = f"{w}_{counts[w]}.JPEG"
        counts[w] += 1
        _jpeg(base / "train" / w / "images" / name, img)
        boxes[w].append(f"{name}\t0\t0\t63\t63\n")
    for w in wnids:
        (base / "train" / w / f"{w}_boxes.txt").write_text("".join(boxes[w]))
    x, y = _content("test", n_test, 200, 64, source, seed=8, tint=tint)
    lines = []
    for i, (img, label) in enumerate(zip(x, y)):
        _jpeg(base / "val" / "images" / f"val_{i}.JPEG", img)
        lines.append(f"val_{i}.JPEG\t{wnids[label]}\t0\t0\t63\t63\n")
    (base / "val" / "val_annotations.txt").write_text("".join(lines))
    for i, img in enumerate(x[: min(10, n_test)]):  # the real test split is unlabelled; a few images keep its shape
        _jpeg(base / "test" / "images" / f"test_{i}.JPEG", img)


def _imagenet(root: Path, n_train: int, n_test: int, source: Path | None, tint: str) -> None:
    base = root / FOLDERS["imagenet"]
    wnids = [_wnid(k) for k in range(1000)]
    for split, n, seed, stem in (("train", n_train, 9, None), ("val", n_test, 10, "ILSVRC2012_val")):
        x, y = _content("train" if split == "train" else "test", n, 1000, 224, source, seed=seed,
                        tint=tint)
        for w in wnids:
            (base / split / w).mkdir(parents=True, exist_ok=True)
        for i, (img, label) in enumerate(zip(x, y)):
            w = wnids[label]
            _jpeg(base / split / w / (f"{w}_{i}.JPEG" if stem is None else f"{stem}_{i + 1:08d}.JPEG"), img)


_WRITERS = {"mnist": _mnist, "cifar10": _cifar10, "cifar100": _cifar100, "svhn": _svhn,
            "tiny_imagenet": _tiny_imagenet, "imagenet": _imagenet}


def default_train(name: str) -> int:
    """The training images a proxy gets by default: as many as the smoke budget trains on for that dataset."""
    return SMOKE_TRAIN.get(name, DEFAULT_TRAIN)


def write(name: str, root: str | Path, *, train: int | None = None, test: int = DEFAULT_TEST,
          source: str | Path | None = None, tint: str | None = None) -> Path:
    """Write dataset ``name`` under ``root`` in its real layout from Fashion-MNIST content (read from
    ``source``, a data root, or where ``advclaims.data`` finds it); returns the dataset's folder. ``train``
    None: ``default_train(name)``. ``tint`` (a key of TINTS, for the datasets with hue families only) None: the
    dataset's own (``TINT``); the marker records the one used."""
    if name not in _WRITERS:
        raise ValueError(f"no proxy writer for {name!r}; proxies exist for {', '.join(NAMES)}")
    train = default_train(name) if train is None else train
    for what, n in (("train", train), ("test", test)):
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"--{what} must be a whole number >= 1, got {n!r}")
    if tint is not None and name not in TINT:
        raise ValueError(f"{name}'s proxy has 10 classes and no hue families to tint; tints are for "
                         f"{', '.join(TINT)}")
    if tint is not None and tint not in TINTS:
        raise ValueError(f"unknown tint {tint!r}; known: {', '.join(TINTS)}")
    tint = TINT.get(name) if tint is None else tint
    root = Path(root).expanduser()
    source = Path(source).expanduser() if source is not None else None
    _WRITERS[name](root, train, test, source, tint)
    folder = root / FOLDERS[name]
    content = "Fashion-MNIST"
    if tint is not None:
        content += (f" x hue families (one class per FM class and family; a {tint} random colour of the family "
                    "per image)")
    marker = {"proxy_of": name, "content": content, "train": train, "test": test,
              "written_by": f"advclaims {__version__}"}
    if tint is not None:
        marker["tint"] = tint
    (folder / data_mod.PROXY_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    return folder
