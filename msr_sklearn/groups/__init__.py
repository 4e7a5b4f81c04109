"""Ground-truth sharing for finite groups: the group math, in numpy.

A finite group ``G`` acts on a layer's inputs through ``rho_in`` and on its outputs
through ``rho_out``. The weights of the equivariant layers ``rho_out(g) W = W
rho_in(g)`` form a subspace, and its orthonormal basis ``U^G`` is the *exact* sharing
that MSR tries to learn (Proposition 1 of the paper). With row-major ``vec`` (as in
``W = (U @ v).reshape(n_out, n_in)``) the constraint of one generator reads::

    (rho_out(g) ⊗ rho_in(g)^{-T} - I) vec(W) = 0

This package builds ``U^G`` (:meth:`FiniteGroup.sharing_basis`, by the null space of
the stacked constraints or, for permutation representations, by orbits of weight
indices) and compares subspaces (:func:`compare_subspaces`). What acts on a learned
symmetry (the symmetry report, equivariance errors, hardening, export) is in
:mod:`msr_sklearn.inspection`.

Conventions
-----------
A permutation ``p`` (an integer array) stands for the matrix ``P = I[p]``, so
``(P x)[i] = x[p[i]]`` and, on a batch of row vectors, ``x @ P.T == x[..., p]``.
``cyclic_group(n)`` shifts like ``numpy.roll(x, 1)``. Images and filters are
square grids flattened row-major; a *regular* field has one channel per group element
(channel-major: ``(channel, pixel)``), channel ``c`` holding the filter transformed by
element ``c`` of :func:`grid_transforms`.

Examples
--------
>>> from msr_sklearn.groups import cyclic_group, symmetric_group
>>> cyclic_group(8).sharing_basis().shape        # circulant matrices
(64, 8)
>>> symmetric_group(8).sharing_basis().shape     # lambda I + gamma 11^T (DeepSets)
(64, 2)
"""

from .finite_group import MAX_ORDER, FiniteGroup
from .library import (
    cyclic_group,
    dihedral_group,
    grid_group,
    grid_transforms,
    lifting_filter_stack,
    stacked_sharing,
    symmetric_group,
    transform_grid,
    trivial_group,
)
from .partitions import partition_distance, partition_sharing
from .subspaces import SubspaceComparison, compare_subspaces

__all__ = [
    "MAX_ORDER",
    "FiniteGroup",
    "SubspaceComparison",
    "compare_subspaces",
    "cyclic_group",
    "dihedral_group",
    "grid_group",
    "grid_transforms",
    "lifting_filter_stack",
    "partition_distance",
    "partition_sharing",
    "stacked_sharing",
    "symmetric_group",
    "transform_grid",
    "trivial_group",
]
