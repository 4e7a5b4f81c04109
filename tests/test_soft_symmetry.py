"""Soft symmetry: residual sharings W = reshape(U v) + R through the engine, the learner,
the estimators, persistence and the diagnostics."""

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from msr_sklearn import LearnedSymmetry, MetaSymmetryLearner
from msr_sklearn.data.batch import TaskBatch
from msr_sklearn.datasets import make_translation_tasks
from msr_sklearn.engine import InnerLoop, MetaModel, adapt, adapted_outputs, task_losses
from msr_sklearn.estimators import EquivariantClassifier, EquivariantRegressor
from msr_sklearn.models import MLP, ConvNet
from msr_sklearn.sharing import (
    ConvFilterSharing,
    DenseSharing,
    FixedSharing,
    KroneckerSharing,
    Residual,
)

DATA = Path(__file__).parent / "data"


def soft_batch(n_tasks=4, n_support=6, n_query=5, n_features=8, n_outputs=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_tasks, n_support + n_query, n_features, generator=g, dtype=torch.float64)
    y = torch.randn(n_tasks, n_support + n_query, n_outputs, generator=g, dtype=torch.float64)
    return TaskBatch(x[:, :n_support], y[:, :n_support], x[:, n_support:], y[:, n_support:])


def linear_model(sharing=None, inner_lr=0.2, seed=0):
    """A float64 MetaModel of a linear map 8 -> 6 with ``sharing`` on its weight (None:
    adapted as is)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = MLP(8, 6, activation="identity")
    policy = {} if sharing is None else {"0.weight": sharing}
    return MetaModel(net, policy, inner_lr=inner_lr,
                     generator=torch.Generator().manual_seed(seed)).double()


def set_lrs(model, lrs):
    """Inner rates by the last part of the inner tensor's name (filters, residual, bias)."""
    with torch.no_grad():
        for j, name in enumerate(model.inner_names):
            kind = name.rpartition(".")[2]
            if kind in lrs:
                model.inner_lrs[j] = lrs[kind]


def soft_model(pull=False, lrs=None, seed=0):
    """A residual sharing on the weight, every initial inner tensor random."""
    model = linear_model(Residual(DenseSharing(3), pull=pull), seed=seed)
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed + 1)
        for p in model.initial_inner().values():
            p.normal_(0, 0.3, generator=g)
    set_lrs(model, lrs or {})
    return model


# ------------------------------------------------------------------ engine limits
def test_residual_rate_zero_is_strict_msr():
    soft = soft_model(lrs={"residual": 0.0})
    strict = linear_model(DenseSharing(3))
    with torch.no_grad():
        soft.shared["0-weight"].residual.zero_()
        strict.sharing("0.weight").basis.copy_(soft.sharing("0.weight").sharing.basis)
        strict.shared["0-weight"].filters.copy_(soft.shared["0-weight"].filters)
        strict.module[0].bias.copy_(soft.module[0].bias)
        lrs = dict(zip(soft.inner_names, soft.inner_lrs))
        strict.inner_lrs.copy_(torch.stack([lrs[n] for n in strict.inner_names]))
    batch = soft_batch()
    for steps in (1, 3):
        torch.testing.assert_close(task_losses(soft, batch, InnerLoop(steps=steps)),
                                   task_losses(strict, batch, InnerLoop(steps=steps)))
    inner = adapt(soft, batch.x_support, batch.y_support, InnerLoop(steps=3))
    assert float(inner["0.weight.residual"].detach().abs().max()) == 0.0  # R never left R0 = 0


def test_filters_rate_zero_is_maml_on_the_whole_weight():
    # v frozen: W = U v0 + R moves exactly as MAML's dense W at R's rate
    soft = soft_model(lrs={"filters": 0.0, "residual": 0.7})
    maml = linear_model(None, inner_lr=0.7)
    with torch.no_grad():
        maml.module[0].weight.copy_(soft.weights(soft.initial_inner())["0.weight"])
        maml.module[0].bias.copy_(soft.module[0].bias)
        maml.inner_lrs[maml.inner_names.index("0.bias")] = \
            soft.inner_lrs[soft.inner_names.index("0.bias")]
    batch = soft_batch()
    torch.testing.assert_close(task_losses(soft, batch, InnerLoop(steps=2)),
                               task_losses(maml, batch, InnerLoop(steps=2)))


def test_pull_changes_nothing_after_one_step_and_holds_R_near_R0_after_more():
    batch = soft_batch()
    free, pulled = soft_model(), soft_model(pull=True)
    pulled.load_state_dict(free.state_dict(), strict=False)
    log_pull = pulled.sharing("0.weight").log_pull
    # the pull's gradient 2 beta (R - R0) vanishes where every task starts
    torch.testing.assert_close(task_losses(free, batch), task_losses(pulled, batch))
    with torch.no_grad():
        log_pull.fill_(np.log(3.0))
    moved = {}
    for name, model in (("free", free), ("pulled", pulled)):
        inner = adapt(model, batch.x_support, batch.y_support, InnerLoop(steps=4))
        step = inner["0.weight.residual"] - model.shared["0-weight"].residual
        moved[name] = float(step.detach().norm())
    assert moved["pulled"] < 0.8 * moved["free"]
    losses = task_losses(pulled, batch, InnerLoop(steps=4))
    (grad,) = torch.autograd.grad(losses.sum(), log_pull)
    assert abs(float(grad)) > 1e-4  # the pull weight is meta-learned


# ------------------------------------------------------------------ persistence
def is_residual(spec):
    return isinstance(spec, dict) and spec["kind"] == "Residual"


def test_a_version_1_file_still_loads_and_adapts_as_it_did():
    path = DATA / "learned_symmetry_v1.msr"
    with zipfile.ZipFile(path) as zf:
        assert json.loads(zf.read("meta.json"))["version"] == 1
    sym = LearnedSymmetry.load(path)
    assert not any(is_residual(spec) for spec in sym.policy.values())
    assert sym.initial_residual(0) is None and sym.inner_steps == 2
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((6, 5)), rng.standard_normal((6, 3))
    pred = EquivariantRegressor(sym).fit(X[:4], y[:4]).predict(X[4:])
    # the predictions of the msr_sklearn that wrote the file
    np.testing.assert_allclose(pred, [[0.28009754, -0.13605034, -0.11714207],
                                      [0.08288676, -0.06699264, 0.02281986]], rtol=1e-5)


def test_a_residual_symmetry_round_trips_in_version_3(tmp_path):
    sym = LearnedSymmetry.initial(sharing={"0.weight": Residual(DenseSharing(3), pull=True)},
                                  n_features=8, n_outputs=6, random_state=0)
    model = sym.build_model()
    with torch.no_grad():
        model.shared["0-weight"].residual.normal_()
        model.sharing("0.weight").log_pull.fill_(-1.5)
    sym = LearnedSymmetry.from_model(model, sym.module, input_shape=(8,), n_outputs=6)
    sym.save(tmp_path / "soft.msr")
    with zipfile.ZipFile(tmp_path / "soft.msr") as zf:
        meta = json.loads(zf.read("meta.json"))
    assert meta["version"] == 3 and meta["policy"]["0.weight"]["pull"] is True
    loaded = LearnedSymmetry.load(tmp_path / "soft.msr")
    assert loaded == sym
    assert set(loaded.inner_lrs) == {"0.weight.filters", "0.bias", "0.weight.residual"}
    np.testing.assert_array_equal(loaded.initial_residual(0),
                                  model.shared["0-weight"].residual.detach())
    assert float(loaded.build_model().sharing("0.weight").log_pull.detach()) == -1.5


# ------------------------------------------------------------------ estimators
def lively_soft_symmetry(objective="regression", n_outputs=6, inner_steps=3, **spec):
    """A residual symmetry with nonzero R0, distinct rates and a pull weight != 1."""
    spec = {"n_features": 9, "n_outputs": n_outputs,
            "sharing": {"0.weight": Residual(DenseSharing(3), pull=True)}, **spec}
    sym = LearnedSymmetry.initial(objective=objective, random_state=0, **spec)
    model = sym.build_model()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("residual", "filters")):
                p.normal_(0, 0.3, generator=g)
            elif name.endswith("log_pull"):
                p.fill_(np.log(0.8))
    set_lrs(model, {"filters": 0.15, "bias": 0.05, "residual": 0.1})
    return LearnedSymmetry.from_model(model, sym.module, objective=objective,
                                      inner_steps=inner_steps, input_shape=sym.input_shape,
                                      n_outputs=sym.n_outputs)


def adapted_outputs_of(model, Xs, ys, Xq, loss):
    """The engine's query outputs of one task after 3 inner steps on ``(Xs, ys)``."""
    ys = torch.as_tensor(ys[None], dtype=torch.float32 if loss == "mse" else torch.int64)
    Xs, Xq = (torch.as_tensor(a[None], dtype=torch.float32) for a in (Xs, Xq))
    unused = torch.zeros(1, Xq.shape[1], *ys.shape[2:], dtype=ys.dtype)  # query targets
    batch = TaskBatch(Xs, ys, Xq, unused)
    return adapted_outputs(model, batch, InnerLoop(loss=loss, steps=3))[0].numpy()


SOFT_CONV = {"module": ConvNet, "module__input_shape": (1, 3, 3), "module__channels": (2,),
             "module__kernel_size": 2, "module__n_copies": 2}
SOFT_ARCHITECTURES = {
    "msr_residual": {},
    "msr_kron_residual": {"hidden_layer_sizes": (4,),
                          "sharing": {"*.weight": Residual(KroneckerSharing(n_filters=4),
                                                           pull=True)}},
    # the old layer="msr_conv2d_residual": a ConvNet without a head
    "msr_conv2d_residual": {**SOFT_CONV, "module__n_outputs": None, "n_outputs": 8,
                            "sharing": {"features.0.weight": Residual(
                                ConvFilterSharing(n_copies=2), pull=True)}},
    "front-end": {**SOFT_CONV, "sharing": {
        "features.0.weight": Residual(ConvFilterSharing(n_copies=2), pull=True),
        "head.0.weight": DenseSharing(3)}},
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
    # R moved (it is an inner tensor), U and the pull did not
    adapted = {n: t[0] for n, t in reg.network_.inner_dict().items()}
    initial = sym.build_model().initial_inner()
    residuals = [n for n in adapted if n.endswith("residual")]
    assert residuals and all(not torch.allclose(adapted[n], initial[n]) for n in residuals)
    outer = dict(sym.build_model().named_parameters())
    fitted = dict(reg.network_.model.named_parameters())
    moved = [n for n in outer if n.startswith("shared.") and "sharing" in n
             and not torch.equal(fitted[n], outer[n])]
    assert any("log_pull" in n for n in outer) and not moved
    # without the pull in the estimator's loss the predictions would differ
    policy = {n: {**r, "pull": False} if is_residual(r) else r for n, r in sym.policy.items()}
    state = {k: v for k, v in sym.state.items() if not k.endswith("log_pull")}
    unpulled = LearnedSymmetry(sym.module, policy, state, sym.inner_lrs, inner_steps=3,
                               input_shape=sym.input_shape, n_outputs=n_out)
    free = EquivariantRegressor(unpulled).fit(Xs, ys)
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
    model = sym.build_model()
    sharing, entry = model.sharing("0.weight"), model.shared["0-weight"]
    with torch.no_grad():
        sharing.sharing.basis.copy_(torch.as_tensor(U.T))
        entry.filters.copy_(torch.tensor([1.0, 0.5]))
        w0 = float(sharing.sharing(entry.filters).norm())
        r0 = torch.randn(6, 6, generator=torch.Generator().manual_seed(0))
        entry.residual.copy_(r0 * breaking * w0 / r0.norm())
    set_lrs(model, {"residual": 0.03})
    return LearnedSymmetry.from_model(model, sym.module, input_shape=(6,), n_outputs=6)


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
    # the MetaModel says the same; a bare Residual sharing holds neither R0 nor its rate
    model_summary = symmetry_report(sym.build_model()).attrs["summary"]
    assert model_summary["residual_norm"] == pytest.approx(summary["residual_norm"])
    bare = symmetry_report(sym.sharing(0)).attrs["summary"]
    assert bare["order"] == 720 and bare["residual_norm"] is None
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
    U = sym.symmetry_matrix(0)
    W = U @ sym.initial_filters(0) + sym.initial_residual(0).ravel()
    for source in (sym, sym.build_model()):
        with pytest.warns(UserWarning, match="export_layer acts on the shared part U"):
            exported = export_layer(source, weight=W.reshape(6, 6))
        # the export keeps span(U): the weight's projection, without the residual's part
        # outside it
        np.testing.assert_allclose(exported.weight.detach().numpy().ravel(),
                                   U @ np.linalg.lstsq(U, W, rcond=None)[0], atol=1e-5)
        assert type(exported.parametrizations.weight[0]) is FixedSharing  # no residual
    with pytest.warns(UserWarning, match="drops its free residual R$"):
        export_layer(sym.sharing(0))  # a bare sharing: no R0 to measure
    with pytest.raises(ValueError, match="an array U needs weight_shape"):
        export_layer(U)


# ------------------------------------------------------------------ the learner
def soft_sharing(pull=True):
    return {"0.weight": Residual(DenseSharing(3), pull=pull)}


SOFT = dict(sharing=soft_sharing(), n_support=3, inner_steps=2, n_meta_steps=30,
            meta_batch_size=8, random_state=0)


def soft_tasks(n_tasks=40, **breaking):
    breaking = breaking or {"symmetry_breaking": 0.3, "shared_breaking": 0.5}
    return make_translation_tasks(n_tasks=n_tasks, n_samples=8, n_features=10,
                                  random_state=0, **breaking)


def test_make_estimator_adapts_v_and_R_as_the_learner_did():
    X, y = soft_tasks()
    learner = MetaSymmetryLearner(**SOFT).fit(X[:30], y[:30])
    assert {"0.weight.residual"} < set(learner.symmetry_.inner_lrs)
    Xt, yt = (torch.tensor(a[30:32], dtype=torch.float32) for a in (X, y))
    engine = adapted_outputs(learner.model_, TaskBatch(Xt[:, :3], yt[:, :3], Xt[:, 3:],
                                                       yt[:, 3:]),
                             learner._inner_loop()).numpy()
    for t in range(2):
        reg = learner.make_estimator().fit(X[30 + t, :3], y[30 + t, :3])
        np.testing.assert_allclose(reg.predict(X[30 + t, 3:]), engine[t], atol=1e-5)


def test_symmetry_strength_reads_the_symmetry_of_the_tasks():
    exact, free = soft_tasks(120, symmetry_breaking=0.0), soft_tasks(120, symmetry_breaking=3.0)
    # after 150 steps the exact tasks' strength is 0.90, the broken ones' 0.28
    params = {**SOFT, "sharing": None, "layer": "msr_residual", "n_filters": 3,
              "inner_steps": 1, "n_support": 5, "n_meta_steps": 150}
    strengths = {}
    for name, (X, y) in (("exact", exact), ("broken", free)):
        learner = MetaSymmetryLearner(**params).fit(X[:100], y[:100])
        strengths[name] = learner.symmetry_strength(X[100:], y[100:]).loc[0]
        j = learner.model_.inner_names.index("0.weight.residual")
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

    from msr_sklearn.training.callbacks import Checkpoint

    X, y = soft_tasks()
    path = tmp_path / "soft.msr"
    with pytest.raises(RuntimeError, match="crash"):
        MetaSymmetryLearner(**SOFT, callbacks=[Checkpoint(path, interval=10, resume=True),
                                               Crash(15)]).fit(X, y)
    resumed = MetaSymmetryLearner(**SOFT, callbacks=[Checkpoint(path, interval=10,
                                                                resume=True)]).fit(X, y)
    assert_same_run(resumed, MetaSymmetryLearner(**SOFT).fit(X, y))
    assert LearnedSymmetry.load(path).policy["0.weight"]["pull"] is True


def test_a_warm_start_continues_the_residual_and_refuses_a_changed_pull():
    X, y = soft_tasks()
    learner = MetaSymmetryLearner(**SOFT, warm_start=True).fit(X, y)
    r0 = learner.symmetry_.initial_residual(0)
    learner.fit(X, y)
    assert learner.n_iter_ == 60
    assert not np.allclose(learner.symmetry_.initial_residual(0), r0)
    learner.set_params(sharing=soft_sharing(pull=False))
    with pytest.raises(ValueError, match="warm_start continues the fitted network, but "
                                         "sharing changed"):
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


@pytest.mark.parametrize("params,error,match", [
    # the residual flags are retired: the sharing says it now
    ({"residual_pull": True}, TypeError, r"sharing=Residual\(\.\.\., pull=True\)"),
    ({"residual_lr": 0.1}, TypeError, r"sharing=Residual\(\.\.\., inner_lr=\.\.\.\)"),
    ({"conv_layer": "conv2d_residual"}, TypeError, "no longer takes conv_layer="),
    ({"sharing": {"0.weight": Residual(DenseSharing(3), inner_lr=-0.1)}}, ValueError,
     "Residual's inner_lr must be >= 0 or None; got -0.1"),
    ({"layer": "msr_residual_pull"}, ValueError, "'layer' parameter of MetaSymmetryLearner"),
])
def test_bad_soft_symmetry_settings_name_the_parameter(params, error, match):
    X, y = soft_tasks(8)
    with pytest.raises(error, match=match):
        MetaSymmetryLearner(**{**SOFT, "n_meta_steps": 1, **params}).fit(X, y)
