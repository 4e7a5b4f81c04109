"""The paper's 2-D synthetic problems: tasks made by random C8 / D8 steerable convolutions.

The paper's ``2d_rot8`` and ``2d_rot8_flip`` data (its ``generate_synthetic_data.py``)
are the outputs of a random e2cnn ``R2Conv`` from one trivial field to 3 regular
fields of ``C8`` (24 channels) or ``D8`` (48 channels), 3×3 filters, no bias, with a
fresh generalized-He draw of its steerable-basis weights per task, fed 20 images of
white noise ``N(0, 1)^{32×32}``. :func:`make_rotation2d_tasks` rebuilds that
construction in numpy, without e2cnn.

The steerable basis
-------------------
A trivial → regular (*lifting*) convolution has, for each output field, one base
filter ``psi`` and one channel per group element ``g``, holding ``psi`` transformed by
``g`` (``K_g(p) = psi(g^-1 p)``). e2cnn samples ``psi`` from functions on the plane:
on the 3×3 grid (coordinates ``x`` right, ``y`` up, origin at the centre) it uses
two rings, radius 0 (Gaussian width 0.005: the centre pixel) and radius 1 (width 0.4),
each carrying circular harmonics ``cos(m theta), sin(m theta)`` up to its frequency
cut-off (0 on the inner ring, 2 on the outer one: e2cnn's default ``_manual_fco1``).
So ``psi`` lies in a 6-dimensional space (centre; outer ring at frequencies 0, 1, 2),
and the rotated copies are sampled from the *rotated function*, not permuted pixels:
rotations by 90° (and the flips) map the grid onto itself and are exact pixel
permutations of the filters, rotations by 45° are not (a corner sits at radius
``sqrt(2)``, an edge pixel at 1). 3 fields give the basis dimension 18 of the paper's
generator, for C8 and D8 alike.

The weights follow e2cnn's generalized He initialization over its normalized basis:
every irreducible block of a field contributes ``d / |G|`` to the expected squared
norm of a channel's filter, shared equally by the block's basis elements. For these
layers that is ``E ||W_c||^2 = 1/|G| + 4/N`` (frequency 0: ``1/|G|``, split between
the two rings; each of the frequencies 1 and 2: ``2/N``, split between ``cos`` and
``sin``), so ``5/8`` for C8 and ``9/16`` for D8, and as the inputs are white, each
target's variance is that number.

Comparison with the paper's generator
-------------------------------------
Measured once against e2cnn 0.2.3 (``benchmarks/rotation2d_e2cnn.py``; e2cnn is not
a dependency):

* basis dimension 18 for C8 and D8 in both, the same channel order (field-major;
  channel ``f * 8 + k`` of a field holds ``psi`` rotated by ``k * 45°`` after ``f``
  left-right flips), every e2cnn channel matched to ours to 4e-8;
* the largest principal angle between the two 18-dimensional spans of the
  ``(C_out, 1, 3, 3)`` weights is 1.1e-6° (C8) and 1.3e-6° (D8), e2cnn's float32
  round-off;
* the covariance of the filters over tasks (e2cnn's expanded basis and He variances
  against ours) agrees to a relative 5e-8 (C8) and 1.2e-7 (D8);
* target variance 0.625 (C8) and 0.5625 (D8) by the formula above; over 200 tasks
  e2cnn's empirical ones are 0.615 ± 0.014 and 0.566 ± 0.016 (standard errors), ours
  0.643 and 0.581;
* 1,000 C8 tasks at the paper's size take 2 to 6 s of CPU and 1.73 GB (targets) plus
  82 MB (inputs), generated task by task in float32 (peak 2.1 GB resident, with
  Python and torch loaded); e2cnn's layer takes 2 to 3 ms per task on one thread.

What differs is the random stream (numpy instead of torch, and seeded here): the tasks
follow the paper's distribution, not its draws.

Exactness: rotations by 90° and the flips permute the filter pixels, so a rotated
or flipped image gives exactly the rotated maps with each field's channels permuted
(checked to 1e-12). Rotations by 45° are exact for the continuous filters but not for
their 3×3 samples: on smooth images (sums of Gaussian blobs 2.5 pixels wide, the map
compared at the rotated points without interpolation) the relative equivariance
error is 0.9 % on average and 2 % at most over 20 draws (1.2 % for 2-pixel blobs,
0.4 % for 4-pixel ones), against 1.4 for unconstrained random filters. On the white
noise the tasks use, a 45° rotation of the image is not defined on the grid at all.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
from sklearn.utils import check_random_state
from threadpoolctl import threadpool_limits

__all__ = ["ROTATION2D_GROUPS", "make_rotation2d_tasks", "rotation2d_sharing"]

#: the groups ``make_rotation2d_tasks`` accepts: name -> (rotations N, with flips)
ROTATION2D_GROUPS = {"c8": (8, False), "d8": (8, True)}

_KERNEL = 3
#: e2cnn's defaults for a 3×3 filter: ring radii, Gaussian widths, frequency cut-offs
_RINGS = ((0.0, 0.005, 0), (1.0, 0.4, 2))


def _check_group(group):
    if not isinstance(group, str) or group not in ROTATION2D_GROUPS:
        raise ValueError(f"group must be one of {sorted(ROTATION2D_GROUPS)}; got {group!r}")
    return ROTATION2D_GROUPS[group]


def _check_positive(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def _field_basis(group):
    """``(|G| * 9, 6)`` basis of one regular field and its e2cnn-He standard deviations.

    Column ``b`` is the field's 3×3 filters (channel-major, rows then columns) for the
    ``b``-th basis function of ``psi``: centre, outer ring at frequency 0, then
    ``cos theta, sin theta, cos 2 theta, sin 2 theta`` on the outer ring.
    """
    n, flips = ROTATION2D_GROUPS[group]
    order = n * (2 if flips else 1)
    offsets = np.arange(_KERNEL) - (_KERNEL - 1) / 2
    x = np.tile(offsets, _KERNEL)                 # column offset, right positive
    y = -np.repeat(offsets, _KERNEL)              # row offset, up positive (as e2cnn)
    radius, theta = np.hypot(x, y), np.arctan2(y, x)
    functions = []                                # (radial profile, frequency, phase)
    for ring, width, cutoff in _RINGS:
        profile = np.exp(-0.5 * (radius - ring) ** 2 / width ** 2)
        functions.append((profile, 0, 0.0))
        for m in range(1, cutoff + 1):
            # a harmonic has no angle at the centre: e2cnn leaves it out there
            masked = np.where(radius > 0, profile, 0.0)
            functions += [(masked, m, 0.0), (masked, m, np.pi / 2)]
    basis = np.empty((order, _KERNEL * _KERNEL, len(functions)))
    for f in range(2 if flips else 1):
        for k in range(n):
            # channel f * n + k holds psi(g^-1 p), g = rotation by k*360/n after f flips
            angle = theta - 2 * np.pi * k / n
            if f:
                angle = np.pi - angle
            for b, (profile, m, phase) in enumerate(functions):
                basis[f * n + k, :, b] = profile * np.cos(m * angle - phase)
    basis = basis.reshape(order * _KERNEL * _KERNEL, len(functions))
    # e2cnn's He init: each irreducible block adds d/|G| to E||W_c||^2, shared by its
    # elements; per channel that is 1/|G| at frequency 0 (two rings) and 2/n for each
    # pair cos/sin of a frequency m >= 1 (C_n: one 2-d irrep; D_n: two copies of one)
    energy = np.array([1 / order / 2 if m == 0 else 1 / n for _, m, _ in functions])
    per_channel = (basis ** 2).sum(axis=0) / order
    return basis, np.sqrt(energy / per_channel)


def rotation2d_sharing(group="c8", n_fields=3):
    """The true sharing ``U`` of :func:`make_rotation2d_tasks`: its filters' span.

    Parameters
    ----------
    group : {"c8", "d8"}, default="c8"
        Rotations by multiples of 45° (``|G| = 8``), or also their reflections
        (``|G| = 16``).
    n_fields : int, default=3
        Regular output fields; ``C_out = n_fields * |G|``.

    Returns
    -------
    U : ndarray of shape (C_out * 9, 6 * n_fields)
        Orthonormal columns, rows in the row-major order of the ``(C_out, 1, 3, 3)``
        convolution weight (field-major channels). Column ``6 * j + b`` lives on field
        ``j``; within a field the columns are the Gram-Schmidt orthonormalization of
        the basis functions centre, ring, ``cos theta``, ``sin theta``, ``cos 2 theta``,
        ``sin 2 theta``. Every task's weight is ``U @ v`` for some ``v``, so the exact
        oracle adapts ``v`` with ``U`` fixed.

    Examples
    --------
    >>> import numpy as np
    >>> from msr_sklearn.datasets import rotation2d_sharing
    >>> U = rotation2d_sharing("c8")
    >>> U.shape                                  # 24 channels of 3x3 -> 18 parameters
    (216, 18)
    >>> bool(np.allclose(U.T @ U, np.eye(18)))
    True
    >>> rotation2d_sharing("d8", n_fields=1).shape
    (144, 6)
    """
    _check_group(group)
    n_fields = _check_positive("n_fields", n_fields)
    q, r = np.linalg.qr(_field_basis(group)[0])
    q = q * np.sign(np.diag(r))                   # a unique sign: positive diagonal of R
    return np.kron(np.eye(n_fields), q)


def make_rotation2d_tasks(group="c8", n_tasks=1000, n_samples=20, image_size=32, n_fields=3,
                          random_state=None, return_subspace=False):
    """Regression tasks made by random C8 or D8 steerable convolutions (the paper's 2-D data).

    Each task draws the weights of a trivial → ``n_fields`` regular fields
    convolution over the steerable basis (as the paper's generator: e2cnn's basis and
    generalized He initialization, see the module notes), and ``n_samples`` images
    ``x ~ N(0, 1)``; its targets are the valid, stride-1, bias-free cross-correlation
    of each image with the ``C_out = n_fields * |G|`` filters (3×3). Rotating an
    image by 90° (or flipping it) rotates every output map and permutes the channels
    of each field exactly; a 45° rotation does so only approximately, for smooth
    images (the filters are sampled from rotated functions, not permuted pixels).
    The paper uses 1 support and 19 query images of each task.

    Parameters
    ----------
    group : {"c8", "d8"}, default="c8"
        ``"c8"``: the paper's ``2d_rot8`` (24 channels with 3 fields);
        ``"d8"``: ``2d_rot8_flip`` (48 channels).
    n_tasks : int, default=1000
        Number of tasks; the paper's files hold 10,000 (C8) and 2,000 (D8). The
        targets take ``n_tasks * n_samples * C_out * (image_size - 2)**2 * 4`` bytes:
        1.7 GB for 1,000 C8 tasks.
    n_samples : int, default=20
        Images per task.
    image_size : int, default=32
        Side of the square input images (at least 3); the maps are
        ``image_size - 2`` wide.
    n_fields : int, default=3
        Regular output fields.
    random_state : int, RandomState or None, default=None
        Controls the weights and the images. Tasks are drawn one after the other, so
        the first tasks do not depend on ``n_tasks``.
    return_subspace : bool, default=False
        Also return the true sharing (:func:`rotation2d_sharing`).

    Returns
    -------
    X : ndarray of shape (n_tasks, n_samples, 1, image_size, image_size), float32
    y : ndarray of shape (n_tasks, n_samples, C_out, image_size - 2, image_size - 2), float32
        Channel ``j * |G| + c`` is field ``j`` under group element ``c`` (channel
        ``f * 8 + k``: rotated by ``k * 45°`` counter-clockwise after ``f``
        left-right flips).
    U : ndarray of shape (C_out * 9, 6 * n_fields), only if ``return_subspace``

    Examples
    --------
    >>> import numpy as np
    >>> from msr_sklearn.datasets import make_rotation2d_tasks
    >>> X, y, U = make_rotation2d_tasks("c8", n_tasks=2, image_size=8, return_subspace=True,
    ...                                 random_state=0)
    >>> X.shape, y.shape, U.shape
    ((2, 20, 1, 8, 8), (2, 20, 24, 6, 6), (216, 18))
    >>> X.dtype, y.dtype
    (dtype('float32'), dtype('float32'))
    """
    _check_group(group)
    n_tasks = _check_positive("n_tasks", n_tasks)
    n_samples = _check_positive("n_samples", n_samples)
    image_size = _check_positive("image_size", image_size, _KERNEL)
    n_fields = _check_positive("n_fields", n_fields)
    if not isinstance(return_subspace, (bool, np.bool_)):
        raise ValueError(f"return_subspace must be a bool; got {return_subspace!r}")
    rng = check_random_state(random_state)
    basis, scale = _field_basis(group)
    n_basis = basis.shape[1]
    c_out = basis.shape[0] // (_KERNEL * _KERNEL) * n_fields
    side = image_size - _KERNEL + 1
    X = np.empty((n_tasks, n_samples, 1, image_size, image_size), dtype=np.float32)
    y = np.empty((n_tasks, n_samples, c_out, side, side), dtype=np.float32)
    # small products, one task at a time: BLAS threads only add waiting on a busy machine
    with threadpool_limits(1, user_api="blas"):
        for t in range(n_tasks):
            coef = rng.standard_normal((n_fields, n_basis)) * scale
            # (n_fields, |G|*9) -> (C_out, 9): one row per output channel
            filters = (coef @ basis.T).reshape(c_out, _KERNEL * _KERNEL).astype(np.float32)
            X[t] = rng.standard_normal((n_samples, 1, image_size, image_size))
            windows = np.lib.stride_tricks.sliding_window_view(
                X[t, :, 0], (_KERNEL, _KERNEL), axis=(-2, -1))
            patches = windows.reshape(n_samples, side * side, _KERNEL * _KERNEL)
            # (C_out, 9) @ (n, 9, H'W') straight into the channel-major maps
            np.matmul(filters, patches.transpose(0, 2, 1),
                      out=y[t].reshape(n_samples, c_out, side * side))
    if not return_subspace:
        return X, y
    return X, y, rotation2d_sharing(group, n_fields)
