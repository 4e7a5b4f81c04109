"""Task-level scorers under scikit-learn's scorer names, and the learner's refusal of row
predictions.

Every score must equal the learner's ``evaluate`` on the same tasks (the mean over tasks
of the per-task metric on the query rows, sign-flipped for ``neg_*``) to 1e-12 and be
finite, in cross_validate, GridSearchCV (with refit) and HalvingGridSearchCV, with
routing on (long format) and off (task lists, 3-D arrays). The per-task metrics
themselves must be scikit-learn's functions on the adapted predictions.
"""

import pickle
import warnings

import numpy as np
import pytest
import sklearn
from sklearn.datasets import load_diabetes, load_digits
from sklearn.experimental import enable_halving_search_cv  # noqa: F401
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, explained_variance_score,
                             log_loss, mean_absolute_error, mean_squared_error, r2_score,
                             roc_auc_score, root_mean_squared_error)
from sklearn.model_selection import (GridSearchCV, GroupKFold, HalvingGridSearchCV, KFold,
                                     cross_validate)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from msr_sklearn import MetaSymmetryLearner
from msr_sklearn.scoring import get_task_scorer_names, make_task_scorer, task_scoring
from msr_sklearn.scoring.scorers import TASK_SCORERS

CLASSIFICATION = ["accuracy", "balanced_accuracy", "neg_log_loss"]
REGRESSION = ["r2", "explained_variance", "neg_mean_squared_error",
              "neg_root_mean_squared_error", "neg_mean_absolute_error"]
SMALL = dict(n_filters=4, n_support=3, n_meta_steps=4, meta_batch_size=8, random_state=0)


def digit_tasks(n_tasks=24, n_way=3, per_class=4, seed=0):
    """N-way tasks of standardized digits (pixels), ``per_class`` rows of each class."""
    X, y = load_digits(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    rng = np.random.default_rng(seed)
    tasks = []
    for _ in range(n_tasks):
        rows = np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False)
                               for c in rng.choice(10, n_way, replace=False)])
        rows = rng.permutation(rows)
        tasks.append((X[rows], y[rows]))
    return tasks


def diabetes_tasks(n_tasks=24, n_rows=10, seed=0):
    """Tasks of standardized diabetes patients: a random partition of the rows."""
    X, y = load_diabetes(return_X_y=True)
    X, y = StandardScaler().fit_transform(X), (y - y.mean()) / y.std()
    rows = np.random.default_rng(seed).permutation(len(X))[:n_tasks * n_rows]
    return [(X[r], y[r]) for r in rows.reshape(n_tasks, n_rows)]


def by_hand(learner, train, test, names, sample_weight=None, **kwargs):
    """Each name's expected score: fit on ``train``, the signed mean over ``test``'s tasks
    of ``evaluate``'s metric (weighted as score weighs tasks)."""
    fitted = sklearn.base.clone(learner).fit(*train, **kwargs.get("fit", {}))
    metrics = [TASK_SCORERS[n][0] for n in names]
    per_task = fitted.evaluate(*test, **kwargs.get("score", {}), metrics=metrics,
                               sample_weight=sample_weight)
    weights = None if sample_weight is None else per_task["weight"]
    return {n: TASK_SCORERS[n][1] * float(np.average(per_task[TASK_SCORERS[n][0]],
                                                      weights=weights)) for n in names}


def assert_scores(result, expected, prefix="test_"):
    for name, values in expected.items():
        got = np.asarray(result[prefix + name], dtype=float)
        assert np.isfinite(got).all(), name
        np.testing.assert_allclose(got, values, rtol=1e-12, atol=1e-12, err_msg=name)


# ------------------------------------------------------------------------ construction
def test_names_are_checked_when_the_scorer_is_built():
    assert set(get_task_scorer_names()) == set(CLASSIFICATION + REGRESSION + ["roc_auc"])
    with pytest.raises(ValueError, match=r"\['f1'\] is not a task scorer name.*accuracy"):
        make_task_scorer("f1")
    with pytest.raises(ValueError, match="mix regression and classification"):
        task_scoring(["accuracy", "r2"])
    with pytest.raises(ValueError, match="twice"):
        task_scoring(["r2", "r2"])
    with pytest.raises(ValueError, match="empty"):
        task_scoring([])
    with pytest.raises(TypeError, match="task_scoring"):
        make_task_scorer(["r2"])
    assert repr(task_scoring({"a": "r2"})) == "task_scoring({'a': 'r2'})"
    copy = pickle.loads(pickle.dumps(task_scoring({"a": "r2"})))  # for n_jobs > 1
    assert copy.scoring == {"a": "r2"} and copy.objective == "regression"
    assert repr(task_scoring("r2")) == "make_task_scorer('r2')"


# -------------------------------------------------------------- routing off: task lists
@pytest.mark.parametrize("objective", ["classification", "regression"])
def test_cross_validate_with_list_and_dict_scoring_equals_evaluate(objective):
    tasks = digit_tasks() if objective == "classification" else diabetes_tasks()
    names = CLASSIFICATION if objective == "classification" else REGRESSION
    learner = MetaSymmetryLearner(**SMALL)
    folds = list(KFold(3).split(tasks))
    hand = [by_hand(learner, ([tasks[i] for i in tr],), ([tasks[i] for i in te],), names)
            for tr, te in folds]
    expected = {n: [h[n] for h in hand] for n in names}
    listed = cross_validate(learner, tasks, cv=KFold(3), scoring=task_scoring(names))
    assert_scores(listed, expected)
    keyed = cross_validate(learner, tasks, cv=KFold(3),
                           scoring=task_scoring({f"m{i}": n for i, n in enumerate(names)}))
    assert_scores(keyed, {f"m{i}": expected[n] for i, n in enumerate(names)})
    one = cross_validate(learner, tasks, cv=KFold(3), scoring=make_task_scorer(names[0]))
    assert_scores(one, {"score": expected[names[0]]})
    # the learner's own score is the same number as its scorer name's
    plain = cross_validate(learner, tasks, cv=KFold(3))
    assert_scores(plain, {"score": expected[names[0]]})


def test_3d_arrays_and_train_scores():
    tasks = diabetes_tasks()
    X3 = np.stack([x for x, _ in tasks])
    y3 = np.stack([y for _, y in tasks])
    learner = MetaSymmetryLearner(**SMALL)
    result = cross_validate(learner, X3, y3, cv=KFold(2), return_train_score=True,
                            scoring=task_scoring(["r2", "neg_mean_absolute_error"]))
    for prefix, rows in [("test_", 1), ("train_", 0)]:
        hand = [by_hand(learner, (X3[tr], y3[tr]), (X3[split[rows]], y3[split[rows]]),
                        ["r2", "neg_mean_absolute_error"])
                for split in KFold(2).split(X3) for tr in [split[0]]]
        assert_scores(result, {n: [h[n] for h in hand]
                               for n in ["r2", "neg_mean_absolute_error"]}, prefix)


# ------------------------------------------------------------- routing on: long format
def _long(tasks):
    X = np.concatenate([x for x, _ in tasks])
    y = np.concatenate([y for _, y in tasks])
    groups = np.repeat(np.arange(len(tasks)), [len(x) for x, _ in tasks])
    return X, y, groups


def _routed(**params):
    return (MetaSymmetryLearner(**{**SMALL, **params})
            .set_fit_request(groups=True).set_score_request(groups=True))


def _pipeline_by_hand(X, y, groups, train, test, names, sample_weight=None, **params):
    scaler = StandardScaler().fit(X[train])
    return by_hand(MetaSymmetryLearner(**{**SMALL, **params}),
                   (scaler.transform(X[train]), y[train]),
                   (scaler.transform(X[test]), y[test]), names,
                   None if sample_weight is None else sample_weight[test],
                   fit={"groups": groups[train]}, score={"groups": groups[test]})


@pytest.mark.parametrize("objective", ["classification", "regression"])
def test_routed_pipeline_in_cross_validate(objective):
    tasks = digit_tasks() if objective == "classification" else diabetes_tasks()
    names = CLASSIFICATION if objective == "classification" else REGRESSION[:3]
    X, y, groups = _long(tasks)
    with sklearn.config_context(enable_metadata_routing=True):
        pipe = make_pipeline(StandardScaler(), _routed())
        result = cross_validate(pipe, X, y, cv=GroupKFold(3), params={"groups": groups},
                                scoring=task_scoring(names))
    hand = [_pipeline_by_hand(X, y, groups, tr, te, names)
            for tr, te in GroupKFold(3).split(X, y, groups)]
    assert_scores(result, {n: [h[n] for h in hand] for n in names})


def test_routed_sample_weight_reaches_the_scorer_when_requested():
    X, y, groups = _long(diabetes_tasks())
    weights = np.random.default_rng(1).uniform(0.2, 3.0, size=len(X))
    names = ["r2", "neg_mean_squared_error"]
    with sklearn.config_context(enable_metadata_routing=True):
        pipe = make_pipeline(StandardScaler().set_fit_request(sample_weight=False), _routed())
        scorer = task_scoring(names).set_score_request(sample_weight=True)
        result = cross_validate(pipe, X, y, cv=GroupKFold(2), scoring=scorer,
                                params={"groups": groups, "sample_weight": weights})
        with pytest.raises(Exception, match="sample_weight"):  # unrequested: sklearn refuses
            cross_validate(pipe, X, y, cv=GroupKFold(2), scoring=task_scoring(names),
                           params={"groups": groups, "sample_weight": weights})
    hand = [_pipeline_by_hand(X, y, groups, tr, te, names, sample_weight=weights)
            for tr, te in GroupKFold(2).split(X, y, groups)]
    assert_scores(result, {n: [h[n] for h in hand] for n in names})
    unweighted = [_pipeline_by_hand(X, y, groups, tr, te, names)
                  for tr, te in GroupKFold(2).split(X, y, groups)]
    assert not np.allclose(result["test_r2"], [h["r2"] for h in unweighted], rtol=1e-6)
    with pytest.raises(RuntimeError, match="metadata routing"):
        task_scoring(names).set_score_request(sample_weight=True)


# -------------------------------------------------------------------------- searches
def test_grid_search_with_multimetric_scoring_and_refit():
    tasks = digit_tasks()
    grid = {"inner_lr": [0.02, 0.5]}
    search = GridSearchCV(MetaSymmetryLearner(**SMALL), grid, cv=KFold(2),
                          scoring=task_scoring(CLASSIFICATION), refit="neg_log_loss")
    search.fit(tasks)
    results = search.cv_results_
    for i, params in enumerate(results["params"]):
        hand = [by_hand(MetaSymmetryLearner(**SMALL, **params), ([tasks[j] for j in tr],),
                        ([tasks[j] for j in te],), CLASSIFICATION)
                for tr, te in KFold(2).split(tasks)]
        for name in CLASSIFICATION:
            np.testing.assert_allclose([results[f"split{k}_test_{name}"][i] for k in range(2)],
                                       [h[name] for h in hand], rtol=1e-12, atol=1e-12)
    means = results["mean_test_neg_log_loss"]
    assert np.isfinite(means).all() and means[0] != means[1]
    assert search.best_index_ == int(np.argmax(means))
    assert search.best_score_ == means[search.best_index_]
    assert search.best_estimator_.inner_lr == grid["inner_lr"][search.best_index_]
    # the fitted search is scored by the same scorer, through its best estimator
    assert search.scorer_(search, tasks)["accuracy"] == pytest.approx(
        by_hand(search.best_estimator_, (tasks,), (tasks,), ["accuracy"])["accuracy"],
        abs=1e-12)


def test_halving_search_over_n_meta_steps_with_a_task_scorer():
    X, y, groups = _long(digit_tasks())
    with sklearn.config_context(enable_metadata_routing=True):
        search = HalvingGridSearchCV(
            make_pipeline(StandardScaler(), _routed()),
            {"metasymmetrylearner__inner_lr": [0.02, 0.1, 0.5]},
            resource="metasymmetrylearner__n_meta_steps", min_resources=2, max_resources=6,
            factor=3, cv=GroupKFold(2), scoring=make_task_scorer("balanced_accuracy"))
        search.fit(X, y, groups=groups)
    results = search.cv_results_
    assert search.n_resources_ == [2, 6] and np.isfinite(results["mean_test_score"]).all()
    for i, params in enumerate(results["params"]):
        hand = [_pipeline_by_hand(X, y, groups, tr, te, ["balanced_accuracy"],
                                  inner_lr=params["metasymmetrylearner__inner_lr"],
                                  n_meta_steps=params["metasymmetrylearner__n_meta_steps"])
                for tr, te in GroupKFold(2).split(X, y, groups)]
        np.testing.assert_allclose([results[f"split{k}_test_score"][i] for k in range(2)],
                                   [h["balanced_accuracy"] for h in hand], rtol=1e-12)


# ------------------------------------------------------- what cannot be scored, and why
def test_a_scorer_of_the_other_objective_is_a_clear_error():
    tasks = diabetes_tasks()
    learner = MetaSymmetryLearner(**SMALL).fit(tasks[:16])
    with pytest.raises(ValueError, match=r"score classification tasks, but the "
                                         r"MetaSymmetryLearner was fitted for regression"):
        make_task_scorer("accuracy")(learner, tasks[16:])
    with pytest.raises(ValueError, match="fitted for regression"):
        cross_validate(MetaSymmetryLearner(**SMALL), tasks, cv=KFold(2),
                       scoring=task_scoring(["accuracy"]), error_score="raise")


def test_roc_auc_needs_binary_tasks_with_both_classes_in_every_query():
    learner = MetaSymmetryLearner(**SMALL).fit(digit_tasks(16))
    with pytest.raises(ValueError, match="roc_auc scores binary tasks; task 0 has 3 classes"):
        make_task_scorer("roc_auc")(learner, digit_tasks(4, seed=1))
    binary = MetaSymmetryLearner(**{**SMALL, "n_support": 2}).fit(digit_tasks(16, n_way=2))
    score = make_task_scorer("roc_auc")(binary, digit_tasks(8, n_way=2, seed=2))
    assert 0 <= score <= 1
    one_class_query = [(x, y) for x, y in digit_tasks(2, n_way=2, per_class=1, seed=3)]
    one_class_query = [(np.r_[x, x[:1]], np.r_[y, y[:1]]) for x, y in one_class_query]
    with pytest.raises(ValueError, match="roc_auc is undefined for task 0"):
        make_task_scorer("roc_auc")(binary, one_class_query)


def test_the_learner_refuses_row_predictions_and_says_what_to_use():
    learner = MetaSymmetryLearner(**SMALL).fit(digit_tasks(8))
    for method in (learner.predict, learner.predict_proba):
        with pytest.raises(TypeError, match=r"scores whole tasks.*task_scoring.*"
                                            r"make_estimator\(\)"):
            method(digit_tasks(2))
    # scikit-learn's plain names would call predict at scoring time, which scikit-learn
    # turns into NaN scores; every fit refuses them at its start instead, and the search
    # raises the explanation instead of choosing a "best" NaN
    X, y, groups = _long(digit_tasks())
    with sklearn.config_context(enable_metadata_routing=True):
        with pytest.raises(ValueError, match=r"(?s)All the 2 fits failed.*task_scoring"):
            cross_validate(_routed(), X, y, cv=GroupKFold(2), scoring="accuracy",
                           params={"groups": groups})
        with pytest.raises(TypeError, match=r"\['log_loss'\].*task_scoring"):
            cross_validate(_routed(), X, y, cv=GroupKFold(2), scoring="neg_log_loss",
                           params={"groups": groups}, error_score="raise")
    tasks = digit_tasks(8)
    for scoring in (["accuracy"], {"acc": "accuracy"}):
        with pytest.raises(ValueError, match=r"(?s)All the 4 fits failed.*make_estimator"):
            GridSearchCV(MetaSymmetryLearner(**SMALL), {"n_filters": [2, 3]}, cv=KFold(2),
                         scoring=scoring, refit=False, n_jobs=2).fit(tasks)
    # the learner's own score and task scorers are unaffected
    assert np.isfinite(cross_validate(MetaSymmetryLearner(**SMALL), tasks,
                                      cv=KFold(2))["test_score"]).all()


def test_scorers_accept_a_fitted_search_and_refuse_other_estimators():
    tasks = diabetes_tasks()
    search = GridSearchCV(MetaSymmetryLearner(**SMALL), {"inner_lr": [0.1]}, cv=KFold(2),
                          scoring=make_task_scorer("r2")).fit(tasks[:16])
    assert make_task_scorer("r2")(search, tasks[16:]) == pytest.approx(
        search.best_estimator_.score(tasks[16:]), abs=1e-12)
    from msr_sklearn.estimators import EquivariantRegressor
    with pytest.raises(TypeError, match="has no evaluate"):
        make_task_scorer("r2")(EquivariantRegressor(), tasks[0][0], tasks[0][1])


# ----------------------------------------------- the per-task metrics are scikit-learn's
def _weighted_tasks(tasks, seed):
    rng = np.random.default_rng(seed)
    return [rng.uniform(0.2, 3.0, size=len(y)) for _, y in tasks]


SKLEARN_REGRESSION = {"mse": mean_squared_error, "rmse": root_mean_squared_error,
                      "mae": mean_absolute_error, "r2": r2_score,
                      "explained_variance": explained_variance_score}


@pytest.mark.parametrize("weighted", [False, True])
def test_regression_metrics_are_sklearns_on_each_task(weighted):
    rng = np.random.default_rng(4)
    # two outputs: the metrics average uniformly over them, as scikit-learn's
    tasks = [(x, np.c_[y, y * 0.5 + rng.normal(size=len(y))]) for x, y in diabetes_tasks()]
    learner = MetaSymmetryLearner(**SMALL, support_split="first").fit(tasks[:16])
    test = tasks[16:]
    weights = _weighted_tasks(test, 5) if weighted else None
    per_task = learner.evaluate(test, metrics=list(SKLEARN_REGRESSION), sample_weight=weights)
    reg = learner.make_estimator()
    for t, (x, y) in enumerate(test):
        pred = reg.fit(x[:3], y[:3]).predict(x[3:])
        w = None if weights is None else weights[t][3:]
        for metric, function in SKLEARN_REGRESSION.items():
            assert per_task[metric][t] == pytest.approx(function(y[3:], pred, sample_weight=w),
                                                        rel=1e-4, abs=1e-5), metric


@pytest.mark.parametrize("weighted", [False, True])
def test_classification_metrics_are_sklearns_on_each_task(weighted):
    tasks = digit_tasks(20, n_way=2, per_class=5)
    learner = MetaSymmetryLearner(**{**SMALL, "n_support": 2}, support_split="first")
    learner.fit(tasks[:12])
    # supports of both classes first, queries of both classes, one query class rarer
    test = []
    for x, y in tasks[12:]:
        a, b = np.flatnonzero(y == y.min()), np.flatnonzero(y == y.max())
        rows = np.r_[a[0], b[0], a[1:], b[1:3]]
        test.append((x[rows], y[rows]))
    weights = _weighted_tasks(test, 6) if weighted else None
    metrics = ["accuracy", "balanced_accuracy", "log_loss", "roc_auc"]
    per_task = learner.evaluate(test, metrics=metrics, sample_weight=weights)
    clf = learner.make_estimator()
    for t, (x, y) in enumerate(test):
        clf.fit(x[:2], y[:2])
        proba, labels = clf.predict_proba(x[2:]), clf.predict(x[2:])
        w = None if weights is None else weights[t][2:]
        expected = {"accuracy": accuracy_score(y[2:], labels, sample_weight=w),
                    "balanced_accuracy": balanced_accuracy_score(y[2:], labels,
                                                                 sample_weight=w),
                    "log_loss": log_loss(y[2:], proba, sample_weight=w, labels=clf.classes_),
                    "roc_auc": roc_auc_score(y[2:], proba[:, 1], sample_weight=w)}
        for metric in metrics:
            assert per_task[metric][t] == pytest.approx(expected[metric], rel=1e-4,
                                                        abs=1e-6), metric
    assert per_task["balanced_accuracy"].ne(per_task["accuracy"]).any()


def test_evaluate_rejects_unknown_metrics():
    learner = MetaSymmetryLearner(**SMALL).fit(diabetes_tasks(8))
    with pytest.raises(ValueError, match=r"unknown regression metric\(s\) \['accuracy'\].*"
                                         r"score classification tasks"):
        learner.evaluate(diabetes_tasks(2), metrics=["accuracy"])
    assert list(learner.evaluate(diabetes_tasks(2)).columns[-2:]) == ["mse", "r2"]


def test_warnings_free_scoring():
    """A task scorer adds no warnings of its own on a well-posed problem."""
    tasks = digit_tasks(12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cross_validate(MetaSymmetryLearner(**SMALL), tasks, cv=KFold(2),
                       scoring=task_scoring(CLASSIFICATION))
