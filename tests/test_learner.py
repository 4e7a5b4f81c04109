import copy
import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import sklearn
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, GroupKFold, KFold, cross_validate

from msr_sklearn import LearnedSymmetry, MetaSymmetryLearner
from msr_sklearn.datasets import make_translation_tasks
from msr_sklearn.training.callbacks import Checkpoint

# the constant schedule: these tests compare stopped, resumed and shortened fits, whose
# schedules would otherwise differ with n_meta_steps
SMALL = dict(n_filters=3, bias=False, n_support=2, n_meta_steps=30, meta_batch_size=8,
             meta_lr_schedule="constant", meta_lr=1e-3, random_state=0)


@pytest.fixture(scope="module")
def small_tasks():
    X, y = make_translation_tasks(n_tasks=40, n_samples=8, n_features=10, random_state=0)
    return X, y


def classification_tasks(n_tasks=30, n_per_class=4, n_features=5, seed=0, labels=None):
    """N-way tasks: each task's classes are Gaussian blobs with task-specific means."""
    rng = np.random.default_rng(seed)
    tasks = []
    for t in range(n_tasks):
        centers = rng.normal(0, 3, size=(3, n_features))
        X = np.concatenate([c + rng.normal(size=(n_per_class, n_features)) for c in centers])
        codes = np.repeat(np.arange(3), n_per_class)
        names = labels[t % len(labels)] if labels else np.array([10 * t, 10 * t + 1, 10 * t + 2])
        perm = rng.permutation(len(X))
        tasks.append((X[perm], np.asarray(names)[codes[perm]]))
    return tasks


def test_fit_records_history_and_symmetry(small_tasks):
    X, y = small_tasks
    learner = MetaSymmetryLearner(**SMALL, validation_fraction=0.25,
                                  validation_interval=10).fit(X, y)
    h = learner.history_
    assert list(h["step"]) == list(range(30))
    assert h["train_loss"].notna().all()
    assert h["valid_loss"].notna().sum() == 3  # steps 9, 19, 29
    assert "inner_lr[0.weight.filters]" in h
    assert isinstance(learner.symmetry_, LearnedSymmetry)
    assert learner.symmetry_.symmetry_matrix(0).shape == (8 * 10, 3)
    assert learner.n_features_in_ == 10 and learner.n_outputs_ == 8
    assert learner.objective_ == "regression"


def test_task_input_forms_are_equivalent(small_tasks):
    X, y = small_tasks
    as_3d = MetaSymmetryLearner(**SMALL).fit(X, y)
    as_list = MetaSymmetryLearner(**SMALL).fit([(X[i], y[i]) for i in range(len(X))])
    groups = np.repeat(np.arange(len(X)), X.shape[1])
    as_long = MetaSymmetryLearner(**SMALL).fit(X.reshape(-1, 10), y.reshape(-1, 8),
                                               groups=groups)
    df = pd.DataFrame(X.reshape(-1, 10), columns=[f"x{i}" for i in range(10)])
    as_frame = MetaSymmetryLearner(**SMALL).fit(df, pd.DataFrame(y.reshape(-1, 8)),
                                                groups=pd.Series(groups))
    ref = as_3d.symmetry_.symmetry_matrix(0)
    for other in (as_list, as_long, as_frame):
        np.testing.assert_array_equal(other.symmetry_.symmetry_matrix(0), ref)
    assert list(as_frame.feature_names_in_) == [f"x{i}" for i in range(10)]
    assert not hasattr(as_3d, "feature_names_in_")


def test_tasks_of_different_sizes_are_padded_and_masked():
    X, y = make_translation_tasks(n_tasks=12, n_samples=9, n_features=10, random_state=1)
    tasks = [(X[i][: 4 + i % 5], y[i][: 4 + i % 5]) for i in range(12)]
    learner = MetaSymmetryLearner(**SMALL).fit(tasks)
    per_task = learner.evaluate(tasks)
    assert list(per_task["n_query"]) == [4 + i % 5 - 2 for i in range(12)]
    # padding never enters a score: a task scored alone scores the same
    alone = learner.evaluate(tasks[:1])
    np.testing.assert_allclose(alone["mse"].iloc[0], per_task["mse"].iloc[0], rtol=1e-5)


def test_score_and_evaluate_agree(small_tasks):
    X, y = small_tasks
    learner = MetaSymmetryLearner(**SMALL).fit(X[:30], y[:30])
    per_task, summary = learner.evaluate(X[30:], y[30:], return_summary=True)
    assert len(per_task) == 10
    assert set(summary.index) == {"mse", "r2"}
    assert learner.score(X[30:], y[30:]) == pytest.approx(per_task["r2"].mean())
    assert summary.loc["mse", "ci95"] > 0
    # the split is seeded: scoring twice gives the same number
    assert learner.score(X[30:], y[30:]) == learner.score(X[30:], y[30:])


def test_classification_with_per_task_labels():
    tasks = classification_tasks(n_tasks=40, labels=[np.array(["cat", "dog", "eel"]),
                                                     np.array(["x", "y", "z"])])
    learner = MetaSymmetryLearner(layer="msr", n_filters=15, n_support=6, inner_steps=5,
                                  inner_lr=0.3, n_meta_steps=100, meta_lr=3e-3,
                                  meta_batch_size=8, random_state=0)
    learner.fit(tasks[:30])
    assert learner.objective_ == "classification" and learner.n_outputs_ == 3
    per_task = learner.evaluate(tasks[30:])
    assert {"accuracy", "log_loss"} <= set(per_task)
    # well above chance (1/3) after adapting on 6 support rows (measured: 0.82)
    assert per_task["accuracy"].mean() > 0.7
    assert learner.score(tasks[30:]) == pytest.approx(per_task["accuracy"].mean())


def test_objective_auto_and_explicit():
    tasks = classification_tasks(n_tasks=6)
    learner = MetaSymmetryLearner(**{**SMALL, "n_meta_steps": 2})
    assert learner.fit(tasks).objective_ == "classification"
    as_reg = [(X, y.astype(float)) for X, y in tasks]
    assert learner.fit(as_reg).objective_ == "regression"
    forced = MetaSymmetryLearner(**{**SMALL, "n_meta_steps": 2}, objective="classification")
    assert forced.fit([(X, y.astype(int).astype(float)) for X, y in tasks[:0]] or tasks) \
        .objective_ == "classification"


def test_multioutput_and_single_output_regression():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(10, 6, 4))
    y1 = X.sum(-1)  # (tasks, samples): one output
    learner = MetaSymmetryLearner(**{**SMALL, "n_meta_steps": 3}).fit(X, y1)
    assert learner.n_outputs_ == 1
    y3 = np.stack([X.sum(-1), X[..., 0], -X[..., 1]], -1)
    assert MetaSymmetryLearner(**{**SMALL, "n_meta_steps": 3}).fit(X, y3).n_outputs_ == 3


def test_cross_validate_splits_tasks(small_tasks):
    X, y = small_tasks
    tasks = [(X[i], y[i]) for i in range(len(X))]
    result = cross_validate(MetaSymmetryLearner(**SMALL), tasks, cv=KFold(3))
    assert result["test_score"].shape == (3,)
    assert np.isfinite(result["test_score"]).all()
    # long format: task ids reach the splitter, fit and score through metadata routing
    groups = np.repeat(np.arange(len(X)), X.shape[1])
    with sklearn.config_context(enable_metadata_routing=True):
        learner = MetaSymmetryLearner(**SMALL).set_fit_request(groups=True) \
            .set_score_request(groups=True)
        long = cross_validate(learner, X.reshape(-1, 10), y.reshape(-1, 8), cv=GroupKFold(3),
                              params={"groups": groups})
    assert long["test_score"].shape == (3,) and np.isfinite(long["test_score"]).all()


def test_grid_search_over_meta_hyperparameters(small_tasks):
    X, y = small_tasks
    tasks = [(X[i], y[i]) for i in range(len(X))]
    search = GridSearchCV(MetaSymmetryLearner(**SMALL),
                          {"inner_lr": [0.01, 0.3], "n_filters": [2, 3]}, cv=3)
    search.fit(tasks)
    assert search.cv_results_["mean_test_score"].shape == (4,)
    assert search.best_estimator_.symmetry_ is not None


def test_n_jobs_2_matches_sequential(small_tasks):
    X, y = small_tasks
    tasks = [(X[i], y[i]) for i in range(len(X))]
    seq = cross_validate(MetaSymmetryLearner(**SMALL), tasks, cv=3)["test_score"]
    par = cross_validate(MetaSymmetryLearner(**SMALL), tasks, cv=3, n_jobs=2)["test_score"]
    np.testing.assert_allclose(par, seq, rtol=1e-6)


def test_clone_pickle_deepcopy(small_tasks):
    X, y = small_tasks
    learner = MetaSymmetryLearner(**SMALL).fit(X, y)
    assert clone(learner).get_params() == learner.get_params()
    assert not hasattr(clone(learner), "symmetry_")
    for other in (pickle.loads(pickle.dumps(learner)), copy.deepcopy(learner)):
        assert other.score(X, y) == learner.score(X, y)
        assert other.symmetry_ == learner.symmetry_
    sym = learner.symmetry_
    assert pickle.loads(pickle.dumps(sym)) == sym and copy.deepcopy(sym) == sym


def test_deterministic_given_random_state(small_tasks):
    X, y = small_tasks
    state = torch.get_rng_state(), np.random.get_state()[1].copy()
    a = MetaSymmetryLearner(**SMALL).fit(X, y)
    b = MetaSymmetryLearner(**SMALL).fit(X, y)
    c = MetaSymmetryLearner(**{**SMALL, "random_state": 1}).fit(X, y)
    np.testing.assert_array_equal(a.symmetry_.symmetry_matrix(0), b.symmetry_.symmetry_matrix(0))
    assert not np.array_equal(a.symmetry_.symmetry_matrix(0), c.symmetry_.symmetry_matrix(0))
    # fit leaves the global RNGs alone
    assert torch.equal(torch.get_rng_state(), state[0])
    np.testing.assert_array_equal(np.random.get_state()[1], state[1])


def test_cuda_requested_without_cuda_is_a_clear_error(small_tasks):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="CUDA is not available"):
        MetaSymmetryLearner(**SMALL, device="cuda").fit(*small_tasks)


def test_warm_start_continues_training(small_tasks):
    X, y = small_tasks
    learner = MetaSymmetryLearner(**SMALL, warm_start=True).fit(X, y)
    first = learner.symmetry_
    learner.fit(X, y)
    assert len(learner.history_) == 60
    assert list(learner.history_["step"]) == list(range(60))
    assert learner.symmetry_ != first
    # a new meta_lr takes effect on the next warm start (meta-lr decay)
    learner.set_params(meta_lr=1e-4).fit(X, y)
    assert {g["lr"] / g.get("lr_scale", 1.0) for g in learner._optimizer.param_groups} == {1e-4}


@pytest.mark.parametrize("change", [{"hidden_layer_sizes": (4,)}, {"n_filters": 2},
                                    {"learn_symmetry": False}, {"learn_inner_lr": False}])
def test_warm_start_refuses_a_changed_network(small_tasks, change):
    X, y = small_tasks
    learner = MetaSymmetryLearner(**SMALL, warm_start=True).fit(X, y)
    before = learner.symmetry_
    (name,) = change
    with pytest.raises(ValueError, match=f"warm_start continues the fitted network, but {name}"):
        learner.set_params(**change).fit(X, y)
    assert learner.symmetry_ == before and len(learner.history_) == SMALL["n_meta_steps"]
    # restored, the warm start goes on
    learner.set_params(**{name: MetaSymmetryLearner(**SMALL).get_params()[name]}).fit(X, y)
    assert len(learner.history_) == 2 * SMALL["n_meta_steps"]


@pytest.mark.parametrize("layer", ["msr", "msr_kron"])
def test_learn_symmetry_false_keeps_u_and_meta_learns_the_rest(small_tasks, layer):
    X, y = small_tasks
    params = dict(SMALL, layer=layer, hidden_layer_sizes=(6,), meta_lr=1e-2)
    start = MetaSymmetryLearner(**{**params, "n_meta_steps": 1}, learn_symmetry=False)
    start = start.fit(X, y)
    frozen = MetaSymmetryLearner(**params, learn_symmetry=False).fit(X, y)
    learned = MetaSymmetryLearner(**params).fit(X, y)
    outer = {name for name, p in frozen.model_.named_parameters() if not p.requires_grad}
    assert outer and all(".sharing." in name for name in outer)
    for name, value in frozen.model_.state_dict().items():
        kept = torch.equal(value, start.model_.state_dict()[name])
        assert kept == (name in outer), name  # only U is kept
        if name in outer:  # with the same seed, learning moves it
            assert not torch.equal(value, learned.model_.state_dict()[name])
    for layer_index in range(2):  # the saved symmetry is the initial one
        np.testing.assert_array_equal(frozen.symmetry_.symmetry_matrix(layer_index),
                                      start.symmetry_.symmetry_matrix(layer_index))
    # learning U is what the translation tasks reward
    assert learned.score(X, y) > frozen.score(X, y)


def test_initial_symmetry_starts_from_a_given_state(small_tasks, tmp_path):
    X, y = small_tasks
    # an exact-looking sharing the learner would never draw: every layer state scaled
    given = MetaSymmetryLearner(**SMALL).fit(X, y).symmetry_
    state = {k: 2 * v for k, v in given.state.items()}
    start = LearnedSymmetry(given.module, given.policy, state, {"0.weight.filters": 0.3},
                            objective="regression", input_shape=given.input_shape,
                            n_outputs=given.n_outputs)
    frozen = MetaSymmetryLearner(**SMALL, initial_symmetry=start, learn_symmetry=False)
    frozen.fit(X, y)
    np.testing.assert_array_equal(frozen.symmetry_.symmetry_matrix(0),
                                  start.symmetry_matrix(0))  # U kept, exactly
    assert frozen.history_["inner_lr[0.weight.filters]"].iloc[0] == pytest.approx(0.3, abs=1e-3)
    assert not np.array_equal(frozen.symmetry_.initial_filters(0), start.initial_filters(0))
    # with U learned it starts there too: the first step's loss is the given state's
    learned = MetaSymmetryLearner(**SMALL, initial_symmetry=start).fit(X, y)
    assert learned.history_.train_loss.iloc[0] == frozen.history_.train_loss.iloc[0]
    assert not np.array_equal(learned.symmetry_.symmetry_matrix(0), start.symmetry_matrix(0))
    # deterministic, clonable, and a checkpoint records which symmetry it started from
    again = clone(frozen).fit(X, y)
    assert again.symmetry_ == frozen.symmetry_
    path = tmp_path / "run.msr"
    MetaSymmetryLearner(**SMALL, initial_symmetry=start, callbacks=[Checkpoint(path)]).fit(X, y)
    with pytest.raises(ValueError, match="initial_symmetry"):
        MetaSymmetryLearner(**SMALL, initial_symmetry=given,
                            callbacks=[Checkpoint(path, resume=True)]).fit(X, y)


@pytest.mark.parametrize("change, match", [
    ({"n_filters": 4}, r"a different policy for \['0.weight'\]"),
    ({"hidden_layer_sizes": (4,)}, r"module .*'hidden_layer_sizes': \(\).* \(the learner's: "
                                   r".*'hidden_layer_sizes': \(4,\)"),
])
def test_initial_symmetry_of_another_architecture_is_refused(small_tasks, change, match):
    X, y = small_tasks
    given = MetaSymmetryLearner(**{**SMALL, "n_meta_steps": 1}).fit(X, y).symmetry_
    with pytest.raises(ValueError, match="initial_symmetry does not fit this learner.*" + match):
        MetaSymmetryLearner(**{**SMALL, **change}, initial_symmetry=given).fit(X, y)
    tasks = classification_tasks(n_features=10)
    with pytest.raises(ValueError, match="objective='regression' \\(the learner's: "
                                         "'classification'\\)"):
        MetaSymmetryLearner(**{**SMALL, "n_filters": 3}, initial_symmetry=LearnedSymmetry.initial(
            n_features=10, n_outputs=3, n_filters=3, bias=False)).fit(tasks)
    with pytest.raises(TypeError, match="initial_symmetry"):
        MetaSymmetryLearner(**SMALL, initial_symmetry="exact").fit(X, y)


def test_divergence_stops_and_keeps_last_finite_state(small_tasks):
    X, y = small_tasks
    learner = MetaSymmetryLearner(**{**SMALL, "n_meta_steps": 200, "meta_lr": 1e6}, inner_lr=50.0)
    with pytest.warns(RuntimeWarning, match="non-finite"):
        learner.fit(X, y)
    assert learner.history_["diverged"].iloc[-1]
    assert len(learner.history_) < 200
    for layer_state in learner.symmetry_.state.values():
        assert np.isfinite(layer_state).all()


def test_a_nan_meta_loss_skips_the_update_and_the_learner_stays_usable(small_tasks,
                                                                         losses_times_at):
    X, y = small_tasks
    losses_times_at(11, float("nan"))  # e.g. a task whose loss overflows at step 10
    # no pruning: a 9-step fit would prune its U at its last step, a stopped one does not
    learner = MetaSymmetryLearner(**SMALL, sharing_sparsity=0.0)
    with pytest.warns(RuntimeWarning, match="non-finite at step 10"):
        learner.fit(X, y)
    assert len(learner.history_) == 11 and learner.history_["diverged"].sum() == 1
    # the loss at step 10 judged the state step 9's update made: that update is undone,
    # so the learner holds exactly the state after step 8 (whose loss was finite)
    reference = MetaSymmetryLearner(**{**SMALL, "n_meta_steps": 9},
                                    sharing_sparsity=0.0).fit(X, y)
    assert learner.symmetry_ == reference.symmetry_
    for ours, theirs in zip(learner._optimizer.state.values(),
                            reference._optimizer.state.values()):  # Adam's state too
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert np.isfinite(learner.score(X, y))


def test_keyboard_interrupt_leaves_a_usable_learner(small_tasks, interrupt_at):
    X, y = small_tasks
    interrupt_at(6)
    learner = MetaSymmetryLearner(**SMALL)
    with pytest.warns(RuntimeWarning, match="interrupted after 5 meta-steps"):
        learner.fit(X, y)
    assert len(learner.history_) == 5
    assert np.isfinite(learner.score(X, y))


@pytest.mark.parametrize("params, message", [
    ({"inner_lr": 0.0}, "inner_lr"),
    ({"inner_lr": -1.0}, "inner_lr"),
    ({"meta_batch_size": 0}, "meta_batch_size"),
    ({"n_meta_steps": 0}, "n_meta_steps"),
    ({"layer": "banana"}, "layer"),
    ({"objective": "ranking"}, "objective"),
])
def test_invalid_parameters_are_named(small_tasks, params, message):
    with pytest.raises(ValueError, match=message):
        MetaSymmetryLearner(**{**SMALL, **params}).fit(*small_tasks)


def test_feature_count_mismatch_at_score_time(small_tasks):
    X, y = small_tasks
    learner = MetaSymmetryLearner(**SMALL).fit(X, y)
    with pytest.raises(ValueError, match=r"tasks have samples of shape \(9,\), but the "
                                         r"learner was fitted with samples of shape \(10,\)"):
        learner.score(X[..., :9], y)


def test_verbose_shows_progress(small_tasks, capsys):
    MetaSymmetryLearner(**{**SMALL, "n_meta_steps": 5}, verbose=1).fit(*small_tasks)
    err = capsys.readouterr().err
    assert "meta-training" in err and "loss=" in err


def test_no_warnings_in_a_normal_fit(small_tasks):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MetaSymmetryLearner(**SMALL).fit(*small_tasks)


def test_make_estimator_reproduces_the_learners_adaptation(small_tasks):
    from msr_sklearn import EquivariantClassifier, EquivariantRegressor

    X, y = small_tasks
    learner = MetaSymmetryLearner(**SMALL).fit(X[:30], y[:30])
    reg = learner.make_estimator()
    assert isinstance(reg, EquivariantRegressor) and reg.symmetry is learner.symmetry_
    assert not hasattr(reg, "network_")  # unfitted
    # adapting on a task's first rows predicts exactly what the learner's engine predicts
    from msr_sklearn.data.batch import TaskBatch
    from msr_sklearn.engine import adapted_outputs

    Xt = torch.tensor(X[30:31], dtype=torch.float32)
    yt = torch.tensor(y[30:31], dtype=torch.float32)
    engine = adapted_outputs(learner.model_, TaskBatch(Xt[:, :2], yt[:, :2], Xt[:, 2:],
                                                       yt[:, 2:]),
                             learner._inner_loop())[0].numpy()
    np.testing.assert_allclose(reg.fit(X[30, :2], y[30, :2]).predict(X[30, 2:]), engine,
                               rtol=1e-4, atol=1e-5)
    clf_learner = MetaSymmetryLearner(**{**SMALL, "n_meta_steps": 2}).fit(
        classification_tasks(n_tasks=6))
    assert isinstance(clf_learner.make_estimator(inner_steps=3), EquivariantClassifier)
