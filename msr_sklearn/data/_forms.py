"""Reading task data in each accepted form: a list of ``(X_i, y_i)`` pairs, stacked
3-D (rows) or 5-D (images) arrays, or long format with one task id per row; then each
task's rows checked as numbers, padded into one array and checked finite.

:mod:`msr_sklearn.data.tasks` builds its :class:`~msr_sklearn.data.tasks.TaskSet` with them.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import issparse

from ._checks import as_array, refuse_non_numbers, unique_task_ids

#: how long-format data reach the learner through scikit-learn's meta-estimators
LONG_FORMAT_NEEDS_GROUPS = (
    "Long-format data need the task id of every row as groups=. A Pipeline, "
    "cross_validate or a search passes groups on to fit and score only with metadata "
    "routing: sklearn.set_config(enable_metadata_routing=True), "
    "learner.set_fit_request(groups=True).set_score_request(groups=True), then e.g. "
    "cross_validate(..., params={'groups': task_ids}). Or pass the tasks as a list of "
    "(X_i, y_i) pairs, which needs no groups.")

#: a long-format task that lost rows may come from a halving search's row subsampling
SUBSAMPLED_ROWS = (
    " If this fit runs inside HalvingGridSearchCV or HalvingRandomSearchCV, its default "
    "resource='n_samples' subsamples the rows of long-format data and so shrinks every "
    "task: use resource='n_meta_steps' (in a pipeline, '<step>__n_meta_steps') with "
    "max_resources set to the most meta-steps to train.")

def _is_3d(a):
    """Whether ``a`` stacks tasks: ``(n_tasks, n, d)`` rows or ``(n_tasks, n, C, H, W)`` images."""
    return hasattr(a, "ndim") and a.ndim >= 3 or (
        isinstance(a, (list, tuple)) and len(a) > 0 and _nested_ndim(a) >= 3)


def _nested_ndim(a):
    """The depth of a nested list, without building an array of it (ragged lists are
    lists of tasks, not an error here)."""
    depth = 0
    while isinstance(a, (list, tuple)) and len(a) > 0:
        a, depth = a[0], depth + 1
    return depth + np.ndim(a)


def _as_task_list(X, y=None, groups=None):
    """Normalize the accepted input forms to (list of (X_i, y_i), feature names)."""
    if issparse(X):
        raise TypeError("sparse input is not supported: the network needs dense features; "
                        "convert with X.toarray()")
    feature_names = None
    if y is None and groups is None:
        if isinstance(X, tuple) and len(X) == 2 and _is_3d(X[0]):
            X, y = X  # (X3d, y3d) passed as one object
        else:
            if isinstance(X, (str, bytes)) or not hasattr(X, "__len__") or hasattr(X, "shape"):
                raise TypeError(
                    "tasks must be a list of (X, y) pairs, 3-D arrays X and y, or long-format "
                    f"X, y with groups=task ids; got {type(X).__name__}"
                    + (" without y" if hasattr(X, "shape") else ""))
            tasks = list(X)
            for i, task in enumerate(tasks):
                if not isinstance(task, (tuple, list)) or len(task) != 2:
                    raise TypeError(f"task {i} must be an (X, y) pair; got {type(task).__name__}")
            return tasks, _feature_names(tasks[0][0]) if tasks else None
    if y is None:
        raise ValueError("groups were given without y; pass fit(X, y, groups=task_ids)")
    if groups is not None:
        feature_names = _feature_names(X)
        Xa, ya = as_array(X, "X"), as_array(y, "y")
        g = as_array(groups, "groups")
        if g.ndim != 1:
            raise ValueError(f"groups must be 1-D (one task id per row); got shape {g.shape}")
        if len(g) != len(Xa) or len(ya) != len(Xa):
            raise ValueError(
                f"X, y and groups must have the same length; got {len(Xa)}, {len(ya)} and "
                f"{len(g)}")
        return [(Xa[rows], ya[rows]) for rows in task_rows(g)], feature_names
    if not _is_3d(X):
        raise ValueError(
            "with y given, X must stack tasks, (n_tasks, n_samples, n_features) or "
            "(n_tasks, n_samples, C, H, W), or be long format "
            f"2-D X with groups=task ids; got X with ndim={np.ndim(X)} and no groups. "
            + (LONG_FORMAT_NEEDS_GROUPS if np.ndim(X) == 2 else ""))
    hint = ("; every sample needs the same features, and tasks of different sizes come as a "
            "list of (X_i, y_i) pairs, or in long format with groups=task ids")
    Xa, ya = as_array(X, "X", hint), as_array(y, "y", hint)
    if len(Xa) != len(ya):
        raise ValueError(f"X and y hold different numbers of tasks: {len(Xa)} and {len(ya)}")
    return [(Xa[i], ya[i]) for i in range(len(Xa))], None


def task_rows(groups):
    """The row indices of each task of long-format ``groups``, in order of first appearance.

    Task ids must be present (no None or NaN) and of types that can be ordered.
    """
    _, first, inverse = unique_task_ids(np.asarray(groups))
    return [np.flatnonzero(inverse == t) for t in np.argsort(first)]


def _feature_names(X):
    if hasattr(X, "columns"):
        names = np.asarray(X.columns, dtype=object)
        if all(isinstance(n, str) for n in names):
            return names
    return None


def _regression_target(y, i):
    # one flat row of outputs per sample, whatever the target's shape (maps, vectors)
    return _numeric_array(y.reshape(len(y), -1), f"y of task {i}", ndim=2)


def _stacked_as_is(a, other, groups, dtype):
    """Stacked tasks ``a`` (features, or targets beside stacked features ``other``)
    already in the training dtype and C-contiguous: used without a copy.

    (Padding copies every task; for thousands of image tasks that doubled the peak
    memory of a fit.)
    """
    if groups is not None or other is None or not isinstance(a, np.ndarray) or a.ndim < 2:
        return None
    stacked = a if a.ndim >= 3 else other
    if not (isinstance(stacked, np.ndarray) and stacked.ndim >= 3):
        return None
    return a if a.dtype == dtype and a.flags.c_contiguous else None


def _numeric_array(a, what, ndim, at_least=False):
    if issparse(a):
        raise TypeError(f"{what} is sparse, which is not supported; convert with .toarray()")
    a = as_array(a, what)
    if a.dtype.kind == "c":
        raise ValueError(f"{what}: complex data not supported")
    refuse_non_numbers(a, what)
    if a.ndim != ndim and not (at_least and a.ndim > ndim):
        raise ValueError(f"{what} must be {ndim}-D (n_samples, n_features)"
                         + (" or (n_samples, C, H, W)" if at_least else "")
                         + f"; got shape {a.shape}"
                         + (" — reshape a single feature with X.reshape(-1, 1)"
                            if a.ndim == 1 else ""))
    if a.dtype.kind not in "biuf":
        try:
            a = a.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{what} must be numeric; got dtype {a.dtype} ({exc}). Encode "
                             "categorical features first, e.g. with OneHotEncoder") from exc
    if len(a) == 0:
        raise ValueError(f"{what} has no samples")
    # floats keep their precision (a float32 task is not doubled in memory)
    return a if a.dtype.kind == "f" else a.astype(np.float64)


def _pad(arrays, n_max, dtype):
    """Stack 2-D arrays of possibly different lengths into (n, n_max, width), zero-padded.

    Written once, straight in the training dtype (a tensor shares the memory), and by
    assignment into a preallocated array: ~8x faster than ``np.stack`` for thousands of
    small tasks.
    """
    out = np.zeros((len(arrays), n_max, *arrays[0].shape[1:]), dtype=dtype)
    for i, a in enumerate(arrays):
        out[i, :len(a)] = a
    return out


def _check_finite(padded, what):
    # in blocks of tasks: a mask of the whole array would cost a quarter of its size again
    block = max(1, 2 ** 22 // max(1, padded[0].size))
    bad = None
    for start in range(0, len(padded), block):
        chunk = padded[start:start + block]
        ok = np.isfinite(chunk).reshape(len(chunk), -1).all(axis=1)
        if not ok.all():
            bad = start + int(np.argmax(~ok))
            break
    if bad is not None:
        raise ValueError(f"{what} of task {bad} contains NaN or infinity (or "
                         f"values beyond the range of {padded.dtype}); impute or drop those "
                         "values first (e.g. sklearn.impute.SimpleImputer)")
