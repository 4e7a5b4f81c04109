"""Task containers: validate task datasets once, then split and batch them on a device.

Tasks arrive as a list of ``(X_i, y_i)``; as 3-D arrays ``X (n_tasks, n, d)`` with
``y (n_tasks, n)`` or ``(n_tasks, n, n_outputs)``; or in long format ``X (N, d)``,
``y (N,)`` with ``groups`` (one task id per row), numpy or pandas. Tasks may differ in
size: they are stored padded to the largest task, every task keeps its real row
count, and a meta-batch draws ``n_support`` support rows per task with the rest as
a (masked) query. So tasks of different sizes share a meta-batch and every real row
is used; padding rows never enter a loss.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import stats
from sklearn.utils.multiclass import type_of_target

from ._checks import check_padded_size
from ._forms import (LONG_FORMAT_NEEDS_GROUPS, SUBSAMPLED_ROWS, _as_task_list, _check_finite,
                     _is_3d, _numeric_array, _pad, _regression_target, _stacked_as_is)
from .batch import TaskBatch
from .stratify import stratified_order, stratified_split_problem

__all__ = ["LONG_FORMAT_NEEDS_GROUPS", "SUBSAMPLED_ROWS", "MetaBatches", "TaskSet",
           "check_tasks", "mean_confidence_interval", "resolve_objective"]


@dataclass
class TaskSet:
    """Validated tasks, padded into tensors.

    Usually built by :func:`check_tasks`. Task ``t`` occupies rows ``:sizes[t]`` of
    ``X[t]`` and ``y[t]``; the rows after them are zero padding.

    Parameters
    ----------
    X : Tensor of shape (n_tasks, n_max) + feature_shape
        The inputs, ``n_max`` the size of the largest task; one sample is a flat row
        ``(n_features,)`` or an image ``(C, H, W)``.
    y : Tensor of shape (n_tasks, n_max, n_outputs) or (n_tasks, n_max)
        Float targets (regression) or int64 class indices (classification).
    sizes : int64 Tensor of shape (n_tasks,)
        The real rows per task.
    objective : {"regression", "classification"}
        The kind of targets.
    n_outputs : int
        Network outputs: regression outputs, or classes (ways).
    feature_names : ndarray of str or None, default=None
        The column names of pandas input, if all are strings.
    classes : list of ndarray or None, default=None
        Classification: per task, the sorted original labels (index ``j`` encodes
        ``classes[t][j]``).

    Attributes
    ----------
    n_tasks : int
        The number of tasks.
    n_features : int
        The number of values of one sample.
    feature_shape : tuple of int
        One sample's shape.
    ragged : bool
        Whether tasks differ in size (then queries are padded and masked).

    Examples
    --------
    >>> import numpy as np
    >>> from msr_sklearn.data.tasks import check_tasks
    >>> rng = np.random.default_rng(0)
    >>> tasks = [(rng.normal(size=(n, 3)), rng.normal(size=n)) for n in (5, 6, 8)]
    >>> task_set = check_tasks(tasks, n_support=2)
    >>> task_set.X.shape, task_set.y.shape, task_set.sizes
    (torch.Size([3, 8, 3]), torch.Size([3, 8, 1]), tensor([5, 6, 8]))
    >>> task_set.objective, task_set.n_outputs, task_set.ragged
    ('regression', 1, True)
    >>> task_set.subset([2, 0]).sizes
    tensor([8, 5])
    """

    X: torch.Tensor
    y: torch.Tensor
    sizes: torch.Tensor
    objective: str
    n_outputs: int
    feature_names: np.ndarray | None = None
    classes: list | None = field(default=None, repr=False)
    _ragged: bool | None = field(default=None, repr=False)

    @property
    def n_tasks(self):
        """The number of tasks."""
        return self.X.shape[0]

    @property
    def n_features(self):
        """The number of values of one sample."""
        return math.prod(self.X.shape[2:])

    @property
    def feature_shape(self):
        """One sample's shape: ``(n_features,)`` for flat rows, ``(C, H, W)`` for images."""
        return tuple(self.X.shape[2:])

    def to(self, device):
        """Move ``X``, ``y`` and ``sizes`` to ``device`` in place; returns ``self``."""
        self.X, self.y, self.sizes = self.X.to(device), self.y.to(device), self.sizes.to(device)
        return self

    def subset(self, index):
        """A new :class:`TaskSet` of the tasks at ``index`` (integer indices)."""
        index = torch.as_tensor(index, dtype=torch.long)
        classes = None if self.classes is None else [self.classes[i] for i in index.tolist()]
        idx = index.to(self.X.device)
        return TaskSet(self.X[idx], self.y[idx], self.sizes[idx], self.objective,
                       self.n_outputs, self.feature_names, classes)

    def hold_out(self, fraction, generator=None):
        """A random split into ``(rest, held_out, held-out indices)``, e.g. for validation.

        ``round(fraction * n_tasks)`` tasks are held out, at least one on each side.
        """
        n_held = int(round(fraction * self.n_tasks))
        if n_held < 1 or n_held >= self.n_tasks:
            raise ValueError(f"validation_fraction={fraction} holds out {n_held} of "
                             f"{self.n_tasks} tasks; need at least one task on each side")
        perm = torch.randperm(self.n_tasks, generator=generator)
        return self.subset(perm[n_held:]), self.subset(perm[:n_held]), perm[:n_held].tolist()

    @property
    def ragged(self):
        """Whether tasks differ in size (then queries are padded and masked)."""
        if self._ragged is None:
            self._ragged = bool((self.sizes != self.X.shape[1]).any())
        return self._ragged

    def fingerprint(self):
        """A hash of the tasks' contents: equal tasks give equal strings.

        SHA-256 over the objective, the outputs, and the shapes, dtypes and bytes of
        the padded ``X``, ``y`` and ``sizes``.
        """
        digest = hashlib.sha256(f"{self.objective}:{self.n_outputs}".encode())
        for tensor in (self.X, self.y, self.sizes):
            array = np.ascontiguousarray(tensor.detach().cpu().numpy())
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(array)
        return digest.hexdigest()

    def stratified_split_problem(self, n_support):
        """Why a stratified split of ``n_support`` rows is impossible here, or ``None``.

        See :func:`msr_sklearn.data.stratify.stratified_split_problem`.
        """
        return stratified_split_problem(self, n_support)

    def split(self, n_support, generator=None, index=None, shuffle=True, return_order=False,
              stratify=False):
        """A :class:`~msr_sklearn.engine.TaskBatch` of tasks ``index`` (default all).

        Each task's first ``n_support`` (shuffled) rows are the support and the other
        ``n_max - n_support`` rows the query. For ragged tasks the padding rows sort
        last and ``query_mask`` marks the real query rows; otherwise it is ``None``.
        With ``stratify``, every class of a task is in its support (see
        :meth:`stratified_split_problem`).

        Parameters
        ----------
        n_support : int
            Support rows per task.
        generator : torch.Generator or None, default=None
            A CPU generator for the shuffle; ``None``: torch's global one.
        index : int64 Tensor of shape (n,) or None, default=None
            The tasks to draw, on the task set's device; ``None``: all of them.
        shuffle : bool, default=True
            Draw each task's support rows at random; otherwise the first
            ``n_support`` rows are the support.
        return_order : bool, default=False
            Also return where each row of the batch came from.
        stratify : bool, default=False
            Classification: draw each class's support rows at random within the class,
            ``n_support`` divided over the task's classes as evenly as possible (the
            extra rows to random classes; :mod:`msr_sklearn.data.stratify`); a
            ``ValueError`` when a task cannot be split so. ``shuffle`` is then not used.

        Returns
        -------
        batch : TaskBatch
        order : int64 Tensor of shape (n, n_max), only with ``return_order=True``
            Row ``j`` of the batch's task ``i`` (support rows first, then query rows)
            is row ``order[i, j]`` of that task, e.g. to split per-row values the same
            way.

        Examples
        --------
        >>> import numpy as np
        >>> import torch
        >>> from msr_sklearn.data.tasks import check_tasks
        >>> rng = np.random.default_rng(0)
        >>> tasks = [(rng.normal(size=(n, 3)), rng.normal(size=n)) for n in (5, 8)]
        >>> batch = check_tasks(tasks).split(2, generator=torch.Generator().manual_seed(0))
        >>> batch.x_support.shape, batch.x_query.shape
        (torch.Size([2, 2, 3]), torch.Size([2, 6, 3]))
        >>> batch.query_mask.sum(dim=1)  # real query rows: 5 - 2 and 8 - 2
        tensor([3, 6])

        A stratified support holds every class (3 classes, 4 support rows: one class
        gets 2):

        >>> labels = np.repeat([0, 1, 2], 4)
        >>> tasks = check_tasks([(rng.normal(size=(12, 3)), labels)])
        >>> batch = tasks.split(4, torch.Generator().manual_seed(0), stratify=True)
        >>> torch.bincount(batch.y_support[0], minlength=3).sort().values
        tensor([1, 1, 2])
        """
        device = self.X.device
        n_max = self.X.shape[1]
        if index is None:
            index = torch.arange(self.n_tasks, device=device)
        positions = torch.arange(n_max, device=device)
        valid = positions < self.sizes[index, None] if self.ragged else None
        if stratify:
            order = stratified_order(self, index, n_support, generator, valid)
        elif shuffle:
            keys = torch.rand(len(index), n_max, generator=generator).to(device)
            if valid is not None:
                keys = keys.masked_fill(~valid, 2.0)  # padding rows sort last
            order = keys.argsort(dim=1)
        else:
            order = positions.expand(len(index), n_max)
        # one gather of whole rows: row r of task t is row t * n_max + r of the flat view
        rows = index[:, None] * n_max + order
        X = self.X.flatten(0, 1)[rows]
        y = self.y.flatten(0, 1)[rows]
        query_mask = None if valid is None else valid[:, n_support:]
        batch = TaskBatch(X[:, :n_support], y[:, :n_support], X[:, n_support:],
                          y[:, n_support:], query_mask)
        return (batch, order) if return_order else batch


class MetaBatches:
    """Meta-batches of tasks, drawn from a finite :class:`TaskSet` or from a task stream.

    An endless iterator of :class:`~msr_sklearn.engine.TaskBatch`. Every random choice
    comes from one ``generator``: from a task set, each batch draws ``batch_size``
    task indices (with replacement) and then every task's support rows; from a
    stream (:class:`~msr_sklearn.data.streams.TaskStream`), a seed for the stream's next
    ``batch_size`` fresh tasks and then their support rows. Restoring the
    generator's state (``generator.set_state``) therefore replays the same batches.

    Parameters
    ----------
    tasks : TaskSet or TaskStream
        Where the tasks come from.
    batch_size : int
        Tasks per meta-batch; capped at ``tasks.n_tasks`` for a task set.
    n_support : int
        Support rows per task.
    generator : torch.Generator
        The CPU generator of every draw.
    shuffle : bool, default=True
        Draw each task's support rows at random, else take its first rows (see
        :meth:`TaskSet.split`).
    check : callable or None, default=None
        Turns what a stream draws into a :class:`TaskSet` (the learner checks the
        tasks against the fitted network); ``None``: :func:`check_tasks`.
    stratify : bool, default=False
        Every class of a task in its support (see :meth:`TaskSet.split`).

    Attributes
    ----------
    batch_size : int
        The tasks in every batch.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from msr_sklearn.datasets import make_translation_tasks
    >>> from msr_sklearn.data.streams import TaskStream
    >>> from msr_sklearn.data.tasks import MetaBatches, check_tasks
    >>> task_set = check_tasks(make_translation_tasks(n_tasks=5, n_features=6, random_state=0))
    >>> batches = MetaBatches(task_set, 8, 2, torch.Generator().manual_seed(0))
    >>> batches.batch_size, next(batches).x_support.shape
    (5, torch.Size([5, 2, 6]))
    >>> stream = TaskStream(lambda n, rng: make_translation_tasks(
    ...     n_tasks=n, n_features=6, random_state=int(rng.integers(2**31))))
    >>> generator = torch.Generator().manual_seed(0)
    >>> state = generator.get_state()
    >>> first = next(MetaBatches(stream, 3, 2, generator))
    >>> _ = generator.set_state(state)
    >>> again = next(MetaBatches(stream, 3, 2, generator))
    >>> torch.equal(first.y_query, again.y_query)  # the same fresh tasks again
    True
    """

    def __init__(self, tasks, batch_size, n_support, generator, shuffle=True, check=None,
                 stratify=False):
        self.tasks, self.n_support, self.generator = tasks, n_support, generator
        self.shuffle, self.stratify = shuffle, stratify
        self.check = check or (lambda drawn: check_tasks(drawn, n_support=n_support))
        self.finite = isinstance(tasks, TaskSet)
        self.batch_size = min(batch_size, tasks.n_tasks) if self.finite else batch_size

    def __iter__(self):
        return self

    def __next__(self):
        if self.finite:
            tasks = self.tasks
            index = torch.randint(tasks.n_tasks, (self.batch_size,), generator=self.generator)
            index = index.to(tasks.X.device)
        else:
            seed = int(torch.randint(2**31 - 1, (1,), generator=self.generator))
            tasks, index = self.check(self.tasks.draw(self.batch_size, seed)), None
            self.tasks.check_drawn(tasks.n_tasks, self.batch_size)
        return tasks.split(self.n_support, self.generator, index=index, shuffle=self.shuffle,
                           stratify=self.stratify)


#: ``objective="auto"`` warns that integer targets may be numbers, not labels, with more
#: classes than this in a task
MAX_AUTO_CLASSES = 20


def resolve_objective(objective, ys):
    """``"auto"``: classification when targets are not floating point, else regression.

    Integer targets under ``"auto"`` that look like numbers (counts) rather than
    labels get a ``UserWarning`` saying how to choose: when the tasks have fewer than
    2 rows per class on average (as scikit-learn's ``type_of_target`` warns when
    classes exceed half the samples; then most classes cannot be in both a support
    and a query), or a task has more than ``MAX_AUTO_CLASSES`` classes.

    Parameters
    ----------
    objective : {"auto", "regression", "classification"}
        The requested objective; anything but ``"auto"`` is returned as is.
    ys : iterable of array-like
        Every task's targets.

    Returns
    -------
    str
        ``"regression"`` if every task's targets are floating point, else
        ``"classification"`` (for ``"auto"``).

    Examples
    --------
    >>> import numpy as np
    >>> from msr_sklearn.data.tasks import resolve_objective
    >>> resolve_objective("auto", [np.array([0.5, 1.0])])
    'regression'
    >>> resolve_objective("auto", [np.array([0.5, 1.0]), np.array(["a", "b"])])
    'classification'
    >>> resolve_objective("regression", [np.array([0, 1])])
    'regression'
    """
    if objective != "auto":
        return objective
    ys = [np.asarray(y) for y in ys]
    kinds = {y.dtype.kind for y in ys}
    if kinds <= {"f"}:
        return "regression"
    if kinds <= {"i", "u"}:
        n_classes = [len(np.unique(y)) for y in ys]
        n_rows = sum(len(y) for y in ys)
        if sum(n_classes) > n_rows / 2 or max(n_classes) > MAX_AUTO_CLASSES:
            warnings.warn(
                f"objective='auto' treats these integer targets as class labels: up to "
                f"{max(n_classes)} classes per task, {n_rows / sum(n_classes):.1f} rows per "
                "class on average. If they are numbers (counts, ratings), pass "
                "objective='regression'; pass objective='classification' to keep them as "
                "classes and silence this warning.", UserWarning, stacklevel=3)
    return "classification"


def check_tasks(X, y=None, groups=None, *, objective="auto", n_support=1, n_outputs=None,
                n_features=None, feature_shape=None, dtype=torch.float32):
    """Validate tasks in any accepted form and pad them into a :class:`TaskSet`.

    Features become floats of ``dtype`` and must be finite. Regression targets become
    ``(n, n_outputs)`` floats; classification labels are encoded per task as indices
    into that task's sorted labels (``TaskSet.classes``).

    Parameters
    ----------
    X : list of (X_i, y_i) pairs, array-like of shape (n_tasks, n) + feature_shape, \
or array-like of shape (n_samples,) + feature_shape
        The tasks: a list of ``(X_i, y_i)`` (without ``y`` and ``groups``), stacked
        tasks (with ``y``; the pair ``(X, y)`` may also come as ``X``), or long
        format (with ``y`` and ``groups``). A sample is a row of features or an image
        ``(C, H, W)``. Numpy, pandas or nested lists; not sparse. A float32 array of
        stacked tasks is used without a copy.
    y : array-like of shape (n_tasks, n) or (n_tasks, n, n_outputs), or (n_samples,) \
or (n_samples, n_outputs), default=None
        Targets, for 3-D or long-format ``X``.
    groups : array-like of shape (n_samples,), default=None
        Long format: the task id of every row; tasks keep the order of first
        appearance.
    objective : {"auto", "regression", "classification"}, default="auto"
        ``"auto"``: see :func:`resolve_objective`.
    n_support : int, default=1
        Every task needs at least ``n_support + 1`` rows (one query row).
    n_outputs : int or None, default=None
        If given (a fitted learner), tasks must match it: regression outputs, or at most
        this many classes per task.
    n_features : int or None, default=None
        If given, every sample must have this many values.
    feature_shape : tuple of int or None, default=None
        If given (a fitted learner), every sample must have this shape.
    dtype : torch.dtype, default=torch.float32
        The dtype of ``X`` and of regression targets.

    Returns
    -------
    TaskSet

    Raises
    ------
    ValueError
        If the tasks are empty, inconsistent, too small, not finite, not numbers (strings,
        dates), or (classification) a task has a single class; or if padding them to the
        largest task would take more memory than is available, or over 1 GiB and 100
        times their own rows (one huge task among small ones: split it, or stream them).
    TypeError
        If the input is sparse or of no accepted form.

    Examples
    --------
    >>> import numpy as np
    >>> from msr_sklearn.data.tasks import check_tasks
    >>> X = np.arange(24.0).reshape(12, 2)
    >>> y = np.array(["a", "b", "a", "b", "x", "y", "x", "y", "z", "x", "y", "z"])
    >>> task_set = check_tasks(X, y, groups=np.repeat([10, 20], [4, 8]))
    >>> task_set.objective, task_set.n_outputs, task_set.sizes
    ('classification', 3, tensor([4, 8]))
    >>> task_set.classes[1]
    array(['x', 'y', 'z'], dtype='<U1')
    >>> task_set.y
    tensor([[0, 1, 0, 1, 0, 0, 0, 0],
            [0, 1, 0, 1, 2, 0, 1, 2]])
    """
    tasks, feature_names = _as_task_list(X, y, groups)
    if len(tasks) == 0:
        raise ValueError("no tasks given: need a non-empty list of (X, y) tasks")
    Xs, ys = [], []
    for i, (Xi, yi) in enumerate(tasks):
        # light per-task checks; finiteness is checked once on the padded arrays
        Xi = _numeric_array(Xi, f"X of task {i}", ndim=2, at_least=True)
        yi = np.asarray(yi.to_numpy() if hasattr(yi, "to_numpy") else yi)
        if yi.ndim not in (1, 2) or len(yi) != len(Xi):
            raise ValueError(f"task {i}: X has {len(Xi)} rows but y has shape {yi.shape}; y "
                             "needs one row (or value) per sample")
        if len(Xi) < n_support + 1:
            raise ValueError(
                f"task {i} has {len(Xi)} samples; with n_support={n_support} every task needs "
                f"at least {n_support + 1} (support plus one query row)."
                + (SUBSAMPLED_ROWS if groups is not None else ""))
        Xs.append(Xi)
        ys.append(yi)
    shapes = {x.shape[1:] for x in Xs}
    if len(shapes) > 1:
        raise ValueError(f"tasks have samples of different shapes {sorted(shapes)}; all tasks "
                         "must share one feature space")
    shape = shapes.pop()
    if feature_shape is not None and shape != tuple(feature_shape):
        raise ValueError(f"tasks have samples of shape {shape}, but the learner was fitted "
                         f"with samples of shape {tuple(feature_shape)}")
    if n_features is not None and math.prod(shape) != n_features:
        raise ValueError(f"tasks have {math.prod(shape)} features, but the learner was fitted "
                         f"with {n_features} features")
    objective = resolve_objective(objective, ys)
    sizes = [len(x) for x in Xs]
    n_max = max(sizes)
    np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
    Xp = _stacked_as_is(X, y, groups, np_dtype) if _is_3d(X) else None
    if Xp is None:
        check_padded_size(Xs, ys, sizes, np_dtype.itemsize, objective)
        with np.errstate(over="ignore"):  # overflow to inf is reported just below
            Xp = _pad(Xs, n_max, np_dtype)
    _check_finite(Xp, "X")
    classes = None
    if objective == "regression":
        ys = [_regression_target(y, i) for i, y in enumerate(ys)]
        outs = {y.shape[1] for y in ys}
        if len(outs) > 1:
            raise ValueError(f"tasks have different numbers of outputs {sorted(outs)}")
        n_out = outs.pop()
        if n_outputs is not None and n_out != n_outputs:
            raise ValueError(f"tasks have {n_out} outputs, but the learner was fitted with "
                             f"{n_outputs}")
        yp = _stacked_as_is(y, X, groups, np_dtype)
        if yp is not None:
            yp = yp.reshape(len(ys), n_max, n_out)  # a view: one flat row of outputs each
        else:
            with np.errstate(over="ignore"):
                yp = _pad(ys, n_max, np_dtype)
        _check_finite(yp, "y")
        y_tensor = torch.from_numpy(yp)
    else:
        classes, codes = [], []
        for i, yi in enumerate(ys):
            kind = type_of_target(yi, input_name=f"y of task {i}")
            if kind not in ("binary", "multiclass"):
                raise ValueError(
                    f"task {i}: classification needs class labels, got a {kind!r} target; use "
                    "objective='regression' for continuous targets")
            labels, code = np.unique(yi, return_inverse=True)
            if len(labels) < 2:
                raise ValueError(f"task {i} has a single class ({labels[0]!r}); a "
                                 "classification task needs at least 2."
                                 + (SUBSAMPLED_ROWS if groups is not None else ""))
            classes.append(labels)
            codes.append(code.reshape(-1))
        n_out = max(len(c) for c in classes)
        if n_outputs is not None and n_out > n_outputs:
            raise ValueError(f"a task has {n_out} classes, but the network has {n_outputs} "
                             "outputs (ways)")
        yp = np.zeros((len(codes), n_max), dtype=np.int64)
        for i, c in enumerate(codes):
            yp[i, :len(c)] = c
        y_tensor = torch.as_tensor(yp)
    return TaskSet(torch.from_numpy(Xp), y_tensor, torch.as_tensor(sizes),
                   objective, n_outputs if n_outputs is not None else n_out, feature_names,
                   classes)


def mean_confidence_interval(values, confidence=0.95, weights=None):
    """Mean and Student-t half-width of the ``confidence`` interval of the mean.

    Parameters
    ----------
    values : array-like of shape (n,)
        The sample, e.g. per-task test losses.
    confidence : float, default=0.95
        The coverage of the two-sided interval.
    weights : array-like of shape (n,) or None, default=None
        Non-negative weights, not all 0: the weighted mean ``sum(w v) / sum(w)``, its
        standard error from the unbiased weighted variance (reliability weights) over
        Kish's effective sample size ``n_eff = sum(w)^2 / sum(w^2)``, and ``n_eff - 1``
        degrees of freedom. Equal weights give the unweighted numbers.

    Returns
    -------
    mean : float
    half_width : float
        ``mean ± half_width`` is the interval; NaN for fewer than 2 values (or an
        effective sample size of at most 1).

    Examples
    --------
    >>> from msr_sklearn.data.tasks import mean_confidence_interval
    >>> mean, half_width = mean_confidence_interval([1.0, 2.0, 3.0, 4.0])
    >>> mean, round(half_width, 4)
    (2.5, 2.0543)
    >>> mean_confidence_interval([2.0])
    (2.0, nan)
    >>> mean, half_width = mean_confidence_interval([1.0, 2.0, 3.0, 4.0], weights=[1, 1, 1, 3])
    >>> round(mean, 4), round(half_width, 4)
    (3.0, 3.5131)
    """
    values = np.asarray(values, dtype=float)
    if weights is None:
        mean = float(values.mean())
        if len(values) < 2:
            return mean, float("nan")
        sem = values.std(ddof=1) / np.sqrt(len(values))
        return mean, float(sem * stats.t.ppf(0.5 + confidence / 2, len(values) - 1))
    w = np.asarray(weights, dtype=float)
    mean = float(np.average(values, weights=w))
    v1, v2 = w.sum(), (w ** 2).sum()
    n_eff = v1 ** 2 / v2
    if len(values) < 2 or n_eff <= 1:
        return mean, float("nan")
    variance = (w * (values - mean) ** 2).sum() / (v1 - v2 / v1)
    sem = np.sqrt(variance / n_eff)
    return mean, float(sem * stats.t.ppf(0.5 + confidence / 2, n_eff - 1))
