"""Soft symmetry: residual layers W = reshape(U v) + R through the engine, the learner,
the estimators, persistence and the diagnostics."""

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from msr_sklearn import LearnedSymmetry, MetaSymmetryLearner
from msr_sklearn.datasets import make_translation_tasks
from msr_sklearn.estimators import EquivariantClassifier, EquivariantRegressor
from msr_sklearn.engine import MetaModel, TaskBatch, adapt, adapted_outputs, task_losses
from msr_sklearn.nn import build_network

DATA = Path(__file__).parent / "data"


def soft_batch(n_tasks=4, n_support=6, n_query=5, n_features=8, n_outputs=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_tasks, n_support + n_query, n_features, generator=g, dtype=torch.float64)
    y = torch.randn(n_tasks, n_support + n_query, n_outputs, generator=g, dtype=torch.float64)
    return TaskBatch(x[:, :n_support], y[:, :n_support], x[:, n_support:], y[:, n_support:])


def soft_model(layer="msr_residual", residual_pull=False, lrs=None, seed=0):
    net = build_network(8, 6, layer=layer, n_filters=3, bias=True, activation="identity",
                        residual_pull=residual_pull, random_state=seed).double()
    with torch.no_grad():
        for p in net.initial_inner_parameters().values():
            p.normal_(0, 0.3, generator=torch.Generator().manual_seed(seed + 1))
    model = MetaModel(net, inner_lr=0.2).double()
    if lrs:
        with torch.no_grad():
            for j, name in enumerate(model.inner_names):
                model.inner_lrs[j] = lrs.get(name.split(".")[1], model.inner_lrs[j])
    return model


# ------------------------------------------------------------------ engine limits
def test_residual_rate_zero_is_strict_msr():
    soft = soft_model(lrs={"residual": 0.0})
    strict = MetaModel(build_network(8, 6, layer="msr", n_filters=3, activation="identity",
                                     random_state=0).double(), inner_lr=0.2).double()
    strict.load_state_dict({k: v for k, v in soft.state_dict().items()
                            if "residual" not in k and k != "inner_lrs"}, strict=False)
    with torch.no_grad():
        strict.network.layers[0].filters.copy_(soft.network.layers[0].filters)
        strict.network.layers[0].bias.copy_(soft.network.layers[0].bias)
        soft.network.layers[0].residual.zero_()
    batch = soft_batch()
    for steps in (1, 3):
        torch.testing.assert_close(task_losses(soft, batch, inner_steps=steps),
                                   task_losses(strict, batch, inner_steps=steps))
    inner = adapt(soft, batch.x_support, batch.y_support, inner_steps=3)
    assert float(inner["0.residual"].detach().abs().max()) == 0.0  # R never left R0 = 0


def test_filters_rate_zero_is_maml_on_the_whole_weight():
    # v frozen: W = U v0 + R moves exactly as MAML's dense W at R's rate
    soft = soft_model(lrs={"filters": 0.0, "residual": 0.7})
    layer = soft.network.layers[0]
    maml = MetaModel(build_network(8, 6, layer="dense", activation="identity",
                                   random_state=0).double(), inner_lr=0.7).double()
    with torch.no_grad():
        maml.network.layers[0].filters.copy_(layer.weight().reshape(-1))
        maml.network.layers[0].bias.copy_(layer.bias)
        j = maml.inner_names.index("0.bias")
        maml.inner_lrs[j] = soft.inner_lrs[soft.inner_names.index("0.bias")]
    batch = soft_batch()
    torch.testing.assert_close(task_losses(soft, batch, inner_steps=2),
                               task_losses(maml, batch, inner_steps=2))


def test_pull_changes_nothing_after_one_step_and_holds_R_near_R0_after_more():
    batch = soft_batch()
    free, pulled = soft_model(), soft_model(residual_pull=True)
    pulled.load_state_dict(free.state_dict(), strict=False)
    # the pull's gradient 2 beta (R - R0) vanishes where every task starts
    torch.testing.assert_close(task_losses(free, batch), task_losses(pulled, batch))
    with torch.no_grad():
        pulled.network.layers[0].log_pull.fill_(np.log(3.0))
    moved = {}
    for name, model in (("free", free), ("pulled", pulled)):
        inner = adapt(model, batch.x_support, batch.y_support, inner_steps=4)
        step = inner["0.residual"] - model.network.layers[0].residual
        moved[name] = float(step.detach().norm())
    assert moved["pulled"] < 0.8 * moved["free"]
    losses = task_losses(pulled, batch, inner_steps=4)
    (grad,) = torch.autograd.grad(losses.sum(), pulled.network.layers[0].log_pull)
    assert abs(float(grad)) > 1e-4  # the pull weight is meta-learned


# ------------------------------------------------------------------ persistence
def test_a_version_1_file_still_loads_and_adapts_as_it_did():
    path = DATA / "learned_symmetry_v1.msr"
    with zipfile.ZipFile(path) as zf:
        assert json.loads(zf.read("meta.json"))["version"] == 1
    sym = LearnedSymmetry.load(path)
    assert sym.architecture["residual_pull"] is False
    assert sym.initial_residual(0) is None and sym.inner_steps == 2
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((6, 5)), rng.standard_normal((6, 3))
    pred = EquivariantRegressor(sym).fit(X[:4], y[:4]).predict(X[4:])
    # the predictions of the msr_sklearn that wrote the file
    np.testing.assert_allclose(pred, [[0.28009754, -0.13605034, -0.11714207],
                                      [0.08288676, -0.06699264, 0.02281986]], rtol=1e-5)


def test_a_residual_symmetry_round_trips_in_version_2(tmp_path):
    sym = LearnedSymmetry.initial(n_features=8, n_outputs=6, layer="msr_residual",
                                  n_filters=3, residual_pull=True, random_state=0)
    net = sym.build_network()
    with torch.no_grad():
        net.layers[0].residual.normal_()
        net.layers[0].log_pull.fill_(-1.5)
    sym = LearnedSymmetry.from_model(MetaModel(net), sym.architecture)
    sym.save(tmp_path / "soft.msr")
    with zipfile.ZipFile(tmp_path / "soft.msr") as zf:
        meta = json.loads(zf.read("meta.json"))
    assert meta["version"] == 2 and meta["architecture"]["residual_pull"] is True
    loaded = LearnedSymmetry.load(tmp_path / "soft.msr")
    assert loaded == sym and set(loaded.inner_lrs) == {"0.filters", "0.bias", "0.residual"}
    np.testing.assert_array_equal(loaded.initial_residual(0), net.layers[0].residual.detach())
    assert float(loaded.build_network().layers[0].log_pull.detach()) == -1.5


# ------------------------------------------------------------------ estimators
def lively_soft_symmetry(objective="regression", n_outputs=6, inner_steps=3, **architecture):
    """A residual symmetry with nonzero R0, distinct rates and a pull weight != 1."""
    architecture = {"n_features": 9, "n_outputs": n_outputs, "layer": "msr_residual",
                    "n_filters": 3, "residual_pull": True, **architecture}
    sym = LearnedSymmetry.initial(objective=objective, random_state=0, **architecture)
    net = sym.build_network()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(("residual", "filters")):
                p.normal_(0, 0.3, generator=g)
            elif name.endswith("log_pull"):
                p.fill_(np.log(0.8))
    rates = {"filters": 0.15, "bias": 0.05, "residual": 0.1}
    lrs = {name: rates[name.split(".")[1]] for name in sym.inner_lrs}
    sym = LearnedSymmetry.from_model(MetaModel(net), sym.architecture, objective=objective,
                                     inner_steps=inner_steps)
    return LearnedSymmetry(sym.architecture, sym.state, lrs, objective=objective,
                           inner_steps=inner_steps)


def adapted_outputs_of(model, Xs, ys, Xq, loss):
    """The engine's query outputs of one task after 3 inner steps on ``(Xs, ys)``."""
    ys = torch.as_tensor(ys[None], dtype=torch.float32 if loss == "mse" else torch.int64)
    Xs, Xq = (torch.as_tensor(a[None], dtype=torch.float32) for a in (Xs, Xq))
    unused = torch.zeros(1, Xq.shape[1], *ys.shape[2:], dtype=ys.dtype)  # query targets
    batch = TaskBatch(Xs, ys, Xq, unused)
    return adapted_outputs(model, batch, loss=loss, inner_steps=3)[0].numpy()


SOFT_ARCHITECTURES = {
    "msr_residual": {},
    "msr_kron_residual": {"layer": "msr_kron_residual", "n_filters": 4,
                          "hidden_layer_sizes": (4,)},
    "msr_conv2d_residual": {"layer": "msr_conv2d_residual", "kernel_size": 2,
                            "n_outputs": 8, "n_copies": 2},
    "front-end": {"layer": "msr", "conv_channels": (2,), "conv_layer": "msr_conv2d_residual",
                  "n_copies": 2, "kernel_size": 2},
}


@pytest.mark.parametrize("kind", list(SOFT_ARCHITECTURES))
def test_bound_regressor_adapts_v_and_R_as_the_engine(kind):
    sym = lively_soft_symmetry(**SOFT_ARCHITECTURES[kind])
    n_out = sym.n_outputs
    rng = np.random.default_rng(0)
    Xs, ys, Xq = rng.normal(size=(7, 9)), rng.normal(size=(7, n_out)), rng.normal(size=(5, 9))
    expected = adapted_outputs_of(sym.build_model(), Xs, ys, Xq, "mse")
    reg = EquivariantRegressor(sym).fit(Xs, ys)
    np.testing.assert_allclose(reg.predict(Xq), expected, atol=1e-5)
    # R moved (it is an inner parameter), U did not
    adapted = dict(reg.network_.named_parameters())
    initial = dict(sym.build_network().named_parameters())
    residuals = [n for n in adapted if n.endswith("residual")]
    assert residuals and all(not torch.allclose(adapted[n], initial[n]) for n in residuals)
    assert all(torch.equal(adapted[n], initial[n]) for n in adapted if "sharing" in n
               or n.endswith("log_pull"))
    # without the pull in the estimator's loss the predictions would differ
    unpulled = {**sym.architecture, "residual_pull": False}
    state = {k: v for k, v in sym.state.items() if not k.endswith("log_pull")}
    free = EquivariantRegressor(LearnedSymmetry(unpulled, state, sym.inner_lrs,
                                                inner_steps=3)).fit(Xs, ys)
    assert np.abs(free.predict(Xq) - expected).max() > 1e-4


def test_bound_classifier_adapts_v_and_R_as_the_engine():
    sym = lively_soft_symmetry("classification", n_outputs=3)
    rng = np.random.default_rng(2)
    Xs, Xq = rng.normal(size=(9, 9)), rng.normal(size=(6, 9))
    ys = np.array([0, 1, 2] * 3)
    logits = torch.tensor(adapted_outputs_of(sym.build_model(), Xs, ys, Xq, "cross_entropy"))
    clf = EquivariantClassifier(sym).fit(Xs, ys)
    np.testing.assert_allclose(clf.predict_proba(Xq), torch.softmax(logits.double(), -1),
                               atol=1e-5)


# ------------------------------------------------------------------ diagnostics
def permutation_soft_symmetry(breaking=0.4):
    """A residual layer whose U is the exact S_6 sharing and whose R0 breaks it."""
    from msr_sklearn.groups import symmetric_group

    U = symmetric_group(6).sharing_basis()
    sym = LearnedSymmetry.initial(n_features=6, n_outputs=6, layer="msr_residual",
                                  n_filters=2, bias=False, random_state=0)
    net = sym.build_network()
    with torch.no_grad():
        net.layers[0].sharing.basis.copy_(torch.as_tensor(U.T))
        net.layers[0].filters.copy_(torch.tensor([1.0, 0.5]))
        w0 = float(net.layers[0].sharing.weight(net.layers[0].filters).norm())
        r0 = torch.randn(6, 6, generator=torch.Generator().manual_seed(0))
        net.layers[0].residual.copy_(r0 * breaking * w0 / r0.norm())
    lrs = {**sym.inner_lrs, "0.residual": 0.03}
    state = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    return LearnedSymmetry(sym.architecture, state, lrs)


def test_symmetry_report_scores_U_and_states_the_residual():
    from msr_sklearn.inspection import symmetry_report

    sym = permutation_soft_symmetry()
    summary = symmetry_report(sym).attrs["summary"]
    assert summary["order"] == 720  # U is exactly S_6's sharing; R does not enter
    assert summary["residual_lr"] == pytest.approx(0.03)
    w0 = np.linalg.norm(sym.symmetry_matrix(0) @ sym.initial_filters(0)
                        + sym.initial_residual(0).ravel())
    assert summary["residual_norm"] == pytest.approx(np.linalg.norm(sym.initial_residual(0)))
    assert summary["residual_relative_size"] == pytest.approx(summary["residual_norm"] / w0)
    assert 0.3 < summary["residual_relative_size"] < 0.5
    # a strict layer's report has no residual entries
    strict = symmetry_report(sym.symmetry_matrix(0), weight_shape=(6, 6)).attrs["summary"]
    assert "residual_lr" not in strict


def test_harden_and_export_keep_U_and_name_the_dropped_residual():
    from msr_sklearn.groups import symmetric_group
    from msr_sklearn.inspection import export_layer, harden_to_group

    sym = permutation_soft_symmetry()
    with pytest.warns(UserWarning, match=r"harden_to_group acts on the shared part U of "
                      r"layer 0.*R0 has norm .* \(3\d\.\d% of the layer's initial weight\), "
                      r"and R adapts at the learned rate 0\.03"):
        hard = harden_to_group(sym, symmetric_group(6))
    assert hard.shape == (36, 2)
    layer = sym.build_network().layers[0]
    with pytest.warns(UserWarning, match="export_layer acts on the shared part U"):
        exported = export_layer(layer, weight=layer.weight().detach().numpy())
    # the export keeps span(U): the weight's projection, without the residual's part
    # outside it
    U = sym.symmetry_matrix(0)
    W = layer.weight().detach().numpy().ravel()
    np.testing.assert_allclose(exported.weight().detach().numpy().ravel(),
                               U @ np.linalg.lstsq(U, W, rcond=None)[0], atol=1e-5)
    assert exported.residual is None
    with pytest.raises(ValueError, match="an array U needs weight_shape"):
        export_layer(U)


# ------------------------------------------------------------------ the learner
SOFT = dict(layer="msr_residual", n_filters=3, n_support=3, residual_pull=True, inner_steps=2,
            n_meta_steps=30, meta_batch_size=8, random_state=0)


def soft_tasks(n_tasks=40, **breaking):
    breaking = breaking or {"symmetry_breaking": 0.3, "shared_breaking": 0.5}
    return make_translation_tasks(n_tasks=n_tasks, n_samples=8, n_features=10,
                                  random_state=0, **breaking)


def test_make_estimator_adapts_v_and_R_as_the_learner_did():
    X, y = soft_tasks()
    learner = MetaSymmetryLearner(**SOFT).fit(X[:30], y[:30])
    assert {"0.residual"} < set(learner.symmetry_.inner_lrs)
    Xt, yt = (torch.tensor(a[30:32], dtype=torch.float32) for a in (X, y))
    engine = adapted_outputs(learner.model_, TaskBatch(Xt[:, :3], yt[:, :3], Xt[:, 3:],
                                                       yt[:, 3:]), inner_steps=2).numpy()
    for t in range(2):
        reg = learner.make_estimator().fit(X[30 + t, :3], y[30 + t, :3])
        np.testing.assert_allclose(reg.predict(X[30 + t, 3:]), engine[t], atol=1e-5)


def test_symmetry_strength_reads_the_symmetry_of_the_tasks():
    exact, free = soft_tasks(120, symmetry_breaking=0.0), soft_tasks(120, symmetry_breaking=3.0)
    params = {**SOFT, "residual_pull": False, "inner_steps": 1, "n_support": 5,
              "n_meta_steps": 150}
    strengths = {}
    for name, (X, y) in (("exact", exact), ("broken", free)):
        learner = MetaSymmetryLearner(**params).fit(X[:100], y[:100])
        strengths[name] = learner.symmetry_strength(X[100:], y[100:]).loc[0]
        j = learner.model_.inner_names.index("0.residual")
        assert strengths[name]["residual_lr"] == pytest.approx(
            float(learner.model_.inner_lrs[j].detach()))
    # early in meta-training R's rate still rises with v's; the exact tasks' adapted
    # weights already lie mostly in span(U), the broken ones' mostly outside it
    assert strengths["exact"]["strength"] > 0.6
    assert strengths["broken"]["strength"] < strengths["exact"]["strength"] - 0.3
    strict = MetaSymmetryLearner(**{**params, "layer": "msr"}).fit(*exact)
    row = strict.symmetry_strength(*exact).loc[0]
    assert row["strength"] == pytest.approx(1.0, abs=1e-6) and np.isnan(row["residual_lr"])


def test_a_resumed_residual_run_ends_as_the_uninterrupted_one(tmp_path):
    from test_resume import Crash, assert_same_run

    X, y = soft_tasks()
    path = tmp_path / "soft.msr"
    params = {**SOFT, "checkpoint_path": path, "checkpoint_interval": 10, "resume": True}
    with pytest.raises(RuntimeError, match="crash"):
        MetaSymmetryLearner(**params, callbacks=[Crash(15)]).fit(X, y)
    resumed = MetaSymmetryLearner(**params).fit(X, y)
    assert_same_run(resumed, MetaSymmetryLearner(**SOFT).fit(X, y))
    assert LearnedSymmetry.load(path).architecture["residual_pull"] is True


def test_a_warm_start_continues_the_residual_and_refuses_a_changed_pull():
    X, y = soft_tasks()
    learner = MetaSymmetryLearner(**SOFT, warm_start=True).fit(X, y)
    r0 = learner.symmetry_.initial_residual(0)
    learner.fit(X, y)
    assert learner.n_iter_ == 60
    assert not np.allclose(learner.symmetry_.initial_residual(0), r0)
    learner.set_params(residual_pull=False)
    with pytest.raises(ValueError, match="warm_start continues the fitted network, but "
                                         "residual_pull changed"):
        learner.fit(X, y)


def test_a_residual_learner_trains_on_a_task_stream():
    from msr_sklearn.data.streams import TaskStream

    stream = TaskStream(lambda n, rng: make_translation_tasks(
        n_tasks=n, n_samples=8, n_features=10, shared_breaking=0.5,
        random_state=int(rng.integers(2**31))))
    learner = MetaSymmetryLearner(**{**SOFT, "n_meta_steps": 10}).fit(stream)
    assert learner.n_iter_ == 10 and np.abs(learner.symmetry_.initial_residual(0)).max() > 0


def test_a_residual_learner_on_cuda_matches_cpu():
    X, y = soft_tasks()
    if not torch.cuda.is_available():  # here: the clear refusal, never a crash in torch
        with pytest.raises(ValueError, match="CUDA is not available"):
            MetaSymmetryLearner(**SOFT, device="cuda").fit(X, y)
        return
    cpu = MetaSymmetryLearner(**SOFT).fit(X, y)
    gpu = MetaSymmetryLearner(**SOFT, device="cuda").fit(X, y)
    for name, value in cpu.symmetry_.state.items():
        np.testing.assert_allclose(gpu.symmetry_.state[name], value, rtol=1e-3, atol=1e-4)
    reg = gpu.make_estimator().fit(X[0, :3], y[0, :3])
    np.testing.assert_allclose(reg.predict(X[0, 3:]),
                               cpu.make_estimator().fit(X[0, :3], y[0, :3]).predict(X[0, 3:]),
                               rtol=1e-3, atol=1e-4)
    assert gpu.symmetry_strength(X, y).loc[0, "strength"] == pytest.approx(
        cpu.symmetry_strength(X, y).loc[0, "strength"], abs=1e-4)


@pytest.mark.parametrize("params,match", [
    ({"layer": "msr", "residual_pull": True}, "residual_pull=True acts on residual layers"),
    ({"layer": "conv1d", "residual_lr": 0.1, "residual_pull": False},
     "residual_lr=0.1 sets the inner rate of "
                                              "residual layers"),
    ({"residual_lr": -0.1}, "'residual_lr' parameter of MetaSymmetryLearner"),
    ({"layer": "msr_residual_pull"}, "'layer' parameter of MetaSymmetryLearner"),
    ({"conv_layer": "conv2d_residual"}, "'conv_layer' parameter of MetaSymmetryLearner"),
])
def test_bad_soft_symmetry_settings_are_value_errors_naming_the_parameter(params, match):
    X, y = soft_tasks(8)
    with pytest.raises(ValueError, match=match):
        MetaSymmetryLearner(**{**SOFT, "n_meta_steps": 1, **params}).fit(X, y)
