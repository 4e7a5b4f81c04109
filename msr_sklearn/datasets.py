"""Task generators: families of related tasks that share a symmetry.

Each generator returns tasks as a 3-D pair ``(X, y)`` of shapes
``(n_tasks, n_samples, n_features)`` and ``(n_tasks, n_samples, n_outputs)``, which
:class:`~msr_sklearn.MetaSymmetryLearner` accepts directly; ``return_subspace=True``
also returns an orthonormal basis of the sharing subspace the task weights are
drawn from, to compare a learned ``U`` with.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils import check_random_state


def _softmax(a, axis):
    a = a - a.max(axis=axis, keepdims=True)
    e = np.exp(a)
    return e / e.sum(axis=axis, keepdims=True)


def translation_sharing(n_features=70, kernel_size=3):
    """The sharing ``U`` of a valid 1-D convolution: ``(n_out*n_in, kernel_size)``, 0/1.

    Column ``s`` ties ``W[p, p + s]`` for every output position ``p``.
    """
    n_out = n_features - kernel_size + 1
    u = np.zeros((n_out, n_features, kernel_size))
    for s in range(kernel_size):
        u[np.arange(n_out), np.arange(n_out) + s, s] = 1.0
    return u.reshape(n_out * n_features, kernel_size)


def make_translation_tasks(n_tasks=1000, n_samples=20, rank=1, n_features=70, kernel_size=3,
                           noise=0.0, return_subspace=False, random_state=None):
    """The paper's 1-D problems: a locally connected ``kernel_size``-tap filter per task.

    ``x ~ N(0, I)`` in ``R^n_features``; ``y[p] = sum_s F[p, s] x[p + s]`` for the
    ``n_features - kernel_size + 1`` output positions. ``rank=1``: one filter ``F[p] = w``
    for every position, ``w ~ N(0, I)`` (a convolution). ``rank=r``: ``F = C B`` with a
    per-task basis ``B ~ N(0, I)`` of shape ``(r, kernel_size)`` mixed by one connectivity
    ``C = softmax(N(0, 1)^{n_out × r})`` shared by all tasks (drawn from ``random_state``
    first, so it is the same for every ``n_tasks``).

    Parameters
    ----------
    n_tasks, n_samples, rank, n_features, kernel_size : int
    noise : float
        Standard deviation of Gaussian noise added to ``y``.
    return_subspace : bool
        Also return an orthonormal basis ``(n_out*n_features, rank*kernel_size)`` of
        the span of ``vec(W)`` over all tasks.
    random_state : int, RandomState or None

    Returns
    -------
    X : ndarray of shape (n_tasks, n_samples, n_features)
    y : ndarray of shape (n_tasks, n_samples, n_features - kernel_size + 1)
    subspace : ndarray, only if ``return_subspace``

    Examples
    --------
    >>> X, y = make_translation_tasks(n_tasks=4, random_state=0)
    >>> X.shape, y.shape
    ((4, 20, 70), (4, 20, 68))
    """
    for name, value in (("n_tasks", n_tasks), ("n_samples", n_samples), ("rank", rank),
                        ("n_features", n_features), ("kernel_size", kernel_size)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    if kernel_size > n_features:
        raise ValueError(f"kernel_size={kernel_size} exceeds n_features={n_features}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0; got {noise!r}")
    rng = check_random_state(random_state)
    n_out = n_features - kernel_size + 1
    connectivity = np.ones((n_out, 1)) if rank == 1 else _softmax(
        rng.standard_normal((n_out, rank)), axis=1)
    basis = rng.standard_normal((n_tasks, rank, kernel_size))
    filters = np.einsum("pr,trs->tps", connectivity, basis)  # (T, n_out, K)
    X = rng.standard_normal((n_tasks, n_samples, n_features))
    windows = np.lib.stride_tricks.sliding_window_view(X, kernel_size, axis=-1)  # (T,n,P,K)
    y = np.einsum("tnps,tps->tnp", windows, filters)
    if noise:
        y = y + noise * rng.standard_normal(y.shape)
    if not return_subspace:
        return X, y
    # vec(W) = sum_{r,s} B[r, s] * (C[:, r] placed on band s): rank*K generating vectors
    band = translation_sharing(n_features, kernel_size).reshape(n_out, n_features, kernel_size)
    gens = np.einsum("pr,pis->ris", connectivity, band).reshape(-1, n_out * n_features)
    q, _ = np.linalg.qr(gens.T)
    return X, y, q
