"""Hardening: a learned sharing snapped onto an exact one, or into tied weights.

:func:`harden_to_group` projects onto a group's sharing; :func:`tied_weight_partition`
finds groups of tied weights, :func:`partition_sharing` turns a partition into a
sharing (in :mod:`msr_sklearn.groups`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.utils import check_random_state

from ..groups._inputs import _check_positive
from ._inputs import _sharing_of
from ..groups.finite_group import FiniteGroup, _relabel
from ..groups.subspaces import _orth


# --------------------------------------------------------------------- hardening
def harden_to_group(U, group, weight_shape=None, layer=0):
    """Snap a learned sharing onto a group's exact sharing: ``orth(P_G U)``.

    The result spans the projection of ``span(U)`` onto ``U^G``: all of ``U^G`` when
    ``span(U)`` contains it (the usual case after meta-learning), otherwise the
    ``k`` directions of ``U^G`` nearest to ``span(U)``. Every weight in it is exactly
    equivariant; the nearest hardened weight to a soft ``W = U v`` is ``P_G W``
    (see :func:`export_layer` with ``weight=``). Of a residual layer (soft symmetry,
    ``W = reshape(U v) + R``) only ``U`` is hardened: a ``UserWarning`` names the
    dropped residual's size (``||R0||`` and its share of the initial weight) and rate.

    Parameters
    ----------
    U : array-like (n_weights, k), LearnedSymmetry, MetaModel or Sharing
    group : FiniteGroup or DataFrame
        A group, or a :func:`symmetry_report` (its ``attrs["group"]``).
    weight_shape, layer : see :func:`symmetry_report`

    Returns
    -------
    ndarray of shape (n_weights, min(k, dim U^G)), orthonormal columns

    Examples
    --------
    >>> import numpy as np
    >>> from msr_sklearn.groups import compare_subspaces, cyclic_group
    >>> from msr_sklearn.inspection import harden_to_group
    >>> g = cyclic_group(5)
    >>> noisy = g.sharing_basis() + 1e-3 * np.random.default_rng(0).normal(size=(25, 5))
    >>> hard = harden_to_group(noisy, g, weight_shape=(5, 5))
    >>> compare_subspaces(hard, g.sharing_basis()).max_angle < 1e-10
    True
    """
    if isinstance(group, pd.DataFrame):
        if "group" not in group.attrs:
            raise ValueError("the DataFrame is no symmetry_report (attrs has no 'group')")
        group = group.attrs["group"]
    if not isinstance(group, FiniteGroup):
        raise TypeError(f"group must be a FiniteGroup or a symmetry_report; got "
                        f"{type(group).__name__}")
    from .soft_symmetry import warn_dropped_residual

    warn_dropped_residual(U, layer, "harden_to_group")
    U, shape = _sharing_of(U, layer, weight_shape)
    if shape is not None and shape != group.weight_shape:
        raise ValueError(f"the group acts on weights of shape {group.weight_shape}; U has "
                         f"weights of shape {shape}")
    basis = group.sharing_basis()
    q = _orth(U)
    left, _, _ = np.linalg.svd(basis.T @ q, full_matrices=False)
    return basis @ left[:, :min(q.shape[1], basis.shape[1])]




def tied_weight_partition(U, n_groups=None, tol=0.1, n_probes=8, weight_shape=None, layer=0,
                          random_state=None):
    """Harden a soft sharing into tied groups of weights (``-1``: tied to zero).

    ``n_probes`` random weights ``W = P_U z`` of ``span(U)`` are drawn; each weight
    index becomes the point ``(W_1[i], ..., W_probes[i])`` (scaled to unit RMS). Indices
    whose points coincide are tied: with ``n_groups=None`` all points closer than
    ``tol`` are linked (single linkage, by a KD-tree); otherwise
    :class:`sklearn.cluster.KMeans` makes ``n_groups`` clusters (a zero group counts
    as one). A cluster whose centre is within ``tol`` of 0 becomes label ``-1``.

    Parameters
    ----------
    U : array-like (n_weights, k), LearnedSymmetry, MetaModel or Sharing
    n_groups : int or None
    tol : float
        Linking distance and zero threshold, in units of the RMS weight.
    n_probes : int
    weight_shape, layer : see :func:`symmetry_report` (only ``U``'s rows matter here)
    random_state : int, RandomState or None

    Returns
    -------
    labels : ndarray of shape (n_weights,)
        Numbered by first appearance; feed to :func:`partition_sharing` and compare
        with :func:`partition_distance`.

    Examples
    --------
    >>> from msr_sklearn.groups import cyclic_group, partition_distance
    >>> from msr_sklearn.inspection import tied_weight_partition
    >>> g = cyclic_group(6)
    >>> labels = tied_weight_partition(g.sharing_basis(), random_state=0)
    >>> partition_distance(labels, g.weight_orbits())
    0
    """
    from scipy.spatial import cKDTree

    U, _ = _sharing_of(U, layer, weight_shape)
    q = _orth(U)
    _check_positive("n_probes", n_probes)
    if not tol > 0:
        raise ValueError(f"tol must be > 0; got {tol!r}")
    rng = check_random_state(random_state)
    points = q @ rng.standard_normal((q.shape[1], n_probes))
    points /= np.sqrt(np.mean(points ** 2))
    if n_groups is None:
        pairs = cKDTree(points).query_pairs(tol, output_type="ndarray")
        n = points.shape[0]
        graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
        _, labels = connected_components(graph, directed=False)
    else:
        from sklearn.cluster import KMeans

        _check_positive("n_groups", n_groups)
        if n_groups > points.shape[0]:
            raise ValueError(f"n_groups={n_groups} exceeds the {points.shape[0]} weights")
        labels = KMeans(n_clusters=n_groups, n_init=4, random_state=rng).fit(points).labels_
    counts = np.bincount(labels)
    centres = np.zeros((counts.shape[0], n_probes))
    np.add.at(centres, labels, points)
    centres /= counts[:, None]
    zero = np.linalg.norm(centres, axis=1) < tol
    labels = np.where(zero[labels], -1, labels)
    return _relabel(labels)

