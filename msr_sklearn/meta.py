"""The vectorized MSR inner/outer loop.

A meta-batch of ``T`` tasks is one batched computation: the inner parameters
(``v`` and biases) get a leading task dimension (``v0`` expanded to ``(T, k)``), the
network runs on ``x`` of shape ``(T, n, d)``, and one ``autograd.grad`` of the *sum*
of the per-task support losses gives every task's own gradient (task ``t``'s loss
depends only on task ``t``'s copy). No Python loop runs over tasks; the only loop
is over inner steps.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from .nn.network import MetaNetwork


class TaskBatch(NamedTuple):
    """A meta-batch of tasks with equal support and (padded) query sizes.

    ``x_*`` have shape ``(T, n, n_features)``; ``y_*`` ``(T, n, n_outputs)`` (float,
    regression) or ``(T, n)`` (int64 class indices). ``query_mask`` ``(T, n_query)``
    marks the real query rows when tasks of different sizes were padded (``None``:
    all rows are real).
    """

    x_support: torch.Tensor
    y_support: torch.Tensor
    x_query: torch.Tensor
    y_query: torch.Tensor
    query_mask: torch.Tensor | None = None

    @property
    def n_tasks(self):
        return self.x_support.shape[0]

    def to(self, device):
        return TaskBatch(*(t if t is None else t.to(device) for t in self))

    def select(self, index):
        """The tasks at ``index`` (a slice, an index array or a boolean mask)."""
        return TaskBatch(*(t if t is None else t[index] for t in self))


def _mean_over_samples(per_sample, mask):
    if mask is None:
        return per_sample.mean(-1)
    mask = mask.to(per_sample.dtype)
    return (per_sample * mask).sum(-1) / mask.sum(-1)


def mse_loss(pred, target, mask=None):
    """Per-task mean squared error, the mean over all output elements (as in the paper)."""
    return _mean_over_samples(((pred - target) ** 2).mean(-1), mask)


def cross_entropy_loss(logits, target, mask=None):
    """Per-task mean cross-entropy; ``target`` holds class indices."""
    per_sample = F.cross_entropy(logits.flatten(0, -2), target.flatten(), reduction="none")
    return _mean_over_samples(per_sample.reshape(target.shape), mask)


LOSSES = {"mse": mse_loss, "cross_entropy": cross_entropy_loss}


class MetaModel(nn.Module):
    """A :class:`MetaNetwork` plus its meta-learned inner learning rates.

    Everything here is meta-learned by the outer loop: the sharings ``U``, the
    initial inner parameters (``v0``, biases) and one inner learning rate per inner
    parameter tensor (the official code's ``per_layer`` mode).

    Parameters
    ----------
    network : MetaNetwork
    inner_lr : float
        Initial value of every inner learning rate.
    learn_inner_lr : bool
        Whether the outer loop updates the inner learning rates.
    """

    def __init__(self, network: MetaNetwork, inner_lr: float = 0.1, learn_inner_lr: bool = True):
        super().__init__()
        self.network = network
        self.inner_names = tuple(network.initial_inner_parameters())
        self.inner_lrs = nn.Parameter(
            torch.full((len(self.inner_names),), float(inner_lr)), requires_grad=learn_inner_lr
        )

    def initial_inner_parameters(self):
        return self.network.initial_inner_parameters()

    def forward(self, x, inner=None):
        return self.network(x, inner)


def adapt(model: MetaModel, x_support, y_support, *, loss="mse", inner_steps=1,
          first_order=False, track_meta_gradients=True):
    """Run ``inner_steps`` SGD steps on every task's inner parameters at once.

    Returns a dict of per-task inner parameters (leading dimension ``T``). With
    ``track_meta_gradients`` the result is a differentiable function of the
    meta-parameters (second order unless ``first_order``); without it, no graph to
    the meta-parameters is kept (evaluation).
    """
    loss_fn = LOSSES[loss]
    n_tasks = x_support.shape[0]
    inner = {}
    for name, p in model.initial_inner_parameters().items():
        p = p if track_meta_gradients else p.detach()
        # contiguous copies: GEMMs on a stride-0 expanded tensor take slow paths
        p = p.expand(n_tasks, *p.shape).contiguous()
        inner[name] = p if p.requires_grad else p.requires_grad_()
    lrs = model.inner_lrs if track_meta_gradients else model.inner_lrs.detach()
    create_graph = track_meta_gradients and not first_order
    with torch.enable_grad():
        for _ in range(inner_steps):
            support_loss = loss_fn(model(x_support, inner), y_support).sum()
            grads = torch.autograd.grad(support_loss, tuple(inner.values()),
                                        create_graph=create_graph)
            inner = {name: p - lrs[j] * g
                     for j, ((name, p), g) in enumerate(zip(inner.items(), grads))}
            if not track_meta_gradients:
                inner = {n: p.detach().requires_grad_() for n, p in inner.items()}
    return inner


def task_losses(model: MetaModel, batch: TaskBatch, *, loss="mse", inner_steps=1,
                first_order=False):
    """Every task's query loss after adaptation, shape ``(T,)``, differentiable w.r.t.
    all meta-parameters."""
    inner = adapt(model, batch.x_support, batch.y_support, loss=loss,
                  inner_steps=inner_steps, first_order=first_order)
    return LOSSES[loss](model(batch.x_query, inner), batch.y_query, batch.query_mask)


def make_meta_optimizer(model: MetaModel, meta_lr=1e-3):
    """Adam over every meta-parameter that is learned (U, v0, biases, inner lrs)."""
    params = [p for p in model.parameters() if p.requires_grad]
    device = params[0].device if params else torch.device("cpu")
    # the fused kernel cuts the step's dispatch overhead, which dominates for small U
    fused = device.type in ("cpu", "cuda")
    return torch.optim.Adam(params, lr=meta_lr, fused=fused)


def meta_step(model: MetaModel, optimizer, batch: TaskBatch, *, loss="mse", inner_steps=1,
              first_order=False, n_total_tasks=None, process_group=None):
    """One outer step on the mean query loss over the meta-batch; returns that loss.

    The mean (not the official code's sum) keeps the meta-gradient's scale
    independent of ``meta_batch_size``; Adam is invariant to a constant gradient
    scale, so this changes nothing but the ``eps`` regime.

    Data parallel (``torch.distributed``): every process passes its own shard of the
    meta-batch, ``n_total_tasks`` the size of the whole meta-batch, and the
    ``process_group``; the loss and the meta-gradients are summed across processes in
    one all-reduce, so every process takes the identical step on the mean over the
    whole meta-batch and the replicas stay in sync.

    If the loss or any meta-gradient is non-finite the step is skipped, so the
    parameters and the optimizer state stay at their last finite values, and the
    returned loss is NaN (or the non-finite loss).
    """
    optimizer.zero_grad(set_to_none=True)
    losses = task_losses(model, batch, loss=loss, inner_steps=inner_steps,
                         first_order=first_order)
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
    meta-parameters is kept. Returns a tensor ``(T, n_query, n_outputs)``.
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
    """Per-task query losses after adaptation (no meta-gradients), shape ``(T,)``."""
    out = adapted_outputs(model, batch, loss=loss, inner_steps=inner_steps,
                          chunk_size=chunk_size)
    return LOSSES[loss](out, batch.y_query, batch.query_mask)
