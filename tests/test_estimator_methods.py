"""EquivariantRegressor / EquivariantClassifier: input layouts, the default step with
hidden layers, decision_function / predict_log_proba, sample_weight, verbose, and the
symmetry's feature names."""

import re
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, make_friedman1
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler

from msr_sklearn import LearnedSymmetry
from msr_sklearn.estimators import EquivariantClassifier, EquivariantRegressor


def _standardized(X, y=None):
    X = StandardScaler().fit_transform(X)
    return X if y is None else (X, (y - y.mean()) / y.std())


def _symmetry(objective="classification", n_features=4, n_outputs=3):
    return LearnedSymmetry.initial(objective=objective, n_features=n_features,
                                   n_outputs=n_outputs, n_filters=min(6, n_features * n_outputs),
                                   inner_lr=0.3, inner_steps=5, random_state=0)


# ------------------------------------------------------------ float32, negative strides
@pytest.mark.parametrize("cls", [EquivariantRegressor, EquivariantClassifier])
def test_float32_input_with_negative_strides(cls):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int) if cls is EquivariantClassifier else X[:, 0] - X[:, 1]
    reference = cls(random_state=0).fit(np.ascontiguousarray(X[::-1]),
                                        np.ascontiguousarray(y[::-1]))
    for layout in (X[::-1], X[:, ::-1][:, ::-1][::-1]):
        est = cls(random_state=0).fit(layout, y[::-1])
        assert_array_equal(est.predict(X[::-1]), reference.predict(X[::-1].copy()))
    reversed_columns = cls(random_state=0).fit(X[:, ::-1], y)
    assert reversed_columns.predict(X[:, ::-1]).shape == (20,)
    frame = pd.DataFrame(X, columns=list("abcd"))[["d", "c", "b", "a"]]
    est = cls(random_state=0).fit(frame, y)
    assert_array_equal(est.predict(frame), reversed_columns.predict(X[:, ::-1].copy()))
    weights = np.arange(1.0, 21.0, dtype=np.float32)[::-1]  # weights may be reversed too
    assert cls(random_state=0).fit(frame, y, sample_weight=weights).predict(frame).shape == (20,)


# ------------------------------------------------ the default step with hidden layers
def _regression_data():
    X, y = load_diabetes(return_X_y=True)
    yield "diabetes", *_standardized(X, y)
    X, y = make_friedman1(300, noise=1.0, random_state=0)
    yield "friedman1", *_standardized(X, y)


@pytest.mark.parametrize("hidden", [(32,), (16, 16)])
def test_hidden_layer_baseline_does_not_diverge_at_its_default_rate(hidden):
    for name, X, y in _regression_data():
        for seed in range(8):
            rows = np.random.default_rng(seed).permutation(len(X))
            train, test = rows[:40], rows[40:140]
            with warnings.catch_warnings():
                warnings.simplefilter("error", ConvergenceWarning)
                reg = EquivariantRegressor(hidden_layer_sizes=hidden, random_state=seed)
                reg.fit(X[train], y[train])
            assert np.isfinite(reg.score(X[test], y[test])), (name, seed)
            losses = reg.net_.history[:, "train_loss"]
            assert losses[-1] < 0.5 * losses[0], (name, seed)
    X, y = load_digits(return_X_y=True)
    X = _standardized(X)
    for seed in range(4):
        rows = np.random.default_rng(seed).permutation(len(X))[:300]
        clf = EquivariantClassifier(hidden_layer_sizes=hidden, random_state=seed)
        assert clf.fit(X[rows[:200]], y[rows[:200]]).score(X[rows[200:]], y[rows[200:]]) > 0.7


def test_default_rate_with_hidden_layers_is_one_over_the_gauss_newton_curvature():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(30, 5)), rng.normal(size=(30, 2))
    w = rng.uniform(0.2, 3.0, size=30)
    for kwargs, share in [({}, np.full(30, 1 / 30)), ({"sample_weight": w}, w / w.sum())]:
        reg = EquivariantRegressor(hidden_layer_sizes=(7,), inner_steps=1, random_state=0)
        reg.fit(X, y, **kwargs)
        initial = EquivariantRegressor(hidden_layer_sizes=(7,), inner_steps=0,
                                       random_state=0).fit(X, y).network_.model
        params = dict(initial.initial_inner())
        names = list(params)

        def outputs(*tensors):
            inner = {n: t[None] for n, t in zip(names, tensors)}
            return initial(torch.tensor(X[None], dtype=torch.float32), inner)[0]

        jac = torch.autograd.functional.jacobian(
            outputs, tuple(p.detach() for p in params.values()))
        J = torch.cat([j.reshape(60, -1) for j in jac], 1).double().numpy()  # (n * outputs, p)
        D = np.repeat(share, 2)
        curvature = 2 / 2 * np.linalg.eigvalsh(J.T @ (D[:, None] * J))[-1]  # c = 2/n_outputs
        assert_allclose(list(reg.inner_lrs_.values()), [1 / curvature] * 4, rtol=2e-3)


def test_a_diverged_fit_says_so_at_predict_and_score():
    X, y = _standardized(*load_diabetes(return_X_y=True))
    with pytest.warns(ConvergenceWarning, match="diverged"):
        reg = EquivariantRegressor(hidden_layer_sizes=(32,), inner_lr=5.0,
                                   random_state=0).fit(X, y)
    for method in (reg.predict, lambda X: reg.score(X, y)):
        with pytest.raises(ValueError, match="adaptation diverged in fit.*lower inner_lr"):
            method(X)


# ------------------------------------------------- decision_function, log probabilities
def test_decision_function_and_predict_log_proba():
    X, y = load_breast_cancer(return_X_y=True)
    X = _standardized(X)[:, :8]
    labels = np.array(["benign", "malignant"])[y]
    binary = EquivariantClassifier(random_state=0).fit(X, labels)
    scores = binary.decision_function(X)
    assert scores.shape == (len(X),)
    assert_array_equal(binary.predict(X), binary.classes_[(scores > 0).astype(int)])
    proba = binary.predict_proba(X)
    assert_allclose(proba[:, 1], 1 / (1 + np.exp(-scores)), rtol=1e-10)
    assert_allclose(binary.predict_log_proba(X), np.log(proba), rtol=1e-10, atol=1e-12)

    three = y % 2 + (X[:, 0] > 1)
    multi = EquivariantClassifier(_symmetry(n_features=8, n_outputs=4)).fit(X, three)
    scores = multi.decision_function(X)
    assert scores.shape == (len(X), 3)  # 3 classes of the 4-way symmetry's logits
    assert_array_equal(multi.classes_[scores.argmax(1)], multi.predict(X))
    log_proba = multi.predict_log_proba(X)
    assert_allclose(np.exp(log_proba), multi.predict_proba(X), rtol=1e-10)
    assert_allclose(log_proba, scores - np.log(np.exp(scores).sum(1, keepdims=True)),
                    rtol=1e-10)


def test_regressor_has_no_decision_function():
    assert not hasattr(EquivariantRegressor(), "decision_function")


# --------------------------------------------------------------------- sample_weight
@pytest.mark.parametrize("cls", [EquivariantRegressor, EquivariantClassifier])
@pytest.mark.parametrize("hidden", [(), (6,)])
def test_sample_weight_equals_repeated_rows(cls, hidden):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(15, 4))
    y = rng.integers(0, 3, size=15) if cls is EquivariantClassifier else rng.normal(size=15)
    w = rng.integers(0, 4, size=15)
    w[:3] = 1  # every class keeps a row
    params = dict(hidden_layer_sizes=hidden, random_state=0, inner_steps=50)
    weighted = cls(**params).fit(X, y, sample_weight=w)
    repeated = cls(**params).fit(np.repeat(X, w, axis=0), np.repeat(y, w))
    assert_allclose(list(weighted.inner_lrs_.values()), list(repeated.inner_lrs_.values()),
                    rtol=1e-6)
    method = "predict" if cls is EquivariantRegressor else "predict_proba"
    assert_allclose(getattr(weighted, method)(X), getattr(repeated, method)(X), rtol=1e-4,
                    atol=1e-5)
    unweighted = getattr(cls(**params).fit(X, y), method)(X)
    assert not np.allclose(getattr(weighted, method)(X), unweighted, atol=1e-3)
    # equal weights are no weights, bit for bit
    assert_array_equal(getattr(cls(**params).fit(X, y, sample_weight=np.full(15, 3.0)),
                               method)(X), unweighted)


def test_bound_sample_weight_keeps_the_learned_rates_and_the_loss_scale():
    sym = _symmetry("regression", n_features=4, n_outputs=1)
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(12, 4)), rng.normal(size=12)
    w = rng.uniform(0.5, 2.0, size=12)
    reg = EquivariantRegressor(sym).fit(X, y, sample_weight=w)
    assert reg.inner_lrs_ == sym.inner_lrs  # the meta-learned rates, untouched
    # the first step's loss is the weighted mean squared error of the initial network
    initial = sym.build_model()(torch.tensor(X, dtype=torch.float32)).detach().numpy()[:, 0]
    assert reg.net_.history[0, "train_loss"] == pytest.approx(
        np.average((initial - y) ** 2, weights=w), rel=1e-5)


@pytest.mark.parametrize("weights, match", [(np.zeros(6), "at least one non-zero"),
                                            (-np.ones(6), "Negative values"),
                                            (np.ones(5), "shape")])
def test_bad_sample_weight_is_a_clear_error(weights, match):
    X, y = np.random.default_rng(4).normal(size=(6, 2)), np.arange(6.0)
    with pytest.raises(ValueError, match=match):
        EquivariantRegressor().fit(X, y, sample_weight=weights)


# --------------------------------------------------------------------------- verbose
def test_verbose_prints_the_loss_of_every_step(capsys):
    X, y = np.random.default_rng(5).normal(size=(10, 3)), np.arange(10.0)
    EquivariantRegressor(inner_steps=4, random_state=0).fit(X, y)
    assert capsys.readouterr().out == ""
    reg = EquivariantRegressor(inner_steps=4, random_state=0, verbose=1).fit(X, y)
    out = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)  # PrintLog's colours
    assert "train_loss" in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [int(r[0]) for r in rows] == [1, 2, 3, 4]
    assert_allclose([float(r[1]) for r in rows], reg.net_.history[:, "train_loss"], rtol=1e-3)


# ------------------------------------------------------------ the symmetry's feature names
def _named_symmetry(names):
    sym = _symmetry(n_features=len(names))
    sym.feature_names = np.asarray(names, dtype=object)
    return sym


def test_columns_are_checked_against_the_symmetrys_feature_names():
    rng = np.random.default_rng(6)
    names = ["a", "b", "c", "d"]
    X = pd.DataFrame(rng.normal(size=(12, 4)), columns=names)
    y = np.arange(12) % 3
    clf = EquivariantClassifier(_named_symmetry(names))
    assert_array_equal(clf.fit(X, y).feature_names_in_, names)
    with pytest.raises(ValueError, match=r"(?s)same order.*reorder the columns"):
        clf.fit(X[["b", "a", "c", "d"]], y)
    with pytest.raises(ValueError, match=r"(?s)unseen at meta-training:\n- e\n.*missing:\n- d"):
        clf.fit(X.rename(columns={"d": "e"}), y)
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        clf.fit(X.to_numpy(), y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # a symmetry without names (meta-learned on arrays, or an older file): no check
        EquivariantClassifier(_symmetry()).fit(X[["b", "a", "c", "d"]], y)
        old = _symmetry()
        assert old.feature_names is None
        EquivariantClassifier(old).fit(X.to_numpy(), y)


def test_a_learner_fitted_on_a_dataframe_hands_its_columns_to_the_estimators():
    from msr_sklearn import MetaSymmetryLearner

    rng = np.random.default_rng(7)
    names = [f"pixel{j}" for j in range(5)]
    X = pd.DataFrame(rng.normal(size=(60, 5)), columns=names)
    y, groups = np.tile([0, 1, 2], 20), np.repeat(np.arange(10), 6)
    learner = MetaSymmetryLearner(n_filters=3, n_support=3, n_meta_steps=2,
                                  random_state=0).fit(X, y, groups=groups)
    assert_array_equal(learner.symmetry_.feature_names, names)
    clf = learner.make_estimator()
    assert clf.fit(X.iloc[:6], y[:6]).predict(X.iloc[6:12]).shape == (6,)
    with pytest.raises(ValueError, match="feature names of X should match"):
        clf.fit(X.iloc[:6, ::-1], y[:6])
    unnamed = MetaSymmetryLearner(n_filters=3, n_support=3, n_meta_steps=2, random_state=0)
    assert unnamed.fit(X.to_numpy(), y, groups=groups).symmetry_.feature_names is None


# ------------------------------------------------- the preprocessing of a routed pipeline
def test_make_task_pipeline_carries_the_fitted_preprocessing():
    import sklearn
    from sklearn.pipeline import Pipeline, make_pipeline

    from msr_sklearn import MetaSymmetryLearner, make_task_pipeline
    from msr_sklearn.datasets import make_translation_tasks

    X3, y3 = make_translation_tasks(n_tasks=40, n_samples=8, n_features=8, random_state=0)
    X, y = 5 + 4 * X3.reshape(320, 8), y3.reshape(320, -1)  # features far from scaled
    groups = np.repeat(np.arange(40), 8)
    train, test = groups < 32, groups >= 32
    with sklearn.config_context(enable_metadata_routing=True):
        learner = (MetaSymmetryLearner(n_filters=3, n_support=3, n_meta_steps=30,
                                       support_split="first", random_state=0)
                   .set_fit_request(groups=True).set_score_request(groups=True))
        pipe = make_pipeline(StandardScaler(), learner).fit(X[train], y[train],
                                                            groups=groups[train])
        task_pipe = make_task_pipeline(pipe, inner_steps=2)
    scaler = pipe[0]
    mean = scaler.mean_.copy()
    assert isinstance(task_pipe, Pipeline) and task_pipe[-1].inner_steps == 2
    task_pipe = make_task_pipeline(pipe)
    # per test task: fit on its 3 support rows (the learner's "first" split), predict its query
    errors, raw_errors = [], []
    for t in range(32, 40):
        rows = np.flatnonzero(groups == t)
        support, query = rows[:3], rows[3:]
        predicted = task_pipe.fit(X[support], y[support]).predict(X[query])
        by_hand = pipe[-1].make_estimator().fit(scaler.transform(X[support]), y[support])
        assert_allclose(predicted, by_hand.predict(scaler.transform(X[query])), rtol=1e-5,
                        atol=1e-6)
        errors.append(np.mean((predicted - y[query]) ** 2))
        raw = pipe[-1].make_estimator().fit(X[support], y[support]).predict(X[query])
        raw_errors.append(np.mean((raw - y[query]) ** 2))
    assert_array_equal(task_pipe[0].estimator.mean_, mean)  # the support never refits it
    assert task_pipe[0].estimator is not scaler  # a copy: refitting pipe leaves it alone
    # the learner's own scores of these tasks, through the same steps
    per_task = pipe[-1].evaluate(scaler.transform(X[test]), y[test], groups=groups[test])
    assert_allclose(errors, per_task["mse"], rtol=1e-4)
    assert np.mean(raw_errors) > 2 * np.mean(errors)  # unscaled inputs break the symmetry
    with pytest.raises(TypeError, match="make_estimator"):
        make_task_pipeline(pipe[-1])
    with pytest.raises(TypeError, match="needs a MetaSymmetryLearner"):
        make_task_pipeline(make_pipeline(StandardScaler()))
