import pytest
import torch

from msr_sklearn.engine.reference import reference_task_losses
from msr_sklearn.datasets import make_translation_tasks
from msr_sklearn.engine import (
    MetaModel,
    TaskBatch,
    adapted_outputs,
    evaluate_task_losses,
    make_meta_optimizer,
    meta_step,
    task_losses,
)
from msr_sklearn.nn import build_network


def make_batch(loss, n_tasks=5, n_support=3, n_query=4, n_features=6, n_outputs=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_tasks, n_support + n_query, n_features, generator=g, dtype=torch.float64)
    if loss == "mse":
        y = torch.randn(n_tasks, n_support + n_query, n_outputs, generator=g,
                        dtype=torch.float64)
    else:
        y = torch.randint(0, n_outputs, (n_tasks, n_support + n_query), generator=g)
    return TaskBatch(x[:, :n_support], y[:, :n_support], x[:, n_support:], y[:, n_support:])


def make_model(layer="msr", seed=0, **kwargs):
    """A small network; ``layer="<kind>+pull"`` adds residual pulls, ``"conv_residual"``
    is an MSR-Conv front-end with free per-copy filters (on 3x3 images: ``n_features=9``)."""
    layer, _, pull = layer.partition("+")
    if pull:
        kwargs["residual_pull"] = True
    if layer == "conv_residual":
        kwargs.update(layer="msr", conv_channels=(4,), conv_layer="msr_conv2d_residual",
                      n_copies=2, kernel_size=2)
        n_features = 9
    else:
        kwargs["layer"] = layer
        n_features = 6
    net = build_network(n_features, 3, hidden_layer_sizes=(5,), n_filters=4,
                        activation="tanh", random_state=seed, **kwargs)
    # lively initial filters (and R0) so every term of the gradient is exercised
    with torch.no_grad():
        for p in net.initial_inner_parameters().values():
            p.normal_(0, 0.5, generator=torch.Generator().manual_seed(seed))
        for name, p in net.named_parameters():
            if name.endswith("log_pull"):
                p.fill_(-0.7)
    return MetaModel(net.double(), inner_lr=0.3).double()


def grads_of(model, losses):
    params = [p for p in model.parameters() if p.requires_grad]
    # a pull weight has no path to first-order losses: its gradient is zero
    grads = torch.autograd.grad(losses.sum(), params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("inner_steps", [1, 3])
@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("layer", ["msr", "msr_kron", "msr_residual", "msr_kron_residual",
                                   "msr_residual+pull", "conv_residual+pull"])
@pytest.mark.parametrize("symmetry_gradient", ["first_order", "second_order"])
def test_vectorized_engine_equals_per_task_loop(loss, inner_steps, first_order, layer,
                                                symmetry_gradient):
    model = make_model(layer)
    batch = make_batch(loss, n_features=model.network.in_features)
    kwargs = dict(loss=loss, inner_steps=inner_steps, first_order=first_order,
                  symmetry_gradient=symmetry_gradient)
    fast = task_losses(model, batch, **kwargs)
    slow = reference_task_losses(model, batch, **kwargs)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-7)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("sharing" in n for n in names) and "inner_lrs" in names
    if "residual" in layer:
        assert any(n.endswith("residual") for n in model.inner_names)
    if "pull" in layer:
        assert any(n.endswith("log_pull") for n in names)
    for name, gf, gs in zip(names, grads_of(model, fast), grads_of(model, slow)):
        torch.testing.assert_close(gf, gs, rtol=1e-5, atol=1e-7, msg=name)


def test_first_order_drops_second_order_terms():
    model = make_model()
    batch = make_batch("mse")
    second = grads_of(model, task_losses(model, batch, inner_steps=2,
                                         symmetry_gradient="second_order"))
    first = grads_of(model, task_losses(model, batch, inner_steps=2, first_order=True))
    # same query losses, different meta-gradients
    assert any((a - b).abs().max() > 1e-4 for a, b in zip(second, first))


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_first_order_symmetry_gradient_drops_only_the_reads_second_order_terms(loss):
    model = make_model()
    batch = make_batch(loss)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    kwargs = dict(loss=loss, inner_steps=2)
    held = grads_of(model, task_losses(model, batch, symmetry_gradient="first_order", **kwargs))
    second = grads_of(model, task_losses(model, batch, symmetry_gradient="second_order",
                                         **kwargs))
    first = grads_of(model, task_losses(model, batch, first_order=True, **kwargs))
    sharing = [i for i, n in enumerate(names) if "sharing" in n]
    assert len(sharing) == 2 and len(sharing) < len(names)
    for i, name in enumerate(names):
        if i not in sharing:  # v0, biases, inner lrs: every second-order term
            torch.testing.assert_close(held[i], second[i], rtol=1e-6, atol=1e-9, msg=name)
        else:  # U: neither the full second-order gradient nor the first-order one
            assert (held[i] - second[i]).abs().max() > 1e-4, name
            assert (held[i] - first[i]).abs().max() > 1e-4, name


def test_first_order_symmetry_gradient_of_one_layer_from_zero_filters_is_first_order():
    # one linear layer with v0 = 0: the support gradient does not depend on U but through
    # the read U^T dL/dW, so holding the read leaves exactly the first-order term
    net = build_network(6, 3, n_filters=4, random_state=0).double()
    with torch.no_grad():
        for p in net.initial_inner_parameters().values():
            p.zero_()
    model = MetaModel(net, inner_lr=0.3).double()
    batch = make_batch("mse")
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    u = names.index("network.layers.0.sharing.basis")
    held = grads_of(model, task_losses(model, batch, symmetry_gradient="first_order"))
    first = grads_of(model, task_losses(model, batch, first_order=True))
    second = grads_of(model, task_losses(model, batch, symmetry_gradient="second_order"))
    torch.testing.assert_close(held[u], first[u], rtol=1e-6, atol=1e-9)
    assert (second[u] - first[u]).abs().max() > 1e-4


def test_symmetry_gradient_is_validated():
    model = make_model()
    with pytest.raises(ValueError, match="symmetry_gradient must be one of"):
        task_losses(model, make_batch("mse"), symmetry_gradient="exact")


def test_query_mask_equals_unpadded_tasks():
    model = make_model()
    batch = make_batch("mse", n_query=6)
    mask = torch.ones(5, 6, dtype=torch.bool)
    mask[0, 4:] = False  # task 0 has only 4 real query rows
    mask[3, 1:] = False
    masked = task_losses(model, batch._replace(query_mask=mask))
    for t, n_real in [(0, 4), (3, 1), (1, 6)]:
        alone = task_losses(model, TaskBatch(batch.x_support[t:t + 1], batch.y_support[t:t + 1],
                                             batch.x_query[t:t + 1, :n_real],
                                             batch.y_query[t:t + 1, :n_real]))
        torch.testing.assert_close(masked[t], alone[0])


def test_chunked_evaluation_keeps_no_graph_and_matches():
    model = make_model()
    batch = make_batch("mse", n_tasks=11)
    full = task_losses(model, batch).detach()
    for chunk in (1, 4, 64):
        losses = evaluate_task_losses(model, batch, chunk_size=chunk)
        assert not losses.requires_grad
        torch.testing.assert_close(losses, full)
    out = adapted_outputs(model, batch, chunk_size=3)
    assert out.shape == (11, 4, 3) and out.grad_fn is None


def test_meta_step_updates_every_meta_parameter():
    model = make_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = make_meta_optimizer(model, meta_lr=1e-2)
    meta_step(model, opt, make_batch("mse"))
    for n, p in model.named_parameters():
        assert not torch.equal(before[n], p), n


def test_learn_inner_lr_false_freezes_the_learning_rates():
    net = build_network(6, 3, layer="msr", n_filters=4, random_state=0)
    model = MetaModel(net, inner_lr=0.05, learn_inner_lr=False)
    opt = make_meta_optimizer(model)
    batch = make_batch("mse")
    meta_step(model, opt, TaskBatch(*(t.float() for t in batch[:4])))
    assert torch.all(model.inner_lrs == 0.05)


def translation_batches(n_tasks, seed):
    X, y = make_translation_tasks(n_tasks, rank=1, random_state=seed)
    return torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)


def train_and_score(layer, n_steps, seed=0, meta_lr=1e-3):
    """Meta-train on rank-1 translation tasks (1 support, 19 query), score held-out tasks."""
    X, y = translation_batches(2300, seed)
    Xtr, ytr, Xte, yte = X[:2000], y[:2000], X[2000:], y[2000:]
    model = MetaModel(build_network(70, 68, layer=layer, n_filters=3, bias=False,
                                    random_state=seed), inner_lr=0.1)
    opt = make_meta_optimizer(model, meta_lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(n_steps):
        idx = torch.randint(0, 2000, (32,), generator=g)
        b = TaskBatch(Xtr[idx, :1], ytr[idx, :1], Xtr[idx, 1:], ytr[idx, 1:])
        meta_step(model, opt, b)
    test = TaskBatch(Xte[:, :1], yte[:, :1], Xte[:, 1:], yte[:, 1:])
    return model, float(evaluate_task_losses(model, test).mean())


def test_msr_meta_learns_translation_far_below_maml():
    msr_model, msr = train_and_score("msr", 500)
    _, maml = train_and_score("dense", 500)
    # zero prediction gives ~3; a conv under this protocol floors at ~0.17
    assert maml > 2.0
    assert msr < 0.3
    assert maml / msr > 7
    # and the learned U spans the convolution's band (largest principal angle small)
    from scipy.linalg import subspace_angles

    from msr_sklearn.datasets import translation_sharing

    u = msr_model.network.layers[0].sharing.matrix().detach().numpy()
    angle = subspace_angles(u, translation_sharing(70, 3)).max()
    assert angle < 0.2  # radians
