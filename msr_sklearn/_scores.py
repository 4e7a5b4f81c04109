"""Per-task scores of adapted query outputs, as :meth:`MetaSymmetryLearner.evaluate
<msr_sklearn.MetaSymmetryLearner.evaluate>` reports them (padding rows excluded)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .tasks import mean_confidence_interval


def per_task_scores(objective, outputs, batch, classes, n_support):
    """One row per task: ``task``, ``n_support``, ``n_query`` and its metrics.

    ``mse`` and ``r2`` for ``objective="regression"``, ``accuracy`` and ``log_loss``
    otherwise; ``outputs`` are the adapted query outputs of ``batch``, ``classes``
    each task's labels (classification).
    """
    n_query = (batch.query_mask.sum(1) if batch.query_mask is not None
               else torch.full((batch.n_tasks,), batch.x_query.shape[1]))
    frame = {"task": np.arange(batch.n_tasks), "n_support": n_support,
             "n_query": n_query.cpu().numpy()}
    mask = batch.query_mask
    if objective == "regression":
        frame.update(_regression_metrics(outputs, batch.y_query, mask))
    else:
        frame.update(_classification_metrics(outputs, batch.y_query, mask, classes))
    return pd.DataFrame(frame)


def summarize_scores(per_task):
    """Per metric of :func:`per_task_scores`: ``mean``, ``ci95`` and ``n_tasks``."""
    metrics = [c for c in per_task.columns if c not in ("task", "n_support", "n_query")]
    rows = [(m, *mean_confidence_interval(per_task[m]), len(per_task)) for m in metrics]
    summary = pd.DataFrame(rows, columns=["metric", "mean", "ci95", "n_tasks"])
    return summary.set_index("metric")


def _masked_mean(values, mask):
    if mask is None:
        return values.mean(-1)
    mask = mask.to(values.dtype)
    return (values * mask).sum(-1) / mask.sum(-1)


def _regression_metrics(pred, target, mask):
    """Per-task MSE and R² (uniform average over outputs), padding rows excluded."""
    sq = (pred - target) ** 2  # (T, n, o)
    m = None if mask is None else mask[..., None].expand_as(sq)
    mse = _masked_mean(sq.mean(-1), mask)
    count = target.shape[1] if mask is None else mask.sum(1, keepdim=True).to(target.dtype)
    if mask is None:
        mean = target.mean(1, keepdim=True)
        ss_tot = ((target - mean) ** 2).sum(1)
        ss_res = sq.sum(1)
    else:
        mean = (target * m).sum(1, keepdim=True) / count[..., None]
        ss_tot = (((target - mean) ** 2) * m).sum(1)
        ss_res = (sq * m).sum(1)
    # as sklearn's r2_score: constant outputs score 1 if predicted exactly, else 0
    r2 = torch.where(ss_tot > 0, 1 - ss_res / ss_tot.clamp_min(1e-300),
                     (ss_res == 0).to(ss_res.dtype))
    return {"mse": mse.cpu().numpy(), "r2": r2.mean(-1).cpu().numpy()}


def _classification_metrics(logits, target, mask, classes):
    # only each task's own classes compete (a task may use fewer than n_outputs)
    n_classes = torch.tensor([len(c) for c in classes], device=logits.device)
    unused = torch.arange(logits.shape[-1], device=logits.device) >= n_classes[:, None]
    logits = logits.masked_fill(unused[:, None, :], float("-inf"))
    log_proba = torch.log_softmax(logits, dim=-1)
    nll = -log_proba.gather(-1, target[..., None]).squeeze(-1)
    correct = (logits.argmax(-1) == target).to(log_proba.dtype)
    return {"accuracy": _masked_mean(correct, mask).cpu().numpy(),
            "log_loss": _masked_mean(nll, mask).cpu().numpy()}
