"""The per-task estimators' skorch machinery: one task's inner loop, the engine's own.

:class:`_AdaptationNet` is a :class:`skorch.NeuralNet` whose module is one task's
network (:class:`_TaskNetwork`: a MetaModel at this task's inner tensors), whose loss is
the engine's inner objective (:func:`~msr_sklearn.engine.inner_objective`, with a
residual's pull and, for weighted rows, the weighted mean) and whose optimizer applies
the engine's update rule (:func:`~msr_sklearn.engine.inner_update`), one learned rate per
inner tensor: ``fit`` then ``predict`` reproduces the engine's adapted outputs.
"""

from __future__ import annotations

import copy
import math

import torch
from skorch import NeuralNet
from torch import nn

from .engine import inner_objective, inner_update

__all__ = ["adapted_module_outputs"]


class _InOrderBatches:
    """A skorch iterator: consecutive ``batch_size``-row slices of the data, in order.

    skorch resolves ``batch_size=-1`` to the whole data set, so with it every epoch
    is one full-batch step. Unlike a ``DataLoader`` it neither collates row by row
    nor draws a seed from torch's global RNG on every epoch (which would make
    ``fit`` change the caller's random state). Weighted data come as
    ``X = {"X": rows, "sample_weight": weights}``.
    """

    def __init__(self, dataset, batch_size):
        self.dataset = dataset
        self.batch_size = int(batch_size)

    def __len__(self):
        return math.ceil(len(self.dataset) / self.batch_size)

    def __iter__(self):
        X, y = self.dataset.X, self.dataset.y
        for start in range(0, len(self.dataset), self.batch_size):
            rows = slice(start, start + self.batch_size)
            Xb = {k: v[rows] for k, v in X.items()} if isinstance(X, dict) else X[rows]
            yield Xb, (None if y is None else y[rows])


class _TaskNetwork(nn.Module):
    """One task's network: a MetaModel's module at this task's inner tensors.

    The inner tensors are this module's parameters (``inner``, started at the learned
    ``v0``, ``R0`` and initial values); every outer parameter (``U``, a pull weight)
    is frozen. The forward runs the engine's own task-batched call with one task, and
    the network stays in eval mode (no dropout), as the engine adapts in evaluation.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model.eval()
        self.model.requires_grad_(False)
        self.names = list(model.inner_names)
        self.inner = nn.ParameterList([nn.Parameter(p.detach().clone()) for p in
                                       model.initial_inner().values()])

    def inner_dict(self):
        """The current inner tensors by name, with a task dimension of 1."""
        return {n: p.unsqueeze(0) for n, p in zip(self.names, self.inner)}

    def train(self, mode=True):
        super().train(mode)
        self.model.eval()
        return self

    def forward(self, x):
        return self.model(x.unsqueeze(0), self.inner_dict())[0]


class _InnerUpdate(torch.optim.Optimizer):
    """SGD on the inner tensors through the engine's update rule, one rate per tensor."""

    def __init__(self, params, lrs):
        super().__init__([{"params": [p], "lr": float(lr)} for p, lr in zip(params, lrs)], {})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            (p,) = group["params"]
            if p.grad is not None:
                p.copy_(inner_update({"p": p}, [p.grad], [group["lr"]])["p"])
        return loss


class _AdaptationNet(NeuralNet):
    """A ``NeuralNet`` whose loss is the engine's inner objective and whose optimizer is
    the engine's update; a C-class task uses the first C of a symmetry's N logits."""

    def __init__(self, *args, inner_loop=None, inner_lrs=None, n_classes=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.inner_loop = inner_loop
        self.inner_lrs = inner_lrs
        self.n_classes = n_classes

    def initialize_optimizer(self, *_, **__):
        self.optimizer_ = _InnerUpdate(list(self.module_.inner), self.inner_lrs)
        return self

    def infer(self, x, **fit_params):
        return super().infer(x["X"] if isinstance(x, dict) else x, **fit_params)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        if self.n_classes is not None:
            y_pred = y_pred[..., : self.n_classes]
        weights = X["sample_weight"][None] if isinstance(X, dict) else None
        network = self.module_
        return inner_objective(network.model, network.inner_dict(), y_pred.unsqueeze(0),
                               y_true.unsqueeze(0), self.inner_loop, weights)[0]


def adapted_module_outputs(module, X):
    """The adapted network's outputs for rows ``X``, evaluated in float64 (float32 on MPS).

    The adapted float32 weights in float64 arithmetic: a row's output then does not
    depend on the other rows of the batch, as scikit-learn expects, where float32
    matrix products differ in the last bit.
    """
    device = next(module.parameters()).device
    dtype = torch.float32 if device.type == "mps" else torch.float64
    wide = copy.deepcopy(module).to(dtype)
    with torch.no_grad():
        return wide(torch.as_tensor(X, dtype=dtype, device=device))
