"""Small, seeded versions of the rows of ``benchmarks/synthetic.py``.

Each test meta-trains on a scaled-down problem (fewer features, 1000 tasks, a few
hundred steps, otherwise the paper's protocol) and asserts the ordering that the full
benchmark shows. The bounds leave a margin around the values observed with these
seeds (noted beside each assertion) but would fail if a model stopped learning its
symmetry.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from scipy.linalg import subspace_angles

from msr_sklearn import MetaSymmetryLearner
from msr_sklearn.datasets import make_rotation_tasks, make_translation_tasks

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "synthetic.py"
_spec = importlib.util.spec_from_file_location("synthetic_benchmark", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

N_FEATURES = 40  # 38 outputs: the paper's 70 -> 68 layer, scaled down
SEED = 0


def _angle(U, subspace):
    return float(np.degrees(subspace_angles(np.asarray(U, dtype=float), subspace).max()))


def _fit(X, y, steps, **params):
    """Meta-train on the first 80% of the tasks; query MSE on the rest."""
    n_train = int(0.8 * len(X))
    learner = MetaSymmetryLearner(**bench.learner_params(params), n_meta_steps=steps,
                                  random_state=SEED).fit(X[:n_train], y[:n_train])
    return learner, float(learner.evaluate(X[n_train:], y[n_train:])["mse"].mean())


def _translation(rank, steps, models):
    X, y, subspace = make_translation_tasks(1000, rank=rank, n_features=N_FEATURES,
                                            return_subspace=True, random_state=SEED)
    out = {}
    for name in models:
        params = dict(bench.TRANSLATION_MODELS[name])
        if name == "MSR-FC":
            params["n_filters"] = bench.K_OF_RANK[rank]
        out[name] = _fit(X, y, steps, **params)
    return out, subspace


def test_rank1_msr_fc_recovers_convolution():
    # (not a module-scoped fixture: those run before conftest's one-thread fixture)
    fits, band = _translation(1, 1000, ["MAML-FC", "MAML-Conv", "MSR-FC"])
    mse = {name: m for name, (_, m) in fits.items()}
    # observed: FC 2.59, Conv 0.244, MSR-FC 0.249 (FC learns ~nothing: Var(y) = 3)
    assert mse["MSR-FC"] * 5 < mse["MAML-FC"]
    assert mse["MAML-Conv"] * 5 < mse["MAML-FC"]
    # MSR-FC matches the convolution it has to discover
    assert mse["MSR-FC"] < 1.3 * mse["MAML-Conv"]
    # ... because span(U) is the convolution's band (observed 4.3 degrees)
    assert _angle(fits["MSR-FC"][0].symmetry_.symmetry_matrix(0), band) < 8


@pytest.mark.parametrize("rank, steps", [(2, 500), (5, 1000)])
def test_low_rank_msr_fc_beats_fc_and_lc(rank, steps):
    models = ["MAML-LC", "MAML-Conv", "MSR-FC"] + (["MAML-FC"] if rank == 2 else [])
    fits, _ = _translation(rank, steps, models)
    mse = {name: m for name, (_, m) in fits.items()}
    # observed rank 2 / rank 5: FC 1.76 / -, LC 1.69 / 0.95, Conv 0.56 / 0.50,
    # MSR-FC 0.56 / 0.39
    if rank == 2:
        assert mse["MAML-LC"] < mse["MAML-FC"]
    assert mse["MSR-FC"] < 0.5 * mse["MAML-LC"]
    if rank == 2:  # within 500 steps MSR-FC sits on the plateau at the conv's level
        assert mse["MSR-FC"] < 1.1 * mse["MAML-Conv"]
    else:  # rank 5 (k = 30) leaves it within 1000 steps and beats the convolution
        assert mse["MSR-FC"] < 0.9 * mse["MAML-Conv"]


def test_c4_msr_conv_beats_maml_conv():
    size = 7
    X, y, filters = make_rotation_tasks("c4", 1000, image_size=size, return_subspace=True,
                                        random_state=SEED)
    _, conv = _fit(X, y, 800, **bench.rotation_model("MAML-Conv", "c4", size))
    msr, msr_mse = _fit(X, y, 800, **bench.rotation_model("MSR-Conv", "c4", size))
    # observed: MAML-Conv 3.84, MSR-Conv 1.41 (Var(y) = 9)
    assert msr_mse < 0.5 * conv
    # the four output channels became rotated copies of one filter (observed 2.6 degrees)
    assert _angle(msr.symmetry_.symmetry_matrix(0), filters) < 10


def test_conv_weight_subspace_holds_the_tasks_weights():
    size = 5
    X, y, filters = make_rotation_tasks("d4", 2, n_samples=60, image_size=size,
                                        return_subspace=True, random_state=1)
    dense = bench.conv_weight_subspace(filters, 8, size)
    assert dense.shape == (8 * 3 * 3 * size * size, 9)
    for t in range(2):  # the exact map of each task, by least squares (no noise)
        W = np.linalg.lstsq(X[t], y[t], rcond=None)[0].T  # (n_out, n_in)
        w = W.ravel()
        residual = w - dense @ (dense.T @ w)
        assert np.linalg.norm(residual) < 1e-8 * np.linalg.norm(w)


def test_paper_initialization_hook():
    X, y = make_translation_tasks(40, n_features=12, random_state=0)
    params = dict(bench.PROTOCOL, layer="msr", n_filters=3, n_meta_steps=1, random_state=0)
    with bench.paper_initialization():
        paper = MetaSymmetryLearner(**params).fit(X, y)
    ours = MetaSymmetryLearner(**params).fit(X, y)
    U_paper, U_ours = (m.symmetry_.symmetry_matrix(0) for m in (paper, ours))
    assert abs(U_paper.std() - 0.01) < 0.002  # N(0, 0.01^2), one Adam step of 1e-3 later
    assert np.allclose(np.linalg.norm(U_ours, axis=0), 1, atol=0.05)  # orthonormal columns
    # the hook is undone: a third learner is built as ours again
    again = MetaSymmetryLearner(**params).fit(X, y)
    np.testing.assert_allclose(again.symmetry_.symmetry_matrix(0), U_ours)


def test_sum_over_tasks_hook():
    X, y = make_translation_tasks(64, n_features=12, random_state=0)
    params = dict(bench.PROTOCOL, layer="msr", n_filters=3, n_meta_steps=20,
                  meta_batch_size=8, random_state=0)
    with bench.sum_over_tasks():
        summed = MetaSymmetryLearner(**params).fit(X, y)
    mean = MetaSymmetryLearner(**params).fit(X, y)
    ratio = summed.history_["train_loss"].iloc[0] / mean.history_["train_loss"].iloc[0]
    assert ratio == pytest.approx(8, rel=1e-5)  # the first steps see identical states
    # Adam is invariant to the gradient scale (up to eps): the same U either way
    np.testing.assert_allclose(summed.symmetry_.symmetry_matrix(0),
                               mean.symmetry_.symmetry_matrix(0), atol=1e-4)


def test_set_meta_lr_reaches_the_optimizer():
    X, y = make_translation_tasks(40, n_features=12, random_state=0)
    learner = MetaSymmetryLearner(**{**bench.PROTOCOL, "n_meta_steps": 2}, layer="msr",
                                  n_filters=3, warm_start=True, random_state=0).fit(X, y)
    bench.set_meta_lr(learner, 1e-4)
    before = learner.symmetry_.symmetry_matrix(0)
    learner.fit(X, y)
    step = np.abs(learner.symmetry_.symmetry_matrix(0) - before).max()
    assert learner.meta_lr == 1e-4
    assert 0 < step < 5e-4  # Adam moves an entry by about lr per step (1e-3 would show)
