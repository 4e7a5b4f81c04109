"""Input helpers shared by the modules of :mod:`msr_sklearn.groups`.

``_to_numpy`` turns arrays and tensors into float64 ndarrays; ``_check_positive``
validates integer arguments.
"""

from __future__ import annotations

import numpy as np


def _to_numpy(a):
    if hasattr(a, "detach"):  # a torch tensor, read without importing torch
        a = a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=np.float64)


def _check_positive(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")

