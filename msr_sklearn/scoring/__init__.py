"""Scoring a fitted meta-learner on new tasks: per-task metrics and their summaries."""

from .metrics import mean_weights, per_task_scores, summarize_scores
from .mixin import TaskScoringMixin

__all__ = ["TaskScoringMixin", "mean_weights", "per_task_scores", "summarize_scores"]
