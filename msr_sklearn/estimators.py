"""Per-task estimators: learn one task from a few examples with the sharing ``U`` frozen.

:class:`EquivariantRegressor` and :class:`EquivariantClassifier` are what a learned
symmetry is *for*. Bound to a :class:`~msr_sklearn.LearnedSymmetry` they build its
network (``vec(W) = U v`` per layer), start the filter values ``v`` and the biases at
their meta-learned initial values and take ``inner_steps`` full-batch SGD steps on
those inner parameters only, each tensor with its own meta-learned learning rate:
exactly the inner loop the symmetry was meta-trained with
(:func:`msr_sklearn.engine.adapt`), so ``fit`` then ``predict`` reproduces the
engine's adapted outputs. A soft symmetry (a ``"_residual"`` layer kind) also adapts
each layer's free residual ``R`` from its meta-learned ``R0``, at its own rate, and a
residual pull adds the same penalty ``exp(log_pull) ||R - R0||^2`` to the loss. With
``symmetry=None`` they are an ordinary, unconstrained network (identity ``U``) trained
from scratch: the no-symmetry baseline.

Training runs through a :class:`skorch.NeuralNet` (``net_``): devices, callbacks
and the training history come from skorch, while these classes own the
scikit-learn contract (input validation, ``n_features_in_``, ``classes_`` in the
user's labels, no internal validation split of a tiny support set, tags).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

from ._estimator_base import _COMMON_ATTRIBUTES, _COMMON_PARAMETERS, _EquivariantEstimator
from ._validation import fit_context

__all__ = ["EquivariantClassifier", "EquivariantRegressor"]


# ------------------------------------------------------------------------ regressor
class EquivariantRegressor(RegressorMixin, _EquivariantEstimator):
    __doc__ = f"""A regressor that learns a task by adapting filter values ``v`` with ``U`` frozen.

    ``fit`` takes ``inner_steps`` full-batch SGD steps on the mean squared error (over
    all output elements) with respect to the inner parameters only (filters ``v``,
    starting at the symmetry's ``v0``, and biases), each tensor at its own learning
    rate: the inner loop of MSR, so a bound regressor's predictions equal
    :func:`msr_sklearn.engine.adapted_outputs` for the same task.

    Parameters
    ----------
{_COMMON_PARAMETERS}
    Attributes
    ----------
    n_outputs_ : int
        Number of outputs of the network (the symmetry's ``n_outputs`` when bound).
{_COMMON_ATTRIBUTES}
    See Also
    --------
    EquivariantClassifier : The classifier counterpart.
    msr_sklearn.MetaSymmetryLearner : Meta-learns the symmetry across many tasks.

    Notes
    -----
    ``y`` may be 1-D (predictions are 1-D) or 2-D. A bound regressor needs exactly
    ``symmetry.n_outputs`` targets; with a single-output symmetry a column vector ``y``
    is raveled with a ``DataConversionWarning``, as scikit-learn's single-output
    regressors do.

    Examples
    --------
    Five examples of a translation-equivariant task. The convolution's sharing (three
    tied filter taps for 70x68 weights) learns it almost exactly; an unconstrained
    network cannot from so few examples:

    >>> import numpy as np
    >>> from msr_sklearn import LearnedSymmetry
    >>> from msr_sklearn.datasets import make_translation_tasks
    >>> from msr_sklearn.estimators import EquivariantRegressor
    >>> X, y = make_translation_tasks(n_tasks=1, n_samples=25, random_state=0)
    >>> X, y = X[0], y[0]                       # one task: 70 features, 68 outputs
    >>> from msr_sklearn.models import Conv1dLayer
    >>> conv = LearnedSymmetry.initial(Conv1dLayer, n_features=70, n_outputs=68,
    ...                                module__bias=False, inner_lr=0.5, inner_steps=20)
    >>> reg = EquivariantRegressor(symmetry=conv).fit(X[:5], y[:5])
    >>> bool(np.mean((reg.predict(X[5:]) - y[5:]) ** 2) < 1e-4)
    True
    >>> plain = EquivariantRegressor(random_state=0).fit(X[:5], y[:5])
    >>> bool(np.mean((plain.predict(X[5:]) - y[5:]) ** 2) > 1.0)
    True
    >>> {{n: tuple(p.shape) for n, p in reg.network_.inner_dict().items()}}  # 3 taps
    {{'conv.weight': (1, 1, 1, 3)}}
    """

    _objective = "regression"
    _parameter_constraints: dict = {**_EquivariantEstimator._parameter_constraints}

    @staticmethod
    def _output_curvature(n_outputs):
        # the mean over n_outputs of squared errors: Hessian 2 / n_outputs in the outputs
        return 2.0 / n_outputs

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        sym = self.symmetry
        # a bound regressor predicts exactly the symmetry's outputs
        tags.target_tags.multi_output = sym is None or sym.n_outputs > 1
        tags.target_tags.single_output = sym is None or sym.n_outputs == 1
        return tags

    @fit_context
    def fit(self, X, y, sample_weight=None):
        """Adapt the inner parameters to ``(X, y)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,) or None, default=None
            Non-negative row weights: the loss is ``sum_i w_i l_i / sum_i w_i`` (``l_i``
            the row's squared error, averaged over outputs), so an integer weight
            repeats a row and equal weights change nothing. Normalized by their sum,
            the gradient keeps the scale of the unweighted mean that a symmetry's inner
            learning rates were meta-learned for.

        Returns
        -------
        self : EquivariantRegressor
        """
        self._clear_fitted_state()
        X, y, sample_weight = self._validate_fit_data(X, y, sample_weight, multi_output=True,
                                                      y_numeric=True)
        self._check_symmetry(X)
        sym = self.symmetry
        if sym is not None and sym.n_outputs == 1 and y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)  # single-output: ravel, as sklearn regressors do
        y_1d = y.ndim == 1
        y2 = y.reshape(-1, 1) if y_1d else y
        n_outputs = y2.shape[1]
        if sym is not None and n_outputs != sym.n_outputs:
            raise ValueError(
                f"y has {n_outputs} output(s), but the symmetry of EquivariantRegressor was "
                f"meta-learned for {sym.n_outputs} outputs"
                + ("; pass y of shape (n_samples, n_outputs)" if y_1d else ""))
        self._fit_network(X, y2.astype(np.float32), n_outputs, sample_weight=sample_weight)
        self.n_outputs_ = n_outputs
        self._y_1d_ = y_1d
        return self

    def predict(self, X):
        """Predict with the adapted network.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            1-D when ``fit`` was given a 1-D ``y``.
        """
        out = self._outputs(X).numpy()
        return out[:, 0] if self._y_1d_ else out


# ----------------------------------------------------------------------- classifier
class EquivariantClassifier(ClassifierMixin, _EquivariantEstimator):
    __doc__ = f"""A classifier that learns a task by adapting filter values ``v`` with ``U`` frozen.

    ``fit`` takes ``inner_steps`` full-batch SGD steps on the cross-entropy with
    respect to the inner parameters only (filters ``v``, starting at the symmetry's
    ``v0``, and biases), each tensor at its own learning rate: the inner loop of MSR.
    Labels may be any sortable values (strings, ints...): the ``C`` classes are
    encoded ``0..C-1`` in sorted order, as the meta-learner encodes each task, and a
    bound classifier uses the first ``C`` of its symmetry's ``N`` logits (``C <= N``).

    Parameters
    ----------
{_COMMON_PARAMETERS}
    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels, sorted, in the user's own values.
{_COMMON_ATTRIBUTES}
    See Also
    --------
    EquivariantRegressor : The regressor counterpart.
    msr_sklearn.MetaSymmetryLearner : Meta-learns the symmetry across many tasks.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import make_blobs
    >>> from sklearn.preprocessing import StandardScaler
    >>> from msr_sklearn import LearnedSymmetry
    >>> from msr_sklearn.estimators import EquivariantClassifier
    >>> X, y = make_blobs(n_samples=60, centers=3, random_state=0)
    >>> X = StandardScaler().fit_transform(X)
    >>> labels = np.array(["cat", "dog", "owl"])[y]
    >>> clf = EquivariantClassifier(random_state=0).fit(X, labels)
    >>> clf.classes_
    array(['cat', 'dog', 'owl'], dtype='<U3')
    >>> clf.predict(X[:4])
    array(['dog', 'cat', 'cat', 'cat'], dtype='<U3')
    >>> bool(clf.score(X, labels) > 0.85)
    True

    Bound to a 5-way symmetry, a 3-class task uses the first 3 logits:

    >>> sym = LearnedSymmetry.initial(objective="classification", n_features=2,
    ...                               n_outputs=5, n_filters=10, inner_lr=0.5,
    ...                               inner_steps=50, random_state=0)
    >>> bound = EquivariantClassifier(sym).fit(X, labels)
    >>> bound.predict_proba(X[:2]).shape
    (2, 3)
    """

    _objective = "classification"
    _parameter_constraints: dict = {**_EquivariantEstimator._parameter_constraints}

    @staticmethod
    def _output_curvature(n_outputs):
        # the softmax cross-entropy's Hessian in the logits is at most 1/2
        return 0.5

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # a bound classifier handles at most as many classes as the symmetry has logits
        tags.classifier_tags.multi_class = self.symmetry is None or self.symmetry.n_outputs > 2
        return tags

    @fit_context
    def fit(self, X, y, sample_weight=None):
        """Adapt the inner parameters to ``(X, y)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Class labels: at least 2 classes, at most the symmetry's ``n_outputs``.
        sample_weight : array-like of shape (n_samples,) or None, default=None
            Non-negative row weights: the loss is the weighted mean cross-entropy
            ``sum_i w_i l_i / sum_i w_i``, so an integer weight repeats a row and equal
            weights change nothing (see :meth:`EquivariantRegressor.fit`). Every class
            of ``y`` counts, whatever its weights.

        Returns
        -------
        self : EquivariantClassifier
        """
        self._clear_fitted_state()
        X, y, sample_weight = self._validate_fit_data(X, y, sample_weight)
        check_classification_targets(y)
        classes, y_encoded = np.unique(y, return_inverse=True)
        name = type(self).__name__
        if len(classes) < 2:
            raise ValueError(f"{name} needs samples of at least 2 classes; y holds 1 class "
                             f"({classes[0]!r})")
        self._check_symmetry(X)
        sym = self.symmetry
        if sym is not None and len(classes) > sym.n_outputs:
            raise ValueError(
                f"y has {len(classes)} classes, but the symmetry of {name} was meta-learned "
                f"for {sym.n_outputs}-way tasks (at most {sym.n_outputs} classes)")
        n_outputs = len(classes) if sym is None else sym.n_outputs
        self._fit_network(X, y_encoded.astype(np.int64), n_outputs, n_classes=len(classes),
                          sample_weight=sample_weight)
        self.classes_ = classes
        return self

    def _logits(self, X):
        return self._outputs(X)[:, : len(self.classes_)]

    def decision_function(self, X):
        """The logits of the first ``n_classes`` outputs, as scikit-learn shapes scores.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Columns in the order of ``classes_``. Two classes: one column, the logit of
            ``classes_[1]`` minus that of ``classes_[0]`` (positive: ``classes_[1]``).
        """
        logits = self._logits(X).numpy()
        return logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits

    def predict_proba(self, X):
        """Class probabilities: the softmax of the first ``n_classes`` logits.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Columns in the order of ``classes_``.
        """
        return torch.softmax(self._logits(X), dim=-1).numpy()

    def predict_log_proba(self, X):
        """Log class probabilities: the log-softmax of the first ``n_classes`` logits.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
            Columns in the order of ``classes_``; finite where ``predict_proba`` rounds
            to 0.
        """
        return torch.log_softmax(self._logits(X), dim=-1).numpy()

    def predict(self, X):
        """Predict class labels (the most probable class, in the user's labels).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
