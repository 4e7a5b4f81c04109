"""A slow, per-task loop implementation of the inner/outer loop.

It exists only to check the vectorized engine (:mod:`msr_sklearn.engine.meta`) against, in
the tests and in ``benchmarks/speed.py``: each task runs on its own, unbatched, with
its own ``autograd.grad`` calls, as the official implementation does.
"""

import contextlib

import torch

from .meta import LOSSES, MetaModel, TaskBatch


def reference_task_losses(model: MetaModel, batch: TaskBatch, *, loss="mse", inner_steps=1,
                          first_order=False, symmetry_gradient="second_order"):
    """Per-task query losses ``(T,)``, one Python iteration per task.

    ``symmetry_gradient="first_order"`` is written out by the chain rule rather than
    the engine's held weights: the support gradient w.r.t. each layer's weight ``W``
    is taken with the full graph, and the filters' gradient is ``U^T dL/dW`` with the
    materialized, detached ``U``. A residual pull is written out here, layer by layer,
    from the model's ``log_pull`` and ``R0``.
    """
    loss_fn = LOSSES[loss]
    read_held = symmetry_gradient == "first_order" and not first_order
    losses = []
    for t in range(batch.n_tasks):
        inner = dict(model.initial_inner_parameters())
        for _ in range(inner_steps):
            weights = {}
            if read_held:  # every layer's U v, as a tensor the gradient can be taken at
                weights = {i: layer.sharing.weight(inner[f"{i}.filters"])
                           for i, layer in enumerate(model.network.layers)
                           if hasattr(layer, "sharing")}
            with _given_weights(model.network, weights):
                support_loss = loss_fn(model(batch.x_support[t], inner), batch.y_support[t])
            support_loss = support_loss + _pull(model, inner)
            # the gradient of a held layer's filters is taken at its weight, then read
            held = {f"{i}.filters": i for i in weights}
            wrt = [weights[held[name]] if name in held else p for name, p in inner.items()]
            grads = torch.autograd.grad(support_loss, wrt, create_graph=not first_order)
            grads = [_read(model.network.layers[held[name]], g, p) if name in held else g
                     for (name, p), g in zip(inner.items(), grads)]
            inner = {name: p - model.inner_lrs[j] * g
                     for j, ((name, p), g) in enumerate(zip(inner.items(), grads))}
        mask = None if batch.query_mask is None else batch.query_mask[t]
        losses.append(loss_fn(model(batch.x_query[t], inner), batch.y_query[t], mask))
    return torch.stack(losses)


def _read(layer, grad_weight, filters):
    """``U^T vec(dL/dW)`` with the materialized ``U`` held constant."""
    return (layer.sharing.matrix().detach().T @ grad_weight.reshape(-1)).reshape(filters.shape)


@contextlib.contextmanager
def _given_weights(network, weights):
    """Layers ``i`` in ``weights`` use ``weights[i]`` as their ``U v`` (any filters)."""
    for i, weight in weights.items():
        network.layers[i].sharing.weight = lambda filters, weight=weight: weight
    try:
        yield
    finally:
        for i in weights:
            del network.layers[i].sharing.weight  # back to the class's method


def _pull(model, inner):
    """``sum_l exp(log_pull_l) * sum((R_l - R0_l)^2)`` for one task (0 without pulls)."""
    total = 0.0
    for i, layer in enumerate(model.network.layers):
        if getattr(layer, "log_pull", None) is not None:
            total = total + torch.exp(layer.log_pull) * torch.sum(
                (inner[f"{i}.residual"] - layer.residual) ** 2)
    return total
