import copy

import pytest
import torch

from msr_sklearn.engine import MetaModel, make_meta_optimizer
from msr_sklearn.models import MLP
from msr_sklearn.engine import MetaAdam


def test_tensor_second_moment_moves_entries_in_proportion_to_their_gradient():
    p = torch.nn.Parameter(torch.zeros(3))
    q = torch.nn.Parameter(torch.zeros(3))
    opt = MetaAdam([{"params": [p], "second_moment": "tensor"}, {"params": [q]}], lr=0.01)
    g = torch.tensor([1.0, 0.1, 0.01])
    for _ in range(5):
        p.grad, q.grad = g.clone(), g.clone()
        opt.step()
    # per tensor: steps proportional to the gradient; Adam: every entry moves by ~lr
    torch.testing.assert_close(p.detach() / p.detach()[0], g)
    torch.testing.assert_close(q.detach(), torch.full((3,), -0.05), atol=1e-6, rtol=0)


def test_state_dict_round_trip_continues_identically():
    model = _model(6, 3, n_filters=4)
    opt = make_meta_optimizer(model, 1e-2, meta_optimizer="msr_adam")
    gen = torch.Generator().manual_seed(0)

    def step(model, opt):
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()

    for _ in range(3):
        step(model, opt)
    twin = copy.deepcopy(model)
    twin_opt = make_meta_optimizer(twin, 1e-2, meta_optimizer="msr_adam")
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    gen_state = gen.get_state()
    step(model, opt)
    gen.set_state(gen_state)
    step(twin, twin_opt)
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_plain_adam_and_bad_names():
    model = _model(6, 3, n_filters=4)
    opt = make_meta_optimizer(model)
    assert [g["second_moment"] for g in opt.param_groups] == ["element"]
    with pytest.raises(ValueError, match="meta_optimizer must be one of"):
        make_meta_optimizer(model, meta_optimizer="sgd")
    with pytest.raises(ValueError, match="second_moment must be"):
        MetaAdam([{"params": [torch.nn.Parameter(torch.zeros(1))], "second_moment": "col"}])


def test_row_second_moment_and_trust_ratio():
    basis = torch.nn.Parameter(torch.zeros(2, 3))
    opt = MetaAdam([{"params": [basis], "second_moment": "row"}], lr=0.1)
    basis.grad = torch.tensor([[1.0, 0.5, 0.0], [0.01, 0.005, 0.0]])
    opt.step()  # each row (a column of U) normalized by its own second moment
    torch.testing.assert_close(basis.detach()[0], basis.detach()[1])
    assert opt.state[basis]["exp_avg_sq"].shape == (2, 1)
    restored = MetaAdam([{"params": [basis], "second_moment": "row"}], lr=0.1)
    restored.load_state_dict(opt.state_dict())  # the row shape is a valid saved state
    big = torch.nn.Parameter(torch.ones(100))
    opt = MetaAdam([{"params": [big], "trust_ratio": 0.1}], lr=0.1)
    big.grad = torch.ones(100)
    opt.step()  # Adam's step (0.1 per entry, norm 1) is within the bound 0.1 * ||p|| = 1
    torch.testing.assert_close(big.detach(), torch.full((100,), 0.9))
    small = torch.nn.Parameter(torch.full((100,), 0.1))
    opt = MetaAdam([{"params": [small], "trust_ratio": 0.1}], lr=0.1)
    small.grad = torch.ones(100)
    opt.step()  # bounded to 0.1 * ||p|| = 0.1: each entry moves by 0.01
    torch.testing.assert_close(small.detach(), torch.full((100,), 0.09))


def test_row_sparsity_zeroes_unused_rows_and_shrinks_the_others():
    basis = torch.nn.Parameter(torch.tensor([[3.0, 0.02, 0.0], [4.0, 0.0, 0.05]]))  # (k, n_w)
    opt = MetaAdam([{"params": [basis], "row_sparsity": 0.1, "second_moment": "tensor"}],
                   lr=1.0)
    basis.grad = torch.zeros_like(basis)
    opt.step()  # no gradient: only the proximal step, threshold lr * 0.1 per row (column)
    torch.testing.assert_close(basis.detach()[:, 0], torch.tensor([3.0, 4.0]) * (1 - 0.1 / 5))
    assert torch.all(basis.detach()[:, 1:] == 0)  # norms 0.02 and 0.05 are below 0.1
    with pytest.raises(ValueError, match="row_sparsity must be >= 0"):
        MetaAdam([{"params": [basis], "row_sparsity": -1.0}])


def test_sharing_sparsity_acts_on_dense_sharings_only():
    model = _model(6, 3, hidden_layer_sizes=(4,), n_filters=2)
    opt = make_meta_optimizer(model, meta_optimizer="adam", sharing_sparsity=0.2)
    assert [g["row_sparsity"] for g in opt.param_groups] == [0.2, 0.2, 0.0]
    assert [g["second_moment"] for g in opt.param_groups] == ["element"] * 3  # plain Adam
    kron = _model(6, 4, layer="msr_kron", n_filters=4)
    opt = make_meta_optimizer(kron, meta_optimizer="msr_adam", sharing_sparsity=0.2)
    assert all(g["row_sparsity"] == 0 for g in opt.param_groups)
    with pytest.raises(ValueError, match="sharing_sparsity must be >= 0"):
        make_meta_optimizer(model, sharing_sparsity=-0.1)


def test_element_mode_is_torch_adam_step_for_step():
    """``second_moment="element"`` is Adam: the same iterates as ``torch.optim.Adam``
    (and its state loads into torch's), so ``meta_optimizer="adam"`` is the paper's."""
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(5, 3, generator=gen), torch.randn(4, generator=gen)]
    ours = [torch.nn.Parameter(t.clone()) for t in start]
    theirs = [torch.nn.Parameter(t.clone()) for t in start]
    opt_ours = MetaAdam(ours, lr=0.05, betas=(0.8, 0.99), eps=1e-6)
    opt_theirs = torch.optim.Adam(theirs, lr=0.05, betas=(0.8, 0.99), eps=1e-6)
    for _ in range(20):
        grads = [torch.randn(t.shape, generator=gen) for t in start]
        for params, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            opt.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    opt_theirs.load_state_dict(opt_ours.state_dict())


def _model(n_features, n_outputs, hidden_layer_sizes=(), layer="msr", n_filters=4):
    torch.manual_seed(0)
    net = MLP(n_features, n_outputs, hidden_layer_sizes)
    return MetaModel(net, net.default_sharing(layer, n_filters),
                     generator=torch.Generator().manual_seed(0))
