"""Hardening: a learned sharing snapped onto an exact one, or into tied weights.

:func:`harden_to_group` projects onto a group's sharing; :func:`tied_weight_partition`
finds groups of tied weights, :func:`partition_sharing` turns a partition into a
sharing and :func:`partition_distance` compares two partitions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.utils import check_random_state

from ._inputs import _check_positive, _sharing_of
from .finite_group import FiniteGroup, _relabel
from .subspaces import _orth


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
    U : array-like (n_weights, k), LearnedSymmetry, MetaLayer or Sharing
    group : FiniteGroup or DataFrame
        A group, or a :func:`symmetry_report` (its ``attrs["group"]``).
    weight_shape, layer : see :func:`symmetry_report`

    Returns
    -------
    ndarray of shape (n_weights, min(k, dim U^G)), orthonormal columns

    Examples
    --------
    >>> import numpy as np
    >>> from msr_sklearn.groups import compare_subspaces, cyclic_group, harden_to_group
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
    from .._soft_symmetry import warn_dropped_residual

    warn_dropped_residual(U, layer, "harden_to_group")
    U, shape = _sharing_of(U, layer, weight_shape)
    if shape is not None and shape != group.weight_shape:
        raise ValueError(f"the group acts on weights of shape {group.weight_shape}; U has "
                         f"weights of shape {shape}")
    basis = group.sharing_basis()
    q = _orth(U)
    left, _, _ = np.linalg.svd(basis.T @ q, full_matrices=False)
    return basis @ left[:, :min(q.shape[1], basis.shape[1])]


def partition_sharing(labels):
    """The hard sharing of a partition: one unit-norm 0/1 column per label ``>= 0``.

    Weights labelled ``-1`` are tied to zero (no column).

    Parameters
    ----------
    labels : array-like of int, shape (n_weights,)
        The group of each weight (e.g. from :meth:`FiniteGroup.weight_orbits` or
        :func:`tied_weight_partition`); ``-1`` ties a weight to zero.

    Returns
    -------
    ndarray of shape (n_weights, n_labels)
        Orthonormal columns, one per distinct label ``>= 0`` in increasing order;
        column ``j`` is ``1/sqrt(size)`` on the weights of its group, 0 elsewhere.

    Examples
    --------
    >>> from msr_sklearn.groups import partition_sharing
    >>> partition_sharing([0, 1, 0, -1]) ** 2
    array([[0.5, 0. ],
           [0. , 1. ],
           [0.5, 0. ],
           [0. , 0. ]])
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array; got dtype {labels.dtype} and "
                         f"shape {labels.shape}")
    keep = np.flatnonzero(labels >= 0)
    groups, column = np.unique(labels[keep], return_inverse=True)
    sizes = np.bincount(column)
    U = np.zeros((labels.shape[0], groups.shape[0]))
    U[keep, column] = 1.0 / np.sqrt(sizes[column])
    return U


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
    U : array-like (n_weights, k), LearnedSymmetry, MetaLayer or Sharing
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
    >>> from msr_sklearn.groups import cyclic_group, partition_distance, tied_weight_partition
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


def partition_distance(labels_a, labels_b):
    """Fewest weights to move so two partitions agree (Hungarian matching of groups).

    Groups are matched one-to-one to maximize the weights they share; the label
    values themselves do not matter (``-1`` is a group like any other).

    Parameters
    ----------
    labels_a, labels_b : array-like of shape (n_weights,)
        The group label of every weight in each partition (flattened).

    Returns
    -------
    int
        ``n_weights`` minus the weights on which the best matching agrees.

    Examples
    --------
    >>> from msr_sklearn.groups import partition_distance
    >>> partition_distance([0, 0, 1, 1], [5, 5, 2, 2])   # same groups, other names
    0
    >>> partition_distance([0, 0, 0, 1], [0, 0, 1, 1])   # one weight must move
    1
    """
    a, b = np.asarray(labels_a).ravel(), np.asarray(labels_b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"the partitions label {a.shape[0]} and {b.shape[0]} weights")
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    table = np.zeros((ia.max() + 1, ib.max() + 1), dtype=np.int64)
    np.add.at(table, (ia, ib), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return int(a.shape[0] - table[rows, cols].sum())
