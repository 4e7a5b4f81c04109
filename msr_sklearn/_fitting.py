"""How :class:`~msr_sklearn.MetaSymmetryLearner` fits, top down.

validate (settings, tasks, the checkpoint to resume, the held-out split) → build or
resume (the network under its policy, the optimizer, the training loop and its
callbacks) → train → summarize (``history_``, ``symmetry_``, ``n_iter_``...).
:class:`MetaFittingMixin` holds these steps; the learner's ``fit`` calls them.
"""

from __future__ import annotations

import contextlib
import copy
import math
from types import SimpleNamespace

import pandas as pd
import torch

from .architecture import build_meta_model
from .data.streams import as_task_stream
from .data.tasks import MetaBatches
from .engine import make_meta_optimizer
from .symmetry import LearnedSymmetry, _plain
from .training import Trainer
from .training.callbacks import (
    Checkpoint,
    DivergenceStop,
    EarlyStopping,
    History,
    ProgressBar,
    SharingPruning,
    StabilityWarnings,
    Validation,
    resume_mismatch,
    resume_state,
)
from .training.checkpoints import restore_checkpoint

#: the inner (and query) loss of each objective
LOSS_OF_OBJECTIVE = {"regression": "mse", "classification": "cross_entropy"}
from .training.loop import _distributed_context, shared_seed

__all__ = ["MetaFittingMixin"]

#: the private attributes that belong to a fit (with every ``name_`` one)
_PRIVATE_FITTED = ("_device", "_spec", "_optimizer", "_built_with")


def _fitted_names(learner):
    return [k for k in vars(learner)
            if (k.endswith("_") and not k.startswith("__")) or k in _PRIVATE_FITTED]


@contextlib.contextmanager
def all_or_nothing(learner):
    """A fit replaces the learner's fitted attributes all together, or not at all.

    If the body raises (an error or an interrupt outside the training loop's own
    handling: a bad batch, a failed checkpoint write, a full disk), every fitted
    attribute is put back as it was before, the ones the failed fit added removed: the
    learner stays the previous fit (or unfitted), never ``model_`` of one fit with
    ``symmetry_`` of another. A warm start trains a copy of the fitted model for this.
    """
    before = {k: getattr(learner, k) for k in _fitted_names(learner)}
    try:
        yield
    except BaseException:
        for name in _fitted_names(learner):
            delattr(learner, name)
        learner.__dict__.update(before)
        raise


class MetaFittingMixin:
    """The steps of :meth:`MetaSymmetryLearner.fit <msr_sklearn.MetaSymmetryLearner.fit>`."""

    def _validate(self, X, y, groups, validation_tasks):
        """Check settings and tasks, read the checkpoint to resume, draw the held-out split.

        The draws before training come from one sampler seeded by ``random_state``, in
        a fixed order (held-out tasks, their support split); a resumed fit replays them
        from the checkpoint's seed before restoring the sampler's state.
        """
        warm = self.warm_start and hasattr(self, "model_")
        callbacks = self._user_callbacks()
        checkpoint = next((c for c in callbacks if isinstance(c, Checkpoint)), None)
        early = any(isinstance(c, EarlyStopping) for c in callbacks)
        stream = as_task_stream(X) if y is None and groups is None else None
        fraction = self._held_out_fraction(stream, validation_tasks, early)
        group, settings = _distributed_context()[0], self._settings()
        saved = (resume_state(checkpoint.path, settings, group)
                 if checkpoint is not None and checkpoint.resume and not warm else None)
        seed = saved["info"]["seed"] if saved else shared_seed(self.random_state, group)
        fit_start = saved["info"]["fit_start"] if saved else len(self.history_) if warm else 0
        # local generators only: fit never touches numpy's or torch's global RNG
        sampler = torch.Generator().manual_seed(seed + fit_start)
        # a stream's first draw fixes the feature shape, outputs and objective
        tasks = self._check_tasks(*((X, y, groups) if stream is None else
                                    (stream.draw(self.meta_batch_size, seed), None, None)),
                                  fitted=warm)
        if stream is not None:
            stream.check_drawn(tasks.n_tasks, self.meta_batch_size)
        if not warm:
            self.objective_, self.n_outputs_ = tasks.objective, tasks.n_outputs
            self.input_shape_ = tasks.feature_shape
            self.n_features_in_ = math.prod(tasks.feature_shape)
            self.feature_names_in_ = tasks.feature_names
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
        info = None if checkpoint is None else {
            "settings": settings, "seed": seed, "fit_start": fit_start,
            "training tasks": tasks.fingerprint() if stream is None else repr(stream),
            "validation tasks": [held_out, None if validation_tasks is None
                                 else valid.fingerprint()]}
        problem = saved and resume_mismatch(saved["info"], info, checkpoint.path,
                                            ("training tasks", "validation tasks"))
        if problem:
            raise ValueError(problem)
        return SimpleNamespace(warm=warm, seed=seed, sampler=sampler, train=train,
                               valid_batch=valid_batch, info=info, saved=saved, group=group,
                               callbacks=callbacks, checkpoint=checkpoint, early=early,
                               example=tasks.X[0, :2], split=split)

    def _held_out_fraction(self, stream, validation_tasks, early):
        fraction = self.validation_fraction
        if stream is not None and fraction:
            raise ValueError("validation_fraction needs a finite list of tasks; with a task "
                             "stream pass validation_tasks= instead")
        if early and validation_tasks is None and (stream is not None or fraction == 0):
            raise ValueError(
                "an EarlyStopping callback needs held-out tasks: " + (
                    "with a task stream, pass fit(stream, validation_tasks=...)" if stream
                    else "validation_fraction=0 holds none out; set validation_fraction > 0 "
                         "(or None: 0.1), or pass fit(..., validation_tasks=...)"))
        if stream is not None:
            return 0.0
        return (0.1 if early else 0.0) if fraction is None else fraction

    def _build_or_resume(self, run):
        """The meta-model (fresh, warm-started or resumed) and the loop that trains it."""
        if not run.warm:
            if self.initial_symmetry is None:
                self._spec = self._module_spec()  # the build fills in the data dimensions
                model = build_meta_model(self._spec, self.sharing, self.input_shape_,
                                         self.n_outputs_, inner_lr=self.inner_lr,
                                         learn_inner_lr=self.learn_inner_lr, seed=run.seed,
                                         layer=self.layer, n_filters=self.n_filters,
                                         loss=LOSS_OF_OBJECTIVE[self.objective_])
            else:
                symmetry = self._checked_initial_symmetry()
                self._spec = symmetry.module
                model = symmetry.build_model(learn_inner_lr=self.learn_inner_lr)
            if not self.learn_symmetry:  # the outer loop never sees U
                for params in model.symmetry_parameters().values():
                    for p in params:
                        p.requires_grad_(False)
            self.model_ = model.to(self._device)
            self._check_outputs(run.example)
            self._optimizer = make_meta_optimizer(self.model_, self.meta_lr,
                                                  meta_optimizer=self.meta_optimizer,
                                                  sharing_sparsity=self._sharing_sparsity())
            self._built_with = self._model_settings()
            self.history_ = pd.DataFrame()
        else:  # a warm start keeps Adam's moments; the schedule sets the current meta_lr
            self._check_unchanged_model()
            # trained as a copy: a failed fit leaves the fitted model as it was
            self.model_, self._optimizer = copy.deepcopy((self.model_, self._optimizer))
        batches = MetaBatches(run.train, self.meta_batch_size, self.n_support, run.sampler,
                              check=lambda drawn: self._check_tasks(drawn, None, None, True),
                              **run.split)
        callbacks = [History(), DivergenceStop(), StabilityWarnings()]
        if self._prunes_sharing():
            callbacks.append(SharingPruning())
        if run.valid_batch is not None:
            callbacks.append(Validation(run.valid_batch, self.validation_interval))
        callbacks += [c for c in run.callbacks if c is not run.checkpoint]
        if run.checkpoint is not None:
            run.checkpoint.prepare(self._current_symmetry, run.info)
            callbacks.append(run.checkpoint)
        if self.verbose:
            callbacks.append(ProgressBar())
        trainer = Trainer(self.model_, self._optimizer, batches, self.n_meta_steps,
                          self.meta_lr, self.meta_lr_schedule, callbacks,
                          loop=self._inner_loop(), history=self.history_.to_dict("records"),
                          process_group=run.group)
        if run.saved:
            restore_checkpoint(trainer, run.saved, run.checkpoint.path)
        return trainer

    def _check_outputs(self, example):
        """The network maps one task's rows to ``(n, n_outputs)`` (or as many values)."""
        with torch.no_grad():
            try:
                out = self.model_(example)
            except Exception as exc:  # the user's module: say which input it got
                raise ValueError(f"the network failed on one task's inputs of shape "
                                 f"{tuple(example.shape)}: {type(exc).__name__}: {exc}") from exc
        per_row = math.prod(out.shape[1:]) if out.dim() > 1 else 1
        classification = self.objective_ == "classification"
        if out.shape[0] != example.shape[0] or per_row != self.n_outputs_ or (
                classification and tuple(out.shape[1:]) != (self.n_outputs_,)):
            need = (f"(n, {self.n_outputs_}) logits for {self.n_outputs_}-way classification"
                    if classification else f"{self.n_outputs_} output values per sample")
            raise ValueError(f"the network maps inputs of shape {tuple(example.shape)} to "
                             f"{tuple(out.shape)}; the tasks need {need}")

    def _check_unchanged_model(self):
        built, now = self._built_with, self._model_settings()
        changed = sorted(name for name in now if _plain(now[name]) != _plain(built.get(name)))
        if changed:
            raise ValueError(
                f"warm_start continues the fitted network, but {', '.join(changed)} changed "
                "since it was built; restore them, or set warm_start=False to start afresh")

    def _checked_initial_symmetry(self):
        """``initial_symmetry``, once its network, policy and objective match the fit's."""
        symmetry = self.initial_symmetry
        own = LearnedSymmetry.initial(
            self.module, self.sharing, input_shape=self.input_shape_,
            n_outputs=self.n_outputs_, objective=self.objective_, layer=self.layer,
            n_filters=self.n_filters, hidden_layer_sizes=self.hidden_layer_sizes,
            activation=self.activation, bias=self.bias,
            **{f"module__{k}": v for k, v in self._module_params().items()})
        differ = [f"{k}={getattr(symmetry, k)!r} (the learner's: {getattr(own, k)!r})"
                  for k in ("input_shape", "n_outputs", "objective")
                  if getattr(symmetry, k) != getattr(own, k)]
        if symmetry.module.to_json() != own.module.to_json():
            differ.append(f"module {symmetry.module!r} (the learner's: {own.module!r})")
        if _plain(symmetry.policy) != _plain(own.policy):
            names = sorted(n for n in {*symmetry.policy, *own.policy}
                           if symmetry.policy.get(n) != own.policy.get(n))
            differ.append(f"a different policy for {names}")
        if differ:
            raise ValueError("initial_symmetry does not fit this learner and these tasks: it "
                             f"has {'; '.join(differ)}; build it with the learner's settings "
                             "(e.g. LearnedSymmetry.initial(...)) or set the learner's "
                             "parameters to match")
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
        return LearnedSymmetry.from_model(
            self.model_, self._spec, objective=self.objective_,
            inner_steps=self.inner_steps, input_shape=self.input_shape_,
            n_outputs=self.n_outputs_, feature_names=getattr(self, "feature_names_in_", None))
