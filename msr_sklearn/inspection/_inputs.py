"""Input helpers shared by the modules of :mod:`msr_sklearn.inspection`.

``_sharing_of`` reads a sharing ``U`` (and its weight shape) from a learned symmetry,
a layer, a sharing or an array.
"""

from __future__ import annotations

import math

import torch

from ..groups._inputs import _to_numpy


def _sharing_of(symmetry, layer=0, weight_shape=None, flatten=True):
    """``(U as float64 ndarray, weight_shape)`` from a symmetry, layer, sharing or array.

    A plain array keeps ``weight_shape`` (``None`` when not given); with ``flatten``,
    weight shapes of more than two axes (conv filters) are viewed as ``(n_out, rest)``.
    """
    from ..nn import MetaLayer, Sharing
    from ..symmetry import LearnedSymmetry

    if isinstance(symmetry, LearnedSymmetry):
        symmetry = symmetry._meta_layer(layer)  # counts only the layers with a sharing
    if isinstance(symmetry, MetaLayer):
        symmetry = symmetry.sharing
    if isinstance(symmetry, Sharing):
        with torch.no_grad():
            U = symmetry.matrix().detach().cpu().double().numpy()
        shape = symmetry.weight_shape
    else:
        U = _to_numpy(symmetry)
        shape = None if weight_shape is None else tuple(int(s) for s in weight_shape)
    if U.ndim != 2:
        raise ValueError(f"U must be a 2-D array (n_weights, k); got shape {U.shape}")
    if shape is not None:
        if U.shape[0] != math.prod(shape):
            raise ValueError(f"U of shape {U.shape} does not fit weights of shape {shape}")
        if flatten and len(shape) != 2:
            shape = (shape[0], math.prod(shape[1:]))
    return U, shape
