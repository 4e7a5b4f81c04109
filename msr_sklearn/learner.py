"""MetaSymmetryLearner: meta-learn a sharing pattern U across a list of tasks."""

from __future__ import annotations

import os
import warnings
from numbers import Integral, Real

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from ._validation import Interval, StrOptions, check_device, fit_context
from .meta import (
    LOSSES,
    MetaModel,
    adapted_outputs,
    make_meta_optimizer,
    meta_step,
)
from .nn.network import ACTIVATIONS, LAYER_KINDS, build_network
from .streams import as_task_stream
from .symmetry import LearnedSymmetry
from .tasks import check_tasks, mean_confidence_interval

if torch.distributed.is_available():
    # torch.distributed.nn.functional binds ``group=group.WORLD`` as default arguments
    # when first imported, and torch imports it lazily (through dynamo, at the first
    # optimizer step). Imported after init_process_group, those defaults pin the default
    # group: destroy_process_group() then cannot free it and gloo's threads are torn
    # down at interpreter exit, which aborts the process (SIGABRT) now and then.
    # Imported here, before any group exists, the defaults bind None.
    import torch.distributed.nn.functional  # noqa: F401

_LOSS_OF = {"regression": "mse", "classification": "cross_entropy"}


def _seed_from(random_state):
    """An int seed from an int, a RandomState or None (fresh entropy)."""
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1)[0])
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    return int(random_state)


class MetaSymmetryLearner(BaseEstimator):
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
"msr_conv2d"}, default="msr"
        ``"msr"``: learned dense ``U`` per layer; ``"msr_kron"``: learned Kronecker
        ``U = A ⊗ B`` (for wide layers); ``"dense"``: ``U`` fixed to the identity
        (plain MAML, the baseline). Single-layer kinds (no hidden layers):
        ``"conv1d"`` / ``"locally_connected1d"``, the paper's 1-D baselines;
        ``"conv2d"`` (MAML-Conv) and ``"msr_conv2d"`` (MSR-Conv: a learned sharing on
        the filter tensor of a 2-D convolution), see :func:`msr_sklearn.nn.build_network`.
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
    conv_layer : {"msr_conv2d", "conv2d"}, default="msr_conv2d"
        Front-end convolutions with a learned filter sharing (MSR-Conv) or plain ones.
    pooling : {"none", "mean"}, default="none"
        ``"mean"``: average each front-end channel over its pixels.
    couple_copies : bool, default=False
        MSR-Conv front-end: front-end layers after the first read their input in fields
        of ``n_copies`` channels, so their learned sharing can tie each input copy to
        each output copy, as a group convolution between regular fields does (out of
        reach with ``False``, where each input channel is its own field).
    objective : {"auto", "regression", "classification"}, default="auto"
        ``"auto"``: classification when targets are not floating point.
    n_support : int, default=5
        Support rows per task; the rest of a task is its query.
    support_split : {"random", "first"}, default="random"
        ``"random"`` draws each task's support rows afresh at every meta-step (more
        distinct episodes from the same data); ``"first"`` takes the first
        ``n_support`` rows, for data that carry their own split (e.g. clean support and
        augmented query rows).
    inner_steps : int, default=1
    inner_lr : float, default=0.1
        Initial value of every inner learning rate.
    learn_inner_lr : bool, default=True
    learn_symmetry : bool, default=True
        ``False`` keeps every sharing ``U`` at its initial value (for ``layer="msr"``
        random orthonormal columns) and meta-learns only ``v0``, the biases and the
        inner learning rates: the control that shows what learning ``U`` adds.
    first_order : bool, default=False
        Drop second-order terms of the meta-gradient (faster, usually a bit worse).
    meta_lr : float, default=1e-3
        Adam learning rate of the outer loop.
    meta_batch_size : int, default=32
        Tasks per meta-step (capped at the number of training tasks).
    n_meta_steps : int, default=1000
    validation_fraction : float, default=0.0
        Fraction of the tasks held out to report a validation loss in ``history_``.
    validation_interval : int, default=100
        Meta-steps between validation losses.
    warm_start : bool, default=False
        Continue meta-training from the fitted state on the next ``fit`` (Adam's
        state included). A ``meta_lr`` changed with ``set_params`` in between takes
        effect, which is how to decay the meta learning rate; a changed architecture,
        ``learn_inner_lr`` or ``learn_symmetry`` is refused with a ``ValueError``.
    checkpoint_path : str, path or None, default=None
        If set, the current :class:`LearnedSymmetry` is saved there every
        ``checkpoint_interval`` meta-steps and at the end (atomically: a crash mid-save
        leaves the previous checkpoint intact). Load it with ``LearnedSymmetry.load``.
    checkpoint_interval : int, default=100
    device : str, default="cpu"
    random_state : int, RandomState or None, default=None
        Controls initialization, task sampling and support/query splits.
    verbose : int, default=0
        ``> 0`` shows a progress bar with the current loss.

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

    Examples
    --------
    >>> from msr_sklearn import MetaSymmetryLearner
    >>> from msr_sklearn.datasets import make_translation_tasks
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
        "conv_layer": [StrOptions({"msr_conv2d", "conv2d"})],
        "pooling": [StrOptions({"none", "mean"})],
        "couple_copies": ["boolean"],
        "objective": [StrOptions({"auto", "regression", "classification"})],
        "n_support": [Interval(Integral, 1, None, closed="left")],
        "support_split": [StrOptions({"random", "first"})],
        "inner_steps": [Interval(Integral, 1, None, closed="left")],
        "inner_lr": [Interval(Real, 0, None, closed="neither")],
        "learn_inner_lr": ["boolean"],
        "learn_symmetry": ["boolean"],
        "first_order": ["boolean"],
        "meta_lr": [Interval(Real, 0, None, closed="neither")],
        "meta_batch_size": [Interval(Integral, 1, None, closed="left")],
        "n_meta_steps": [Interval(Integral, 1, None, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "validation_interval": [Interval(Integral, 1, None, closed="left")],
        "warm_start": ["boolean"],
        "checkpoint_path": [None, str, os.PathLike],
        "checkpoint_interval": [Interval(Integral, 1, None, closed="left")],
        "device": [str, torch.device],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(self, hidden_layer_sizes=(), activation="relu", layer="msr", n_filters=8,
                 bias=True, kernel_size=3, input_shape=None, n_copies=1, conv_channels=(),
                 conv_layer="msr_conv2d", pooling="none", couple_copies=False, objective="auto",
                 n_support=5, support_split="random", inner_steps=1, inner_lr=0.1,
                 learn_inner_lr=True, learn_symmetry=True, first_order=False, meta_lr=1e-3,
                 meta_batch_size=32, n_meta_steps=1000,
                 validation_fraction=0.0, validation_interval=100, warm_start=False,
                 checkpoint_path=None, checkpoint_interval=100,
                 device="cpu", random_state=None, verbose=0):
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
        self.objective = objective
        self.n_support = n_support
        self.support_split = support_split
        self.inner_steps = inner_steps
        self.inner_lr = inner_lr
        self.learn_inner_lr = learn_inner_lr
        self.learn_symmetry = learn_symmetry
        self.first_order = first_order
        self.meta_lr = meta_lr
        self.meta_batch_size = meta_batch_size
        self.n_meta_steps = n_meta_steps
        self.validation_fraction = validation_fraction
        self.validation_interval = validation_interval
        self.warm_start = warm_start
        self.checkpoint_path = checkpoint_path
        self.checkpoint_interval = checkpoint_interval
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ helpers
    def _model_settings(self):
        """What the fitted network and its optimizer were built from."""
        return {**self._architecture(self.n_features_in_, self.n_outputs_),
                "learn_inner_lr": bool(self.learn_inner_lr),
                "learn_symmetry": bool(self.learn_symmetry)}

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
                "couple_copies": bool(self.couple_copies)}

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

    @property
    def _shuffle_support(self):
        return self.support_split == "random"

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
            (a :class:`~msr_sklearn.streams.TaskStream`, a callable
            ``(n_tasks, random_state) -> tasks`` or an iterator of ``(X_i, y_i)``) from
            which every meta-step draws ``meta_batch_size`` fresh tasks
        y : None, array-like (n_tasks, n_samples[, n_outputs]) or (n_rows[, n_outputs])
        groups : array-like (n_rows,), optional
            Task id of each row, for long-format input.
        validation_tasks : tasks in any accepted form, optional
            Held-out tasks whose query loss is logged every ``validation_interval``
            steps (instead of holding out ``validation_fraction`` of ``X``).

        Returns
        -------
        self
        """
        self._device = check_device(self.device)
        resume = self.warm_start and hasattr(self, "model_")
        stream = as_task_stream(X) if y is None and groups is None else None
        group, rank, world = _distributed_context()
        seed = _seed_from(self.random_state)
        if group is not None:  # every process must draw the same meta-batches
            shared = [seed]
            torch.distributed.broadcast_object_list(shared, src=0, group=group)
            seed = shared[0]
        # local generators only: fit never touches numpy's or torch's global RNG
        sampler = torch.Generator().manual_seed(seed + (len(self.history_) if resume else 0))
        if stream is None:
            tasks = self._check_tasks(X, y, groups, fitted=resume)
        else:
            if self.validation_fraction > 0:
                raise ValueError("validation_fraction needs a finite list of tasks; with a task "
                                 "stream pass validation_tasks= instead")
            # a first draw fixes the feature count, outputs and objective
            tasks = self._check_tasks(stream.draw(self.meta_batch_size, seed), None, None,
                                      fitted=resume)
        if not resume:
            self.objective_ = tasks.objective
            self.n_outputs_ = tasks.n_outputs
            self.n_features_in_ = tasks.n_features
            self.feature_names_in_ = tasks.feature_names
            if self.feature_names_in_ is None:
                del self.feature_names_in_
            network = build_network(random_state=torch.Generator().manual_seed(seed),
                                    **self._architecture(tasks.n_features, tasks.n_outputs))
            if not self.learn_symmetry:  # the outer loop never sees U
                for param in network.outer_parameters().values():
                    param.requires_grad_(False)
            self.model_ = MetaModel(network, self.inner_lr, self.learn_inner_lr).to(self._device)
            self._optimizer = make_meta_optimizer(self.model_, self.meta_lr)
            self._built_with = self._model_settings()
            self.history_ = pd.DataFrame()
        else:  # a warm start keeps Adam's moments but takes the current meta_lr (decay)
            self._check_unchanged_model()
            for param_group in self._optimizer.param_groups:
                param_group["lr"] = self.meta_lr
        if stream is None:
            train, valid = self._split_validation(tasks, validation_tasks, sampler)
            batch_size = min(self.meta_batch_size, train.n_tasks)
            draw = self._sample_from(train, batch_size, sampler)
        else:
            valid = None if validation_tasks is None else self._check_tasks(
                validation_tasks, None, None, fitted=True)
            batch_size = self.meta_batch_size
            draw = self._draw_from(stream, batch_size, sampler)
        records = self._meta_train(draw, batch_size, valid, sampler, start=len(self.history_))
        self.history_ = pd.concat([self.history_, pd.DataFrame.from_records(records)],
                                  ignore_index=True)
        self.symmetry_ = self._current_symmetry()
        if self.checkpoint_path is not None and rank == 0:
            self.symmetry_.save(self.checkpoint_path)
        return self

    def _current_symmetry(self):
        return LearnedSymmetry.from_model(
            self.model_, self._architecture(self.n_features_in_, self.n_outputs_),
            objective=self.objective_, inner_steps=self.inner_steps)

    def _split_validation(self, tasks, validation_tasks, generator):
        if validation_tasks is not None:
            return tasks, self._check_tasks(validation_tasks, None, None, fitted=True)
        if self.validation_fraction == 0:
            return tasks, None
        n_valid = int(round(self.validation_fraction * tasks.n_tasks))
        if n_valid < 1 or n_valid >= tasks.n_tasks:
            raise ValueError(
                f"validation_fraction={self.validation_fraction} holds out {n_valid} of "
                f"{tasks.n_tasks} tasks; need at least one task on each side")
        perm = torch.randperm(tasks.n_tasks, generator=generator)
        return tasks.subset(perm[n_valid:]), tasks.subset(perm[:n_valid])

    def _sample_from(self, tasks, batch_size, sampler):
        """Meta-batches of ``batch_size`` tasks drawn from a finite task set."""
        def draw():
            index = torch.randint(tasks.n_tasks, (batch_size,), generator=sampler)
            return tasks.split(self.n_support, sampler, index=index.to(self._device),
                               shuffle=self._shuffle_support)
        return draw

    def _draw_from(self, stream, batch_size, sampler):
        """Meta-batches of ``batch_size`` fresh tasks from a stream (only one held)."""
        def draw():
            seed = int(torch.randint(2**31 - 1, (1,), generator=sampler))
            tasks = self._check_tasks(stream.draw(batch_size, seed), None, None, fitted=True)
            return tasks.split(self.n_support, sampler, shuffle=self._shuffle_support)
        return draw

    def _meta_train(self, draw, batch_size, valid, sampler, start):
        model, optimizer = self.model_, self._optimizer
        group, rank, world = _distributed_context()
        if batch_size < world:
            raise ValueError(f"a meta-batch of {batch_size} tasks cannot be split across "
                             f"{world} processes; raise meta_batch_size to at least {world}")
        shard = torch.arange(batch_size).tensor_split(world)[rank].to(self._device)
        kwargs = dict(loss=self._loss, inner_steps=self.inner_steps,
                      first_order=self.first_order, n_total_tasks=batch_size,
                      process_group=group)
        valid_batch = None
        if valid is not None:  # one fixed, seeded split: comparable across steps
            valid_batch = valid.split(self.n_support, sampler, shuffle=self._shuffle_support)
        records = []
        progress = _progress(self.n_meta_steps, self.verbose if rank == 0 else 0)
        try:
            for i in range(self.n_meta_steps):
                batch = draw()
                if group is not None:
                    # every process draws the whole meta-batch (same RNG stream as one
                    # process) and keeps its own shard of it
                    batch = batch.select(shard)
                loss_value = float(meta_step(model, optimizer, batch, **kwargs))
                if not np.isfinite(loss_value):
                    # meta_step skipped the update: the last finite state is kept
                    warnings.warn(
                        f"the meta-loss became non-finite at step {start + i}; training stopped "
                        "and the last finite state was kept (try a smaller meta_lr or inner_lr)",
                        RuntimeWarning, stacklevel=4)
                    records.append(self._record(start + i, float("nan"), None, diverged=True))
                    break
                valid_loss = None
                if valid_batch is not None and ((i + 1) % self.validation_interval == 0
                                                or i + 1 == self.n_meta_steps):
                    valid_loss = self._evaluate_losses(valid_batch).mean().item()
                records.append(self._record(start + i, loss_value, valid_loss))
                if (self.checkpoint_path is not None and rank == 0
                        and (i + 1) % self.checkpoint_interval == 0):
                    self._current_symmetry().save(self.checkpoint_path)
                if progress is not None:
                    progress.update(1)
                    progress.set_postfix(loss=f"{loss_value:.4g}")
        except KeyboardInterrupt:
            # parameters change only inside optimizer.step, all at once: the state is usable
            warnings.warn(f"fit interrupted after {len(records)} meta-steps; the learner keeps "
                          "the state reached so far", RuntimeWarning, stacklevel=4)
        finally:
            if progress is not None:
                progress.close()
        return records

    def _record(self, step, loss, valid_loss, diverged=False):
        lrs = self.model_.inner_lrs.detach().cpu().tolist()
        row = {"step": step, "train_loss": loss,
               "valid_loss": np.nan if valid_loss is None else valid_loss,
               "diverged": diverged}
        row.update({f"inner_lr[{n}]": lr for n, lr in zip(self.model_.inner_names, lrs)})
        return row

    # ----------------------------------------------------------------- scoring
    def _evaluate_losses(self, batch):
        outputs = adapted_outputs(self.model_, batch, loss=self._loss,
                                  inner_steps=self.inner_steps)
        return LOSSES[self._loss](outputs, batch.y_query, batch.query_mask)

    def _adapted_query(self, X, y, groups):
        check_is_fitted(self, "model_")
        tasks = self._check_tasks(X, y, groups, fitted=True)
        generator = torch.Generator().manual_seed(_seed_from(self.random_state) + 1)
        batch = tasks.split(self.n_support, generator, shuffle=self._shuffle_support)
        outputs = adapted_outputs(self.model_, batch, loss=self._loss,
                                  inner_steps=self.inner_steps)
        return tasks, batch, outputs

    def evaluate(self, X, y=None, groups=None, return_summary=False):
        """Adapt on every task's support split and score its query split.

        Each task gets one seeded support/query split (reproducible given
        ``random_state``).

        Returns
        -------
        per_task : pandas.DataFrame
            One row per task: ``n_support``, ``n_query`` and ``mse`` and ``r2``
            (regression) or ``accuracy`` and ``log_loss`` (classification).
        summary : pandas.DataFrame, only with ``return_summary=True``
            Per metric: ``mean``, ``ci95`` (Student-t half-width) and ``n_tasks``.
        """
        tasks, batch, outputs = self._adapted_query(X, y, groups)
        n_query = (batch.query_mask.sum(1) if batch.query_mask is not None
                   else torch.full((tasks.n_tasks,), batch.x_query.shape[1]))
        frame = {"task": np.arange(tasks.n_tasks), "n_support": self.n_support,
                 "n_query": n_query.cpu().numpy()}
        mask = batch.query_mask
        if self.objective_ == "regression":
            frame.update(_regression_metrics(outputs, batch.y_query, mask))
        else:
            frame.update(_classification_metrics(outputs, batch.y_query, mask, tasks.classes))
        per_task = pd.DataFrame(frame)
        if not return_summary:
            return per_task
        metrics = [c for c in per_task.columns if c not in ("task", "n_support", "n_query")]
        rows = [(m, *mean_confidence_interval(per_task[m]), len(per_task)) for m in metrics]
        summary = pd.DataFrame(rows, columns=["metric", "mean", "ci95", "n_tasks"])
        return per_task, summary.set_index("metric")

    def score(self, X, y=None, groups=None):
        """Mean post-adaptation query score over tasks: R² (regression) or accuracy.

        Higher is better, as scikit-learn's model selection expects.
        """
        per_task = self.evaluate(X, y, groups)
        metric = "r2" if self.objective_ == "regression" else "accuracy"
        return float(per_task[metric].mean())

    def make_estimator(self, **params):
        """An unfitted per-task estimator bound to ``symmetry_``.

        Returns an :class:`EquivariantRegressor` or :class:`EquivariantClassifier`
        (by ``objective_``) with ``symmetry=self.symmetry_`` and ``params``.
        """
        check_is_fitted(self, "symmetry_")
        from .estimators import EquivariantClassifier, EquivariantRegressor

        cls = EquivariantRegressor if self.objective_ == "regression" else EquivariantClassifier
        params.setdefault("device", self.device)
        return cls(symmetry=self.symmetry_, **params)

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


def _distributed_context():
    """(process group, rank, world size) when torch.distributed is initialized."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return (torch.distributed.group.WORLD, torch.distributed.get_rank(),
                torch.distributed.get_world_size())
    return None, 0, 1


def _progress(total, verbose):
    if not verbose:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, desc="meta-training", unit="step")


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
