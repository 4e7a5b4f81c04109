"""Ground-truth sharing for finite groups, and diagnostics for a learned ``U``.

A finite group ``G`` acts on a layer's inputs through ``rho_in`` and on its outputs
through ``rho_out``. The weights of the equivariant layers ``rho_out(g) W = W
rho_in(g)`` form a subspace, and its orthonormal basis ``U^G`` is the *exact* sharing
that MSR tries to learn (Proposition 1 of the paper). With row-major ``vec`` (as in
``W = (U @ v).reshape(n_out, n_in)``) the constraint of one generator reads::

    (rho_out(g) ⊗ rho_in(g)^{-T} - I) vec(W) = 0

This module builds ``U^G`` (:meth:`FiniteGroup.sharing_basis`, by the null space of
the stacked constraints or, for permutation representations, by orbits of weight
indices), measures how far a model or a learned ``U`` is from it
(:func:`equivariance_error`, :func:`compare_subspaces`, :func:`symmetry_report` with
its :func:`default_candidates` for every kind of layer),
hardens a learned ``U`` into an exact one (:func:`harden_to_group`,
:func:`tied_weight_partition`) and exports it as a frozen layer
(:func:`export_layer`).

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

from .candidates import candidate_generators, default_candidates
from .diagnostics import equivariance_error, symmetry_report
from .export import export_layer
from .finite_group import MAX_ORDER, FiniteGroup
from .hardening import (
    harden_to_group,
    partition_distance,
    partition_sharing,
    tied_weight_partition,
)
from .library import (
    cyclic_group,
    dihedral_group,
    exact_group_conv_sharing,
    exact_lifting_sharing,
    grid_group,
    grid_transforms,
    lifting_filter_stack,
    stacked_sharing,
    symmetric_group,
    transform_grid,
    trivial_group,
)
from .subspaces import SubspaceComparison, compare_subspaces

__all__ = [
    "FiniteGroup",
    "SubspaceComparison",
    "candidate_generators",
    "compare_subspaces",
    "cyclic_group",
    "default_candidates",
    "dihedral_group",
    "equivariance_error",
    "exact_group_conv_sharing",
    "exact_lifting_sharing",
    "export_layer",
    "grid_group",
    "grid_transforms",
    "harden_to_group",
    "lifting_filter_stack",
    "partition_distance",
    "partition_sharing",
    "stacked_sharing",
    "symmetric_group",
    "symmetry_report",
    "tied_weight_partition",
    "transform_grid",
    "trivial_group",
]
