"""Issue 23, items 6-9, 11 and 12: divergence keeps a usable state, overflowing scores are
refused, bad input is a clear error, a failed fit changes nothing, an interrupt never
tears a step."""

import errno

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

from msr_sklearn import MetaSymmetryLearner
from msr_sklearn.data.streams import TaskStream
from msr_sklearn.data.tasks import check_tasks
from msr_sklearn.datasets import make_translation_tasks
from msr_sklearn.engine import MetaAdam
from msr_sklearn.sharing import FixedSharing
from msr_sklearn.training import Callback
from msr_sklearn.training.callbacks import Checkpoint, DivergenceStop

# the repro (``tasks``, from conftest.py, are its data)
Q = dict(n_filters=2, n_support=2, n_meta_steps=5, meta_batch_size=4, random_state=0)
# steps whose meta-lr does not depend on the fit's length: a shorter fit is a prefix
CONSTANT = {**Q, "meta_lr_schedule": "constant", "meta_lr": 1e-2}


@pytest.fixture(scope="module")
def fitted(tasks):
    return MetaSymmetryLearner(**Q).fit(*tasks)


class AtStep(Callback):
    """Calls ``action(trainer)`` at ``on_train_begin`` (step None) or at the end of
    fit step ``step``."""

    def __init__(self, step, action):
        self.step, self.action = step, action

    def on_train_begin(self, trainer):
        if self.step is None:
            self.action(trainer)

    def on_step_end(self, trainer):
        if trainer.fit_step == self.step:
            self.action(trainer)


def model_state(learner):
    return {k: v.detach().clone() for k, v in learner.model_.state_dict().items()}


def same_tensors(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def same_optimizer_state(a, b):
    a, b = a.state_dict()["state"], b.state_dict()["state"]
    return a.keys() == b.keys() and all(same_tensors(a[i], b[i]) for i in a)


# ---------------------------------------------------------- 6. divergence
@pytest.mark.parametrize("meta_lr, message", [
    (1e3, "became non-finite"), (1e6, "became non-finite"), (1e20, "became non-finite"),
    (1e38, "became non-finite"),
    (10.0, r"grew to 4\.07e\+16, more than 10000 times its first values \(up to 2\.17\),"),
])
def test_a_diverged_fit_keeps_the_state_before_the_update_that_diverged(tasks, meta_lr,
                                                                         message):
    initial = {}
    record = AtStep(None, lambda trainer: initial.update(
        {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}))
    learner = MetaSymmetryLearner(**{**Q, "n_meta_steps": 50}, meta_lr=meta_lr,
                                  meta_lr_schedule="constant", callbacks=[record])
    with pytest.warns(RuntimeWarning, match=f"meta-loss {message} at step 1; training "
                                            "stopped and the last finite state was kept"):
        learner.fit(*tasks)  # meta_lr=1e38 crashed in the optimizer
    # step 0's loss was finite, its update made step 1's loss diverge: undone
    assert learner.history_["diverged"].tolist() == [False, True]
    assert same_tensors(model_state(learner), initial)
    assert learner._optimizer.state == {}  # Adam's state of then: none yet
    assert learner.model_.inner_lrs.tolist() == pytest.approx([0.1, 0.1])  # not ±meta_lr
    # (no pruning: a finished 1-step fit prunes its U at its last step)
    untrained = MetaSymmetryLearner(**{**Q, "n_meta_steps": 1}, meta_lr=1e-30,
                                    sharing_sparsity=0.0).fit(*tasks)
    assert learner.score(*tasks) == pytest.approx(untrained.score(*tasks), abs=1e-6)


def test_a_loss_that_explodes_mid_run_undoes_the_update_before_it(tasks, losses_times_at):
    losses_times_at(11, 1e6)  # step 10 judges the state step 9's update made
    learner = MetaSymmetryLearner(**{**CONSTANT, "n_meta_steps": 30})
    with pytest.warns(RuntimeWarning, match="grew to .* at step 10"):
        learner.fit(*tasks)
    losses_times_at(None, 1.0)
    assert len(learner.history_) == 11 and learner.history_["diverged"].sum() == 1
    reference = MetaSymmetryLearner(**{**CONSTANT, "n_meta_steps": 9}).fit(*tasks)
    assert learner.symmetry_ == reference.symmetry_
    assert same_optimizer_state(learner._optimizer, reference._optimizer)


def test_the_divergence_baseline_is_the_runs_first_losses():
    stop = DivergenceStop(growth=100.0, baseline_steps=2)

    class Trainer:  # what the callback reads and writes
        history = [{"train_loss": 3.0, "diverged": False}, {"train_loss": np.nan,
                                                             "diverged": True}]
        loss_limit, diverged, loss = float("inf"), False, 5.0

    trainer = Trainer()
    stop.on_train_begin(trainer)
    assert trainer.loss_limit == 300.0  # from the sane row of an earlier fit
    stop.on_step_end(trainer)
    assert trainer.loss_limit == 500.0  # the second loss completes the baseline
    trainer.loss = 0.1
    stop.on_step_end(trainer)
    assert trainer.loss_limit == 500.0  # later losses do not move it
    with pytest.raises(ValueError, match="growth must be a number > 1"):
        DivergenceStop(growth=1.0)
    with pytest.raises(ValueError, match="baseline_steps must be a positive integer"):
        DivergenceStop(baseline_steps=0)


@pytest.mark.parametrize("lr", [1e38, 1e300, float("inf")])
def test_meta_adam_takes_any_learning_rate_without_crashing(lr):
    p = torch.nn.Parameter(torch.tensor([1.0, 0.0, -1.0]))
    optimizer = MetaAdam([p], lr=lr)
    p.grad = torch.tensor([1.0, 0.0, -1.0])
    optimizer.step()  # raised "value cannot be converted to type float without overflow"
    assert p[0] < -1e37 and p[1] == 0 and p[2] > 1e37  # the step size at float32's largest


# ------------------------------------------------------ 7. non-finite scores
@pytest.mark.parametrize("scale_x, scale_y, message", [
    (1e30, 1.0, r"the adapted network's outputs are NaN or infinite on the query rows of "
                r"tasks 0, 1, 2, 3, 4 and 35 more: adapting to the support rows overflows "
                r"float32 \(largest \|X\| 3\.8e\+30, largest \|y\| 8\.03\)"),
    (1.0, 1e20, r"the r2 of tasks 0, 1, 2, 3, 4 and 35 more is not finite: the query targets "
                r"overflow float32 in the metric \(largest \|X\| 3\.8, largest \|y\| 8\.03e\+20"),
])
def test_overflowing_scores_are_refused_with_their_cause(fitted, tasks, scale_x, scale_y,
                                                         message):
    X, y = tasks
    with pytest.raises(ValueError, match="cannot score: " + message):
        fitted.score(X * scale_x, y * scale_y)
    with pytest.raises(ValueError, match="StandardScaler"):
        fitted.evaluate(X * scale_x, y * scale_y)
    assert np.isfinite(fitted.score(X * 1e3, y * 1e3))  # large but finite: scored


def test_a_classifier_never_scores_nan_logits(tasks):
    X, y = tasks
    labels = (y[..., 0] > 0).astype(int)
    learner = MetaSymmetryLearner(**Q).fit(X, labels)
    with pytest.raises(ValueError, match="cannot score: the adapted network's outputs are NaN"):
        learner.score(X * 1e30, labels)  # was an accuracy of 0.475
    with pytest.raises(ValueError, match="fitted state holds NaN or infinite values; refit"):
        with torch.no_grad():
            learner.model_.inner_lrs.fill_(float("nan"))
        learner.score(X, labels)


# -------------------------------------------- 8 and 11. clear errors for bad input
class Net(torch.nn.Module):
    def __init__(self, n_features, n_outputs, width=4):
        super().__init__()
        self.a = torch.nn.Linear(n_features, width)
        self.b = torch.nn.Linear(width, n_outputs)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def _long(tasks):
    X, y = tasks
    return X.reshape(-1, X.shape[-1]), y.reshape(-1, y.shape[-1])


def _groups(change):
    groups = np.repeat(np.arange(40), 8).astype(object)
    groups[5] = change
    return groups


def _ragged_rows(tasks):
    X = tasks[0].tolist()
    X[3][2] = X[3][2][:5]
    return X, tasks[1].tolist()


def _ragged_tasks(tasks):
    X = tasks[0].tolist()
    X[3] = X[3][:5]
    return X, tasks[1].tolist()


def _dtype_tasks(tasks, convert_x=lambda x: x, convert_y=lambda y: y):
    return ([(convert_x(x), convert_y(y)) for x, y in zip(*tasks)],)


BAD = {
    "hidden width 2.5": (
        {"hidden_layer_sizes": (2.5,)}, lambda t: t, ValueError,
        r"hidden_layer_sizes must be integers \(units per hidden layer\); got \(2\.5,\)"),
    "module width 0": (
        {"module": Net, "module__width": 0, "n_filters": 2}, lambda t: t, ValueError,
        r"Net\(\*\*\{'width': 0, .*\) has parameters without values: a\.weight \(0, 10\), "
        r"a\.bias \(0,\), b\.weight \(8, 0\); every layer needs at least one unit"),
    "module width -3": (
        {"module": Net, "module__width": -3}, lambda t: t, ValueError,
        r"cannot build Net\(\*\*\{'width': -3, .*\}\): RuntimeError: .*negative dimension"),
    "fixed sharing of more filters than weights": (
        {"sharing": {"0.weight": FixedSharing(np.eye(80, 100))}}, lambda t: t, ValueError,
        r"must have shape \(80, k\) with 1 <= k <= 80 .*; got \(80, 100\)"),
    "groups of mixed types": (
        {}, lambda t: (*_long(t), _groups("a")), TypeError,
        r"groups mixes task ids of types \['int', 'str'\], which cannot be ordered"),
    "groups with None": (
        {}, lambda t: (*_long(t), _groups(None)), ValueError,
        r"groups has no task id \(None or NaN\) at row 5; every row needs"),
    "groups with NaN": (
        {}, lambda t: (*_long(t), np.where(np.arange(320) == 7, np.nan,
                                           np.repeat(np.arange(40.0), 8))), ValueError,
        r"groups has no task id \(None or NaN\) at row 7"),
    "ragged rows of stacked tasks": (
        {}, _ragged_rows, ValueError,
        r"X is a ragged nested list: its rows \(or tasks\) differ in length .*every sample "
        r"needs the same features, and tasks of different sizes come as a list of"),
    "ragged stacked tasks": (
        {}, _ragged_tasks, ValueError, "X is a ragged nested list"),
    "ragged long-format rows": (
        {}, lambda t: ([list(r)[:5 if i == 3 else None] for i, r in enumerate(_long(t)[0])],
                       _long(t)[1], np.repeat(np.arange(40), 8)), ValueError,
        "X is a ragged nested list"),
    "datetime64 features": (
        {}, lambda t: _dtype_tasks(t, lambda x: np.arange(80).reshape(8, 10).astype(
            "datetime64[D]")), ValueError,
        r"X of task 0 must be numeric; got dates or durations \(datetime64\[D\]\)"),
    "timedelta64 features": (
        {}, lambda t: _dtype_tasks(t, lambda x: np.arange(80).reshape(8, 10).astype(
            "timedelta64[s]")), ValueError, "got dates or durations"),
    "numeric strings": (
        {}, lambda t: _dtype_tasks(t, lambda x: x.astype(str)), ValueError,
        r"X of task 0 must be numeric; got strings \(dtype <U\d+\), which are not converted "
        "silently"),
    "numeric strings in an object array": (
        {}, lambda t: _dtype_tasks(t, lambda x: x.astype(str).astype(object)), ValueError,
        "must be numeric; got strings"),
    "numeric strings as regression targets": (
        {"objective": "regression"}, lambda t: _dtype_tasks(t, convert_y=lambda y: y.astype(
            str)), ValueError, "y of task 0 must be numeric; got strings"),
    "a stream sampler returning 1 task": (
        {}, lambda t: (lambda n, rng: make_translation_tasks(
            n_tasks=1, n_samples=8, n_features=10, random_state=int(rng.integers(99))),),
        ValueError, r"returned 1 tasks when asked for 4: a sampler .* must return exactly"),
    "a stream sampler returning 50x the meta-batch": (
        {}, lambda t: (lambda n, rng: make_translation_tasks(
            n_tasks=50 * n, n_samples=8, n_features=10, random_state=int(rng.integers(99))),),
        ValueError, "returned 200 tasks when asked for 4"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_a_clear_error(tasks, case):
    params, make_args, exc, message = BAD[case]
    with pytest.raises(exc, match=message):
        MetaSymmetryLearner(**{**Q, **params}).fit(*make_args(tasks))


def test_a_sampler_that_goes_wrong_later_is_refused_at_that_step(tasks):
    calls = {"n": 0}

    def sampler(n, rng):
        calls["n"] += 1
        return make_translation_tasks(n_tasks=n if calls["n"] < 4 else 1, n_samples=8,
                                      n_features=10, random_state=int(rng.integers(99)))

    with pytest.raises(ValueError, match="returned 1 tasks when asked for 4"):
        MetaSymmetryLearner(**Q).fit(TaskStream(sampler))


def test_numbers_in_object_arrays_and_booleans_are_still_features(tasks):
    X, y = tasks
    objects = [(x.astype(object), t) for x, t in zip(X, y)]
    assert check_tasks(objects).X.dtype == torch.float32
    flags = check_tasks([(x > 0, t) for x, t in zip(X, y)])
    assert set(flags.X.unique().tolist()) == {0.0, 1.0}


def test_one_huge_task_among_small_ones_is_refused_before_padding(monkeypatch):
    import msr_sklearn.data._checks as checks
    import msr_sklearn.data.tasks as data_tasks

    rng = np.random.default_rng(0)
    tasks = [(rng.normal(size=(8, 10)), rng.normal(size=8)) for _ in range(2000)]
    tasks.insert(700, (rng.normal(size=(200_000, 10)), rng.normal(size=200_000)))
    padded = (r"the 2001 tasks are stored padded to the largest one, task 700 of 200000 "
              r"rows: 16\.4 GiB, ")
    fix = r"\. Split the large task into .* or pass the tasks as a stream"
    allocations = []
    monkeypatch.setattr(data_tasks, "_pad", lambda *a: allocations.append(a))
    monkeypatch.setattr(checks, "available_memory", lambda: 8 * 2 ** 30)
    with pytest.raises(ValueError, match=padded + r"more than the 8\.0 GiB of memory "
                                                  r"available" + fix):
        MetaSymmetryLearner(**Q).fit(tasks)
    monkeypatch.setattr(checks, "available_memory", lambda: 2 ** 40)
    with pytest.raises(ValueError, match=padded + r"1853 times their own rows \(0\.0089 "
                                              r"GiB\), in memory and in every meta-step's "
                                              r"compute" + fix):
        check_tasks(tasks)
    assert allocations == []  # refused before allocating anything


# ------------------------------------------------------ 9. all or nothing
@pytest.mark.parametrize("warm", [False, True])
def test_a_refit_that_fails_mid_run_leaves_the_previous_fit(tasks, warm):
    learner = MetaSymmetryLearner(**Q, warm_start=warm).fit(*tasks)
    before = {k: v for k, v in vars(learner).items() if k.endswith("_")}
    state, adam = model_state(learner), learner._optimizer.state_dict()
    score = learner.score(*tasks)

    def fail(trainer):
        raise RuntimeError("a callback failed")

    learner.set_params(callbacks=[AtStep(2, fail)])
    with pytest.raises(RuntimeError, match="a callback failed"):
        learner.fit(*tasks)
    after = {k: v for k, v in vars(learner).items() if k.endswith("_")}
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)
    assert same_tensors(model_state(learner), state)  # a warm refit trained a copy
    assert same_tensors(learner._optimizer.state_dict()["state"][0], adam["state"][0])
    assert learner.score(*tasks) == score
    learner.set_params(callbacks=None)
    assert learner.fit(*tasks).n_iter_ == (10 if warm else 5)  # and it still fits


def test_a_full_disk_at_the_final_checkpoint_leaves_the_learner_unchanged(tasks, tmp_path,
                                                                          monkeypatch):
    import msr_sklearn.training.callbacks as callbacks

    def full_disk(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(callbacks, "write_checkpoint", full_disk)
    path = tmp_path / "run.msr"
    fresh = MetaSymmetryLearner(**Q, callbacks=[Checkpoint(path, interval=100)])
    with pytest.raises(OSError, match="No space left"):
        fresh.fit(*tasks)
    assert not any(k.endswith("_") for k in vars(fresh))  # not model_ without symmetry_
    with pytest.raises(NotFittedError):
        fresh.score(*tasks)
    learner = MetaSymmetryLearner(**Q).fit(*tasks)
    symmetry, history = learner.symmetry_, learner.history_
    learner.set_params(callbacks=[Checkpoint(path)], n_meta_steps=7)
    with pytest.raises(OSError, match="No space left"):
        learner.fit(*tasks)
    assert learner.symmetry_ is symmetry and learner.history_ is history
    assert len(learner.history_) == learner.n_iter_ == 5


# ----------------------------------------------------------- 12. interrupts
def test_an_interrupt_inside_the_optimizer_step_undoes_the_whole_step(tasks, monkeypatch,
                                                                      interrupt_at):
    interrupt_at(6)  # the reference: interrupted before its sixth step
    with pytest.warns(RuntimeWarning, match="interrupted after 5 meta-steps"):
        reference = MetaSymmetryLearner(**{**CONSTANT, "n_meta_steps": 10}).fit(*tasks)
    interrupt_at(None)
    count = {"steps": 0, "tensors": 0}
    real_step, real_update = MetaAdam.step, MetaAdam._adam_step

    def step(self, *args):
        count["steps"], count["tensors"] = count["steps"] + 1, 0
        return real_step(self, *args)

    def update(self, *args):  # Ctrl-C after the sixth step updated its first tensor
        count["tensors"] += 1
        if count["steps"] == 6 and count["tensors"] == 2:
            raise KeyboardInterrupt
        return real_update(self, *args)

    monkeypatch.setattr(MetaAdam, "step", step)
    monkeypatch.setattr(MetaAdam, "_adam_step", update)
    learner = MetaSymmetryLearner(**{**CONSTANT, "n_meta_steps": 10})
    with pytest.warns(RuntimeWarning, match="interrupted after 5 meta-steps"):
        learner.fit(*tasks)
    assert count["steps"] == 6 and len(learner.history_) == learner.n_iter_ == 5
    assert same_tensors(model_state(learner), model_state(reference))  # not torn
    assert same_optimizer_state(learner._optimizer, reference._optimizer)


def test_an_interrupt_in_a_callback_counts_the_step_it_ended(tasks):
    def interrupt(trainer):
        raise KeyboardInterrupt

    learner = MetaSymmetryLearner(**{**CONSTANT, "n_meta_steps": 10},
                                  callbacks=[AtStep(5, interrupt)])
    with pytest.warns(RuntimeWarning, match="interrupted after 6 meta-steps"):
        learner.fit(*tasks)  # said "after 5", with 6 updates applied
    assert len(learner.history_) == learner.n_iter_ == 6
    reference = MetaSymmetryLearner(**{**CONSTANT, "n_meta_steps": 6}).fit(*tasks)
    assert same_tensors(model_state(learner), model_state(reference))
