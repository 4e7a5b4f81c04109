"""Input helpers shared by the modules of :mod:`msr_sklearn.inspection`.

A *layer* of a learned network is one of its adapted weights (shared, or adapted as
is), counted as :attr:`LearnedSymmetry.weight_names <msr_sklearn.LearnedSymmetry.weight_names>`
counts them. :func:`_layer_of` finds one in a LearnedSymmetry or a MetaModel;
:func:`_sharing_of` reads a sharing ``U`` (and its weight shape) from a layer, a bound
sharing or an array.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from ..groups._inputs import _to_numpy


class _Layer(NamedTuple):
    """One adapted weight of a MetaModel."""

    model: object  # the MetaModel
    name: str  # the parameter name, e.g. "features.0.weight"
    index: int  # its position among the adapted weights
    sharing: object  # its bound Sharing, or None for a weight adapted as is
    weight_shape: tuple

    @property
    def where(self):
        """The layer, for messages."""
        return f"layer {self.index} ({self.name})"


def _is_symmetry(source):
    from ..symmetry import LearnedSymmetry

    return isinstance(source, LearnedSymmetry)


def _is_model(source):
    from ..engine import MetaModel

    return isinstance(source, MetaModel)


def _layer_of(source, layer=0):
    """The :class:`_Layer` ``layer`` (an index or a weight name) of a LearnedSymmetry or
    a MetaModel."""
    model = source._model() if _is_symmetry(source) else source
    names = model.adapted_weights
    if isinstance(layer, str):
        if layer not in names:
            raise ValueError(f"layer={layer!r} is not an adapted weight; they are {names}")
        index = names.index(layer)
    elif isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
        if not -len(names) <= layer < len(names):
            raise ValueError(f"layer={layer} is out of range for {len(names)} adapted "
                             f"weight(s) {names}")
        index = int(layer) % len(names)
    else:
        raise TypeError(f"layer must be an int or a weight name; got {type(layer).__name__}")
    name = names[index]
    if model.roles[name] == "shared":
        sharing = model.sharing(name)
        shape = tuple(sharing.weight_shape)
    else:
        sharing = None
        shape = tuple(model.module.get_parameter(name).shape)
    return _Layer(model, name, index, sharing, shape)


def _unwrap(source, layer=0):
    """``(sharing, weight_shape, where)`` of a LearnedSymmetry's or MetaModel's layer or a
    bound Sharing; ``(source, None, "the layer")`` for anything else (an array).

    ``sharing`` is None for a weight adapted as is (its ``U`` is the identity).
    """
    from ..sharing import Sharing

    if _is_symmetry(source) or _is_model(source):
        found = _layer_of(source, layer)
        return found.sharing, found.weight_shape, found.where
    if isinstance(source, Sharing):
        if source.weight_shape is None:
            raise TypeError(f"{source!r} is a template: bind it to a weight shape first "
                            "(sharing.bind(weight_shape))")
        return source, tuple(source.weight_shape), "the layer"
    return source, None, "the layer"


def _sharing_of(symmetry, layer=0, weight_shape=None, flatten=True):
    """``(U as float64 ndarray, weight_shape)`` from a symmetry, model, sharing or array.

    ``symmetry`` is a LearnedSymmetry or a MetaModel (with ``layer``, an index or a
    weight name), a bound Sharing or an array. A plain array keeps ``weight_shape``
    (``None`` when not given); with ``flatten``, weight shapes of more than two axes
    (conv filters) are viewed as ``(n_out, rest)``.
    """
    from ..sharing import Sharing

    obj, shape, _ = _unwrap(symmetry, layer)
    if shape is not None and not isinstance(obj, Sharing):  # a weight adapted as is
        U = np.eye(math.prod(shape))
    elif isinstance(obj, Sharing):
        with torch.no_grad():
            U = obj.matrix().detach().cpu().double().numpy()
    else:
        U = _to_numpy(obj)
        shape = None if weight_shape is None else tuple(int(s) for s in weight_shape)
    if U.ndim != 2:
        raise ValueError(f"U must be a 2-D array (n_weights, k); got shape {U.shape}")
    if shape is not None:
        if U.shape[0] != math.prod(shape):
            raise ValueError(f"U of shape {U.shape} does not fit weights of shape {shape}")
        if flatten and len(shape) != 2:
            shape = (shape[0], math.prod(shape[1:]))
    return U, shape


def _network_image(source):
    """The image shape ``(C, H, W)`` a LearnedSymmetry's or MetaModel's network reads, or
    None: its ``input_shape`` when that is an image, else the module's own
    ``input_shape`` (a network fitted on flat rows that it reshapes, as ConvNet does)."""
    if _is_symmetry(source):
        candidates = (source.input_shape, source.module.params.get("input_shape"))
    else:
        candidates = (getattr(source.module, "input_shape", None),)
    for shape in candidates:
        if shape is not None and len(tuple(shape)) == 3:
            return tuple(int(s) for s in shape)
    return None


def _network_input_shape(source, input_shape=None):
    """One sample's shape for a LearnedSymmetry's or MetaModel's network.

    ``input_shape`` when given; a LearnedSymmetry's own; a module's ``input_shape`` or
    ``n_features`` attribute (the built-in models have them); else a ValueError.
    """
    if input_shape is not None:
        return tuple(int(s) for s in np.ravel(input_shape))
    if _is_symmetry(source):
        return tuple(source.input_shape)
    module = source.module
    shape = getattr(module, "input_shape", None)
    if shape is None and isinstance(getattr(module, "n_features", None), (int, np.integer)):
        shape = (module.n_features,)
    if shape is None:
        raise ValueError(f"cannot tell what one sample of the {type(module).__name__} looks "
                         "like: pass input_shape= (one sample's shape, e.g. (C, H, W))")
    return tuple(int(s) for s in shape)
