"""Long-format tasks through scikit-learn's meta-estimators, and score's sample_weight.

Every routed workflow (Pipeline, cross_val_score / cross_validate, the three searches,
a ColumnTransformer over a DataFrame) must give finite scores equal to the same steps
done by hand without routing; where ``groups`` cannot reach the learner the user must
see the learner's explanation, never a bare NaN. Routing is only ever switched on
inside ``sklearn.config_context``.
"""

import doctest
import re
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.compose import ColumnTransformer
from sklearn.experimental import enable_halving_search_cv  # noqa: F401
from sklearn.metrics import accuracy_score, log_loss, mean_squared_error, r2_score
from sklearn.model_selection import (GridSearchCV, GroupKFold, GroupShuffleSplit,
                                     HalvingGridSearchCV, KFold, RandomizedSearchCV,
                                     cross_val_score, cross_validate)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from msr_sklearn import MetaSymmetryLearner
from msr_sklearn.datasets import make_translation_tasks
from msr_sklearn.data.tasks import mean_confidence_interval

SMALL = dict(n_filters=2, bias=False, n_support=2, n_meta_steps=3, meta_batch_size=4,
             random_state=0)
N_TASKS, N_ROWS, N_FEATURES = 24, 6, 6
X3, Y3 = make_translation_tasks(n_tasks=N_TASKS, n_samples=N_ROWS, n_features=N_FEATURES,
                                random_state=0)
# one long table with the tasks' rows interleaved, as a real table would have them
_PERM = np.random.default_rng(0).permutation(N_TASKS * N_ROWS)
X = X3.reshape(-1, N_FEATURES)[_PERM]
Y = Y3.reshape(N_TASKS * N_ROWS, -1)[_PERM]
G = np.repeat([f"site-{t:02d}" for t in range(N_TASKS)], N_ROWS)[_PERM]
W = np.random.default_rng(1).uniform(0.2, 3.0, size=len(X))
LEARNER = "metasymmetrylearner"
ROUTING = dict(enable_metadata_routing=True)


def routed(**params):
    """The learner with groups requested by fit and score (call under routing)."""
    return (MetaSymmetryLearner(**{**SMALL, **params})
            .set_fit_request(groups=True).set_score_request(groups=True))


def by_hand(train, test, sample_weight=None, **params):
    """What a routed ``make_pipeline(StandardScaler(), learner)`` must compute on a split:
    the same steps, called directly with routing off."""
    scaler = StandardScaler().fit(X[train])
    learner = MetaSymmetryLearner(**{**SMALL, **params})
    learner.fit(scaler.transform(X[train]), Y[train], groups=G[train])
    weights = None if sample_weight is None else sample_weight[test]
    return learner.score(scaler.transform(X[test]), Y[test], groups=G[test],
                         sample_weight=weights)


@lru_cache(maxsize=None)
def cv_by_hand(n_splits=2, **params):
    """Per-fold scores of GroupKFold(n_splits) computed by hand (cached across tests)."""
    return np.array([by_hand(train, test, **params)
                     for train, test in GroupKFold(n_splits).split(X, Y, G)])


def hint(text):
    """Whether ``text`` holds the learner's explanation of how to route groups."""
    return ("Long-format data need the task id of every row" in text
            and "set_fit_request(groups=True).set_score_request(groups=True)" in text)


# ----------------------------------------------------------------- sample_weight
def _forms(weights):
    """The tasks of X3, Y3 in every input form, with ``weights`` (n_tasks, n_rows) in
    the matching form: list of tasks, 3-D arrays, long format."""
    groups = np.repeat(np.arange(N_TASKS), N_ROWS)
    return {"list": (([(X3[t], Y3[t]) for t in range(N_TASKS)],), {}, list(weights)),
            "3-D": ((X3, Y3), {}, weights),
            "long": ((X3.reshape(-1, N_FEATURES), Y3.reshape(len(groups), -1)),
                     {"groups": groups}, weights.reshape(-1))}


@pytest.fixture(scope="module")
def fitted():
    return MetaSymmetryLearner(**SMALL, support_split="first").fit(X3[:16], Y3[:16])


def test_equal_weights_give_the_unweighted_score_in_every_form(fitted):
    unweighted = fitted.score(X3, Y3)
    for form, (args, kwargs, weights) in _forms(np.full((N_TASKS, N_ROWS), 2.5)).items():
        assert fitted.score(*args, **kwargs) == unweighted, form  # None: today's number
        assert fitted.score(*args, **kwargs, sample_weight=weights) == pytest.approx(
            unweighted, rel=1e-6), form


def test_tasks_weigh_in_by_their_mean_query_weight(fitted):
    per_task = fitted.evaluate(X3, Y3)
    rng = np.random.default_rng(2)
    weights = rng.uniform(0.1, 5.0, size=(N_TASKS, N_ROWS))
    weights[:, 0] = 100.0  # a support row (support_split="first"): weighs nothing
    expected_weight = weights[:, 2:].mean(1)
    # one weight per task: the tasks' metrics are unweighted, their mean is weighted
    per_task_weights = np.repeat(expected_weight[:, None], N_ROWS, axis=1)
    hand = np.average(per_task["r2"], weights=expected_weight)
    for form, (args, kwargs, w) in _forms(per_task_weights).items():
        weighted = fitted.evaluate(*args, **kwargs, sample_weight=w)
        np.testing.assert_allclose(weighted["r2"], per_task["r2"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(weighted["weight"], expected_weight, rtol=1e-12)
        assert fitted.score(*args, **kwargs, sample_weight=w) == pytest.approx(hand, rel=1e-6)
    # row weights: each task's weight is the mean weight of its query rows only
    weighted = fitted.evaluate(X3, Y3, sample_weight=weights)
    np.testing.assert_allclose(weighted["weight"], expected_weight, rtol=1e-12)
    assert fitted.score(X3, Y3, sample_weight=weights) == pytest.approx(
        np.average(weighted["r2"], weights=expected_weight), rel=1e-6)


def test_weighted_metrics_are_sklearns_on_the_adapted_predictions(fitted):
    weights = np.random.default_rng(3).uniform(0.0, 3.0, size=(N_TASKS, N_ROWS))
    per_task = fitted.evaluate(X3, Y3, sample_weight=weights)
    regressor = fitted.make_estimator()  # the same inner loop, one task at a time
    r2, mse = [], []
    for t in range(N_TASKS):  # support_split="first": rows :2 are the support
        predicted = regressor.fit(X3[t, :2], Y3[t, :2]).predict(X3[t, 2:])
        r2.append(r2_score(Y3[t, 2:], predicted, sample_weight=weights[t, 2:]))
        mse.append(mean_squared_error(Y3[t, 2:], predicted, sample_weight=weights[t, 2:]))
    np.testing.assert_allclose(per_task["r2"], r2, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(per_task["mse"], mse, rtol=1e-4)
    assert fitted.score(X3, Y3, sample_weight=weights) == pytest.approx(
        np.average(r2, weights=weights[:, 2:].mean(1)), rel=1e-4)
    assert not np.allclose(r2, fitted.evaluate(X3, Y3)["r2"], rtol=1e-3)  # weights matter


def _classification_tasks(n_tasks=12, seed=0):
    rng = np.random.default_rng(seed)
    tasks = []
    for _ in range(n_tasks):
        centers = rng.normal(0, 2, size=(3, 4))
        # the 3 support rows (support_split="first") hold one row of each class
        labels = np.r_[["a", "b", "c"], rng.permutation(np.repeat(["a", "b", "c"], 2))]
        tasks.append((centers[np.searchsorted(["a", "b", "c"], labels)]
                      + rng.normal(size=(9, 4)), labels))
    return tasks


@pytest.mark.parametrize("objective", ["regression", "classification"])
def test_integer_weights_equal_repeated_rows(objective):
    if objective == "regression":
        tasks = [(X3[t], Y3[t]) for t in range(12)]
        low = 0  # weight 0 drops a query row
    else:
        tasks = _classification_tasks()
        low = 1  # keep every class in every task
    learner = MetaSymmetryLearner(**{**SMALL, "n_support": 3}, support_split="first")
    learner.fit(tasks)
    rng = np.random.default_rng(4)
    weights = [np.concatenate([rng.integers(1, 9, size=3),  # support: not used
                               rng.integers(low, 4, size=len(x) - 3)]) for x, _ in tasks]
    for w in weights:
        w[3] = max(w[3], 1)  # every task keeps a query row
    repeated = [(np.concatenate([x[:3], np.repeat(x[3:], w[3:], axis=0)]),
                 np.concatenate([y[:3], np.repeat(y[3:], w[3:], axis=0)]))
                for (x, y), w in zip(tasks, weights)]
    weighted, plain = learner.evaluate(tasks, sample_weight=weights), learner.evaluate(repeated)
    metrics = ["mse", "r2"] if objective == "regression" else ["accuracy", "log_loss"]
    for metric in metrics:
        np.testing.assert_allclose(weighted[metric], plain[metric], rtol=1e-5, atol=1e-6)
    if objective == "classification":  # and sklearn's metrics agree on a task
        clf = learner.make_estimator().fit(*[a[:3] for a in tasks[0]])
        x, y = tasks[0][0][3:], tasks[0][1][3:]
        assert weighted["accuracy"][0] == pytest.approx(
            accuracy_score(y, clf.predict(x), sample_weight=weights[0][3:]), rel=1e-6)
        assert weighted["log_loss"][0] == pytest.approx(
            log_loss(y, clf.predict_proba(x), sample_weight=weights[0][3:],
                     labels=clf.classes_), rel=1e-4)


def test_weighted_summary_weighs_tasks_like_score(fitted):
    weights = np.random.default_rng(5).uniform(0.5, 4.0, size=(N_TASKS, N_ROWS))
    per_task, summary = fitted.evaluate(X3, Y3, sample_weight=weights, return_summary=True)
    assert list(summary.index) == ["mse", "r2"]
    assert summary.loc["r2", "mean"] == pytest.approx(
        fitted.score(X3, Y3, sample_weight=weights), rel=1e-12)
    # by hand: reliability-weighted variance over Kish's effective number of tasks
    w, v = per_task["weight"].to_numpy(), per_task["mse"].to_numpy(dtype=float)
    mean = (w * v).sum() / w.sum()
    n_eff = w.sum() ** 2 / (w ** 2).sum()
    variance = (w * (v - mean) ** 2).sum() / (w.sum() - (w ** 2).sum() / w.sum())
    from scipy import stats
    half = np.sqrt(variance / n_eff) * stats.t.ppf(0.975, n_eff - 1)
    assert summary.loc["mse", "mean"] == pytest.approx(mean, rel=1e-12)
    assert summary.loc["mse", "ci95"] == pytest.approx(half, rel=1e-12)
    assert mean_confidence_interval(v, weights=np.full(len(v), 3.0)) == pytest.approx(
        mean_confidence_interval(v), rel=1e-12)


_ONES = np.ones((N_TASKS, N_ROWS))
BAD_WEIGHTS = {
    "long format, wrong length": ("long", np.ones(N_TASKS * N_ROWS - 1),
                                  r"one weight per row, shape \(144,\); got shape \(143,\)"),
    "3-D, wrong shape": ("3-D", np.ones((N_TASKS, N_ROWS + 1)),
                         r"shape \(n_tasks, n_samples\) = \(24, 6\); got shape \(24, 7\)"),
    "list, one weight per task": ("list", np.ones(N_TASKS),
                                  r"task 0 needs one weight per row, shape \(6,\); got shape"),
    "list, wrong number of tasks": ("list", list(_ONES[:-1]), "list of 24 tasks must be a list"),
    "NaN": ("3-D", np.where(np.eye(N_TASKS, N_ROWS, k=-3) > 0, np.nan, 1.0),
            "task 3 contains NaN or infinity"),
    "infinity": ("long", np.r_[np.ones(N_TASKS * N_ROWS - 1), np.inf],
                 "task 23 contains NaN or infinity"),
    "negative": ("3-D", np.where(np.eye(N_TASKS, N_ROWS, k=-1) > 0, -1.0, 1.0),
                 "task 1 has negative values"),
    "strings": ("3-D", _ONES.astype(str), "task 0 must be numeric"),
    "a task's query rows all 0": ("3-D", np.c_[np.ones((N_TASKS, 2)),
                                               np.zeros((N_TASKS, N_ROWS - 2))],
                                  "task 0 has sample_weight 0 on all its query rows"),
}


@pytest.mark.parametrize("case", sorted(BAD_WEIGHTS))
def test_bad_sample_weight_is_a_clear_error(fitted, case):
    form, weights, match = BAD_WEIGHTS[case]
    args, kwargs, _ = _forms(_ONES)[form]
    with pytest.raises(ValueError, match=match):
        fitted.score(*args, **kwargs, sample_weight=weights)


# ---------------------------------------------------------------- routed workflows
def test_pipeline_fit_and_score_are_routed():
    train, test = np.isin(G, G[:40]), ~np.isin(G, G[:40])
    with sklearn.config_context(**ROUTING):
        # the issue: score used to be a TypeError about sample_weight
        pipe = make_pipeline(StandardScaler(), routed()).fit(X[train], Y[train],
                                                             groups=G[train])
        score = pipe.score(X[test], Y[test], groups=G[test])
        weighted = make_pipeline(StandardScaler(), routed().set_score_request(
            sample_weight=True)).fit(X[train], Y[train], groups=G[train])
        weighted_score = weighted.score(X[test], Y[test], groups=G[test], sample_weight=W[test])
    assert np.isfinite(score) and score == pytest.approx(by_hand(train, test), rel=1e-6)
    assert weighted_score == pytest.approx(by_hand(train, test, sample_weight=W), rel=1e-6)
    assert weighted_score != pytest.approx(score, rel=1e-4)


@pytest.mark.parametrize("cv", [GroupKFold(3), GroupShuffleSplit(2, test_size=0.25,
                                                                  random_state=0)],
                         ids=["GroupKFold", "GroupShuffleSplit"])
def test_cross_val_score_and_cross_validate_are_routed(cv):
    with sklearn.config_context(**ROUTING):
        pipe = make_pipeline(StandardScaler(), routed())
        scores = cross_val_score(pipe, X, Y, cv=cv, params={"groups": G})
        result = cross_validate(pipe, X, Y, cv=cv, params={"groups": G},
                                return_train_score=True)
    splits = list(cv.split(X, Y, G))
    assert np.isfinite(scores).all() and len(scores) == len(splits)
    np.testing.assert_allclose(scores, [by_hand(tr, te) for tr, te in splits], rtol=1e-6)
    np.testing.assert_allclose(result["test_score"], scores, rtol=1e-6)
    np.testing.assert_allclose(result["train_score"], [by_hand(tr, tr) for tr, _ in splits],
                               rtol=1e-6)


def test_cross_validate_routes_sample_weight_to_score_only():
    assert "sample_weight" not in MetaSymmetryLearner().get_metadata_routing().fit.requests
    with sklearn.config_context(**ROUTING):
        pipe = make_pipeline(StandardScaler().set_fit_request(sample_weight=False),
                             routed().set_score_request(sample_weight=True))
        result = cross_validate(pipe, X, Y, cv=GroupKFold(3),
                                params={"groups": G, "sample_weight": W})
    hand = [by_hand(tr, te, sample_weight=W) for tr, te in GroupKFold(3).split(X, Y, G)]
    np.testing.assert_allclose(result["test_score"], hand, rtol=1e-6)
    assert not np.allclose(result["test_score"], cv_by_hand(3), rtol=1e-4)


@pytest.mark.parametrize("search", ["grid", "randomized"])
def test_searches_over_a_pipeline_are_routed(search):
    grid = {f"{LEARNER}__inner_lr": [0.05, 0.3]}
    with sklearn.config_context(**ROUTING):
        pipe = make_pipeline(StandardScaler(), routed())
        searcher = (GridSearchCV(pipe, grid, cv=GroupKFold(2)) if search == "grid" else
                    RandomizedSearchCV(pipe, grid, n_iter=2, cv=GroupKFold(2),
                                       random_state=0))
        searcher.fit(X, Y, groups=G)
        best_score = searcher.score(X, Y, groups=G)
    results = searcher.cv_results_
    for i, params in enumerate(results["params"]):
        hand = cv_by_hand(inner_lr=params[f"{LEARNER}__inner_lr"])
        np.testing.assert_allclose([results[f"split{k}_test_score"][i] for k in range(2)],
                                   hand, rtol=1e-6)
    means = results["mean_test_score"]
    assert np.isfinite(means).all() and searcher.best_index_ == int(np.argmax(means))
    assert means[0] != pytest.approx(means[1], rel=1e-4)  # a real choice
    assert best_score == pytest.approx(
        by_hand(slice(None), slice(None), inner_lr=searcher.best_params_[f"{LEARNER}__inner_lr"]),
        rel=1e-6)


def test_successive_halving_over_n_meta_steps():
    resource = f"{LEARNER}__n_meta_steps"
    with sklearn.config_context(**ROUTING):
        search = HalvingGridSearchCV(
            make_pipeline(StandardScaler(), routed()),
            {f"{LEARNER}__inner_lr": [0.03, 0.1, 0.3]}, resource=resource,
            min_resources=2, max_resources=6, factor=3, cv=GroupKFold(2)).fit(X, Y, groups=G)
    results = search.cv_results_
    assert search.n_resources_ == [2, 6] and search.n_candidates_ == [3, 1]
    # the resource really is each fit's n_meta_steps
    np.testing.assert_array_equal(results[f"param_{resource}"], results["n_resources"])
    for i, params in enumerate(results["params"]):
        hand = cv_by_hand(inner_lr=params[f"{LEARNER}__inner_lr"], n_meta_steps=params[resource])
        np.testing.assert_allclose([results[f"split{k}_test_score"][i] for k in range(2)],
                                   hand, rtol=1e-6)
    assert np.isfinite(results["mean_test_score"]).all()
    best_lr = search.best_params_[f"{LEARNER}__inner_lr"]
    assert not np.allclose(cv_by_hand(inner_lr=best_lr, n_meta_steps=2),
                           cv_by_hand(inner_lr=best_lr, n_meta_steps=6), rtol=1e-4)
    assert search.best_params_[resource] == 6 and search.best_estimator_[-1].n_iter_ == 6


def test_column_transformer_over_a_dataframe():
    numeric = [f"x{j}" for j in range(N_FEATURES)]
    frame = pd.DataFrame(X, columns=numeric)
    frame["kind"] = np.random.default_rng(6).choice(["wood", "steel", "glass"], len(X))
    frame["site"] = G  # dropped by the ColumnTransformer; its ids travel as groups
    targets = pd.DataFrame(Y, columns=[f"y{j}" for j in range(Y.shape[1])])

    def preprocessing():
        return ColumnTransformer(
            [("kind", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["kind"]),
             ("num", StandardScaler(), numeric)]).set_output(transform="pandas")

    with sklearn.config_context(**ROUTING):
        pipe = make_pipeline(preprocessing(), routed())
        result = cross_validate(pipe, frame, targets, cv=GroupKFold(3),
                                params={"groups": frame["site"]})
        fitted_pipe = pipe.fit(frame, targets, groups=frame["site"])
    hand = []
    for train, test in GroupKFold(3).split(frame, targets, frame["site"]):
        prep = preprocessing().fit(frame.iloc[train])
        learner = MetaSymmetryLearner(**SMALL).fit(prep.transform(frame.iloc[train]),
                                                   targets.iloc[train], groups=G[train])
        hand.append(learner.score(prep.transform(frame.iloc[test]), targets.iloc[test],
                                  groups=G[test]))
    assert np.isfinite(result["test_score"]).all()
    np.testing.assert_allclose(result["test_score"], hand, rtol=1e-6)
    learner = fitted_pipe[-1]
    assert list(learner.feature_names_in_) == list(fitted_pipe[0].get_feature_names_out())
    assert learner.n_features_in_ == N_FEATURES + 3  # one-hot kinds + scaled numbers


def test_a_list_of_tasks_needs_no_routing():
    tasks = [(X3[t], Y3[t]) for t in range(N_TASKS)]
    scores = cross_val_score(MetaSymmetryLearner(**SMALL), tasks, cv=KFold(3))
    hand = [MetaSymmetryLearner(**SMALL).fit([tasks[i] for i in tr])
            .score([tasks[i] for i in te]) for tr, te in KFold(3).split(tasks)]
    assert np.isfinite(scores).all()
    np.testing.assert_allclose(scores, hand, rtol=1e-6)


# ------------------------------------------------- groups that cannot reach the learner
def test_without_routing_a_pipeline_fit_explains_how_to_route():
    pipe = make_pipeline(StandardScaler(), MetaSymmetryLearner(**SMALL))
    with pytest.raises(ValueError) as error:
        pipe.fit(X, Y)
    assert hint(str(error.value))


@pytest.mark.parametrize("workflow", ["cross_val_score", "grid", "halving"])
def test_without_routing_groups_reach_the_splitter_only_and_every_fit_says_why(workflow):
    pipe = make_pipeline(StandardScaler(), MetaSymmetryLearner(**SMALL))
    grid = {f"{LEARNER}__inner_lr": [0.05, 0.3]}
    run = {"cross_val_score": lambda: cross_val_score(pipe, X, Y, groups=G, cv=GroupKFold(3)),
           "grid": lambda: GridSearchCV(pipe, grid, cv=GroupKFold(2)).fit(X, Y, groups=G),
           "halving": lambda: HalvingGridSearchCV(
               pipe, grid, resource=f"{LEARNER}__n_meta_steps", min_resources=2,
               max_resources=6, cv=GroupKFold(2)).fit(X, Y, groups=G)}[workflow]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # sklearn's per-fit failure notes
        with pytest.raises(ValueError, match="fits failed") as error:
            run()  # every fit fails, so scikit-learn raises rather than returning NaN
    assert hint(str(error.value))


def test_a_fit_request_without_a_score_request_is_refused_at_fit():
    with sklearn.config_context(**ROUTING):
        learner = MetaSymmetryLearner(**SMALL).set_fit_request(groups=True)
        with pytest.raises(ValueError, match=r"score has no groups request.*"
                                             r"set_score_request\(groups=True\)"):
            learner.fit(X, Y, groups=G)
        pipe = make_pipeline(StandardScaler(), learner)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            with pytest.raises(ValueError, match="score has no groups request"):
                cross_val_score(pipe, X, Y, cv=GroupKFold(3), params={"groups": G})
        # fit and score requested: the same call scores
        scores = cross_val_score(make_pipeline(StandardScaler(), routed()), X, Y,
                                 cv=GroupKFold(2), params={"groups": G})
    np.testing.assert_allclose(scores, cv_by_hand(), rtol=1e-6)


def test_a_score_request_of_false_is_the_users_choice_and_says_why_it_is_nan():
    with sklearn.config_context(**ROUTING):
        pipe = make_pipeline(StandardScaler(), MetaSymmetryLearner(**SMALL).set_fit_request(
            groups=True).set_score_request(groups=False))
        # scikit-learn's default error_score=np.nan: NaN, with the learner's reason
        with pytest.warns(UserWarning, match="Scoring failed") as record:
            scores = cross_val_score(pipe, X, Y, cv=GroupKFold(2), params={"groups": G})
        assert np.isnan(scores).all()
        assert any(hint(str(w.message)) for w in record)
        with pytest.raises(ValueError, match=re.escape("set_score_request(groups=True)")):
            cross_val_score(pipe, X, Y, cv=GroupKFold(2), params={"groups": G},
                            error_score="raise")


def test_a_score_request_without_a_fit_request_fails_every_fit_loudly():
    with sklearn.config_context(**ROUTING):
        pipe = make_pipeline(StandardScaler(),
                             MetaSymmetryLearner(**SMALL).set_score_request(groups=True))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            with pytest.raises(ValueError, match=r"MetaSymmetryLearner.set_fit_request"):
                cross_val_score(pipe, X, Y, cv=GroupKFold(2), params={"groups": G})


def test_the_user_guide_page_runs():
    """docs/user_guide/pipelines.rst: every code block, as a doctest."""
    page = Path(__file__).resolve().parents[1] / "docs" / "user_guide" / "pipelines.rst"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's notes on the failing fits shown there
        result = doctest.testfile(str(page), module_relative=False,
                                  optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 30
