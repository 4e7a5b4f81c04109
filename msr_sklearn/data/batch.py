"""A meta-batch of tasks as tensors: the one data type the engine consumes."""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["TaskBatch"]

class TaskBatch(NamedTuple):
    """A meta-batch of ``T`` tasks with equal support and (padded) query sizes.

    A :class:`~typing.NamedTuple` of tensors, each with a leading task dimension.
    Targets are float ``(T, n, n_outputs)`` for regression or int64 class indices
    ``(T, n)`` for classification. :meth:`msr_sklearn.data.tasks.TaskSet.split` builds one
    from validated tasks.

    Parameters
    ----------
    x_support : Tensor of shape (T, n_support, n_features)
        Inputs the inner loop adapts on.
    y_support : Tensor of shape (T, n_support, n_outputs) or (T, n_support)
        Their targets.
    x_query : Tensor of shape (T, n_query, n_features)
        Inputs the adapted networks are scored on (the outer loss).
    y_query : Tensor of shape (T, n_query, n_outputs) or (T, n_query)
        Their targets.
    query_mask : bool Tensor of shape (T, n_query) or None, default=None
        Which query rows are real when tasks of different sizes were padded to
        ``n_query``; padded rows do not enter any loss. ``None``: every row is real.

    See Also
    --------
    msr_sklearn.data.tasks.TaskSet.split : Draw a TaskBatch from a TaskSet.

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.data.batch import TaskBatch
    >>> _ = torch.manual_seed(0)
    >>> x, y = torch.randn(4, 10, 5), torch.randn(4, 10, 2)
    >>> batch = TaskBatch(x[:, :3], y[:, :3], x[:, 3:], y[:, 3:])
    >>> batch.n_tasks, batch.x_query.shape
    (4, torch.Size([4, 7, 5]))
    >>> batch.select(slice(0, 2)).y_support.shape
    torch.Size([2, 3, 2])
    """

    x_support: torch.Tensor
    y_support: torch.Tensor
    x_query: torch.Tensor
    y_query: torch.Tensor
    query_mask: torch.Tensor | None = None

    @property
    def n_tasks(self):
        """The number of tasks ``T``."""
        return self.x_support.shape[0]

    def to(self, device):
        """A copy with every tensor moved to ``device``."""
        return TaskBatch(*(t if t is None else t.to(device) for t in self))

    def select(self, index):
        """The tasks at ``index`` (a slice, an index array or a boolean mask)."""
        return TaskBatch(*(t if t is None else t[index] for t in self))
