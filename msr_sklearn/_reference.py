"""A slow, per-task loop implementation of the inner/outer loop.

It exists only to check the vectorized engine (:mod:`msr_sklearn.meta`) against, in
the tests and in ``benchmarks/speed.py``: each task runs on its own, unbatched, with
its own ``autograd.grad`` calls, as the official implementation does.
"""

import copy

import torch

from .meta import LOSSES, MetaModel, TaskBatch


def reference_task_losses(model: MetaModel, batch: TaskBatch, *, loss="mse", inner_steps=1,
                          first_order=False, symmetry_gradient="second_order"):
    """Per-task query losses ``(T,)``, one Python iteration per task.

    ``symmetry_gradient="first_order"`` runs the support passes on a copy of the
    network whose sharings are detached (a separate code path from the engine's).
    A residual pull is written out here, layer by layer, from the original model's
    ``log_pull`` and ``R0`` (the copy's are frozen).
    """
    loss_fn = LOSSES[loss]
    support_model = model
    if symmetry_gradient == "first_order" and not first_order:
        support_model = copy.deepcopy(model)
        for name, p in support_model.network.outer_parameters().items():
            p.requires_grad_(False)
    losses = []
    for t in range(batch.n_tasks):
        inner = dict(model.initial_inner_parameters())
        for _ in range(inner_steps):
            support_loss = loss_fn(support_model(batch.x_support[t], inner),
                                   batch.y_support[t])
            support_loss = support_loss + _pull(model, inner)
            grads = torch.autograd.grad(support_loss, tuple(inner.values()),
                                        create_graph=not first_order)
            inner = {name: p - model.inner_lrs[j] * g
                     for j, ((name, p), g) in enumerate(zip(inner.items(), grads))}
        mask = None if batch.query_mask is None else batch.query_mask[t]
        losses.append(loss_fn(model(batch.x_query[t], inner), batch.y_query[t], mask))
    return torch.stack(losses)


def _pull(model, inner):
    """``sum_l exp(log_pull_l) * sum((R_l - R0_l)^2)`` for one task (0 without pulls)."""
    total = 0.0
    for i, layer in enumerate(model.network.layers):
        if getattr(layer, "log_pull", None) is not None:
            total = total + torch.exp(layer.log_pull) * torch.sum(
                (inner[f"{i}.residual"] - layer.residual) ** 2)
    return total
