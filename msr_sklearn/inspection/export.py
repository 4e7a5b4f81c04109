"""Export: a sharing ``U`` as a plain torch layer whose weight only moves inside it."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..groups._inputs import _check_positive, _to_numpy
from ._inputs import _sharing_of, _unwrap

#: the weights' numbers of axes: nn.Linear, nn.Conv1d, nn.Conv2d
_AXES = (2, 3, 4)


def _empty_layer(shape, bias):
    """An ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` for weights of ``shape``, built
    without drawing from torch's global random generator."""
    if len(shape) == 2:
        cls, args = nn.Linear, (shape[1], shape[0])
    else:
        cls = nn.Conv1d if len(shape) == 3 else nn.Conv2d
        args = (shape[1], shape[0], tuple(shape[2:]))
    layer = nn.utils.skip_init(cls, *args, bias=bias)
    with torch.no_grad():
        for p in layer.parameters():
            p.zero_()
    return layer


def _check_image(input_shape, shape):
    """A convolution's ``input_shape`` must have its input channels and fit its kernel."""
    image = tuple(int(s) for s in np.ravel(input_shape))
    if len(image) != len(shape) - 1 or min(image) < 1:
        axes = "(C, L)" if len(shape) == 3 else "(C, H, W)"
        raise ValueError(f"input_shape must be one sample's shape {axes} of positive sizes "
                         f"for weights of shape {shape}; got {input_shape!r}")
    if image[0] != shape[1]:
        raise ValueError(f"input_shape={image} has {image[0]} channel(s); the weights of shape "
                         f"{shape} read {shape[1]}")
    if any(k > n for k, n in zip(shape[2:], image[1:])):
        raise ValueError(f"the {shape[2:]} kernel does not fit the input_shape={image} "
                         "(a valid convolution)")


# --------------------------------------------------------------------- export
def export_layer(U, weight_shape=None, weight=None, bias=None, input_shape=None, layer=0):
    """A plain torch layer whose weight is ``W = reshape(U v)``: only ``v`` (and the bias) train.

    An ``nn.Linear`` for a weight ``(n_out, n_in)``, an ``nn.Conv2d`` for a filter
    tensor ``(C_out, C_in, kh, kw)`` (``nn.Conv1d`` for ``(C_out, C_in, k)``), whose
    ``weight`` is parametrized by a :class:`~msr_sklearn.sharing.FixedSharing` of ``U``
    through :func:`~msr_sklearn.sharing.attach_sharing`
    (:mod:`torch.nn.utils.parametrize`): ``U`` is a buffer, the filter values ``v``
    (``parametrizations.weight.original``) and the bias are the only parameters. It
    goes into any torch network and training loop (learn2learn, Lightning, your own)
    and stays inside the symmetry; ``state_dict`` round-trips.

    The convolutions are *valid* (no padding) with stride 1, as the groups of
    :func:`~msr_sklearn.groups.grid_group` assume (outputs of side ``H - k + 1``). A
    group's rotations of a square image commute with symmetric zero padding too: set
    ``layer.padding`` to use it in a network. To test the layer with
    :func:`equivariance_error` give the images' shape there (``input_shape=``).

    Exported from a residual layer (soft symmetry, ``W = reshape(U v) + R``), the
    layer keeps ``U`` only: a ``UserWarning`` names the dropped residual's size
    (``||R0||`` and its share of the initial weight) and rate.

    Parameters
    ----------
    U : array-like of shape (prod(weight_shape), k), LearnedSymmetry, MetaModel or Sharing
        E.g. from :func:`harden_to_group` or :func:`~msr_sklearn.groups.partition_sharing`;
        or a learned layer whose ``U`` to export: a layer of a
        :class:`~msr_sklearn.LearnedSymmetry` or :class:`~msr_sklearn.engine.MetaModel`,
        or a bound :class:`~msr_sklearn.sharing.Sharing`.
    weight_shape : tuple or None, default=None
        ``(n_out, n_in)``, or ``(C_out, C_in, kh, kw)`` for a convolution. Required
        for an array ``U``; a layer or sharing knows its own.
    weight : array-like of shape weight_shape or None
        A weight to approximate (e.g. a soft model's ``W``): ``v`` is its least-squares
        fit, so the layer's weight is its projection onto ``span(U)``. ``None``: ``v = 0``.
    bias : array-like of shape (n_out,) or None
        One value per output (per output channel for a convolution); ``None`` builds
        the layer without a bias.
    input_shape : tuple (C_in, H, W) or None, default=None
        For a convolution only: the images it will read, checked against its input
        channels and kernel. The layer itself works on any image size.
    layer : int or str, default=0
        The layer of a LearnedSymmetry or MetaModel.

    Returns
    -------
    torch.nn.Linear, torch.nn.Conv1d or torch.nn.Conv2d
        With ``parametrizations.weight[0]`` the FixedSharing of ``U``.

    Examples
    --------
    >>> from msr_sklearn.groups import symmetric_group
    >>> from msr_sklearn.inspection import export_layer
    >>> layer = export_layer(symmetric_group(4).sharing_basis(), (4, 4))
    >>> layer
    ParametrizedLinear(
      in_features=4, out_features=4, bias=False
      (parametrizations): ModuleDict(
        (weight): ParametrizationList(
          (0): FixedSharing(weight_shape=(4, 4), matrix=given)
        )
      )
    )
    >>> sum(p.numel() for p in layer.parameters())   # W = a I + b 11^T
    2

    The ``U`` part of a soft layer, with the residual it drops named:

    >>> import warnings
    >>> from msr_sklearn import LearnedSymmetry
    >>> soft = LearnedSymmetry.initial(n_features=5, n_outputs=4, layer="msr_residual",
    ...                                n_filters=2, random_state=0)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     hard = export_layer(soft)
    >>> print(caught[0].message)  # doctest: +ELLIPSIS
    export_layer acts on the shared part U of layer 0 (0.weight), a residual layer, and ...
    >>> hard.parametrizations.weight.original.shape
    torch.Size([2])
    """
    from ..sharing import FixedSharing, attach_sharing
    from .soft_symmetry import warn_dropped_residual

    if _unwrap(U, layer)[1] is None:  # an array
        if weight_shape is None:
            raise ValueError("an array U needs weight_shape: (n_out, n_in) or "
                             "(C_out, C_in, kh, kw)")
        U = _to_numpy(U)
    else:
        warn_dropped_residual(U, layer, "export_layer")
        U, own = _sharing_of(U, layer, flatten=False)
        if weight_shape is not None and tuple(int(s) for s in weight_shape) != own:
            raise ValueError(f"weight_shape={tuple(weight_shape)} differs from the layer's "
                             f"{own}")
        weight_shape = own
    shape = tuple(int(s) for s in weight_shape)
    if len(shape) not in _AXES:
        raise ValueError(f"weight_shape must be (n_out, n_in) for a linear layer or (C_out, "
                         f"C_in, kh, kw) for a convolution; got {shape}")
    for s in shape:
        _check_positive("every size of weight_shape", s)
    if input_shape is not None:
        if len(shape) == 2:
            raise ValueError(f"input_shape is for a convolution; weights of shape {shape} make "
                             "a linear layer, which reads flat vectors")
        _check_image(input_shape, shape)
    sharing = FixedSharing(U).bind(shape)  # checks that U fits the shape
    v = np.zeros(U.shape[1])
    if weight is not None:
        weight = _to_numpy(weight)
        if weight.shape != shape:
            raise ValueError(f"weight has shape {weight.shape}; expected {shape}")
        v, *_ = np.linalg.lstsq(U, weight.ravel(), rcond=None)
    has_bias = bias is not None
    module = _empty_layer(shape, has_bias)
    attach_sharing(module, "weight", sharing,
                   {"filters": torch.as_tensor(v, dtype=sharing.matrix().dtype)})
    if has_bias:
        bias = _to_numpy(bias).ravel()
        if bias.shape != (shape[0],):
            raise ValueError(f"bias has shape {bias.shape}; expected ({shape[0]},)")
        with torch.no_grad():
            module.bias.copy_(torch.as_tensor(bias))
    return module
