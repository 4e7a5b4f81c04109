"""Per-task scores of adapted query outputs, as :meth:`MetaSymmetryLearner.evaluate
<msr_sklearn.MetaSymmetryLearner.evaluate>` reports them (padding rows excluded)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..data.tasks import mean_confidence_interval


def per_task_scores(objective, outputs, batch, classes, n_support, weights=None):
    """One row per task: ``task``, ``n_support``, ``n_query`` and its metrics.

    ``mse`` and ``r2`` for ``objective="regression"``, ``accuracy`` and ``log_loss``
    otherwise; ``outputs`` are the adapted query outputs of ``batch``, ``classes``
    each task's labels (classification). With ``weights``, the query rows' sample
    weights ``(n_tasks, n_query)`` (0 on padding, positive in sum per task), every
    metric is weighted over a task's query rows as scikit-learn's metric with
    ``sample_weight``, and a ``weight`` column holds each task's mean query weight.
    """
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
    if objective == "regression":
        frame.update(_regression_metrics(outputs, batch.y_query, rows))
    else:
        frame.update(_classification_metrics(outputs, batch.y_query, rows, classes))
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


def _weighted_mean(values, rows):
    if rows is None:
        return values.mean(-1)
    return (values * rows).sum(-1) / rows.sum(-1)


def _regression_metrics(pred, target, rows):
    """Per-task MSE and R² (uniform average over outputs), weighted by ``rows``.

    ``rows`` (T, n) weighs every query row (0: padding) or is ``None`` (all count 1);
    the weighted R² is scikit-learn's ``r2_score`` with ``sample_weight``.
    """
    sq = (pred - target) ** 2  # (T, n, o)
    mse = _weighted_mean(sq.mean(-1), rows)
    if rows is None:
        mean = target.mean(1, keepdim=True)
        ss_tot = ((target - mean) ** 2).sum(1)
        ss_res = sq.sum(1)
    else:
        w = rows[..., None]
        mean = (target * w).sum(1, keepdim=True) / w.sum(1, keepdim=True)
        ss_tot = (((target - mean) ** 2) * w).sum(1)
        ss_res = (sq * w).sum(1)
    # as sklearn's r2_score: constant outputs score 1 if predicted exactly, else 0
    r2 = torch.where(ss_tot > 0, 1 - ss_res / ss_tot.clamp_min(1e-300),
                     (ss_res == 0).to(ss_res.dtype))
    return {"mse": mse.cpu().numpy(), "r2": r2.mean(-1).cpu().numpy()}


def _classification_metrics(logits, target, rows, classes):
    # only each task's own classes compete (a task may use fewer than n_outputs)
    n_classes = torch.tensor([len(c) for c in classes], device=logits.device)
    unused = torch.arange(logits.shape[-1], device=logits.device) >= n_classes[:, None]
    logits = logits.masked_fill(unused[:, None, :], float("-inf"))
    log_proba = torch.log_softmax(logits, dim=-1)
    nll = -log_proba.gather(-1, target[..., None]).squeeze(-1)
    correct = (logits.argmax(-1) == target).to(log_proba.dtype)
    return {"accuracy": _weighted_mean(correct, rows).cpu().numpy(),
            "log_loss": _weighted_mean(nll, rows).cpu().numpy()}
