"""The training loop: callbacks, the progress bar, early stopping, the meta-lr schedule."""

import math

import numpy as np
import pytest

from msr_sklearn import MetaSymmetryLearner
from msr_sklearn.datasets import make_translation_tasks
from msr_sklearn.data.streams import TaskStream
from msr_sklearn.training import Callback, meta_lr_at
from msr_sklearn.training.callbacks import EarlyStopping

# the constant schedule: these tests compare stopped, resumed and shortened fits, whose
# schedules would otherwise differ with n_meta_steps
SMALL = dict(n_filters=3, bias=False, n_support=2, n_meta_steps=30, meta_batch_size=8,
             meta_lr_schedule="constant", meta_lr=1e-3, random_state=0)


class Recorder(Callback):
    """Records every hook it sees, and the meta-lr of every step."""

    def initialize(self):
        self.calls = []

    def on_train_begin(self, trainer):
        self.calls.append("train_begin")

    def on_step_begin(self, trainer):
        self.calls.append(f"step_begin {trainer.step}")

    def on_step_end(self, trainer):
        self.calls.append(f"step_end {trainer.step}")
        group = trainer.optimizer.param_groups[0]  # a group's lr_scale multiplies the rate
        trainer.history[-1]["recorded_lr"] = group["lr"] / group.get("lr_scale", 1.0)

    def on_validation_end(self, trainer):
        self.calls.append(f"validation {trainer.step} {trainer.history[-1]['valid_loss']:.6f}")

    def on_train_end(self, trainer):
        self.calls.append("train_end")


class StopAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer):
        if trainer.step == self.step:
            trainer.stop_training = True


def test_callbacks_see_every_hook_in_order(tasks):
    recorder = Recorder()
    learner = MetaSymmetryLearner(**SMALL, validation_fraction=0.25, validation_interval=10,
                                  callbacks=[recorder]).fit(*tasks)
    calls = recorder.calls
    assert calls[0] == "train_begin" and calls[-1] == "train_end"
    steps = [c for c in calls if c.startswith("step")]
    assert steps == [f"step_{e} {s}" for s in range(30) for e in ("begin", "end")]
    # validation runs inside the step's on_step_end, after the built-in Validation
    valid = learner.history_.dropna(subset="valid_loss")
    assert [c for c in calls if c.startswith("validation")] == [
        f"validation {s} {v:.6f}" for s, v in zip(valid["step"], valid["valid_loss"])]
    assert list(valid["step"]) == [9, 19, 29]
    # what a callback writes into the step's row becomes a column of history_
    np.testing.assert_array_equal(learner.history_["recorded_lr"], learner.history_["meta_lr"])


def test_a_callback_stops_training_with_the_flag(tasks):
    learner = MetaSymmetryLearner(**SMALL, callbacks=[StopAt(11)]).fit(*tasks)
    assert len(learner.history_) == 12 and learner.n_iter_ == 12
    # the state is the one after step 11: a 12-step fit reaches the same
    assert learner.symmetry_ == MetaSymmetryLearner(**{**SMALL, "n_meta_steps": 12}).fit(
        *tasks).symmetry_


def test_user_callbacks_are_reused_and_reset_per_fit(tasks):
    recorder = Recorder()
    learner = MetaSymmetryLearner(**{**SMALL, "n_meta_steps": 3}, callbacks=[recorder],
                                  warm_start=True)
    learner.fit(*tasks).fit(*tasks)
    assert recorder.calls.count("train_begin") == 1  # initialize() reset it
    assert [c for c in recorder.calls if c.startswith("step_end")] == [
        "step_end 3", "step_end 4", "step_end 5"]


@pytest.mark.parametrize("callbacks, match", [
    ([lambda trainer: None], "callbacks must be a list of msr_sklearn.training.Callback"),
    ((Recorder(),), "'callbacks' parameter of MetaSymmetryLearner"),
])
def test_callbacks_must_be_a_list_of_callback_objects(tasks, callbacks, match):
    with pytest.raises((TypeError, ValueError), match=match):
        MetaSymmetryLearner(**SMALL, callbacks=callbacks).fit(*tasks)


def test_callbacks_need_distinct_names(tasks):
    with pytest.raises(ValueError, match="callbacks need distinct names"):
        MetaSymmetryLearner(**SMALL, callbacks=[Recorder(), Recorder()]).fit(*tasks)


# ------------------------------------------------------------------ progress bar
def test_the_progress_bar_redraws_a_few_times_per_second_at_most(tasks, capsys):
    import time

    start = time.perf_counter()
    MetaSymmetryLearner(**{**SMALL, "n_meta_steps": 300}, verbose=1).fit(*tasks)
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err  # not a tty: every redraw is a "\r" and a whole bar
    redraws = err.count("\r")
    assert "meta-training" in err and "300/300" in err and "loss=" in err
    # a redraw per meta-step wrote 300; at most 2 a second, plus the first and the last
    assert 1 <= redraws <= 3 + 2 * seconds, (redraws, seconds)
    assert redraws < 30


# -------------------------------------------------------------------- schedules
def test_cosine_schedule_warms_up_then_decays():
    lrs = [meta_lr_at("cosine", s, 200, 1e-2) for s in range(200)]
    # 5% warmup: 10 steps rising linearly to the peak at step 10
    np.testing.assert_allclose(lrs[:11], 1e-2 * np.arange(1, 12) / 11)
    assert max(lrs) == pytest.approx(1e-2) and lrs[10] == pytest.approx(1e-2)
    assert all(a > b for a, b in zip(lrs[10:], lrs[11:]))  # then strictly decreasing
    assert lrs[-1] == pytest.approx(1e-4)  # meta_lr * 1e-2 at the last step
    # step 10 + 63 is a third of the way through the decay (189 steps)
    assert lrs[73] == pytest.approx(1e-4 + (1e-2 - 1e-4) * 0.5 * (1 + math.cos(math.pi / 3)))
    assert meta_lr_at("constant", 7, 200, 1e-2) == 1e-2
    assert meta_lr_at("cosine", 0, 1, 1e-2) == pytest.approx(1e-2)  # a single step
    with pytest.raises(ValueError, match="meta_lr_schedule must be one of"):
        meta_lr_at("linear", 0, 10, 1e-2)


def test_the_learner_applies_the_schedule_to_adam(tasks):
    recorder = Recorder()
    learner = MetaSymmetryLearner(**{**SMALL, "n_meta_steps": 40, "meta_lr": 1e-2,
                                     "meta_lr_schedule": "cosine"}, warm_start=True,
                                  callbacks=[recorder]).fit(*tasks)
    expected = [meta_lr_at("cosine", s, 40, 1e-2) for s in range(40)]
    np.testing.assert_array_equal(learner.history_["meta_lr"], expected)
    np.testing.assert_array_equal(learner.history_["recorded_lr"], expected)  # Adam's lr
    assert {g["lr"] / g.get("lr_scale", 1.0)
            for g in learner._optimizer.param_groups} == {expected[-1]}
    # a warm start runs a new schedule over its own steps
    learner.set_params(n_meta_steps=20).fit(*tasks)
    np.testing.assert_array_equal(learner.history_["meta_lr"].iloc[40:],
                                  [meta_lr_at("cosine", s, 20, 1e-2) for s in range(20)])
    constant = MetaSymmetryLearner(**SMALL).fit(*tasks)
    assert (constant.history_["meta_lr"] == 1e-3).all()
    with pytest.raises(ValueError, match="'meta_lr_schedule' parameter"):
        MetaSymmetryLearner(**{**SMALL, "meta_lr_schedule": "step"}).fit(*tasks)


# --------------------------------------------------------------- early stopping
# no pruning: a fit that ends at the best step would prune its U at its last step
ES = dict(SMALL, n_meta_steps=300, meta_lr=3e-2, validation_interval=5, sharing_sparsity=0.0)


def early(n_iter_no_change=4, tol=0.0):
    return [EarlyStopping(n_iter_no_change=n_iter_no_change, tol=tol)]


def test_early_stopping_stops_and_keeps_the_best_state(tasks):
    learner = MetaSymmetryLearner(**ES, callbacks=early()).fit(*tasks)
    h = learner.history_
    valid = h.dropna(subset="valid_loss")
    # the best validation loss, then n_iter_no_change checks without an improvement
    best = learner.best_step_
    assert len(h) == learner.n_iter_ == best + 1 + 4 * 5 < 300
    assert learner.best_valid_loss_ == valid["valid_loss"].min()
    after = valid[valid["step"] > best]["valid_loss"]
    assert len(after) == 4 and (after >= learner.best_valid_loss_).all()
    assert (valid[valid["step"] < best]["valid_loss"] > learner.best_valid_loss_).all()
    # the learner holds the state after the best step: a fit that ends there (same
    # held-out split: validation_fraction's 0.1 for early stopping) reaches it exactly
    shorter = dict(ES, validation_fraction=0.1)
    at_best = MetaSymmetryLearner(**{**shorter, "n_meta_steps": best + 1}).fit(*tasks)
    assert learner.symmetry_ == at_best.symmetry_
    at_last = MetaSymmetryLearner(**{**shorter, "n_meta_steps": len(h)}).fit(*tasks)
    assert learner.symmetry_ != at_last.symmetry_


def test_early_stopping_tol(tasks):
    # an improvement must beat tol: with tol=10 only the first check improves
    learner = MetaSymmetryLearner(**ES, callbacks=early(2, tol=10.0)).fit(*tasks)
    assert len(learner.history_) == 15  # checks at steps 4 (the first), 9 and 14


def test_validation_fraction_defaults_to_a_tenth_with_early_stopping(tasks):
    plain = MetaSymmetryLearner(**SMALL, validation_interval=10).fit(*tasks)
    assert plain.history_["valid_loss"].isna().all() and plain.best_valid_loss_ is None
    stopped = MetaSymmetryLearner(**ES, callbacks=early(100)).fit(*tasks)
    assert stopped.history_["valid_loss"].notna().sum() == 60
    explicit = MetaSymmetryLearner(**ES, callbacks=early(100), validation_fraction=0.1)
    assert explicit.fit(*tasks).symmetry_ == stopped.symmetry_  # None meant 0.1: 4 of 40


def test_early_stopping_needs_held_out_tasks(tasks):
    with pytest.raises(ValueError, match="an EarlyStopping callback needs held-out tasks: "
                                         "validation_fraction=0 holds none out"):
        MetaSymmetryLearner(**ES, callbacks=early(), validation_fraction=0.0).fit(*tasks)
    X, y = tasks  # validation_tasks replace the fraction
    learner = MetaSymmetryLearner(**ES, callbacks=early(), validation_fraction=0.0).fit(
        X[:30], y[:30], validation_tasks=(X[30:], y[30:]))
    assert learner.best_valid_loss_ is not None
    stream = TaskStream(lambda n, rng: make_translation_tasks(
        n_tasks=n, n_samples=8, n_features=10, random_state=int(rng.integers(2**31))))
    with pytest.raises(ValueError, match="with a task stream, pass fit\\(stream, "
                                         "validation_tasks=...\\)"):
        MetaSymmetryLearner(**ES, callbacks=early()).fit(stream)
    streamed = MetaSymmetryLearner(**{**ES, "n_meta_steps": 20}, callbacks=early()).fit(
        stream, validation_tasks=(X[:5], y[:5]))
    assert streamed.history_["valid_loss"].notna().sum() == 4
