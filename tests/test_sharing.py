"""Sharings as parametrizations of one weight, policies by name, and plain-torch use."""

import copy
import pickle

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from msr_sklearn.groups import compare_subspaces, grid_group
from msr_sklearn.sharing import (
    ConvFilterSharing,
    DenseSharing,
    FixedSharing,
    KroneckerSharing,
    Residual,
    attach_sharing,
    exact_lifting_sharing,
    resolve_policy,
    sharing_from_spec,
    sharing_spec,
)


def cyclic_group_sharing(n):
    """Proposition 1's U^G for C_n on R^n: stacked shift matrices, shape (n*n, n)."""
    u = np.zeros((n, n, n))
    for j in range(n):  # row j of W is the filter shifted by j
        for i in range(n):
            u[j, i, (i - j) % n] = 1.0
    return torch.tensor(u.reshape(n * n, n), dtype=torch.float64)


def relative_shift_error(weight, n, n_samples=16):
    x = torch.randn(n_samples, n, dtype=torch.float64)
    fx = x @ weight.T
    f_shifted = torch.roll(x, 1, dims=-1) @ weight.T
    return float(((f_shifted - torch.roll(fx, 1, dims=-1)).norm() / fx.norm()).detach())


def test_proposition1_cyclic_sharing_is_shift_equivariant():
    torch.manual_seed(0)
    n = 8
    cyclic = FixedSharing(cyclic_group_sharing(n)).bind((n, n)).double()
    for _ in range(5):
        assert relative_shift_error(cyclic(torch.randn(n, dtype=torch.float64)), n) < 1e-5
    dense = DenseSharing(n_filters=n).bind((n, n)).double()
    assert relative_shift_error(dense(torch.randn(n, dtype=torch.float64)), n) > 0.1


@pytest.mark.parametrize("shape,factors", [((6, 5), (2, 3)), ((4, 3, 5), (2, 1, 3))])
def test_kronecker_weight_equals_materialized_kron(shape, factors):
    torch.manual_seed(0)
    sharing = KroneckerSharing(factors).bind(shape).double()
    u = sharing.factors[0]
    for f in sharing.factors[1:]:
        u = torch.kron(u, f)
    v = torch.randn(4, sharing.n_filters, dtype=torch.float64)
    expected = (v @ u.T).reshape(4, *shape)
    torch.testing.assert_close(sharing(v), expected)
    torch.testing.assert_close(sharing.matrix(), u)
    # factors are tall and non-square; storage is far below a dense U
    assert sum(f.numel() for f in sharing.factors) < u.numel()


def test_kronecker_memory_for_large_layers():
    sharing = KroneckerSharing((4, 8)).bind((784, 784))
    assert sharing.n_filters == 32
    assert sum(p.numel() for p in sharing.parameters()) == 784 * 4 + 784 * 8
    assert KroneckerSharing(n_filters=32).bind((784, 784)).factor_filters == (4, 8)


SHARINGS = {
    "dense": lambda: DenseSharing(5),
    "kron": lambda: KroneckerSharing((3, 2)),
    "fixed": lambda: FixedSharing(torch.randn(12, 2)),
    "identity": lambda: FixedSharing(),
    "conv": lambda: ConvFilterSharing(n_copies=1),
    "residual": lambda: Residual(DenseSharing(3)),
}


@pytest.mark.parametrize("kind", sorted(SHARINGS))
def test_forward_matches_matrix_and_right_inverse_recovers_the_filters(kind):
    torch.manual_seed(1)
    shape = (3, 4, 1, 1) if kind == "conv" else (3, 4)
    sharing = SHARINGS[kind]().bind(shape).double()
    v = torch.randn(2, sharing.n_filters, dtype=torch.float64)
    if kind == "residual":
        r = torch.randn(2, *shape, dtype=torch.float64)
        w = sharing(v, r)
        torch.testing.assert_close(w, (v @ sharing.matrix().T).reshape(2, *shape) + r)
        v_back, r_back = sharing.right_inverse(w)
        # the residual takes what span(U) cannot: the weight is rebuilt exactly
        torch.testing.assert_close(sharing(v_back, r_back), w)
        return
    w = sharing(v)
    torch.testing.assert_close(w, (v @ sharing.matrix().T).reshape(2, *shape))
    if sharing.n_filters <= sharing.n_weights and kind != "fixed":
        torch.testing.assert_close(sharing.right_inverse(w), v)
    else:  # a given U of 2 columns: right_inverse is the least-squares projection
        torch.testing.assert_close(sharing(sharing.right_inverse(w)), w)


def test_dense_sharing_starts_with_orthonormal_columns():
    u = DenseSharing(3).bind((68, 70), torch.Generator().manual_seed(0)).matrix()
    torch.testing.assert_close(u.T @ u, torch.eye(3), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["dense", "kron", "conv"])
def test_held_weight_has_the_values_and_the_u_gradient_but_reads_a_detached_u(kind):
    torch.manual_seed(0)
    shape = (4, 3, 2, 2) if kind == "conv" else (4, 6)
    sharing = SHARINGS[kind]().bind(shape).double()
    v = torch.randn(2, sharing.n_filters, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2, *shape, dtype=torch.float64)
    full, held = sharing(v), sharing.held(v)
    torch.testing.assert_close(full, held)
    params = list(sharing.parameters())
    grad_full = torch.autograd.grad((full * target).sum(), params)
    grad_held = torch.autograd.grad((held * target).sum(), params)
    for a, b in zip(grad_full, grad_held):
        torch.testing.assert_close(a, b)
    (read,) = torch.autograd.grad((sharing.held(v) * target).sum(), v, create_graph=True)
    assert not read.requires_grad  # U^T target with U held: no path back into U
    (read_full,) = torch.autograd.grad((sharing(v) * target).sum(), v, create_graph=True)
    assert read_full.requires_grad


def test_templates_bind_fresh_and_bound_sharings_copy():
    template = DenseSharing(3)
    assert template.weight_shape is None and not list(template.parameters())
    a, b = template.bind((4, 5)), template.bind((4, 5))
    assert a.weight_shape == (4, 5) and not torch.equal(a.basis, b.basis)
    assert torch.equal(a.bind((4, 5)).basis, a.basis)  # bound: copied as it is
    with pytest.raises(ValueError, match=r"bound to weights of shape \(4, 5\), not \(5, 4\)"):
        a.bind((5, 4))
    with pytest.raises(RuntimeError, match="is a template: bind it"):
        template.n_weights


def test_sharings_refuse_weights_they_cannot_build_with_a_clear_message():
    with pytest.raises(ValueError, match=r"more filters than the 12 weights"):
        DenseSharing(13).bind((3, 4))
    with pytest.raises(ValueError, match=r"must have shape \(12, k\)"):
        FixedSharing(torch.zeros(10, 2)).bind((3, 4))
    with pytest.raises(ValueError, match="n_copies=3 must be a positive integer that divides"):
        ConvFilterSharing(n_copies=3).bind((8, 1, 3, 3))
    with pytest.raises(ValueError, match="shares a convolution's filters"):
        ConvFilterSharing(n_copies=2).bind((8, 4))
    with pytest.raises(ValueError, match="cannot be split"):
        KroneckerSharing(n_filters=7).bind((4, 2))
    with pytest.raises(TypeError, match="Residual wraps one sharing"):
        Residual(Residual(DenseSharing(2)))


def test_conv_filter_sharing_equals_the_dense_weight_of_its_convolution():
    torch.manual_seed(0)
    sharing = ConvFilterSharing(2, factor_filters=(2, 2, 5)).bind((4, 2, 3, 3)).double()
    v = torch.randn(sharing.n_filters, dtype=torch.float64)
    # the filter tensor is exactly U v, reshaped, in torch's conv layout
    torch.testing.assert_close(sharing(v), (sharing.matrix() @ v).reshape(4, 2, 3, 3))
    x = torch.randn(3, 2, 5, 4, dtype=torch.float64)
    conv = nn.Conv2d(2, 4, 3, bias=False).double()
    out = torch.func.functional_call(conv, {"weight": sharing(v)}, (x,))
    torch.testing.assert_close(out, F.conv2d(x, sharing(v)))


def test_msr_conv_expresses_exact_rotated_copies():
    torch.manual_seed(0)
    sharing = exact_lifting_sharing("c4", n_fields=2).double()
    assert not any(p.requires_grad for p in sharing.parameters())  # an oracle is fixed
    v = torch.randn(sharing.n_filters, dtype=torch.float64)
    w = sharing(v).reshape(2, 4, 3, 3)
    for r in range(4):
        torch.testing.assert_close(w[:, r], torch.rot90(w[:, 0], r, dims=(-2, -1)))
    # lifting equivariance: rotating the input rotates each map and cycles the copies
    x = torch.randn(3, 1, 7, 7, dtype=torch.float64)
    out = F.conv2d(x, sharing(v)).reshape(3, 2, 4, 5, 5)
    out_rot = F.conv2d(torch.rot90(x, 1, dims=(-2, -1)), sharing(v)).reshape(3, 2, 4, 5, 5)
    expected = torch.rot90(torch.roll(out, 1, dims=2), 1, dims=(-2, -1))
    assert (out_rot - expected).norm() / out.norm() < 1e-10


def _regular_group_conv_factor(kernel_size=3):
    """``S`` of a C4 group convolution between regular fields: output copy ``g`` sees
    input copy ``h`` through ``rot90(w[(h - g) % 4], g)``; shape ``(4*4*k², 4*k²)``."""
    n = 4 * kernel_size ** 2
    latent = torch.eye(n, dtype=torch.float64).reshape(n, 4, kernel_size, kernel_size)
    blocks = [[torch.rot90(latent[:, (h - g) % 4], g, dims=(-2, -1)) for h in range(4)]
              for g in range(4)]
    return torch.stack([torch.stack(row, 1) for row in blocks], 1).reshape(n, -1).T


def test_coupled_copies_express_a_group_convolution_between_regular_fields():
    torch.manual_seed(0)
    lift = exact_lifting_sharing("c4", n_fields=1).double()
    sharing = ConvFilterSharing(n_copies=4, in_copies=4).bind((8, 4, 3, 3)).double()
    assert [tuple(f.shape) for f in sharing.factors] == [(2, 2), (1, 1), (144, 36)]
    with torch.no_grad():
        sharing.factors[0].copy_(torch.eye(2))
        sharing.factors[1].fill_(1.0)
        sharing.factors[2].copy_(_regular_group_conv_factor())
    v_lift = torch.randn(lift.n_filters, dtype=torch.float64)
    v = torch.randn(sharing.n_filters, dtype=torch.float64)

    def net(x):
        return F.conv2d(torch.relu(F.conv2d(x, lift(v_lift))), sharing(v)).reshape(3, 2, 4, 5, 5)

    # rotating the image rotates every map and cycles the copies of every field
    x = torch.randn(3, 1, 9, 9, dtype=torch.float64)
    expected = torch.rot90(torch.roll(net(x), 1, dims=2), 1, dims=(-2, -1))
    assert (net(torch.rot90(x, 1, dims=(-2, -1))) - expected).norm() / expected.norm() < 1e-10
    exact = grid_group(3, "c4", in_rep="regular", out_rep="regular", out_size=1)
    comparison = compare_subspaces(_regular_group_conv_factor().numpy(), exact.sharing_basis())
    assert comparison.chordal_distance < 1e-8


def test_conv_init_random_starts_the_copies_of_a_field_different():
    v = torch.randn(18)
    for init, equal in (("identity", True), ("random", False)):
        w = ConvFilterSharing(8, init=init).bind((16, 1, 3, 3))(v)
        assert torch.allclose(w[0], w[1]) == equal  # copies 0 and 1 of field 0
    with pytest.raises(ValueError, match="init must be 'random' or 'identity'"):
        ConvFilterSharing(8, init="zeros").bind((16, 1, 3, 3))


def test_square_per_axis_factors_cannot_rotate_copies():
    # one copy per field and a square spatial factor shared by all output channels
    # cannot make channel 1 a rotation of channel 0 for every filter (paper §2.4)
    torch.manual_seed(0)
    sharing = ConvFilterSharing(n_copies=1, init="identity").bind((2, 1, 3, 3)).double()
    w = sharing(torch.randn(sharing.n_filters, dtype=torch.float64))
    assert (w[1] - torch.rot90(w[0], 1, dims=(-2, -1))).norm() > 0.1


def test_residual_pull_penalty_and_its_parameters():
    soft = Residual(DenseSharing(2), pull=True, inner_lr=0.0).bind((3, 4))
    assert sorted(n for n, _ in soft.named_parameters()) == ["log_pull", "sharing.basis"]
    assert soft.symmetry_parameters() == [soft.sharing.basis]  # the pull is not U
    inner = {"residual": torch.ones(5, 3, 4)}
    penalty = soft.penalty(inner, {"residual": torch.zeros(3, 4)})  # exp(0) * 12 per task
    assert penalty.tolist() == [12.0] * 5
    (g,) = torch.autograd.grad(penalty.sum(), soft.log_pull)
    assert float(g) == 60.0  # d/d log_pull of exp(log_pull) * 60
    assert Residual(DenseSharing(2)).bind((3, 4)).penalty(inner, inner) is None


# ----------------------------------------------------------------------------- policy
def test_the_policy_gives_every_parameter_exactly_one_role_first_match_wins():
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2), nn.LayerNorm(2))
    roles = resolve_policy(net, {"0.weight": DenseSharing(5), "*.weight": "outer",
                                 "3.*": "frozen"})
    assert [(r.name, r.role, r.pattern) for r in roles] == [
        ("0.weight", "shared", "0.weight"), ("0.bias", "inner", None),
        ("2.weight", "outer", "*.weight"), ("2.bias", "inner", None),
        ("3.weight", "outer", "*.weight"), ("3.bias", "frozen", "3.*")]
    assert roles[0].sharing.weight_shape == (3, 4)


def test_a_wildcard_sharing_passes_over_vectors_a_name_does_not():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.Conv2d(4, 4, 3))
    roles = {r.name: r.role for r in resolve_policy(
        net, {"*.weight": ConvFilterSharing(n_copies=2)})}
    assert roles == {"0.weight": "shared", "0.bias": "inner", "1.weight": "inner",
                     "1.bias": "inner", "2.weight": "shared", "2.bias": "inner"}
    with pytest.raises(ValueError, match="'1.weight' gives 1.weight"):
        resolve_policy(net, {"1.weight": ConvFilterSharing(n_copies=2)})
    with pytest.raises(ValueError, match=r"'1\.\*' matches no parameter .* it can apply to"):
        resolve_policy(net, {"1.*": DenseSharing(2)})
    # a role is for any parameter
    assert resolve_policy(net, {"1.*": "frozen"})[2].role == "frozen"


def test_policy_errors_name_the_pattern_the_parameter_and_the_shapes():
    net = nn.Sequential(nn.Linear(4, 3), nn.Conv2d(1, 2, 3))
    with pytest.raises(ValueError, match=r"'head\.\*' matches no parameter of Sequential it "
                                         r"can apply to; "
                                         r"its parameters are \['0.weight'"):
        resolve_policy(net, {"head.*": "inner"})
    with pytest.raises(ValueError, match=r"'0.weight' gives 0.weight \(shape \(3, 4\)\) the "
                                         r"sharing .*ConvFilterSharing.* cannot build it"):
        resolve_policy(net, {"0.weight": ConvFilterSharing(2)})
    with pytest.raises(ValueError, match="a role must be one of"):
        resolve_policy(net, {"0.weight": "learned"})
    with pytest.raises(TypeError, match="must be a Sharing object"):
        resolve_policy(net, {"0.weight": 3})
    with pytest.raises(TypeError, match="sharing must be a dict"):
        resolve_policy(net, [("0.weight", "inner")])


# ------------------------------------------------------------------- plain torch
def test_attach_sharing_parametrizes_any_module_and_only_v_trains():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(8 * 25, 2))
    lift = exact_lifting_sharing("c4", n_fields=2)
    attach_sharing(net, "0.weight", lift, inner={"filters": torch.randn(lift.n_filters)})
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    assert "0.parametrizations.weight.original" in trainable
    assert not any("factors" in n for n in trainable)
    # the module's weight is U v: an exact lifting convolution, trained by any loop
    w = net[0].weight.reshape(2, 4, 3, 3)
    torch.testing.assert_close(w[:, 1], torch.rot90(w[:, 0], 1, dims=(-2, -1)))
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    loss = net(torch.randn(4, 1, 5, 5)).pow(2).sum()
    loss.backward()
    opt.step()
    w = net[0].weight.reshape(2, 4, 3, 3)
    torch.testing.assert_close(w[:, 1], torch.rot90(w[:, 0], 1, dims=(-2, -1)))
    copy.deepcopy(net)
    with pytest.raises(ValueError, match="has no parameter 'head.weight'"):
        attach_sharing(net, "head.weight", DenseSharing(2))


def test_attach_a_residual_gives_two_inner_tensors():
    net = nn.Linear(4, 3)
    attach_sharing(net, "weight", Residual(DenseSharing(2)))
    names = [n for n, p in net.named_parameters() if p.requires_grad]
    assert names == ["bias", "parametrizations.weight.original0",
                     "parametrizations.weight.original1"]


# ----------------------------------------------------------------------------- specs
@pytest.mark.parametrize("kind", sorted(SHARINGS))
def test_specs_are_json_and_rebuild_the_template(kind):
    import json

    template = SHARINGS[kind]()
    spec = sharing_spec(template)
    assert json.loads(json.dumps(spec)) == spec
    rebuilt = sharing_from_spec(spec)
    assert type(rebuilt) is type(template)
    shape = (3, 4, 1, 1) if kind == "conv" else (3, 4)
    bound = template.bind(shape)
    again = sharing_from_spec(sharing_spec(bound)).bind(shape)
    again.load_state_dict(bound.state_dict())
    v = torch.randn(bound.n_filters)
    args = (v,) if kind != "residual" else (v, torch.zeros(shape))
    torch.testing.assert_close(again(*args), bound(*args))
    pickle.loads(pickle.dumps(bound))


def test_a_user_sharing_in_a_spec_needs_permission_to_import():
    spec = {"kind": "torch.nn:Linear"}
    with pytest.raises(ValueError, match="allow_import=True if you trust the file"):
        sharing_from_spec(spec)
    with pytest.raises(ValueError, match="is not a Sharing class"):
        sharing_from_spec(spec, allow_import=True)
    with pytest.raises(ValueError, match="unknown|module:QualifiedName"):
        sharing_from_spec({"kind": "Nope"})
