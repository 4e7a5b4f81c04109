"""Task streams: draw fresh tasks on demand instead of materializing them all.

MSR's view of data is a task distribution p(T). A :class:`TaskStream` samples from it:
meta-training draws a fresh meta-batch at every step and holds only that batch, so
memory stays flat however many distinct tasks a run sees.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator

import numpy as np


class TaskStream:
    """An endless, reproducible source of tasks for :meth:`MetaSymmetryLearner.fit`.

    Parameters
    ----------
    sampler : callable ``(n_tasks, random_state) -> tasks``
        Draws ``n_tasks`` tasks with a :class:`numpy.random.Generator`, returned in any
        form the learner accepts (a list of ``(X_i, y_i)`` or 3-D arrays ``(X, y)``).

    Examples
    --------
    >>> from msr_sklearn.datasets import make_translation_tasks
    >>> from msr_sklearn.data.streams import TaskStream
    >>> stream = TaskStream(lambda n, rng: make_translation_tasks(
    ...     n_tasks=n, n_features=12, random_state=rng.integers(2**31)))
    >>> X, y = stream.draw(4, random_state=0)
    >>> X.shape
    (4, 20, 12)
    """

    def __init__(self, sampler: Callable):
        if not callable(sampler):
            raise TypeError(f"sampler must be callable; got {type(sampler).__name__}")
        self.sampler = sampler

    def draw(self, n_tasks, random_state=None):
        """``n_tasks`` fresh tasks; ``random_state`` seeds a numpy Generator."""
        return self.sampler(int(n_tasks), np.random.default_rng(random_state))

    def check_drawn(self, n_drawn, n_tasks):
        """A ``ValueError`` unless the sampler returned the ``n_tasks`` tasks asked for.

        Too few would train on smaller meta-batches than ``meta_batch_size`` says, too
        many would cost their memory and time: both are a sampler's bug.
        """
        if n_drawn != n_tasks:
            raise ValueError(f"the task stream {self!r} returned {n_drawn} tasks when asked "
                             f"for {n_tasks}: a sampler (n_tasks, random_state) -> tasks must "
                             "return exactly n_tasks tasks (meta_batch_size of them per "
                             "meta-step)")

    @classmethod
    def from_iterable(cls, tasks: Iterable):
        """A stream over an iterable that yields one ``(X, y)`` task at a time.

        The iterable is consumed in order, ``n_tasks`` per draw; drawing past its end
        raises ``ValueError``. Reproducibility is the iterable's own.
        """
        iterator = iter(tasks)

        def sampler(n_tasks, random_state):
            batch = list(itertools.islice(iterator, n_tasks))
            if len(batch) < n_tasks:
                raise ValueError(f"the task iterable ran out: asked for {n_tasks} tasks, got "
                                 f"{len(batch)}; give more tasks or fewer n_meta_steps")
            return batch

        return cls(sampler)

    def __repr__(self):
        return f"TaskStream({getattr(self.sampler, '__name__', type(self.sampler).__name__)})"


def as_task_stream(tasks):
    """``tasks`` as a :class:`TaskStream` if it is a source rather than a collection.

    A ``TaskStream`` is returned as is; a callable becomes ``TaskStream(tasks)``; an
    iterator or generator (which has no length) becomes
    ``TaskStream.from_iterable(tasks)``. Lists, tuples and arrays are collections:
    ``None``.

    Parameters
    ----------
    tasks : TaskStream, callable, iterator or collection
        What :meth:`~msr_sklearn.MetaSymmetryLearner.fit` was given as ``X``: a stream; a sampler
        ``(n_tasks, random_state) -> tasks``; an iterator yielding one ``(X, y)`` task
        at a time; or a collection of tasks (a list of ``(X_i, y_i)``, 3-D arrays).

    Returns
    -------
    stream : TaskStream or None
        ``None`` when ``tasks`` is a collection, to be used as it is.

    Examples
    --------
    >>> import numpy as np
    >>> from msr_sklearn.data.streams import TaskStream, as_task_stream
    >>> tasks = [(np.zeros((5, 3)), np.zeros(5)) for _ in range(4)]
    >>> as_task_stream(tasks) is None                # a collection
    True
    >>> stream = as_task_stream(iter(tasks))         # an iterator: drawn in order
    >>> isinstance(stream, TaskStream), len(stream.draw(3))
    (True, 3)
    >>> sampler = lambda n, rng: tasks[:n]           # a callable: wrapped as it is
    >>> as_task_stream(sampler).sampler is sampler
    True
    """
    if isinstance(tasks, TaskStream):
        return tasks
    if callable(tasks) and not hasattr(tasks, "__len__"):
        return TaskStream(tasks)
    if isinstance(tasks, Iterator):
        return TaskStream.from_iterable(tasks)
    return None
