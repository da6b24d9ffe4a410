"""Datasets: the registry (``registry``: plain data, no torch), the on-disk readers (``readers``), whole splits as
tensors (``splits``: ``load``, ``Split``, ``augment``) and format-true proxies (``proxy``).

``from advclaims import data`` gives the registry's names at once; the tensor side (``data.load``, ``data.Split``,
``data.augment``, ``data.read_arrays``, ``data.read_idx``) is imported on first use, so that importing the
registry, as the verdict layer does, never loads torch.
"""

from advclaims.data.registry import (DATASETS, DEBIAN_FASHION_MNIST, FOLDERS, PROXY_MARKER, DatasetCorrupt, DatasetInfo,
                                     DatasetMissing, default_root, info, proxy_marker)

_LAZY = {"load": "splits", "Split": "splits", "augment": "splits", "read_arrays": "readers", "read_idx": "readers"}

__all__ = ["DATASETS", "DEBIAN_FASHION_MNIST", "FOLDERS", "PROXY_MARKER", "DatasetCorrupt", "DatasetInfo",
           "DatasetMissing", "default_root", "info", "proxy_marker", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"advclaims.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'advclaims.data' has no attribute {name!r}")
