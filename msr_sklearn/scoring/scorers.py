"""scikit-learn's scorer names for a meta-learner: task-level scorers.

scikit-learn turns ``scoring="accuracy"`` into a scorer that calls ``estimator.predict(X)``
and compares the result with ``y``. A meta-learner cannot answer that: ``X`` is a set of
tasks (``y`` is ``None`` for a list of tasks), and the predictions for a task's rows need
that task's support rows. The scorers here take the same names and compute what they
mean for tasks: each task is adapted on its support split and scored on its query rows
(:meth:`~msr_sklearn.MetaSymmetryLearner.evaluate`, one seeded split), and the score is
the mean over tasks, sign-flipped for ``neg_*`` names so that greater is better.
"""

from __future__ import annotations

import sys

import numpy as np
from sklearn import get_config
from sklearn.pipeline import Pipeline
from sklearn.utils.metadata_routing import MetadataRequest

from .metrics import task_mean
from .mixin import NO_ROW_PREDICTIONS

__all__ = ["TaskScorer", "check_search_scorer", "get_task_scorer_names", "make_task_scorer",
           "task_scoring"]

#: scikit-learn's scorer name -> (``evaluate``'s metric, sign, objective)
TASK_SCORERS = {
    "r2": ("r2", 1.0, "regression"),
    "explained_variance": ("explained_variance", 1.0, "regression"),
    "neg_mean_squared_error": ("mse", -1.0, "regression"),
    "neg_root_mean_squared_error": ("rmse", -1.0, "regression"),
    "neg_mean_absolute_error": ("mae", -1.0, "regression"),
    "accuracy": ("accuracy", 1.0, "classification"),
    "balanced_accuracy": ("balanced_accuracy", 1.0, "classification"),
    "neg_log_loss": ("log_loss", -1.0, "classification"),
    "roc_auc": ("roc_auc", 1.0, "classification"),
}
_UNSET = object()


def get_task_scorer_names():
    """The scikit-learn scorer names that task scorers accept.

    Returns
    -------
    list of str
        Sorted: regression ``r2``, ``explained_variance``, ``neg_mean_squared_error``,
        ``neg_root_mean_squared_error``, ``neg_mean_absolute_error``; classification
        ``accuracy``, ``balanced_accuracy``, ``neg_log_loss`` and ``roc_auc`` (binary
        tasks).

    Examples
    --------
    >>> from msr_sklearn.scoring import get_task_scorer_names
    >>> "neg_log_loss" in get_task_scorer_names()
    True
    """
    return sorted(TASK_SCORERS)


class TaskScorer:
    """A scorer of fitted meta-learners on tasks, for ``scoring=`` of scikit-learn.

    Build it with :func:`make_task_scorer` (one name: returns a float) or
    :func:`task_scoring` (several: returns a dict). Called as scikit-learn calls a
    scorer, ``scorer(estimator, X, y=None, groups=None, sample_weight=None)``, it adapts
    each task once on its support split (``evaluate``'s seeded split) and computes every
    metric from those adapted outputs. ``estimator`` is a fitted
    :class:`~msr_sklearn.MetaSymmetryLearner` or a ``Pipeline`` ending in one (its
    other steps transform ``X`` first), or a fitted search over either.

    Under metadata routing the scorer requests ``groups`` (the task ids of long-format
    rows), so ``cross_validate`` and the searches pass them on;
    ``set_score_request(sample_weight=True)`` requests the rows' weights too (as for
    scikit-learn's scorers, not by default). Without routing it scores what it is
    given: a list of tasks or 3-D arrays.

    Parameters
    ----------
    scoring : dict of str to str
        Result key -> scikit-learn scorer name (:func:`get_task_scorer_names`), all of
        one objective.
    single : bool, default=False
        Return the one value as a float instead of a dict.

    Examples
    --------
    >>> from msr_sklearn.scoring import TaskScorer
    >>> TaskScorer({"acc": "accuracy", "nll": "neg_log_loss"})
    task_scoring({'acc': 'accuracy', 'nll': 'neg_log_loss'})
    """

    def __init__(self, scoring, single=False):
        names = list(scoring.values())
        unknown = [n for n in names if n not in TASK_SCORERS]
        if unknown:
            raise ValueError(
                f"{unknown} {'is not a' if len(unknown) == 1 else 'are not'} task scorer "
                f"name{'s' if len(unknown) > 1 else ''}: a meta-learner's task scorers take "
                f"{get_task_scorer_names()} (scikit-learn's names of the metrics that "
                "evaluate computes per task on its query rows)")
        objectives = {TASK_SCORERS[n][2] for n in names}
        if len(objectives) > 1:
            raise ValueError(
                f"the scorers {names} mix regression and classification metrics; a "
                "learner fits one objective: "
                + "; ".join(f"{o}: {[n for n in names if TASK_SCORERS[n][2] == o]}"
                            for o in sorted(objectives)))
        if single and len(names) != 1:
            raise ValueError("a single-metric scorer takes exactly one name")
        self.scoring = dict(scoring)
        self.single = single
        self.objective = objectives.pop() if objectives else None
        self._request = {"groups": True, "sample_weight": None}

    def __repr__(self):
        if self.single:
            return f"make_task_scorer({next(iter(self.scoring.values()))!r})"
        return f"task_scoring({self.scoring!r})"

    # --------------------------------------------------------------- metadata routing
    def get_metadata_routing(self):
        """The metadata the scorer requests: ``groups`` (and ``sample_weight`` once set).

        Returns
        -------
        sklearn.utils.metadata_routing.MetadataRequest
        """
        request = MetadataRequest(owner=self)
        for param, alias in self._request.items():
            request.score.add_request(param=param, alias=alias)
        return request

    def set_score_request(self, *, groups=_UNSET, sample_weight=_UNSET):
        """Request (``True``), refuse (``False``) or alias metadata for scoring.

        Only with metadata routing enabled, as scikit-learn's scorers.

        Parameters
        ----------
        groups : bool, str or None, default=unchanged
            The task ids of long-format rows (requested by default).
        sample_weight : bool, str or None, default=unchanged
            The rows' weights (see :meth:`~msr_sklearn.MetaSymmetryLearner.evaluate`).

        Returns
        -------
        self : TaskScorer
        """
        if not get_config()["enable_metadata_routing"]:
            raise RuntimeError("This method is only available when metadata routing is "
                               "enabled. You can enable it using "
                               "sklearn.set_config(enable_metadata_routing=True).")
        for param, alias in (("groups", groups), ("sample_weight", sample_weight)):
            if alias is not _UNSET:
                self._request[param] = alias
        return self

    # ------------------------------------------------------------------------ scoring
    def __call__(self, estimator, X, y=None, groups=None, sample_weight=None):
        """Score ``estimator`` on the tasks ``X`` (``y``, ``groups`` as for its ``fit``).

        Parameters
        ----------
        estimator : fitted MetaSymmetryLearner, Pipeline ending in one, or search
            What to score.
        X : tasks in any form the learner accepts
            The tasks to score.
        y : array-like or None, default=None
            Their targets, for 3-D or long-format ``X``.
        groups : array-like of shape (n_rows,) or None, default=None
            Task ids of long-format rows.
        sample_weight : array-like or None, default=None
            Row weights, as :meth:`~msr_sklearn.MetaSymmetryLearner.evaluate` takes them.

        Returns
        -------
        float or dict of str to float
            Each metric's mean over tasks, weighted as ``score`` weighs tasks; negated
            for ``neg_*`` names.
        """
        learner, X = _final_learner(estimator, X)
        if learner.objective_ != self.objective:
            raise ValueError(
                f"{sorted(set(self.scoring.values()))} score {self.objective} tasks, but the "
                f"{type(learner).__name__} was fitted for {learner.objective_} "
                f"(objective_={learner.objective_!r}); its task scorers: "
                f"{[n for n, s in TASK_SCORERS.items() if s[2] == learner.objective_]}")
        metrics = list(dict.fromkeys(TASK_SCORERS[n][0] for n in self.scoring.values()))
        per_task = learner.evaluate(X, y, groups=groups, sample_weight=sample_weight,
                                    metrics=metrics)
        bad = ~np.isfinite(per_task[metrics].to_numpy(dtype=float)).all(1)
        if bad.any():
            raise ValueError(
                f"{int(bad.sum())} of {len(bad)} tasks have non-finite "
                f"{metrics} after adaptation (task {int(np.argmax(bad))} first): the adapted "
                "outputs are not finite, e.g. because meta-training diverged (see the "
                "learner's history_); lower meta_lr or inner_lr, or standardize the data")
        scores = {key: TASK_SCORERS[name][1] * task_mean(per_task, TASK_SCORERS[name][0])
                  for key, name in self.scoring.items()}
        return next(iter(scores.values())) if self.single else scores


def _final_learner(estimator, X):
    """The meta-learner that ``estimator`` ends in, and ``X`` transformed to reach it."""
    while True:
        if isinstance(estimator, Pipeline):
            if len(estimator) > 1:
                X = estimator[:-1].transform(X)
            estimator = estimator[-1]
        elif hasattr(estimator, "best_estimator_"):  # a fitted search
            estimator = estimator.best_estimator_
        else:
            break
    if not hasattr(estimator, "evaluate"):
        raise TypeError(
            "task scorers score a fitted MetaSymmetryLearner, a Pipeline ending in one or "
            f"a search over either; got {type(estimator).__name__}, which has no evaluate "
            "(use scikit-learn's own scorer names for per-task estimators)")
    return estimator, X


def _row_scorers(scorer):
    """The names of scikit-learn scorers in ``scorer`` that call ``predict`` (or
    ``predict_proba``, ``decision_function``) on rows: they cannot score a learner."""
    try:  # private in scikit-learn: without them, no early refusal (the NaN path stays)
        from sklearn.metrics._scorer import _BaseScorer, _MultimetricScorer
    except ImportError:  # pragma: no cover
        return []
    if isinstance(scorer, _MultimetricScorer):
        scorer = scorer._scorers
    if not isinstance(scorer, dict):  # one scorer: named by its metric
        scorer = {getattr(getattr(scorer, "_score_func", None), "__name__", "score"): scorer}
    return [name for name, one in scorer.items() if isinstance(one, _BaseScorer)]


def check_search_scorer(learner):
    """Refuse, when a fit starts inside ``cross_validate``, a search or a learning
    curve, scikit-learn's own scorers (``scoring="accuracy"``, lists, dicts).

    They call ``predict`` on the learner, which has none for rows; scikit-learn would
    catch that error at every split, report NaN scores and still choose a "best"
    candidate. Raised at the start of each fit instead, the error costs no training,
    and when every fit fails scikit-learn raises it with this message. A user's own
    callable and ``scoring=None`` (the learner's ``score``) are not judged.
    """
    frame = sys._getframe(1)
    while frame is not None:
        if (frame.f_code.co_name == "_fit_and_score"
                and frame.f_globals.get("__name__") == "sklearn.model_selection._validation"):
            estimator = frame.f_locals.get("estimator")
            while isinstance(estimator, Pipeline):
                estimator = estimator[-1]
            names = _row_scorers(frame.f_locals.get("scorer"))
            if estimator is learner and names:
                raise TypeError(f"scorer(s) {names}: " + NO_ROW_PREDICTIONS.format(
                    name=type(learner).__name__, method="predict"))
            return
        frame = frame.f_back


def make_task_scorer(name):
    """A task-level scorer for one scikit-learn scorer name.

    Parameters
    ----------
    name : str
        One of :func:`get_task_scorer_names`, e.g. ``"accuracy"`` or
        ``"neg_mean_squared_error"``. Anything else is a ``ValueError`` here, before any
        fit.

    Returns
    -------
    TaskScorer
        A callable that returns one float: the mean over tasks of the metric on their
        query rows after adaptation (negated for ``neg_*``), equal to
        ``learner.evaluate(X, metrics=[...])``'s column mean.

    Examples
    --------
    >>> from sklearn.model_selection import cross_val_score
    >>> from msr_sklearn import MetaSymmetryLearner
    >>> from msr_sklearn.datasets import make_translation_tasks
    >>> from msr_sklearn.scoring import make_task_scorer
    >>> X, y = make_translation_tasks(n_tasks=30, n_samples=6, n_features=6,
    ...                               random_state=0)
    >>> tasks = [(X[t], y[t]) for t in range(30)]
    >>> learner = MetaSymmetryLearner(n_filters=2, n_support=2, n_meta_steps=5,
    ...                               random_state=0)
    >>> scores = cross_val_score(learner, tasks, cv=3,
    ...                          scoring=make_task_scorer("neg_mean_squared_error"))
    >>> bool((scores < 0).all())
    True
    """
    if not isinstance(name, str):
        raise TypeError(f"make_task_scorer takes one scorer name; got {type(name).__name__} "
                        "(for several, use task_scoring)")
    return TaskScorer({name: name}, single=True)


def task_scoring(scoring):
    """What ``scoring=`` of ``cross_validate`` and the searches takes, for a meta-learner.

    One callable that adapts each task once and returns every requested metric, so
    several metrics cost one adaptation; with several, ``refit=`` of a search names
    the one to select by.

    Parameters
    ----------
    scoring : str, list of str or dict of str to str
        scikit-learn scorer names (:func:`get_task_scorer_names`): one name (the
        scorer returns a float, as :func:`make_task_scorer`), a list (results keyed by
        the names), or a dict ``{key: name}`` (keyed by ``key``). Unknown names, and
        regression and classification names mixed, are a ``ValueError`` here.

    Returns
    -------
    TaskScorer

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.model_selection import cross_validate
    >>> from msr_sklearn import MetaSymmetryLearner
    >>> from msr_sklearn.datasets import make_translation_tasks
    >>> from msr_sklearn.scoring import task_scoring
    >>> X, y = make_translation_tasks(n_tasks=30, n_samples=6, n_features=6,
    ...                               random_state=0)
    >>> tasks = [(X[t], y[t]) for t in range(30)]
    >>> learner = MetaSymmetryLearner(n_filters=2, n_support=2, n_meta_steps=5,
    ...                               random_state=0)
    >>> result = cross_validate(learner, tasks, cv=3,
    ...                         scoring=task_scoring(["r2", "neg_mean_squared_error"]))
    >>> sorted(k for k in result if k.startswith("test_"))
    ['test_neg_mean_squared_error', 'test_r2']
    >>> bool(np.isfinite(result["test_r2"]).all())
    True
    """
    if isinstance(scoring, str):
        return make_task_scorer(scoring)
    if isinstance(scoring, dict):
        if not scoring:
            raise ValueError("scoring is empty; name at least one metric")
        return TaskScorer(scoring)
    if isinstance(scoring, (list, tuple, set, frozenset)):
        names = sorted(scoring) if isinstance(scoring, (set, frozenset)) else list(scoring)
        if not names:
            raise ValueError("scoring is empty; name at least one metric")
        if len(set(names)) != len(names):
            raise ValueError(f"scoring lists a name twice: {names}")
        return TaskScorer({n: n for n in names})
    raise TypeError("scoring must be a scorer name, a list of names or a dict of key -> "
                    f"name; got {type(scoring).__name__}")
