"""Bad input gets a clear error; saved files are safe; nothing is silently wrong."""

import io
import json
import os
import pickle
import zipfile

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msr_sklearn import LearnedSymmetry, MetaSymmetryLearner
from msr_sklearn.datasets import make_translation_tasks
from msr_sklearn.training.callbacks import Checkpoint

QUICK = dict(n_filters=2, bias=False, n_support=1, n_meta_steps=3, meta_batch_size=4,
             random_state=0)

rng = np.random.default_rng(0)
X3 = rng.normal(size=(6, 5, 4))
Y3 = rng.normal(size=(6, 5, 2))
GOOD = [(X3[i], Y3[i]) for i in range(6)]


def with_nan(a):
    a = a.copy()
    a[1, 2, 0] = np.nan
    return a


def with_inf(a):
    a = a.copy()
    a[0, 0, 0] = np.inf
    return a


# (fit arguments, expected exception, message pattern)
BAD_FIT_INPUTS = {
    "empty task list": (([],), ValueError, "no tasks given"),
    "task with no samples": (([(np.zeros((0, 4)), np.zeros((0, 2)))] + GOOD,), ValueError,
                             "has no samples"),
    "too few samples for n_support": (([(X3[0][:1], Y3[0][:1])] + GOOD,), ValueError,
                                      r"task 0 has 1 samples; with n_support=1 every task "
                                      r"needs at least 2"),
    "feature counts differ": (([(X3[0][:, :3], Y3[0])] + GOOD,), ValueError,
                              r"samples of different shapes \[\(3,\), \(4,\)\]"),
    "X and y lengths differ": (([(X3[0], Y3[0][:4])] + GOOD,), ValueError,
                               "X has 5 rows but y has shape"),
    "NaN in X": ((with_nan(X3), Y3), ValueError, "X of task 1 contains NaN"),
    "inf in y": ((X3, with_inf(Y3)), ValueError, "y of task 0 contains NaN or infinity"),
    "1-D X": (([(X3[0][:, 0], Y3[0])] + GOOD,), ValueError, "must be 2-D"),
    "string features": (([(X3[0].astype(str).astype(object) + "a", Y3[0])],), ValueError,
                        "must be numeric"),
    "groups of the wrong length": ((X3.reshape(-1, 4), Y3.reshape(-1, 2)),
                                   ValueError, "same length"),
    "2-D X with y but no groups": ((X3.reshape(-1, 4), Y3.reshape(-1, 2)), ValueError,
                                   "groups=task ids"),
    "a single array without y": ((X3,), TypeError, "without y"),
    "task that is not a pair": (([X3[0]],), TypeError, "task 0 must be an"),
    "one-class classification task": (([(X3[0], np.array(["a"] * 5))],), ValueError,
                                      "single class"),
    "continuous target forced to classification": (
        ((X3, Y3[..., 0]),), ValueError, "classification needs class labels"),
}
BAD_FIT_KWARGS = {
    "groups of the wrong length": {"groups": np.arange(7)},
    "continuous target forced to classification": {},
}
BAD_FIT_PARAMS = {
    "continuous target forced to classification": {"objective": "classification"},
}


@pytest.mark.parametrize("case", sorted(BAD_FIT_INPUTS))
def test_bad_task_input_is_a_clear_error(case):
    args, exc, pattern = BAD_FIT_INPUTS[case]
    if case == "continuous target forced to classification":
        args = args[0]
    learner = MetaSymmetryLearner(**{**QUICK, **BAD_FIT_PARAMS.get(case, {})})
    with pytest.raises(exc, match=pattern):
        learner.fit(*args, **BAD_FIT_KWARGS.get(case, {}))


@pytest.mark.parametrize("param, value", [
    ("inner_lr", 0.0), ("inner_lr", -0.1), ("meta_batch_size", 0), ("meta_batch_size", -3),
    ("n_meta_steps", 0), ("n_support", 0), ("layer", "convolution"), ("objective", "rank"),
    ("meta_lr", 0.0), ("activation", "gelu"), ("validation_fraction", 1.0),
])
def test_bad_parameters_name_the_parameter(param, value):
    with pytest.raises(ValueError, match=f"'{param}' parameter of MetaSymmetryLearner"):
        MetaSymmetryLearner(**{**QUICK, param: value}).fit(GOOD)


def test_more_classes_than_outputs_at_score_time():
    tasks = [(X3[i], np.array([0, 1, 0, 1, 0])) for i in range(6)]
    learner = MetaSymmetryLearner(**QUICK).fit(tasks)
    with pytest.raises(ValueError, match="3 classes, but the network has 2 outputs"):
        learner.score([(X3[0], np.array([0, 1, 2, 1, 0]))])


def test_regression_outputs_must_match_at_score_time():
    learner = MetaSymmetryLearner(**QUICK).fit(GOOD)
    with pytest.raises(ValueError, match="tasks have 3 outputs, but the learner was fitted "
                                         "with 2"):
        learner.score(X3, np.concatenate([Y3, Y3[..., :1]], -1))


def test_feature_names_must_match_at_score_time():
    cols = list("abcd")
    groups = np.repeat(np.arange(6), 5)
    learner = MetaSymmetryLearner(**QUICK).fit(pd.DataFrame(X3.reshape(-1, 4), columns=cols),
                                               Y3.reshape(-1, 2), groups=groups)
    with pytest.raises(ValueError, match="feature names differ"):
        learner.score(pd.DataFrame(X3.reshape(-1, 4), columns=list("abce")),
                      Y3.reshape(-1, 2), groups=groups)


def test_score_before_fit_is_a_not_fitted_error():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        MetaSymmetryLearner().score(GOOD)


def test_dataset_helpers_validate_arguments():
    with pytest.raises(ValueError, match="n_tasks must be a positive integer"):
        make_translation_tasks(n_tasks=0)
    with pytest.raises(ValueError, match="kernel_size=9 exceeds n_features=5"):
        make_translation_tasks(n_features=5, kernel_size=9)
    with pytest.raises(ValueError, match="noise must be >= 0"):
        make_translation_tasks(noise=-1)


# huge scales make the very first meta-loss overflow: the warning is the expected outcome
@pytest.mark.filterwarnings("ignore:the meta-loss became non-finite:RuntimeWarning")
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_tasks=st.integers(1, 5),
    n_samples=st.integers(0, 6),
    n_features=st.integers(1, 4),
    n_outputs=st.integers(1, 3),
    scale=st.sampled_from([0.0, 1e-3, 1.0, 1e3, 1e30]),
    nan=st.booleans(),
    seed=st.integers(0, 10),
)
def test_random_shapes_and_values_give_a_clean_error_or_a_finite_result(
        n_tasks, n_samples, n_features, n_outputs, scale, nan, seed):
    r = np.random.default_rng(seed)
    X = r.normal(size=(n_tasks, n_samples, n_features)) * scale
    y = r.normal(size=(n_tasks, n_samples, n_outputs)) * scale
    if nan and X.size:
        X.flat[0] = np.nan
    learner = MetaSymmetryLearner(**QUICK)
    try:
        with np.errstate(all="ignore"):
            learner.fit(X, y)
    except (ValueError, TypeError) as exc:
        assert str(exc)  # a message a user can act on
        return
    for state in learner.symmetry_.state.values():
        assert np.isfinite(state).all()


# ----------------------------------------------------------------- persistence
@pytest.fixture
def symmetry():
    return MetaSymmetryLearner(**QUICK).fit(GOOD).symmetry_


def test_save_load_round_trip_is_exact(symmetry, tmp_path):
    path = tmp_path / "sym.msr"
    symmetry.save(path)
    loaded = LearnedSymmetry.load(path)
    assert loaded == symmetry
    np.testing.assert_array_equal(loaded.symmetry_matrix(0), symmetry.symmetry_matrix(0))
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("module_params", [{"couple_copies": True}, {"field_bias": True}])
def test_module_settings_survive_save_and_load(tmp_path, module_params):
    from msr_sklearn.datasets import load_aug_digits_tasks
    from msr_sklearn.models import ConvNet

    tasks = load_aug_digits_tasks(6, standardize=True, random_state=0)
    learner = MetaSymmetryLearner(
        module=ConvNet, module__channels=(8, 8), module__n_copies=4,
        module__input_shape=(1, 8, 8), module__global_pool="mean", n_filters=4, n_support=5,
        support_split="first", n_meta_steps=2, meta_batch_size=3, random_state=0,
        **{f"module__{k}": v for k, v in module_params.items()}).fit(tasks)
    path = tmp_path / "later.msr"
    learner.symmetry_.save(path)
    loaded = LearnedSymmetry.load(path)
    (key, value), = module_params.items()
    assert loaded == learner.symmetry_ and loaded.module.params[key] == value
    model = loaded.build_model()
    if key == "couple_copies":
        assert model.sharing("features.2.weight").in_copies == 4
    else:  # one bias per field of 4 copies
        assert model.initial_inner()["features.1.bias"].shape == (2,)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no LearnedSymmetry file"):
        LearnedSymmetry.load(tmp_path / "nope.msr")


def test_truncated_file(symmetry, tmp_path):
    path = tmp_path / "sym.msr"
    symmetry.save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated, corrupted"):
        LearnedSymmetry.load(path)


def rewrite(path, meta_update=None, extra=None):
    with zipfile.ZipFile(path) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    meta = json.loads(files["meta.json"])
    meta.update(meta_update or {})
    files["meta.json"] = json.dumps(meta).encode()
    files.update(extra or {})
    with zipfile.ZipFile(path, "w") as zf:
        for n, b in files.items():
            zf.writestr(n, b)


def test_wrong_version(symmetry, tmp_path):
    path = tmp_path / "sym.msr"
    symmetry.save(path)
    rewrite(path, {"version": 99})
    with pytest.raises(ValueError, match="format version 99"):
        LearnedSymmetry.load(path)


def test_tampered_array_is_refused(symmetry, tmp_path):
    path = tmp_path / "sym.msr"
    symmetry.save(path)
    rewrite(path, extra={"arrays/shared.0-weight.filters.npy": b"\x93NUMPY garbage"})
    with pytest.raises(ValueError, match="cannot read a LearnedSymmetry"):
        LearnedSymmetry.load(path)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_payload_is_refused_without_running(symmetry, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "sym.msr"
    symmetry.save(path)
    buf = io.BytesIO()
    np.save(buf, np.array([_Payload(str(marker))], dtype=object), allow_pickle=True)
    rewrite(path, extra={"arrays/shared.0-weight.filters.npy": buf.getvalue()})
    with pytest.raises(ValueError, match="cannot read a LearnedSymmetry"):
        LearnedSymmetry.load(path)
    assert not marker.exists()
    # a bare pickle file is not a LearnedSymmetry either
    raw = tmp_path / "raw.msr"
    raw.write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(ValueError, match="cannot read a LearnedSymmetry"):
        LearnedSymmetry.load(raw)
    assert not marker.exists()


def test_checkpoints_are_written_during_fit(tmp_path):
    path = tmp_path / "ckpt.msr"
    learner = MetaSymmetryLearner(**{**QUICK, "n_meta_steps": 7},
                                  callbacks=[Checkpoint(path, interval=3)])
    learner.fit(GOOD)
    assert LearnedSymmetry.load(path) == learner.symmetry_
    assert sorted(os.listdir(tmp_path)) == ["ckpt.msr"]


def test_failed_save_keeps_the_previous_file(symmetry, tmp_path, monkeypatch):
    path = tmp_path / "sym.msr"
    symmetry.save(path)
    good = path.read_bytes()

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", explode)
    with pytest.raises(OSError, match="disk full"):
        symmetry.save(path)
    assert path.read_bytes() == good


# ------------------------------------------------------- per-task estimators
def _bound(objective="regression", n_outputs=2):
    from msr_sklearn import LearnedSymmetry

    return LearnedSymmetry.initial(objective=objective, n_features=4, n_outputs=n_outputs,
                                   layer="msr", n_filters=3, random_state=0)


def _estimator_case(case):
    from msr_sklearn import EquivariantClassifier, EquivariantRegressor

    X, Y = X3[0], Y3[0]
    return {
        "NaN in X": (EquivariantRegressor(), (with_nan(X3)[1], Y3[1, :, 0]), ValueError,
                     "NaN"),
        "1-D X": (EquivariantRegressor(), (X[:, 0], Y[:, 0]), ValueError, "2D array"),
        "string features": (EquivariantRegressor(), (X.astype(str).astype(object) + "a",
                                                     Y[:, 0]), ValueError, "convert"),
        "X and y lengths differ": (EquivariantRegressor(), (X, Y[:4, 0]), ValueError,
                                   "inconsistent numbers of samples"),
        "symmetry with the wrong input size": (EquivariantRegressor(_bound()), (X[:, :3], Y),
                                               ValueError, r"X has 3 feature\(s\)"),
        "regression targets to the classifier": (EquivariantClassifier(), (X, Y[:, 0]),
                                                 ValueError, "Unknown label type"),
        "one class": (EquivariantClassifier(), (X, np.zeros(5)), ValueError, "class"),
        "more classes than outputs": (EquivariantClassifier(_bound("classification", 2)),
                                      (X, np.array([0, 1, 2, 0, 1])), ValueError,
                                      "3 classes"),
        "non-positive inner_lr": (EquivariantRegressor(inner_lr=0.0), (X, Y[:, 0]), ValueError,
                                  "inner_lr"),
    }[case]


@pytest.mark.parametrize("case", [
    "NaN in X", "1-D X", "string features", "X and y lengths differ",
    "symmetry with the wrong input size", "regression targets to the classifier",
    "one class", "more classes than outputs", "non-positive inner_lr",
])
def test_bad_estimator_input_is_a_clear_error(case):
    estimator, args, exc, pattern = _estimator_case(case)
    with pytest.raises(exc, match=pattern):
        estimator.fit(*args)


def test_feature_count_at_predict_time():
    from msr_sklearn import EquivariantRegressor

    reg = EquivariantRegressor(_bound()).fit(X3[0], Y3[0])
    with pytest.raises(ValueError, match="X has 3 features, but EquivariantRegressor is "
                                         "expecting 4"):
        reg.predict(X3[0][:, :3])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_samples=st.integers(0, 6),
    n_features=st.integers(1, 4),
    scale=st.sampled_from([0.0, 1e-3, 1.0, 1e3, 1e30]),
    inner_lr=st.sampled_from([None, 1e-3, 10.0]),
    seed=st.integers(0, 10),
)
def test_estimator_random_input_gives_a_clean_error_or_finite_predictions(
        n_samples, n_features, scale, inner_lr, seed):
    import warnings

    from msr_sklearn import EquivariantRegressor

    r = np.random.default_rng(seed)
    X = r.normal(size=(n_samples, n_features)) * scale
    y = r.normal(size=n_samples) * scale
    reg = EquivariantRegressor(inner_steps=3, inner_lr=inner_lr, random_state=0)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            reg.fit(X, y)
    except (ValueError, TypeError) as exc:
        assert str(exc)
        return
    try:
        pred = reg.predict(X)
    except ValueError as exc:  # a diverged fit says so, never NaN predictions
        assert "non-finite outputs" in str(exc)
        return
    assert pred.shape == (n_samples,)
    # a fit that diverged says so (ConvergenceWarning) rather than failing deep in torch;
    # whatever it returns has the right shape and dtype
    assert pred.dtype.kind == "f"
