"""Subspace comparison: how ``span(U)`` sits relative to a reference sharing.

:func:`compare_subspaces` returns a :class:`SubspaceComparison` (containment angle,
excess, principal angles); ``_orth`` gives the orthonormal bases they are computed from.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from ._inputs import _to_numpy


# --------------------------------------------------------------------- subspaces
def _orth(U, name="U", rcond=1e-10):
    """An orthonormal basis of ``span(U)`` (``U`` itself when already orthonormal).

    Rank-revealing QR rather than an SVD: exact bases of lifting layers have
    thousands of columns.
    """
    U = _to_numpy(U)
    if U.ndim != 2 or U.shape[1] == 0:
        raise ValueError(f"{name} must be a 2-D array (n_weights, k) with k >= 1; got shape "
                         f"{U.shape}")
    if not np.all(np.isfinite(U)):
        raise ValueError(f"{name} has non-finite entries")
    probe = np.random.default_rng(0).standard_normal((U.shape[1], 2))
    if np.allclose(U.T @ (U @ probe), probe, rtol=0, atol=1e-12):
        return U
    q, r, _ = scipy.linalg.qr(U, mode="economic", pivoting=True)
    diag = np.abs(np.diag(r))
    rank = int(np.sum(diag > rcond * diag[0])) if diag.size and diag[0] > 0 else 0
    if rank == 0:
        raise ValueError(f"{name} is zero: it spans no subspace")
    return q[:, :rank]


class SubspaceComparison:
    """How ``span(U)`` sits relative to a reference subspace (angles in radians).

    Returned by :func:`compare_subspaces`, which computes the constructor's arguments.

    Parameters
    ----------
    containment_angles : ndarray of shape (dim_reference,)
        The angle of each reference direction to ``span(U)``, largest first.
    excess : float
        The fraction of ``span(U)`` outside the reference.
    principal_angles : ndarray of shape (min(dim, dim_reference),)
        The principal angles between the two subspaces.
    dim : int
        ``dim span(U)``.
    dim_reference : int
        The dimension of the reference subspace.

    Attributes
    ----------
    containment_angle : float
        Largest angle between a reference direction and ``span(U)``: 0 when the
        reference lies inside ``span(U)``, ``pi/2`` when ``dim U < dim reference``.
    containment_angles : ndarray
        All ``dim reference`` such angles, largest first.
    excess : float
        ``||(I - P_ref) orth(U)||_F^2 / dim U``: the fraction of ``span(U)`` outside the
        reference (0 when ``span(U)`` lies inside it).
    chordal_distance : float
        ``sqrt(sum sin^2 theta_i)`` over the ``min(dim U, dim ref)`` principal angles.
    max_angle : float
        The largest of those principal angles (as :func:`scipy.linalg.subspace_angles`).
    principal_angles : ndarray
        The ``min(dim U, dim ref)`` principal angles.
    dim, dim_reference : int
        The dimensions of ``span(U)`` and of the reference.

    Examples
    --------
    >>> from msr_sklearn.groups import compare_subspaces, cyclic_group, dihedral_group
    >>> c = compare_subspaces(cyclic_group(6).sharing_basis(),      # circulants
    ...                       dihedral_group(6).sharing_basis())    # symmetric circulants
    >>> c.dim, c.dim_reference
    (6, 4)
    >>> c.containment_angle < 1e-10, round(c.excess, 3)   # D6 sharing inside, 2 of 6 out
    (True, 0.333)
    >>> sorted(c.as_dict())
    ['chordal_distance', 'containment_angle', 'dim', 'dim_reference', 'excess', 'max_angle']
    """

    def __init__(self, containment_angles, excess, principal_angles, dim, dim_reference):
        self.containment_angles = containment_angles
        self.containment_angle = float(containment_angles.max())
        self.excess = float(excess)
        self.principal_angles = principal_angles
        self.max_angle = float(principal_angles.max())
        self.chordal_distance = float(np.sqrt(np.sum(np.sin(principal_angles) ** 2)))
        self.dim, self.dim_reference = int(dim), int(dim_reference)

    def as_dict(self):
        return {"dim": self.dim, "dim_reference": self.dim_reference,
                "containment_angle": self.containment_angle, "excess": self.excess,
                "chordal_distance": self.chordal_distance, "max_angle": self.max_angle}

    def __repr__(self):
        items = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in self.as_dict().items())
        return f"SubspaceComparison({items})"


def compare_subspaces(U, reference):
    """Compare a learned ``U`` with a reference sharing (e.g. ``U^G``); spans only.

    ``U`` is identifiable only up to ``U -> U R``, so only column spans are compared.
    Angles combine sines and cosines, so small and large angles stay accurate.

    Parameters
    ----------
    U, reference : array-like of shape (n_weights, k) and (n_weights, r)

    Returns
    -------
    SubspaceComparison

    Examples
    --------
    >>> import numpy as np
    >>> from msr_sklearn.groups import compare_subspaces, cyclic_group
    >>> UG = cyclic_group(6).sharing_basis()
    >>> bigger = np.hstack([UG, np.random.default_rng(0).normal(size=(36, 2))])
    >>> c = compare_subspaces(bigger, UG)     # U^G inside; 2 of 8 directions outside
    >>> c.containment_angle < 1e-10, round(c.excess, 3)
    (True, 0.25)
    """
    q = _orth(U, "U")
    ref = _orth(reference, "reference")
    if q.shape[0] != ref.shape[0]:
        raise ValueError(f"U has {q.shape[0]} rows and reference {ref.shape[0]}: they describe "
                         f"weights of different sizes")
    k, r = q.shape[1], ref.shape[1]
    cross = ref.T @ q
    residual_q = q - ref @ cross
    # the min(k, r) principal angles: sines from the thinner residual (accurate near 0),
    # cosines from the cross products (accurate near pi/2)
    thin = residual_q if k <= r else ref - q @ cross.T
    sines = np.sort(np.linalg.svd(thin, compute_uv=False))[::-1]
    cosines = np.sort(np.linalg.svd(cross, compute_uv=False))[:sines.shape[0]]
    angles = np.arctan2(sines, cosines)
    # every reference direction that span(U) cannot hold (r > k) is at pi/2
    containment = np.concatenate([np.full(max(0, r - k), np.pi / 2), angles])
    excess = np.sum(residual_q ** 2) / k
    return SubspaceComparison(containment, excess, angles, k, r)
