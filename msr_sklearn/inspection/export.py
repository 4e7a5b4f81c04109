"""Export: a sharing ``U`` as a frozen torch layer (:func:`export_layer`)."""

from __future__ import annotations

import numpy as np
import torch

from ..groups._inputs import _to_numpy
from ._inputs import _sharing_of


# --------------------------------------------------------------------- export
def export_layer(U, weight_shape=None, weight=None, bias=None, input_shape=None, layer=0):
    """A frozen layer with ``U`` as a buffer and only ``v`` (and the bias) as parameters.

    A :class:`~msr_sklearn.nn.SharedLinear` (or, with ``input_shape``, a
    :class:`~msr_sklearn.nn.SharedConv2d`) over a :class:`~msr_sklearn.nn.FixedSharing`:
    ``state_dict`` round-trips, and the layer trains like any module (only
    ``filters`` and ``bias`` move). Exported from a residual layer (soft symmetry,
    ``W = reshape(U v) + R``), it keeps ``U`` only: a ``UserWarning`` names the
    dropped residual's size (``||R0||`` and its share of the initial weight) and rate.

    Parameters
    ----------
    U : array-like of shape (prod(weight_shape), k), LearnedSymmetry, MetaLayer or Sharing
        E.g. from :func:`harden_to_group` or :func:`partition_sharing`, or a learned
        layer whose ``U`` to export.
    weight_shape : tuple or None, default=None
        ``(n_out, n_in)``, or ``(C_out, C_in, kh, kw)`` for a convolution. Required
        for an array ``U``; a layer or sharing knows its own.
    weight : array-like of shape weight_shape or None
        A weight to approximate (e.g. a soft model's ``W``): ``v`` is its least-squares
        fit, so the layer's weight is its projection onto ``span(U)``. ``None``: ``v = 0``.
    bias : array-like of shape (n_out,) or None
        One value per output (per output channel for a convolution); ``None`` builds
        the layer without a bias.
    input_shape : tuple (C_in, H, W) or None
        Build a valid, stride-1 convolution over such images.
    layer : int, default=0
        The layer of a LearnedSymmetry.

    Returns
    -------
    SharedLinear or SharedConv2d

    Examples
    --------
    >>> from msr_sklearn.groups import symmetric_group
    >>> from msr_sklearn.inspection import export_layer
    >>> layer = export_layer(symmetric_group(4).sharing_basis(), (4, 4))
    >>> sum(p.numel() for p in layer.parameters())
    2

    The ``U`` part of a soft layer, with the residual it drops named:

    >>> import warnings
    >>> from msr_sklearn.nn import DenseSharing, SharedLinear
    >>> soft = SharedLinear(DenseSharing((4, 5), n_filters=2), residual=True)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     hard = export_layer(soft, weight=soft.weight().detach())
    >>> print(caught[0].message)  # doctest: +ELLIPSIS
    export_layer acts on the shared part U of layer 0, a residual layer, and drops its ...
    >>> hard.filters.shape, hard.residual is None
    (torch.Size([2]), True)
    """
    from .soft_symmetry import warn_dropped_residual
    from ..nn import FixedSharing, MetaLayer, SharedConv2d, SharedLinear, Sharing
    from ..symmetry import LearnedSymmetry

    if not isinstance(U, (LearnedSymmetry, MetaLayer, Sharing)):
        if weight_shape is None:
            raise ValueError("an array U needs weight_shape: (n_out, n_in) or "
                             "(C_out, C_in, kh, kw)")
        U = _to_numpy(U)
    else:
        warn_dropped_residual(U, layer, "export_layer")
        U, own = _sharing_of(U, layer, weight_shape, flatten=False)
        if weight_shape is not None and tuple(int(s) for s in weight_shape) != own:
            raise ValueError(f"weight_shape={tuple(weight_shape)} differs from the layer's "
                             f"{own}")
        weight_shape = own
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
