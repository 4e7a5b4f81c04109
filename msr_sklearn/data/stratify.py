"""Stratified support/query splits: every class of a classification task in its support.

``n_support`` is divided over a task's ``C`` classes as evenly as possible: each class
gets ``n_support // C`` support rows, and the ``n_support % C`` extra rows go to random
classes that have a row to spare. Within a class the support rows are drawn at random.
:meth:`TaskSet.split(..., stratify=True) <msr_sklearn.data.tasks.TaskSet.split>` uses
this for N-way K-shot episodes (``n_support = N * K``), where a random split of the
task's rows would often leave a class out of the support.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["stratified_order", "stratified_split_problem"]


def class_counts(tasks):
    """Per task of a classification ``TaskSet``: its labels and the rows of each.

    Computed once on the CPU and kept on the task set.
    """
    if "_class_counts" not in tasks.__dict__:
        y, sizes = tasks.y.cpu().numpy(), tasks.sizes.cpu().numpy()
        tasks._class_counts = [
            (tasks.classes[t], np.bincount(y[t, :sizes[t]], minlength=len(tasks.classes[t])))
            for t in range(tasks.n_tasks)]
    return tasks._class_counts


def stratified_split_problem(tasks, n_support):
    """Why ``tasks`` cannot get stratified supports of ``n_support`` rows, or ``None``.

    Every task needs ``n_support >= C`` (its classes), every class ``n_support // C``
    rows, and ``n_support % C`` classes with more.

    Parameters
    ----------
    tasks : TaskSet
        The tasks.
    n_support : int
        Support rows per task.

    Returns
    -------
    str or None
        A sentence that names the first task in the way and what to change.

    Examples
    --------
    >>> import numpy as np
    >>> from msr_sklearn.data.tasks import check_tasks
    >>> from msr_sklearn.data.stratify import stratified_split_problem
    >>> tasks = check_tasks([(np.zeros((6, 2)), ["a", "a", "b", "b", "c", "c"])])
    >>> stratified_split_problem(tasks, 3) is None
    True
    >>> stratified_split_problem(tasks, 2)[:43]
    'task 0 has 3 classes but n_support=2: a str'
    """
    if tasks.objective != "classification":
        return ("support_split='stratified' splits classification tasks by class; these are "
                "regression tasks (use support_split='random' or 'first')")
    for t, (labels, counts) in enumerate(class_counts(tasks)):
        n_classes = len(labels)
        base, extra = divmod(n_support, n_classes)
        if base == 0:
            return (f"task {t} has {n_classes} classes but n_support={n_support}: a "
                    "stratified support holds every class, so n_support must be at least "
                    f"{n_classes} (n_way * n_shot for N-way K-shot tasks)")
        short = np.flatnonzero(counts < base)
        if len(short) or (counts > base).sum() < extra:
            c = int(short[0]) if len(short) else int(np.argmin(counts))
            return (f"task {t}'s class {labels[c].item()!r} has {int(counts[c])} row(s), "
                    f"but a stratified support of n_support={n_support} over {n_classes} "
                    f"classes takes {base if len(short) else base + 1} row(s) of it: give "
                    "every class enough rows, lower n_support, or use "
                    "support_split='random'")
    return None


def stratified_order(tasks, index, n_support, generator, valid):
    """Each task's row order: a stratified support first, then the query, padding last.

    One vectorized draw for all tasks: random keys rank the rows within each class and
    the classes that get the extra rows; a row is a support row when its rank in its
    class is below that class's share of ``n_support``.

    Parameters
    ----------
    tasks : TaskSet
        Classification tasks (``y`` holds each task's class indices).
    index : int64 Tensor of shape (n,)
        The tasks to split, on the task set's device.
    n_support : int
        Support rows per task.
    generator : torch.Generator or None
        The CPU generator of the draw.
    valid : bool Tensor of shape (n, n_max) or None
        The real rows of ragged tasks; ``None``: every row is real.

    Returns
    -------
    order : int64 Tensor of shape (n, n_max)
        As :meth:`TaskSet.split <msr_sklearn.data.tasks.TaskSet.split>` returns it.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from msr_sklearn.data.tasks import check_tasks
    >>> from msr_sklearn.data.stratify import stratified_order
    >>> tasks = check_tasks([(np.zeros((6, 2)), [0, 0, 0, 1, 1, 1])])
    >>> order = stratified_order(tasks, torch.tensor([0]), 2, torch.Generator().manual_seed(0),
    ...                          None)
    >>> sorted(tasks.y[0, order[0, :2]].tolist())  # one row of each class
    [0, 1]
    """
    problems = tasks.__dict__.setdefault("_stratified_problems", {})
    if n_support not in problems:  # checked once per task set, on the CPU
        problems[n_support] = stratified_split_problem(tasks, n_support)
    if problems[n_support]:
        raise ValueError(problems[n_support])
    device, n_classes = tasks.X.device, tasks.n_outputs
    n_tasks, n_max = len(index), tasks.X.shape[1]
    row_keys = torch.rand(n_tasks, n_max, generator=generator).to(device)
    class_keys = torch.rand(n_tasks, n_classes, generator=generator).to(device)
    label = tasks.y[index]
    if valid is not None:
        label = label.masked_fill(~valid, n_classes)  # padding: a class of its own
    counts = torch.nn.functional.one_hot(label, n_classes + 1).sum(1)  # (n, C + 1)
    present = counts[:, :n_classes] > 0
    base = n_support // present.sum(1, keepdim=True)
    extra = n_support % present.sum(1, keepdim=True)
    # the extra rows go to present classes with a row to spare, in random order
    spare = counts[:, :n_classes] > base
    rank = (class_keys + 2.0 * ~spare + 4.0 * ~present).argsort(1).argsort(1)
    share = (base + (rank < extra)) * present
    share = torch.cat([share, torch.zeros_like(share[:, :1])], 1)  # padding: none
    # rows ordered by class, at random within a class (a stable sort of a shuffle)
    shuffled = row_keys.argsort(1)
    by_class = shuffled.gather(1, torch.sort(label.gather(1, shuffled), dim=1,
                                             stable=True).indices)
    first = counts.cumsum(1) - counts  # where each class starts in that order
    positions = torch.arange(n_max, device=device).expand(n_tasks, n_max)
    in_class = positions - first.gather(1, label.gather(1, by_class))
    rank_in_class = torch.empty_like(in_class).scatter_(1, by_class, in_class)
    support = rank_in_class < share.gather(1, label)
    keys = row_keys + 2.0 * ~support
    if valid is not None:
        keys = keys + 4.0 * ~valid
    return keys.argsort(1)
