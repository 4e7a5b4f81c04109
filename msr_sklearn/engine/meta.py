"""The vectorized MSR inner/outer loop.

A meta-batch of ``T`` tasks is one batched computation: the inner parameters
(``v`` and biases) get a leading task dimension (``v0`` expanded to ``(T, k)``), the
network runs on ``x`` of shape ``(T, n, d)``, and one ``autograd.grad`` of the *sum*
of the per-task support losses gives every task's own gradient (task ``t``'s loss
depends only on task ``t``'s copy). No Python loop runs over tasks; the only loop
is over inner steps.

The *inner* parameters are per-task copies, changed by :func:`adapt`; the *outer*
(meta-)parameters are those of :class:`MetaModel`, shared by all tasks and changed
by :func:`meta_step`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..data.batch import TaskBatch
from ..nn.network import MetaNetwork
from .optim import make_meta_optimizer

__all__ = ["LOSSES", "MetaModel", "TaskBatch", "adapt", "adapted_outputs",
           "cross_entropy_loss", "evaluate_task_losses", "make_meta_optimizer", "meta_step",
           "mse_loss", "task_losses", "SYMMETRY_GRADIENTS"]

#: how the meta-gradient reaches the sharings ``U`` (see :func:`adapt`)
SYMMETRY_GRADIENTS = ("first_order", "second_order")




def _mean_over_samples(per_sample, mask):
    if mask is None:
        return per_sample.mean(-1)
    mask = mask.to(per_sample.dtype)
    return (per_sample * mask).sum(-1) / mask.sum(-1)


def mse_loss(pred, target, mask=None):
    """Per-task mean squared error, the mean over all output elements (as in the paper).

    Squared errors are averaged over the outputs, then over the (unmasked) samples.

    Parameters
    ----------
    pred, target : Tensor of shape (T, n, n_outputs)
        Predictions and targets.
    mask : bool Tensor of shape (T, n) or None, default=None
        Which samples count; ``None``: all of them.

    Returns
    -------
    Tensor of shape (T,)

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.engine.meta import mse_loss
    >>> target = torch.arange(6.0).reshape(2, 3, 1)
    >>> mse_loss(torch.zeros(2, 3, 1), target)
    tensor([ 1.6667, 16.6667])
    >>> mask = torch.tensor([[True, True, False], [True, False, False]])
    >>> mse_loss(torch.zeros(2, 3, 1), target, mask)
    tensor([0.5000, 9.0000])
    """
    return _mean_over_samples(((pred - target) ** 2).mean(-1), mask)


def cross_entropy_loss(logits, target, mask=None):
    """Per-task mean cross-entropy over the (unmasked) samples.

    Parameters
    ----------
    logits : Tensor of shape (T, n, n_classes)
        Unnormalized class scores.
    target : int64 Tensor of shape (T, n)
        Class indices.
    mask : bool Tensor of shape (T, n) or None, default=None
        Which samples count; ``None``: all of them.

    Returns
    -------
    Tensor of shape (T,)

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.engine.meta import cross_entropy_loss
    >>> cross_entropy_loss(torch.zeros(2, 3, 4), torch.tensor([[0, 1, 2], [3, 3, 3]]))
    tensor([1.3863, 1.3863])
    """
    per_sample = F.cross_entropy(logits.flatten(0, -2), target.flatten(), reduction="none")
    return _mean_over_samples(per_sample.reshape(target.shape), mask)


#: the per-task losses by the ``loss`` names that the functions below accept
LOSSES = {"mse": mse_loss, "cross_entropy": cross_entropy_loss}


class MetaModel(nn.Module):
    """A :class:`~msr_sklearn.nn.MetaNetwork` plus its meta-learned inner learning rates.

    Everything here is meta-learned by the outer loop: the sharings ``U``, the
    initial inner parameters (``v0``, biases) and one inner learning rate per inner
    parameter tensor (the official code's ``per_layer`` mode).

    Parameters
    ----------
    network : MetaNetwork
        The network; its parameters become the model's meta-parameters.
    inner_lr : float, default=0.1
        Initial value of every inner learning rate.
    learn_inner_lr : bool, default=True
        Whether the outer loop updates the inner learning rates (else they are a
        parameter with ``requires_grad=False``, skipped by
        :func:`make_meta_optimizer`).

    Attributes
    ----------
    network : MetaNetwork
        The wrapped network.
    inner_names : tuple of str
        Names of the inner parameters, ``"{layer index}.{name}"``, in the order of
        ``inner_lrs``.
    inner_lrs : Parameter of shape (len(inner_names),)
        The inner learning rate of each inner parameter tensor.

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.engine.meta import MetaModel
    >>> from msr_sklearn.nn import build_network
    >>> net = build_network(5, 2, hidden_layer_sizes=(8,), n_filters=4, random_state=0)
    >>> model = MetaModel(net, inner_lr=0.1)
    >>> model.inner_names
    ('0.filters', '0.bias', '1.filters', '1.bias')
    >>> model.inner_lrs
    Parameter containing:
    tensor([0.1000, 0.1000, 0.1000, 0.1000], requires_grad=True)
    >>> model(torch.randn(3, 5)).shape
    torch.Size([3, 2])
    """

    def __init__(self, network: MetaNetwork, inner_lr: float = 0.1, learn_inner_lr: bool = True):
        super().__init__()
        self.network = network
        self.inner_names = tuple(network.initial_inner_parameters())
        self.inner_lrs = nn.Parameter(
            torch.full((len(self.inner_names),), float(inner_lr)), requires_grad=learn_inner_lr
        )

    def initial_inner_parameters(self):
        """The meta-learned initial inner parameters (``v0`` and biases), by name."""
        return self.network.initial_inner_parameters()

    def forward(self, x, inner=None):
        """The network's outputs.

        Parameters
        ----------
        x : Tensor of shape (n, n_features), or (T, n, n_features) with ``inner``
            Inputs.
        inner : dict of str to Tensor or None, default=None
            Per-task inner parameters with a leading task dimension (as returned by
            :func:`adapt`); ``None`` uses the initial ones.

        Returns
        -------
        Tensor of shape (n, n_outputs), or (T, n, n_outputs) with ``inner``
        """
        return self.network(x, inner)


def adapt(model: MetaModel, x_support, y_support, *, loss="mse", inner_steps=1,
          first_order=False, symmetry_gradient="second_order", track_meta_gradients=True):
    """Run ``inner_steps`` SGD steps on every task's inner parameters at once.

    The initial inner parameters are copied once per task; each step takes one
    gradient of the summed per-task support losses (task ``t``'s loss depends only on
    its own copy) and updates ``p <- p - lr_p * grad``, with the model's inner learning
    rates. A network with residual pulls adds its inner penalty
    ``sum_l exp(log_pull_l) ||R_l - R0_l||^2`` to each task's support loss
    (:meth:`~msr_sklearn.nn.MetaNetwork.inner_penalty`). Only the inner parameters
    change; the sharings ``U`` stay fixed. Gradients are enabled inside, so this also
    works under :func:`torch.no_grad`.

    Parameters
    ----------
    model : MetaModel
        The meta-parameters: sharings, initial inner parameters, inner learning rates.
    x_support : Tensor of shape (T, n_support, n_features)
        Support inputs of every task.
    y_support : Tensor of shape (T, n_support, n_outputs) or (T, n_support)
        Support targets: floats for ``"mse"``, int64 class indices for
        ``"cross_entropy"``.
    loss : {"mse", "cross_entropy"}, default="mse"
        The support loss (:func:`mse_loss` or :func:`cross_entropy_loss`).
    inner_steps : int, default=1
        Number of inner SGD steps.
    first_order : bool, default=False
        Treat the inner gradients as constants (first-order MAML): the result is
        still differentiable w.r.t. the meta-parameters, without second-order terms.
    symmetry_gradient : {"first_order", "second_order"}, default="second_order"
        How the meta-gradient reaches the sharings ``U`` (with ``first_order=False``;
        ``first_order=True`` makes every term first order). ``"first_order"``: each
        layer reads its support gradient through a ``U`` held constant
        (``v' = v0 - lr * U_held^T dL/dW``, :meth:`MetaNetwork.holding_sharings
        <msr_sklearn.nn.MetaNetwork.holding_sharings>`), so ``U`` gets no
        second-order term through that read; every other path (the direct term
        ``dL_query/dU`` at the adapted filters, ``U``'s effect on the features later
        layers adapt on) and all terms of ``v0``, biases and inner lrs are kept. For
        one linear layer its fixed point satisfies ``U E[v' v'^T] = E[w v'^T]`` (``w``
        the task's true weights, ``v'`` the adapted filters), so ``span(U)`` lies
        inside the span of the task weights: the symmetry. ``"second_order"`` (the
        paper's full MAML gradient) also differentiates through the read; with few
        support rows its optimum tilts ``span(U)`` off the symmetry by a few degrees,
        trading exactness for a slightly lower one-step query loss
        (``docs/convergence.md``). The engine's defaults are the paper's;
        :class:`~msr_sklearn.MetaSymmetryLearner` defaults to ``"auto"`` (first order
        for one layer).
    track_meta_gradients : bool, default=True
        Keep the graph from the result back to the meta-parameters (for
        :func:`task_losses`). ``False`` detaches the meta-parameters and every step
        (evaluation, :func:`adapted_outputs`).

    Returns
    -------
    inner : dict of str to Tensor
        The adapted inner parameters by name (as in ``model.inner_names``), each of
        shape ``(T, *initial shape)``.

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.engine.meta import MetaModel, adapt
    >>> from msr_sklearn.nn import build_network
    >>> net = build_network(5, 2, hidden_layer_sizes=(8,), n_filters=4, random_state=0)
    >>> model = MetaModel(net)
    >>> _ = torch.manual_seed(0)
    >>> x, y = torch.randn(4, 3, 5), torch.randn(4, 3, 2)
    >>> inner = adapt(model, x, y, inner_steps=2)
    >>> {name: tuple(p.shape) for name, p in inner.items()}
    {'0.filters': (4, 4), '0.bias': (4, 8), '1.filters': (4, 4), '1.bias': (4, 2)}
    >>> model(x, inner).shape  # every task's network after adaptation
    torch.Size([4, 3, 2])
    >>> adapt(model, x, y, track_meta_gradients=False)["0.filters"].grad_fn is None
    True
    """
    loss_fn = LOSSES[loss]
    if symmetry_gradient not in SYMMETRY_GRADIENTS:
        raise ValueError(f"symmetry_gradient must be one of {SYMMETRY_GRADIENTS}; got "
                         f"{symmetry_gradient!r}")
    n_tasks = x_support.shape[0]
    inner = {}
    for name, p in model.initial_inner_parameters().items():
        p = p if track_meta_gradients else p.detach()
        # contiguous copies: GEMMs on a stride-0 expanded tensor take slow paths
        p = p.expand(n_tasks, *p.shape).contiguous()
        inner[name] = p if p.requires_grad else p.requires_grad_()
    lrs = model.inner_lrs if track_meta_gradients else model.inner_lrs.detach()
    create_graph = track_meta_gradients and not first_order
    hold = create_graph and symmetry_gradient == "first_order"
    with torch.enable_grad():
        for _ in range(inner_steps):
            with model.network.holding_sharings(hold):
                support_out = model(x_support, inner)
            support_loss = loss_fn(support_out, y_support)
            pull = model.network.inner_penalty(inner)  # None without residual pulls
            if pull is not None:
                support_loss = support_loss + pull
            grads = torch.autograd.grad(support_loss.sum(), tuple(inner.values()),
                                        create_graph=create_graph)
            inner = {name: p - lrs[j] * g
                     for j, ((name, p), g) in enumerate(zip(inner.items(), grads))}
            if not track_meta_gradients:
                inner = {n: p.detach().requires_grad_() for n, p in inner.items()}
    return inner


def task_losses(model: MetaModel, batch: TaskBatch, *, loss="mse", inner_steps=1,
                first_order=False, symmetry_gradient="second_order"):
    """Every task's query loss after adaptation, differentiable in the meta-parameters.

    :func:`adapt` on the support set, then the loss of the adapted network on the
    query set, with padded query rows masked out (``batch.query_mask``).

    Parameters
    ----------
    model : MetaModel
        The meta-parameters.
    batch : TaskBatch
        The meta-batch of ``T`` tasks.
    loss : {"mse", "cross_entropy"}, default="mse"
        The loss, for the inner and the outer loop.
    inner_steps : int, default=1
        Number of inner SGD steps.
    first_order : bool, default=False
        Drop the second-order terms of the meta-gradient (see :func:`adapt`).
    symmetry_gradient : {"first_order", "second_order"}, default="second_order"
        How the meta-gradient reaches the sharings (see :func:`adapt`).

    Returns
    -------
    Tensor of shape (T,)
        The query losses, with a graph to every meta-parameter (``U``, ``v0``, biases,
        inner learning rates).

    See Also
    --------
    meta_step : One outer step on the mean of these losses.
    evaluate_task_losses : The same losses without meta-gradients, in chunks.

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.engine.meta import MetaModel, TaskBatch, task_losses
    >>> from msr_sklearn.nn import build_network
    >>> model = MetaModel(build_network(5, 2, n_filters=4, random_state=0))
    >>> _ = torch.manual_seed(0)
    >>> x, y = torch.randn(4, 10, 5), torch.randn(4, 10, 2)
    >>> losses = task_losses(model, TaskBatch(x[:, :3], y[:, :3], x[:, 3:], y[:, 3:]))
    >>> losses.shape, losses.requires_grad
    (torch.Size([4]), True)
    """
    inner = adapt(model, batch.x_support, batch.y_support, loss=loss,
                  inner_steps=inner_steps, first_order=first_order,
                  symmetry_gradient=symmetry_gradient)
    return LOSSES[loss](model(batch.x_query, inner), batch.y_query, batch.query_mask)


def meta_step(model: MetaModel, optimizer, batch: TaskBatch, *, loss="mse", inner_steps=1,
              first_order=False, symmetry_gradient="second_order", n_total_tasks=None,
              process_group=None):
    """One outer step on the mean query loss over the meta-batch; returns that loss.

    Computes :func:`task_losses`, backpropagates their mean into the meta-parameters
    and takes one ``optimizer`` step. The mean (not the official code's sum) keeps
    the meta-gradient's scale independent of ``meta_batch_size``; Adam is invariant
    to a constant gradient scale, so this changes nothing but the ``eps`` regime.

    Data parallel (``torch.distributed``): every process passes its own shard of the
    meta-batch, ``n_total_tasks`` the size of the whole meta-batch, and the
    ``process_group``; the loss and the meta-gradients are summed across processes in
    one all-reduce, so every process takes the identical step on the mean over the
    whole meta-batch and the replicas stay in sync.

    If the loss or any meta-gradient is non-finite the step is skipped, so the
    parameters and the optimizer state stay at their last finite values, and the
    returned loss is NaN (or the non-finite loss).

    Parameters
    ----------
    model : MetaModel
        The meta-parameters, updated in place.
    optimizer : torch.optim.Optimizer
        Optimizer over the model's learned parameters, e.g. from
        :func:`make_meta_optimizer`.
    batch : TaskBatch
        This process's meta-batch (or shard of it).
    loss : {"mse", "cross_entropy"}, default="mse"
        The loss, for the inner and the outer loop.
    inner_steps : int, default=1
        Number of inner SGD steps.
    first_order : bool, default=False
        Drop the second-order terms of the meta-gradient (see :func:`adapt`).
    symmetry_gradient : {"first_order", "second_order"}, default="second_order"
        How the meta-gradient reaches the sharings (see :func:`adapt`).
    n_total_tasks : int or None, default=None
        Size of the whole meta-batch across processes; ``None``: ``batch.n_tasks``.
    process_group : ProcessGroup or None, default=None
        The ``torch.distributed`` group to all-reduce over; ``None``: no
        communication (a single process).

    Returns
    -------
    Tensor of shape ()
        The mean query loss over the whole meta-batch, detached.

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.engine.meta import MetaModel, TaskBatch, make_meta_optimizer, meta_step
    >>> from msr_sklearn.nn import build_network
    >>> model = MetaModel(build_network(5, 2, n_filters=4, random_state=0))
    >>> optimizer = make_meta_optimizer(model, meta_lr=1e-2)
    >>> _ = torch.manual_seed(0)
    >>> x, y = torch.randn(4, 10, 5), torch.randn(4, 10, 2)
    >>> batch = TaskBatch(x[:, :3], y[:, :3], x[:, 3:], y[:, 3:])
    >>> before = model.inner_lrs.detach().clone()
    >>> meta_loss = meta_step(model, optimizer, batch)
    >>> meta_loss.shape, bool(torch.isfinite(meta_loss))
    (torch.Size([]), True)
    >>> bool((model.inner_lrs != before).all())  # the inner lrs are meta-learned too
    True
    """
    optimizer.zero_grad(set_to_none=True)
    losses = task_losses(model, batch, loss=loss, inner_steps=inner_steps,
                         first_order=first_order, symmetry_gradient=symmetry_gradient)
    meta_loss = losses.sum() / (n_total_tasks or batch.n_tasks)
    meta_loss.backward()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for p in params:
        if p.grad is None:  # every process must contribute the same tensors
            p.grad = torch.zeros_like(p)
    meta_loss = meta_loss.detach()
    if process_group is not None:
        flat = torch.cat([meta_loss.reshape(1), *(p.grad.reshape(-1) for p in params)])
        torch.distributed.all_reduce(flat, group=process_group)
        meta_loss = flat[0]
        offset = 1
        for p in params:
            p.grad.copy_(flat[offset:offset + p.numel()].view_as(p))
            offset += p.numel()
    grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    if not bool(torch.isfinite(meta_loss) & torch.isfinite(grad_norm)):
        optimizer.zero_grad(set_to_none=True)
        return torch.where(torch.isfinite(meta_loss), torch.nan, meta_loss)
    optimizer.step()
    return meta_loss


def adapted_outputs(model: MetaModel, batch: TaskBatch, *, loss="mse", inner_steps=1,
                    chunk_size=512):
    """Query outputs after adaptation, for many tasks in bounded memory.

    Tasks are processed ``chunk_size`` at a time and no graph to the
    meta-parameters is kept (:func:`adapt` with ``track_meta_gradients=False``, the
    query forward pass under :func:`torch.no_grad`).

    Parameters
    ----------
    model : MetaModel
        The meta-parameters.
    batch : TaskBatch
        The tasks; ``query_mask`` is not used (padded rows get outputs too).
    loss : {"mse", "cross_entropy"}, default="mse"
        The inner loss.
    inner_steps : int, default=1
        Number of inner SGD steps.
    chunk_size : int, default=512
        Tasks adapted at once.

    Returns
    -------
    Tensor of shape (T, n_query, n_outputs)
        Predictions for ``"mse"``, logits for ``"cross_entropy"``.

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.engine.meta import MetaModel, TaskBatch, adapted_outputs
    >>> from msr_sklearn.nn import build_network
    >>> model = MetaModel(build_network(5, 2, n_filters=4, random_state=0))
    >>> _ = torch.manual_seed(0)
    >>> x, y = torch.randn(4, 10, 5), torch.randn(4, 10, 2)
    >>> batch = TaskBatch(x[:, :3], y[:, :3], x[:, 3:], y[:, 3:])
    >>> adapted_outputs(model, batch, chunk_size=3).shape  # chunks of 3 and 1 tasks
    torch.Size([4, 7, 2])
    """
    outputs = []
    for start in range(0, batch.n_tasks, chunk_size):
        chunk = batch.select(slice(start, start + chunk_size))
        inner = adapt(model, chunk.x_support, chunk.y_support, loss=loss,
                      inner_steps=inner_steps, track_meta_gradients=False)
        with torch.no_grad():
            outputs.append(model(chunk.x_query, inner))
    return torch.cat(outputs)


def evaluate_task_losses(model: MetaModel, batch: TaskBatch, *, loss="mse", inner_steps=1,
                         chunk_size=512):
    """Per-task query losses after adaptation (no meta-gradients), in chunks.

    The losses of :func:`adapted_outputs`, with padded query rows masked out; the
    values of :func:`task_losses` in bounded memory, for evaluation.

    Parameters
    ----------
    model : MetaModel
        The meta-parameters.
    batch : TaskBatch
        The tasks.
    loss : {"mse", "cross_entropy"}, default="mse"
        The loss, for adaptation and scoring.
    inner_steps : int, default=1
        Number of inner SGD steps.
    chunk_size : int, default=512
        Tasks adapted at once.

    Returns
    -------
    Tensor of shape (T,)

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.engine.meta import MetaModel, TaskBatch, evaluate_task_losses, task_losses
    >>> from msr_sklearn.nn import build_network
    >>> model = MetaModel(build_network(5, 2, n_filters=4, random_state=0))
    >>> _ = torch.manual_seed(0)
    >>> x, y = torch.randn(4, 10, 5), torch.randn(4, 10, 2)
    >>> batch = TaskBatch(x[:, :3], y[:, :3], x[:, 3:], y[:, 3:])
    >>> losses = evaluate_task_losses(model, batch, chunk_size=3)
    >>> losses.shape, losses.requires_grad
    (torch.Size([4]), False)
    >>> torch.allclose(losses, task_losses(model, batch))
    True
    """
    out = adapted_outputs(model, batch, loss=loss, inner_steps=inner_steps,
                          chunk_size=chunk_size)
    return LOSSES[loss](out, batch.y_query, batch.query_mask)
