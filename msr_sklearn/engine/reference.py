"""A per-task loop implementation of the inner/outer loop, as the official MSR code does it.

It exists to check the vectorized engine against (tests) and as the speed baseline
(benchmarks): each task runs on its own, unbatched, through
:func:`torch.func.functional_call`, with its own ``autograd.grad`` calls (higher-order
when the meta-gradient needs it).
"""

from __future__ import annotations

import torch

from .inner import InnerLoop, inner_update

__all__ = ["reference_task_losses"]


def reference_task_losses(model, batch, loop=InnerLoop()):
    """Per-task query losses ``(T,)``, one Python iteration per task.

    ``symmetry_gradient="first_order"`` is written out by the chain rule rather than
    the engine's held weights: the support gradient w.r.t. each shared weight ``W`` is
    taken with the full graph, and the filters' gradient is ``U^T dL/dW`` with the
    materialized, detached ``U`` (a residual's gradient is ``dL/dW`` itself).

    Parameters
    ----------
    model : MetaModel
    batch : TaskBatch
    loop : InnerLoop, default=InnerLoop()

    Returns
    -------
    Tensor of shape (T,)

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.data.batch import TaskBatch
    >>> from msr_sklearn.engine import MetaModel, task_losses
    >>> from msr_sklearn.engine.reference import reference_task_losses
    >>> from msr_sklearn.models import MLP
    >>> torch.manual_seed(0) and None
    >>> net = MLP(5, 2)
    >>> model = MetaModel(net, net.default_sharing("msr", n_filters=3))
    >>> x, y = torch.randn(4, 10, 5), torch.randn(4, 10, 2)
    >>> batch = TaskBatch(x[:, :3], y[:, :3], x[:, 3:], y[:, 3:])
    >>> torch.allclose(reference_task_losses(model, batch), task_losses(model, batch))
    True
    """
    read_held = loop.symmetry_gradient == "first_order" and not loop.first_order
    initial = model.initial_inner()
    losses = []
    for t in range(batch.n_tasks):
        inner = dict(initial)
        for _ in range(loop.steps):
            params = model.weights(inner)  # full graph through every sharing
            wrt = {name: params[name.rpartition(".")[0]] if _held(model, name, read_held)
                   else p for name, p in inner.items()}
            out = torch.func.functional_call(model.module, params, (batch.x_support[t],))
            loss = loop.loss_fn(out[None], batch.y_support[t][None])[0]
            penalty = model.inner_penalty(inner)
            if penalty is not None:
                loss = loss + penalty
            grads = torch.autograd.grad(loss, list(wrt.values()),
                                        create_graph=not loop.first_order)
            grads = [_read(model, name, g) if _held(model, name, read_held) else g
                     for name, g in zip(inner, grads)]
            inner = inner_update(inner, grads, model.inner_lrs)
        params = model.weights(inner)
        out = torch.func.functional_call(model.module, params, (batch.x_query[t],))
        mask = None if batch.query_mask is None else batch.query_mask[t][None]
        losses.append(loop.loss_fn(out[None], batch.y_query[t][None], mask)[0])
    return torch.stack(losses)


def _held(model, inner_name, read_held):
    """Whether the gradient of ``inner_name`` is read through a held ``U``: the filters of
    a shared weight (a residual's gradient is the weight's own)."""
    shared, _, part = inner_name.rpartition(".")
    return read_held and part == "filters" and model.roles.get(shared) == "shared"


def _read(model, inner_name, grad_weight):
    """``U^T vec(dL/dW)`` with the materialized ``U`` held constant."""
    u = model.sharing(inner_name.rpartition(".")[0]).matrix().detach()
    return u.T @ grad_weight.reshape(-1)
