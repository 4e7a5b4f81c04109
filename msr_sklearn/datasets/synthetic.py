"""Task generators: families of related tasks that share a symmetry.

Each generator returns tasks as a 3-D pair ``(X, y)`` of shapes
``(n_tasks, n_samples, n_features)`` and ``(n_tasks, n_samples, n_outputs)``, which
:class:`~msr_sklearn.MetaSymmetryLearner` accepts directly; ``return_subspace=True``
also returns an orthonormal basis of the sharing subspace the task weights are
drawn from, to compare a learned ``U`` with. :func:`load_aug_digits_tasks` draws
few-shot classification episodes from scikit-learn's 8×8 digits (clean support,
augmented query).
"""

from __future__ import annotations

import numpy as np
from sklearn.utils import check_random_state

__all__ = ["make_permutation_tasks", "make_rotation_tasks", "make_translation_tasks",
           "translation_sharing"]


def _softmax(a, axis):
    a = a - a.max(axis=axis, keepdims=True)
    e = np.exp(a)
    return e / e.sum(axis=axis, keepdims=True)


def translation_sharing(n_features=70, kernel_size=3):
    """The sharing ``U`` of a valid 1-D convolution: ``(n_out*n_in, kernel_size)``, 0/1.

    Column ``s`` ties ``W[p, p + s]`` for every output position ``p``, so
    ``vec(W) = U w`` (row-major) is the ``n_out × n_features`` banded matrix of the
    convolution with the ``kernel_size``-tap filter ``w``: the ground-truth sharing
    of the rank-1 :func:`make_translation_tasks`.

    Parameters
    ----------
    n_features : int, default=70
        Input length ``n_in``.
    kernel_size : int, default=3
        Filter taps; there are ``n_out = n_features - kernel_size + 1`` outputs.

    Returns
    -------
    U : ndarray of shape (n_out * n_features, kernel_size)
        Entries 0 or 1; its columns are orthogonal, each with ``n_out`` ones.

    Examples
    --------
    >>> import numpy as np
    >>> from msr_sklearn.datasets import translation_sharing
    >>> U = translation_sharing(n_features=4, kernel_size=2)
    >>> U.shape
    (12, 2)
    >>> (U @ np.array([5., 7.])).reshape(3, 4)
    array([[5., 7., 0., 0.],
           [0., 5., 7., 0.],
           [0., 0., 5., 7.]])
    """
    n_out = n_features - kernel_size + 1
    u = np.zeros((n_out, n_features, kernel_size))
    for s in range(kernel_size):
        u[np.arange(n_out), np.arange(n_out) + s, s] = 1.0
    return u.reshape(n_out * n_features, kernel_size)


def make_translation_tasks(n_tasks=1000, n_samples=20, rank=1, n_features=70, kernel_size=3,
                           noise=0.0, return_subspace=False, symmetry_breaking=0.0,
                           shared_breaking=0.0, random_state=None):
    """The paper's 1-D problems: a locally connected ``kernel_size``-tap filter per task.

    ``x ~ N(0, I)`` in ``R^n_features``; ``y[p] = sum_s F[p, s] x[p + s]`` for the
    ``n_features - kernel_size + 1`` output positions. ``rank=1``: one filter ``F[p] = w``
    for every position, ``w ~ N(0, I)`` (a convolution). ``rank=r``: ``F = C B`` with a
    per-task basis ``B ~ N(0, I)`` of shape ``(r, kernel_size)`` mixed by one connectivity
    ``C = softmax(N(0, 1)^{n_out × r})`` shared by all tasks (drawn from ``random_state``
    first, so it is the same for every ``n_tasks``).

    **Approximate symmetry.** With ``symmetry_breaking=eps`` every task's weight matrix
    ``W_t`` (``n_out × n_features``, banded) gets a dense perturbation ``E_t`` of
    Frobenius norm ``eps * ||W_t||_F`` (a Gaussian direction per task); with
    ``shared_breaking=s`` all tasks also get one fixed dense perturbation ``S`` of norm
    ``s * sqrt(E ||W_t||_F^2)`` (drawn right after ``C``, so it is the same for every
    ``n_tasks``). ``y = x (W_t + E_t + S)^T``. With both at 0 (the default) the tasks
    and the random stream are exactly those of the exact problem.

    Parameters
    ----------
    n_tasks, n_samples, rank, n_features, kernel_size : int
    noise : float
        Standard deviation of Gaussian noise added to ``y``.
    return_subspace : bool
        Also return an orthonormal basis ``(n_out*n_features, rank*kernel_size)`` of
        the span of the symmetric parts ``vec(W_t)`` over all tasks (the breaking lies
        outside it).
    symmetry_breaking : float >= 0, default=0.0
        ``eps``: the size of each task's own dense perturbation, relative to that
        task's weight matrix.
    shared_breaking : float >= 0, default=0.0
        ``s``: the size of the perturbation common to all tasks, relative to the
        root-mean-square norm of a task's weight matrix.
    random_state : int, RandomState or None

    Returns
    -------
    X : ndarray of shape (n_tasks, n_samples, n_features)
    y : ndarray of shape (n_tasks, n_samples, n_features - kernel_size + 1)
    subspace : ndarray, only if ``return_subspace``

    Examples
    --------
    >>> import numpy as np
    >>> X, y = make_translation_tasks(n_tasks=4, random_state=0)
    >>> X.shape, y.shape
    ((4, 20, 70), (4, 20, 68))

    Tasks that are convolutions up to a 30% dense perturbation of their own: the same
    inputs and convolutions as the exact tasks, plus ``x E_t^T``:

    >>> X0, y0 = make_translation_tasks(n_tasks=2, n_samples=50, n_features=10,
    ...                                 random_state=0)
    >>> X, y = make_translation_tasks(n_tasks=2, n_samples=50, n_features=10,
    ...                               symmetry_breaking=0.3, random_state=0)
    >>> bool(np.array_equal(X, X0))
    True
    >>> W, E = (np.linalg.lstsq(X[0], t[0], rcond=None)[0].T for t in (y0, y - y0))
    >>> W.shape, round(float(np.linalg.norm(E) / np.linalg.norm(W)), 6)
    ((8, 10), 0.3)
    """
    for name, value in (("n_tasks", n_tasks), ("n_samples", n_samples), ("rank", rank),
                        ("n_features", n_features), ("kernel_size", kernel_size)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    if kernel_size > n_features:
        raise ValueError(f"kernel_size={kernel_size} exceeds n_features={n_features}")
    for name, value in (("noise", noise), ("symmetry_breaking", symmetry_breaking),
                        ("shared_breaking", shared_breaking)):
        if not (isinstance(value, (int, float, np.integer, np.floating))
                and not isinstance(value, bool) and value >= 0 and np.isfinite(value)):
            raise ValueError(f"{name} must be >= 0 and finite; got {value!r}")
    rng = check_random_state(random_state)
    n_out = n_features - kernel_size + 1
    connectivity = np.ones((n_out, 1)) if rank == 1 else _softmax(
        rng.standard_normal((n_out, rank)), axis=1)
    shared = None
    if shared_breaking:
        # E ||W_t||_F^2 = K ||C||_F^2 for B ~ N(0, I)
        shared = _scaled_directions(rng.standard_normal((n_out, n_features)),
                                    shared_breaking * np.sqrt(kernel_size) *
                                    np.linalg.norm(connectivity))
    basis = rng.standard_normal((n_tasks, rank, kernel_size))
    filters = np.einsum("pr,trs->tps", connectivity, basis)  # (T, n_out, K)
    X = rng.standard_normal((n_tasks, n_samples, n_features))
    windows = np.lib.stride_tricks.sliding_window_view(X, kernel_size, axis=-1)  # (T,n,P,K)
    y = np.einsum("tnps,tps->tnp", windows, filters)
    if symmetry_breaking or shared is not None:
        # ||W_t||_F: each of the n_out rows holds its filter F[p] once
        scale = symmetry_breaking * np.linalg.norm(filters, axis=(1, 2))
        dense = _scaled_directions(rng.standard_normal((n_tasks, n_out, n_features)),
                                   scale[:, None, None]) if symmetry_breaking else 0.0
        if shared is not None:
            dense = dense + shared
        y = y + np.einsum("tni,tpi->tnp", X, np.broadcast_to(dense, (n_tasks, n_out,
                                                                      n_features)))
    if noise:
        y = y + noise * rng.standard_normal(y.shape)
    if not return_subspace:
        return X, y
    # vec(W) = sum_{r,s} B[r, s] * (C[:, r] placed on band s): rank*K generating vectors
    band = translation_sharing(n_features, kernel_size).reshape(n_out, n_features, kernel_size)
    gens = np.einsum("pr,pis->rspi", connectivity, band).reshape(-1, n_out * n_features)
    q, _ = np.linalg.qr(gens.T)
    return X, y, q


def _scaled_directions(gaussian, norm):
    """``gaussian`` rescaled to Frobenius norm ``norm`` over its last two axes."""
    return gaussian * (norm / np.linalg.norm(gaussian, axis=(-2, -1), keepdims=True))


def _check_task_arguments(noise, **integers):
    """Positive integers and a non-negative noise level, with messages naming the culprit."""
    for name, value in integers.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0; got {noise!r}")


def _lifting_filters(filters, group):
    """(..., n_fields, k, k) filters -> (..., n_fields * |G|, k, k): every field under every
    element of :func:`~msr_sklearn.groups.grid_transforms` (field-major channels)."""
    from ..groups import grid_transforms, transform_grid

    copies = np.stack([transform_grid(filters, t) for t in grid_transforms(group)], axis=-3)
    return copies.reshape(*filters.shape[:-3], -1, *filters.shape[-2:])


def make_rotation_tasks(group="c4", n_tasks=1000, n_samples=20, image_size=9, kernel_size=3,
                        n_fields=1, noise=0.0, return_subspace=False, random_state=None):
    """2-D lifting convolutions: a task's filters under every 90° rotation (and flip).

    Each task draws ``n_fields`` filters ``psi ~ N(0, I)`` of size
    ``kernel_size × kernel_size``; its map is the valid, stride-1, bias-free
    cross-correlation of a one-channel ``image_size × image_size`` image with the
    ``C_out = n_fields * |G|`` filters ``g · psi_f``, ``g`` running over
    :func:`~msr_sklearn.groups.grid_transforms` (``C4``: 4 rotations, ``D4``: also
    the flipped ones). Rotations of a square grid are pixel permutations, so the
    maps are exactly equivariant: rotating the image rotates each output map and
    permutes the channels of each field (the ``"regular"`` output of
    :func:`~msr_sklearn.groups.grid_group`). The exact analogue of the paper's
    ``2d_rot8`` problems, which use 45° steerable filters.

    Parameters
    ----------
    group : {"c4", "d4"}
    n_tasks, n_samples, image_size, kernel_size, n_fields : int
    noise : float
        Standard deviation of Gaussian noise added to ``y``.
    return_subspace : bool
        Also return an orthonormal basis ``(C_out*kernel_size**2, n_fields*kernel_size**2)``
        of the span of the filter tensors ``vec(W)`` over all tasks, in the layout
        ``(C_out, 1, kh, kw)`` row-major of :class:`~msr_sklearn.nn.ConvFilterSharing`.
    random_state : int, RandomState or None

    Returns
    -------
    X : ndarray of shape (n_tasks, n_samples, image_size**2)
        Images flattened row-major.
    y : ndarray of shape (n_tasks, n_samples, C_out * H' * W')
        Channel-major output maps, ``H' = W' = image_size - kernel_size + 1``.
    subspace : ndarray, only if ``return_subspace``

    Examples
    --------
    >>> from msr_sklearn.datasets import make_rotation_tasks
    >>> X, y, U = make_rotation_tasks("d4", n_tasks=3, image_size=7, return_subspace=True,
    ...                               random_state=0)
    >>> X.shape, y.shape, U.shape          # 8 channels of 5x5; 72 filter weights -> 9
    ((3, 20, 49), (3, 20, 200), (72, 9))
    """
    from ..groups import grid_transforms

    m = len(grid_transforms(group))  # validates group
    _check_task_arguments(noise, n_tasks=n_tasks, n_samples=n_samples, image_size=image_size,
                          kernel_size=kernel_size, n_fields=n_fields)
    if kernel_size > image_size:
        raise ValueError(f"kernel_size={kernel_size} exceeds image_size={image_size}")
    rng = check_random_state(random_state)
    k = kernel_size
    filters = _lifting_filters(rng.standard_normal((n_tasks, n_fields, k, k)), group)
    X = rng.standard_normal((n_tasks, n_samples, image_size, image_size))
    windows = np.lib.stride_tricks.sliding_window_view(X, (k, k), axis=(-2, -1))
    y = np.einsum("tnijab,tcab->tncij", windows, filters).reshape(n_tasks, n_samples, -1)
    if noise:
        y = y + noise * rng.standard_normal(y.shape)
    X = X.reshape(n_tasks, n_samples, -1)
    if not return_subspace:
        return X, y
    # one generating tensor per (field, pixel) of psi; their supports are disjoint
    unit = np.eye(n_fields * k * k).reshape(-1, n_fields, k, k)
    gens = _lifting_filters(unit, group).reshape(n_fields * k * k, -1).T
    return X, y, gens / np.sqrt(m)


def make_permutation_tasks(n_tasks=1000, n_samples=20, n_features=8, noise=0.0,
                           return_subspace=False, mean_scale=None, random_state=None):
    """Permutation-equivariant linear maps ``y = a x + b mean(x)`` (DeepSets layers).

    Each task draws ``a ~ N(0, 1)`` and ``b ~ N(0, s^2)``; ``x ~ N(0, I)``. The
    default ``s = sqrt(n_features)`` makes both terms contribute equally to the
    variance of ``y``; a smaller ``s`` makes the mean term a weak direction of the
    symmetry (it carries ``s^2 / (n + s^2)`` of the variance). Every map commutes
    with every permutation of the features: its weights ``a I + (b / n) 1 1^T`` lie in
    the 2-dimensional ``S_n``-equivariant space.

    Parameters
    ----------
    n_tasks, n_samples, n_features : int
        ``n_features >= 2``.
    noise : float
        Standard deviation of Gaussian noise added to ``y``.
    return_subspace : bool
        Also return an orthonormal basis ``(n_features**2, 2)`` of ``span{I, 1 1^T}``
        (row-major ``vec``).
    mean_scale : float > 0 or None, default=None
        ``s``, the standard deviation of the mean term's coefficient ``b``; ``None``:
        ``sqrt(n_features)`` (equal signal). The random stream does not depend on it.
    random_state : int, RandomState or None

    Returns
    -------
    X : ndarray of shape (n_tasks, n_samples, n_features)
    y : ndarray of shape (n_tasks, n_samples, n_features)
    subspace : ndarray, only if ``return_subspace``

    Examples
    --------
    >>> from msr_sklearn.datasets import make_permutation_tasks
    >>> X, y, U = make_permutation_tasks(n_tasks=4, n_features=5, return_subspace=True,
    ...                                  random_state=0)
    >>> X.shape, y.shape, U.shape
    ((4, 20, 5), (4, 20, 5), (25, 2))

    A weak mean term (about 1% of the variance of ``y`` for ``s = 0.3``, ``n = 10``):

    >>> X, y = make_permutation_tasks(n_tasks=4, n_features=10, mean_scale=0.3,
    ...                               random_state=0)
    """
    _check_task_arguments(noise, n_tasks=n_tasks, n_samples=n_samples, n_features=n_features)
    if n_features < 2:
        raise ValueError(f"n_features must be >= 2 for permutations to act; got {n_features}")
    if mean_scale is None:
        mean_scale = np.sqrt(n_features)
    elif not (np.isscalar(mean_scale) and mean_scale > 0 and np.isfinite(mean_scale)):
        raise ValueError(f"mean_scale must be a positive finite float or None; got "
                         f"{mean_scale!r}")
    rng = check_random_state(random_state)
    a = rng.standard_normal((n_tasks, 1, 1))
    b = rng.standard_normal((n_tasks, 1, 1)) * mean_scale
    X = rng.standard_normal((n_tasks, n_samples, n_features))
    y = a * X + b * X.mean(axis=-1, keepdims=True)
    if noise:
        y = y + noise * rng.standard_normal(y.shape)
    if not return_subspace:
        return X, y
    eye = np.eye(n_features).ravel()
    ones = np.full(n_features * n_features, 1.0)
    q, _ = np.linalg.qr(np.stack([eye, ones], axis=1))
    return X, y, q
