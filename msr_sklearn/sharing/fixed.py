"""A sharing the outer loop never changes: the identity (plain MAML) or a given ``U``."""

from __future__ import annotations

import torch

from .base import Sharing

__all__ = ["FixedSharing"]


class FixedSharing(Sharing):
    """A frozen ``U``: the identity (an ordinary weight, the MAML baseline) or a given matrix.

    A given matrix is typically an exact group's sharing ``U^G``
    (:meth:`msr_sklearn.groups.FiniteGroup.sharing_basis`): MAML inside a known symmetry,
    the oracle a learned sharing is compared with.

    Parameters
    ----------
    matrix : array-like of shape (n_weights, k) or None, default=None
        ``None`` means the identity, stored implicitly (``W = v.reshape(weight_shape)``).

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.sharing import FixedSharing
    >>> band = FixedSharing(torch.tensor([[1., 0], [0, 1], [0, 0],
    ...                                   [0, 0], [1, 0], [0, 1]])).bind((2, 3))
    >>> band(torch.tensor([5., 7.]))   # a 2-tap convolution as W = U v
    tensor([[5., 7., 0.],
            [0., 5., 7.]])
    >>> FixedSharing().bind((2, 3)).n_filters   # the identity: every weight is free
    6
    """

    def __init__(self, matrix=None):
        super().__init__(learnable=False)
        self.matrix_ = None if matrix is None else torch.as_tensor(
            matrix, dtype=torch.get_default_dtype()).clone()

    def get_config(self):
        if self.weight_shape is None:
            return {"matrix": self.matrix_}
        return {"matrix": self.symmetry_matrix}

    def _build(self, weight_shape, generator):
        n_weights = self.n_weights
        given = self.matrix_
        self.matrix_ = None
        if given is not None and (given.ndim != 2 or given.shape[0] != n_weights
                                  or not 1 <= given.shape[1] <= n_weights):
            raise ValueError(f"a fixed sharing matrix for weights of shape {weight_shape} must "
                             f"have shape ({n_weights}, k) with 1 <= k <= {n_weights} (more "
                             f"filters than weights only repeat directions); got "
                             f"{tuple(given.shape)}")
        if given is not None and not bool(given.isfinite().all()):
            raise ValueError("a fixed sharing matrix must be finite; it holds NaN or infinity")
        self.register_buffer("symmetry_matrix", given)
        # the identity holds no tensor; this empty one follows .to(device) for matrix()
        self.register_buffer("_device_anchor", torch.empty(0), persistent=False)

    @property
    def is_identity(self):
        """Whether ``U`` is the identity."""
        self._check_bound()
        return self.symmetry_matrix is None

    @property
    def n_filters(self):
        if self.weight_shape is None:
            return None if self.matrix_ is None else self.matrix_.shape[1]
        return self.n_weights if self.is_identity else self.symmetry_matrix.shape[1]

    def forward(self, filters):
        if self.is_identity:
            return filters.reshape(*filters.shape[:-1], *self.weight_shape)
        return super().forward(filters)

    def right_inverse(self, weight):
        if self.is_identity:
            return weight.reshape(*weight.shape[:weight.dim() - len(self.weight_shape)], -1)
        return super().right_inverse(weight)

    def matrix(self):
        if self.is_identity:
            anchor = self._device_anchor
            return torch.eye(self.n_weights, device=anchor.device, dtype=anchor.dtype)
        return self.symmetry_matrix

    def initial_inner(self, weight, generator=None, output=False):
        if self.is_identity and not weight.is_meta:  # MAML starts from the module's weight
            return {"filters": self.right_inverse(weight.detach()).clone()}
        return super().initial_inner(weight, generator, output)

    def extra_repr(self):
        if self.weight_shape is None:
            return "matrix=" + ("identity" if self.matrix_ is None else "given")
        kind = "identity" if self.is_identity else "given"
        return f"weight_shape={self.weight_shape}, matrix={kind}"
