"""How scikit-learn's metadata (``groups``, ``sample_weight``) reach the learner.

Long-format tasks need their task ids at ``fit`` *and* at ``score``; inside a
``Pipeline``, ``cross_validate`` or a search they get there only by metadata routing.
A routed ``fit`` with an unrouted ``score`` would fail at every ``score``, which
scikit-learn's model selection turns into NaN scores (``error_score=np.nan``), so
:func:`check_score_request` refuses that configuration at ``fit``.
:func:`query_weights` reads ``score``'s ``sample_weight`` in the form of the tasks and
splits it as the tasks' rows were split.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn import get_config

from ._forms import _is_3d, task_rows


def check_score_request(estimator, groups):
    """Refuse long-format tasks routed to ``fit`` while ``score``'s request is unset.

    Under metadata routing, a meta-estimator passes ``groups`` to ``score`` only if
    ``score`` requested them; otherwise every routed ``score`` of long-format data
    fails and scikit-learn's model selection reports NaN. ``set_score_request(
    groups=False)`` states that only the user calls ``score`` and accepts it.
    """
    if groups is None or not get_config()["enable_metadata_routing"]:
        return
    routing = estimator.get_metadata_routing()
    fit_request = routing.fit.requests.get("groups")
    routed = fit_request is True or (isinstance(fit_request, str)
                                     and fit_request.isidentifier())  # an alias
    if routed and routing.score.requests.get("groups") is None:
        name = type(estimator).__name__
        raise ValueError(
            f"{name}.set_fit_request(groups=True) routes the task ids to fit, but score "
            "has no groups request: a Pipeline, cross_validate or a search would call "
            "score on long-format data without them, and scikit-learn turns that error "
            f"into NaN scores. Call {name}(...).set_fit_request(groups=True)"
            ".set_score_request(groups=True), or set_score_request(groups=False) if only "
            "you call score, passing groups= yourself.")


def _task_weights(sample_weight, X, y, groups, sizes):
    """``sample_weight`` as one array per task, in the form ``X`` came in."""
    n_tasks, n_rows = len(sizes), int(sum(sizes))
    if groups is not None:
        w = np.asarray(sample_weight)
        if w.shape != (n_rows,):
            raise ValueError(f"sample_weight of long-format X needs one weight per row, "
                             f"shape ({n_rows},); got shape {w.shape}")
        g = groups.to_numpy() if hasattr(groups, "to_numpy") else np.asarray(groups)
        return [w[rows] for rows in task_rows(g)]
    if y is not None or isinstance(X, tuple) and len(X) == 2 and _is_3d(X[0]):
        w = np.asarray(sample_weight)
        if w.shape != (n_tasks, sizes[0]):
            raise ValueError(f"sample_weight of 3-D X needs shape (n_tasks, n_samples) = "
                             f"({n_tasks}, {sizes[0]}); got shape {w.shape}")
        return list(w)
    if (isinstance(sample_weight, (str, bytes)) or not hasattr(sample_weight, "__len__")
            or len(sample_weight) != n_tasks):
        raise ValueError(f"sample_weight of a list of {n_tasks} tasks must be a list with "
                         "one weight array per task; got "
                         + (f"length {len(sample_weight)}" if hasattr(sample_weight, "__len__")
                            else type(sample_weight).__name__))
    return list(sample_weight)


def query_weights(sample_weight, X, y, groups, sizes, order, n_support):
    """The query rows' weights, ``(n_tasks, n_query)`` float64, 0 on padding rows.

    ``sample_weight`` comes in the form of ``X``: ``(n_rows,)`` for long format,
    ``(n_tasks, n_samples)`` for 3-D ``X``, a list of per-task arrays for a list of
    tasks. ``sizes`` are the tasks' row counts and ``order`` the split's row order
    (:meth:`~msr_sklearn.data.tasks.TaskSet.split` with ``return_order=True``). Raises a
    ``ValueError`` for weights of the wrong shape, not numeric, not finite, negative,
    or summing to 0 over a task's query rows.
    """
    sizes = [int(s) for s in sizes]
    padded = np.zeros((len(sizes), order.shape[1]))
    for t, w in enumerate(_task_weights(sample_weight, X, y, groups, sizes)):
        w = np.asarray(w.to_numpy() if hasattr(w, "to_numpy") else w)
        if w.dtype.kind not in "biuf":
            raise ValueError(f"sample_weight of task {t} must be numeric; got dtype {w.dtype}")
        if w.shape != (sizes[t],):
            raise ValueError(f"sample_weight of task {t} needs one weight per row, shape "
                             f"({sizes[t]},); got shape {w.shape} (for one weight per task, "
                             "repeat it over the task's rows)")
        if not np.isfinite(w).all():
            raise ValueError(f"sample_weight of task {t} contains NaN or infinity")
        if (w < 0).any():
            raise ValueError(f"sample_weight of task {t} has negative values; weights must "
                             "be >= 0")
        padded[t, :sizes[t]] = w
    query = torch.from_numpy(padded).gather(1, order.cpu())[:, n_support:]
    empty = (query.sum(1) == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"task {empty[0]} has sample_weight 0 on all its query rows (the rows that "
            f"score's seeded split did not draw as its n_support={n_support} support "
            "rows); weights only weigh the query rows' scores, so every task needs a "
            f"positive weight on a query row ({len(empty)} task(s) have none)")
    return query
