"""A zoo of task families with known sharings, to choose defaults by their worst case.

Every family is a distribution over linear maps ``y = W x (+ noise)`` whose weights
lie in a known subspace (the *true sharing*) of one dense layer's row-major weights:
what a learned ``U`` of :class:`~msr_sklearn.MetaSymmetryLearner` with
``layer="msr"`` should converge to. The families differ in the group, the size of
the layer and how much signal each direction of the symmetry carries (a weak
direction is the one a prior or a noisy outer loop drops first).

:data:`ZOO` maps a family's name to a :class:`ZooFamily` (its generator and the
protocol it is studied with: ``n_filters = k``, ``n_support``, the angle target);
:func:`make_zoo_tasks` draws one. :func:`make_group_tasks` draws tasks equivariant
under any :class:`~msr_sklearn.groups.FiniteGroup`, with a chosen signal per
direction of its sharing.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np
from sklearn.utils import check_random_state

from ..groups import FiniteGroup, cyclic_group, dihedral_group
from .synthetic import (
    _check_task_arguments,
    make_permutation_tasks,
    make_rotation_tasks,
    make_translation_tasks,
)

__all__ = ["ZOO", "ZooFamily", "conv_weight_subspace", "make_group_tasks",
           "make_lifting_tasks", "make_zoo_tasks", "pair_permutation_group",
           "product_permutation_group"]


def make_group_tasks(group, n_tasks=1000, n_samples=20, scales=None, noise=0.0,
                     return_subspace=False, random_state=None):
    """Linear maps equivariant under ``group``, with a chosen signal per direction.

    With ``U`` the orthonormal sharing basis of ``group``
    (:meth:`~msr_sklearn.groups.FiniteGroup.sharing_basis`, ``r`` columns), each task
    draws ``c ~ N(0, diag(scales^2))`` and has the weights ``vec(W) = c_0 U c`` (row-major,
    ``W`` of shape ``(n_out, n_in)``); ``x ~ N(0, I)`` and ``y = W x``. Since ``U`` is
    orthonormal, ``E ||W x||^2 = c_0^2 sum_j scales_j^2``: direction ``j`` carries the
    share ``scales_j^2 / sum(scales^2)`` of the signal, and ``c_0`` makes the outputs'
    mean variance 1.

    Parameters
    ----------
    group : FiniteGroup
        The symmetry (any representation; permutation groups are fastest).
    n_tasks, n_samples : int
        Tasks, and samples per task.
    scales : array-like of shape (r,) or None, default=None
        Relative standard deviation of each direction's coefficient, in the order of
        the sharing basis' columns; ``None``: equal signal.
    noise : float >= 0, default=0.0
        Standard deviation of Gaussian noise added to ``y``.
    return_subspace : bool, default=False
        Also return ``U``.
    random_state : int, RandomState or None, default=None

    Returns
    -------
    X : ndarray of shape (n_tasks, n_samples, n_in)
    y : ndarray of shape (n_tasks, n_samples, n_out)
    subspace : ndarray of shape (n_out * n_in, r), only if ``return_subspace``

    Examples
    --------
    >>> import numpy as np
    >>> from msr_sklearn.datasets.zoo import make_group_tasks
    >>> from msr_sklearn.groups import cyclic_group
    >>> X, y, U = make_group_tasks(cyclic_group(6), n_tasks=3, return_subspace=True,
    ...                            random_state=0)
    >>> X.shape, y.shape, U.shape            # circulant 6 x 6 maps
    ((3, 20, 6), (3, 20, 6), (36, 6))
    >>> W = np.linalg.lstsq(X[0], y[0], rcond=None)[0].T   # a task's map, recovered
    >>> bool(np.allclose(W, np.roll(np.roll(W, 1, 0), 1, 1)))   # commutes with the shift
    True
    """
    if not isinstance(group, FiniteGroup):
        raise TypeError(f"group must be a msr_sklearn.groups.FiniteGroup; got "
                        f"{type(group).__name__}")
    _check_task_arguments(noise, n_tasks=n_tasks, n_samples=n_samples)
    U = group.sharing_basis()
    r = U.shape[1]
    scales = np.ones(r) if scales is None else np.asarray(scales, dtype=float)
    if scales.shape != (r,) or not np.all(np.isfinite(scales)) or not np.all(scales >= 0) \
            or not scales.any():
        raise ValueError(f"scales must be {r} finite non-negative values, not all 0 (one per "
                         f"column of the group's sharing basis); got shape {scales.shape}")
    scales = scales * np.sqrt(group.n_out / np.sum(scales ** 2))
    rng = check_random_state(random_state)
    coef = rng.standard_normal((n_tasks, r)) * scales
    W = (coef @ U.T).reshape(n_tasks, group.n_out, group.n_in)
    X = rng.standard_normal((n_tasks, n_samples, group.n_in))
    y = np.einsum("tni,toi->tno", X, W)
    if noise:
        y = y + noise * rng.standard_normal(y.shape)
    return (X, y, U) if return_subspace else (X, y)


def _check_size(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")


def pair_permutation_group(n):
    """``S_n`` acting on pairs: ``(P X P^T)`` on ``n x n`` edge features, both sides.

    Its equivariant linear maps ``R^{n x n} -> R^{n x n}`` (flattened row-major) form the
    "2-to-2" layer of Maron et al. (2019): one basis element per partition of the four
    indices ``(i, j, k, l)``, 15 for ``n >= 4``.

    Parameters
    ----------
    n : int
        The number of nodes, at least 2.

    Returns
    -------
    FiniteGroup
        Named ``"Sn on pairs"``, acting on ``n**2`` inputs and outputs.

    Examples
    --------
    >>> from msr_sklearn.datasets.zoo import pair_permutation_group
    >>> pair_permutation_group(5).sharing_basis().shape
    (625, 15)
    """
    _check_size("n", n, 2)
    nodes = np.arange(n * n).reshape(n, n)
    gens = []
    for k in range(1, n):  # the transpositions (0 k) generate S_n
        p = np.arange(n)
        p[[0, k]] = p[[k, 0]]
        gens.append(nodes[p][:, p].ravel())
    return FiniteGroup(gens, names=[f"swap(0,{k})" for k in range(1, n)],
                       name=f"S{n} on pairs")


def product_permutation_group(a, b):
    """``S_a x S_b`` permuting the rows and the columns of an ``a x b`` grid.

    Its equivariant maps of the grid (flattened row-major) are the exchangeable-matrix
    layer of Hartford et al. (2018): the entry, its row's mean, its column's mean and
    the total mean (4 basis elements for ``a, b >= 2``).

    Parameters
    ----------
    a, b : int
        Rows and columns, each at least 2.

    Returns
    -------
    FiniteGroup
        Named ``"Sa x Sb"``, acting on ``a * b`` inputs and outputs.

    Examples
    --------
    >>> from msr_sklearn.datasets.zoo import product_permutation_group
    >>> product_permutation_group(3, 4).sharing_basis().shape
    (144, 4)
    """
    _check_size("a", a, 2)
    _check_size("b", b, 2)
    cells = np.arange(a * b).reshape(a, b)
    gens, names = [], []
    for axis, size in ((0, a), (1, b)):
        for k in range(1, size):
            p = np.arange(size)
            p[[0, k]] = p[[k, 0]]
            gens.append(np.take(cells, p, axis=axis).ravel())
            names.append(f"{'row' if axis == 0 else 'column'} swap(0,{k})")
    return FiniteGroup(gens, names=names, name=f"S{a} x S{b}")


def _ring_distances(U, n):
    """The ring distance ``min(|i - j|, n - |i - j|)`` of each column's first weight."""
    first = np.argmax(np.abs(U) > 0, axis=0)
    i, j = np.divmod(first, n)
    d = np.abs(i - j)
    return np.minimum(d, n - d)


def _ring_tasks(group_fn, n, decay, **kwargs):
    """:func:`make_group_tasks` of a group of the ``n``-gon, each direction's scale
    ``(1 + d) ** -decay`` by the ring distance ``d`` it connects."""
    group = group_fn(n)
    scales = (1.0 + _ring_distances(group.sharing_basis(), n)) ** -decay
    return make_group_tasks(group, scales=scales, **kwargs)


def conv_weight_subspace(filter_subspace, n_channels, image_size, kernel_size=3):
    """Map a basis of conv filter tensors to the dense weights of the convolutions.

    A filter tensor of shape ``(n_channels, 1, kernel_size, kernel_size)`` defines the
    valid, stride-1 cross-correlation of a one-channel ``image_size x image_size`` image,
    a linear map with a dense ``(n_channels * H' * W') x image_size**2`` matrix
    (channel-major outputs, row-major pixels, ``H' = W' = image_size - kernel_size + 1``):
    the weights of a dense MSR layer fitting such tasks.

    Parameters
    ----------
    filter_subspace : ndarray of shape (n_channels * kernel_size**2, r)
        Columns: flattened filter tensors (e.g. the subspace of
        :func:`~msr_sklearn.datasets.make_rotation_tasks`).
    n_channels, image_size, kernel_size : int

    Returns
    -------
    ndarray of shape (n_channels * H' * W' * image_size**2, r)
        An orthonormal basis of the dense weight matrices of the columns' convolutions.

    Examples
    --------
    >>> from msr_sklearn.datasets.zoo import conv_weight_subspace
    >>> from msr_sklearn.datasets import make_rotation_tasks
    >>> _, _, filters = make_rotation_tasks("c4", n_tasks=1, image_size=5,
    ...                                     return_subspace=True, random_state=0)
    >>> conv_weight_subspace(filters, 4, 5).shape      # 4 x 3 x 3 outputs, 25 inputs
    (900, 9)
    """
    h = image_size
    eye = np.eye(h * h).reshape(h * h, h, h)
    windows = np.lib.stride_tricks.sliding_window_view(eye, (kernel_size, kernel_size),
                                                       axis=(-2, -1))  # (hh, H', W', k, k)
    filters = filter_subspace.T.reshape(-1, n_channels, kernel_size, kernel_size)
    w = np.einsum("nijab,rcab->rcijn", windows, filters)  # (r, C, H', W', n_in)
    q, _ = np.linalg.qr(w.reshape(w.shape[0], -1).T)
    return q


def make_lifting_tasks(group="c4", n_tasks=1000, n_samples=20, image_size=5, n_fields=1,
                       noise=0.0, return_subspace=False, random_state=None):
    """:func:`~msr_sklearn.datasets.make_rotation_tasks` with the dense layer's sharing.

    The same tasks (3x3 lifting convolutions of one-channel images under C4 or D4); the
    subspace is that of the dense ``(C_out H' W') x image_size**2`` weight matrices
    (:func:`conv_weight_subspace`), which a dense MSR layer learns.

    Parameters
    ----------
    group : {"c4", "d4"}, default="c4"
    n_tasks, n_samples, image_size, n_fields : int
    noise : float >= 0, default=0.0
    return_subspace : bool, default=False
    random_state : int, RandomState or None, default=None

    Returns
    -------
    X, y[, subspace]
        As :func:`~msr_sklearn.datasets.make_rotation_tasks`; ``subspace`` of shape
        ``(n_outputs * image_size**2, 9 * n_fields)``.

    Examples
    --------
    >>> from msr_sklearn.datasets.zoo import make_lifting_tasks
    >>> X, y, U = make_lifting_tasks("d4", n_tasks=2, return_subspace=True, random_state=0)
    >>> X.shape, y.shape, U.shape
    ((2, 20, 25), (2, 20, 72), (1800, 9))
    """
    out = make_rotation_tasks(group, n_tasks, n_samples=n_samples, image_size=image_size,
                              n_fields=n_fields, noise=noise, return_subspace=return_subspace,
                              random_state=random_state)
    if not return_subspace:
        return out
    X, y, filters = out
    return X, y, conv_weight_subspace(filters, filters.shape[0] // 9, image_size)


@dataclass(frozen=True)
class ZooFamily:
    """A family of the zoo and the protocol it is studied with.

    Parameters
    ----------
    make : callable
        ``make(n_tasks=..., n_samples=..., return_subspace=..., random_state=...)``
        returns ``(X, y[, subspace])``, ``subspace`` an orthonormal basis of the true
        sharing over the dense layer's row-major weights.
    n_filters : int
        ``k``: the true sharing's dimension (the learner's ``n_filters``).
    n_support : int
        Support rows per task.
    max_angle : float
        The largest principal angle (degrees) the defaults must reach in 1000
        meta-steps (issue 21: 2, or 5 for the largest sharings).
    description : str
        What the family is, in a few words.

    Examples
    --------
    >>> from msr_sklearn.datasets import ZOO
    >>> family = ZOO["S10, mean s=1"]
    >>> family.n_filters, family.n_support, family.max_angle
    (2, 5, 2.0)
    >>> X, y, U = family.make(n_tasks=3, return_subspace=True, random_state=0)
    >>> U.shape
    (100, 2)
    """

    make: Callable
    n_filters: int
    n_support: int
    max_angle: float
    description: str


_S10 = "S10 DeepSets y = a x + b mean(x), b ~ N(0, {}²)"

#: name -> :class:`ZooFamily`; every ``make`` draws tasks of one dense linear layer
ZOO = {
    "translation rank 1": ZooFamily(
        partial(make_translation_tasks, rank=1, n_features=70), 3, 1, 2.0,
        "70 -> 68, one 3-tap filter (a convolution)"),
    "translation rank 2": ZooFamily(
        partial(make_translation_tasks, rank=2, n_features=70), 6, 1, 2.0,
        "70 -> 68, two filters mixed by position"),
    "translation rank 5": ZooFamily(
        partial(make_translation_tasks, rank=5, n_features=70), 15, 1, 5.0,
        "70 -> 68, five filters mixed by position"),
    "C12 ring": ZooFamily(
        partial(make_group_tasks, cyclic_group(12)), 12, 5, 2.0,
        "12 -> 12 circulant maps (circular shifts), equal signal per shift"),
    "S10, weak mean (s=0.3)": ZooFamily(
        partial(make_permutation_tasks, n_features=10, mean_scale=0.3), 2, 5, 2.0,
        _S10.format(0.3) + ": the mean term carries 0.9% of the signal"),
    "S10, mean s=1": ZooFamily(
        partial(make_permutation_tasks, n_features=10, mean_scale=1.0), 2, 5, 2.0,
        _S10.format(1) + ": the mean term carries 9% (issue 21's family)"),
    "S10, equal (s=√10)": ZooFamily(
        partial(make_permutation_tasks, n_features=10), 2, 5, 2.0,
        _S10.format("√10") + ": both terms carry half"),
    "S5 narrow (s=1)": ZooFamily(
        partial(make_permutation_tasks, n_features=5, mean_scale=1.0), 2, 5, 2.0,
        "S5 DeepSets, 5 -> 5, the mean term carries 17%"),
    "S50 wide (s=√50)": ZooFamily(
        partial(make_permutation_tasks, n_features=50), 2, 5, 2.0,
        "S50 DeepSets, 50 -> 50 (2,500 weights), equal signal"),
    "S5 on pairs (2-to-2)": ZooFamily(
        partial(make_group_tasks, pair_permutation_group(5)), 15, 5, 5.0,
        "S5 acting on 5 x 5 edge features, 25 -> 25, 15 basis maps, equal signal"),
    "S3 x S4 grid": ZooFamily(
        partial(make_group_tasks, product_permutation_group(3, 4)), 4, 5, 2.0,
        "row and column permutations of a 3 x 4 grid, 12 -> 12, 4 basis maps"),
    "D8 polygon": ZooFamily(
        partial(_ring_tasks, dihedral_group, 8, 0.5), 5, 5, 2.0,
        "D8 on the vertices of an octagon, 8 -> 8, signal falling with distance "
        "(weakest direction 9% of the strongest)"),
    "C4 lifting": ZooFamily(
        partial(make_lifting_tasks, "c4"), 9, 5, 2.0,
        "5x5 image -> 4 maps of 3x3, one 3x3 filter under the rotations"),
    "D4 lifting": ZooFamily(
        partial(make_lifting_tasks, "d4"), 9, 5, 2.0,
        "5x5 image -> 8 maps of 3x3, one filter under rotations and flips"),
    "C4 lifting, 2 fields": ZooFamily(
        partial(make_lifting_tasks, "c4", n_fields=2), 18, 5, 2.0,
        "5x5 image -> 8 maps, two filters"),
    "D4 lifting, 2 fields": ZooFamily(
        partial(make_lifting_tasks, "d4", n_fields=2), 18, 5, 2.0,
        "5x5 image -> 16 maps, two filters"),
    "C4 lifting, noisy (σ=3)": ZooFamily(
        partial(make_lifting_tasks, "c4", noise=3.0), 9, 5, 2.0,
        "C4 lifting with target noise as large as the signal (SNR 1)"),
}


def make_zoo_tasks(name, n_tasks=1000, n_samples=20, return_subspace=False,
                   random_state=None):
    """Draw the tasks of the zoo family ``name`` (a key of :data:`ZOO`).

    Parameters
    ----------
    name : str
        The family.
    n_tasks, n_samples : int
    return_subspace : bool, default=False
        Also return the true sharing, orthonormal over the dense layer's row-major
        weights (compare with ``learner.symmetry_.symmetry_matrix(0)``).
    random_state : int, RandomState or None, default=None

    Returns
    -------
    X, y[, subspace]

    Examples
    --------
    >>> from msr_sklearn.datasets import ZOO, make_zoo_tasks
    >>> len(ZOO) >= 12
    True
    >>> X, y, U = make_zoo_tasks("S5 on pairs (2-to-2)", n_tasks=2, return_subspace=True,
    ...                          random_state=0)
    >>> X.shape, y.shape, U.shape, ZOO["S5 on pairs (2-to-2)"].n_filters
    ((2, 20, 25), (2, 20, 25), (625, 15), 15)
    """
    if name not in ZOO:
        raise ValueError(f"unknown zoo family {name!r}; choose one of {sorted(ZOO)}")
    return ZOO[name].make(n_tasks=n_tasks, n_samples=n_samples,
                          return_subspace=return_subspace, random_state=random_state)
