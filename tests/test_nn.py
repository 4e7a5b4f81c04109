import numpy as np
import pytest
import torch
from torch.nn import functional as F

from msr_sklearn.datasets import translation_sharing
from msr_sklearn.groups import compare_subspaces, exact_lifting_sharing, grid_group
from msr_sklearn.nn import (
    ConvFilterSharing,
    DenseSharing,
    FixedSharing,
    KroneckerSharing,
    LocallyConnected1d,
    SharedConv2d,
    SharedLinear,
    build_network,
    conv1d,
)


def cyclic_group_sharing(n):
    """Proposition 1's U^G for C_n on R^n: stacked shift matrices, shape (n*n, n)."""
    u = np.zeros((n, n, n))
    for j in range(n):  # row j of W is the filter shifted by j
        for i in range(n):
            u[j, i, (i - j) % n] = 1.0
    return torch.tensor(u.reshape(n * n, n), dtype=torch.float64)


def relative_shift_error(layer, n, n_samples=16):
    x = torch.randn(n_samples, n, dtype=torch.float64)
    fx = layer(x)
    f_shifted = layer(torch.roll(x, 1, dims=-1))
    return float(((f_shifted - torch.roll(fx, 1, dims=-1)).norm() / fx.norm()).detach())


def test_proposition1_cyclic_sharing_is_shift_equivariant():
    torch.manual_seed(0)
    n = 8
    layer = SharedLinear(FixedSharing((n, n), cyclic_group_sharing(n)), bias=False).double()
    for _ in range(5):
        with torch.no_grad():
            layer.filters.normal_()
        assert relative_shift_error(layer, n) < 1e-5
    dense = SharedLinear(DenseSharing((n, n), n_filters=n), bias=False).double()
    with torch.no_grad():
        dense.filters.normal_()
    assert relative_shift_error(dense, n) > 0.1


@pytest.mark.parametrize("shape,factors", [((6, 5), (2, 3)), ((4, 3, 5), (2, 1, 3))])
def test_kronecker_weight_equals_materialized_kron(shape, factors):
    torch.manual_seed(0)
    sharing = KroneckerSharing(shape, factors).double()
    u = sharing.factors[0]
    for f in sharing.factors[1:]:
        u = torch.kron(u, f)
    v = torch.randn(4, sharing.n_filters, dtype=torch.float64)
    expected = (v @ u.T).reshape(4, *shape)
    torch.testing.assert_close(sharing.weight(v), expected)
    torch.testing.assert_close(sharing.matrix(), u)
    # factors are tall and non-square; storage is far below a dense U
    assert sum(f.numel() for f in sharing.factors) < u.numel()


def test_kronecker_memory_for_large_layers():
    sharing = KroneckerSharing((784, 784), (4, 8))
    assert sharing.n_filters == 32
    assert sum(p.numel() for p in sharing.parameters()) == 784 * 4 + 784 * 8


@pytest.mark.parametrize("sharing_cls", ["dense", "kron", "fixed", "identity"])
def test_weight_matches_matrix_for_every_sharing(sharing_cls):
    torch.manual_seed(1)
    shape = (3, 4)
    sharing = {
        "dense": lambda: DenseSharing(shape, 5),
        "kron": lambda: KroneckerSharing(shape, (3, 2)),
        "fixed": lambda: FixedSharing(shape, torch.randn(12, 2)),
        "identity": lambda: FixedSharing(shape),
    }[sharing_cls]()
    v = torch.randn(2, sharing.n_filters)
    expected = (v @ sharing.matrix().T).reshape(2, *shape)
    torch.testing.assert_close(sharing.weight(v), expected)


def test_dense_sharing_starts_with_orthonormal_columns():
    u = DenseSharing((68, 70), 3, generator=torch.Generator().manual_seed(0)).matrix()
    torch.testing.assert_close(u.T @ u, torch.eye(3), atol=1e-5, rtol=0)


def test_outer_and_inner_parameters_are_declared_by_the_layers():
    net = build_network(5, 3, hidden_layer_sizes=(4,), layer="msr", n_filters=2)
    inner = net.initial_inner_parameters()
    assert sorted(inner) == ["0.bias", "0.filters", "1.bias", "1.filters"]
    outer = net.outer_parameters()
    assert sorted(outer) == ["layers.0.sharing.basis", "layers.1.sharing.basis"]
    # a fixed U has no outer parameters at all
    assert build_network(5, 3, layer="dense").outer_parameters() == {}


def test_fixed_sharing_rejects_a_matrix_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"must have shape \(12, k\)"):
        FixedSharing((3, 4), torch.zeros(10, 2))


def test_batched_filters_equal_per_task_calls():
    torch.manual_seed(0)
    layer = SharedLinear(DenseSharing((4, 6), 3))
    v = torch.randn(5, 3)
    b = torch.randn(5, 4)
    x = torch.randn(5, 7, 6)
    batched = layer(x, filters=v, bias=b)
    for t in range(5):
        torch.testing.assert_close(batched[t], layer(x[t], filters=v[t], bias=b[t]))


def conv_as_dense_matrix(input_shape, weight_shape):
    """The (n_out_flat * n_in_flat, n_filter_entries) map from a filter tensor to the
    dense weight of the equivalent linear layer, built by convolving basis filters."""
    c_in, h, w = input_shape
    n_filter = int(np.prod(weight_shape))
    eye = torch.eye(c_in * h * w, dtype=torch.float64).reshape(-1, c_in, h, w)
    columns = []
    for e in torch.eye(n_filter, dtype=torch.float64):
        # column of dense weights: response of every input basis vector
        out = F.conv2d(eye, e.reshape(weight_shape))  # (n_in_flat, C_out, H', W')
        columns.append(out.reshape(c_in * h * w, -1).T.reshape(-1))
    return torch.stack(columns, dim=1)


def test_conv_reparameterization_equals_equivalent_dense_u():
    torch.manual_seed(0)
    input_shape = (2, 5, 4)
    sharing = ConvFilterSharing(n_fields=2, in_channels=2, kernel_size=3, n_copies=2,
                                factor_filters=(2, 2, 5), init="random").double()
    conv = SharedConv2d(input_shape, sharing).double()
    with torch.no_grad():
        conv.filters.normal_()
        conv.bias.normal_()
    dense_u = conv_as_dense_matrix(input_shape, sharing.weight_shape) @ sharing.matrix()
    n_out = int(np.prod(conv.output_shape))
    linear = SharedLinear(FixedSharing((n_out, 40), dense_u.detach()), bias=False).double()
    x = torch.randn(3, 40, dtype=torch.float64)
    expected = linear(x, filters=conv.filters.detach())
    expected = expected + conv.bias.detach().repeat_interleave(n_out // 4)
    torch.testing.assert_close(conv(x), expected)
    # and the filter tensor is exactly U v, reshaped
    torch.testing.assert_close(
        sharing.weight(conv.filters), (sharing.matrix() @ conv.filters).reshape(4, 2, 3, 3))
    # against torch's own conv2d
    ref = F.conv2d(x.reshape(3, *input_shape), sharing.weight(conv.filters), conv.bias)
    torch.testing.assert_close(conv(x), ref.reshape(3, -1))


def test_batched_conv_equals_per_task_conv():
    torch.manual_seed(0)
    conv = SharedConv2d((1, 6, 6), ConvFilterSharing(3, 1, 3, n_copies=2))
    v = torch.randn(4, conv.sharing.n_filters)
    b = torch.randn(4, conv.n_outputs)
    x = torch.randn(4, 5, 36)
    out = conv(x, filters=v, bias=b)
    for t in range(4):
        torch.testing.assert_close(out[t], conv(x[t], filters=v[t], bias=b[t]))


def test_msr_conv_expresses_exact_rotated_copies():
    torch.manual_seed(0)
    sharing = exact_lifting_sharing("c4", n_fields=2).double()
    conv = SharedConv2d((1, 7, 7), sharing, bias=False).double()
    with torch.no_grad():
        conv.filters.normal_()
    w = sharing.weight(conv.filters).reshape(2, 4, 3, 3)
    for r in range(4):
        torch.testing.assert_close(w[:, r], torch.rot90(w[:, 0], r, dims=(-2, -1)))
    # lifting equivariance: rotating the input rotates each map and cycles the copies
    x = torch.randn(3, 1, 7, 7, dtype=torch.float64)
    out = conv(x.reshape(3, -1)).reshape(3, 2, 4, 5, 5)
    out_rot = conv(torch.rot90(x, 1, dims=(-2, -1)).reshape(3, -1)).reshape(3, 2, 4, 5, 5)
    expected = torch.rot90(torch.roll(out, 1, dims=2), 1, dims=(-2, -1))
    err = (out_rot - expected).norm() / out.norm()
    assert err < 1e-10


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
    lift = SharedConv2d((1, 9, 9), exact_lifting_sharing("c4", n_fields=1).double(),
                        bias=False).double()
    sharing = ConvFilterSharing(n_fields=2, in_channels=4, kernel_size=3, n_copies=4,
                                in_copies=4).double()
    assert [tuple(f.shape) for f in sharing.factors] == [(2, 2), (1, 1), (144, 36)]
    with torch.no_grad():
        sharing.factors[0].copy_(torch.eye(2))
        sharing.factors[1].fill_(1.0)
        sharing.factors[2].copy_(_regular_group_conv_factor())
    conv = SharedConv2d(lift.output_shape, sharing, bias=False).double()
    with torch.no_grad():
        lift.filters.normal_()
        conv.filters.normal_()

    def net(x):
        return conv(torch.relu(lift(x.reshape(3, -1)))).reshape(3, 2, 4, 5, 5)

    # rotating the image rotates every map and cycles the copies of every field,
    # through both layers
    x = torch.randn(3, 1, 9, 9, dtype=torch.float64)
    expected = torch.rot90(torch.roll(net(x), 1, dims=2), 1, dims=(-2, -1))
    assert (net(torch.rot90(x, 1, dims=(-2, -1))) - expected).norm() / expected.norm() < 1e-10
    # the same subspace as the group toolkit's exact sharing of such a layer
    exact = grid_group(3, "c4", in_rep="regular", out_rep="regular", out_size=1)
    comparison = compare_subspaces(_regular_group_conv_factor().numpy(),
                                   exact.sharing_basis())
    assert comparison.chordal_distance < 1e-8


def test_couple_copies_reads_later_front_end_layers_in_fields_of_copies():
    for couple in (False, True):
        net = build_network(64, 5, layer="msr", conv_channels=(8, 8, 4), n_copies=4,
                            input_shape=(1, 8, 8), pooling="mean", couple_copies=couple)
        convs = [m for m in net.layers if isinstance(m, SharedConv2d)]
        assert [c.sharing.in_copies for c in convs] == [1, 4 if couple else 1, 4 if couple else 1]
        # the same number of free filter values either way (k = fields*in_fields*in_copies*9)
        assert [c.sharing.n_filters for c in convs] == [18, 144, 72]
        assert net(torch.randn(3, 64)).shape == (3, 5)


def test_mean_fields_pooling_averages_each_field_over_its_copies_and_pixels():
    kw = dict(conv_channels=(16,), n_copies=8, input_shape=(1, 8, 8), layer="dense",
              random_state=0)
    fields = build_network(64, 5, pooling="mean_fields", **kw)
    channels = build_network(64, 5, pooling="mean", **kw)
    assert fields.layers[1].out_features == 2 and channels.layers[1].out_features == 16
    x = torch.randn(3, 64)
    front = fields.layers[0](x)  # the same front-end (same seed)
    torch.testing.assert_close(front, channels.layers[0](x))
    pooled = fields.layers[1](torch.relu(front))
    torch.testing.assert_close(pooled, channels.layers[1](torch.relu(front)).reshape(3, 2, 8)
                               .mean(-1))
    # a field's copies in another order: the same features (2 fields of 8 copies, 36 px)
    by_copy = torch.relu(front).reshape(3, 2, 8, 36)
    shuffled = by_copy[:, :, torch.randperm(8)].reshape(3, -1)
    torch.testing.assert_close(fields.layers[1](shuffled), pooled)
    with pytest.raises(ValueError, match="mean_fields' averages fields of n_copies=3"):
        build_network(64, 5, conv_channels=(16,), conv_layer="conv2d", n_copies=3,
                      pooling="mean_fields", input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="pooling must be one of"):
        build_network(64, 5, conv_channels=(16,), pooling="max", input_shape=(1, 8, 8))


def test_field_biases_are_shared_by_the_copies_and_keep_an_exact_d4_net_invariant():
    from msr_sklearn.groups import exact_group_conv_sharing, transform_grid

    net = build_network(64, 5, conv_channels=(16, 16), n_copies=8, couple_copies=True,
                        pooling="mean_fields", conv_bias="fields", layer="dense",
                        input_shape=(1, 8, 8), random_state=0).double()
    assert [tuple(m.bias.shape) for m in net.meta_layers] == [(2,), (2,), (5,)]
    exact = (exact_lifting_sharing("d4", n_fields=2), exact_group_conv_sharing("d4", 2, 2))
    x = torch.randn(6, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        for layer, sharing in zip(net.meta_layers, exact):
            for mine, theirs in zip(layer.sharing.factors, sharing.factors):
                mine.copy_(theirs)
        for layer in net.meta_layers:  # random filters and biases
            layer.filters.normal_()
            layer.bias.normal_()
        out = net(x.reshape(6, 64))
        for g in ((1, 0), (2, 0), (0, 1), (3, 1)):
            moved = torch.as_tensor(transform_grid(x.numpy(), g).copy()).reshape(6, 64)
            torch.testing.assert_close(net(moved), out, rtol=1e-9, atol=1e-9)
        # the same net with a bias per channel: the copies' biases differ, invariance breaks
        loose = build_network(64, 5, conv_channels=(16, 16), n_copies=8, couple_copies=True,
                              pooling="mean_fields", layer="dense", input_shape=(1, 8, 8),
                              random_state=0).double()
        state = {k: v for k, v in net.state_dict().items() if not k.endswith("bias")}
        loose.load_state_dict(state, strict=False)
        for layer in loose.meta_layers:
            layer.bias.normal_()
        moved = torch.as_tensor(transform_grid(x.numpy(), (1, 0)).copy()).reshape(6, 64)
        assert (loose(moved) - loose(x.reshape(6, 64))).abs().max() > 1e-3
    with pytest.raises(ValueError, match="conv_bias must be one of"):
        build_network(64, 5, conv_channels=(16,), conv_bias="copies", input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="bias_copies=3 must be a positive integer that "
                                         "divides the 16 output channels"):
        build_network(64, 5, conv_channels=(16,), conv_layer="conv2d", n_copies=3,
                      conv_bias="fields", input_shape=(1, 8, 8))


def test_conv_init_random_starts_the_copies_of_a_field_different():
    from msr_sklearn import MetaSymmetryLearner
    from msr_sklearn.datasets import load_aug_digits_tasks

    kw = dict(conv_channels=(16,), n_copies=8, pooling="mean_fields", input_shape=(1, 8, 8),
              random_state=0)
    v = torch.randn(18)
    for init, equal in (("identity", True), ("random", False)):
        w = build_network(64, 5, conv_init=init, **kw).layers[0].sharing.weight(v)
        assert torch.allclose(w[0], w[1]) == equal  # copies 0 and 1 of field 0
    with pytest.raises(ValueError, match="conv_init must be one of"):
        build_network(64, 5, conv_init="zeros", **kw)
    # the learner passes it on, and its symmetry needs no such setting to be rebuilt
    tasks = load_aug_digits_tasks(8, standardize=True, random_state=0)
    learner = MetaSymmetryLearner(layer="dense", conv_init="random", n_support=5,
                                  support_split="first", n_meta_steps=1, meta_batch_size=4,
                                  **kw).fit(tasks)
    u = learner.symmetry_.symmetry_matrix(0).reshape(16, 9, -1)
    assert not np.allclose(u[0], u[1])
    assert "conv_init" not in learner.symmetry_.architecture


def test_square_per_axis_factors_cannot_rotate_copies():
    # with n_copies=1 and a square spatial factor, one C shared by all output channels
    # cannot make channel 1 a rotation of channel 0 for every filter (paper §2.4)
    torch.manual_seed(0)
    sharing = ConvFilterSharing(n_fields=2, in_channels=1, kernel_size=3, n_copies=1).double()
    v = torch.randn(sharing.n_filters, dtype=torch.float64)
    w = sharing.weight(v)
    assert (w[1] - torch.rot90(w[0], 1, dims=(-2, -1))).norm() > 0.1


def test_conv1d_and_locally_connected_equal_dense_sharing():
    torch.manual_seed(0)
    n = 10
    conv = conv1d(1, 1, n, kernel_size=3, bias=False).double()
    lc = LocallyConnected1d(1, 1, n, kernel_size=3, bias=False).double()
    with torch.no_grad():
        conv.filters.normal_()
        lc.filters.normal_()
    x = torch.randn(4, n, dtype=torch.float64)
    band = torch.tensor(translation_sharing(n, 3))
    as_linear = SharedLinear(FixedSharing((n - 2, n), band), bias=False).double()
    torch.testing.assert_close(conv(x), as_linear(x, filters=conv.filters.detach()))
    # locally connected: one 3-tap filter per output position
    lc_u = torch.zeros(n - 2, n, n - 2, 3, dtype=torch.float64)
    for p in range(n - 2):
        for s in range(3):
            lc_u[p, p + s, p, s] = 1
    lc_linear = SharedLinear(FixedSharing((n - 2, n), lc_u.reshape((n - 2) * n, -1)),
                             bias=False).double()
    torch.testing.assert_close(lc(x), lc_linear(x, filters=lc.filters.detach()))


def test_build_network_validates_its_settings():
    with pytest.raises(ValueError, match="layer must be one of"):
        build_network(4, 2, layer="banana")
    with pytest.raises(ValueError, match="activation must be one of"):
        build_network(4, 2, activation="swish")
    with pytest.raises(ValueError, match="cannot be split"):
        build_network(4, 2, layer="msr_kron", n_filters=7)
    with pytest.raises(ValueError, match="maps 70 features to 68 outputs"):
        build_network(70, 5, layer="conv1d")


def test_build_network_is_deterministic_given_random_state():
    a = build_network(6, 3, hidden_layer_sizes=(5,), n_filters=4, random_state=3)
    b = build_network(6, 3, hidden_layer_sizes=(5,), n_filters=4, random_state=3)
    c = build_network(6, 3, hidden_layer_sizes=(5,), n_filters=4, random_state=4)
    for (na, pa), (_, pb), (_, pc) in zip(a.named_parameters(), b.named_parameters(),
                                          c.named_parameters()):
        assert torch.equal(pa, pb), na
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_layers_have_informative_reprs():
    net = build_network(6, 3, hidden_layer_sizes=(5,), layer="msr_kron", n_filters=4)
    text = repr(net)
    assert "factor_filters=(2, 2)" in text and "in_features=6" in text
