"""The built-in networks: ordinary modules whose default policies spell the old flags."""

import pytest
import torch
from torch import nn

from msr_sklearn.datasets import translation_sharing
from msr_sklearn.engine import MetaModel
from msr_sklearn.groups import transform_grid
from msr_sklearn.models import (
    MLP,
    Conv1dLayer,
    Conv4,
    ConvNet,
    DeepSets,
    GroupConvNet,
    LocallyConnected1d,
    default_policy,
)
from msr_sklearn.sharing import ConvFilterSharing, DenseSharing, FixedSharing


def test_couple_copies_reads_later_convolutions_in_fields_of_copies():
    for couple in (False, True):
        net = ConvNet((1, 8, 8), n_outputs=5, channels=(8, 8, 4), n_copies=4,
                      global_pool="mean", couple_copies=couple)
        model = MetaModel(net, net.default_sharing("msr", n_filters=3))
        convs = [model.sharing(f"features.{i}.weight") for i in (0, 2, 4)]
        assert [c.in_copies for c in convs] == [1, 4 if couple else 1, 4 if couple else 1]
        # the same number of free filter values either way (k = fields*in_fields*in_copies*9)
        assert [c.n_filters for c in convs] == [18, 144, 72]
        assert model(torch.randn(3, 64)).shape == (3, 5)


def test_mean_fields_pooling_averages_each_field_over_its_copies_and_pixels():
    torch.manual_seed(0)
    fields = ConvNet((1, 8, 8), n_outputs=5, channels=(16,), n_copies=8,
                     global_pool="mean_fields")
    assert fields.head[0].in_features == 2
    x = torch.randn(3, 1, 8, 8)
    front = torch.relu(fields.features(x))  # (3, 16, 6, 6): 2 fields of 8 copies
    pooled = fields.pool(front)
    torch.testing.assert_close(pooled, front.reshape(3, 2, 8 * 36).mean(-1))
    # a field's copies in another order: the same features
    shuffled = front.reshape(3, 2, 8, 6, 6)[:, :, torch.randperm(8)].reshape(3, 16, 6, 6)
    torch.testing.assert_close(fields.pool(shuffled), pooled)
    with pytest.raises(ValueError, match="n_copies=3 must divide every entry of channels"):
        ConvNet((1, 8, 8), 5, channels=(16,), n_copies=3, global_pool="mean_fields")
    with pytest.raises(ValueError, match="global_pool must be one of"):
        ConvNet((1, 8, 8), 5, channels=(16,), global_pool="max")


def test_the_group_conv_net_is_exactly_d4_invariant_for_any_filters_and_field_biases():
    torch.manual_seed(0)
    net = GroupConvNet((1, 8, 8), n_outputs=5, group="d4", fields=(2, 2))
    model = MetaModel(net, net.default_sharing()).double()
    assert [model.sharing(n).learnable for n in model.shared_names] == [False, False]
    assert {n: tuple(p.shape) for n, p in model.initial_inner().items()
            if n.endswith("bias")} == {"features.1.bias": (2,), "features.4.bias": (2,),
                                       "head.0.bias": (5,)}
    x = torch.randn(6, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        for p in model.initial_inner().values():  # random filters and field biases
            p.normal_()
        out = model(x.reshape(6, 64))
        for g in ((1, 0), (2, 0), (0, 1), (3, 1)):
            moved = torch.as_tensor(transform_grid(x.numpy(), g).copy()).reshape(6, 64)
            torch.testing.assert_close(model(moved), out, rtol=1e-9, atol=1e-9)
    # a bias per channel: the copies' biases differ and the invariance breaks
    loose = ConvNet((1, 8, 8), 5, channels=(16, 16), n_copies=8, couple_copies=True,
                    global_pool="mean_fields")
    policy = {f"features.{i}.weight": model.sharing(f"features.{j}.weight")
              for i, j in ((0, 0), (2, 3))}
    loose_model = MetaModel(loose, policy).double()
    with torch.no_grad():
        for p in loose_model.initial_inner().values():
            p.normal_()
        moved = torch.as_tensor(transform_grid(x.numpy(), (1, 0)).copy()).reshape(6, 64)
        assert (loose_model(moved) - loose_model(x.reshape(6, 64))).abs().max() > 1e-3
    with pytest.raises(ValueError, match="square images"):
        GroupConvNet((1, 8, 6), 5)


def test_conv1d_and_locally_connected_equal_dense_sharings():
    torch.manual_seed(0)
    n = 10
    conv, lc = Conv1dLayer(n, bias=False).double(), LocallyConnected1d(n, bias=False).double()
    x = torch.randn(4, n, dtype=torch.float64)
    band = FixedSharing(torch.tensor(translation_sharing(n, 3))).bind((n - 2, n)).double()
    taps = conv.conv.weight.detach().reshape(3)
    torch.testing.assert_close(conv(x), x @ band(taps).T)
    # locally connected: one 3-tap filter per output position
    lc_u = torch.zeros(n - 2, n, n - 2, 3, dtype=torch.float64)
    for p in range(n - 2):
        for s in range(3):
            lc_u[p, p + s, p, s] = 1
    lc_sharing = FixedSharing(lc_u.reshape((n - 2) * n, -1)).bind((n - 2, n)).double()
    torch.testing.assert_close(lc(x), x @ lc_sharing(lc.weight.detach().reshape(-1)).T)
    with pytest.raises(ValueError, match="kernel_size=11 must lie between 1 and n_features=10"):
        Conv1dLayer(10, kernel_size=11)


def test_models_validate_their_settings():
    with pytest.raises(ValueError, match="activation must be one of"):
        MLP(4, 2, activation="swish")
    with pytest.raises(ValueError, match="every layer needs at least one unit"):
        MLP(4, 2, hidden_layer_sizes=(0,))
    with pytest.raises(ValueError, match=r"input_shape must be \(channels, height, width\)"):
        ConvNet((64,), 5)
    with pytest.raises(ValueError, match="shrink"):
        ConvNet((1, 4, 4), 5, channels=(4, 4), kernel_size=3)
    with pytest.raises(ValueError, match="norm must be one of"):
        ConvNet((1, 8, 8), 5, norm="weight")


def test_conv4_is_the_standard_backbone():
    net = Conv4((1, 28, 28), n_outputs=5, channels=16)
    kinds = [type(m).__name__ for m in net.features]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"] * 4
    assert net.output_shape == (16, 1, 1) and net.head[0].in_features == 16
    assert not net.features[1].track_running_stats  # each task's own statistics
    policy = net.default_sharing("msr", n_filters=5)
    assert sorted(policy) == sorted([f"features.{i}.weight" for i in (0, 4, 8, 12)]
                                    + ["head.0.weight"])
    assert net.default_sharing("dense") == {}


def test_deepsets_is_permutation_equivariant():
    torch.manual_seed(0)
    net = DeepSets(hidden_features=(4,))
    x = torch.randn(3, 7)
    perm = torch.randperm(7)
    torch.testing.assert_close(net(x)[:, perm], net(x[:, perm]), atol=1e-6, rtol=1e-6)


def test_default_policies_spell_the_layer_shorthands():
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    policy = default_policy(net, "msr_kron", n_filters=2)
    assert sorted(policy) == ["0.weight", "2.weight"]
    assert default_policy(net, "dense", 2) == {"0.weight": "inner", "2.weight": "inner"}
    with pytest.raises(ValueError, match="n_filters has 3 entries for 2 shared weights"):
        default_policy(net, "msr", (1, 2, 3))
    with pytest.raises(ValueError, match="layer must be one of"):
        default_policy(net, "banana", 2)
    conv_policy = ConvNet((1, 8, 8), 5, channels=(8,), n_copies=4).default_sharing("msr", 3)
    assert isinstance(conv_policy["features.0.weight"], ConvFilterSharing)
    assert isinstance(conv_policy["head.0.weight"], DenseSharing)


def test_built_in_models_are_deterministic_given_torch_seed_and_have_reprs():
    torch.manual_seed(3)
    a = MLP(6, 3, hidden_layer_sizes=(5,))
    torch.manual_seed(3)
    b = MLP(6, 3, hidden_layer_sizes=(5,))
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), name
    # hidden LeCun scale, small output layer
    big = MLP(400, 300, hidden_layer_sizes=(400,))
    assert abs(float(big[0].weight.detach().std()) - 400 ** -0.5) < 2e-3
    assert abs(float(big[2].weight.detach().std()) - 1 / 300) < 2e-4
    assert "in_features=6" in repr(a)
