"""Data sets built once and kept as ``.npz`` files in scikit-learn's data folder."""

from __future__ import annotations

import os
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
from sklearn.datasets import get_data_home


def cache_path(data_home, name):
    """``get_data_home(data_home) / "msr_sklearn" / name``."""
    return Path(get_data_home(data_home)) / "msr_sklearn" / name


def cached_arrays(path, build):
    """The arrays of the ``.npz`` file ``path``, written first from ``build()`` if absent.

    The file is written aside and renamed, so a reader (another process) never sees a
    half-written one. Arrays are read-only and kept in memory per path.
    """
    path = Path(path)
    if not path.is_file():
        arrays = build()
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as f:
            np.savez_compressed(f, **arrays)
        os.replace(f.name, path)
    return _read(str(path))


@lru_cache(maxsize=8)
def _read(path):
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    for value in arrays.values():
        value.setflags(write=False)
    return arrays
