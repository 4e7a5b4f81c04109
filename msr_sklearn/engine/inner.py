"""The inner loop: every task of a meta-batch adapts its inner tensors at once.

The initial inner tensors get a leading task dimension (``v0`` expanded to ``(T, k)``),
the network runs on ``x`` of shape ``(T, n, ...)``, and one ``autograd.grad`` of the
*sum* of the per-task support losses gives every task its own gradient (task ``t``'s
loss depends only on task ``t``'s copy). No Python loop runs over tasks; the only
loop is over inner steps. :class:`InnerLoop` holds the settings, in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .losses import LOSSES

__all__ = ["SYMMETRY_GRADIENTS", "InnerLoop", "adapt", "inner_objective", "inner_update",
           "support_loss"]

#: how the meta-gradient reaches the sharings ``U`` (see :class:`InnerLoop`)
SYMMETRY_GRADIENTS = ("first_order", "second_order")


@dataclass(frozen=True)
class InnerLoop:
    """How a task adapts, and which terms of the meta-gradient flow back through it.

    Parameters
    ----------
    loss : {"mse", "cross_entropy"}, default="mse"
        The support loss (and the query loss of the outer loop).
    steps : int, default=1
        Inner SGD steps.
    first_order : bool, default=False
        Treat the inner gradients as constants (first-order MAML): the adapted
        tensors stay differentiable w.r.t. the meta-parameters, without second-order
        terms.
    symmetry_gradient : {"first_order", "second_order"}, default="second_order"
        How the meta-gradient reaches the sharings ``U`` (with ``first_order=False``).
        ``"first_order"``: each shared weight reads its support gradient through a
        ``U`` held constant (``v' = v0 - lr * U_held^T dL/dW``,
        :meth:`Sharing.held <msr_sklearn.sharing.Sharing.held>`), so ``U`` gets no
        second-order term through that read; every other path and all terms of the
        other meta-parameters are kept. For one linear layer its fixed point puts
        ``span(U)`` inside the span of the task weights: the symmetry.
        ``"second_order"``: the paper's full MAML gradient, whose optimum with few
        support rows tilts ``span(U)`` a few degrees off the symmetry
        (``docs/convergence.md``).

    Examples
    --------
    >>> from msr_sklearn.engine import InnerLoop
    >>> InnerLoop(loss="cross_entropy", steps=3)
    InnerLoop(loss='cross_entropy', steps=3, first_order=False, symmetry_gradient='second_order')
    >>> InnerLoop(steps=0)
    Traceback (most recent call last):
    ...
    ValueError: steps must be an integer >= 1; got 0
    """

    loss: str = "mse"
    steps: int = 1
    first_order: bool = False
    symmetry_gradient: str = "second_order"

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {tuple(LOSSES)}; got {self.loss!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be an integer >= 1; got {self.steps!r}")
        if self.symmetry_gradient not in SYMMETRY_GRADIENTS:
            raise ValueError(f"symmetry_gradient must be one of {SYMMETRY_GRADIENTS}; got "
                             f"{self.symmetry_gradient!r}")

    @property
    def loss_fn(self):
        """The per-task loss function."""
        return LOSSES[self.loss]


def inner_objective(model, inner, outputs, y_support, loop, weights=None):
    """The inner loss of outputs ``(T, n, ...)`` at ``inner``: the loss plus the sharings'
    penalties (a residual's pull), per task.

    The one definition of the inner loss: :func:`adapt` and the per-task estimators
    both minimize it.

    Parameters
    ----------
    model : MetaModel
    inner : dict of str to Tensor
        The inner tensors the outputs were computed at (for the penalties).
    outputs : Tensor of shape (T, n, ...)
    y_support : Tensor of shape (T, n, ...) or (T, n)
    loop : InnerLoop
    weights : Tensor of shape (T, n) or None, default=None
        Row weights: the weighted mean over the rows (the estimators' ``sample_weight``).

    Returns
    -------
    Tensor of shape (T,)

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.engine import InnerLoop, MetaModel, inner_objective
    >>> from msr_sklearn.models import MLP
    >>> model = MetaModel(MLP(3, 1))
    >>> inner = {n: p.expand(2, *p.shape) for n, p in model.initial_inner().items()}
    >>> inner_objective(model, inner, torch.zeros(2, 4, 1), torch.ones(2, 4, 1), InnerLoop())
    tensor([1., 1.])
    """
    loss = loop.loss_fn(outputs, y_support, weights)
    penalty = model.inner_penalty(inner)  # None without residual pulls
    return loss if penalty is None else loss + penalty


def support_loss(model, inner, x_support, y_support, loop, hold=False):
    """Every task's support loss at ``inner``: :func:`inner_objective` of the network's
    outputs on the support rows.

    Parameters
    ----------
    model : MetaModel
    inner : dict of str to Tensor
        Inner tensors with a leading task dimension.
    x_support, y_support : Tensor
        ``(T, n, ...)`` inputs and their targets.
    loop : InnerLoop
    hold : bool, default=False
        Build shared weights with ``U`` held in the read (first-order symmetry gradient).

    Returns
    -------
    Tensor of shape (T,)

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.engine import InnerLoop, MetaModel, support_loss
    >>> from msr_sklearn.models import MLP
    >>> model = MetaModel(MLP(3, 1, bias=False))
    >>> inner = {"0.weight": torch.zeros(2, 1, 3)}
    >>> support_loss(model, inner, torch.ones(2, 4, 3), torch.ones(2, 4, 1), InnerLoop())
    tensor([1., 1.])
    """
    return inner_objective(model, inner, model(x_support, inner, hold=hold), y_support, loop)


def inner_update(inner, grads, lrs):
    """One SGD step on every inner tensor: ``p - lr_p * grad_p`` (the inner update rule).

    Parameters
    ----------
    inner : dict of str to Tensor
        The inner tensors, in the order of ``lrs``.
    grads : sequence of Tensor
        Their gradients.
    lrs : sequence of float or Tensor
        One learning rate per tensor.

    Returns
    -------
    dict of str to Tensor

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.engine import inner_update
    >>> inner_update({"v": torch.ones(2)}, [torch.full((2,), 4.0)], [0.5])
    {'v': tensor([-1., -1.])}
    """
    return {name: p - lrs[j] * g for j, ((name, p), g) in enumerate(zip(inner.items(), grads))}


def adapt(model, x_support, y_support, loop=InnerLoop(), *, track_meta_gradients=True):
    """Run ``loop.steps`` SGD steps on every task's inner tensors at once.

    The initial inner tensors are copied once per task; each step takes one gradient
    of the summed per-task support losses and updates every tensor at its own learned
    rate (:func:`inner_update`). Only the inner tensors change. Gradients are enabled
    inside, so this also works under :func:`torch.no_grad`.

    Parameters
    ----------
    model : MetaModel
        The meta-parameters.
    x_support : Tensor of shape (T, n_support, ...)
        Support inputs of every task.
    y_support : Tensor of shape (T, n_support, ...) or (T, n_support)
        Support targets: floats for ``"mse"``, int64 class indices for
        ``"cross_entropy"``.
    loop : InnerLoop, default=InnerLoop()
        The inner loop's settings.
    track_meta_gradients : bool, default=True
        Keep the graph from the result back to the meta-parameters. ``False`` detaches
        the meta-parameters and every step (evaluation).

    Returns
    -------
    inner : dict of str to Tensor
        The adapted inner tensors by name (``model.inner_names``), each of shape
        ``(T, *initial shape)``.

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.engine import InnerLoop, MetaModel, adapt
    >>> from msr_sklearn.models import MLP
    >>> torch.manual_seed(0) and None
    >>> net = MLP(5, 2, hidden_layer_sizes=(8,))
    >>> model = MetaModel(net, net.default_sharing("msr", n_filters=4))
    >>> x, y = torch.randn(4, 3, 5), torch.randn(4, 3, 2)
    >>> inner = adapt(model, x, y, InnerLoop(steps=2))
    >>> {name: tuple(p.shape) for name, p in inner.items()}
    {'0.weight.filters': (4, 4), '0.bias': (4, 8), '2.weight.filters': (4, 4), '2.bias': (4, 2)}
    >>> model(x, inner).shape  # every task's network after adaptation
    torch.Size([4, 3, 2])
    >>> adapt(model, x, y, track_meta_gradients=False)["0.bias"].grad_fn is None
    True
    """
    n_tasks = x_support.shape[0]
    inner = {}
    for name, p in model.initial_inner().items():
        p = p if track_meta_gradients else p.detach()
        # contiguous copies: GEMMs on a stride-0 expanded tensor take slow paths
        p = p.expand(n_tasks, *p.shape).contiguous()
        inner[name] = p if p.requires_grad else p.requires_grad_()
    lrs = model.inner_lrs if track_meta_gradients else model.inner_lrs.detach()
    create_graph = track_meta_gradients and not loop.first_order
    hold = create_graph and loop.symmetry_gradient == "first_order"
    with torch.enable_grad():
        for _ in range(loop.steps):
            loss = support_loss(model, inner, x_support, y_support, loop, hold=hold)
            grads = torch.autograd.grad(loss.sum(), tuple(inner.values()),
                                        create_graph=create_graph)
            inner = inner_update(inner, grads, lrs)
            if not track_meta_gradients:
                inner = {n: p.detach().requires_grad_() for n, p in inner.items()}
    return inner
