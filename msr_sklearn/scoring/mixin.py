"""Scoring a fitted learner on new tasks: adapt on each task's support, score its query.

:class:`TaskScoringMixin` holds the post-fit methods of
:class:`~msr_sklearn.MetaSymmetryLearner` (``evaluate``, ``score``,
``symmetry_strength``, ``make_estimator``). It reads the learner's fitted state
(``model_``, ``objective_``, ``symmetry_``) and parameters (``n_support``,
``support_split``, ``inner_steps``, ``random_state``, ``device``) and its
``_check_tasks``, ``_inner_loop`` and ``_split_options``.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from ..data.routing import query_weights
from .metrics import check_metrics, per_task_scores, summarize_scores, task_mean
from ..inspection.soft_symmetry import symmetry_strength
from ..engine import adapted_outputs
from ..training.loop import seed_from

__all__ = ["TaskScoringMixin"]

#: why the learner has no predict / predict_proba, and what to do instead
NO_ROW_PREDICTIONS = (
    "{name} has no {method}: it learns from and scores whole tasks, and the predictions "
    "for a task's rows need that task's support rows. scikit-learn's scorer names "
    "(scoring='accuracy', ['r2', 'neg_mean_squared_error'], ...) call {method} on the "
    "estimator, so they cannot score it: pass "
    "scoring=msr_sklearn.scoring.task_scoring(['accuracy', ...]) (a name, a list or a dict "
    "of names) to cross_validate or a search, or leave scoring=None for the learner's "
    "score. To predict the rows of one task, adapt a per-task estimator to its support: "
    "learner.make_estimator().fit(X_support, y_support).{method}(X).")


def _abs_max(*tensors):
    return max(float(t.detach().abs().max()) if t.numel() else 0.0 for t in tensors)


class TaskScoringMixin:
    """Evaluate, score and read the symmetry strength of a fitted meta-learner on tasks."""

    def _scoring_split(self, X, y, groups, sample_weight=None):
        """The tasks, their one seeded support/query split (as ``evaluate`` uses) and the
        query rows' ``sample_weight`` (``None`` without)."""
        check_is_fitted(self, "model_")
        tasks = self._check_tasks(X, y, groups, fitted=True)
        generator = torch.Generator().manual_seed(seed_from(self.random_state) + 1)
        batch, order = tasks.split(self.n_support, generator, return_order=True,
                                   **self._split_options(tasks))
        weights = None if sample_weight is None else query_weights(
            sample_weight, X, y, groups, tasks.sizes, order, self.n_support)
        return tasks, batch, weights

    def evaluate(self, X, y=None, groups=None, sample_weight=None, return_summary=False,
                 metrics=None):
        """Adapt on every task's support split and score its query split.

        Each task gets one seeded support/query split (reproducible given
        ``random_state``).

        Parameters
        ----------
        X : tasks in any form :meth:`fit` accepts
            The tasks to score (new tasks, for a few-shot score).
        y : None or array-like
            Their targets, as for :meth:`fit`.
        groups : array-like of shape (n_rows,) or None, default=None
            Task ids for long-format input.
        sample_weight : array-like or None, default=None
            Per-row weights in the form of ``X``: ``(n_rows,)`` for long format,
            ``(n_tasks, n_samples)`` for 3-D ``X``, a list of one ``(n_i,)`` array per
            task for a list of tasks. Non-negative and finite. They weigh the
            **scores** only: each task's metric is the weighted mean over its query
            rows (``mse``, ``accuracy``, ``log_loss``; ``r2`` as ``r2_score`` with
            ``sample_weight``), and each task's ``weight`` is the mean weight of its
            query rows. The support rows' weights are not used: adaptation runs the
            meta-learned inner loop, unweighted, as in training. Every task needs a
            positive weight on some query row (else a ``ValueError``). ``None``: all
            rows count alike.
        return_summary : bool, default=False
            Also return a summary over tasks.
        metrics : str, list of str or None, default=None
            The metrics to report, each computed on a task's query rows as scikit-learn's
            function of that name: regression ``"mse"``, ``"rmse"``, ``"mae"``, ``"r2"``,
            ``"explained_variance"`` (averaged uniformly over outputs); classification
            ``"accuracy"``, ``"balanced_accuracy"``, ``"log_loss"`` and ``"roc_auc"``
            (binary tasks whose query holds both classes). ``None``: ``mse`` and ``r2``,
            or ``accuracy`` and ``log_loss``. :func:`msr_sklearn.scoring.task_scoring`
            turns scikit-learn's scorer names into these.

        Returns
        -------
        per_task : pandas.DataFrame
            One row per task: ``n_support``, ``n_query`` and the ``metrics``; with
            ``sample_weight`` also ``weight``.
        summary : pandas.DataFrame, only with ``return_summary=True``
            Per metric: ``mean``, ``ci95`` (Student-t half-width) and ``n_tasks``;
            with ``sample_weight`` the tasks' means and intervals are weighted by
            ``weight`` (:func:`~msr_sklearn.data.tasks.mean_confidence_interval`).

        Raises
        ------
        ValueError
            When an adapted output or a score is NaN or infinite (inputs or targets so
            large that float32 overflows), with the tasks, the cause and the data's
            largest values: never a NaN score, nor an accuracy of NaN logits.

        Examples
        --------
        >>> from msr_sklearn import MetaSymmetryLearner
        >>> from msr_sklearn.datasets import make_translation_tasks
        >>> X, y = make_translation_tasks(n_tasks=40, n_samples=6, n_features=6,
        ...                               random_state=0)
        >>> tasks = [(X[t], y[t]) for t in range(40)]
        >>> learner = MetaSymmetryLearner(n_filters=2, n_support=2, n_meta_steps=5,
        ...                               random_state=0).fit(tasks[:30])
        >>> weights = [[1.0 + t % 2] * 6 for t in range(10)]  # one array per task
        >>> per_task = learner.evaluate(tasks[30:], sample_weight=weights)
        >>> list(per_task.columns)
        ['task', 'n_support', 'n_query', 'weight', 'mse', 'r2']
        >>> per_task["weight"].tolist()[:4]
        [1.0, 2.0, 1.0, 2.0]
        """
        check_is_fitted(self, "model_")
        metrics = check_metrics(self.objective_, metrics)
        tasks, batch, weights = self._scoring_split(X, y, groups, sample_weight)
        outputs = adapted_outputs(self.model_, batch, self._inner_loop())
        per_task = per_task_scores(self.objective_, outputs, batch, tasks.classes,
                                   self.n_support, weights, metrics)
        self._refuse_non_finite(outputs, batch, per_task, metrics)
        return (per_task, summarize_scores(per_task)) if return_summary else per_task

    def _refuse_non_finite(self, outputs, batch, per_task, metrics):
        """A ``ValueError`` naming the cause when an output or a score is not finite.

        Finite tasks can still overflow float32: inputs far beyond the training scale in
        the forward pass, large targets in adaptation or in a squared error. NaN logits
        would otherwise score as an accuracy, and NaN or inf as an R².
        """
        finite_rows = outputs.reshape(*outputs.shape[:2], -1).isfinite().all(-1)
        if batch.query_mask is not None:
            finite_rows |= ~batch.query_mask  # padding rows are not scored
        bad_outputs = (~finite_rows.all(1)).nonzero().flatten().tolist()
        scores = per_task[list(metrics)].to_numpy(dtype=float)
        bad_scores = np.flatnonzero(~np.isfinite(scores).all(1)).tolist()
        if not bad_outputs and not bad_scores:
            return
        bad = bad_outputs or bad_scores
        where = f"task{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad[:5]))}" + (
            f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        scale = f"largest |X| {_abs_max(batch.x_support, batch.x_query):.3g}"
        if self.objective_ == "regression":
            scale += f", largest |y| {_abs_max(batch.y_support, batch.y_query):.3g}"
        fix = ("; scale the tasks as the training tasks were (e.g. with a StandardScaler "
               "fitted on the training rows)")
        if not bad_outputs:
            metric = next(m for m, ok in zip(metrics, np.isfinite(scores[bad[0]])) if not ok)
            raise ValueError(f"cannot score: the {metric} of {where} is not finite: the query "
                             f"targets overflow float32 in the metric ({scale}){fix}")
        model = self.model_
        with torch.no_grad():
            if not all(bool(p.isfinite().all()) for p in model.parameters()):
                cause = "the learner's fitted state holds NaN or infinite values; refit it"
                fix = ""
            elif not bool(model(batch.x_query[bad[0]]).isfinite().all()):
                cause = "the network's forward pass overflows float32 on these inputs"
            else:
                cause = "adapting to the support rows overflows float32"
        raise ValueError(f"cannot score: the adapted network's outputs are NaN or infinite "
                         f"on the query rows of {where}: {cause} ({scale}){fix}")

    def score(self, X, y=None, groups=None, sample_weight=None):
        """Mean post-adaptation query score over tasks: R² (regression) or accuracy.

        Higher is better, as scikit-learn's model selection expects.

        Parameters
        ----------
        X : tasks in any form :meth:`fit` accepts
            The tasks to score.
        y : None or array-like
            Their targets, as for :meth:`fit`.
        groups : array-like of shape (n_rows,) or None, default=None
            Task ids for long-format input (routed by ``set_score_request(groups=True)``).
        sample_weight : array-like or None, default=None
            Per-row weights in the form of ``X`` (see :meth:`evaluate`): each task's
            score is weighted over its query rows, and the mean over tasks weighs each
            task by the mean weight of its query rows, so equal weights give the
            unweighted score. The support rows' weights are not used.

        Returns
        -------
        float
            The (weighted) mean over tasks of the tasks' query R² or accuracy.

        Examples
        --------
        >>> import numpy as np
        >>> from msr_sklearn import MetaSymmetryLearner
        >>> from msr_sklearn.datasets import make_translation_tasks
        >>> X, y = make_translation_tasks(n_tasks=40, n_samples=6, n_features=6,
        ...                               random_state=0)
        >>> X, y, groups = X.reshape(240, 6), y.reshape(240, -1), np.repeat(range(40), 6)
        >>> train, test = slice(0, 180), slice(180, None)  # long format: a row per sample
        >>> learner = MetaSymmetryLearner(n_filters=2, n_support=2, n_meta_steps=5,
        ...                               random_state=0)
        >>> score = learner.fit(X[train], y[train], groups=groups[train]).score(
        ...     X[test], y[test], groups=groups[test])
        >>> equal = learner.score(X[test], y[test], groups=groups[test],
        ...                       sample_weight=np.full(60, 2.0))
        >>> bool(np.isclose(score, equal))  # equal weights: the unweighted score
        True
        """
        check_is_fitted(self, "model_")
        metric = "r2" if self.objective_ == "regression" else "accuracy"
        return task_mean(self.evaluate(X, y, groups, sample_weight, metrics=[metric]), metric)

    def predict(self, X):
        """Not available: raises a ``TypeError`` that says what to use instead.

        A meta-learner scores tasks, not rows (a task's predictions need its support
        rows), so scikit-learn's scorer names, which call ``predict``, cannot score it.

        Parameters
        ----------
        X : object
            Not used.

        Raises
        ------
        TypeError
            Once fitted, always (``NotFittedError`` before): use
            :func:`msr_sklearn.scoring.task_scoring` to score tasks with scikit-learn's
            scorer names, and :meth:`make_estimator` to predict the rows of one task.
        """
        check_is_fitted(self, "model_")  # scikit-learn's order: NotFittedError first
        raise TypeError(NO_ROW_PREDICTIONS.format(name=type(self).__name__, method="predict"))

    def predict_proba(self, X):
        """Not available: raises a ``TypeError`` that says what to use instead.

        See :meth:`predict`.

        Parameters
        ----------
        X : object
            Not used.

        Raises
        ------
        TypeError
            Once fitted, always (``NotFittedError`` before).
        """
        check_is_fitted(self, "model_")
        raise TypeError(NO_ROW_PREDICTIONS.format(name=type(self).__name__,
                                                  method="predict_proba"))

    def symmetry_strength(self, X, y=None, groups=None):
        """How much of the adapted weights lies inside ``span(U)``, per layer, on tasks.

        Each task is adapted on its support split (the split of :meth:`evaluate`); for
        each layer, ``||P_U vec(W_t)||^2 / ||vec(W_t)||^2`` of the adapted weight
        ``W_t = reshape(U v_t) + R_t``, averaged over tasks: 1 is a strict symmetry,
        towards 0 none. Only ``"_residual"`` layers can leave ``span(U)``.

        Parameters
        ----------
        X : tasks in any form :meth:`fit` accepts
            Held-out tasks.
        y : None or array-like
            Their targets, as for :meth:`fit`.
        groups : array-like of shape (n_rows,) or None
            Task ids for long-format input.

        Returns
        -------
        pandas.DataFrame
            Indexed by ``layer`` (layers with a sharing): ``strength``, ``ci95``
            (Student-t half-width over tasks), ``residual_lr`` (the residual's learned
            inner rate), ``shared_breaking`` (``||R0||`` relative to the RMS norm of the
            tasks' own ``W_t - R0``) and ``n_tasks``; NaN rate and breaking for a layer
            without a residual.

        Examples
        --------
        >>> from msr_sklearn import MetaSymmetryLearner
        >>> from msr_sklearn.datasets import make_translation_tasks
        >>> X, y = make_translation_tasks(n_tasks=120, n_features=10, random_state=0)
        >>> learner = MetaSymmetryLearner(layer="msr_residual", n_filters=3, n_support=5,
        ...                               n_meta_steps=20, random_state=0).fit(X, y)
        >>> strength = learner.symmetry_strength(X[100:], y[100:])
        >>> list(strength.columns)
        ['strength', 'ci95', 'residual_lr', 'shared_breaking', 'n_tasks']
        >>> bool(0 < strength.loc[0, "strength"] < 1)
        True
        """
        _, batch, _ = self._scoring_split(X, y, groups)
        return symmetry_strength(self.model_, batch, self._inner_loop())

    def make_estimator(self, **params):
        """An unfitted per-task estimator bound to ``symmetry_``.

        Returns an :class:`EquivariantRegressor` or :class:`EquivariantClassifier`
        (by ``objective_``) with ``symmetry=self.symmetry_`` and ``params``.
        """
        check_is_fitted(self, "symmetry_")
        from ..estimators import EquivariantClassifier, EquivariantRegressor

        cls = EquivariantRegressor if self.objective_ == "regression" else EquivariantClassifier
        params.setdefault("device", self.device)
        return cls(symmetry=self.symmetry_, **params)
