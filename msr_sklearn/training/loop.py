"""The meta-training loop: one place runs meta-steps, and callbacks act at named points.

:class:`Trainer` runs meta-steps (:func:`msr_sklearn.engine.meta_step`) on
:class:`~msr_sklearn.data.tasks.MetaBatches`, with the meta learning rate of
:func:`meta_lr_at`, and calls the hooks of its callbacks in the order they are
listed. Everything else done while training is a callback, as in skorch
(:mod:`msr_sklearn.training.callbacks`): the history, the stop on a non-finite loss, the
validation loss, early stopping, checkpoints and the progress bar.
``MetaSymmetryLearner(callbacks=[...])`` adds yours.

The callback protocol (every method of :class:`Callback` is optional):

* ``initialize()``: once per fit, before a checkpoint is restored; reset state here.
* ``on_train_begin(trainer)``, ``on_train_end(trainer)``: around the loop.
* ``on_step_begin(trainer)``, ``on_step_end(trainer)``: around each meta-step; at
  ``on_step_end``, ``trainer.loss`` is its meta-loss and ``trainer.history[-1]`` its
  row, to which callbacks may add entries (they become columns of ``history_``).
* ``on_validation_end(trainer)``: after a validation loss was written to
  ``trainer.history[-1]["valid_loss"]``.
* ``state_dict()`` / ``load_state_dict(state)``: what a checkpoint keeps of the
  callback (JSON values, numpy arrays, tensors), for an exact resume.

A callback stops training by setting ``trainer.stop_training = True``: the step in
progress finishes its hooks, then ``on_train_end`` runs.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import torch

from ..engine import InnerLoop, meta_step, meta_step_chunk_size
from ..engine.snapshot import StateSnapshot

if torch.distributed.is_available():
    # torch.distributed.nn.functional binds ``group=group.WORLD`` as default arguments
    # when first imported, and torch imports it lazily (through dynamo, at the first
    # optimizer step). Imported after init_process_group, those defaults pin the default
    # group: destroy_process_group() then cannot free it and gloo's threads are torn
    # down at interpreter exit, which aborts the process (SIGABRT) now and then.
    # Imported here, before any group exists, the defaults bind None.
    import torch.distributed.nn.functional  # noqa: F401

__all__ = ["Callback", "SCHEDULES", "Trainer", "meta_lr_at", "seed_from", "shared_seed"]


def _constant(step, n_steps):
    return 1.0


def _cosine(step, n_steps):
    """Linear warmup over the first 5% of the steps, then cosine decay to 1e-2."""
    warmup = int(0.05 * n_steps)
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, n_steps - 1 - warmup)
    return 1e-2 + (1 - 1e-2) * 0.5 * (1 + math.cos(math.pi * progress))


def _inverse_time(step, n_steps):
    """Linear warmup over 5% of the steps, hold to 50%, then ``1 / (1 + (t - 0.5) / 0.01)``.

    The hold leaves the plateaus of meta-learning (rank-2 translation tasks leave theirs
    near step 300 of 1000 at meta_lr 1e-2) and lets deep networks train; the
    inverse-time decay then makes Adam's iterates a running average of the last steps,
    which averages out the noise that task sampling leaves in ``U``
    (``docs/convergence.md``).
    """
    warmup, hold = int(0.05 * n_steps), 0.5 * n_steps
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return 1.0 / (1.0 + max(0.0, step - hold) / (0.01 * n_steps))


#: the meta learning-rate schedules: name -> factor of ``meta_lr`` at (step, n_steps)
_SCHEDULES = {"constant": _constant, "cosine": _cosine, "inverse_time": _inverse_time}
SCHEDULES = tuple(_SCHEDULES)


def meta_lr_at(schedule, step, n_steps, meta_lr):
    """The meta learning rate of step ``step`` of a fit of ``n_steps`` meta-steps.

    A pure function of its arguments, so a resumed fit sets exactly the rates an
    uninterrupted one would. ``"constant"``: ``meta_lr`` throughout. ``"cosine"``: a
    linear warmup over the first 5% of the steps up to ``meta_lr``, then a cosine
    decay to ``meta_lr * 1e-2`` at the last step. ``"inverse_time"``: the same
    warmup, ``meta_lr`` until half of the steps, then ``meta_lr / (1 + (t - 0.5) /
    0.01)`` at the fraction ``t`` of the steps (``meta_lr / 51`` at the end).

    Parameters
    ----------
    schedule : {"constant", "cosine", "inverse_time"}
        The schedule's name (one of :data:`SCHEDULES`).
    step : int
        The step, counted from 0 within the fit.
    n_steps : int
        The fit's number of meta-steps.
    meta_lr : float
        The peak (and constant) meta learning rate.

    Returns
    -------
    float

    Examples
    --------
    >>> from msr_sklearn.training.loop import meta_lr_at
    >>> [round(meta_lr_at("cosine", s, 100, 1e-3), 6) for s in (0, 4, 5, 52, 99)]
    [0.000167, 0.000833, 0.001, 0.000505, 1e-05]
    >>> meta_lr_at("constant", 99, 100, 1e-3)
    0.001
    >>> [round(meta_lr_at("inverse_time", s, 1000, 1e-2), 5) for s in (0, 49, 50, 500, 600, 999)]
    [0.0002, 0.0098, 0.01, 0.01, 0.00091, 0.0002]
    """
    if schedule not in _SCHEDULES:
        raise ValueError(f"meta_lr_schedule must be one of {SCHEDULES}; got {schedule!r}")
    return meta_lr * _SCHEDULES[schedule](step, n_steps)


class Callback:
    """Base class of training callbacks: every hook does nothing until overridden.

    See the module's docstring for the order of the hooks and what the trainer
    offers them (:class:`Trainer`'s attributes).

    Examples
    --------
    A callback that records the norm of the first layer's ``v0`` at every step and
    stops training once the meta-loss falls below a threshold:

    >>> from msr_sklearn import MetaSymmetryLearner
    >>> from msr_sklearn.datasets import make_translation_tasks
    >>> from msr_sklearn.training.loop import Callback
    >>> class StopBelow(Callback):
    ...     def __init__(self, threshold):
    ...         self.threshold = threshold
    ...     def on_step_end(self, trainer):
    ...         v0 = trainer.model.initial_inner()["0.weight.filters"]
    ...         trainer.history[-1]["v0_norm"] = float(v0.detach().norm())
    ...         if trainer.loss < self.threshold:
    ...             trainer.stop_training = True
    >>> X, y = make_translation_tasks(n_tasks=50, n_features=8, random_state=0)
    >>> learner = MetaSymmetryLearner(n_filters=3, bias=False, n_support=1, meta_lr=1e-2,
    ...                               meta_batch_size=8, n_meta_steps=500,
    ...                               callbacks=[StopBelow(0.5)], random_state=0).fit(X, y)
    >>> bool(len(learner.history_) < 500), bool(learner.history_["train_loss"].iloc[-1] < 0.5)
    (True, True)
    >>> "v0_norm" in learner.history_
    True
    """

    @property
    def name(self):
        """The key of the callback's state in a checkpoint."""
        return type(self).__name__

    def initialize(self):
        """Reset per-fit state; called once per fit, before a checkpoint is restored."""

    def on_train_begin(self, trainer):
        """Called before the first meta-step."""

    def on_step_begin(self, trainer):
        """Called before each meta-step."""

    def on_step_end(self, trainer):
        """Called after each meta-step."""

    def on_validation_end(self, trainer):
        """Called after a validation loss was recorded."""

    def on_train_end(self, trainer):
        """Called after the last meta-step (also after a stop or an interrupt)."""

    def state_dict(self):
        """What a checkpoint keeps of the callback (default: nothing)."""
        return {}

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned."""


class Trainer:
    """Run meta-steps on meta-batches and call the callbacks' hooks at each point.

    The meta learning rate of every step comes from :func:`meta_lr_at` and is set on
    the optimizer's parameter groups before the step. Under ``torch.distributed``
    every process draws the whole meta-batch and takes its own shard of it, and
    :func:`~msr_sklearn.engine.meta_step` all-reduces the gradients.

    Parameters
    ----------
    model : MetaModel
        The meta-parameters, trained in place.
    optimizer : torch.optim.Optimizer
        Over the model's learned parameters (:func:`~msr_sklearn.engine.make_meta_optimizer`).
    batches : MetaBatches
        The meta-batches; its ``generator`` is part of :meth:`state_dict`.
    n_steps : int
        Meta-steps of this fit.
    meta_lr : float
        The meta learning rate that ``schedule`` scales.
    schedule : {"constant", "cosine"}, default="constant"
        The meta learning-rate schedule, over this fit's ``n_steps``.
    callbacks : list of Callback, default=()
        Hooks called in this order.
    loop : InnerLoop or None, default=None
        The inner loop of every meta-step (:func:`~msr_sklearn.engine.meta_step`);
        :class:`~msr_sklearn.training.callbacks.Validation` reads it too. ``None``: the
        default :class:`~msr_sklearn.engine.InnerLoop`.
    history : list of dict or None, default=None
        The rows of earlier fits (a warm start); this fit's steps are numbered on
        from them.
    process_group : ProcessGroup or None, default=None
        The ``torch.distributed`` group; ``None``: one process.
    chunk_size : int, "auto" or None, default="auto"
        Tasks backpropagated at once within a meta-step (``meta_step``'s
        ``chunk_size``); ``"auto"``: :func:`~msr_sklearn.engine.meta_step_chunk_size`
        of the first meta-batch of each shape; ``None``: the whole meta-batch.

    Attributes
    ----------
    step : int
        The global index of the current meta-step (after the loop: the next one).
    fit_start : int
        The global index of this fit's first step; ``fit_step = step - fit_start``.
    loss : float
        The meta-loss of the current step (NaN or inf where it diverged).
    loss_limit : float
        A meta-loss above it counts as diverged: ``meta_step`` applies no update and
        undoes the previous one (:class:`~msr_sklearn.training.callbacks.DivergenceStop`
        sets it; ``inf`` without).
    diverged : bool
        Whether the current step's meta-loss was non-finite or above ``loss_limit``
        (or a meta-gradient non-finite): the state went back to before the last update.
    lr : float
        The meta learning rate of the current step.
    history : list of dict
        One row per meta-step, of this fit and the earlier ones.
    stop_training : bool
        Set it to stop after the current step.
    interrupted : bool
        Whether a ``KeyboardInterrupt`` ended the loop.
    finished : bool
        Whether the loop ran to its end, or was stopped (not interrupted).
    rank, world_size : int
        This process's rank and the number of processes.

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.datasets import make_translation_tasks
    >>> from msr_sklearn.engine import MetaModel, make_meta_optimizer
    >>> from msr_sklearn.models import MLP
    >>> from msr_sklearn.data.tasks import MetaBatches, check_tasks
    >>> from msr_sklearn.training import Trainer
    >>> from msr_sklearn.training.callbacks import History
    >>> tasks = check_tasks(make_translation_tasks(n_tasks=20, n_features=6, random_state=0))
    >>> model = MetaModel(MLP(6, tasks.n_outputs))
    >>> batches = MetaBatches(tasks, 8, 1, torch.Generator().manual_seed(0))
    >>> trainer = Trainer(model, make_meta_optimizer(model), batches, n_steps=5,
    ...                   meta_lr=1e-3, callbacks=[History()]).run()
    >>> trainer.step, [row["step"] for row in trainer.history]
    (5, [0, 1, 2, 3, 4])
    """

    def __init__(self, model, optimizer, batches, n_steps, meta_lr, schedule="constant",
                 callbacks=(), loop=None, history=None, process_group=None,
                 chunk_size="auto"):
        self.model, self.optimizer, self.batches = model, optimizer, batches
        self.chunk_size, self._chunk_sizes = chunk_size, {}
        self.n_steps, self.meta_lr, self.schedule = n_steps, meta_lr, schedule
        self.callbacks = list(callbacks)
        self.loop = InnerLoop() if loop is None else loop
        self.history = list(history or [])
        self.step = self.fit_start = len(self.history)
        self.process_group = process_group
        self.rank, self.world_size = ((torch.distributed.get_rank(process_group),
                                       torch.distributed.get_world_size(process_group))
                                      if process_group is not None else (0, 1))
        self.loss = self.lr = float("nan")
        self.loss_limit = float("inf")
        self.stop_training = self.interrupted = self.finished = self.diverged = False
        # taken by meta_step before each update: undoes a diverged or interrupted one
        self._snapshot = StateSnapshot(model, optimizer)
        self._in_step = False  # between a meta-step and its index's increment
        names = [cb.name for cb in self.callbacks]
        if len(set(names)) < len(names):
            raise ValueError(f"callbacks need distinct names (their checkpoint keys); got "
                             f"{names}: give a callback class its own `name` property")
        for callback in self.callbacks:
            callback.initialize()

    @property
    def fit_step(self):
        """The index of the current step within this fit."""
        return self.step - self.fit_start

    def notify(self, hook):
        """Call ``hook`` (e.g. ``"on_step_end"``) of every callback, in order."""
        for callback in self.callbacks:
            getattr(callback, hook)(self)

    def run(self):
        """Meta-train until ``n_steps`` steps, a stop or an interrupt; returns self."""
        if self.finished:  # restored from the checkpoint of a finished fit
            return self
        size = self.batches.batch_size
        if size < self.world_size:
            raise ValueError(f"a meta-batch of {size} tasks cannot be split across "
                             f"{self.world_size} processes; raise meta_batch_size to at "
                             f"least {self.world_size}")
        device = next(self.model.parameters()).device
        shard = torch.arange(size).tensor_split(self.world_size)[self.rank].to(device)
        self.notify("on_train_begin")
        try:
            while self.fit_step < self.n_steps and not self.stop_training:
                self.notify("on_step_begin")
                self.lr = meta_lr_at(self.schedule, self.fit_step, self.n_steps, self.meta_lr)
                for group in self.optimizer.param_groups:  # a group may scale the rate
                    group["lr"] = self.lr * group.get("lr_scale", 1.0)
                batch = next(self.batches)
                if self.process_group is not None:  # same draws everywhere, own shard
                    batch = batch.select(shard)
                self.loss = float(meta_step(self.model, self.optimizer, batch, self.loop,
                                            n_total_tasks=size,
                                            process_group=self.process_group,
                                            chunk_size=self._chunk_size_for(batch),
                                            max_loss=self.loss_limit, snapshot=self._snapshot))
                self.diverged = not (math.isfinite(self.loss) and self.loss <= self.loss_limit)
                self._in_step = True
                self._snapshot.live = False  # the update is complete
                self.notify("on_step_end")
                self.step += 1
                self._in_step = False
        except KeyboardInterrupt:
            if self._in_step:  # the step's update is applied: it counts
                self.step += 1
            elif self._snapshot.live:  # inside (or just after) the update: undo all of it
                self._snapshot.restore()
            self.interrupted, self._in_step = True, False
            warnings.warn(f"fit interrupted after {self.fit_step} meta-steps; the learner "
                          "keeps the state reached so far", RuntimeWarning, stacklevel=4)
        self.finished = not self.interrupted
        self.notify("on_train_end")
        return self

    def _chunk_size_for(self, batch):
        if self.chunk_size != "auto":
            return self.chunk_size
        key = (tuple(batch.x_support.shape), tuple(batch.x_query.shape))
        if key not in self._chunk_sizes:
            self._chunk_sizes[key] = meta_step_chunk_size(self.model, batch, self.loop)
        return self._chunk_sizes[key]

    def state_dict(self):
        """Everything an exact resume needs: model, Adam, sampler, step, history, callbacks.

        Called in ``on_step_end`` it describes the state after the current step.
        """
        optimizer = self.optimizer.state_dict()["state"]
        return {"step": self.step + self._in_step, "fit_start": self.fit_start,
                "finished": self.finished, "stop_training": self.stop_training,
                "model": dict(self.model.state_dict()),
                "optimizer": {str(k): v for k, v in optimizer.items()},
                "generator": self.batches.generator.get_state(),
                "history": _columns(self.history),
                "callbacks": {cb.name: cb.state_dict() for cb in self.callbacks}}

    def load_state_dict(self, state):
        """Restore a :meth:`state_dict`.

        A state whose model tensors or sampler state do not fit this trainer's is a
        ``ValueError`` before anything changes; the optimizer checks its own state.
        """
        own = self.model.state_dict()
        model, generator = state["model"], state["generator"]
        if set(model) != set(own) or any(model[k].shape != v.shape for k, v in own.items()):
            raise ValueError("its model state does not have the model's tensors and shapes")
        if generator.shape != self.batches.generator.get_state().shape:
            raise ValueError(f"its sampler state has shape {tuple(generator.shape)}, not a "
                             "torch.Generator's")
        groups = self.optimizer.state_dict()["param_groups"]  # the settings were checked
        self.optimizer.load_state_dict({"state": {int(k): v for k, v in
                                                  state["optimizer"].items()},
                                        "param_groups": groups})
        self.model.load_state_dict(model)
        self.batches.generator.set_state(generator)
        self.step, self.fit_start = state["step"], state["fit_start"]
        self.finished, self.stop_training = state["finished"], state["stop_training"]
        self.history = pd.DataFrame(state["history"]).to_dict("records")
        for callback in self.callbacks:
            if callback.name in state["callbacks"]:
                callback.load_state_dict(state["callbacks"][callback.name])


def _columns(rows):
    """History rows as columns: numpy arrays where numeric, else lists."""
    frame = pd.DataFrame.from_records(rows)
    return {name: values if values.dtype.kind in "biuf" else values.tolist()
            for name, values in ((n, frame[n].to_numpy()) for n in frame.columns)}


def _distributed_context():
    """(process group, rank, world size) when torch.distributed is initialized."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return (torch.distributed.group.WORLD, torch.distributed.get_rank(),
                torch.distributed.get_world_size())
    return None, 0, 1


def seed_from(random_state):
    """An int seed from an int, a ``RandomState`` or None (fresh entropy).

    Parameters
    ----------
    random_state : int, RandomState or None
        As scikit-learn's ``random_state``.

    Returns
    -------
    int

    Examples
    --------
    >>> from msr_sklearn.training.loop import seed_from
    >>> seed_from(3)
    3
    """
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1)[0])
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    return int(random_state)


def shared_seed(random_state, process_group=None):
    """:func:`seed_from` of rank 0, on every process of ``process_group``.

    Every process must draw the same meta-batches, even with ``random_state=None``.

    Parameters
    ----------
    random_state : int, RandomState or None
        As scikit-learn's ``random_state``.
    process_group : ProcessGroup or None, default=None
        The ``torch.distributed`` group; ``None``: one process.

    Returns
    -------
    int

    Examples
    --------
    >>> from msr_sklearn.training.loop import shared_seed
    >>> shared_seed(7)
    7
    """
    seed = seed_from(random_state)
    if process_group is None:
        return seed
    shared = [seed]
    torch.distributed.broadcast_object_list(shared, src=0, group=process_group)
    return shared[0]
