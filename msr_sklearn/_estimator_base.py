"""The machinery the per-task estimators share: the network they adapt, input checks
against the symmetry, the default inner rate, skorch training and the outputs.

:mod:`msr_sklearn.estimators` adds the target handling of a regressor and a classifier.
"""

from __future__ import annotations

import copy
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from skorch.dataset import Dataset
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from ._adaptation import _AdaptationNet, _InOrderBatches, _TaskNetwork, adapted_module_outputs
from ._curvature import gauss_newton_top_eigenvalue, gram_top_eigenvalue
from ._validation import Interval, StrOptions, check_device, check_sample_weight
from .engine import InnerLoop, MetaModel
from .models import ACTIVATIONS, MLP
from .symmetry import LearnedSymmetry

#: inner SGD steps when ``symmetry=None`` and ``inner_steps=None``
DEFAULT_INNER_STEPS = 100


def _seed(random_state):
    """An int seed from ``random_state`` (fresh entropy for None)."""
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1)[0])
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


# ----------------------------------------------------------------------- base class
class _EquivariantEstimator(BaseEstimator):
    """Shared machinery; the public classes add the target handling."""

    #: the LearnedSymmetry objective this estimator accepts
    _objective = None

    _parameter_constraints: dict = {
        "symmetry": [LearnedSymmetry, None],
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "inner_steps": [Interval(Integral, 0, None, closed="left"), None],
        "inner_lr": [Interval(Real, 0, None, closed="neither"), None],
        "device": [str, torch.device],
        "random_state": ["random_state"],
        "callbacks": [list, tuple, None],
        "verbose": ["verbose"],
    }

    def __init__(self, symmetry=None, *, hidden_layer_sizes=(), activation="relu",
                 inner_steps=None, inner_lr=None, device="cpu", random_state=None,
                 callbacks=None, verbose=0):
        self.symmetry = symmetry
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.inner_steps = inner_steps
        self.inner_lr = inner_lr
        self.device = device
        self.random_state = random_state
        self.callbacks = callbacks
        self.verbose = verbose

    # ------------------------------------------------------------------ fitted state
    def __sklearn_is_fitted__(self):
        return hasattr(self, "net_")

    @property
    def network_(self):
        """The adapted network: a :class:`~msr_sklearn.engine.MetaModel` at this task's
        inner tensors (``net_.module_.model`` with ``net_.module_.inner``).

        A view rather than a copy, so it stays the trained module after pickling.
        """
        return self.net_.module_

    def _clear_fitted_state(self):
        # a refit that fails validation must not leave the previous fit half-visible
        for name in [k for k in vars(self) if k.endswith("_") and not k.startswith("__")]:
            delattr(self, name)

    # ---------------------------------------------------------------- shared checks
    def _check_symmetry(self, X):
        sym = self.symmetry
        if sym is None:
            return
        name = type(self).__name__
        if sym.objective != self._objective:
            other = "EquivariantRegressor" if sym.objective == "regression" else \
                "EquivariantClassifier"
            raise ValueError(
                f"the symmetry was meta-learned for {sym.objective}; {name} needs one "
                f"meta-learned for {self._objective} (use {other} with this symmetry)")
        if tuple(X.shape[1:]) != sym.input_shape:
            if len(sym.input_shape) == 1:
                raise ValueError(
                    f"X has {X.shape[1]} feature(s), but the symmetry of {name} was "
                    f"meta-learned for {sym.n_features} features; a learned sharing fixes the "
                    f"input size, so X must have {sym.n_features} features")
            raise ValueError(f"X has samples of shape {tuple(X.shape[1:])}, but the symmetry "
                             f"of {name} was meta-learned on samples of shape "
                             f"{sym.input_shape}")
        self._check_feature_names_of_symmetry()

    def _check_feature_names_of_symmetry(self):
        """X's column names against the symmetry's, as scikit-learn checks a refit's.

        A learned sharing ties weights by column position, so reordered or other columns
        silently break it: different names (or order) are a ``ValueError``, and ``X``
        without names a ``UserWarning`` (its columns are taken to be in the symmetry's
        order). A symmetry without names (meta-learned on arrays, or saved before names
        were kept) checks nothing.
        """
        expected = getattr(self.symmetry, "feature_names", None)
        if expected is None:
            return
        name = type(self).__name__
        seen = getattr(self, "feature_names_in_", None)
        if seen is None:
            warnings.warn(
                f"X does not have valid feature names, but the symmetry of {name} was "
                "meta-learned with feature names; X's columns are taken to be in the order "
                "of symmetry.feature_names", UserWarning, stacklevel=4)
            return
        expected, seen = [str(f) for f in expected], [str(f) for f in seen]
        if seen == expected:
            return
        unseen = [f for f in seen if f not in expected]
        missing = [f for f in expected if f not in seen]
        details = "".join([f"\nFeature names unseen at meta-training:\n- {', '.join(unseen)}"
                           if unseen else "",
                           f"\nFeature names seen at meta-training, yet now missing:\n- "
                           f"{', '.join(missing)}" if missing else ""])
        raise ValueError(
            f"The feature names of X should match those the symmetry of {name} was "
            "meta-learned with (symmetry.feature_names), in the same order: a learned "
            "sharing ties weights by column position." + (details or
            "\nThe same names in another order; reorder the columns: "
            "X[list(symmetry.feature_names)]"))

    def _hidden_sizes(self):
        sizes = np.ravel(np.asarray(self.hidden_layer_sizes, dtype=object))
        if not all(isinstance(h, (Integral, np.integer)) and not isinstance(h, bool) and h >= 1
                   for h in sizes):
            raise ValueError("hidden_layer_sizes must hold positive integers; got "
                             f"{self.hidden_layer_sizes!r}")
        return tuple(int(h) for h in sizes)

    #: the top eigenvalue of the loss's Hessian in the outputs, per row, times n_outputs
    #: for the squared error (filled in by the subclasses)
    _output_curvature = None

    def _default_lr(self, X, n_outputs, network, sample_weight=None):
        """``1 / L``, ``L`` the largest curvature of the loss at the initial weights.

        ``L = c * lambda_max(J^T D J)``: ``J`` the Jacobian of the outputs in the inner
        parameters, ``D`` the rows' weights in the mean loss, ``c`` the loss's curvature
        in the outputs (``2 / n_outputs`` squared error, ``1 / 2`` cross-entropy). For one
        layer ``J^T D J`` is the Gram matrix of ``[X, 1]`` (exact, closed form); with
        hidden layers its Gauss-Newton eigenvalue at the initial weights (power
        iteration).
        """
        c = self._output_curvature(n_outputs)
        if not self._hidden_sizes():
            return 1.0 / (c * gram_top_eigenvalue(X, sample_weight))
        params = dict(network.named_parameters())
        return 1.0 / (c * gauss_newton_top_eigenvalue(network, X, params, sample_weight))

    def _make_model(self, X, n_outputs, sample_weight=None):
        """The untrained MetaModel, the inner steps and each inner tensor's learning rate.

        Bound to a symmetry: its network under its policy, its learned rates (or
        ``inner_lr`` for every tensor). Without one: an :class:`~msr_sklearn.models.MLP`
        of ``hidden_layer_sizes`` adapted as is (every parameter inner).
        """
        sym = self.symmetry
        if sym is not None:
            model = sym.build_model()
            inner_steps = sym.inner_steps if self.inner_steps is None else self.inner_steps
            lrs = {n: sym.inner_lrs[n] for n in model.inner_names}
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_seed(self.random_state))
                module = MLP(X.shape[1], n_outputs, self._hidden_sizes(), self.activation)
            lr = (self._default_lr(X, n_outputs, module, sample_weight)
                  if self.inner_lr is None else self.inner_lr)
            model = MetaModel(module, inner_lr=lr)
            inner_steps = DEFAULT_INNER_STEPS if self.inner_steps is None else self.inner_steps
            lrs = dict.fromkeys(model.inner_names, lr)
        if self.inner_lr is not None:
            lrs = dict.fromkeys(model.inner_names, self.inner_lr)
        return model, int(inner_steps), {n: float(v) for n, v in lrs.items()}

    def _fit_network(self, X, y, n_outputs, n_classes=None, sample_weight=None):
        """Adapt the inner tensors on ``(X, y)`` through skorch: the engine's inner loop
        (:func:`~msr_sklearn.engine.inner_objective`, :func:`~msr_sklearn.engine.inner_update`)
        for one task, so the adapted outputs equal :func:`~msr_sklearn.engine.adapted_outputs`.

        With ``sample_weight`` the loss is the weighted mean of the rows' losses.
        """
        device = check_device(self.device)
        model, inner_steps, lrs = self._make_model(X, n_outputs, sample_weight)
        loss = "mse" if n_classes is None else "cross_entropy"
        net = _AdaptationNet(
            module=_TaskNetwork(model.to(device)),
            criterion=nn.Identity,  # the loss is get_loss's: the engine's inner objective
            optimizer=torch.optim.SGD,  # replaced by the engine's update (initialize_optimizer)
            max_epochs=inner_steps,
            batch_size=-1,
            train_split=None,
            iterator_train=_InOrderBatches,
            iterator_valid=_InOrderBatches,
            # copies: fitting must not change the estimator's own parameters
            callbacks=None if self.callbacks is None else copy.deepcopy(list(self.callbacks)),
            # PrintLog only formats tables that verbose=0 never prints
            **({} if self.verbose else {"callbacks__print_log": None}),
            verbose=int(self.verbose),
            device=str(device),
            inner_loop=InnerLoop(loss=loss, steps=max(1, inner_steps)),
            inner_lrs=list(lrs.values()),
            n_classes=n_classes,
        )
        X_t = torch.tensor(X, dtype=torch.float32, device=device)
        y_t = torch.tensor(y, device=device)
        if sample_weight is not None:
            X_t = {"X": X_t, "sample_weight": torch.tensor(sample_weight, dtype=torch.float32,
                                                           device=device)}
        if inner_steps:
            net.fit(Dataset(X_t, y_t), y=None)
        else:  # predict with the initial values
            net.initialize()
        net.module_.eval()
        if not all(torch.isfinite(p).all() for p in net.module_.inner):
            warnings.warn(
                f"{type(self).__name__}: adaptation diverged (non-finite parameters after "
                f"{inner_steps} SGD steps); lower inner_lr or standardize the features "
                "(e.g. StandardScaler in a Pipeline)", ConvergenceWarning, stacklevel=4)
        self.net_ = net
        self.inner_lrs_ = lrs

    @property
    def _images(self):
        """Whether samples are images ``(C, H, W)`` (a symmetry learned on images)."""
        return self.symmetry is not None and len(self.symmetry.input_shape) > 1

    def _validate_fit_data(self, X, y, sample_weight, **check_params):
        """``X, y, sample_weight`` checked for fit: float32, C-contiguous (a torch
        tensor cannot view negative strides), ``sample_weight`` ``None`` when all equal
        (then the unweighted mean loss, exactly)."""
        X, y = validate_data(self, X, y, dtype=np.float32, order="C", allow_nd=self._images,
                             **check_params)
        sample_weight = check_sample_weight(sample_weight, X, dtype=np.float32)
        if sample_weight is not None and np.all(sample_weight == sample_weight[0]):
            sample_weight = None
        return X, y, sample_weight

    def _outputs(self, X):
        """Network outputs for new ``X`` (checked against fit), as a float64 CPU tensor."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, order="C", reset=False,
                          allow_nd=self._images)
        if self._images:
            self._check_symmetry(X)
        out = adapted_module_outputs(self.net_.module_, X)
        if not torch.isfinite(out).all():
            diverged = not all(torch.isfinite(p).all() for p in self.net_.module_.inner)
            raise ValueError(
                f"{type(self).__name__} has non-finite outputs: " + (
                    "its adaptation diverged in fit (see the ConvergenceWarning of fit); "
                    "refit with a lower inner_lr, or standardize the features and, for "
                    "regression, the targets (StandardScaler in a Pipeline, "
                    "TransformedTargetRegressor)" if diverged else
                    "X holds values too large for float32 arithmetic; scale the features"))
        return out.to("cpu", torch.float64)


_COMMON_PARAMETERS = """\
    symmetry : LearnedSymmetry or None, default=None
        The meta-learned sharing to adapt within. ``None``: an ordinary unconstrained
        network (identity ``U``, ``layer="dense"``) trained from scratch, built from
        ``hidden_layer_sizes`` and ``activation``.
    hidden_layer_sizes : tuple of int, default=()
        Hidden widths of the from-scratch network (``()``: a single linear layer).
        Ignored when ``symmetry`` is given: the symmetry fixes the architecture.
    activation : {"relu", "tanh", "logistic", "identity"}, default="relu"
        Activation of the from-scratch network; ignored when ``symmetry`` is given.
    inner_steps : int >= 0 or None, default=None
        Full-batch SGD steps on the inner parameters. ``None``: the symmetry's
        ``inner_steps`` (what it was meta-trained with), or 100 without a symmetry: at
        the default rate ``1 / L`` (see ``inner_lr``) 100 steps shrink a linear model's
        error along every direction of curvature at least ``L / 20`` by
        ``0.95**100 < 1%``, and a few-shot fit still takes only tens of milliseconds.
        ``0`` predicts with the initial parameters (a symmetry's ``v0``).
    inner_lr : float > 0 or None, default=None
        SGD learning rate of every inner tensor. ``None``: the symmetry's meta-learned
        rate per tensor (``symmetry.inner_lrs``). Without a symmetry, ``1 / L`` where
        ``L`` is the largest curvature of the loss at the initial weights: ``L = c
        lam`` with ``c = 2 / n_outputs`` for the squared error and ``1 / 2`` for the
        cross-entropy, and ``lam`` the top eigenvalue of ``J^T D J`` (``J`` the
        Jacobian of the outputs in the weights, ``D`` each row's share of the mean
        loss, ``1 / n`` or ``w / sum(w)``). For ``hidden_layer_sizes=()`` that is the
        Gram matrix of ``X~ = [X, 1]`` and ``1 / L`` the classic step at which gradient
        descent on the convex loss cannot diverge, whatever the feature scale; with
        hidden layers it is the Gauss-Newton matrix at the initial weights (power
        iteration), which keeps the step stable on standardized data (the
        activations' scale and the later layers' weights enter ``L``). Targets far
        from unit scale can still make a hidden-layer fit diverge as its weights grow:
        standardize them (``TransformedTargetRegressor``). The rates used are in
        ``inner_lrs_``.
    device : str or torch.device, default="cpu"
        Where the network and every tensor live, e.g. ``"cuda"``. Checked at ``fit``:
        an unavailable device raises a ``ValueError``.
    random_state : int, RandomState instance or None, default=None
        Seeds the from-scratch network's initial weights (a local torch generator:
        torch's and numpy's global RNGs are left alone). A bound estimator draws
        nothing at random, so it ignores this.
    callbacks : list of skorch callbacks or None, default=None
        Passed to the skorch net, after its default callbacks (``epoch_timer``,
        ``train_loss``); one epoch is one SGD step. Copied at every ``fit``, so the
        estimator's parameters never change; the fitted ones are in
        ``net_.callbacks_``.
    verbose : int, default=0
        ``> 0``: skorch's ``PrintLog`` prints the training loss of every SGD step.
"""

_COMMON_ATTRIBUTES = """\
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features seen during ``fit``; only when ``X`` had string column
        names.
    inner_lrs_ : dict of str to float
        The SGD learning rate each inner tensor was adapted with (``"0.weight.filters"``,
        ``"0.bias"``...).
    net_ : skorch.NeuralNet
        The net that adapted the inner parameters: ``net_.history`` holds the training
        loss of every step, ``net_.module_`` the network.
    network_ : torch.nn.Module
        The adapted network, in eval mode (the same object as ``net_.module_``):
        ``network_.inner_dict()`` holds the adapted inner tensors (``v``, biases,
        residuals) by name, ``network_.model`` the MetaModel with ``U`` unchanged.
"""
