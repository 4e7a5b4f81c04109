import copy

import pytest
import torch

from msr_sklearn.meta import MetaModel, make_meta_optimizer
from msr_sklearn.nn import build_network
from msr_sklearn.optim import MetaAdam


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
    model = MetaModel(build_network(6, 3, n_filters=4, random_state=0))
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
    model = MetaModel(build_network(6, 3, n_filters=4, random_state=0))
    opt = make_meta_optimizer(model)
    assert [g["second_moment"] for g in opt.param_groups] == ["element"]
    with pytest.raises(ValueError, match="meta_optimizer must be one of"):
        make_meta_optimizer(model, meta_optimizer="sgd")
    with pytest.raises(ValueError, match="second_moment must be"):
        MetaAdam([{"params": [torch.nn.Parameter(torch.zeros(1))], "second_moment": "row"}])
