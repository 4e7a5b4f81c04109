"""A slow, per-task loop implementation of the inner/outer loop.

It exists only to check the vectorized engine (:mod:`msr_sklearn.meta`) against, in
the tests and in ``benchmarks/speed.py``: each task runs on its own, unbatched, with
its own ``autograd.grad`` calls, as the official implementation does.
"""

import torch

from .meta import LOSSES, MetaModel, TaskBatch


def reference_task_losses(model: MetaModel, batch: TaskBatch, *, loss="mse", inner_steps=1,
                          first_order=False):
    """Per-task query losses ``(T,)``, one Python iteration per task."""
    loss_fn = LOSSES[loss]
    losses = []
    for t in range(batch.n_tasks):
        inner = dict(model.initial_inner_parameters())
        for _ in range(inner_steps):
            support_loss = loss_fn(model(batch.x_support[t], inner), batch.y_support[t])
            grads = torch.autograd.grad(support_loss, tuple(inner.values()),
                                        create_graph=not first_order)
            inner = {name: p - model.inner_lrs[j] * g
                     for j, ((name, p), g) in enumerate(zip(inner.items(), grads))}
        mask = None if batch.query_mask is None else batch.query_mask[t]
        losses.append(loss_fn(model(batch.x_query[t], inner), batch.y_query[t], mask))
    return torch.stack(losses)
