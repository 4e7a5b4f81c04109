"""Export: a sharing ``U`` as a frozen torch layer (:func:`export_layer`)."""

from __future__ import annotations

import numpy as np
import torch

from ._inputs import _to_numpy


# --------------------------------------------------------------------- export
def export_layer(U, weight_shape, weight=None, bias=None, input_shape=None):
    """A frozen layer with ``U`` as a buffer and only ``v`` (and the bias) as parameters.

    A :class:`~msr_sklearn.nn.SharedLinear` (or, with ``input_shape``, a
    :class:`~msr_sklearn.nn.SharedConv2d`) over a :class:`~msr_sklearn.nn.FixedSharing`:
    ``state_dict`` round-trips, and the layer trains like any module (only
    ``filters`` and ``bias`` move).

    Parameters
    ----------
    U : array-like of shape (prod(weight_shape), k)
        E.g. from :func:`harden_to_group` or :func:`partition_sharing`.
    weight_shape : tuple
        ``(n_out, n_in)``, or ``(C_out, C_in, kh, kw)`` for a convolution.
    weight : array-like of shape weight_shape or None
        A weight to approximate (e.g. a soft model's ``W``): ``v`` is its least-squares
        fit, so the layer's weight is its projection onto ``span(U)``. ``None``: ``v = 0``.
    bias : array-like of shape (n_out,) or None
        One value per output (per output channel for a convolution); ``None`` builds
        the layer without a bias.
    input_shape : tuple (C_in, H, W) or None
        Build a valid, stride-1 convolution over such images.

    Returns
    -------
    SharedLinear or SharedConv2d

    Examples
    --------
    >>> from msr_sklearn.groups import export_layer, symmetric_group
    >>> layer = export_layer(symmetric_group(4).sharing_basis(), (4, 4))
    >>> sum(p.numel() for p in layer.parameters())
    2
    """
    from ..nn import FixedSharing, SharedConv2d, SharedLinear

    U = _to_numpy(U)
    shape = tuple(int(s) for s in weight_shape)
    if input_shape is None and len(shape) != 2:
        raise ValueError(f"a linear layer needs weight_shape (n_out, n_in); got {shape} (pass "
                         f"input_shape for a convolution)")
    if input_shape is not None and len(shape) != 4:
        raise ValueError(f"a convolution needs weight_shape (C_out, C_in, kh, kw); got {shape}")
    sharing = FixedSharing(shape, U)
    has_bias = bias is not None
    layer = (SharedLinear(sharing, bias=has_bias) if input_shape is None
             else SharedConv2d(input_shape, sharing, bias=has_bias))
    with torch.no_grad():
        layer.filters.zero_()
        if weight is not None:
            weight = _to_numpy(weight)
            if weight.shape != shape:
                raise ValueError(f"weight has shape {weight.shape}; expected {shape}")
            v, *_ = np.linalg.lstsq(U, weight.ravel(), rcond=None)
            layer.filters.copy_(torch.as_tensor(v))
        if has_bias:
            bias = _to_numpy(bias).ravel()
            if bias.shape != (shape[0],):
                raise ValueError(f"bias has shape {bias.shape}; expected ({shape[0]},)")
            layer.bias.copy_(torch.as_tensor(bias))
    return layer
