"""Protocol traps: stratified supports, integer targets under objective="auto", and a
halving search that subsamples the rows of long-format tasks."""

import warnings

import numpy as np
import pytest
import sklearn
import torch
from sklearn.experimental import enable_halving_search_cv  # noqa: F401
from sklearn.model_selection import GroupKFold, HalvingGridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from msr_sklearn import MetaSymmetryLearner
from msr_sklearn.data.streams import TaskStream
from msr_sklearn.data.tasks import MetaBatches, check_tasks, resolve_objective
from msr_sklearn.datasets import make_translation_tasks

SMALL = dict(n_filters=3, n_meta_steps=3, meta_batch_size=6, random_state=0)


def way_tasks(n_tasks=20, n_way=4, per_class=(3, 6), seed=0, n_features=5):
    """N-way tasks of blobs with labels "c0".."c9", each class 3 to 6 rows (ragged)."""
    rng = np.random.default_rng(seed)
    tasks = []
    for _ in range(n_tasks):
        labels = [f"c{c}" for c in rng.choice(10, n_way, replace=False)]
        counts = rng.integers(per_class[0], per_class[1] + 1, size=n_way)
        y = rng.permutation(np.repeat(labels, counts))
        X = rng.normal(size=(len(y), n_features)) + 3 * np.array(
            [int(v[1:]) for v in y])[:, None] / 3
        tasks.append((X, y))
    return tasks


# --------------------------------------------------------------- stratified supports
@pytest.mark.parametrize("n_support", [4, 6, 9])
def test_a_stratified_support_holds_every_class_evenly(n_support):
    tasks = check_tasks(way_tasks(), n_support=n_support)
    generator = torch.Generator().manual_seed(0)
    extras = set()
    for _ in range(5):
        batch, order = tasks.split(n_support, generator, stratify=True, return_order=True)
        counts = torch.nn.functional.one_hot(batch.y_support, 4).sum(1)  # (tasks, classes)
        assert (counts.sum(1) == n_support).all()
        assert (counts.min(1).values == n_support // 4).all()
        assert (counts.max(1).values == -(-n_support // 4)).all()
        extras.add(tuple(counts[0].tolist()))
        # the query is the task's other real rows; padding stays last and masked
        sizes = tasks.sizes
        assert (batch.query_mask.sum(1) == sizes - n_support).all()
        for t in range(tasks.n_tasks):
            assert sorted(order[t, :sizes[t]].tolist()) == list(range(int(sizes[t])))
    if n_support % 4:
        assert len(extras) > 1  # the extra rows go to random classes
    # the draw is the generator's: the same seed, the same split
    again = tasks.split(n_support, torch.Generator().manual_seed(0), stratify=True)
    first = tasks.split(n_support, torch.Generator().manual_seed(0), stratify=True)
    assert torch.equal(again.x_support, first.x_support)


def test_a_stratified_split_that_cannot_hold_every_class_is_a_clear_error():
    tasks = check_tasks(way_tasks(per_class=(3, 3)), n_support=3)
    with pytest.raises(ValueError, match="task 0 has 4 classes but n_support=3"):
        tasks.split(3, stratify=True)
    with pytest.raises(ValueError, match=r"task 0's class 'a' has 1 row\(s\), but a stratified "
                                         r"support of n_support=8 over 2 classes takes 4"):
        check_tasks([(np.zeros((9, 2)), np.r_[["a"], ["b"] * 8])]).split(8, stratify=True)
    with pytest.raises(ValueError, match="regression tasks"):
        check_tasks(make_translation_tasks(n_tasks=2, random_state=0)).split(2, stratify=True)


def test_meta_batches_draw_stratified_supports_from_sets_and_streams():
    tasks = check_tasks(way_tasks(), n_support=4)
    batch = next(MetaBatches(tasks, 8, 4, torch.Generator().manual_seed(0), stratify=True))
    assert (torch.nn.functional.one_hot(batch.y_support, 4).sum(1) == 1).all()
    stream = TaskStream(lambda n, rng: way_tasks(n, seed=int(rng.integers(1000))))
    batch = next(MetaBatches(stream, 5, 8, torch.Generator().manual_seed(0), stratify=True))
    assert (torch.nn.functional.one_hot(batch.y_support, 4).sum(1) == 2).all()


def test_the_learner_stratifies_classification_by_default():
    tasks = way_tasks(seed=1)
    learner = MetaSymmetryLearner(**SMALL, n_support=4)
    assert learner.support_split == "auto"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        learner.fit(tasks)
        assert learner._split_options(check_tasks(tasks)) == {"shuffle": True,
                                                              "stratify": True}
    explicit = MetaSymmetryLearner(**SMALL, n_support=4, support_split="stratified")
    assert explicit.fit(tasks).score(tasks) == learner.score(tasks)
    random = MetaSymmetryLearner(**SMALL, n_support=4, support_split="random").fit(tasks)
    assert random.score(tasks) != learner.score(tasks)
    # regression: "auto" draws at random, and "stratified" is refused
    X, y = make_translation_tasks(n_tasks=12, n_samples=6, random_state=0)
    auto = MetaSymmetryLearner(**SMALL, n_support=2).fit(X, y)
    assert auto.score(X, y) == MetaSymmetryLearner(**SMALL, n_support=2,
                                                   support_split="random").fit(X, y).score(X, y)
    with pytest.raises(ValueError, match="regression tasks"):
        MetaSymmetryLearner(**SMALL, n_support=2, support_split="stratified").fit(X, y)


def test_auto_warns_when_supports_cannot_hold_every_class():
    tasks = way_tasks(n_way=4)
    with pytest.warns(UserWarning, match=r"support_split='auto' draws these classification "
                                         r"tasks' supports at random.*n_support=3"):
        learner = MetaSymmetryLearner(**SMALL, n_support=3).fit(tasks)
    with pytest.raises(ValueError, match="n_support=3"):
        MetaSymmetryLearner(**SMALL, n_support=3, support_split="stratified").fit(tasks)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MetaSymmetryLearner(**SMALL, n_support=3, support_split="random").fit(tasks)
    with pytest.warns(UserWarning, match="support_split='auto'"):  # at score too
        assert np.isfinite(learner.score(tasks[:4]))


def test_random_supports_drop_classes_and_stratified_ones_do_not():
    tasks = check_tasks(way_tasks(n_tasks=200, n_way=5, per_class=(4, 4)), n_support=5)
    generator = torch.Generator().manual_seed(0)
    random = tasks.split(5, generator).y_support
    stratified = tasks.split(5, generator, stratify=True).y_support
    n_classes = [len(set(row.tolist())) for row in random]
    assert np.mean(np.array(n_classes) < 5) > 0.5  # most random supports lack a class
    assert all(len(set(row.tolist())) == 5 for row in stratified)


# ---------------------------------------------------- integer targets under "auto"
def test_integer_targets_that_look_like_counts_get_a_warning():
    rng = np.random.default_rng(0)
    counts = [rng.poisson(8, size=12) for _ in range(5)]  # ~9 distinct values in 12 rows
    with pytest.warns(UserWarning, match=r"integer targets as class labels.*"
                                         r"objective='regression'.*objective='classification'"):
        assert resolve_objective("auto", counts) == "classification"
    many = [np.arange(60) % 30]  # 30 classes in a task, 2 rows each
    with pytest.warns(UserWarning, match="up to 30 classes per task"):
        resolve_objective("auto", many)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for objective in ("regression", "classification"):
            assert resolve_objective(objective, counts) == objective
        labels = [rng.permutation(np.repeat(np.arange(5), 3)) for _ in range(5)]
        assert resolve_objective("auto", labels) == "classification"  # 3 rows per class
        assert resolve_objective("auto", [np.array(["a", "b", "c"])]) == "classification"
        assert resolve_objective("auto", [c.astype(float) for c in counts]) == "regression"
    X = rng.normal(size=(60, 3))
    with pytest.warns(UserWarning, match="integer targets"):
        MetaSymmetryLearner(**SMALL, n_support=2, support_split="random").fit(
            X, np.concatenate(counts), groups=np.repeat(np.arange(5), 12))


# ------------------------------------------- halving over rows breaks long-format tasks
def test_halving_over_rows_of_long_format_names_n_meta_steps():
    X3, y3 = make_translation_tasks(n_tasks=12, n_samples=6, n_features=6, random_state=0)
    X, y = X3.reshape(72, 6), y3.reshape(72, -1)
    groups = np.repeat(np.arange(12), 6)
    with sklearn.config_context(enable_metadata_routing=True):
        learner = (MetaSymmetryLearner(**SMALL, n_support=2).set_fit_request(groups=True)
                   .set_score_request(groups=True))
        search = HalvingGridSearchCV(make_pipeline(StandardScaler(), learner),
                                     {"metasymmetrylearner__inner_lr": [0.05, 0.3]},
                                     cv=GroupKFold(2), min_resources=12)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # sklearn's per-fit failure notes
            with pytest.raises(ValueError, match=r"fits failed") as error:
                search.fit(X, y, groups=groups)
    assert "HalvingGridSearchCV or HalvingRandomSearchCV" in str(error.value)
    assert "resource='n_meta_steps'" in str(error.value)
