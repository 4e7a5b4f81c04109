"""Soft symmetry: a free residual beside a shared weight, ``W = reshape(U v) + R``."""

from __future__ import annotations

import torch
from torch import nn

from .base import Sharing

__all__ = ["Residual"]


class Residual(Sharing):
    """A sharing plus a free inner residual ``R`` of the weight's shape: ``W = U v + R``.

    ``R`` is adapted per task like ``v``, from a meta-learned ``R0`` (initialized at 0),
    with its own meta-learned inner learning rate: a rate that falls to 0 is the strict
    symmetry, a large one plain MAML on the whole weight. With ``pull=True`` the
    residual also carries an outer ``log_pull``, and :meth:`penalty` adds
    ``exp(log_pull) ||R - R0||^2`` to the inner loss (its gradient is 0 at ``R = R0``,
    so with one inner step it changes nothing).

    Parameters
    ----------
    sharing : Sharing
        The shared part (a template or a bound sharing).
    inner_lr : float >= 0 or None, default=None
        The initial inner learning rate of ``R`` (meta-learned like the others): 0
        starts at the strict symmetry, a large rate at MAML. ``None``: the learner's
        ``inner_lr``.
    pull : bool, default=False
        Add the meta-learned pull ``exp(log_pull) ||R - R0||^2`` (initial weight 1).

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.sharing import DenseSharing, Residual
    >>> soft = Residual(DenseSharing(n_filters=2), pull=True).bind((3, 4))
    >>> soft.inner_names, soft.inner_shapes()
    (('filters', 'residual'), {'filters': (2,), 'residual': (3, 4)})
    >>> w = soft(torch.zeros(2), torch.ones(3, 4))      # U 0 + R
    >>> bool((w == 1).all())
    True
    >>> soft.penalty({"residual": torch.ones(5, 3, 4)},  # 5 tasks: exp(0) * 12 each
    ...              {"residual": torch.zeros(3, 4)})
    tensor([12., 12., 12., 12., 12.], grad_fn=<MulBackward0>)
    """

    inner_names = ("filters", "residual")

    def __init__(self, sharing, *, inner_lr=None, pull=False):
        super().__init__()
        if not isinstance(sharing, Sharing) or isinstance(sharing, Residual):
            raise TypeError(f"Residual wraps one sharing (not a residual); got {sharing!r}")
        self.sharing = sharing
        self.inner_lr = inner_lr
        self.pull = pull

    def _build(self, weight_shape, generator):
        if self.inner_lr is not None and not self.inner_lr >= 0:
            raise ValueError(f"Residual's inner_lr must be >= 0 or None; got {self.inner_lr!r}")
        self.sharing = self.sharing.bind(weight_shape, generator)
        self.log_pull = nn.Parameter(torch.zeros(())) if self.pull else None

    @property
    def learnable(self):
        return self.sharing.learnable

    @learnable.setter
    def learnable(self, value):  # the wrapped sharing says; the base sets a default
        pass

    @property
    def n_filters(self):
        return self.sharing.n_filters

    def symmetry_parameters(self):
        return self.sharing.symmetry_parameters()

    def inner_shapes(self):
        return {"filters": (self.n_filters,), "residual": self.weight_shape}

    def forward(self, filters, residual):
        return self.sharing(filters) + residual

    def held(self, filters, residual):
        return self.sharing.held(filters) + residual

    def right_inverse(self, weight):
        filters = self.sharing.right_inverse(weight)
        return filters, weight - self.sharing(filters)

    def matrix(self):
        return self.sharing.matrix()

    def initial_inner(self, weight, generator=None, output=False):
        return {**self.sharing.initial_inner(weight, generator, output),
                "residual": torch.zeros_like(weight)}

    def penalty(self, inner, initial):
        if self.log_pull is None:
            return None
        diff = inner["residual"] - initial["residual"]
        return self.log_pull.exp() * diff.pow(2).flatten(-len(self.weight_shape)).sum(-1)
