"""MetaSymmetryLearner: meta-learn the weight sharing of any network across a list of tasks."""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import torch
from sklearn.base import BaseEstimator

from ._fitting import LOSS_OF_OBJECTIVE, MetaFittingMixin, all_or_nothing
from ._validation import Hidden, Interval, StrOptions, check_device, fit_context
from .architecture import ModuleSpec
from .data.routing import check_score_request
from .data.tasks import check_tasks
from .engine import SYMMETRY_GRADIENTS, InnerLoop
from .engine.optim import META_OPTIMIZERS
from .models import LAYER_KINDS
from .models.mlp import ACTIVATIONS
from .scoring import TaskScoringMixin
from .scoring.scorers import check_search_scorer
from .sharing import DenseSharing, sharing_spec
from .symmetry import LearnedSymmetry, _plain
from .training import SCHEDULES, Callback
from .training.callbacks import Checkpoint
from .training.checkpoints import using_checkpoint
from .training.loop import _distributed_context

__all__ = ["MetaSymmetryLearner", "RETIRED_PARAMETERS"]

#: parameters that do not change what a fit computes: a resume may change them
_NOT_SETTINGS = ("callbacks", "device", "verbose", "warm_start")

#: parameters of earlier releases, and what replaces each
RETIRED_PARAMETERS = {
    "conv_channels": "module=ConvNet, module__channels=(...)",
    "input_shape": "module__input_shape=(C, H, W), or tasks of images (n, C, H, W)",
    "kernel_size": "module__kernel_size=...",
    "n_copies": "module__n_copies=... (ConvNet), or sharing=ConvFilterSharing(n_copies=...)",
    "pooling": "module__global_pool='mean' / 'mean_fields' (ConvNet)",
    "couple_copies": "module__couple_copies=True (ConvNet), or "
                     "ConvFilterSharing(in_copies=...) in sharing=",
    "conv_bias": "module__field_bias=True (ConvNet)",
    "conv_layer": "sharing={'features.*.weight': ...} (layer='dense' for plain convolutions)",
    "conv_init": "sharing={'features.*.weight': ConvFilterSharing(init='identity')}",
    "residual_lr": "sharing=Residual(..., inner_lr=...) (or layer='msr_residual')",
    "residual_pull": "sharing=Residual(..., pull=True)",
    "early_stopping": "callbacks=[EarlyStopping(n_iter_no_change=10, tol=1e-4)]",
    "n_iter_no_change": "callbacks=[EarlyStopping(n_iter_no_change=...)]",
    "tol": "callbacks=[EarlyStopping(tol=...)]",
    "checkpoint_path": "callbacks=[Checkpoint(path, interval=100, resume=False)]",
    "checkpoint_interval": "callbacks=[Checkpoint(path, interval=...)]",
    "resume": "callbacks=[Checkpoint(path, resume=True)]",
}
#: ``layer`` values of earlier releases that are now modules
RETIRED_LAYERS = {
    "conv1d": "module=Conv1dLayer, layer='dense'",
    "locally_connected1d": "module=LocallyConnected1d, layer='dense'",
    "conv2d": "module=ConvNet, module__n_outputs=None, layer='dense'",
    "msr_conv2d": "module=ConvNet, module__n_outputs=None, module__n_copies=...",
    "msr_conv2d_residual": "module=ConvNet, module__n_outputs=None, layer='msr_residual'",
}
#: the MLP shorthands: with a module they must keep their defaults
_MLP_SHORTHANDS = {"hidden_layer_sizes": (), "activation": "relu", "bias": True}


class MetaSymmetryLearner(MetaFittingMixin, TaskScoringMixin, BaseEstimator):
    """Meta-learn the weight sharing ``U`` of any network across many related tasks (MSR).

    Every shared weight of the network is ``vec(W) = U v``. Across tasks, an outer loop
    (Adam) meta-learns ``U``, the initial filters ``v0``, every other meta-parameter
    and one inner learning rate per inner tensor; within each task, an inner loop of
    ``inner_steps`` SGD steps on ``n_support`` support rows adapts ``v`` (and the
    parameters the policy makes inner, such as biases), and the task's remaining rows
    score the adapted network.

    The network is ``module`` (any ``torch.nn.Module`` class, with ``module__<name>``
    parameters as in skorch, or an instance) or, by default, the built-in
    :class:`~msr_sklearn.models.MLP` of ``hidden_layer_sizes``, ``activation`` and
    ``bias``. ``sharing`` says which of its parameters are shared and how; without
    it, the module's default policy applies ``layer`` and ``n_filters``.

    Parameters
    ----------
    module : torch.nn.Module subclass or instance, or None, default=None
        The network. A class is built at ``fit`` with its ``module__<name>``
        parameters; ``n_features``, ``input_shape`` and ``n_outputs`` are filled from
        the tasks when its ``__init__`` takes them and they are not given. An instance
        is copied. ``None``: :class:`~msr_sklearn.models.MLP`. Built-in models:
        :mod:`msr_sklearn.models` (``ConvNet``, ``Conv4``, ``GroupConvNet``,
        ``DeepSets``, the paper's 1-D layers). Normalization layers must not keep
        running statistics.
    sharing : dict or None, default=None
        The sharing policy: parameter-name patterns (``fnmatch``, e.g.
        ``"features.*.weight"``) to a :class:`~msr_sklearn.sharing.Sharing`
        (``DenseSharing(n_filters=16)``, ``ConvFilterSharing(n_copies=4)``,
        ``Residual(...)``, an exact ``FixedSharing``) or to ``"inner"`` (adapted per
        task), ``"outer"`` (meta-learned only) or ``"frozen"``; the first matching
        pattern decides and unmatched parameters are inner
        (:func:`msr_sklearn.sharing.resolve_policy`). ``None``: the module's
        ``default_sharing(layer, n_filters)``, or ``layer``'s sharing on every weight
        of two or more dimensions.
    hidden_layer_sizes : tuple of int, default=()
        Hidden widths of the built-in MLP; ``()`` is a single layer.
    activation : {"relu", "tanh", "logistic", "identity"}, default="relu"
        The built-in MLP's activation.
    layer : {"msr", "msr_kron", "dense", "msr_residual", "msr_kron_residual"}, default="msr"
        The default policy's sharing of a dense weight: ``"msr"`` a learned dense ``U``,
        ``"msr_kron"`` a learned Kronecker-factored one (for wide layers), ``"dense"``
        none (plain MAML, the baseline); a ``"_residual"`` kind adds a free inner
        residual ``R`` beside the shared weight, ``W = U v + R``, adapted at its own
        meta-learned rate (soft symmetry; :meth:`symmetry_strength`).
    n_filters : int or tuple of int, default=8
        ``k`` of the default policy's sharings (one value, or one per shared weight).
    bias : bool, default=True
        Biases of the built-in MLP (adapted in the inner loop, not shared).
    objective : {"auto", "regression", "classification"}, default="auto"
        ``"auto"``: classification when targets are not floating point, with a warning
        when integer targets look like numbers (fewer than 2 rows per class on average,
        or more than 20 classes in a task;
        :func:`~msr_sklearn.data.tasks.resolve_objective`).
    n_support : int, default=5
        Support rows per task; the rest of a task is its query.
    support_split : {"auto", "stratified", "random", "first"}, default="auto"
        ``"random"`` draws each task's support rows afresh at every meta-step (more
        distinct episodes from the same data); ``"stratified"`` too, but every class of
        a task is in its support, ``n_support`` divided over the task's classes as
        evenly as possible (N-way K-shot episodes: ``n_support = N * K``), a
        ``ValueError`` when ``n_support`` is below a task's classes or a class has too
        few rows; ``"first"`` takes the first ``n_support`` rows, for data that carry
        their own split (e.g. clean support and augmented query rows). ``"auto"``:
        ``"stratified"`` for classification, ``"random"`` for regression; where the
        tasks cannot be stratified, ``"random"`` with a warning that some supports lack
        a class. ``score`` and ``evaluate`` split new tasks the same way.
    inner_steps : int, default=1
    inner_lr : float or "auto", default="auto"
        Initial value of every inner learning rate. ``"auto"``: at the scale the loss
        needs: ``C_out / 2`` for the tensors of an output convolution under the MSE (its
        support loss averages over every output pixel, ``C_out * H' * W'`` outputs, so
        0.1 is far too small), 0.1 otherwise
        (:func:`msr_sklearn.engine.auto_inner_lrs`).
    learn_inner_lr : bool, default=True
    learn_symmetry : bool, default=True
        ``False`` keeps every sharing ``U`` at its initial value and meta-learns the
        rest: the control that shows what learning ``U`` adds (or, with an exact
        sharing, MAML inside a known symmetry).
    initial_symmetry : LearnedSymmetry or None, default=None
        Start from this symmetry's state (its ``U``, ``v0``, every meta-parameter and
        inner learning rate) instead of a random initialization. Its network, policy and
        objective must be the ones this learner and the tasks define, else ``fit``
        raises a ``ValueError`` that names the differences.
    first_order : bool, default=False
        Drop every second-order term of the meta-gradient (faster, usually a bit worse).
    symmetry_gradient : {"auto", "first_order", "second_order"}, default="auto"
        How the meta-gradient reaches the sharings ``U``
        (:class:`~msr_sklearn.engine.InnerLoop`). ``"auto"``: ``"first_order"`` for a
        network with one adapted weight, ``"second_order"`` otherwise.
    meta_optimizer : {"msr_adam", "adam"}, default="msr_adam"
        ``"msr_adam"``: for a network with one adapted weight, Adam with one second
        moment per sharing tensor (per column of a dense ``U``, which moves at twice the
        rate), so the entries of ``U`` that carry no signal move in proportion to their
        (noise) gradient; for several, Adam with every sharing's step within 1% of its
        norm (a trust region: without it a deep conv net could die at the default
        rate). ``"adam"``: plain Adam on everything, as the paper's code
        (:func:`msr_sklearn.engine.make_meta_optimizer`).
    sharing_sparsity : float >= 0 or "auto", default="auto"
        A row group-lasso (Occam) prior on the weights a learned dense ``U`` uses
        (:func:`~msr_sklearn.engine.make_meta_optimizer`): after every meta-step the row
        of ``U`` of each weight is shrunk towards 0 by ``sharing_sparsity`` times the
        meta-lr. ``"auto"``: no fixed strength (it also removes real directions of the
        symmetry that carry little signal) but, for a network whose one adapted weight
        has a strict dense sharing, held-out-checked pruning: from half of the run on,
        the rows of ``U`` no task needs are zeroed as long as the query loss of fresh
        tasks does not rise (:class:`~msr_sklearn.training.callbacks.SharingPruning`);
        nothing for other networks (``docs/convergence.md``).
    meta_lr : float, default=1e-2
        Peak learning rate of the outer loop (see ``meta_lr_schedule``).
    meta_batch_size : int, default=32
        Tasks per meta-step (capped at the number of training tasks).
    n_meta_steps : int, default=1000
    meta_lr_schedule : {"inverse_time", "cosine", "constant"}, default="inverse_time"
        The meta learning rate over a fit's steps (:func:`msr_sklearn.training.meta_lr_at`).
        The paper's protocol is ``meta_lr=1e-3, meta_lr_schedule="constant",
        symmetry_gradient="second_order", meta_optimizer="adam", sharing_sparsity=0``.
    validation_fraction : float or None, default=None
        Fraction of the tasks held out for a validation loss (in ``history_``);
        ``None``: 0.1 with an :class:`~msr_sklearn.training.callbacks.EarlyStopping`
        callback, else none. ``validation_tasks`` of ``fit`` replace it.
    validation_interval : int, default=100
        Meta-steps between validation losses (and at the last step).
    warm_start : bool, default=False
        Continue meta-training from the fitted state on the next ``fit`` (Adam's
        state included). A changed network, policy, ``learn_inner_lr`` or
        ``learn_symmetry`` is refused with a ``ValueError``.
    callbacks : list of Callback or None, default=None
        :class:`msr_sklearn.training.Callback` objects called at every hook of the
        training loop after the built-in ones (history, divergence, validation); they
        can add columns to ``history_`` or stop training. Early stopping and
        checkpoints are callbacks too:
        :class:`~msr_sklearn.training.callbacks.EarlyStopping` and
        :class:`~msr_sklearn.training.callbacks.Checkpoint` (crash-safe, resumable).
    device : str, default="cpu"
    random_state : int, RandomState or None, default=None
        Controls initialization, task sampling and support/query splits.
    verbose : int, default=0
        ``> 0`` shows a progress bar with the current loss.
    **module_params
        ``module__<name>=value``: parameters of the ``module`` class (searchable by
        ``GridSearchCV`` as ``module__<name>``).

    Attributes
    ----------
    symmetry_ : LearnedSymmetry
        What was meta-learned; pass it to :class:`EquivariantRegressor` /
        :class:`EquivariantClassifier` (see :meth:`make_estimator`).
    history_ : pandas.DataFrame
        One row per meta-step: ``step``, ``train_loss`` (mean query loss of the
        meta-batch), ``valid_loss`` (every ``validation_interval`` steps when tasks are
        held out, else NaN) and ``inner_lr[<tensor>]`` columns.
    objective_ : str
    n_outputs_ : int
        Regression outputs, or the number of ways for classification.
    n_features_in_ : int
        Values of one sample (the product of ``input_shape_``).
    input_shape_ : tuple of int
        One sample's shape (``(n_features,)`` for flat rows, ``(C, H, W)`` for images).
    feature_names_in_ : ndarray of str
        Only for DataFrame input with string column names.
    model_ : MetaModel
        The torch meta-model (the network under its policy, and the learned inner lrs).
    n_iter_ : int
        Meta-steps run, over all warm-started fits (the rows of ``history_``).
    best_valid_loss_ : float or None
        The lowest validation loss of the last fit; ``None`` without held-out tasks.
    best_step_ : int or None
        The step (``history_["step"]``) of ``best_valid_loss_``.

    Examples
    --------
    >>> from msr_sklearn import MetaSymmetryLearner
    >>> from msr_sklearn.datasets import make_translation_tasks
    >>> X, y = make_translation_tasks(n_tasks=200, n_features=12, random_state=0)
    >>> learner = MetaSymmetryLearner(n_filters=3, bias=False, n_support=1,
    ...                               n_meta_steps=50, random_state=0)
    >>> learner.fit(X, y).symmetry_.symmetry_matrix(0).shape
    (120, 3)

    Any module, with a policy by parameter name:

    >>> from torch import nn
    >>> from msr_sklearn.sharing import DenseSharing
    >>> class Net(nn.Module):
    ...     def __init__(self, width=16):
    ...         super().__init__()
    ...         self.body = nn.Sequential(nn.Linear(12, width), nn.GELU(), nn.LayerNorm(width))
    ...         self.head = nn.Linear(width, 10)
    ...     def forward(self, x):
    ...         return self.head(self.body(x))
    >>> learner = MetaSymmetryLearner(module=Net, module__width=8, n_support=1,
    ...                               sharing={"body.0.weight": DenseSharing(n_filters=6)},
    ...                               n_meta_steps=20, random_state=0).fit(X, y)
    >>> learner.model_.roles["body.0.weight"], learner.model_.roles["head.weight"]
    ('shared', 'inner')
    """

    _parameter_constraints = {
        "module": [None, type, torch.nn.Module],
        "sharing": [None, dict],
        "hidden_layer_sizes": ["array-like"],
        "activation": [StrOptions(set(ACTIVATIONS))],
        # a retired value passes here, for fit's message that names its replacement
        "layer": [StrOptions(set(LAYER_KINDS)), Hidden(StrOptions(set(RETIRED_LAYERS)))],
        "n_filters": [Interval(Integral, 1, None, closed="left"), "array-like"],
        "bias": ["boolean"],
        "objective": [StrOptions({"auto", "regression", "classification"})],
        "n_support": [Interval(Integral, 1, None, closed="left")],
        "support_split": [StrOptions({"auto", "stratified", "random", "first"})],
        "inner_steps": [Interval(Integral, 1, None, closed="left")],
        "inner_lr": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "learn_inner_lr": ["boolean"],
        "learn_symmetry": ["boolean"],
        "initial_symmetry": [None, LearnedSymmetry],
        "first_order": ["boolean"],
        "symmetry_gradient": [StrOptions({"auto", *SYMMETRY_GRADIENTS})],
        "meta_optimizer": [StrOptions(set(META_OPTIMIZERS))],
        "sharing_sparsity": [Interval(Real, 0, None, closed="left"), StrOptions({"auto"})],
        "meta_lr": [Interval(Real, 0, None, closed="neither")],
        "meta_batch_size": [Interval(Integral, 1, None, closed="left")],
        "n_meta_steps": [Interval(Integral, 1, None, closed="left")],
        "meta_lr_schedule": [StrOptions(set(SCHEDULES))],
        "validation_fraction": [None, Interval(Real, 0, 1, closed="left")],
        "validation_interval": [Interval(Integral, 1, None, closed="left")],
        "warm_start": ["boolean"],
        "callbacks": [None, list],
        "device": [str, torch.device],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(self, module=None, sharing=None, hidden_layer_sizes=(), activation="relu",
                 layer="msr", n_filters=8, bias=True, objective="auto", n_support=5,
                 support_split="auto", inner_steps=1, inner_lr="auto", learn_inner_lr=True,
                 learn_symmetry=True, initial_symmetry=None, first_order=False,
                 symmetry_gradient="auto", meta_optimizer="msr_adam", sharing_sparsity="auto",
                 meta_lr=1e-2, meta_batch_size=32, n_meta_steps=1000,
                 meta_lr_schedule="inverse_time", validation_fraction=None,
                 validation_interval=100, warm_start=False, callbacks=None, device="cpu",
                 random_state=None, verbose=0, **module_params):
        self.module = module
        self.sharing = sharing
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.layer = layer
        self.n_filters = n_filters
        self.bias = bias
        self.objective = objective
        self.n_support = n_support
        self.support_split = support_split
        self.inner_steps = inner_steps
        self.inner_lr = inner_lr
        self.learn_inner_lr = learn_inner_lr
        self.learn_symmetry = learn_symmetry
        self.initial_symmetry = initial_symmetry
        self.first_order = first_order
        self.symmetry_gradient = symmetry_gradient
        self.meta_optimizer = meta_optimizer
        self.sharing_sparsity = sharing_sparsity
        self.meta_lr = meta_lr
        self.meta_batch_size = meta_batch_size
        self.n_meta_steps = n_meta_steps
        self.meta_lr_schedule = meta_lr_schedule
        self.validation_fraction = validation_fraction
        self.validation_interval = validation_interval
        self.warm_start = warm_start
        self.callbacks = callbacks
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        # checked at fit (scikit-learn's rule: __init__ only stores its parameters)
        for name, value in module_params.items():
            setattr(self, name, value)

    # -------------------------------------------------------- module__* parameters
    def _extra_params(self):
        """The keyword parameters beyond the signature (``module__*``, and any a user
        passed by mistake, which ``fit`` refuses)."""
        own = set(self._get_param_names())
        return {k: v for k, v in vars(self).items()
                if k not in own and not k.startswith("_") and not k.endswith("_")}

    def get_params(self, deep=True):
        """The constructor's parameters, and every ``module__<name>`` one, by name."""
        return {**super().get_params(deep=deep), **self._extra_params()}

    def set_params(self, **params):
        """Set parameters; ``module__<name>`` ones are the module's (added if new)."""
        own = {k: params.pop(k) for k in list(params) if k.startswith("module__")}
        for name, value in own.items():
            setattr(self, name, value)
        return super().set_params(**params)

    def _module_params(self):
        return {k.removeprefix("module__"): v for k, v in self._extra_params().items()}

    # ------------------------------------------------------------------ helpers
    def _module_spec(self):
        """The network to build: the module, or the MLP of the shorthands."""
        params = self._module_params()
        if self.module is None:
            sizes = tuple(self.hidden_layer_sizes)
            if not all(isinstance(h, Integral) and not isinstance(h, bool) for h in sizes):
                raise ValueError(f"hidden_layer_sizes must be integers (units per hidden "
                                 f"layer); got {self.hidden_layer_sizes!r}")
            params = {**params, "hidden_layer_sizes": tuple(int(h) for h in sizes),
                      "activation": self.activation, "bias": bool(self.bias)}
        else:
            changed = [k for k, v in _MLP_SHORTHANDS.items()
                       if _plain(getattr(self, k)) != _plain(v)]
            if changed:
                raise ValueError(f"{', '.join(changed)} describe the built-in MLP, but module="
                                 f"{self.module!r} was given; pass module__<name> parameters "
                                 "to your module instead")
        return ModuleSpec(self.module, params)

    def _check_tasks(self, X, y, groups, fitted):
        kwargs = dict(objective=self.objective, n_support=self.n_support)
        if fitted:
            kwargs.update(objective=self.objective_, n_outputs=self.n_outputs_,
                          feature_shape=self.input_shape_)
        tasks = check_tasks(X, y, groups, **kwargs)
        seen = getattr(self, "feature_names_in_", None)
        if fitted and seen is not None and tasks.feature_names is not None:
            if list(tasks.feature_names) != list(seen):
                raise ValueError("the tasks' feature names differ from those seen in fit")
        return tasks.to(self._device)

    def _split_options(self, tasks):
        """``TaskSet.split``'s ``shuffle`` and ``stratify`` for ``tasks`` (a task set or
        stream's first draw), ``support_split="auto"`` resolved for them."""
        split = self.support_split
        if split == "auto" and tasks.objective == "classification":
            problem = tasks.stratified_split_problem(self.n_support)
            split = "stratified" if problem is None else "random"
            if problem:
                warnings.warn(
                    "support_split='auto' draws these classification tasks' supports at "
                    f"random, so some supports lack a class: {problem}. Set "
                    "support_split='random' to accept that and silence this warning.",
                    UserWarning, stacklevel=3)
        elif split == "stratified":
            problem = tasks.stratified_split_problem(self.n_support)
            if problem:
                raise ValueError(problem)
        return {"shuffle": split != "first", "stratify": split == "stratified"}

    def _inner_loop(self):
        """The inner loop of this learner (for the fitted network)."""
        gradient = self.symmetry_gradient
        if gradient == "auto":
            gradient = "first_order" if self.model_.n_adapted_weights <= 1 else "second_order"
        return InnerLoop(loss=LOSS_OF_OBJECTIVE[self.objective_], steps=int(self.inner_steps),
                         first_order=bool(self.first_order), symmetry_gradient=gradient)

    def _sharing_sparsity(self):
        """``sharing_sparsity`` with ``"auto"`` resolved: no fixed-strength prior."""
        return 0.0 if self.sharing_sparsity == "auto" else float(self.sharing_sparsity)

    def _prunes_sharing(self):
        """``"auto"``: held-out-checked pruning of one strict dense sharing's ``U``."""
        model = self.model_
        shared = model.shared_names
        return (self.sharing_sparsity == "auto" and model.n_adapted_weights == 1
                and len(shared) == 1 and type(model.sharing(shared[0])) is DenseSharing
                and model.sharing(shared[0]).basis.requires_grad)

    def _settings(self):
        """The parameters that shape the training trajectory, as JSON values."""
        params = self.get_params(deep=False)
        if not isinstance(params["random_state"], Integral):
            params["random_state"] = None  # a resumed fit takes the checkpoint's seed
        if params["initial_symmetry"] is not None:  # the file's hash stands for it
            params["initial_symmetry"] = params["initial_symmetry"].fingerprint()
        if params["sharing"] is not None:
            params["sharing"] = {k: v if isinstance(v, str) else sharing_spec(v)
                                 for k, v in params["sharing"].items()}
        if params["module"] is not None:
            module = params["module"]
            cls = module if isinstance(module, type) else type(module)
            params["module"] = f"{cls.__module__}:{cls.__qualname__}"
        return {k: _plain(v) for k, v in params.items() if k not in _NOT_SETTINGS}

    def _model_settings(self):
        """The parameters the fitted network and its optimizer were built from."""
        settings = self._settings()
        names = ("module", "sharing", "hidden_layer_sizes", "activation", "layer", "n_filters",
                 "bias", "learn_inner_lr", "learn_symmetry", "meta_optimizer",
                 "sharing_sparsity")
        return {**{n: settings[n] for n in names},
                **{k: v for k, v in settings.items() if k.startswith("module__")}}

    def _checkpoint(self):
        """The Checkpoint among the callbacks, or None."""
        return next((c for c in self._user_callbacks() if isinstance(c, Checkpoint)), None)

    def _user_callbacks(self):
        """The user's callbacks, checked (used as given, as skorch does: a callback's state
        after ``fit`` is there to read; ``initialize`` resets it at every fit)."""
        callbacks = list(self.callbacks or [])
        if not all(isinstance(c, Callback) for c in callbacks):
            raise TypeError("callbacks must be a list of msr_sklearn.training.Callback objects; "
                            f"got {[type(c).__name__ for c in callbacks]}")
        checkpoints = [c for c in callbacks if isinstance(c, Checkpoint)]
        if len(checkpoints) > 1:
            raise ValueError("callbacks hold more than one Checkpoint; keep one")
        return callbacks

    # ---------------------------------------------------------------------- fit
    @fit_context
    def fit(self, X, y=None, groups=None, validation_tasks=None):
        """Meta-learn the sharings (and ``v0``, every meta-parameter, inner lrs) from tasks.

        Parameters
        ----------
        X : list of (X_i, y_i), or array-like (n_tasks, n_samples, ...), or
            array-like / DataFrame (n_rows, n_features) with ``groups``, or a task source
            (a :class:`~msr_sklearn.data.streams.TaskStream`, a callable
            ``(n_tasks, random_state) -> tasks`` or an iterator of ``(X_i, y_i)``) from
            which every meta-step draws ``meta_batch_size`` fresh tasks. A task's rows may
            be flat features ``(n, d)`` or images ``(n, C, H, W)``.
        y : None, array-like (n_tasks, n_samples[, ...]) or (n_rows[, n_outputs])
        groups : array-like (n_rows,), optional
            Task id of each row, for long-format input. Inside a ``Pipeline``,
            ``cross_validate`` or a search, route it with metadata routing and
            ``set_fit_request(groups=True).set_score_request(groups=True)``.
        validation_tasks : tasks in any accepted form, optional
            Held-out tasks whose query loss is logged every ``validation_interval``
            steps and drives early stopping (instead of ``validation_fraction``).

        Returns
        -------
        self
            With every fitted attribute replaced. A fit that raises replaces none:
            the learner keeps its previous fit (or stays unfitted), and a failed warm
            start leaves the fitted model untouched.
        """
        _check_module_params(self._extra_params())
        if self.layer in RETIRED_LAYERS:
            raise ValueError(f"layer={self.layer!r} is now a module: use "
                             f"{RETIRED_LAYERS[self.layer]} (see the migration notes in the "
                             "changelog)")
        check_score_request(self, groups)
        check_search_scorer(self)
        checkpoint = self._checkpoint()
        # a fit that raises leaves the previous fit's attributes, all of them
        with all_or_nothing(self):
            self._device = check_device(self.device)
            # checked before any work, and held (locked) until the fit's last write
            with using_checkpoint(None if checkpoint is None else checkpoint.path,
                                  checkpoint is not None and checkpoint.resume,
                                  _distributed_context()[0]):
                run = self._validate(X, y, groups, validation_tasks)
                trainer = self._build_or_resume(run)
                trainer.run()
            return self._summarize(trainer)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_device", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if "model_" in state:
            self._device = next(self.model_.parameters()).device


def _check_module_params(params):
    """Only ``module__<name>`` keyword arguments; a retired parameter names its successor."""
    for name in params:
        if name in RETIRED_PARAMETERS:
            raise TypeError(f"MetaSymmetryLearner no longer takes {name}=; use "
                            f"{RETIRED_PARAMETERS[name]} (see the migration notes in the "
                            "changelog)")
        if not name.startswith("module__") or name == "module__":
            raise TypeError(f"MetaSymmetryLearner got an unexpected keyword argument {name!r}; "
                            "parameters of the module are passed as module__<name>=value")

