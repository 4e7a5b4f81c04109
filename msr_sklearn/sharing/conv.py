"""MSR-Conv: a learned sharing of a convolution's filter tensor, with copies per field."""

from __future__ import annotations

from .dense import KroneckerSharing

__all__ = ["ConvFilterSharing"]


class ConvFilterSharing(KroneckerSharing):
    """MSR-Conv sharing: ``U = P (A ⊗ B ⊗ S)`` on a filter tensor with copies.

    Bound to a convolution weight of shape ``(C_out, C_in, kh, kw)``, the
    ``C_out = n_fields * n_copies`` output channels come in fields of ``n_copies``
    channels, and the ``C_in = in_fields * in_copies`` input channels in fields of
    ``in_copies`` (the previous MSR-Conv layer's copies; 1 for an image). ``A``
    (``n_fields × k_a``) mixes output fields, ``B`` (``in_fields × k_b``) mixes input
    fields, and the *non-square* factor ``S`` (``n_copies*in_copies*kh*kw × k_s``) maps
    ``k_s`` latent values to one field pair's whole block of filters at once: every
    output copy, input copy and pixel. ``P`` only reorders axes to
    ``(C_out, C_in, kh, kw)``.

    A square per-axis factor cannot make the copies of one field exact transforms of
    each other; the tall ``S`` can: ``S = [π(g_1); ...; π(g_m)]`` (stacked pixel
    permutations) with ``A = B = I`` is an exact lifting group convolution
    (:func:`~msr_sklearn.sharing.exact_lifting_sharing`). With ``in_copies = m`` as
    well, ``S`` couples the input copy with the output copy, which a group convolution
    between regular fields needs (``W[(o, g), (i, h)] = w[o, i](g⁻¹h, g⁻¹x)``,
    :func:`~msr_sklearn.sharing.exact_group_conv_sharing`).

    Parameters
    ----------
    n_copies : int, default=1
        Output channels per field, e.g. 4 for the copies of a filter under 90°
        rotations; must divide ``C_out``.
    in_copies : int, default=1
        Input channels per input field; must divide ``C_in``.
    factor_filters : tuple of int (k_a, k_b, k_s) or None, default=None
        Columns of ``A``, ``B`` and ``S``. ``None`` means
        ``(n_fields, in_fields, in_copies*kh*kw)``: square ``A`` and ``B``, one latent
        value per weight of one output copy's filter.
    init : {"random", "identity"}, default="random"
        ``"random"``: random orthonormal factors, so the copies of a field start
        different. ``"identity"``: ``A`` and ``B`` start at the identity and ``S`` at
        ``n_copies`` stacked identities, so the copies of a field start equal (they
        then stay equal when nothing downstream tells them apart; with a deep MSR-Conv
        network one Aug-Digits seed in three stayed on the loss plateau).
    learnable : bool, default=True
        Whether the outer loop may change the factors.

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.sharing import ConvFilterSharing
    >>> sharing = ConvFilterSharing(n_copies=4, init="identity").bind((8, 3, 3, 3))
    >>> sharing.n_filters
    54
    >>> [tuple(f.shape) for f in sharing.factors]   # A, B, S
    [(2, 2), (3, 3), (36, 9)]
    >>> w = sharing(torch.arange(54.))
    >>> w.shape
    torch.Size([8, 3, 3, 3])
    >>> all(torch.allclose(w[0], w[c]) for c in range(4))   # the copies of field 0
    True
    >>> sharing(torch.zeros(5, 54)).shape                  # 5 tasks at once
    torch.Size([5, 8, 3, 3, 3])

    Fields of 4 copies on both sides (a layer after an MSR-Conv layer with
    ``n_copies=4``): ``S`` maps one filter block to all 4 × 4 copy pairs.

    >>> coupled = ConvFilterSharing(n_copies=4, in_copies=4).bind((8, 8, 3, 3))
    >>> [tuple(f.shape) for f in coupled.factors]
    [(2, 2), (2, 2), (144, 36)]
    """

    def __init__(self, n_copies=1, in_copies=1, factor_filters=None, *, init="random",
                 learnable=True):
        super().__init__(factor_filters, init=init, learnable=learnable)
        self.n_copies = n_copies
        self.in_copies = in_copies

    def _build(self, weight_shape, generator):
        if len(weight_shape) != 4:
            raise ValueError(f"ConvFilterSharing shares a convolution's filters (C_out, C_in, "
                             f"kh, kw); got a weight of shape {weight_shape}")
        c_out, c_in, kh, kw = weight_shape
        for name, copies, channels in (("n_copies", self.n_copies, c_out),
                                       ("in_copies", self.in_copies, c_in)):
            if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1 \
                    or channels % copies:
                raise ValueError(f"{name}={copies!r} must be a positive integer that divides "
                                 f"the {channels} channels of a weight of shape {weight_shape}")
        n_fields, in_fields = c_out // self.n_copies, c_in // self.in_copies
        self.kernel_shape = (kh, kw)
        self.factor_shape = (n_fields, in_fields, self.n_copies * self.in_copies * kh * kw)
        if self.factor_filters is None:
            self.factor_filters = (n_fields, in_fields, self.in_copies * kh * kw)
        super()._build(self.factor_shape, generator)

    @property
    def n_fields(self):
        """Output fields, ``C_out / n_copies``."""
        return self.factor_shape[0]

    def _to_filter_layout(self, w):
        # (..., fields, in_fields, copies*in_copies*kh*kw)
        #   -> (..., fields*copies, in_fields*in_copies, kh, kw)
        w = w.reshape(*w.shape[:-1], self.n_copies, self.in_copies, *self.kernel_shape)
        w = w.transpose(-5, -4)  # (fields, copies, in_fields, in_copies, kh, kw)
        return w.reshape(*w.shape[:-6], *self.weight_shape)

    def _to_factor_layout(self, w):
        n_fields, in_fields, _ = self.factor_shape
        w = w.reshape(*w.shape[:-4], n_fields, self.n_copies, in_fields, self.in_copies,
                      *self.kernel_shape)
        w = w.transpose(-5, -4)  # (fields, in_fields, copies, in_copies, kh, kw)
        return w.reshape(*w.shape[:-6], *self.factor_shape)

    def forward(self, filters):
        return self._to_filter_layout(super().forward(filters))

    def right_inverse(self, weight):
        return super().right_inverse(self._to_factor_layout(weight))

    def matrix(self):
        u = super().matrix()  # rows in (field, in_field, copy, in_copy, pixel) order
        k = u.shape[1]
        u = self._to_filter_layout(u.T.reshape(k, *self.factor_shape))
        return u.reshape(k, -1).T
