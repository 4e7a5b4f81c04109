import numpy as np
import pytest

from msr_sklearn import MetaSymmetryLearner
from msr_sklearn.datasets import make_translation_tasks
from msr_sklearn.data.streams import TaskStream, as_task_stream

PARAMS = dict(n_filters=3, bias=False, n_support=1, n_meta_steps=20, meta_batch_size=4,
              random_state=0)


def counting_stream():
    calls = []

    def sampler(n_tasks, rng):
        seed = int(rng.integers(2**31))
        calls.append((n_tasks, seed))
        return make_translation_tasks(n_tasks=n_tasks, n_samples=5, n_features=10,
                                      random_state=seed)
    return TaskStream(sampler), calls


def test_every_meta_step_draws_fresh_tasks():
    stream, calls = counting_stream()
    # (no pruning, whose checks draw meta-batches of their own)
    learner = MetaSymmetryLearner(**PARAMS, sharing_sparsity=0.0).fit(stream)
    assert len(calls) == 1 + 20  # one draw to fix shapes, then one per meta-step
    assert all(n == 4 for n, _ in calls)
    assert len({seed for _, seed in calls}) == len(calls)  # all distinct tasks
    assert learner.n_features_in_ == 10 and learner.n_outputs_ == 8
    X, y = make_translation_tasks(n_tasks=6, n_samples=5, n_features=10, random_state=1)
    assert np.isfinite(learner.score(X, y))


def test_stream_fits_are_deterministic():
    a = MetaSymmetryLearner(**PARAMS).fit(counting_stream()[0])
    b = MetaSymmetryLearner(**PARAMS).fit(counting_stream()[0])
    assert a.symmetry_ == b.symmetry_


def test_plain_callables_and_iterators_are_streams():
    def source(n, rng):
        return make_translation_tasks(n_tasks=n, n_samples=5, n_features=10,
                                      random_state=int(rng.integers(100)))
    assert MetaSymmetryLearner(**PARAMS).fit(source).history_.shape[0] == 20

    X, y = make_translation_tasks(n_tasks=200, n_samples=5, n_features=10, random_state=0)
    tasks = ((X[i], y[i]) for i in range(200))
    learner = MetaSymmetryLearner(**PARAMS).fit(tasks)
    assert learner.history_.shape[0] == 20


def test_an_exhausted_iterator_is_a_clear_error():
    X, y = make_translation_tasks(n_tasks=10, n_samples=5, n_features=10, random_state=0)
    with pytest.raises(ValueError, match="the task iterable ran out"):
        MetaSymmetryLearner(**PARAMS).fit(iter([(X[i], y[i]) for i in range(10)]))


def test_stream_with_validation():
    X, y = make_translation_tasks(n_tasks=8, n_samples=5, n_features=10, random_state=3)
    learner = MetaSymmetryLearner(**PARAMS, validation_interval=10).fit(
        counting_stream()[0], validation_tasks=(X, y))
    assert learner.history_["valid_loss"].notna().sum() == 2
    with pytest.raises(ValueError, match="pass validation_tasks= instead"):
        MetaSymmetryLearner(**PARAMS, validation_fraction=0.2).fit(counting_stream()[0])


def test_collections_are_not_streams():
    X, y = make_translation_tasks(n_tasks=3, random_state=0)
    assert as_task_stream([(X[0], y[0])]) is None
    assert as_task_stream(X) is None
    assert isinstance(as_task_stream(lambda n, rng: None), TaskStream)
    with pytest.raises(TypeError, match="sampler must be callable"):
        TaskStream(3)
