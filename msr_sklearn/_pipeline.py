"""The per-task counterpart of a fitted pipeline that ends in a meta-learner."""

from __future__ import annotations

import copy

from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

__all__ = ["make_task_pipeline"]


def make_task_pipeline(pipeline, **params):
    """A per-task pipeline: the fitted preprocessing, frozen, then a per-task estimator.

    A ``Pipeline(preprocessing..., MetaSymmetryLearner)`` fitted on long-format tasks
    learns its preprocessing (e.g. a ``StandardScaler``'s means) on the meta-training
    rows, and the learner's symmetry expects inputs transformed that way. The per-task
    estimator of :meth:`~msr_sklearn.MetaSymmetryLearner.make_estimator` alone would
    see raw features. This returns ``Pipeline(FrozenEstimator(step)..., estimator)``:
    the preprocessing steps keep their meta-training fit (``fit`` leaves them as they
    are; each is a copy, so refitting ``pipeline`` later changes nothing here), and
    fitting the pipeline on one task's support rows adapts only the estimator.

    Parameters
    ----------
    pipeline : sklearn.pipeline.Pipeline
        A fitted pipeline whose last step is a fitted
        :class:`~msr_sklearn.MetaSymmetryLearner` (or a pipeline ending in one).
    **params
        Parameters of the per-task estimator, as for ``make_estimator`` (e.g.
        ``inner_steps=5``).

    Returns
    -------
    sklearn.pipeline.Pipeline
        Unfitted in its last step, with the step names of ``pipeline``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from msr_sklearn import MetaSymmetryLearner, make_task_pipeline
    >>> from msr_sklearn.datasets import make_translation_tasks
    >>> X3, y3 = make_translation_tasks(n_tasks=40, n_samples=8, n_features=8,
    ...                                 random_state=0)
    >>> X, y = 10 + 3 * X3.reshape(320, 8), y3.reshape(320, -1)  # raw, unscaled features
    >>> groups = np.repeat(np.arange(40), 8)
    >>> pipe = make_pipeline(StandardScaler(), MetaSymmetryLearner(
    ...     n_filters=3, n_support=3, n_meta_steps=20, random_state=0))
    >>> pipe = pipe.fit(X[:280], y[:280], metasymmetrylearner__groups=groups[:280])
    >>> task = make_task_pipeline(pipe)                # the scaler of meta-training, frozen
    >>> [name for name, _ in task.steps]
    ['standardscaler', 'metasymmetrylearner']
    >>> task = task.fit(X[280:283], y[280:283])        # a new task's 3 support rows
    >>> task.predict(X[283:288]).shape
    (5, 6)
    """
    if not isinstance(pipeline, Pipeline):
        raise TypeError("make_task_pipeline takes a fitted sklearn Pipeline that ends in a "
                        f"MetaSymmetryLearner; got {type(pipeline).__name__} (for a learner "
                        "alone, use learner.make_estimator())")
    *front, (name, last) = pipeline.steps
    if isinstance(last, Pipeline):
        estimator = make_task_pipeline(last, **params)
    elif hasattr(last, "make_estimator"):
        estimator = last.make_estimator(**params)
    else:
        raise TypeError(f"the last step of the pipeline, {name!r}, is a "
                        f"{type(last).__name__}; make_task_pipeline needs a "
                        "MetaSymmetryLearner there")
    steps = []
    for step_name, step in front:
        if step is None or (isinstance(step, str) and step == "passthrough"):
            steps.append((step_name, step))
            continue
        check_is_fitted(step)
        steps.append((step_name, FrozenEstimator(copy.deepcopy(step))))
    return Pipeline(steps + [(name, estimator)])
