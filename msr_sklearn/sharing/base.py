"""The sharing base class: a parametrization of one weight, ``vec(W) = U v``.

A sharing is written once, as a template with its hyperparameters only
(``DenseSharing(n_filters=8)``), and *bound* to a weight shape when a network is
built (:meth:`Sharing.bind`), which allocates its outer parameters (``U`` or its
factors). A bound sharing is a parametrization in the sense of
:func:`torch.nn.utils.parametrize.register_parametrization`: :meth:`~Sharing.forward`
maps the inner tensors (the filter values ``v``) to the weight, and
:meth:`~Sharing.right_inverse` maps a weight back to the inner tensors that build the
nearest weight the sharing can express. Leading dimensions of ``v`` are carried through,
so one call builds the weights of a whole meta-batch of tasks.
"""

from __future__ import annotations

import copy
import inspect
import math

import torch
from torch import nn

__all__ = ["Sharing", "orthonormal_columns"]


def orthonormal_columns(n_rows, n_cols, generator=None):
    """A random matrix with orthonormal columns (rows if ``n_cols > n_rows``).

    Orthonormal columns make ``U U^T`` a projector, so an inner SGD step on ``v``
    moves ``W`` exactly as MAML would inside ``span(U)``: the inner loop works from
    the first meta-step. The paper's ``U ~ N(0, 0.01^2)`` shrinks that step by
    ``~1e-4 * n_rows`` and leaves a long plateau before meta-learning takes off.

    Parameters
    ----------
    n_rows, n_cols : int
        The shape.
    generator : torch.Generator or None, default=None
        The source of randomness; ``None`` uses torch's global one.

    Returns
    -------
    Tensor of shape (n_rows, n_cols)

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.sharing import orthonormal_columns
    >>> q = orthonormal_columns(5, 2, torch.Generator().manual_seed(0))
    >>> torch.allclose(q.T @ q, torch.eye(2), atol=1e-6)
    True
    """
    a = torch.randn(max(n_rows, n_cols), min(n_rows, n_cols), generator=generator)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)  # unique, uniformly distributed
    return q if n_rows >= n_cols else q.T


class Sharing(nn.Module):
    """Base class: how one weight is built from inner tensors (``vec(W) = U v``).

    Subclasses declare their hyperparameters as keyword arguments of ``__init__``
    (stored under the same names, as scikit-learn estimators do), implement
    :meth:`_build` (check the weight shape, allocate the outer parameters) and
    :meth:`matrix`, and may override :meth:`forward` with a product that never
    materializes ``U`` and :meth:`right_inverse` with a cheaper solve.

    The outer parameters (``U``, its factors) are meta-learned across tasks; the
    inner tensors (:attr:`inner_names`, by default the ``filters`` ``v``) are adapted
    per task. ``learnable=False`` keeps the outer parameters fixed (an exact group's
    sharing, or the control that shows what learning ``U`` adds).

    Parameters
    ----------
    learnable : bool, default=True
        Whether the outer loop may change the sharing.

    Attributes
    ----------
    weight_shape : tuple of int or None
        The shape of the weight once bound; ``None`` for a template.
    inner_names : tuple of str
        The inner tensors :meth:`forward` takes, in order.

    Examples
    --------
    A sharing that ties every weight to one value:

    >>> import torch
    >>> from msr_sklearn.sharing import Sharing
    >>> class TieAll(Sharing):
    ...     def _build(self, weight_shape, generator):
    ...         pass
    ...     @property
    ...     def n_filters(self):
    ...         return 1
    ...     def matrix(self):
    ...         return torch.ones(self.n_weights, 1)
    >>> tie = TieAll(learnable=False).bind((2, 3))
    >>> tie(torch.tensor([2.]))
    tensor([[2., 2., 2.],
            [2., 2., 2.]])
    >>> tie(torch.zeros(5, 1)).shape   # leading (task) dimensions carry through
    torch.Size([5, 2, 3])
    >>> tie.right_inverse(torch.full((2, 3), 4.))
    tensor([4.])
    """

    #: the inner tensors that :meth:`forward` takes, in order
    inner_names = ("filters",)

    def __init__(self, *, learnable=True):
        super().__init__()
        self.learnable = learnable
        self.weight_shape = None

    # ------------------------------------------------------------------ binding
    @classmethod
    def _hyperparameter_names(cls):
        """The keyword arguments of the class's ``__init__`` (as scikit-learn's get_params)."""
        return tuple(p.name for p in inspect.signature(cls.__init__).parameters.values()
                     if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))

    def get_config(self):
        """The hyperparameters, by name (what :meth:`bind` copies to a new sharing).

        Returns
        -------
        dict
        """
        return {name: getattr(self, name) for name in self._hyperparameter_names()}

    def bind(self, weight_shape, generator=None):
        """A sharing of this kind for weights of ``weight_shape``, with fresh outer parameters.

        A sharing that is already bound (e.g. an exact group sharing with its values set)
        is copied as it is, if the shape fits.

        Parameters
        ----------
        weight_shape : tuple of int
            The shape of the weight, e.g. ``(n_out, n_in)`` for a linear layer or
            ``(C_out, C_in, kh, kw)`` for a convolution.
        generator : torch.Generator or None, default=None
            The source of the random initial ``U``.

        Returns
        -------
        Sharing

        Raises
        ------
        ValueError
            If the sharing cannot express weights of that shape.
        """
        weight_shape = tuple(int(s) for s in weight_shape)
        if self.weight_shape is not None:
            if weight_shape != self.weight_shape:
                raise ValueError(f"{self!r} is bound to weights of shape {self.weight_shape}, "
                                 f"not {weight_shape}")
            return copy.deepcopy(self)
        bound = type(self)(**self.get_config())
        bound.weight_shape = weight_shape
        bound._build(weight_shape, generator)
        if not bound.learnable:
            for p in bound.symmetry_parameters():
                p.requires_grad_(False)
        return bound

    def _build(self, weight_shape, generator):
        """Check ``weight_shape`` and allocate the outer parameters."""
        raise NotImplementedError

    def _check_bound(self):
        if self.weight_shape is None:
            raise RuntimeError(f"{type(self).__name__} is a template: bind it to a weight shape "
                               "first (sharing.bind(weight.shape))")

    def symmetry_parameters(self):
        """The parameters that make up ``U`` (what ``learnable`` and ``learn_symmetry`` act on)."""
        return list(self.parameters())

    # ------------------------------------------------------------------ the map
    @property
    def n_weights(self):
        """The number of weights, ``prod(weight_shape)``."""
        self._check_bound()
        return math.prod(self.weight_shape)

    @property
    def n_filters(self):
        """``k``: the number of filter values (the columns of ``U``)."""
        raise NotImplementedError

    def inner_shapes(self):
        """The shape of each inner tensor, by name (without a task dimension)."""
        return {"filters": (self.n_filters,)}

    def matrix(self):
        """Materialize ``U`` as a ``(n_weights, n_filters)`` tensor (row-major ``vec``)."""
        raise NotImplementedError

    def forward(self, filters):
        """The weight(s) for filter values of shape ``(..., n_filters)``."""
        flat = filters @ self.matrix().T
        return flat.reshape(*filters.shape[:-1], *self.weight_shape)

    def right_inverse(self, weight):
        """The filter values of the weight closest to ``weight`` in ``span(U)``.

        Least squares, ``v = U^+ vec(W)``; leading dimensions carry through.
        """
        u = self.matrix()
        flat = weight.reshape(*weight.shape[:weight.dim() - len(self.weight_shape)], -1)
        return flat.to(u.dtype) @ torch.linalg.pinv(u).T

    def held(self, *inner):
        """:meth:`forward`, with ``U`` held constant in the derivative w.r.t. the filters.

        The value and the derivative w.r.t. the sharing's own parameters are those of
        ``forward(*inner)``; the derivative w.r.t. the filters (``U^T dL/dW``, how an
        inner step reads a gradient) goes through a detached ``U``. A support gradient
        taken through it has no second-order path back into ``U`` through that read
        (``symmetry_gradient="first_order"``).

        Examples
        --------
        >>> import torch
        >>> from msr_sklearn.sharing import KroneckerSharing
        >>> sharing = KroneckerSharing((1, 2)).bind((2, 3), torch.Generator().manual_seed(0))
        >>> v = torch.ones(2, requires_grad=True)
        >>> torch.allclose(sharing.held(v), sharing(v))
        True
        >>> (g,) = torch.autograd.grad(sharing.held(v).sum(), v, create_graph=True)
        >>> g.requires_grad   # U^T 1 with U held: no path back into U
        False
        """
        params = dict(self.named_parameters())
        if not params:
            return self(*inner)
        held = {name: p.detach() for name, p in params.items()}
        read = torch.func.functional_call(self, held, tuple(inner))
        direct = self(*(t.detach() for t in inner))
        return read + (direct - direct.detach())

    def initial_inner(self, weight, generator=None, output=False):
        """The initial inner tensors for a network whose own weight is ``weight``.

        A hidden weight starts at random filters with ``||U v0|| ≈ ||weight||``: the
        shared weight has the scale of the module's own initialization (so a network's
        signal propagates as its author intended), in ``k`` random directions of
        ``span(U)``. The output weight (``output=True``) starts at the projection of the
        module's own weight, ``right_inverse(weight)``: small, ``||v0||² ≈ (k / n)
        ||weight||²``, so the mean task starts near the module's small output and
        meta-learning does not first have to unlearn a large random one (on rank-1
        translation tasks a large initial output delayed it by hundreds of steps).

        Parameters
        ----------
        weight : Tensor of shape weight_shape
            The module's initial weight.
        generator : torch.Generator or None, default=None
        output : bool, default=False
            Whether this is the network's last adapted weight.

        Returns
        -------
        dict of str to Tensor
        """
        if weight.is_meta:  # shapes only: a file's network checked without memory
            return {"filters": torch.empty(self.n_filters, device="meta", dtype=weight.dtype)}
        if output:
            return {"filters": self.right_inverse(weight.detach()).detach().clone()}
        scale = float(weight.detach().norm()) / math.sqrt(self.n_filters)
        filters = torch.randn(self.n_filters, generator=generator) * scale
        return {"filters": filters.to(weight.device, weight.dtype)}

    def penalty(self, inner, initial):
        """An inner-loss term on the inner tensors (per leading index), or None."""
        return None

    def extra_repr(self):
        config = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items()
                           if not isinstance(v, Sharing))
        shape = "" if self.weight_shape is None else f"weight_shape={self.weight_shape}, "
        return shape + config
