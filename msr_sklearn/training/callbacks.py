"""The built-in training callbacks: history, divergence, stability warnings, sharing
pruning, validation, early stopping, checkpoints and the progress bar
(:mod:`msr_sklearn.training.loop` runs them).

:class:`~msr_sklearn.MetaSymmetryLearner` runs, in this order: :class:`History`,
:class:`DivergenceStop`, :class:`StabilityWarnings`, :class:`SharingPruning` (for one
dense layer under ``sharing_sparsity="auto"``), :class:`Validation` (with held-out
tasks), your ``callbacks`` in their order (:class:`EarlyStopping` among them), your
:class:`Checkpoint` (last, so it writes what the others left) and :class:`ProgressBar`
(with ``verbose``).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch

from ..engine import evaluate_task_losses
from ..symmetry import _plain
from .checkpoints import check_training_state, read_checkpoint, resume_hint, write_checkpoint
from .loop import Callback
from .pruning import SharingPruning

__all__ = ["Checkpoint", "DivergenceStop", "EarlyStopping", "History", "ProgressBar",
           "SharingPruning", "StabilityWarnings", "Validation", "resume_mismatch",
           "resume_state"]


class History(Callback):
    """Append one row per meta-step to ``trainer.history``.

    Columns: ``step``, ``train_loss``, ``valid_loss`` (NaN unless :class:`Validation`
    fills it), ``diverged``, ``inner_lr[<name>]`` per inner learning rate, and
    ``meta_lr`` (the scheduled rate of the step).

    Examples
    --------
    >>> from msr_sklearn import MetaSymmetryLearner
    >>> from msr_sklearn.datasets import make_translation_tasks
    >>> X, y = make_translation_tasks(n_tasks=20, n_features=6, random_state=0)
    >>> learner = MetaSymmetryLearner(n_filters=3, n_meta_steps=3, random_state=0).fit(X, y)
    >>> list(learner.history_.columns)  # doctest: +NORMALIZE_WHITESPACE
    ['step', 'train_loss', 'valid_loss', 'diverged', 'inner_lr[0.weight.filters]',
     'inner_lr[0.bias]', 'meta_lr']
    """

    def on_step_end(self, trainer):
        lrs = trainer.model.inner_lrs.detach().cpu().tolist()
        row = {"step": trainer.step, "train_loss": trainer.loss, "valid_loss": np.nan,
               "diverged": False}
        row.update({f"inner_lr[{n}]": lr for n, lr in zip(trainer.model.inner_names, lrs)})
        row["meta_lr"] = trainer.lr
        trainer.history.append(row)


class DivergenceStop(Callback):
    """Stop, with a ``RuntimeWarning``, at the first meta-step that diverged.

    A step diverged when its meta-loss is non-finite, or more than ``growth`` times the
    largest of the run's first ``baseline_steps`` meta-losses (earlier fits' included:
    the untrained scale), or a meta-gradient is non-finite. The callback sets
    ``trainer.loss_limit`` before every step, so :func:`~msr_sklearn.engine.meta_step`
    rejects such a step before applying it and undoes the update that led there: the
    learner keeps the state of the last step whose meta-loss was finite (and Adam's
    state of then). The diverged step's row gets ``diverged=True`` and a NaN
    ``train_loss``.

    Parameters
    ----------
    growth : float, default=1e4
        How many times the baseline a meta-loss may reach. Losses of a sane run fall
        below their first values; a loss orders of magnitude above them is a run that
        diverges, suddenly (the next steps overflow) or step by step.
    baseline_steps : int, default=10
        The first meta-losses of the run that set the baseline (their maximum, so the
        spread of a few meta-batches is in it).

    Examples
    --------
    >>> import warnings
    >>> import numpy as np
    >>> from msr_sklearn import MetaSymmetryLearner
    >>> from msr_sklearn.datasets import make_translation_tasks
    >>> X, y = make_translation_tasks(n_tasks=20, n_features=6, random_state=0)
    >>> with warnings.catch_warnings(record=True):
    ...     learner = MetaSymmetryLearner(n_filters=3, meta_lr=1e6, inner_lr=50.0,
    ...                                   n_meta_steps=100, random_state=0).fit(X, y)
    >>> bool(learner.history_["diverged"].iloc[-1]), len(learner.history_) < 100
    (True, True)
    >>> bool(np.isfinite(learner.score(X, y)))  # the update that diverged was undone
    True
    """

    def __init__(self, growth=1e4, baseline_steps=10):
        if not growth > 1:
            raise ValueError(f"growth must be a number > 1; got {growth!r}")
        if isinstance(baseline_steps, bool) or not isinstance(baseline_steps, int) \
                or baseline_steps < 1:
            raise ValueError("baseline_steps must be a positive integer; got "
                             f"{baseline_steps!r}")
        self.growth, self.baseline_steps = growth, baseline_steps

    def on_train_begin(self, trainer):
        # the baseline from the history (earlier fits', or restored by a resume)
        losses = [row["train_loss"] for row in trainer.history
                  if not row.get("diverged") and np.isfinite(row["train_loss"])]
        self.baseline = losses[:self.baseline_steps]
        trainer.loss_limit = self._limit()

    def _limit(self):
        # no limit before a first loss, nor from losses of 0 (a perfect start)
        largest = max(self.baseline, default=0.0)
        return self.growth * largest if largest > 0 else float("inf")

    def on_step_end(self, trainer):
        if not trainer.diverged:
            if len(self.baseline) < self.baseline_steps:
                self.baseline.append(trainer.loss)
                trainer.loss_limit = self._limit()
            return
        what = ("became non-finite" if not np.isfinite(trainer.loss) else
                f"grew to {trainer.loss:.3g}, more than {self.growth:g} times its first "
                f"values (up to {max(self.baseline):.3g}),")
        warnings.warn(f"the meta-loss {what} at step {trainer.step}; training stopped and "
                      "the last finite state was kept, from before the update that diverged "
                      "(try a smaller meta_lr or inner_lr)", RuntimeWarning, stacklevel=6)
        if trainer.history and trainer.history[-1]["step"] == trainer.step:
            trainer.history[-1].update(train_loss=float("nan"), diverged=True)
        trainer.stop_training = True


class StabilityWarnings(Callback):
    """Warn (``RuntimeWarning``) when training goes wrong while the loss stays finite.

    Two failures that :class:`DivergenceStop` cannot see:

    * a learned inner learning rate turns negative, below ``-negative_tol`` times its
      value at the start of the fit: the inner loop then *ascends* its support loss
      along that tensor, and the meta-learned solution depends on that (one warning
      per rate and fit; a bias's rate that drifts a little below 0 is common and
      harmless, and is not reported);
    * the meta-loss grows by orders of magnitude: above ``growth`` times the median of
      the fit's first ``n_reference`` finite losses (one warning per fit), the spike
      that precedes a network dying on the plateau of a constant prediction.

    Training goes on in both cases; the warning says what to try.

    Parameters
    ----------
    growth : float, default=100.0
        The factor over the early losses that counts as a blow-up.
    n_reference : int, default=10
        Finite losses at the start of the fit whose median is the reference.
    negative_tol : float >= 0, default=0.5
        How far below 0, relative to its initial value, a rate must go to be reported.

    Examples
    --------
    >>> import warnings
    >>> from msr_sklearn import MetaSymmetryLearner
    >>> from msr_sklearn.datasets import make_translation_tasks
    >>> X, y = make_translation_tasks(n_tasks=40, n_features=8, random_state=0)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     _ = MetaSymmetryLearner(n_filters=3, n_support=1, inner_lr=0.01, meta_lr=0.1,
    ...                             meta_lr_schedule="constant", meta_optimizer="adam",
    ...                             n_meta_steps=30, random_state=0).fit(X, y)
    >>> any("turned negative" in str(w.message) for w in caught)
    True
    """

    def __init__(self, growth=100.0, n_reference=10, negative_tol=0.5):
        self.growth = growth
        self.n_reference = n_reference
        self.negative_tol = negative_tol

    def initialize(self):
        self.reference, self.loss_warned, self.negative, self.initial = [], False, [], None

    def on_train_begin(self, trainer):
        if self.initial is None:  # not restored from a checkpoint
            self.initial = trainer.model.inner_lrs.detach().abs().cpu().tolist()

    def on_step_end(self, trainer):
        loss = trainer.loss
        if np.isfinite(loss):
            if len(self.reference) < self.n_reference:
                self.reference.append(float(loss))
            elif not self.loss_warned and loss > self.growth * np.median(self.reference):
                self.loss_warned = True
                warnings.warn(
                    f"the meta-loss grew to {loss:.4g} at step {trainer.step}, more than "
                    f"{self.growth:g} times its early value ({np.median(self.reference):.4g}):"
                    " training is unstable and the network may end on a constant "
                    "prediction; try a smaller meta_lr", RuntimeWarning, stacklevel=6)
        lrs = trainer.model.inner_lrs
        if not lrs.requires_grad:
            return
        if self.initial is None:
            self.on_train_begin(trainer)
        for name, lr, start in zip(trainer.model.inner_names, lrs.detach().cpu().tolist(),
                                   self.initial):
            if lr < -self.negative_tol * start and name not in self.negative:
                self.negative.append(name)
                warnings.warn(
                    f"the learned inner learning rate of {name!r} turned negative "
                    f"({lr:.3g}) at step {trainer.step}: the inner loop now ascends the "
                    "support loss; if that is not intended, try a smaller meta_lr or "
                    "inner_lr, or learn_inner_lr=False", RuntimeWarning, stacklevel=6)

    def state_dict(self):
        return {"reference": list(self.reference), "loss_warned": self.loss_warned,
                "negative": list(self.negative), "initial": list(self.initial or [])}

    def load_state_dict(self, state):
        self.reference = [float(v) for v in state["reference"]]
        self.loss_warned, self.negative = bool(state["loss_warned"]), list(state["negative"])
        self.initial = [float(v) for v in state.get("initial", [])] or None


class Validation(Callback):
    """Record the mean query loss of held-out tasks every ``interval`` steps.

    Also at the fit's last step; never at a diverged step. Writes
    ``trainer.history[-1]["valid_loss"]``, then calls every callback's
    ``on_validation_end``.

    Parameters
    ----------
    batch : TaskBatch
        The held-out tasks, split once (so the losses are comparable across steps).
    interval : int, default=100
        Meta-steps between validation losses.

    Examples
    --------
    >>> from msr_sklearn import MetaSymmetryLearner
    >>> from msr_sklearn.datasets import make_translation_tasks
    >>> X, y = make_translation_tasks(n_tasks=20, n_features=6, random_state=0)
    >>> learner = MetaSymmetryLearner(n_filters=3, n_meta_steps=25, validation_fraction=0.2,
    ...                               validation_interval=10, random_state=0).fit(X, y)
    >>> learner.history_.dropna(subset="valid_loss")["step"].tolist()
    [9, 19, 24]
    """

    def __init__(self, batch, interval=100):
        self.batch = batch
        self.interval = interval

    def on_step_end(self, trainer):
        done = trainer.fit_step + 1
        if trainer.diverged or (done % self.interval and done != trainer.n_steps):
            return
        losses = evaluate_task_losses(trainer.model, self.batch, trainer.loop)
        trainer.history[-1]["valid_loss"] = losses.mean().item()
        trainer.notify("on_validation_end")


class EarlyStopping(Callback):
    """Stop when the validation loss stops improving, and keep the best state.

    As scikit-learn's ``MLPRegressor(early_stopping=True)``: a validation loss that is
    not below the best one minus ``tol`` counts as no improvement, and
    ``n_iter_no_change`` of them in a row stop training. At the end the model gets
    the state (parameters and inner learning rates) that had the lowest validation
    loss; Adam's state stays at the last step.

    Parameters
    ----------
    n_iter_no_change : int, default=10
        Validation losses in a row without improvement that stop training.
    tol : float, default=1e-4
        The improvement that counts.

    Attributes
    ----------
    best_loss : float
        The lowest validation loss so far.
    best_step : int or None
        The step that reached it.
    wait : int
        Validation losses since the last improvement by ``tol``.

    Examples
    --------
    >>> from msr_sklearn import MetaSymmetryLearner
    >>> from msr_sklearn.datasets import make_translation_tasks
    >>> from msr_sklearn.training.callbacks import EarlyStopping
    >>> X, y = make_translation_tasks(n_tasks=20, n_features=6, random_state=0)
    >>> learner = MetaSymmetryLearner(n_filters=3, n_meta_steps=1000, validation_fraction=0.2,
    ...                               validation_interval=5, random_state=0,
    ...                               callbacks=[EarlyStopping(n_iter_no_change=2, tol=1.0)])
    >>> len(learner.fit(X, y).history_)  # a first check, then 2 that did not improve by 1.0
    15
    """

    def __init__(self, n_iter_no_change=10, tol=1e-4):
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol

    def initialize(self):
        self.best_loss, self.best_step, self.wait, self.best_state = float("inf"), None, 0, None

    def on_validation_end(self, trainer):
        loss = trainer.history[-1]["valid_loss"]
        self.wait = 0 if loss < self.best_loss - self.tol else self.wait + 1
        if loss < self.best_loss:
            self.best_loss, self.best_step = loss, trainer.step
            self.best_state = {k: v.detach().clone() for k, v in
                               trainer.model.state_dict().items()}
        if self.wait >= self.n_iter_no_change:
            trainer.stop_training = True

    def on_train_end(self, trainer):
        if self.best_state is not None:
            trainer.model.load_state_dict(self.best_state)

    def state_dict(self):  # no best yet: None (JSON has no infinity)
        return {"best_loss": None if self.best_step is None else self.best_loss,
                "best_step": self.best_step, "wait": self.wait, "best_state": self.best_state}

    def load_state_dict(self, state):
        self.best_step, self.wait, self.best_state = (state["best_step"], state["wait"],
                                                      state["best_state"])
        self.best_loss = float("inf") if self.best_step is None else state["best_loss"]


class Checkpoint(Callback):
    """Write the whole training state every ``interval`` steps and when training ends.

    Give it to :class:`~msr_sklearn.MetaSymmetryLearner` as ``callbacks=[Checkpoint(
    path)]``. The file is a :class:`~msr_sklearn.LearnedSymmetry` file of the current
    model plus the training state (meta-parameters, the optimizer's state, the step,
    the sampler's state, the history, the settings and fingerprints of the tasks,
    :func:`~msr_sklearn.training.checkpoints.write_checkpoint`), written atomically by
    rank 0 only: a crash at any moment leaves the previous file intact, and a fit
    interrupted by ``KeyboardInterrupt`` leaves the last periodic checkpoint.
    ``LearnedSymmetry.load`` reads the current symmetry from it. The learner checks the
    location when ``fit`` starts and holds the checkpoint for the whole fit
    (:func:`~msr_sklearn.training.checkpoints.using_checkpoint`), so a second fit with
    the same path is refused.

    Parameters
    ----------
    path : str or path
        The file.
    interval : int, default=100
        Meta-steps between checkpoints.
    resume : bool, default=False
        Continue from ``path`` if the file exists (else start afresh): a run killed at
        any moment and started again with the same call ends as an uninterrupted run
        (bit for bit on CPU). A checkpoint of other settings or tasks, or a damaged one,
        is a ``ValueError`` and stays untouched; a finished run's returns its final
        state. A warm start continues its own state instead.

    Examples
    --------
    >>> import tempfile, os
    >>> from msr_sklearn import LearnedSymmetry, MetaSymmetryLearner
    >>> from msr_sklearn.datasets import make_translation_tasks
    >>> X, y = make_translation_tasks(n_tasks=20, n_features=6, random_state=0)
    >>> path = os.path.join(tempfile.mkdtemp(), "run.msr")
    >>> from msr_sklearn.training.callbacks import Checkpoint
    >>> learner = MetaSymmetryLearner(n_filters=3, n_meta_steps=20, random_state=0,
    ...                               callbacks=[Checkpoint(path, interval=10)]).fit(X, y)
    >>> LearnedSymmetry.load(path) == learner.symmetry_
    True
    >>> again = MetaSymmetryLearner(n_filters=3, n_meta_steps=20, random_state=0,
    ...                             callbacks=[Checkpoint(path, resume=True)]).fit(X, y)
    >>> again.symmetry_ == learner.symmetry_   # a finished run: nothing left to do
    True
    """

    def __init__(self, path, interval=100, resume=False):
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"interval must be a positive integer; got {interval!r}")
        self.path, self.interval, self.resume = path, interval, bool(resume)
        self.symmetry, self.info = None, None

    def prepare(self, symmetry, info):
        """Called by the learner before training: what to write besides the state.

        Parameters
        ----------
        symmetry : callable
            Returns the :class:`~msr_sklearn.LearnedSymmetry` of the current model.
        info : dict
            JSON values that identify the run (settings, seed, task fingerprints), which
            a resume compares (:func:`resume_mismatch`).
        """
        self.symmetry, self.info = symmetry, info

    def on_step_end(self, trainer):
        done = trainer.fit_step + 1  # the last step's state is written by on_train_end
        if not trainer.stop_training and done % self.interval == 0 and done < trainer.n_steps:
            self.write(trainer)

    def on_train_end(self, trainer):
        if not trainer.interrupted:
            self.write(trainer)

    def write(self, trainer):
        """Write the trainer's state now (on rank 0)."""
        if self.symmetry is None:
            raise RuntimeError("Checkpoint.prepare() was not called: give the Checkpoint to "
                               "MetaSymmetryLearner(callbacks=[...])")
        if trainer.rank == 0:
            write_checkpoint(self.path, self.symmetry(),
                             {"info": self.info or {}, "trainer": trainer.state_dict()})


def resume_state(path, settings, process_group=None):
    """The training state in the checkpoint ``path``, or None when there is no file.

    Every process reads the file; all of them raise the same ``ValueError`` when any
    could not read it (:func:`~msr_sklearn.training.checkpoints.read_checkpoint` checks
    every tensor, :func:`~msr_sklearn.training.checkpoints.check_training_state` the
    trainer's fields), or read another state, or when the checkpoint was written with
    other ``settings`` (:func:`resume_mismatch`). The message ends with what to do.

    Parameters
    ----------
    path : str or path
        The checkpoint.
    settings : dict
        The run's settings, compared with the checkpoint's ``info["settings"]``.
    process_group : ProcessGroup or None, default=None
        The ``torch.distributed`` group; ``None``: one process.

    Returns
    -------
    dict or None
        ``{"info": ..., "trainer": Trainer.state_dict()}``.

    Examples
    --------
    >>> from msr_sklearn.training.callbacks import resume_state
    >>> resume_state("no-such-file.msr", {}) is None
    True
    """
    try:
        state = read_checkpoint(path)[1] if os.path.exists(path) else None
        if state is not None:
            try:
                check_training_state(state)
            except ValueError as exc:
                raise ValueError(f"cannot read a training checkpoint from {str(path)!r}: "
                                 f"{exc}") from exc
        # every process compares its own settings, and all hear of any difference
        mine = None if state is None else (
            resume_mismatch(state["info"], {"settings": settings}, path, ("settings",))
            or [state["trainer"]["step"], state["info"]["seed"]])
    except ValueError as exc:
        state, mine = None, f"{exc}; {resume_hint(path)}"
    seen = [mine]
    if process_group is not None:
        seen = [None] * torch.distributed.get_world_size(process_group)
        torch.distributed.all_gather_object(seen, mine, group=process_group)
    errors = [s for s in seen if isinstance(s, str)]
    if errors:
        raise ValueError(errors[0])
    if any(s != seen[0] for s in seen):
        raise ValueError(f"the processes read different checkpoints at {str(path)!r}; every "
                         "process must see the same checkpoint_path (a shared file system)")
    return state


def resume_mismatch(saved, info, path, keys):
    """What differs between a checkpoint's ``info`` and a run's, as a message, or None.

    Parameters
    ----------
    saved : dict
        The checkpoint's ``info``.
    info : dict
        The run's.
    path : str or path
        The checkpoint, for the message.
    keys : sequence of str
        What to compare: ``"settings"`` (a dict, compared setting by setting), or
        any other key, compared as a whole (e.g. ``"training tasks"``, a fingerprint).

    Returns
    -------
    str or None
        A message for a ``ValueError`` that names what differs; ``None``: nothing does.

    Examples
    --------
    >>> from msr_sklearn.training.callbacks import resume_mismatch
    >>> print(resume_mismatch({"settings": {"n_filters": 3}}, {"settings": {"n_filters": 4}},
    ...                       "run.msr", ["settings"]))  # doctest: +ELLIPSIS
    the checkpoint 'run.msr' was written with n_filters=3, but the learner has n_filters=4; ...
    """
    where = f"the checkpoint {str(path)!r}"
    hint = ("; fit with the same settings and tasks, use another checkpoint_path, or set "
            "resume=False to start afresh (which overwrites it)")
    for key in keys:
        before, now = saved.get(key), info.get(key)
        if key == "settings":
            differ = [f"{name}={_plain(before.get(name))!r}, but the learner has "
                      f"{name}={_plain(now.get(name))!r}" for name in sorted({*before, *now})
                      if _plain(before.get(name)) != _plain(now.get(name))]
            if differ:
                return f"{where} was written with " + "; ".join(differ) + hint
        elif _plain(before) != _plain(now):
            return f"the {key} differ from those {where} was written for" + hint
    return None


class ProgressBar(Callback):
    """A tqdm progress bar with the current meta-loss, on rank 0.

    It redraws at most every ``mininterval`` seconds (so a log file gets a few lines,
    not one per step).

    Parameters
    ----------
    mininterval : float, default=0.5
        Seconds between redraws.

    Examples
    --------
    >>> from msr_sklearn import MetaSymmetryLearner
    >>> from msr_sklearn.datasets import make_translation_tasks
    >>> X, y = make_translation_tasks(n_tasks=20, n_features=6, random_state=0)
    >>> _ = MetaSymmetryLearner(n_filters=3, n_meta_steps=5, verbose=1).fit(X, y)
    """

    def __init__(self, mininterval=0.5):
        self.mininterval = mininterval

    def on_train_begin(self, trainer):
        from tqdm.auto import tqdm

        self.bar = None if trainer.rank else tqdm(
            total=trainer.n_steps, initial=trainer.fit_step, desc="meta-training", unit="step",
            mininterval=self.mininterval)

    def on_step_end(self, trainer):
        if getattr(self, "bar", None) is not None:
            self.bar.set_postfix(loss=f"{trainer.loss:.4g}", refresh=False)
            self.bar.update(1)

    def on_train_end(self, trainer):
        if getattr(self, "bar", None) is not None:
            self.bar.close()
