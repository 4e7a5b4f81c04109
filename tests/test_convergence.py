"""The learner's default meta-optimization lands U on the symmetry (docs/convergence.md).

Small, seeded versions of ``benchmarks/convergence.py``: each test changes one thing of
the defaults and asserts that the default is closer to the true sharing. Observed values
are noted beside each bound.
"""

import numpy as np
import pytest
from scipy.linalg import subspace_angles

from msr_sklearn import MetaSymmetryLearner
from msr_sklearn.datasets import (
    conv_weight_subspace,
    make_rotation_tasks,
    make_translation_tasks,
    translation_sharing,
)


def _angle(learner, subspace):
    U = learner.symmetry_.symmetry_matrix(0)
    return float(np.degrees(subspace_angles(U, subspace).max()))


@pytest.fixture(scope="module")
def translation():
    X, y = make_translation_tasks(1000, rank=1, n_features=20, random_state=0)
    return X, y, translation_sharing(20, 3)


def test_the_default_schedule_lands_closer_than_a_constant_rate(translation):
    X, y, band = translation
    fit = dict(n_filters=3, n_support=1, bias=False, n_meta_steps=300, random_state=0)
    default = _angle(MetaSymmetryLearner(**fit).fit(X, y), band)
    constant = _angle(MetaSymmetryLearner(**fit, meta_lr_schedule="constant").fit(X, y), band)
    paper = _angle(MetaSymmetryLearner(**fit, meta_lr=1e-3, meta_lr_schedule="constant",
                                       symmetry_gradient="second_order",
                                       meta_optimizer="adam").fit(X, y), band)
    # observed: 1.7 (inverse_time), 5.1 (constant at the same peak 1e-2), >5 (the paper's)
    assert default < 2.5
    assert default < 0.6 * constant
    assert default < 0.6 * paper


def test_the_first_order_symmetry_gradient_lands_closer_on_lifting_tasks():
    X, y, filters = make_rotation_tasks("c4", 1000, image_size=5, return_subspace=True,
                                        random_state=0)
    lifting = conv_weight_subspace(filters, 4, 5)
    fit = dict(n_filters=9, n_support=5, bias=False, n_meta_steps=300, random_state=0)
    first = MetaSymmetryLearner(**fit).fit(X, y)  # "auto": first order for one layer
    second = MetaSymmetryLearner(**fit, symmetry_gradient="second_order").fit(X, y)
    # observed: 2.6 and 5.3 degrees; the second-order optimum is tilted, not noisier
    assert _angle(first, lifting) < 3.5
    assert _angle(first, lifting) < 0.6 * _angle(second, lifting)


def test_auto_resolves_by_depth():
    X, y = make_translation_tasks(40, rank=1, n_features=8, random_state=0)
    one = MetaSymmetryLearner(n_filters=2, n_support=1, n_meta_steps=2).fit(X, y)
    deep = MetaSymmetryLearner(n_filters=2, n_support=1, n_meta_steps=2,
                               hidden_layer_sizes=(4,)).fit(X, y)
    kron = MetaSymmetryLearner(layer="msr_kron", n_filters=2, n_support=1,
                               n_meta_steps=2).fit(X, y)
    soft = MetaSymmetryLearner(layer="msr_residual", n_filters=2, n_support=1,
                               n_meta_steps=2).fit(X, y)
    assert one._inner_loop().symmetry_gradient == "first_order"
    assert deep._inner_loop().symmetry_gradient == "second_order"
    # "auto": no fixed-strength prior anywhere; held-out-checked pruning for one dense layer
    assert one._sharing_sparsity() == deep._sharing_sparsity() == kron._sharing_sparsity() == 0
    assert one._prunes_sharing()
    assert not (deep._prunes_sharing() or kron._prunes_sharing() or soft._prunes_sharing())
    assert soft._inner_loop().symmetry_gradient == "first_order"
    assert [g["row_sparsity"] for g in one._optimizer.param_groups] == [0.0, 0.0]
    # a deep network's sharings take bounded steps, one layer's do not
    assert {g["trust_ratio"] for g in one._optimizer.param_groups} == {0.0}
    assert deep._optimizer.param_groups[0]["trust_ratio"] == 0.01


def test_pruning_drops_the_weights_no_task_uses(translation):
    X, y, band = translation
    fit = dict(n_filters=3, n_support=1, bias=False, n_meta_steps=300, random_state=0)
    with_prior = MetaSymmetryLearner(**fit).fit(X, y)  # "auto": held-out-checked pruning
    without = MetaSymmetryLearner(**fit, sharing_sparsity=0.0).fit(X, y)
    on_band = np.linalg.norm(band, axis=1) > 0  # 54 of the 18 * 20 weights

    def off_band(learner):  # the share of span(U) on weights outside the band
        q, _ = np.linalg.qr(learner.symmetry_.symmetry_matrix(0))
        return (q[~on_band] ** 2).sum() / (q ** 2).sum()

    # observed: 1.9e-4 with the defaults (pruned at steps 200 and 300; pruned rows regrow
    # a little in between), 4.6e-4 without
    assert off_band(with_prior) < 0.6 * off_band(without)
    assert _angle(with_prior, band) < _angle(without, band)
