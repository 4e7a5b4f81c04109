"""Partitions of a layer's weights into tied groups, as sharings.

A partition labels every weight with its group (``-1``: tied to zero); its *hard
sharing* has one 0/1 column per group. Group orbits (:meth:`FiniteGroup.weight_orbits
<msr_sklearn.groups.FiniteGroup.weight_orbits>`) and hardened learned sharings
(:func:`msr_sklearn.inspection.tied_weight_partition`) are partitions.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["partition_distance", "partition_sharing"]

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

