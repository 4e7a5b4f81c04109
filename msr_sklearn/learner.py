"""MetaSymmetryLearner: meta-learn a sharing pattern U across a list of tasks."""

from __future__ import annotations

import os
import warnings
from numbers import Integral, Real
from types import SimpleNamespace

import pandas as pd
import torch
from sklearn.base import BaseEstimator

from ._validation import Interval, StrOptions, check_device, fit_context
from .engine.meta import SYMMETRY_GRADIENTS, MetaModel, make_meta_optimizer
from .nn.sharing import DenseSharing
from .engine.optim import META_OPTIMIZERS
from .nn.network import (ACTIVATIONS, CONV_BIASES, CONV_INITS, CONV_LAYER_KINDS, LAYER_KINDS,
                         POOLINGS, build_network)
from .data.streams import as_task_stream
from .inspection.soft_symmetry import set_residual_lr
from .scoring.mixin import TaskScoringMixin
from .symmetry import LearnedSymmetry, _plain
from .data.routing import check_score_request
from .data.tasks import MetaBatches, check_tasks
from .training.callbacks import (
    Checkpoint,
    DivergenceStop,
    EarlyStopping,
    History,
    ProgressBar,
    Validation,
    resume_mismatch,
    resume_state,
)
from .training.loop import SCHEDULES, Callback, Trainer, _distributed_context, shared_seed

_LOSS_OF = {"regression": "mse", "classification": "cross_entropy"}
#: ``sharing_sparsity="auto"`` for one dense MSR layer (docs/convergence.md: rank-1
#: 0.66 -> 0.36 degrees, rank-2 2.2 -> 0.6, C4 lifting 0.92 -> 0.71, query MSE unchanged)
AUTO_SHARING_SPARSITY = 0.15
#: parameters that do not change what a fit computes: a resume may change them
_NOT_SETTINGS = ("callbacks", "checkpoint_interval", "checkpoint_path", "device", "resume",
                 "verbose", "warm_start")


class MetaSymmetryLearner(TaskScoringMixin, BaseEstimator):
    """Meta-learn the weight sharing ``U`` of a network across many related tasks (MSR).

    Each layer's weight is ``vec(W) = U v``. Across tasks, an outer loop (Adam)
    meta-learns ``U``, the initial filters ``v0`` and biases, and one inner learning
    rate per inner parameter tensor; within each task, an inner loop of
    ``inner_steps`` SGD steps on ``n_support`` support rows adapts ``v`` and the
    biases only, and the task's remaining rows score the adapted network.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=()
        Hidden widths; ``()`` is a single layer.
    activation : {"relu", "tanh", "logistic", "identity"}, default="relu"
    layer : {"msr", "msr_kron", "dense", "conv1d", "locally_connected1d", "conv2d", \
"msr_conv2d", "msr_residual", "msr_kron_residual", "msr_conv2d_residual"}, default="msr"
        ``"msr"``: learned dense ``U`` per layer; ``"msr_kron"``: learned Kronecker
        ``U = A ⊗ B`` (for wide layers); ``"dense"``: ``U`` fixed to the identity
        (plain MAML, the baseline). Single-layer kinds (no hidden layers):
        ``"conv1d"`` / ``"locally_connected1d"``, the paper's 1-D baselines;
        ``"conv2d"`` (MAML-Conv) and ``"msr_conv2d"`` (MSR-Conv: a learned sharing on
        the filter tensor of a 2-D convolution), see :func:`msr_sklearn.nn.build_network`.
        A ``"_residual"`` kind is a soft symmetry: every layer of that kind is
        ``W = reshape(U v) + R`` with a free inner ``R`` beside the shared weight,
        starting at a meta-learned ``R0 = 0`` and adapted per task at its own
        meta-learned rate (``residual_lr``); see :meth:`symmetry_strength`.
    n_filters : int or tuple of int, default=8
        ``k``, the number of free filter values per MSR layer.
    bias : bool, default=True
        Per-layer biases, adapted in the inner loop and not reparameterized.
    kernel_size : int, default=3
        Taps per axis of the convolutional kinds.
    input_shape : tuple (C, H, W) or None, default=None
        Image shape for ``layer="conv2d"`` / ``"msr_conv2d"``; ``None``: one square
        channel.
    n_copies : int, default=1
        MSR-Conv: output channels per field (e.g. 4 for the copies of a filter under 90°
        rotations).
    conv_channels : tuple of int, default=()
        A convolutional front-end (for image tasks, with ``input_shape``): one valid
        ``kernel_size`` convolution per entry with that many output channels, before
        the dense layers.
    conv_layer : {"msr_conv2d", "conv2d", "msr_conv2d_residual"}, default="msr_conv2d"
        Front-end convolutions with a learned filter sharing (MSR-Conv), plain ones, or
        MSR-Conv with free per-copy filters beside the shared ones (soft symmetry).
    pooling : {"none", "mean", "mean_fields"}, default="none"
        ``"mean"``: average each front-end channel over its pixels; ``"mean_fields"``:
        average each field of ``n_copies`` channels over its copies and pixels, so the
        head sees features that a permutation of a field's copies leaves unchanged (an
        equivariant front-end then makes the whole network invariant).
    couple_copies : bool, default=False
        MSR-Conv front-end: front-end layers after the first read their input in fields
        of ``n_copies`` channels, so their learned sharing can tie each input copy to
        each output copy, as a group convolution between regular fields does (out of
        reach with ``False``, where each input channel is its own field).
    conv_bias : {"channels", "fields"}, default="channels"
        With ``bias``: one bias per front-end output channel, or one per field of
        ``n_copies`` channels shared by its copies, which a group convolution between
        regular fields needs to stay equivariant (with ``pooling="mean_fields"`` the
        network can then be exactly invariant).
    conv_init : {"random", "identity"}, default="random"
        How the MSR-Conv front-end's sharings start: random orthonormal factors, whose
        copies of a field start different, or every copy equal (``"identity"``, as the
        paper's code does for its square factors). With identical copies a deep MSR-Conv
        net can stay on the loss plateau of a constant prediction (Aug-Digits: one seed
        in three at the default meta-lr, none with ``"random"``; ``docs/aug_digits.md``),
        and with ``pooling="mean_fields"`` they never come apart (their meta-gradients are
        equal). Only the initialization: not part of the learned symmetry's architecture.
    residual_lr : float >= 0 or None, default=None
        Initial inner learning rate of every residual ``R`` (meta-learned like the
        others): 0 starts at the strict symmetry, a large rate at MAML. ``None``:
        ``inner_lr``. Needs a ``"_residual"`` ``layer`` or ``conv_layer``.
    residual_pull : bool, default=False
        Add ``exp(log_pull) ||R - R0||^2`` per residual layer, with a meta-learned
        ``log_pull`` (initially 0), to the inner loop's support loss. Its gradient
        vanishes at ``R = R0``, so with ``inner_steps=1`` it changes nothing. Needs a
        ``"_residual"`` ``layer`` or ``conv_layer``.
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
    inner_lr : float, default=0.1
        Initial value of every inner learning rate.
    learn_inner_lr : bool, default=True
    learn_symmetry : bool, default=True
        ``False`` keeps every sharing ``U`` at its initial value (for ``layer="msr"``
        random orthonormal columns) and meta-learns only ``v0``, the biases and the
        inner learning rates (and a residual layer's ``R0`` and pull): the control that
        shows what learning ``U`` adds.
    initial_symmetry : LearnedSymmetry or None, default=None
        Start from this symmetry's state instead of a random initialization: its ``U``
        per layer, ``v0``, biases and inner learning rates (``inner_lr`` is then not
        used; ``residual_lr``, when set, still sets the residuals' rates). E.g. an exact
        group's sharing with ``learn_symmetry=False``, which is MAML over a given
        symmetry, or a symmetry meta-learned before. Its architecture must be the one
        that this learner's parameters and the tasks define, and its objective the
        tasks'; otherwise ``fit`` raises a ``ValueError`` that names the differences.
        A warm start or a resumed fit continues its own state instead.
    first_order : bool, default=False
        Drop every second-order term of the meta-gradient (faster, usually a bit worse).
    symmetry_gradient : {"auto", "first_order", "second_order"}, default="auto"
        How the meta-gradient reaches the sharings ``U``. ``"first_order"``: each layer
        reads its support gradient through a ``U`` held constant (every other term,
        and all of ``v0``'s, biases' and inner lrs', stays second order); for one linear
        layer its fixed point puts ``span(U)`` inside the span of the tasks' weights,
        i.e. onto the symmetry. ``"second_order"``: the paper's full MAML gradient;
        with few support rows its optimum tilts ``U`` a few degrees off the symmetry,
        for a slightly lower one-step loss, and in deeper networks that read path is
        what adapts the head well. ``"auto"``: ``"first_order"`` for a network of one
        layer, ``"second_order"`` otherwise (:func:`msr_sklearn.engine.adapt`,
        ``docs/convergence.md``).
    meta_optimizer : {"msr_adam", "adam"}, default="msr_adam"
        ``"msr_adam"``: Adam with one second moment per sharing tensor, so the entries
        of ``U`` that carry no signal move in proportion to their (noise) gradient;
        ``"adam"``: plain Adam on everything, as the paper's code
        (:func:`msr_sklearn.engine.make_meta_optimizer`).
    sharing_sparsity : float >= 0 or "auto", default="auto"
        An Occam prior on the weights a learned dense ``U`` uses: after every
        meta-step the row of ``U`` of each weight of the layer is shrunk towards 0 by
        ``sharing_sparsity`` times the current meta-lr (a proximal group-lasso step),
        which drives the weights that no task needs out of ``span(U)``. ``"auto"``: 0.15
        for a network of one strict dense MSR layer (``layer="msr"`` without hidden
        layers, where it halves the angle to a local symmetry at no cost in query
        error), 0 otherwise (deep networks and residual layers were not studied with
        it).
    meta_lr : float, default=1e-2
        Peak learning rate of the outer loop (see ``meta_lr_schedule``).
    meta_batch_size : int, default=32
        Tasks per meta-step (capped at the number of training tasks).
    n_meta_steps : int, default=1000
    meta_lr_schedule : {"inverse_time", "cosine", "constant"}, default="inverse_time"
        The meta learning rate over a fit's ``n_meta_steps`` (a warm start runs it
        again over its own steps; :func:`msr_sklearn.training.meta_lr_at`,
        ``history_["meta_lr"]``). ``"inverse_time"``: a linear warmup over the first
        5% of the steps, ``meta_lr`` until half of them, then ``meta_lr / (1 + (t -
        0.5) / 0.01)`` at the fraction ``t`` of the steps: the hold leaves
        meta-learning's plateaus, the decay averages out the sampling noise in ``U``. ``"cosine"``:
        the warmup, then a cosine decay to ``meta_lr * 1e-2``. ``"constant"``:
        ``meta_lr`` throughout. The paper's protocol is ``meta_lr=1e-3,
        meta_lr_schedule="constant", symmetry_gradient="second_order",
        meta_optimizer="adam"``.
    validation_fraction : float or None, default=None
        Fraction of the tasks held out for a validation loss (in ``history_``);
        ``None``: 0.1 with ``early_stopping``, else none. ``validation_tasks`` of
        ``fit`` replace it.
    validation_interval : int, default=100
        Meta-steps between validation losses (and at the last step).
    early_stopping : bool, default=False
        Stop when ``n_iter_no_change`` validation losses in a row did not improve by
        ``tol``, and keep the state with the best validation loss (as scikit-learn's
        ``MLPRegressor``). A task stream needs ``validation_tasks``.
    n_iter_no_change : int, default=10
        Validation losses without an improvement that stop training.
    tol : float, default=1e-4
        The decrease of the validation loss that counts as an improvement.
    warm_start : bool, default=False
        Continue meta-training from the fitted state on the next ``fit`` (Adam's
        state included). A ``meta_lr`` changed with ``set_params`` in between takes
        effect, which is how to decay the meta learning rate; a changed architecture,
        ``learn_inner_lr`` or ``learn_symmetry`` is refused with a ``ValueError``.
    checkpoint_path : str, path or None, default=None
        If set, the whole training state (meta-parameters, Adam's state, step,
        sampler state, history, settings, task fingerprints) is written there every
        ``checkpoint_interval`` meta-steps and at the end, atomically: a crash at any
        moment leaves the previous file intact. ``LearnedSymmetry.load`` reads the
        current symmetry from it.
    checkpoint_interval : int, default=100
    resume : bool, default=False
        Continue from ``checkpoint_path`` if the file exists (else start afresh): a
        run killed at any moment and started again with the same call ends as an
        uninterrupted run (bit for bit on CPU). A checkpoint of other settings or
        tasks, or a damaged one, is a ``ValueError`` and stays untouched; a finished
        run's returns its final state. A warm start continues its own state instead.
    callbacks : list of Callback or None, default=None
        :class:`msr_sklearn.training.Callback` objects, called after the built-in
        ones (history, divergence, validation, early stopping) at every hook of the
        training loop; they can add columns to ``history_`` or stop training.
    device : str, default="cpu"
    random_state : int, RandomState or None, default=None
        Controls initialization, task sampling and support/query splits.
    verbose : int, default=0
        ``> 0`` shows a progress bar with the current loss (redrawn at most twice a
        second).

    Attributes
    ----------
    symmetry_ : LearnedSymmetry
        What was meta-learned; pass it to :class:`EquivariantRegressor` /
        :class:`EquivariantClassifier` (see :meth:`make_estimator`).
    history_ : pandas.DataFrame
        One row per meta-step: ``step``, ``train_loss`` (mean query loss of the
        meta-batch), ``valid_loss`` (every ``validation_interval`` steps when tasks are
        held out, else NaN) and ``inner_lr[<param>]`` columns.
    objective_ : str
    n_outputs_ : int
        Regression outputs, or the number of ways for classification.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only for DataFrame input with string column names.
    model_ : MetaModel
        The torch meta-model (network and learned inner lrs).
    n_iter_ : int
        Meta-steps run, over all warm-started fits (the rows of ``history_``).
    best_valid_loss_ : float or None
        The lowest validation loss of the last fit; ``None`` without held-out tasks.
    best_step_ : int or None
        The step (``history_["step"]``) of ``best_valid_loss_``. With
        ``early_stopping`` the learner holds the state after that step.

    Examples
    --------
    >>> from msr_sklearn import MetaSymmetryLearner
    >>> from msr_sklearn.datasets.synthetic import make_translation_tasks
    >>> X, y = make_translation_tasks(n_tasks=200, n_features=12, random_state=0)
    >>> learner = MetaSymmetryLearner(n_filters=3, bias=False, n_support=1,
    ...                               n_meta_steps=50, random_state=0)
    >>> learner.fit(X, y).symmetry_.symmetry_matrix(0).shape
    (120, 3)
    >>> learner.history_.shape[0]
    50
    """

    _parameter_constraints = {
        "hidden_layer_sizes": ["array-like"],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "layer": [StrOptions(set(LAYER_KINDS))],
        "n_filters": [Interval(Integral, 1, None, closed="left"), "array-like"],
        "bias": ["boolean"],
        "kernel_size": [Interval(Integral, 1, None, closed="left")],
        "input_shape": [None, tuple, list],
        "n_copies": [Interval(Integral, 1, None, closed="left")],
        "conv_channels": ["array-like"],
        "conv_layer": [StrOptions(set(CONV_LAYER_KINDS))],
        "pooling": [StrOptions(set(POOLINGS))],
        "couple_copies": ["boolean"],
        "conv_bias": [StrOptions(set(CONV_BIASES))],
        "conv_init": [StrOptions(set(CONV_INITS))],
        "residual_lr": [None, Interval(Real, 0, None, closed="left")],
        "residual_pull": ["boolean"],
        "objective": [StrOptions({"auto", "regression", "classification"})],
        "n_support": [Interval(Integral, 1, None, closed="left")],
        "support_split": [StrOptions({"auto", "stratified", "random", "first"})],
        "inner_steps": [Interval(Integral, 1, None, closed="left")],
        "inner_lr": [Interval(Real, 0, None, closed="neither")],
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
        "early_stopping": ["boolean"],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "warm_start": ["boolean"],
        "checkpoint_path": [None, str, os.PathLike],
        "checkpoint_interval": [Interval(Integral, 1, None, closed="left")],
        "resume": ["boolean"],
        "callbacks": [None, list],
        "device": [str, torch.device],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(self, hidden_layer_sizes=(), activation="relu", layer="msr", n_filters=8,
                 bias=True, kernel_size=3, input_shape=None, n_copies=1, conv_channels=(),
                 conv_layer="msr_conv2d", pooling="none", couple_copies=False,
                 conv_bias="channels", conv_init="random", residual_lr=None,
                 residual_pull=False, objective="auto",
                 n_support=5, support_split="auto", inner_steps=1, inner_lr=0.1,
                 learn_inner_lr=True, learn_symmetry=True, initial_symmetry=None,
                 first_order=False,
                 symmetry_gradient="auto", meta_optimizer="msr_adam",
                 sharing_sparsity="auto", meta_lr=1e-2,
                 meta_batch_size=32, n_meta_steps=1000, meta_lr_schedule="inverse_time",
                 validation_fraction=None, validation_interval=100, early_stopping=False,
                 n_iter_no_change=10, tol=1e-4, warm_start=False, checkpoint_path=None,
                 checkpoint_interval=100, resume=False, callbacks=None, device="cpu",
                 random_state=None, verbose=0):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.layer = layer
        self.n_filters = n_filters
        self.bias = bias
        self.kernel_size = kernel_size
        self.input_shape = input_shape
        self.n_copies = n_copies
        self.conv_channels = conv_channels
        self.conv_layer = conv_layer
        self.pooling = pooling
        self.couple_copies = couple_copies
        self.conv_bias = conv_bias
        self.conv_init = conv_init
        self.residual_lr = residual_lr
        self.residual_pull = residual_pull
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
        self.early_stopping = early_stopping
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.warm_start = warm_start
        self.checkpoint_path = checkpoint_path
        self.checkpoint_interval = checkpoint_interval
        self.resume = resume
        self.callbacks = callbacks
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ helpers
    def _model_settings(self):
        """What the fitted network and its optimizer were built from."""
        return {**self._architecture(self.n_features_in_, self.n_outputs_),
                "learn_inner_lr": bool(self.learn_inner_lr),
                "learn_symmetry": bool(self.learn_symmetry),
                "meta_optimizer": self.meta_optimizer,
                "sharing_sparsity": self.sharing_sparsity}

    def _check_unchanged_model(self):
        built, now = self._built_with, self._model_settings()
        changed = sorted(name for name in now if now[name] != built.get(name))
        if changed:
            raise ValueError(
                f"warm_start continues the fitted network, but {', '.join(changed)} changed "
                "since it was built; restore them, or set warm_start=False to start afresh")

    def _architecture(self, n_features, n_outputs):
        n_filters = self.n_filters
        if not isinstance(n_filters, Integral):
            n_filters = tuple(int(k) for k in n_filters)
        return {"n_features": int(n_features), "n_outputs": int(n_outputs),
                "hidden_layer_sizes": tuple(int(h) for h in self.hidden_layer_sizes),
                "layer": self.layer, "n_filters": n_filters, "activation": self.activation,
                "bias": bool(self.bias), "kernel_size": int(self.kernel_size),
                "input_shape": None if self.input_shape is None else tuple(
                    int(s) for s in self.input_shape),
                "n_copies": int(self.n_copies),
                "conv_channels": tuple(int(c) for c in self.conv_channels),
                "conv_layer": self.conv_layer, "pooling": self.pooling,
                "couple_copies": bool(self.couple_copies), "conv_bias": self.conv_bias,
                "residual_pull": bool(self.residual_pull)}

    def _check_tasks(self, X, y, groups, fitted):
        kwargs = dict(objective=self.objective, n_support=self.n_support)
        if fitted:
            kwargs.update(objective=self.objective_, n_outputs=self.n_outputs_,
                          n_features=self.n_features_in_)
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

    @property
    def _loss(self):
        return _LOSS_OF[self.objective_]

    # ---------------------------------------------------------------------- fit
    @fit_context
    def fit(self, X, y=None, groups=None, validation_tasks=None):
        """Meta-learn ``U`` (and ``v0``, biases, inner lrs) from tasks.

        Parameters
        ----------
        X : list of (X_i, y_i), or array-like (n_tasks, n_samples, n_features), or
            array-like / DataFrame (n_rows, n_features) with ``groups``, or a task source
            (a :class:`~msr_sklearn.data.streams.TaskStream`, a callable
            ``(n_tasks, random_state) -> tasks`` or an iterator of ``(X_i, y_i)``) from
            which every meta-step draws ``meta_batch_size`` fresh tasks
        y : None, array-like (n_tasks, n_samples[, n_outputs]) or (n_rows[, n_outputs])
        groups : array-like (n_rows,), optional
            Task id of each row, for long-format input. Inside a ``Pipeline``,
            ``cross_validate`` or a search, route it with metadata routing and
            ``set_fit_request(groups=True).set_score_request(groups=True)``; a fit
            request without a score request is a ``ValueError`` (every routed
            ``score`` would fail).
        validation_tasks : tasks in any accepted form, optional
            Held-out tasks whose query loss is logged every ``validation_interval``
            steps and drives ``early_stopping`` (instead of holding out
            ``validation_fraction`` of ``X``).

        Returns
        -------
        self
        """
        self._device = check_device(self.device)
        check_score_request(self, groups)
        run = self._validate(X, y, groups, validation_tasks)
        trainer = self._build_or_resume(run)
        trainer.run()
        return self._summarize(trainer)

    def _validate(self, X, y, groups, validation_tasks):
        """Check settings and tasks, read the checkpoint to resume, draw the held-out split.

        The draws before training come from one sampler seeded by ``random_state``, in
        a fixed order (held-out tasks, their support split); a resumed fit replays them
        from the checkpoint's seed before restoring the sampler's state.
        """
        warm = self.warm_start and hasattr(self, "model_")
        stream = as_task_stream(X) if y is None and groups is None else None
        fraction = self._held_out_fraction(stream, validation_tasks)
        if not all(isinstance(c, Callback) for c in self.callbacks or []):
            raise TypeError("callbacks must be a list of msr_sklearn.training.Callback "
                            f"objects; got {[type(c).__name__ for c in self.callbacks]}")
        if self.resume and self.checkpoint_path is None:
            raise ValueError("resume=True needs a checkpoint_path to resume from")
        group, settings = _distributed_context()[0], self._settings()
        saved = (resume_state(self.checkpoint_path, settings, group)
                 if self.resume and not warm else None)  # a warm start has its own state
        seed = saved["info"]["seed"] if saved else shared_seed(self.random_state, group)
        fit_start = saved["info"]["fit_start"] if saved else len(self.history_) if warm else 0
        # local generators only: fit never touches numpy's or torch's global RNG
        sampler = torch.Generator().manual_seed(seed + fit_start)
        # a stream's first draw fixes the feature count, outputs and objective
        tasks = self._check_tasks(*((X, y, groups) if stream is None else
                                    (stream.draw(self.meta_batch_size, seed), None, None)),
                                  fitted=warm)
        if not warm:
            self.objective_, self.n_outputs_ = tasks.objective, tasks.n_outputs
            self.n_features_in_, self.feature_names_in_ = tasks.n_features, tasks.feature_names
            if self.feature_names_in_ is None:
                del self.feature_names_in_
        train, valid, held_out = (tasks if stream is None else stream), None, None
        if validation_tasks is not None:
            valid = self._check_tasks(validation_tasks, None, None, fitted=True)
        elif fraction > 0:
            train, valid, held_out = tasks.hold_out(fraction, sampler)
        split = self._split_options(tasks)
        # one fixed, seeded split: comparable across steps
        valid_batch = None if valid is None else valid.split(self.n_support, sampler, **split)
        info = None if self.checkpoint_path is None else {
            "settings": settings, "seed": seed, "fit_start": fit_start,
            "training tasks": tasks.fingerprint() if stream is None else repr(stream),
            "validation tasks": [held_out, None if validation_tasks is None
                                 else valid.fingerprint()]}
        problem = saved and resume_mismatch(saved["info"], info, self.checkpoint_path,
                                            ("training tasks", "validation tasks"))
        if problem:
            raise ValueError(problem)
        return SimpleNamespace(warm=warm, seed=seed, sampler=sampler, train=train,
                               valid_batch=valid_batch, info=info, saved=saved, group=group,
                               split=split)

    def _held_out_fraction(self, stream, validation_tasks):
        fraction, early = self.validation_fraction, self.early_stopping
        if stream is not None and fraction:
            raise ValueError("validation_fraction needs a finite list of tasks; with a task "
                             "stream pass validation_tasks= instead")
        if early and validation_tasks is None and (stream is not None or fraction == 0):
            raise ValueError(
                "early_stopping=True needs held-out tasks: " + (
                    "with a task stream, pass fit(stream, validation_tasks=...)" if stream
                    else "validation_fraction=0 holds none out; set validation_fraction > 0 "
                         "(or None: 0.1), or pass fit(..., validation_tasks=...)"))
        if stream is not None:
            return 0.0
        return (0.1 if early else 0.0) if fraction is None else fraction

    def _sharing_sparsity(self):
        """``sharing_sparsity`` with ``"auto"`` resolved for the fitted network."""
        if self.sharing_sparsity != "auto":
            return float(self.sharing_sparsity)
        layers = self.model_.network.meta_layers
        one_dense = (len(layers) == 1 and isinstance(layers[0].sharing, DenseSharing)
                     and layers[0].residual is None)  # a residual's R is left alone
        return AUTO_SHARING_SPARSITY if one_dense else 0.0

    def _symmetry_gradient(self):
        """``symmetry_gradient`` with ``"auto"`` resolved for the fitted network."""
        if self.symmetry_gradient != "auto":
            return self.symmetry_gradient
        one_layer = len(self.model_.network.meta_layers) == 1
        return "first_order" if one_layer else "second_order"

    def _settings(self):
        """The parameters that shape the training trajectory, as plain values."""
        params = self.get_params(deep=False)
        if not isinstance(params["random_state"], Integral):
            params["random_state"] = None  # a resumed fit takes the checkpoint's seed
        if params["initial_symmetry"] is not None:  # JSON: the file's hash stands for it
            params["initial_symmetry"] = params["initial_symmetry"].fingerprint()
        return {k: _plain(v) for k, v in params.items() if k not in _NOT_SETTINGS}

    def _build_or_resume(self, run):
        """The meta-model (fresh, warm-started or resumed) and the loop that trains it."""
        if not run.warm:
            if self.initial_symmetry is None:
                network = build_network(random_state=torch.Generator().manual_seed(run.seed),
                                        conv_init=self.conv_init,
                                        **self._architecture(self.n_features_in_,
                                                             self.n_outputs_))
                model = MetaModel(network, self.inner_lr, self.learn_inner_lr)
            else:
                model = self._checked_initial_symmetry().build_model(
                    learn_inner_lr=self.learn_inner_lr)
            if not self.learn_symmetry:  # the outer loop never sees U
                for layer in model.network.meta_layers:
                    layer.sharing.requires_grad_(False)
            self.model_ = model.to(self._device)
            set_residual_lr(self.model_, self.residual_lr)
            self._optimizer = make_meta_optimizer(self.model_, self.meta_lr,
                                                  meta_optimizer=self.meta_optimizer,
                                                  sharing_sparsity=self._sharing_sparsity())
            self._built_with = self._model_settings()
            self.history_ = pd.DataFrame()
        else:  # a warm start keeps Adam's moments; the schedule sets the current meta_lr
            self._check_unchanged_model()
        batches = MetaBatches(run.train, self.meta_batch_size, self.n_support, run.sampler,
                              check=lambda drawn: self._check_tasks(drawn, None, None, True),
                              **run.split)
        callbacks = [History(), DivergenceStop()]
        if run.valid_batch is not None:
            callbacks.append(Validation(run.valid_batch, self.validation_interval))
            if self.early_stopping:
                callbacks.append(EarlyStopping(self.n_iter_no_change, self.tol))
        callbacks += self.callbacks or []
        if self.checkpoint_path is not None:
            callbacks.append(Checkpoint(self.checkpoint_path, self._current_symmetry,
                                        self.checkpoint_interval, run.info))
        if self.verbose:
            callbacks.append(ProgressBar())
        trainer = Trainer(self.model_, self._optimizer, batches, self.n_meta_steps,
                          self.meta_lr, self.meta_lr_schedule, callbacks,
                          engine=dict(loss=self._loss, inner_steps=self.inner_steps,
                                      first_order=self.first_order,
                                      symmetry_gradient=self._symmetry_gradient()),
                          history=self.history_.to_dict("records"), process_group=run.group)
        if run.saved:
            trainer.load_state_dict(run.saved["trainer"])
        return trainer

    def _checked_initial_symmetry(self):
        """``initial_symmetry``, once its architecture and objective match the fit's."""
        symmetry = self.initial_symmetry
        wanted = {k: _plain(v) for k, v in
                  self._architecture(self.n_features_in_, self.n_outputs_).items()}
        differ = [f"{k}={symmetry.architecture.get(k)!r} (the learner's: {v!r})"
                  for k, v in wanted.items() if symmetry.architecture.get(k) != v]
        if symmetry.objective != self.objective_:
            differ.append(f"objective={symmetry.objective!r} (the tasks': {self.objective_!r})")
        if differ:
            raise ValueError("initial_symmetry does not fit this learner and these tasks: it "
                             f"has {'; '.join(differ)}; build it with the learner's "
                             "architecture (e.g. LearnedSymmetry.initial(**settings)) or set "
                             "the learner's parameters to match")
        return symmetry

    def _summarize(self, trainer):
        self.history_ = pd.DataFrame.from_records(trainer.history)
        self.n_iter_ = len(self.history_)
        valid = self.history_.iloc[trainer.fit_start:].get("valid_loss", pd.Series(dtype=float))
        valid = valid.dropna()
        self.best_valid_loss_ = float(valid.min()) if len(valid) else None
        self.best_step_ = int(self.history_["step"][valid.idxmin()]) if len(valid) else None
        self.symmetry_ = self._current_symmetry()
        return self

    def _current_symmetry(self):
        symmetry = LearnedSymmetry.from_model(
            self.model_, self._architecture(self.n_features_in_, self.n_outputs_),
            objective=self.objective_, inner_steps=self.inner_steps)
        # the per-task estimators check their columns against these (not yet in the file)
        symmetry.feature_names = getattr(self, "feature_names_in_", None)
        return symmetry

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

