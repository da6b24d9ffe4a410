"""Tests for advclaims.data: readers on small files in the real on-disk formats, errors, Split, augment."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import pickletools
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from advclaims import data
from advclaims.data import readers
from advclaims.data import DatasetCorrupt, DatasetMissing

# ---------------------------------------------------------------------------------------------
# hypothesis strategies (named once)

batch_shapes = st.tuples(
    st.integers(1, 4),  # N
    st.integers(1, 3),  # C
    st.integers(1, 6),  # H
    st.integers(1, 6),  # W
)
uint8_batches = batch_shapes.flatmap(lambda shape: hnp.arrays(np.uint8, shape, elements=st.integers(1, 255)))
float_batches = batch_shapes.flatmap(
    lambda shape: hnp.arrays(np.float32, shape, elements=st.floats(0.0, 1.0, width=32, exclude_min=True))
)
pads = st.integers(0, 3)
flips = st.booleans()
seeds = st.integers(0, 2**32 - 1)

AUG_SETTINGS = settings(deadline=None, max_examples=60)


# ---------------------------------------------------------------------------------------------
# writers for the real formats


def idx_bytes(arr: np.ndarray) -> bytes:
    """IDX: two zero bytes, type 0x08 (unsigned byte), ndim, big-endian uint32 dims, payload."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.tobytes()


def write_idx(path: Path, arr: np.ndarray, gz: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = idx_bytes(arr)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)
    return path


def write_mnist_split(folder: Path, split: str, x: np.ndarray, y: np.ndarray, gz: bool = True) -> tuple[Path, Path]:
    prefix = "train" if split == "train" else "t10k"
    img = write_idx(folder / f"{prefix}-images-idx3-ubyte", x, gz)
    lab = write_idx(folder / f"{prefix}-labels-idx1-ubyte", y, gz)
    return img, lab


def cifar_rows(images_hwc: np.ndarray) -> np.ndarray:
    """The CIFAR row layout, written from its description: 1024 red values (row-major), then green, then blue."""
    rows = []
    for img in images_hwc:
        rows.append(np.concatenate([img[:, :, 0].ravel(), img[:, :, 1].ravel(), img[:, :, 2].ravel()]))
    return np.stack(rows).astype(np.uint8)


def write_pickle(path: Path, d: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=2)


def py2_style_pickle(d: dict) -> bytes:
    """A protocol-2 pickle whose str keys are Python-2 byte strings (SHORT_BINSTRING), as in the real CIFAR files."""
    raw = pickle.dumps(d, protocol=2)
    keys = {k for k in d if isinstance(k, str)}
    out, last = [], 0
    for op, arg, pos in pickletools.genops(raw):
        if op.name in ("BINUNICODE", "SHORT_BINUNICODE") and arg in keys:
            # find where this opcode ends: the next opcode's position
            out.append(raw[last:pos])
            enc = arg.encode("latin1")
            out.append(b"U" + bytes([len(enc)]) + enc)
            last = pos + 1 + (4 if op.name == "BINUNICODE" else 1) + len(arg.encode("utf-8"))
    out.append(raw[last:])
    blob = b"".join(out)
    assert any(op.name == "SHORT_BINSTRING" for op, _, _ in pickletools.genops(blob))
    return blob


def rng_images(rng, n, c, h, w):
    return rng.integers(0, 256, size=(n, c, h, w), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST idx


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_mnist_idx_round_trip(tmp_path, gz, split):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    y = np.array([0, 9, 3, 3, 1, 7, 5], dtype=np.uint8)
    write_mnist_split(tmp_path / "MNIST" / "raw", split, x, y, gz=gz)
    s = data.load("mnist", split, root=tmp_path)
    assert s.x.shape == (7, 1, 28, 28) and s.x.dtype == torch.uint8
    assert s.y.shape == (7,) and s.y.dtype == torch.int64
    assert np.array_equal(s.x[:, 0].numpy(), x)
    assert s.y.tolist() == y.tolist()
    assert len(s) == 7 and s.name == "mnist"


def test_loaded_tensors_do_not_alias_read_only_file_buffers(tmp_path, monkeypatch):
    # read_idx views the file's immutable bytes; the Split must own writable memory of its own
    write_mnist_split(tmp_path / "MNIST" / "raw", "test", np.full((2, 28, 28), 9, np.uint8), np.array([1, 2], np.uint8))
    returned = []
    real_read_idx = data.read_idx

    def spy(path):
        arr = real_read_idx(path)
        returned.append(arr)
        return arr

    monkeypatch.setattr(readers, "read_idx", spy)  # where the IDX pair reader looks it up
    s = data.load("mnist", "test", root=tmp_path)
    assert not returned[0].flags.writeable  # the premise: the reader hands out a read-only view
    s.x.zero_()
    s.y.zero_()
    assert bool((returned[0] == 9).all()) and returned[1].tolist() == [1, 2]
    assert int(s.x.sum()) == 0


def test_idx_magic_numbers_and_big_endian_dims(tmp_path):
    # Hand-written headers, independent of idx_bytes: 0x00000803 images, 0x00000801 labels.
    img = tmp_path / "img"
    img.write_bytes(struct.pack(">IIII", 0x00000803, 2, 3, 258) + bytes(range(256)) * 6 + bytes(range(12)))
    lab = tmp_path / "lab"
    lab.write_bytes(struct.pack(">II", 0x00000801, 3) + bytes([4, 5, 6]))
    x = data.read_idx(img)
    assert x.shape == (2, 3, 258) and x.dtype == np.uint8
    assert x[0, 0, 0] == 0 and x[0, 0, 255] == 255 and x[0, 0, 256] == 0 and x[1, 2, 257] == 11
    assert data.read_idx(lab).tolist() == [4, 5, 6]


def test_fashion_mnist_root_takes_precedence_over_system_copy(tmp_path):
    x = np.full((3, 28, 28), 17, dtype=np.uint8)
    y = np.array([2, 0, 1], dtype=np.uint8)
    write_mnist_split(tmp_path / "FashionMNIST" / "raw", "test", x, y)
    s = data.load("fashion_mnist", "test", root=tmp_path)
    assert len(s) == 3 and s.y.tolist() == [2, 0, 1] and bool((s.x == 17).all())


def test_default_root_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVCLAIMS_DATA", str(tmp_path))
    assert data.default_root() == tmp_path
    write_mnist_split(tmp_path / "MNIST" / "raw", "test", np.zeros((2, 28, 28), np.uint8), np.array([1, 2], np.uint8))
    assert data.load("mnist", "test").y.tolist() == [1, 2]
    monkeypatch.delenv("ADVCLAIMS_DATA")
    assert data.default_root() != tmp_path


# ---------------------------------------------------------------------------------------------
# CIFAR


def _cifar10_files(root: Path, rng, per_batch=3, py2_keys=False):
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    imgs, labels = {}, {}
    for i, fname in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        hwc = rng.integers(0, 256, size=(per_batch, 32, 32, 3), dtype=np.uint8)
        lab = [(i + j) % 10 for j in range(per_batch)]
        d = {"batch_label": f"batch {i}", "labels": lab, "data": cifar_rows(hwc),
             "filenames": [f"img{j}.png" for j in range(per_batch)]}
        if py2_keys:
            (base / fname).write_bytes(py2_style_pickle(d))
        else:
            write_pickle(base / fname, d)
        imgs[fname], labels[fname] = hwc, lab
    return imgs, labels


@pytest.mark.parametrize("py2_keys", [False, True], ids=["py3-pickle", "py2-bytestring-keys"])
def test_cifar10_round_trip_and_channel_planes(tmp_path, py2_keys):
    imgs, labels = _cifar10_files(tmp_path, np.random.default_rng(2), py2_keys=py2_keys)
    train = data.load("cifar10", "train", root=tmp_path)
    assert train.x.shape == (15, 3, 32, 32) and train.x.dtype == torch.uint8
    expected = np.concatenate([imgs[f"data_batch_{k}"] for k in range(1, 6)]).transpose(0, 3, 1, 2)
    assert np.array_equal(train.x.numpy(), expected)
    assert train.y.tolist() == sum((labels[f"data_batch_{k}"] for k in range(1, 6)), [])
    test = data.load("cifar10", "test", root=tmp_path)
    assert np.array_equal(test.x.numpy(), imgs["test_batch"].transpose(0, 3, 1, 2))
    assert test.y.dtype == torch.int64 and test.y.tolist() == labels["test_batch"]


def test_cifar_single_pixel_lands_in_red_plane(tmp_path):
    # Row entry 0*1024 + 5*32 + 7 is red at (h=5, w=7); entry 2*1024 + 31*32 + 0 is blue at (31, 0).
    rows = np.zeros((1, 3072), np.uint8)
    rows[0, 5 * 32 + 7] = 200
    rows[0, 2 * 1024 + 31 * 32] = 99
    for fname in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        write_pickle(tmp_path / "cifar-10-batches-py" / fname, {"data": rows, "labels": [4]})
    s = data.load("cifar10", "test", root=tmp_path)
    nz = torch.nonzero(s.x[0]).tolist()
    assert nz == [[0, 5, 7], [2, 31, 0]]
    assert s.x[0, 0, 5, 7] == 200 and s.x[0, 2, 31, 0] == 99


def test_cifar100_uses_fine_labels(tmp_path):
    rng = np.random.default_rng(3)
    base = tmp_path / "cifar-100-python"
    for split, n in (("train", 4), ("test", 2)):
        hwc = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        write_pickle(base / split, {"data": cifar_rows(hwc), "fine_labels": [99, 0, 57, 12][:n],
                                    "coarse_labels": [19, 0, 5, 1][:n], "filenames": ["a"] * n})
        s = data.load("cifar100", split, root=tmp_path)
        assert s.y.tolist() == [99, 0, 57, 12][:n]
        assert np.array_equal(s.x.numpy(), hwc.transpose(0, 3, 1, 2))


# ---------------------------------------------------------------------------------------------
# SVHN


@pytest.mark.parametrize("sub", ["svhn", "."])
def test_svhn_mat_round_trip(tmp_path, sub):
    rng = np.random.default_rng(4)
    n = 5
    X = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)  # (H, W, C, N) as in the real files
    y = np.array([[10], [1], [9], [10], [3]], dtype=np.uint8)      # 10 is digit 0
    folder = tmp_path / sub
    folder.mkdir(exist_ok=True)
    scipy.io.savemat(folder / "test_32x32.mat", {"X": X, "y": y})
    s = data.load("svhn", "test", root=tmp_path)
    assert s.x.shape == (n, 3, 32, 32) and s.x.dtype == torch.uint8
    assert s.y.tolist() == [0, 1, 9, 0, 3]
    for i in range(n):
        for c in range(3):
            assert np.array_equal(s.x[i, c].numpy(), X[:, :, c, i])
    assert s.x[2, 1, 4, 6] == X[4, 6, 1, 2]


# ---------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("name, folder", [
    ("mnist", "MNIST/raw"),
    ("cifar10", "cifar-10-batches-py"),
    ("cifar100", "cifar-100-python"),
    ("svhn", "svhn"),
])
def test_missing_dataset_message(tmp_path, name, folder):
    with pytest.raises(DatasetMissing) as ei:
        data.load(name, "test", root=tmp_path)
    msg = str(ei.value)
    assert repr(name) in msg
    assert str(tmp_path / folder) in msg          # where it looked
    assert "To provide it" in msg and "--repro-download" in msg


def test_missing_fashion_mnist_names_both_places(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    with pytest.raises(DatasetMissing) as ei:
        data.load("fashion_mnist", "train", root=tmp_path)
    msg = str(ei.value)
    assert "'fashion_mnist'" in msg and str(tmp_path / "FashionMNIST" / "raw") in msg
    assert str(tmp_path / "nowhere") in msg and "apt-get install" in msg and "--repro-download" in msg


def test_missing_images_file_only_is_missing(tmp_path):
    # labels present, images absent: still "missing", not a crash
    write_idx(tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte", np.zeros(2, np.uint8), gz=True)
    with pytest.raises(DatasetMissing):
        data.load("mnist", "test", root=tmp_path)


def test_undownloadable_dataset_says_how(tmp_path):
    with pytest.raises(DatasetMissing, match="cannot be downloaded automatically.*tiny-imagenet-200"):
        data.load("tiny_imagenet", "test", root=tmp_path, download=True)
    with pytest.raises(DatasetMissing, match=r"'imagenet'.*imagenet"):
        data.load("imagenet", "test", root=tmp_path)


def test_unknown_dataset_and_split(tmp_path):
    with pytest.raises(ValueError) as ei:
        data.load("mnits", "test", root=tmp_path)
    assert "mnits" in str(ei.value)
    for known in data.DATASETS:
        assert known in str(ei.value)
    with pytest.raises(ValueError, match="split"):
        data.load("mnist", "validation", root=tmp_path)


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
def test_truncated_idx_is_corrupt_and_named(tmp_path, gz):
    raw_dir = tmp_path / "MNIST" / "raw"
    img, _ = write_mnist_split(raw_dir, "test", np.zeros((4, 28, 28), np.uint8), np.zeros(4, np.uint8), gz=gz)
    blob = img.read_bytes()
    img.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DatasetCorrupt) as ei:
        data.load("mnist", "test", root=tmp_path)
    assert str(img) in str(ei.value)


def test_non_idx_file_is_corrupt(tmp_path):
    raw_dir = tmp_path / "MNIST" / "raw"
    raw_dir.mkdir(parents=True)
    (raw_dir / "t10k-images-idx3-ubyte").write_bytes(b"<html>404 not found</html>")
    write_idx(raw_dir / "t10k-labels-idx1-ubyte", np.zeros(1, np.uint8), gz=False)
    with pytest.raises(DatasetCorrupt, match="t10k-images-idx3-ubyte"):
        data.load("mnist", "test", root=tmp_path)


def test_wrong_image_size_is_not_that_dataset(tmp_path):
    write_mnist_split(tmp_path / "MNIST" / "raw", "test", np.zeros((2, 32, 32), np.uint8), np.zeros(2, np.uint8))
    with pytest.raises(DatasetCorrupt, match="not mnist"):
        data.load("mnist", "test", root=tmp_path)


def test_labels_out_of_range_or_count_mismatch_is_corrupt(tmp_path):
    raw_dir = tmp_path / "MNIST" / "raw"
    write_mnist_split(raw_dir, "test", np.zeros((2, 28, 28), np.uint8), np.array([3, 10], np.uint8))
    with pytest.raises(DatasetCorrupt, match="not mnist"):
        data.load("mnist", "test", root=tmp_path)
    write_mnist_split(raw_dir, "train", np.zeros((3, 28, 28), np.uint8), np.array([1, 2], np.uint8))
    with pytest.raises(DatasetCorrupt, match="disagree"):
        data.load("mnist", "train", root=tmp_path)


def test_cifar_wrong_shapes_and_garbage_are_corrupt(tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    # MNIST-sized rows under the CIFAR name
    write_pickle(base / "test_batch", {"data": np.zeros((3, 784), np.uint8), "labels": [0, 1, 2]})
    with pytest.raises(DatasetCorrupt, match="not cifar10"):
        data.load("cifar10", "test", root=tmp_path)
    # right rows, wrong number of labels
    write_pickle(base / "test_batch", {"data": np.zeros((3, 3072), np.uint8), "labels": [0, 1]})
    with pytest.raises(DatasetCorrupt, match="test_batch"):
        data.load("cifar10", "test", root=tmp_path)
    # CIFAR-100 keys under the CIFAR-10 name
    write_pickle(base / "test_batch", {"data": np.zeros((1, 3072), np.uint8), "fine_labels": [0]})
    with pytest.raises(DatasetCorrupt, match="'labels'"):
        data.load("cifar10", "test", root=tmp_path)
    # not a pickle at all
    (base / "test_batch").write_bytes(b"\x1f\x8b not a pickle")
    with pytest.raises(DatasetCorrupt, match="test_batch"):
        data.load("cifar10", "test", root=tmp_path)


def test_svhn_wrong_content_is_corrupt(tmp_path):
    (tmp_path / "svhn").mkdir()
    scipy.io.savemat(tmp_path / "svhn" / "test_32x32.mat", {"X": np.zeros((28, 28, 1, 2), np.uint8), "y": np.ones((2, 1))})
    with pytest.raises(DatasetCorrupt, match="not svhn"):
        data.load("svhn", "test", root=tmp_path)
    scipy.io.savemat(tmp_path / "svhn" / "test_32x32.mat", {"images": np.zeros((2, 3))})
    with pytest.raises(DatasetCorrupt, match="test_32x32.mat"):
        data.load("svhn", "test", root=tmp_path)


# ---------------------------------------------------------------------------------------------
# the real Fashion-MNIST


def _real_fashion(split):
    if not data.DEBIAN_FASHION_MNIST.is_dir() and not os.environ.get("ADVCLAIMS_DATA"):
        pytest.skip(f"Fashion-MNIST not installed: {data.DEBIAN_FASHION_MNIST} is absent and ADVCLAIMS_DATA is unset "
                    "(apt-get install dataset-fashion-mnist)")
    try:
        return data.load("fashion_mnist", split)
    except DatasetMissing as err:
        pytest.skip(f"Fashion-MNIST not available: {err}")


def test_real_fashion_mnist_test_split():
    s = _real_fashion("test")
    assert s.x.shape == (10000, 1, 28, 28) and s.x.dtype == torch.uint8
    assert s.y.dtype == torch.int64
    assert torch.bincount(s.y, minlength=10).tolist() == [1000] * 10
    # the registry's normalisation constants describe this data
    meta = data.info("fashion_mnist")
    px = s.images()
    assert abs(px.mean().item() - meta.mean[0]) < 0.005
    assert abs(px.std().item() - meta.std[0]) < 0.005
    assert s.x.max() == 255 and s.x.min() == 0


def test_real_fashion_mnist_train_split():
    s = _real_fashion("train")
    assert s.x.shape == (60000, 1, 28, 28) and s.x.dtype == torch.uint8
    assert torch.bincount(s.y, minlength=10).tolist() == [6000] * 10


# ---------------------------------------------------------------------------------------------
# Split


def _indexed_split(n=50):
    # image i carries i in its first pixel, so rows can be traced back
    x = torch.zeros(n, 1, 2, 2, dtype=torch.uint8)
    x[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)
    x[:, 0, 1, 1] = 255
    y = torch.arange(n) % 10
    return data.Split("toy", x, y)


def test_subset_deterministic_sorted_and_sized():
    s = _indexed_split()
    a, b, c = s.subset(12, seed=3), s.subset(12, seed=3), s.subset(12, seed=4)
    ids = a.x[:, 0, 0, 0].long()
    assert len(a) == 12 and torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(ids, c.x[:, 0, 0, 0].long())
    assert torch.equal(ids, ids.sort().values) and len(set(ids.tolist())) == 12
    assert torch.equal(a.y, ids % 10)  # labels travel with their images
    assert s.subset(None) is s and len(s.subset(500)) == 50
    with pytest.raises(ValueError):
        s.subset(0)


def test_head_and_images_and_to():
    s = _indexed_split()
    h = s.head(5)
    assert h.x[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4] and h.y.tolist() == [0, 1, 2, 3, 4]
    assert len(s.head(None)) == 50 and len(s.head(99)) == 50
    imgs = s.images([0, 7])
    assert imgs.dtype == torch.float32 and imgs.shape == (2, 1, 2, 2)
    assert imgs[1, 0, 0, 0].item() == pytest.approx(7 / 255) and imgs[0, 0, 1, 1].item() == 1.0
    assert s.x[7, 0, 0, 0] == 7  # images() did not modify the stored uint8 tensor
    assert s.to("cpu").device.type == "cpu"


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("bs", [1, 7, 50, 64])
def test_batches_cover_every_example_once(shuffle, bs):
    s = _indexed_split()
    g = torch.Generator().manual_seed(0) if shuffle else None
    seen, sizes = [], []
    for xb, yb in s.batches(bs, shuffle=shuffle, generator=g):
        ids = (xb[:, 0, 0, 0] * 255).round().long()
        assert xb.dtype == torch.float32 and 0 <= xb.min() and xb.max() <= 1
        assert torch.equal(yb, ids % 10)
        seen += ids.tolist()
        sizes.append(len(yb))
    assert sorted(seen) == list(range(50))
    assert all(sz == bs for sz in sizes[:-1]) and 0 < sizes[-1] <= bs
    if not shuffle:
        assert seen == list(range(50))
    elif bs < 50:
        assert seen != list(range(50))


def test_shuffled_batches_follow_generator():
    s = _indexed_split()
    order = lambda seed: torch.cat([xb[:, 0, 0, 0] for xb, _ in s.batches(8, shuffle=True, generator=torch.Generator().manual_seed(seed))])
    assert torch.equal(order(5), order(5)) and not torch.equal(order(5), order(6))


# ---------------------------------------------------------------------------------------------
# augment


def _crops(x_img: torch.Tensor, pad: int, allow_flip: bool):
    """All crops of the zero-padded (and, if allowed, flipped) image, computed with numpy."""
    variants = [x_img.numpy()]
    if allow_flip:
        variants.append(x_img.numpy()[:, :, ::-1])
    _, h, w = x_img.shape
    for v in variants:
        padded = np.pad(v, ((0, 0), (pad, pad), (pad, pad)))
        for dy in range(2 * pad + 1):
            for dx in range(2 * pad + 1):
                yield padded[:, dy:dy + h, dx:dx + w]


@AUG_SETTINGS
@given(arr=st.one_of(uint8_batches, float_batches), pad=pads, flip=flips, seed=seeds)
def test_augment_keeps_shape_and_dtype(arr, pad, flip, seed):
    x = torch.from_numpy(arr)
    out = data.augment(x, pad=pad, flip=flip, generator=torch.Generator().manual_seed(seed))
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device


@AUG_SETTINGS
@given(arr=st.one_of(uint8_batches, float_batches), seed=seeds)
def test_augment_without_pad_or_flip_is_identity(arr, seed):
    x = torch.from_numpy(arr)
    assert torch.equal(data.augment(x, pad=0, flip=False, generator=torch.Generator().manual_seed(seed)), x)


@AUG_SETTINGS
@given(arr=uint8_batches, pad=pads, flip=flips, seed=seeds)
def test_augment_output_is_a_crop_of_padded_input(arr, pad, flip, seed):
    x = torch.from_numpy(arr)
    out = data.augment(x, pad=pad, flip=flip, generator=torch.Generator().manual_seed(seed))
    for i in range(x.shape[0]):
        o = out[i].numpy()
        assert any(np.array_equal(o, c) for c in _crops(x[i], pad, flip)), f"image {i} is no crop of its input"


@AUG_SETTINGS
@given(arr=uint8_batches, pad=pads, flip=flips, seed=seeds)
def test_augment_values_come_from_input_or_zero(arr, pad, flip, seed):
    x = torch.from_numpy(arr)
    out = data.augment(x, pad=pad, flip=flip, generator=torch.Generator().manual_seed(seed))
    for i in range(x.shape[0]):
        assert set(out[i].unique().tolist()) <= set(x[i].unique().tolist()) | {0}
    if pad == 0:  # nothing to pad with: the multiset of values is kept (inputs have no zeros)
        assert torch.equal(out.flatten(1).sort(1).values, x.flatten(1).sort(1).values)


@AUG_SETTINGS
@given(arr=float_batches, pad=pads, flip=flips, seed=seeds)
def test_augment_seeded_is_deterministic(arr, pad, flip, seed):
    x = torch.from_numpy(arr)
    a = data.augment(x, pad=pad, flip=flip, generator=torch.Generator().manual_seed(seed))
    b = data.augment(x, pad=pad, flip=flip, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(a, b)


def test_augment_uses_every_offset_and_flips_about_half():
    # Distinct pixel values so each (offset, flip) is identifiable from the output.
    n, pad, h, w = 2000, 2, 5, 6
    base = torch.arange(1, h * w + 1, dtype=torch.float32).view(1, 1, h, w)
    x = base.repeat(n, 1, 1, 1)
    out = data.augment(x, pad=pad, flip=True, generator=torch.Generator().manual_seed(0))
    crops = {}
    for flipped in (False, True):
        v = base[0, 0].flip(1) if flipped else base[0, 0]
        padded = torch.nn.functional.pad(v, (pad, pad, pad, pad))
        for dy in range(2 * pad + 1):
            for dx in range(2 * pad + 1):
                crops[(flipped, dy, dx)] = padded[dy:dy + h, dx:dx + w]
    counts = dict.fromkeys(crops, 0)
    for i in range(n):
        key = next(k for k, c in crops.items() if torch.equal(out[i, 0], c))
        counts[key] += 1
    assert all(v > 0 for v in counts.values()), "some crop offset or flip never occurs"
    flipped = sum(v for (f, _, _), v in counts.items() if f)
    assert 0.45 * n < flipped < 0.55 * n
    centre = counts[(False, pad, pad)] + counts[(True, pad, pad)]
    assert 0.5 * n / 25 < centre < 1.5 * n / 25  # offsets uniform over the 25 positions



def test_tiny_imagenet_with_a_bad_annotation_line_is_corrupt_and_named(tmp_path):
    base = tmp_path / "tiny-imagenet-200"
    (base / "train" / "n01").mkdir(parents=True)
    (base / "val").mkdir()
    (base / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99\t0\t0\t1\t1\n")
    with pytest.raises(data.DatasetCorrupt, match=r"val_annotations\.txt line 1 is not .*'val_0\.JPEG\\tn99"):
        data.read_arrays("tiny_imagenet", "test", tmp_path)


def test_the_cifar100_proxy_tells_sub_classes_by_hue_family_under_random_colours():
    """Each image of a >10-class proxy gets a random colour of its sub-class's hue family: its hue lies in the
    family's slice of the wheel, within a family the colours differ (no one exact tint to match), and the tint is
    faint on CIFAR-100 (saturation within TINTS["faint"]), so that the hue takes data to learn."""
    import colorsys

    import numpy as np

    from advclaims.data import proxy

    rng = np.random.default_rng(0)
    sub = rng.integers(0, 10, size=2000)
    rgb = proxy._family_colours(sub, 10, rng)
    hue, sat, _ = np.array([colorsys.rgb_to_hsv(*c) for c in rgb]).T
    assert np.all((hue >= sub / 10 - 1e-6) & (hue < (sub + 1) / 10 + 1e-6))
    low, high = proxy.TINTS["faint"][0]
    assert np.all((sat >= low - 1e-6) & (sat <= high + 1e-6)) and high < 0.1
    for family in range(10):
        own = rgb[sub == family]
        assert len(np.unique(own.round(3), axis=0)) > 0.9 * len(own)  # a colour per image, not one per family
        assert float(np.ptp(hue[sub == family])) > 0.08              # spread over most of its 0.1 slice


def test_a_proxys_tint_is_its_datasets_own_unless_chosen_and_its_marker_names_it(tmp_path):
    """CIFAR-100's proxy is faint by default and vivid when asked (CI's end-to-end test asks, to train on fewer
    images); Tiny-ImageNet's is vivid; the marker records the tint written; a 10-class proxy has no tint to choose."""
    from advclaims.data import proxy

    try:
        data.read_arrays("fashion_mnist", "test", data.default_root(), limit=1)
    except data.DatasetMissing as err:
        pytest.skip(str(err))

    def saturation(root):
        """Each image's tint saturation, read from its channel totals (grey x colour, summed: rounding averages out)."""
        totals = data.load("cifar100", "train", root=root).x.double().sum((2, 3))  # (N, 3)
        top, low = totals.amax(1), totals.amin(1)
        return ((top - low) / top).numpy()

    faint = proxy.write("cifar100", tmp_path / "faint", train=300, test=20)
    vivid = proxy.write("cifar100", tmp_path / "vivid", train=300, test=20, tint="vivid")
    markers = [json.loads((folder / data.PROXY_MARKER).read_text()) for folder in (faint, vivid)]
    assert [m["tint"] for m in markers] == ["faint", "vivid"] and "a vivid random colour" in markers[1]["content"]
    sat_faint, sat_vivid = saturation(tmp_path / "faint"), saturation(tmp_path / "vivid")
    assert sat_faint.max() < proxy.TINTS["faint"][0][1] + 0.005 and sat_vivid.min() > proxy.TINTS["vivid"][0][0] - 0.005
    tiny = proxy.write("tiny_imagenet", tmp_path / "tiny", train=200, test=10)
    assert json.loads((tiny / data.PROXY_MARKER).read_text())["tint"] == "vivid"
    plain = proxy.write("cifar10", tmp_path / "c10", train=50, test=10)
    assert "tint" not in json.loads((plain / data.PROXY_MARKER).read_text())
    with pytest.raises(ValueError, match="10 classes and no hue families"):
        proxy.write("cifar10", tmp_path / "c10b", train=50, test=10, tint="vivid")
    with pytest.raises(ValueError, match="unknown tint 'pastel'"):
        proxy.write("cifar100", tmp_path / "c100b", train=50, test=10, tint="pastel")
