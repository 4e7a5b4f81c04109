"""Sharing parameterizations: how a layer's weight is built from its filter values.

A sharing maps filter values ``v`` of shape ``(..., k)`` to a weight of shape
``(..., *weight_shape)`` through ``vec(W) = U v`` (row-major ``vec``). Leading
dimensions of ``v`` are carried through, so one call builds the weights of a whole
meta-batch of tasks. ``U`` itself (or its factors) is an *outer* parameter: it is
meta-learned across tasks and frozen within a task.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _orthonormal_columns(n_rows, n_cols, generator=None):
    """A random matrix with orthonormal columns (rows if ``n_cols > n_rows``).

    Orthonormal columns make ``U U^T`` a projector, so an inner SGD step on ``v``
    moves ``W`` exactly as MAML would inside ``span(U)``: the inner loop works from the
    first meta-step. The paper's ``U ~ N(0, 0.01^2)`` shrinks that step by
    ``~1e-4 * n_rows`` and leaves a long plateau before meta-learning takes off.
    """
    a = torch.randn(max(n_rows, n_cols), min(n_rows, n_cols), generator=generator)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)  # unique, uniformly distributed
    return q if n_rows >= n_cols else q.T


class Sharing(nn.Module):
    """Base class: a map from filter values ``v`` (``k``) to a weight tensor.

    Subclasses implement :meth:`matrix` (and may override :meth:`weight` with a
    faster product that never materializes ``U``). The sharing's own parameters, if
    any, are *outer* parameters (meta-learned); the filter values ``v`` it is applied
    to are the *inner* ones, held by the layer. The class attribute ``learnable``
    says whether the outer loop may change the sharing (``False`` for a frozen ``U``).

    Parameters
    ----------
    weight_shape : tuple of int
        Shape of one weight, e.g. ``(n_out, n_in)`` for a linear layer or
        ``(C_out, C_in, kh, kw)`` for a convolution. ``n_weights`` is its product.
    n_filters : int
        ``k``, the number of free filter values (the columns of ``U``).

    Examples
    --------
    A sharing that ties every weight to a single value:

    >>> import torch
    >>> from msr_sklearn.nn import Sharing
    >>> class TieAll(Sharing):
    ...     learnable = False
    ...     def matrix(self):
    ...         return torch.ones(self.n_weights, self.n_filters)
    >>> tie = TieAll((2, 3), n_filters=1)
    >>> tie.n_weights
    6
    >>> tie.weight(torch.tensor([2.]))
    tensor([[2., 2., 2.],
            [2., 2., 2.]])
    >>> tie.weight(torch.zeros(5, 1)).shape   # leading (task) dimensions carry through
    torch.Size([5, 2, 3])
    """

    #: whether the outer loop may change this sharing
    learnable = True

    def __init__(self, weight_shape, n_filters):
        super().__init__()
        self.weight_shape = tuple(int(s) for s in weight_shape)
        self.n_filters = int(n_filters)

    @property
    def n_weights(self):
        return math.prod(self.weight_shape)

    def weight(self, filters):
        """Return the weight(s) for filter values of shape ``(..., n_filters)``."""
        flat = filters @ self.matrix().T
        return flat.reshape(*filters.shape[:-1], *self.weight_shape)

    def matrix(self):
        """Materialize ``U`` as a ``(n_weights, n_filters)`` tensor (row-major vec)."""
        raise NotImplementedError

    def forward(self, filters):
        """:meth:`weight`: a sharing is the module that maps filter values to weights."""
        return self.weight(filters)

    def held_weight(self, filters):
        """:meth:`weight`, with ``U`` held constant in the derivative w.r.t. ``filters``.

        The value and the derivative w.r.t. the sharing's parameters are those of
        ``weight(filters)``; the derivative w.r.t. ``filters`` (``U^T dL/dW``, how an
        inner step reads a gradient) uses a detached ``U``. A support gradient taken
        through it so has no second-order path back into ``U`` through that read
        (``symmetry_gradient="first_order"`` in :func:`msr_sklearn.engine.adapt`).

        Examples
        --------
        >>> import torch
        >>> from msr_sklearn.nn import DenseSharing
        >>> sharing = DenseSharing((2, 3), n_filters=2, generator=torch.Generator().manual_seed(0))
        >>> v = torch.ones(2, requires_grad=True)
        >>> torch.equal(sharing.held_weight(v), sharing.weight(v))
        True
        >>> (g,) = torch.autograd.grad(sharing.held_weight(v).sum(), v, create_graph=True)
        >>> g.requires_grad   # U^T 1 with U held: no path back into U
        False
        """
        held = {name: p.detach() for name, p in self.named_parameters()}
        if not held:
            return self.weight(filters)
        read = torch.func.functional_call(self, held, (filters,))
        direct = self.weight(filters.detach())
        return read + (direct - direct.detach())

    def reset_parameters(self, generator=None):
        pass

    def extra_repr(self):
        return f"weight_shape={self.weight_shape}, n_filters={self.n_filters}"


class DenseSharing(Sharing):
    """A learned, unconstrained ``U`` of shape ``(n_weights, k)`` (MSR-FC).

    ``U`` is stored transposed, as ``basis`` of shape ``(k, n_weights)``: one row per
    basis vector of the sharing subspace. On CPU, ``v @ basis`` and its backward hit
    fast GEMM layouts, while ``v @ U.T`` with a contiguous ``U`` and ``k`` of a few
    columns runs several times slower.

    Parameters
    ----------
    weight_shape : tuple of int
        Shape of one weight, e.g. ``(n_out, n_in)``.
    n_filters : int
        ``k``, the number of free filter values.
    generator : torch.Generator or None
        Source of the random orthonormal initial ``U``.

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.nn import DenseSharing
    >>> sharing = DenseSharing((4, 5), n_filters=3)
    >>> sharing.matrix().shape
    torch.Size([20, 3])
    >>> sharing.weight(torch.zeros(7, 3)).shape   # one weight per task
    torch.Size([7, 4, 5])
    """

    def __init__(self, weight_shape, n_filters, generator=None):
        super().__init__(weight_shape, n_filters)
        self.basis = nn.Parameter(torch.empty(self.n_filters, self.n_weights))
        self.reset_parameters(generator)

    def reset_parameters(self, generator=None):
        with torch.no_grad():
            self.basis.copy_(_orthonormal_columns(self.n_weights, self.n_filters, generator).T)

    def weight(self, filters):
        flat = filters @ self.basis
        return flat.reshape(*filters.shape[:-1], *self.weight_shape)

    def matrix(self):
        return self.basis.T


class KroneckerSharing(Sharing):
    """A learned ``U = F_1 ⊗ F_2 ⊗ ... ⊗ F_m`` with non-square factors.

    ``init="identity"`` starts square factors at the identity and tall ones
    (``n = c k``) at ``c`` stacked identities (scaled to orthonormal columns), as the
    official MSR-Conv does for its square factors; ``"random"`` uses random
    orthonormal columns.

    Parameters
    ----------
    weight_shape : tuple of int
        Shape of one weight; one factor per axis.
    factor_filters : tuple of int
        Columns of each factor; ``k`` is their product.
    init : {"random", "identity"}, default="random"
    generator : torch.Generator or None

    Examples
    --------
    >>> from msr_sklearn.nn import KroneckerSharing
    >>> sharing = KroneckerSharing((784, 784), factor_filters=(4, 8))
    >>> sharing.n_filters, sum(p.numel() for p in sharing.parameters())
    (32, 9408)

    Factor ``F_j`` has shape ``(weight_shape[j], factor_filters[j])``, so a 784→784
    linear layer with ``k = 32`` stores ``784*4 + 784*8`` numbers instead of the
    ~20M of a dense ``U``. ``v`` is viewed as a tensor of shape ``factor_filters`` and
    ``W = v ×_1 F_1 ×_2 F_2 ... ×_m F_m``; for two factors ``W = A V B^T``.
    """

    def __init__(self, weight_shape, factor_filters, init="random", generator=None):
        if init not in ("random", "identity"):
            raise ValueError(f"init must be 'random' or 'identity'; got {init!r}")
        self.init = init
        factor_filters = tuple(int(k) for k in factor_filters)
        if len(factor_filters) != len(weight_shape):
            raise ValueError(
                f"need one factor size per weight axis: weight_shape={tuple(weight_shape)}, "
                f"factor_filters={factor_filters}"
            )
        super().__init__(weight_shape, math.prod(factor_filters))
        self.factor_filters = factor_filters
        self.factors = nn.ParameterList(
            [nn.Parameter(torch.empty(n, k)) for n, k in zip(self.weight_shape, factor_filters)]
        )
        self.reset_parameters(generator)

    def reset_parameters(self, generator=None):
        with torch.no_grad():
            for f in self.factors:
                n, k = f.shape
                if self.init == "identity" and n % k == 0:
                    # stacked identities: n/k equal copies of every filter value
                    f.copy_(torch.eye(k).repeat(n // k, 1) / math.sqrt(n // k))
                else:
                    f.copy_(_orthonormal_columns(n, k, generator))

    def weight(self, filters):
        # one factor at a time (a matmul on one axis each): a single einsum over all
        # factors materialized the whole U first without opt_einsum, ~8-75x slower
        w = filters.reshape(*filters.shape[:-1], *self.factor_filters)
        m = len(self.factors)
        for axis, factor in enumerate(self.factors):
            w = torch.movedim(torch.movedim(w, axis - m, -1) @ factor.T, -1, axis - m)
        return w

    def matrix(self):
        u = self.factors[0]
        for f in self.factors[1:]:
            u = torch.kron(u, f)
        return u

    def extra_repr(self):
        return f"weight_shape={self.weight_shape}, factor_filters={self.factor_filters}"


class ConvFilterSharing(KroneckerSharing):
    """MSR-Conv sharing: ``U = P (A ⊗ B ⊗ S)`` on a filter tensor with copies.

    The ``C_out = n_fields * n_copies`` output channels come in fields of
    ``n_copies`` channels, and the ``C_in = in_fields * in_copies`` input channels in
    fields of ``in_copies`` (the previous MSR-Conv layer's copies; 1 for an image).
    ``A`` (``n_fields × k_a``) mixes output fields, ``B`` (``in_fields × k_b``) mixes
    input fields, and the *non-square* factor ``S``
    (``n_copies*in_copies*kh*kw × k_s``) maps ``k_s`` latent values to one field
    pair's whole block of filters at once: every output copy, input copy and pixel.
    ``P`` only reorders axes to ``(C_out, C_in, kh, kw)``.

    A square per-axis factor cannot make the copies of one field exact transforms of
    each other; the tall ``S`` can: ``S = [π(g_1); ...; π(g_m)]`` (stacked pixel
    permutations) with ``A = B = I`` is an exact lifting group convolution. With
    ``in_copies = m`` as well, ``S`` couples the input copy with the output copy, which
    a group convolution between regular fields needs (``W[(o, g), (i, h)] =
    w[o, i](g⁻¹h, g⁻¹x)``); with ``in_copies=1`` such a layer is out of reach.

    The factors are outer parameters (meta-learned); the layer's ``k = k_a*k_b*k_s``
    filter values are inner. Use it as the sharing of a :class:`SharedConv2d`.

    Parameters
    ----------
    n_fields : int
        Number of fields; ``C_out = n_fields * n_copies``.
    in_channels : int
        Input channels ``C_in``.
    kernel_size : int or tuple of int (kh, kw)
        Filter size; an int means a square ``kernel_size × kernel_size`` filter.
    n_copies : int, default=1
        Output channels per field, e.g. 4 for the copies of a filter under 90°
        rotations.
    in_copies : int, default=1
        Input channels per input field; must divide ``in_channels``.
    factor_filters : tuple of int (k_a, k_b, k_s) or None, default=None
        Columns of ``A``, ``B`` and ``S``. ``None`` means
        ``(n_fields, in_fields, in_copies*kh*kw)``: square ``A`` and ``B``, one latent
        value per weight of one output copy's filter.
    init : {"identity", "random"}, default="identity"
        ``"identity"`` starts ``A`` and ``B`` at the identity and ``S`` at
        ``n_copies`` stacked identities (scaled to orthonormal columns), so the copies
        of a field start equal; a factor whose rows are not a multiple of its columns
        is drawn at random. ``"random"`` draws every factor with random orthonormal
        columns.
    generator : torch.Generator or None, default=None
        Source of the random factors; ``None`` uses torch's global generator.

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.nn import ConvFilterSharing
    >>> sharing = ConvFilterSharing(n_fields=2, in_channels=3, kernel_size=3, n_copies=4)
    >>> sharing.weight_shape, sharing.n_filters
    ((8, 3, 3, 3), 54)
    >>> [tuple(f.shape) for f in sharing.factors]   # A, B, S
    [(2, 2), (3, 3), (36, 9)]
    >>> w = sharing.weight(torch.arange(54.))
    >>> w.shape
    torch.Size([8, 3, 3, 3])
    >>> all(torch.allclose(w[0], w[c]) for c in range(4))   # the copies of field 0
    True
    >>> sharing.weight(torch.zeros(5, 54)).shape                # 5 tasks at once
    torch.Size([5, 8, 3, 3, 3])

    Fields of 4 copies on both sides (a layer after an MSR-Conv layer with
    ``n_copies=4``): ``S`` maps one filter block to all 4 × 4 copy pairs.

    >>> coupled = ConvFilterSharing(n_fields=2, in_channels=8, kernel_size=3, n_copies=4,
    ...                             in_copies=4)
    >>> [tuple(f.shape) for f in coupled.factors]
    [(2, 2), (2, 2), (144, 36)]
    >>> coupled.weight_shape, coupled.n_filters
    ((8, 8, 3, 3), 144)
    """

    def __init__(self, n_fields, in_channels, kernel_size, n_copies=1, in_copies=1,
                 factor_filters=None, init="identity", generator=None):
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        if in_copies < 1 or in_channels % in_copies:
            raise ValueError(f"in_copies={in_copies} must divide in_channels={in_channels}")
        in_fields = in_channels // in_copies
        if factor_filters is None:
            factor_filters = (n_fields, in_fields, in_copies * kh * kw)
        self.n_fields, self.n_copies, self.in_copies = n_fields, n_copies, in_copies
        self.kernel_shape = (kh, kw)
        super().__init__((n_fields, in_fields, n_copies * in_copies * kh * kw), factor_filters,
                         init=init, generator=generator)
        self.factor_shape = self.weight_shape
        self.weight_shape = (n_fields * n_copies, in_channels, kh, kw)

    def _to_filter_layout(self, w):
        # (..., fields, in_fields, copies*in_copies*kh*kw)
        #   -> (..., fields*copies, in_fields*in_copies, kh, kw)
        w = w.reshape(*w.shape[:-1], self.n_copies, self.in_copies, *self.kernel_shape)
        w = w.transpose(-5, -4)  # (fields, copies, in_fields, in_copies, kh, kw)
        return w.reshape(*w.shape[:-6], *self.weight_shape)

    def weight(self, filters):
        return self._to_filter_layout(super().weight(filters))

    def matrix(self):
        u = super().matrix()  # rows in (field, in_field, copy, in_copy, pixel) order
        k = u.shape[1]
        u = self._to_filter_layout(u.T.reshape(k, *self.factor_shape))
        return u.reshape(k, -1).T

    def extra_repr(self):
        return (super().extra_repr() + f", n_fields={self.n_fields}, n_copies={self.n_copies}"
                f", in_copies={self.in_copies}")


class FixedSharing(Sharing):
    """A frozen ``U``: the identity (an ordinary layer, the MAML baseline) or a given matrix.

    Parameters
    ----------
    weight_shape : tuple of int
    matrix : array-like of shape (n_weights, k) or None
        ``None`` means the identity, stored implicitly (``W = v.reshape(weight_shape)``).

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.nn import FixedSharing
    >>> band = FixedSharing((2, 3), torch.tensor([[1., 0], [0, 1], [0, 0],
    ...                                           [0, 0], [1, 0], [0, 1]]))
    >>> band.weight(torch.tensor([5., 7.]))   # a 2-tap convolution as W = U v
    tensor([[5., 7., 0.],
            [0., 5., 7.]])
    """

    learnable = False

    def __init__(self, weight_shape, matrix=None):
        n_weights = math.prod(weight_shape)
        if matrix is None:
            super().__init__(weight_shape, n_weights)
            self.register_buffer("symmetry_matrix", None)
            # the identity holds no tensor; this empty one follows .to(device) for matrix()
            self.register_buffer("_device_anchor", torch.empty(0), persistent=False)
        else:
            matrix = torch.as_tensor(matrix, dtype=torch.get_default_dtype())
            if matrix.ndim != 2 or matrix.shape[0] != n_weights:
                raise ValueError(
                    f"a fixed symmetry matrix for weights of shape {tuple(weight_shape)} must have "
                    f"shape ({n_weights}, k); got {tuple(matrix.shape)}"
                )
            super().__init__(weight_shape, matrix.shape[1])
            self.register_buffer("symmetry_matrix", matrix.clone())

    @property
    def is_identity(self):
        return self.symmetry_matrix is None

    def weight(self, filters):
        if self.is_identity:
            return filters.reshape(*filters.shape[:-1], *self.weight_shape)
        return super().weight(filters)

    def matrix(self):
        if self.is_identity:
            return torch.eye(self.n_weights, device=self._device_anchor.device)
        return self.symmetry_matrix

    def extra_repr(self):
        kind = "identity" if self.is_identity else "given"
        return super().extra_repr() + f", matrix={kind}"
