"""Exact MSR-Conv sharings: lifting and group convolutions of square grids, as ``U`` fixed.

The group math (pixel permutations, equivariant filter bases) is numpy, in
:mod:`msr_sklearn.groups`; these functions put it into a
:class:`~msr_sklearn.sharing.ConvFilterSharing` with identity field factors, so a
network with them is exactly equivariant for any filter values (the oracle a learned
sharing is compared with).
"""

from __future__ import annotations

import torch

from ..groups import grid_group, grid_transforms, lifting_filter_stack
from ..groups._inputs import _check_positive
from .conv import ConvFilterSharing

__all__ = ["exact_group_conv_sharing", "exact_lifting_sharing"]


def exact_lifting_sharing(group="c4", n_fields=1, in_channels=1, kernel_size=3,
                          learnable=False):
    """An MSR-Conv sharing set to an exact lifting group convolution.

    Identity field and channel factors and the spatial factor
    :func:`~msr_sklearn.groups.lifting_filter_stack`: output channel ``field * m + c``
    holds the field's filter transformed by ``grid_transforms(group)[c]``.

    Parameters
    ----------
    group : {"c4", "d4"}, default="c4"
        The grid group; each field gets ``m = 4`` (or ``8``) output channels.
    n_fields : int, default=1
        The number of independent filters (regular output fields).
    in_channels : int, default=1
        The input channels of the convolution (each treated as a trivial field).
    kernel_size : int, default=3
        The side of the square filters.
    learnable : bool, default=False
        Whether the outer loop may move it (as a starting point) or not (the oracle).

    Returns
    -------
    ConvFilterSharing
        Bound, with ``weight_shape == (n_fields * m, in_channels, kernel_size,
        kernel_size)`` and ``n_fields * in_channels * kernel_size**2`` filter values.

    Examples
    --------
    >>> from msr_sklearn.sharing import exact_lifting_sharing
    >>> exact_lifting_sharing("c4", n_fields=2).weight_shape
    (8, 1, 3, 3)
    """
    _check_positive("n_fields", n_fields)
    _check_positive("in_channels", in_channels)
    stack = lifting_filter_stack(group, kernel_size)
    m = len(grid_transforms(group))
    return _with_spatial_factor(stack, (n_fields * m, in_channels, kernel_size, kernel_size),
                                m, 1, learnable)


def exact_group_conv_sharing(group="c4", n_fields=1, in_fields=1, kernel_size=3,
                             learnable=False):
    """An MSR-Conv sharing set to an exact group convolution between regular fields.

    The layer after a lifting layer (:func:`exact_lifting_sharing`): its input is
    ``in_fields`` regular fields of ``m`` channels (``m = 4`` for C4, ``8`` for D4), and
    each of its ``n_fields`` output fields is regular too: ``in_copies=m``, identity
    field factors and the spatial factor ``S`` an orthonormal basis of the equivariant
    filter blocks of one field pair (``dim = m * kernel_size²``, from
    :func:`~msr_sklearn.groups.grid_group`). Stacking it after a lifting layer keeps
    the whole front-end exactly equivariant.

    Parameters
    ----------
    group : {"c4", "d4"}, default="c4"
        The grid group.
    n_fields : int, default=1
        Output fields (``n_fields * m`` output channels).
    in_fields : int, default=1
        Input fields (``in_fields * m`` input channels, in the order a lifting or
        group convolution layer produces them).
    kernel_size : int, default=3
        The side of the square filters.
    learnable : bool, default=False
        Whether the outer loop may move it.

    Returns
    -------
    ConvFilterSharing
        Bound, with ``weight_shape == (n_fields * m, in_fields * m, kernel_size,
        kernel_size)`` and ``n_fields * in_fields * m * kernel_size**2`` filter values.

    Examples
    --------
    >>> from msr_sklearn.sharing import exact_group_conv_sharing
    >>> sharing = exact_group_conv_sharing("c4", n_fields=2, in_fields=3)
    >>> sharing.weight_shape, sharing.n_filters
    ((8, 12, 3, 3), 216)
    """
    _check_positive("n_fields", n_fields)
    _check_positive("in_fields", in_fields)
    m = len(grid_transforms(group))
    basis = grid_group(kernel_size, group, in_rep="regular", out_rep="regular",
                       out_size=1).sharing_basis()
    return _with_spatial_factor(basis, (n_fields * m, in_fields * m, kernel_size, kernel_size),
                                m, m, learnable)


def _with_spatial_factor(spatial, weight_shape, n_copies, in_copies, learnable):
    """A bound ConvFilterSharing with identity field factors and ``S = spatial``: every
    field pair gets the same block of filters, ``spatial`` applied to its own values."""
    n_fields, in_fields = weight_shape[0] // n_copies, weight_shape[1] // in_copies
    sharing = ConvFilterSharing(n_copies, in_copies, (n_fields, in_fields, spatial.shape[1]),
                                learnable=learnable).bind(weight_shape)
    with torch.no_grad():
        sharing.factors[0].copy_(torch.eye(n_fields))
        sharing.factors[1].copy_(torch.eye(in_fields))
        sharing.factors[2].copy_(torch.as_tensor(spatial))
    return sharing
