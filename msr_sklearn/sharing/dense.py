"""Learned sharings of a whole weight: a dense ``U`` (MSR-FC) and a Kronecker-factored one."""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import Sharing, orthonormal_columns

__all__ = ["DenseSharing", "KroneckerSharing"]


class _HeldProduct(torch.autograd.Function):
    """``filters @ basis`` whose filter gradient reads through a detached ``basis``.

    The value and the gradient w.r.t. ``basis`` are those of the product; the gradient
    w.r.t. ``filters`` is ``grad @ basis.detach().T``, so a support gradient taken through
    it carries no second-order path into ``basis`` through that read. Written with
    differentiable operations, so it supports double backward.
    """

    @staticmethod
    def forward(ctx, filters, basis):
        ctx.save_for_backward(filters, basis)
        return filters @ basis

    @staticmethod
    def backward(ctx, grad):
        filters, basis = ctx.saved_tensors
        grad_filters = grad @ basis.detach().T
        grad_basis = filters.reshape(-1, filters.shape[-1]).T @ grad.reshape(-1, grad.shape[-1])
        return grad_filters, grad_basis


class DenseSharing(Sharing):
    """A learned, unconstrained ``U`` of shape ``(n_weights, k)`` (MSR-FC).

    ``U`` is stored transposed, as ``basis`` of shape ``(k, n_weights)``: one row per
    basis vector of the sharing subspace. On CPU, ``v @ basis`` and its backward hit
    fast GEMM layouts, while ``v @ U.T`` with a contiguous ``U`` and ``k`` of a few
    columns runs several times slower. It starts with random orthonormal columns.

    Parameters
    ----------
    n_filters : int, default=8
        ``k``, the number of free filter values; at most the number of weights.
    learnable : bool, default=True
        Whether the outer loop may change ``U``.

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.sharing import DenseSharing
    >>> sharing = DenseSharing(n_filters=3).bind((4, 5), torch.Generator().manual_seed(0))
    >>> sharing.matrix().shape
    torch.Size([20, 3])
    >>> sharing(torch.zeros(7, 3)).shape   # one weight per task
    torch.Size([7, 4, 5])
    >>> w = sharing(torch.tensor([1., 2., 3.]))
    >>> sharing.right_inverse(w).detach()  # exact inside span(U)
    tensor([1.0000, 2.0000, 3.0000])
    """

    def __init__(self, n_filters=8, *, learnable=True):
        super().__init__(learnable=learnable)
        self._k = n_filters

    def _build(self, weight_shape, generator):
        k, n = self._k, math.prod(weight_shape)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"n_filters must be a positive integer; got {k!r}")
        if k > n:
            raise ValueError(f"DenseSharing(n_filters={k}) has more filters than the {n} weights "
                             f"of shape {weight_shape} it shares; use n_filters <= {n}")
        self.basis = nn.Parameter(orthonormal_columns(n, k, generator).T.contiguous())

    @property
    def n_filters(self):
        return self._k

    def forward(self, filters):
        flat = filters @ self.basis
        return flat.reshape(*filters.shape[:-1], *self.weight_shape)

    def held(self, filters):
        flat = _HeldProduct.apply(filters, self.basis)
        return flat.reshape(*filters.shape[:-1], *self.weight_shape)

    def matrix(self):
        return self.basis.T


class KroneckerSharing(Sharing):
    """A learned ``U = F_1 ⊗ F_2 ⊗ ... ⊗ F_m`` with non-square factors, one per weight axis.

    Factor ``F_j`` has shape ``(weight_shape[j], factor_filters[j])``, so a 784 → 784
    linear layer with ``k = 32`` stores ``784*4 + 784*8`` numbers instead of the ~20M of
    a dense ``U``. ``v`` is viewed as a tensor of shape ``factor_filters`` and
    ``W = v ×_1 F_1 ×_2 F_2 ... ×_m F_m``; for two factors ``W = A V B^T``.

    Parameters
    ----------
    factor_filters : tuple of int or None, default=None
        Columns of each factor; ``k`` is their product. ``None``: split ``n_filters``
        over the two axes of a 2-D weight as evenly as the weight allows.
    n_filters : int or None, default=None
        ``k``, with ``factor_filters=None`` (2-D weights only).
    init : {"random", "identity"}, default="random"
        ``"random"``: random orthonormal columns. ``"identity"``: square factors start
        at the identity and tall ones (``n = c k``) at ``c`` stacked identities (scaled
        to orthonormal columns), as the paper's code does for its square factors.
    learnable : bool, default=True
        Whether the outer loop may change the factors.

    Examples
    --------
    >>> from msr_sklearn.sharing import KroneckerSharing
    >>> sharing = KroneckerSharing(n_filters=32).bind((784, 784))
    >>> sharing.factor_filters, sum(p.numel() for p in sharing.parameters())
    ((4, 8), 9408)
    """

    def __init__(self, factor_filters=None, *, n_filters=None, init="random", learnable=True):
        super().__init__(learnable=learnable)
        self.factor_filters = factor_filters
        self._n_filters = n_filters
        self.init = init

    def _build(self, weight_shape, generator):
        if self.init not in ("random", "identity"):
            raise ValueError(f"init must be 'random' or 'identity'; got {self.init!r}")
        factors = self.factor_filters
        if factors is None:
            if self._n_filters is None or len(weight_shape) != 2:
                raise ValueError("KroneckerSharing needs factor_filters (one size per weight "
                                 f"axis of {weight_shape}), or n_filters for a 2-D weight")
            factors = balanced_factors(self._n_filters, *weight_shape)
        factors = tuple(int(k) for k in factors)
        if len(factors) != len(weight_shape):
            raise ValueError(f"need one factor size per weight axis: weight_shape={weight_shape}, "
                             f"factor_filters={factors}")
        if any(k < 1 or k > n for k, n in zip(factors, weight_shape)):
            raise ValueError(f"factor_filters={factors} must lie between 1 and the weight's "
                             f"axis sizes {weight_shape}")
        self.factor_filters = factors
        self.factors = nn.ParameterList(
            [nn.Parameter(torch.empty(n, k)) for n, k in zip(weight_shape, factors)])
        self.reset_parameters(generator)

    def reset_parameters(self, generator=None):
        """Draw the factors as ``init`` says."""
        with torch.no_grad():
            for f in self.factors:
                n, k = f.shape
                if self.init == "identity" and n % k == 0:
                    # stacked identities: n/k equal copies of every filter value
                    f.copy_(torch.eye(k).repeat(n // k, 1) / math.sqrt(n // k))
                else:
                    f.copy_(orthonormal_columns(n, k, generator))

    @property
    def n_filters(self):
        if self.factor_filters is None:
            return self._n_filters
        return math.prod(self.factor_filters)

    def forward(self, filters):
        # one factor at a time (a matmul on one axis each): a single einsum over all
        # factors materialized the whole U first without opt_einsum, ~8-75x slower
        w = filters.reshape(*filters.shape[:-1], *self.factor_filters)
        m = len(self.factors)
        for axis, factor in enumerate(self.factors):
            w = torch.movedim(torch.movedim(w, axis - m, -1) @ factor.T, -1, axis - m)
        return w

    def right_inverse(self, weight):
        # (F_1 ⊗ ... ⊗ F_m)^+ = F_1^+ ⊗ ... ⊗ F_m^+: one small solve per axis
        m = len(self.factors)
        v = weight
        for axis, factor in enumerate(self.factors):
            v = torch.movedim(torch.movedim(v, axis - m, -1) @ torch.linalg.pinv(factor).T, -1,
                              axis - m)
        return v.reshape(*weight.shape[:weight.dim() - m], -1)

    def matrix(self):
        u = self.factors[0]
        for f in self.factors[1:]:
            u = torch.kron(u, f)
        return u


def balanced_factors(n_filters, n_out, n_in):
    """Split ``k`` into ``(k_out, k_in)``, ``k_out * k_in == k``, as balanced as the layer allows.

    Examples
    --------
    >>> from msr_sklearn.sharing.dense import balanced_factors
    >>> balanced_factors(12, 10, 2)
    (6, 2)
    """
    best = None
    for k_out in range(1, n_filters + 1):
        if n_filters % k_out:
            continue
        k_in = n_filters // k_out
        if k_out > n_out or k_in > n_in:
            continue
        score = abs(k_out - k_in)
        if best is None or score < best[0]:
            best = (score, (k_out, k_in))
    if best is None:
        raise ValueError(
            f"n_filters={n_filters} cannot be split into k_out * k_in with k_out <= {n_out} "
            f"and k_in <= {n_in} for a Kronecker-factored {n_in} -> {n_out} weight")
    return best[1]
