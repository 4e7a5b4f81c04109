"""DeepSets: a permutation-equivariant network on sets of elements (Zaheer et al. 2017)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .mlp import ACTIVATIONS

__all__ = ["DeepSets", "EquivariantLinear"]


class EquivariantLinear(nn.Module):
    """The S_n-equivariant linear layer: ``y_i = Λ x_i + Γ mean_j(x_j) + b``.

    Input ``(..., n_elements, in_features)``, output ``(..., n_elements, out_features)``;
    any permutation of the elements permutes the output the same way (Proposition 1 of
    the MSR paper: the sharing ``λ I + γ 11^T`` for one feature).

    Parameters
    ----------
    in_features : int
        Features per element.
    out_features : int
        Outputs per element.
    bias : bool, default=True

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.models import EquivariantLinear
    >>> layer = EquivariantLinear(2, 3)
    >>> x = torch.randn(4, 5, 2)
    >>> torch.allclose(layer(x)[:, [2, 0, 1, 4, 3]], layer(x[:, [2, 0, 1, 4, 3]]), atol=1e-6)
    True
    """

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.own = nn.Parameter(torch.empty(out_features, in_features))
        self.pooled = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        with torch.no_grad():
            std = 1.0 / math.sqrt(2 * in_features)
            self.own.normal_(0.0, std)
            self.pooled.normal_(0.0, std)

    def forward(self, x):
        out = x @ self.own.T + x.mean(-2, keepdim=True) @ self.pooled.T
        return out if self.bias is None else out + self.bias


class DeepSets(nn.Module):
    """Equivariant layers with an activation between them, on sets of elements.

    Input ``(n, n_elements)`` (one feature per element) or ``(n, n_elements,
    in_features)``; output ``(n, n_elements)`` for ``out_features=1``, else
    ``(n, n_elements, out_features)``. The symmetry is built in, so every parameter is
    adapted as is: the exact S_n oracle for permutation-equivariant tasks.

    Parameters
    ----------
    in_features : int, default=1
        Features per element.
    hidden_features : tuple of int, default=()
        Hidden widths (per element).
    out_features : int, default=1
        Outputs per element.
    activation : {"relu", "tanh", "logistic", "identity"}, default="relu"
    bias : bool, default=True

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.models import DeepSets
    >>> net = DeepSets(hidden_features=(4,))
    >>> net(torch.randn(3, 10)).shape
    torch.Size([3, 10])
    """

    def __init__(self, in_features=1, hidden_features=(), out_features=1, activation="relu",
                 bias=True):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}; got "
                             f"{activation!r}")
        sizes = [int(in_features), *(int(h) for h in hidden_features), int(out_features)]
        layers = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            if i:
                layers.append(ACTIVATIONS[activation]())
            layers.append(EquivariantLinear(n_in, n_out, bias))
        self.layers = nn.Sequential(*layers)
        self.in_features, self.out_features = sizes[0], sizes[-1]

    def forward(self, x):
        if self.in_features == 1 and x.dim() == 2:
            x = x.unsqueeze(-1)
        out = self.layers(x)
        return out.squeeze(-1) if self.out_features == 1 else out

    def default_sharing(self, layer="msr", n_filters=8):
        """Every parameter adapted as is (the symmetry is built in)."""
        return {}
