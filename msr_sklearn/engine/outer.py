"""The outer loop: query losses after adaptation, the meta-step, and evaluation in chunks.

The *inner* tensors are per-task copies, changed by :func:`~msr_sklearn.engine.adapt`;
the *outer* (meta-)parameters are those of the :class:`~msr_sklearn.engine.MetaModel`,
shared by all tasks and changed by :func:`meta_step`.
"""

from __future__ import annotations

import torch

from .inner import InnerLoop, adapt

__all__ = ["adapted_outputs", "evaluate_task_losses", "meta_step", "meta_step_chunk_size",
           "task_graph_bytes", "task_losses"]

#: saved activations per chunk of tasks ``chunk_size="auto"`` aims at (bytes): small
#: enough that a chunk's graph stays near the CPU caches and memory stays bounded, large
#: enough that small networks run their whole meta-batch at once
CHUNK_BYTES = 64 * 2 ** 20


def task_losses(model, batch, loop=InnerLoop()):
    """Every task's query loss after adaptation, differentiable in the meta-parameters.

    :func:`~msr_sklearn.engine.adapt` on the support set, then the loss of the adapted
    network on the query set, with padded query rows masked out (``batch.query_mask``).

    Parameters
    ----------
    model : MetaModel
        The meta-parameters.
    batch : TaskBatch
        The meta-batch of ``T`` tasks.
    loop : InnerLoop, default=InnerLoop()
        The inner loop's settings (its loss is also the query loss).

    Returns
    -------
    Tensor of shape (T,)
        The query losses, with a graph to every meta-parameter.

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.data.batch import TaskBatch
    >>> from msr_sklearn.engine import MetaModel, task_losses
    >>> from msr_sklearn.models import MLP
    >>> torch.manual_seed(0) and None
    >>> model = MetaModel(MLP(5, 2))
    >>> x, y = torch.randn(4, 10, 5), torch.randn(4, 10, 2)
    >>> losses = task_losses(model, TaskBatch(x[:, :3], y[:, :3], x[:, 3:], y[:, 3:]))
    >>> losses.shape, losses.requires_grad
    (torch.Size([4]), True)
    """
    inner = adapt(model, batch.x_support, batch.y_support, loop)
    return loop.loss_fn(model(batch.x_query, inner), batch.y_query, batch.query_mask)


def meta_step(model, optimizer, batch, loop=InnerLoop(), *, n_total_tasks=None,
              process_group=None, chunk_size=None, max_loss=float("inf"), snapshot=None):
    """One outer step on the mean query loss over the meta-batch; returns that loss.

    Computes :func:`task_losses`, backpropagates their mean into the meta-parameters
    and takes one ``optimizer`` step. The mean (not the official code's sum) keeps
    the meta-gradient's scale independent of ``meta_batch_size``; Adam is invariant
    to a constant gradient scale, so this changes nothing but the ``eps`` regime.

    Data parallel (``torch.distributed``): every process passes its own shard of the
    meta-batch, ``n_total_tasks`` the size of the whole meta-batch, and the
    ``process_group``; the loss and the meta-gradients are summed across processes in
    one all-reduce, so every process takes the identical step and the replicas stay in
    sync.

    If the loss is non-finite or above ``max_loss``, or any meta-gradient is
    non-finite, the step is rejected: no update is applied, and with a ``snapshot``
    the parameters and the optimizer state go back to it (the state before the last
    update this snapshot guarded, whose loss was finite: the update that led here is
    undone). The returned loss is then NaN for a non-finite gradient, else the loss.

    Parameters
    ----------
    model : MetaModel
        The meta-parameters, updated in place.
    optimizer : MetaAdam or torch.optim.Optimizer
        Over the model's learned parameters (:func:`make_meta_optimizer`).
    batch : TaskBatch
        This process's meta-batch (or shard of it).
    loop : InnerLoop, default=InnerLoop()
        The inner loop's settings.
    n_total_tasks : int or None, default=None
        Size of the whole meta-batch across processes; ``None``: ``batch.n_tasks``.
    process_group : ProcessGroup or None, default=None
        The ``torch.distributed`` group to all-reduce over; ``None``: one process.
    chunk_size : int or None, default=None
        Tasks whose graph is built and backpropagated at once: the meta-gradient is
        accumulated over chunks, so the memory of the graph is that of one chunk (the
        same gradient up to the order of float sums). ``None``: the whole meta-batch.
        :func:`meta_step_chunk_size` picks one from the size of a task's graph.
    max_loss : float, default=inf
        A larger loss is treated as diverged (the training loop's
        :class:`~msr_sklearn.training.callbacks.DivergenceStop` sets it).
    snapshot : StateSnapshot or None, default=None
        Taken right before an update is applied, restored when a step is rejected
        (:class:`~msr_sklearn.engine.snapshot.StateSnapshot`).

    Returns
    -------
    Tensor of shape ()
        The mean query loss over the whole meta-batch, detached.

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.data.batch import TaskBatch
    >>> from msr_sklearn.engine import MetaModel, make_meta_optimizer, meta_step
    >>> from msr_sklearn.models import MLP
    >>> torch.manual_seed(0) and None
    >>> model = MetaModel(MLP(5, 2))
    >>> optimizer = make_meta_optimizer(model, meta_lr=1e-2)
    >>> x, y = torch.randn(4, 10, 5), torch.randn(4, 10, 2)
    >>> before = model.inner_lrs.detach().clone()
    >>> meta_loss = meta_step(model, optimizer, TaskBatch(x[:, :3], y[:, :3], x[:, 3:],
    ...                                                   y[:, 3:]))
    >>> meta_loss.shape, bool(torch.isfinite(meta_loss))
    (torch.Size([]), True)
    >>> bool((model.inner_lrs != before).all())  # the inner lrs are meta-learned too
    True
    """
    optimizer.zero_grad(set_to_none=True)
    n_total = n_total_tasks or batch.n_tasks
    chunk_size = batch.n_tasks if chunk_size is None else max(1, int(chunk_size))
    meta_loss = 0.0
    for start in range(0, batch.n_tasks, chunk_size):
        chunk = batch if chunk_size >= batch.n_tasks else \
            batch.select(slice(start, start + chunk_size))
        chunk_loss = task_losses(model, chunk, loop).sum() / n_total
        chunk_loss.backward()  # frees this chunk's graph before the next is built
        meta_loss = meta_loss + chunk_loss.detach()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for p in params:
        if p.grad is None:  # every process must contribute the same tensors
            p.grad = torch.zeros_like(p)
    if process_group is not None:
        flat = torch.cat([meta_loss.reshape(1), *(p.grad.reshape(-1) for p in params)])
        torch.distributed.all_reduce(flat, group=process_group)
        meta_loss = flat[0]
        offset = 1
        for p in params:
            p.grad.copy_(flat[offset:offset + p.numel()].view_as(p))
            offset += p.numel()
    grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    accepted = torch.isfinite(meta_loss) & torch.isfinite(grad_norm) & (meta_loss <= max_loss)
    if not bool(accepted):
        optimizer.zero_grad(set_to_none=True)
        if snapshot is not None:
            snapshot.restore()
        return torch.where(torch.isfinite(meta_loss) & ~torch.isfinite(grad_norm), torch.nan,
                           meta_loss)
    if snapshot is not None:
        snapshot.take()
    optimizer.step()
    return meta_loss


def task_graph_bytes(model, batch, loop=InnerLoop()):
    """Bytes of the tensors autograd saves for one task of ``batch``'s meta-step.

    A forward pass of the inner loop and the query loss on the first task, counting
    each saved storage once; no backward. It does not draw from the random generators
    (a dropout's mask), so calling it leaves a seeded fit unchanged.

    Parameters
    ----------
    model : MetaModel
    batch : TaskBatch
    loop : InnerLoop, default=InnerLoop()

    Returns
    -------
    int

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.data.batch import TaskBatch
    >>> from msr_sklearn.engine import MetaModel, task_graph_bytes
    >>> from msr_sklearn.models import MLP
    >>> model = MetaModel(MLP(5, 2, hidden_layer_sizes=(64,)))
    >>> x, y = torch.randn(8, 10, 5), torch.randn(8, 10, 2)
    >>> small = task_graph_bytes(model, TaskBatch(x[:, :3], y[:, :3], x[:, 3:], y[:, 3:]))
    >>> x, y = torch.randn(8, 100, 5), torch.randn(8, 100, 2)
    >>> large = task_graph_bytes(model, TaskBatch(x[:, :3], y[:, :3], x[:, 3:], y[:, 3:]))
    >>> large > 5 * small          # the activations of 97 query rows instead of 7
    True
    """
    saved = {}

    def pack(tensor):  # count each storage once: views of one tensor share it
        storage = tensor.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    device = batch.x_query.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
            torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        task_losses(model, batch.select(slice(0, 1)), loop)
    return sum(saved.values())


def meta_step_chunk_size(model, batch, loop=InnerLoop(), *, max_bytes=CHUNK_BYTES):
    """Tasks per chunk of a meta-step whose graph holds about ``max_bytes`` of tensors.

    :func:`task_graph_bytes` of one task, divided into ``max_bytes``. Small networks
    get the whole meta-batch, where ``vmap`` over the tasks pays (a user CNN on 8×8
    images: 2.5× the per-task loop on one CPU thread); a Conv-4 on 28×28 images gets
    one task per chunk, which runs without ``vmap`` (on a CPU its grouped convolutions
    took 1.7× the loop's time) and bounds the memory of a meta-step.

    Parameters
    ----------
    model : MetaModel
    batch : TaskBatch
    loop : InnerLoop, default=InnerLoop()
    max_bytes : int, default=64 MiB

    Returns
    -------
    int
        Between 1 and ``batch.n_tasks``.

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.data.batch import TaskBatch
    >>> from msr_sklearn.engine import MetaModel, meta_step_chunk_size
    >>> from msr_sklearn.models import MLP
    >>> model = MetaModel(MLP(5, 2))
    >>> x, y = torch.randn(32, 10, 5), torch.randn(32, 10, 2)
    >>> batch = TaskBatch(x[:, :3], y[:, :3], x[:, 3:], y[:, 3:])
    >>> meta_step_chunk_size(model, batch)                    # tiny: all 32 at once
    32
    >>> meta_step_chunk_size(model, batch, max_bytes=20_000)  # a 20 kB budget
    3
    """
    per_task = max(1, task_graph_bytes(model, batch, loop))
    return int(min(batch.n_tasks, max(1, max_bytes // per_task)))


def adapted_outputs(model, batch, loop=InnerLoop(), *, chunk_size=512):
    """Query outputs after adaptation, for many tasks in bounded memory.

    Tasks are processed ``chunk_size`` at a time, no graph to the meta-parameters is
    kept, and the model runs in eval mode (no dropout; adaptation is deterministic, as
    in the per-task estimators).

    Parameters
    ----------
    model : MetaModel
        The meta-parameters.
    batch : TaskBatch
        The tasks; ``query_mask`` is not used (padded rows get outputs too).
    loop : InnerLoop, default=InnerLoop()
        The inner loop's settings.
    chunk_size : int, default=512
        Tasks adapted at once.

    Returns
    -------
    Tensor of shape (T, n_query, ...)
        Predictions for ``"mse"``, logits for ``"cross_entropy"``.

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.data.batch import TaskBatch
    >>> from msr_sklearn.engine import MetaModel, adapted_outputs
    >>> from msr_sklearn.models import MLP
    >>> torch.manual_seed(0) and None
    >>> model = MetaModel(MLP(5, 2))
    >>> x, y = torch.randn(4, 10, 5), torch.randn(4, 10, 2)
    >>> batch = TaskBatch(x[:, :3], y[:, :3], x[:, 3:], y[:, 3:])
    >>> adapted_outputs(model, batch, chunk_size=3).shape  # chunks of 3 and 1 tasks
    torch.Size([4, 7, 2])
    """
    outputs, training = [], model.training
    model.eval()
    try:
        for start in range(0, batch.n_tasks, chunk_size):
            chunk = batch.select(slice(start, start + chunk_size))
            inner = adapt(model, chunk.x_support, chunk.y_support, loop,
                          track_meta_gradients=False)
            with torch.no_grad():
                outputs.append(model(chunk.x_query, inner))
    finally:
        model.train(training)
    return torch.cat(outputs)


def evaluate_task_losses(model, batch, loop=InnerLoop(), *, chunk_size=512):
    """Per-task query losses after adaptation (no meta-gradients), in chunks.

    The losses of :func:`adapted_outputs`, with padded query rows masked out; the
    values of :func:`task_losses` in bounded memory, for evaluation.

    Parameters
    ----------
    model : MetaModel
    batch : TaskBatch
    loop : InnerLoop, default=InnerLoop()
    chunk_size : int, default=512
        Tasks adapted at once.

    Returns
    -------
    Tensor of shape (T,)

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.data.batch import TaskBatch
    >>> from msr_sklearn.engine import MetaModel, evaluate_task_losses, task_losses
    >>> from msr_sklearn.models import MLP
    >>> torch.manual_seed(0) and None
    >>> model = MetaModel(MLP(5, 2))
    >>> x, y = torch.randn(4, 10, 5), torch.randn(4, 10, 2)
    >>> batch = TaskBatch(x[:, :3], y[:, :3], x[:, 3:], y[:, 3:])
    >>> losses = evaluate_task_losses(model, batch, chunk_size=3)
    >>> losses.shape, losses.requires_grad
    (torch.Size([4]), False)
    >>> torch.allclose(losses, task_losses(model, batch))
    True
    """
    out = adapted_outputs(model, batch, loop, chunk_size=chunk_size)
    return loop.loss_fn(out, batch.y_query, batch.query_mask)
