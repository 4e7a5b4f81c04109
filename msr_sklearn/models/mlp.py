"""The multilayer perceptron: the learner's network when it is given no ``module``."""

from __future__ import annotations

import math

import torch
from torch import nn

from .policies import layer_sharing, per_weight_filters

__all__ = ["ACTIVATIONS", "MLP"]

#: the activations by the names scikit-learn's MLPs use
ACTIVATIONS = {"identity": nn.Identity, "relu": nn.ReLU, "tanh": nn.Tanh,
               "logistic": nn.Sigmoid}


class MLP(nn.Sequential):
    """Linear layers with an activation between them: ``Linear, act, ..., Linear``.

    An ordinary :class:`torch.nn.Sequential`; its linear weights are what a sharing
    policy shares (``"0.weight"``, ``"2.weight"``, ...). Hidden weights start at
    ``N(0, 1/fan_in)`` (LeCun, so signals keep their scale through the layers), the
    output weight at ``N(0, 1/n_outputs²)``: the mean task is then close to the zero
    function, and a large random initial output would only add query error that
    meta-learning must first unlearn (on rank-1 translation tasks it delayed
    meta-learning by hundreds of steps). Biases start at 0.

    Parameters
    ----------
    n_features : int
        Inputs.
    n_outputs : int
        Outputs.
    hidden_layer_sizes : tuple of int, default=()
        Hidden widths; ``()`` is a single linear layer.
    activation : {"relu", "tanh", "logistic", "identity"}, default="relu"
        Between layers (none after the last).
    bias : bool, default=True
        Whether every layer has a bias.

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.models import MLP
    >>> net = MLP(5, 2, hidden_layer_sizes=(8,))
    >>> net
    MLP(
      (0): Linear(in_features=5, out_features=8, bias=True)
      (1): ReLU()
      (2): Linear(in_features=8, out_features=2, bias=True)
    )
    >>> net(torch.randn(3, 5)).shape
    torch.Size([3, 2])
    >>> net.default_sharing("msr", n_filters=4)
    {'0.weight': DenseSharing(n_filters=4, learnable=True), '2.weight': DenseSharing(n_filters=4, learnable=True)}
    """

    def __init__(self, n_features, n_outputs, hidden_layer_sizes=(), activation="relu",
                 bias=True):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}; got "
                             f"{activation!r}")
        sizes = [int(n_features), *(int(h) for h in hidden_layer_sizes), int(n_outputs)]
        if min(sizes) < 1:
            raise ValueError(f"every layer needs at least one unit: n_features={n_features}, "
                             f"hidden_layer_sizes={tuple(hidden_layer_sizes)}, "
                             f"n_outputs={n_outputs}")
        layers = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            if i:
                layers.append(ACTIVATIONS[activation]())
            layers.append(nn.Linear(n_in, n_out, bias=bias))
        super().__init__(*layers)
        self.n_features, self.n_outputs = sizes[0], sizes[-1]
        self.hidden_layer_sizes = tuple(sizes[1:-1])
        self.activation, self.bias = activation, bool(bias)
        self.reset_parameters()

    @property
    def linear_layers(self):
        """The ``nn.Linear`` layers, in order."""
        return [m for m in self if isinstance(m, nn.Linear)]

    def reset_parameters(self):
        """LeCun-normal hidden weights, ``N(0, 1/n_outputs²)`` output weight, zero biases."""
        layers = self.linear_layers
        with torch.no_grad():
            for i, layer in enumerate(layers):
                last = i == len(layers) - 1
                std = 1.0 / layer.out_features if last else 1.0 / math.sqrt(layer.in_features)
                layer.weight.normal_(0.0, std)
                if layer.bias is not None:
                    layer.bias.zero_()

    def default_sharing(self, layer="msr", n_filters=8):
        """``layer``'s sharing on every linear weight (``n_filters``: one ``k`` or one per layer)."""
        names = [f"{i}.weight" for i, m in enumerate(self) if isinstance(m, nn.Linear)]
        ks = per_weight_filters(n_filters, len(names))
        return {name: layer_sharing(layer, k) for name, k in zip(names, ks)}
