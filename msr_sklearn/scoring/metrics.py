"""Per-task scores of adapted query outputs, as :meth:`MetaSymmetryLearner.evaluate
<msr_sklearn.MetaSymmetryLearner.evaluate>` reports them (padding rows excluded).

Every metric is computed for all tasks at once from the adapted query outputs, as
scikit-learn's metric of the same name computes it on one task's query rows (with
``sample_weight``, and ``multioutput="uniform_average"`` for several outputs).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..data.tasks import mean_confidence_interval

#: the metrics ``evaluate`` can report, per objective, with scikit-learn's function
METRICS = {
    "regression": {"mse": "mean_squared_error", "rmse": "root_mean_squared_error",
                   "mae": "mean_absolute_error", "r2": "r2_score",
                   "explained_variance": "explained_variance_score"},
    "classification": {"accuracy": "accuracy_score",
                       "balanced_accuracy": "balanced_accuracy_score",
                       "log_loss": "log_loss", "roc_auc": "roc_auc_score (binary tasks)"},
}
#: what ``evaluate`` reports without ``metrics``
DEFAULT_METRICS = {"regression": ("mse", "r2"), "classification": ("accuracy", "log_loss")}


def check_metrics(objective, metrics):
    """``metrics`` as a tuple of known metric names for ``objective`` (``None``: the
    defaults), or a ``ValueError`` naming the ones that are not."""
    if metrics is None:
        return DEFAULT_METRICS[objective]
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    unknown = [m for m in metrics if m not in METRICS[objective]]
    if unknown:
        other = "classification" if objective == "regression" else "regression"
        misplaced = [m for m in unknown if m in METRICS[other]]
        raise ValueError(
            f"unknown {objective} metric(s) {unknown}; {objective} tasks have "
            f"{sorted(METRICS[objective])}"
            + (f" ({misplaced} score {other} tasks)" if misplaced else ""))
    return metrics


def per_task_scores(objective, outputs, batch, classes, n_support, weights=None,
                    metrics=None):
    """One row per task: ``task``, ``n_support``, ``n_query`` and its metrics.

    ``metrics`` (names of :data:`METRICS`; ``None``: ``mse`` and ``r2`` for
    ``objective="regression"``, ``accuracy`` and ``log_loss`` otherwise); ``outputs``
    are the adapted query outputs of ``batch``, ``classes`` each task's labels
    (classification). With ``weights``, the query rows' sample weights ``(n_tasks,
    n_query)`` (0 on padding, positive in sum per task), every metric is weighted over
    a task's query rows as scikit-learn's metric with ``sample_weight``, and a
    ``weight`` column holds each task's mean query weight.
    """
    metrics = check_metrics(objective, metrics)
    n_query = (batch.query_mask.sum(1) if batch.query_mask is not None
               else torch.full((batch.n_tasks,), batch.x_query.shape[1]))
    frame = {"task": np.arange(batch.n_tasks), "n_support": n_support,
             "n_query": n_query.cpu().numpy()}
    mask = batch.query_mask
    rows = None if mask is None else mask.to(outputs.dtype)  # padding rows weigh 0
    if weights is not None:
        frame["weight"] = weights.sum(1).numpy() / frame["n_query"]
        # scaled to a maximum of 1 per task: no overflow or underflow in outputs' dtype
        scaled = weights / weights.amax(1, keepdim=True)
        rows = scaled.to(device=outputs.device, dtype=outputs.dtype)
    compute = _regression_metrics if objective == "regression" else _classification_metrics
    values = compute(outputs, batch.y_query, rows, classes, metrics)
    frame.update({m: values[m].cpu().numpy() for m in metrics})
    return pd.DataFrame(frame)


def summarize_scores(per_task):
    """Per metric of :func:`per_task_scores`: ``mean``, ``ci95`` and ``n_tasks``.

    With a ``weight`` column, the means and intervals weigh each task by it.
    """
    metrics = [c for c in per_task.columns
               if c not in ("task", "n_support", "n_query", "weight")]
    weights = mean_weights(per_task)
    rows = [(m, *mean_confidence_interval(per_task[m], weights=weights), len(per_task))
            for m in metrics]
    summary = pd.DataFrame(rows, columns=["metric", "mean", "ci95", "n_tasks"])
    return summary.set_index("metric")


def mean_weights(per_task):
    """The tasks' weights in a mean over tasks, scaled to a maximum of 1, or ``None``."""
    if "weight" not in per_task:
        return None
    weights = per_task["weight"].to_numpy(dtype=float)
    return weights / weights.max()


def task_mean(per_task, metric):
    """The mean over tasks of ``per_task[metric]``, each task weighted by its mean query
    weight when ``per_task`` has one (``score``'s and the task scorers' rule)."""
    weights = mean_weights(per_task)
    if weights is None:
        return float(per_task[metric].mean())
    return float(np.average(per_task[metric], weights=weights))


def _weighted_mean(values, rows, dim=-1):
    if rows is None:
        return values.mean(dim)
    return (values * rows).sum(dim) / rows.sum(dim)


def _explained(residual, total):
    """``1 - residual / total`` as scikit-learn's scores force it finite: a constant target
    scores 1 if predicted exactly, else 0."""
    return torch.where(total > 0, 1 - residual / total.clamp_min(1e-300),
                       (residual == 0).to(residual.dtype))


def _regression_metrics(pred, target, rows, classes, metrics):
    """Per-task metrics (uniform average over outputs), each row weighted by ``rows``.

    ``rows`` (T, n) weighs every query row (0: padding) or is ``None`` (all count 1).
    """
    error = pred - target  # (T, n, o)
    w = None if rows is None else rows[..., None]
    per_output = {"mse": lambda: _weighted_mean(error ** 2, w, 1),
                  "mae": lambda: _weighted_mean(error.abs(), w, 1)}
    out = {}
    if "mse" in metrics:
        out["mse"] = per_output["mse"]().mean(-1)
    if "rmse" in metrics:
        out["rmse"] = per_output["mse"]().sqrt().mean(-1)
    if "mae" in metrics:
        out["mae"] = per_output["mae"]().mean(-1)
    if "r2" in metrics or "explained_variance" in metrics:
        spread = ((target - _weighted_mean(target, w, 1)[:, None]) ** 2)
        total = _weighted_mean(spread, w, 1)
        if "r2" in metrics:
            out["r2"] = _explained(_weighted_mean(error ** 2, w, 1), total).mean(-1)
        if "explained_variance" in metrics:
            centred = error - _weighted_mean(error, w, 1)[:, None]
            out["explained_variance"] = _explained(_weighted_mean(centred ** 2, w, 1),
                                                   total).mean(-1)
    return out


def _classification_metrics(logits, target, rows, classes, metrics):
    # only each task's own classes compete (a task may use fewer than n_outputs)
    n_classes = torch.tensor([len(c) for c in classes], device=logits.device)
    unused = torch.arange(logits.shape[-1], device=logits.device) >= n_classes[:, None]
    logits = logits.masked_fill(unused[:, None, :], float("-inf"))
    rows = torch.ones_like(target, dtype=logits.dtype) if rows is None else rows
    out = {}
    correct = (logits.argmax(-1) == target).to(logits.dtype)
    if "accuracy" in metrics:
        out["accuracy"] = _weighted_mean(correct, rows)
    if "log_loss" in metrics:
        log_proba = torch.log_softmax(logits, dim=-1)
        out["log_loss"] = _weighted_mean(-log_proba.gather(-1, target[..., None])[..., 0], rows)
    if "balanced_accuracy" in metrics:
        # the mean recall over the classes that weigh something in the query
        member = torch.nn.functional.one_hot(target, logits.shape[-1]) * rows[..., None]
        true = member.sum(1)
        recall = (member * correct[..., None]).sum(1) / true.clamp_min(1e-300)
        present = (true > 0).to(logits.dtype)
        out["balanced_accuracy"] = (recall * present).sum(1) / present.sum(1)
    if "roc_auc" in metrics:
        out["roc_auc"] = _binary_roc_auc(logits, target, rows, n_classes)
    return out


def _binary_roc_auc(logits, target, rows, n_classes):
    """Per binary task: the weighted probability that a positive query row outscores a
    negative one, ties counting 1/2 (scikit-learn's trapezoidal ROC AUC)."""
    if (n_classes != 2).any():
        t = int((n_classes != 2).nonzero()[0, 0])
        raise ValueError(f"roc_auc scores binary tasks; task {t} has {int(n_classes[t])} "
                         "classes (use accuracy, balanced_accuracy or log_loss)")
    score = logits[..., 1] - logits[..., 0]  # orders rows as predict_proba[:, 1]
    positive = (target == 1).to(rows.dtype) * rows
    negative = (target == 0).to(rows.dtype) * rows
    w_pos, w_neg = positive.sum(1), negative.sum(1)
    empty = ((w_pos == 0) | (w_neg == 0)).nonzero()
    if len(empty):
        raise ValueError(f"roc_auc is undefined for task {int(empty[0, 0])}: its query rows "
                         "(with a positive weight) hold one class only")
    # negatives sorted by score (other rows last, weighing nothing); per positive row,
    # the weight of the negatives below it and tied with it
    keyed = torch.where(negative > 0, score, torch.full_like(score, float("inf")))
    order = keyed.argsort(1)
    sorted_scores = keyed.gather(1, order)
    cumulative = torch.cat([torch.zeros_like(w_neg[:, None]),
                            negative.gather(1, order).cumsum(1)], 1)
    below = cumulative.gather(1, torch.searchsorted(sorted_scores, score.contiguous()))
    upto = cumulative.gather(1, torch.searchsorted(sorted_scores, score.contiguous(),
                                                   right=True))
    wins = ((below + (upto - below) / 2) * positive).sum(1)
    return wins / (w_pos * w_neg)
