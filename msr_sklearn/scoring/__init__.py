"""Scoring a fitted meta-learner on new tasks: per-task metrics, their summaries, and
task-level scorers under scikit-learn's scorer names for ``scoring=``."""

from .metrics import mean_weights, per_task_scores, summarize_scores
from .mixin import TaskScoringMixin
from .scorers import TaskScorer, get_task_scorer_names, make_task_scorer, task_scoring

__all__ = ["TaskScorer", "TaskScoringMixin", "get_task_scorer_names", "make_task_scorer",
           "mean_weights", "per_task_scores", "summarize_scores", "task_scoring"]
