"""Any PyTorch module through the learner: module= and sharing=, images, files, sklearn."""

import copy
import pickle
import re

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold
from torch import nn

from msr_sklearn import EquivariantClassifier, LearnedSymmetry, MetaSymmetryLearner
from msr_sklearn.data.batch import TaskBatch
from msr_sklearn.engine import adapted_outputs
from msr_sklearn.datasets import load_aug_digits_tasks, make_translation_tasks
from msr_sklearn.learner import RETIRED_PARAMETERS
from msr_sklearn.models import ConvNet, GroupConvNet
from msr_sklearn.sharing import ConvFilterSharing, DenseSharing, Residual


class UserCNN(nn.Module):
    """A user's network: padding, max-pooling, LayerNorm, GELU, a skip connection."""

    def __init__(self, width=8, n_outputs=5):
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1)
        self.block = nn.Conv2d(width, width, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, n_outputs)

    def forward(self, x):
        h = nn.functional.gelu(self.stem(x))
        h = self.pool(h + nn.functional.gelu(self.block(h)))
        return self.head(self.norm(h.mean((-2, -1))))


POLICY = {"stem.weight": ConvFilterSharing(n_copies=4), "block.weight": DenseSharing(16),
          "norm.*": "outer"}
FAST = dict(n_support=5, support_split="first", n_meta_steps=6, meta_batch_size=4,
            random_state=0)


@pytest.fixture(scope="module")
def digit_images():
    """Aug-Digits episodes as images (n, 1, 8, 8): 5-way 1-shot, augmented queries."""
    tasks = load_aug_digits_tasks(24, standardize=True, random_state=0)
    return [(X.reshape(-1, 1, 8, 8), y) for X, y in tasks]


@pytest.fixture(scope="module")
def fitted(digit_images):
    return MetaSymmetryLearner(module=UserCNN, module__width=8, sharing=POLICY,
                               **FAST).fit(digit_images[:20])


def test_a_user_module_end_to_end(fitted, digit_images, tmp_path):
    learner = fitted
    assert learner.input_shape_ == (1, 8, 8) and learner.n_outputs_ == 5
    assert learner.model_.roles == {
        "stem.weight": "shared", "stem.bias": "inner", "block.weight": "shared",
        "block.bias": "inner", "norm.weight": "outer", "norm.bias": "outer",
        "head.weight": "inner", "head.bias": "inner"}
    score = learner.score(digit_images[20:])
    assert 0.0 <= score <= 1.0
    # the per-task estimator adapts exactly as the engine does
    X, y = digit_images[21]
    clf = learner.make_estimator().fit(X[:5], y[:5])
    assert isinstance(clf, EquivariantClassifier)
    engine = learner.evaluate([digit_images[21]])
    assert clf.score(X[5:], y[5:]) == pytest.approx(engine["accuracy"][0])
    classes, target = np.unique(y, return_inverse=True)
    x, t = torch.as_tensor(X[None], dtype=torch.float32), torch.as_tensor(target[None])
    batch = TaskBatch(x[:, :5], t[:, :5], x[:, 5:], t[:, 5:])
    logits = adapted_outputs(learner.model_, batch, learner._inner_loop())[0]
    np.testing.assert_allclose(clf.predict_proba(X[5:]), logits.softmax(-1).numpy(),
                               atol=1e-5)
    # saved and loaded (the class passed back in), it predicts the same
    path = tmp_path / "user.msr"
    learner.symmetry_.save(path)
    with pytest.raises(ValueError, match="user code; loading it imports that module"):
        LearnedSymmetry.load(path)
    loaded = LearnedSymmetry.load(path, module=UserCNN)
    assert loaded == learner.symmetry_
    again = EquivariantClassifier(loaded).fit(X[:5], y[:5])
    np.testing.assert_array_equal(again.predict_proba(X[5:]), clf.predict_proba(X[5:]))
    # the file names the class by its import path, imported only when allowed
    assert LearnedSymmetry.load(path, allow_import=True) == learner.symmetry_


def test_a_module_instance_is_copied_and_needs_the_module_to_load(digit_images, tmp_path):
    net = UserCNN(width=8)
    before = copy.deepcopy(net.state_dict())
    learner = MetaSymmetryLearner(module=net, sharing={"stem.weight": DenseSharing(10)},
                                  **FAST).fit(digit_images[:8])
    for name, value in net.state_dict().items():  # the user's instance is untouched
        assert torch.equal(value, before[name]), name
    assert "stem.weight" in dict(net.named_parameters())
    path = tmp_path / "instance.msr"
    learner.symmetry_.save(path)
    with pytest.raises(ValueError, match="an instance of .*UserCNN.*pass the module"):
        LearnedSymmetry.load(path, allow_import=True)
    assert LearnedSymmetry.load(path, module=UserCNN(width=8)) == learner.symmetry_
    with pytest.raises(ValueError, match="module parameters"):
        MetaSymmetryLearner(module=net, module__width=4).fit(digit_images[:8])


@pytest.mark.parametrize("module", ["class", "instance"])
def test_the_learner_pickles_and_clones_with_a_module(digit_images, module):
    params = dict(module=UserCNN, module__width=8) if module == "class" else dict(
        module=UserCNN(width=8))
    learner = MetaSymmetryLearner(sharing=POLICY, **params, **FAST)
    assert clone(learner).get_params()["sharing"].keys() == POLICY.keys()
    learner.fit(digit_images[:8])
    for other in (pickle.loads(pickle.dumps(learner)), copy.deepcopy(learner)):
        assert other.symmetry_ == learner.symmetry_
        assert other.score(digit_images[20:]) == learner.score(digit_images[20:])
    refit = clone(learner).fit(digit_images[:8])
    assert refit.symmetry_ == learner.symmetry_


def test_get_params_set_params_and_a_grid_over_module_parameters(digit_images):
    learner = MetaSymmetryLearner(module=UserCNN, module__width=4, **FAST)
    assert learner.get_params()["module__width"] == 4
    assert learner.set_params(module__width=8, module__n_outputs=5).module__n_outputs == 5
    search = GridSearchCV(MetaSymmetryLearner(module=UserCNN, sharing=POLICY, **FAST),
                          {"module__width": [4, 8]}, cv=KFold(2)).fit(digit_images[:12])
    assert search.best_params_["module__width"] in (4, 8)
    assert search.best_estimator_.model_.module.stem.out_channels == search.best_params_[
        "module__width"]


def test_tasks_of_images_as_lists_of_4d_arrays_or_a_5d_array(digit_images):
    X5 = np.stack([X for X, _ in digit_images[:8]]).astype(np.float32)
    y5 = np.stack([y for _, y in digit_images[:8]])
    as_list = MetaSymmetryLearner(module=UserCNN, **FAST).fit(digit_images[:8])
    as_array = MetaSymmetryLearner(module=UserCNN, **FAST).fit(X5, y5)
    assert as_list.symmetry_ == as_array.symmetry_
    # long format with flat columns keeps working, with a module that reshapes them
    flat = MetaSymmetryLearner(module=ConvNet, module__input_shape=(1, 8, 8),
                               module__channels=(4,), module__global_pool="mean", **FAST)
    flat.fit([(X.reshape(len(X), -1), y) for X, y in digit_images[:8]])
    assert flat.input_shape_ == (64,)


def test_the_group_conv_oracle_stays_exactly_invariant_through_the_learner(digit_images):
    oracle = MetaSymmetryLearner(module=GroupConvNet, module__fields=(2,), **FAST)
    oracle.fit(digit_images[:8])
    assert not any(p.requires_grad for ps in oracle.model_.symmetry_parameters().values()
                   for p in ps)
    X, y = digit_images[20]
    clf = oracle.make_estimator().fit(X[:5], y[:5])
    rotated = np.rot90(X[5:], 1, axes=(-2, -1)).copy()
    np.testing.assert_allclose(clf.predict_proba(rotated), clf.predict_proba(X[5:]),
                               atol=1e-5)


def test_retired_parameters_name_their_replacement():
    X, y = make_translation_tasks(n_tasks=8, n_samples=6, n_features=8, random_state=0)
    for name, replacement in RETIRED_PARAMETERS.items():
        learner = MetaSymmetryLearner(**{name: 1})  # __init__ only stores, as sklearn's
        with pytest.raises(TypeError, match=f"no longer takes {name}=; use " +
                           re.escape(replacement.split("(")[0])):
            learner.fit(X, y)
    with pytest.raises(ValueError, match="layer='conv1d' is now a module: use module=Conv1dLayer"):
        MetaSymmetryLearner(layer="conv1d").fit(X, y)
    with pytest.raises(TypeError, match="unexpected keyword argument 'n_filter'"):
        MetaSymmetryLearner(n_filter=3).fit(X, y)
    with pytest.raises(ValueError, match="hidden_layer_sizes describe the built-in MLP"):
        MetaSymmetryLearner(module=UserCNN, hidden_layer_sizes=(4,)).fit(X, y)


def test_the_constructor_has_at_most_30_parameters():
    assert len(MetaSymmetryLearner._get_param_names()) <= 30


def test_a_network_that_does_not_fit_the_tasks_is_a_clear_error(digit_images):
    with pytest.raises(ValueError, match=r"maps inputs of shape \(2, 1, 8, 8\) to \(2, 3\); "
                                         r"the tasks need \(n, 5\) logits"):
        MetaSymmetryLearner(module=UserCNN, module__n_outputs=3, **FAST).fit(digit_images[:8])
    with pytest.raises(ValueError, match="the network failed on one task's inputs"):
        MetaSymmetryLearner(module=nn.Linear, module__in_features=3, module__out_features=5,
                            **FAST).fit(digit_images[:8])
    with pytest.raises(ValueError, match="BatchNorm2d.*track_running_stats=False"):
        MetaSymmetryLearner(module=nn.Sequential(nn.Conv2d(1, 5, 8), nn.BatchNorm2d(5),
                                                 nn.Flatten()), **FAST).fit(digit_images[:8])


def test_a_residual_policy_replaces_the_residual_layer_kinds():
    X, y = make_translation_tasks(n_tasks=30, n_samples=8, n_features=10, random_state=0)
    by_kind = MetaSymmetryLearner(layer="msr_residual", n_filters=3, n_support=2,
                                  n_meta_steps=5, random_state=0).fit(X, y)
    by_policy = MetaSymmetryLearner(sharing={"0.weight": Residual(DenseSharing(3))},
                                    n_support=2, n_meta_steps=5, random_state=0).fit(X, y)
    assert by_kind.symmetry_ == by_policy.symmetry_
    soft = MetaSymmetryLearner(sharing={"0.weight": Residual(DenseSharing(3), inner_lr=0.0,
                                                             pull=True)},
                               n_support=2, n_meta_steps=1, random_state=0).fit(X, y)
    assert soft.history_["inner_lr[0.weight.residual]"].iloc[0] == pytest.approx(0.0, abs=1e-2)


def test_a_learned_symmetry_goes_into_a_plain_torch_module(fitted, digit_images):
    net = fitted.symmetry_.to_module()
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    assert "stem.parametrizations.weight.original" in trainable
    assert not any("factors" in n or "basis" in n for n in trainable)
    X = torch.tensor(digit_images[0][0][:3], dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(net(X), fitted.model_(X))
