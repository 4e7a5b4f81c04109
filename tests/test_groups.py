"""Exact group sharings, equivariance diagnostics, the symmetry report, hardening, export."""

import math
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import torch

from torch import nn

from msr_sklearn import LearnedSymmetry
from msr_sklearn.datasets import translation_sharing
from msr_sklearn.engine import MetaModel
from msr_sklearn.estimators import EquivariantRegressor
from msr_sklearn.groups import (
    FiniteGroup,
    compare_subspaces,
    cyclic_group,
    dihedral_group,
    grid_group,
    grid_transforms,
    partition_distance,
    partition_sharing,
    stacked_sharing,
    symmetric_group,
    transform_grid,
    trivial_group,
)
from msr_sklearn.inspection import (
    candidate_generators,
    equivariance_error,
    export_layer,
    harden_to_group,
    symmetry_report,
    tied_weight_partition,
)
from msr_sklearn.models import ConvNet, LocallyConnected1d
from msr_sklearn.sharing import (
    ConvFilterSharing,
    DenseSharing,
    FixedSharing,
    Residual,
    attach_sharing,
    exact_group_conv_sharing,
    exact_lifting_sharing,
)

# (group, dim U^G) -- the table of anchors.md §1.4
KNOWN_DIMENSIONS = {
    "C8 shift on R^8": (lambda: cyclic_group(8), 8),
    "S8 on R^8": (lambda: symmetric_group(8), 2),
    "D8 on the octagon": (lambda: dihedral_group(8), 5),
    "C4 on 5x5 pixels": (lambda: grid_group(5, "c4"), 157),
    "C4 trivial->regular, 3x3": (lambda: grid_group(3, "c4", out_rep="regular", out_size=1), 9),
    "D4 trivial->regular, 3x3": (lambda: grid_group(3, "d4", out_rep="regular", out_size=1), 9),
    "C4 regular->regular, 3x3": (
        lambda: grid_group(3, "c4", in_rep="regular", out_rep="regular", out_size=1), 36),
}


def random_orthogonal(n, rng):
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def noisy_basis(basis, noise, rng):
    """A learned-looking U: the basis in a random frame plus a perturbation.

    ``noise`` is the typical norm of the perturbation of one (unit) column.
    """
    n, k = basis.shape
    return basis @ random_orthogonal(k, rng) + noise * rng.standard_normal((n, k)) / np.sqrt(n)


def symmetry_with_sharing(U, n_features, n_outputs):
    """A LearnedSymmetry whose single dense layer has sharing U."""
    sym = LearnedSymmetry.initial(n_features=n_features, n_outputs=n_outputs, layer="msr",
                                  n_filters=U.shape[1], bias=False, random_state=0)
    sym.state["shared.0-weight.sharing.basis"] = np.asarray(U.T, dtype=np.float32)
    return sym


def shared_conv(sharing, seed=0):
    """A plain ``nn.Conv2d`` (valid, stride 1, no bias) whose weight carries ``sharing``."""
    c_out, c_in, kh, kw = sharing.weight_shape
    torch.manual_seed(seed)
    conv = nn.Conv2d(c_in, c_out, (kh, kw), bias=False)
    attach_sharing(conv, "weight", sharing)  # v: the random weight's projection
    return conv.double()


# --------------------------------------------------------------------------- U^G
@pytest.mark.parametrize("case", list(KNOWN_DIMENSIONS))
def test_exact_sharing_has_the_known_dimension_by_every_route(case):
    make, expected = KNOWN_DIMENSIONS[case]
    group = make()
    dense = group.sharing_basis("nullspace")
    orbits = group.sharing_basis("orbits")
    assert dense.shape[1] == orbits.shape[1] == group.dimension() == expected
    np.testing.assert_allclose(dense.T @ dense, np.eye(expected), atol=1e-10)
    np.testing.assert_allclose(orbits.T @ orbits, np.eye(expected), atol=1e-12)
    assert compare_subspaces(orbits, dense).max_angle < 1e-8
    # every basis weight is equivariant under every generator
    assert group.generator_residuals(dense).max() < 1e-10


@pytest.mark.parametrize("make", [lambda: cyclic_group(8), lambda: grid_group(3, "d4")],
                         ids=["C8", "D4 on 3x3"])
def test_proposition1_stacked_permutations_span_the_null_space(make):
    group = make()
    stacked = stacked_sharing(group)
    lifted = group.lifted()
    assert stacked.shape == (group.order * group.n_in, group.n_in)
    assert lifted.weight_shape == (group.order, group.n_in)
    # D4 is not abelian: a wrong left/right convention in lifted() would fail here
    assert compare_subspaces(stacked, lifted.sharing_basis("nullspace")).max_angle < 1e-8
    assert lifted.dimension() == group.n_in


def test_cyclic_regular_representation_is_the_shift():
    group = cyclic_group(8)
    angle = compare_subspaces(stacked_sharing(group), group.sharing_basis("nullspace")).max_angle
    assert angle < 1e-8


def test_group_orders_by_closure_and_schreier_sims_agree():
    for group, order in [(cyclic_group(8), 8), (dihedral_group(8), 16), (symmetric_group(5), 120),
                         (grid_group(4, "d4", out_rep="regular", out_size=2), 8),
                         (candidate_generators(6), 720)]:
        assert group.order == order
        assert len(group.elements()) == order
    assert symmetric_group(12).order == math.factorial(12)  # far beyond enumeration
    with pytest.raises(ValueError, match="more than max_order=100"):
        symmetric_group(6).elements(max_order=100)


def test_elements_are_closed_under_products():
    group = grid_group(3, "d4", out_rep="regular", out_size=2)
    keys = {(a.tobytes(), b.tobytes()) for a, b in group.elements()}
    for a_in, a_out in group.elements():
        for g_in, g_out in group.generator_matrices():
            assert ((a_in @ g_in).tobytes(), (a_out @ g_out).tobytes()) in keys


def test_matrix_representation_uses_the_null_space():
    rotation = np.array([[0.0, -1.0], [1.0, 0.0]])  # C4 on R^2
    group = FiniteGroup([rotation], name="C4 on R2")
    basis = group.sharing_basis()
    assert not group.is_permutation and group.order == 4
    assert basis.shape[1] == group.dimension() == 2  # a I + b J
    assert compare_subspaces(basis, np.stack([np.eye(2).ravel(), rotation.ravel()], 1)
                             ).max_angle < 1e-10
    with pytest.raises(ValueError, match="needs a permutation group"):
        group.sharing_basis("orbits")


def test_grid_regular_field_matches_a_lifting_convolution():
    """grid_group's regular channel convention is what a real lifting conv does."""
    conv = shared_conv(exact_lifting_sharing("d4", n_fields=2))
    group = grid_group(7, "d4", out_rep="regular", out_size=5, n_out_fields=2)
    assert equivariance_error(conv, group, random_state=0, input_shape=(1, 7, 7)) < 1e-12
    # channel-fixed outputs are wrong for the same conv
    wrong = grid_group(7, "d4", out_rep="trivial", out_size=5,
                       n_out_fields=2 * len(grid_transforms("d4")))
    assert equivariance_error(conv, wrong, random_state=0, input_shape=(1, 7, 7)) > 0.5


@pytest.mark.parametrize("name", ["c4", "d4"])
def test_exact_group_conv_between_regular_fields(name):
    """A layer on regular input fields: exact with coupled copies, far off without."""
    m = len(grid_transforms(name))
    group = grid_group(7, name, in_rep="regular", out_rep="regular", out_size=5,
                       n_out_fields=2)
    sharing = exact_group_conv_sharing(name, n_fields=2, in_fields=1)
    assert sharing.weight_shape == (2 * m, m, 3, 3) and sharing.n_filters == 2 * m * 9
    conv = shared_conv(sharing)
    assert equivariance_error(conv, group, random_state=0, input_shape=(m, 7, 7)) < 1e-12
    # the same k with each input channel its own field (in_copies=1) is not equivariant
    uncoupled = ConvFilterSharing(n_copies=m, factor_filters=(2, m, 9)).bind(
        (2 * m, m, 3, 3), torch.Generator().manual_seed(0))
    assert uncoupled.n_filters == sharing.n_filters
    conv = shared_conv(uncoupled)
    assert equivariance_error(conv, group, random_state=0, input_shape=(m, 7, 7)) > 0.5
    with pytest.raises(ValueError, match="in_fields"):
        exact_group_conv_sharing(name, in_fields=0)


def test_bad_groups_are_refused_with_clear_messages():
    with pytest.raises(ValueError, match="not a permutation"):
        FiniteGroup([np.array([0, 0, 1])])
    with pytest.raises(ValueError, match="every generator needs both images"):
        FiniteGroup([np.arange(3)], [np.arange(3), np.arange(3)])
    with pytest.raises(ValueError, match="singular"):
        FiniteGroup([np.zeros((2, 2))])
    with pytest.raises(ValueError, match="group must be one of"):
        grid_group(3, "c8")
    with pytest.raises(ValueError, match="no generator named 'spin'"):
        dihedral_group(5).subgroup(["spin"])
    with pytest.raises(ValueError, match="different shapes"):
        FiniteGroup.concatenate([cyclic_group(4), cyclic_group(5)])


# --------------------------------------------------------------------------- diagnostics
def test_equivariance_error_of_exact_and_dense_layers():
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    for group in (symmetric_group(6), grid_group(5, "c4"), dihedral_group(7)):
        n_out, n_in = group.weight_shape
        exact = export_layer(group.sharing_basis(), group.weight_shape,
                             weight=rng.standard_normal(group.weight_shape))
        assert exact.parametrizations.weight.original.dtype == torch.float32
        assert equivariance_error(exact, group, random_state=0) <= 1e-6
        dense = nn.Linear(n_in, n_out, bias=False)
        attach_sharing(dense, "weight", DenseSharing(n_filters=n_out * n_in))
        assert equivariance_error(dense, group, random_state=0) > 0.1
    # float64 modules get float64 inputs: the error drops to rounding level
    group = symmetric_group(6)
    exact64 = export_layer(group.sharing_basis(), (6, 6), weight=np.eye(6) + 1.0).double()
    assert equivariance_error(exact64, group, random_state=0) < 1e-13


def test_equivariance_error_takes_symmetries_estimators_and_generators():
    group = cyclic_group(6)
    exact = symmetry_with_sharing(group.sharing_basis(), 6, 6)
    assert equivariance_error(exact, group, random_state=0) < 1e-6
    assert equivariance_error(exact.build_model(), group, layer="0.weight",
                              random_state=0) < 1e-6  # a MetaModel, a layer by name
    generic = LearnedSymmetry.initial(n_features=6, n_outputs=6, layer="msr", n_filters=6,
                                      bias=False, random_state=0)
    assert equivariance_error(generic, group, random_state=0) > 0.1

    class Fitted:  # duck-typed per-task estimator
        network_ = exact.to_module()

    with torch.no_grad():
        Fitted.network_[0].parametrizations.weight.original.normal_()
    assert equivariance_error(Fitted(), group, elements="generators") < 1e-6
    # the filters drawn at random instead of the module's own
    assert equivariance_error(Fitted.network_, group, layer="random", random_state=0) < 1e-6
    assert equivariance_error(generic.to_module(), group, layer="random",
                              random_state=0) > 0.1
    with pytest.raises(ValueError, match="has none"):
        equivariance_error(torch.nn.Linear(6, 6), group, layer="random")
    # a residual beside the exact sharing is kept: it breaks the symmetry unless it is 0
    soft = nn.Linear(6, 6, bias=False)
    attach_sharing(soft, "weight", Residual(FixedSharing(group.sharing_basis())))
    assert equivariance_error(soft, group, layer="random", random_state=0) > 0.1
    with torch.no_grad():
        soft.parametrizations.weight.original1.zero_()
    assert equivariance_error(soft, group, layer="random", random_state=0) < 1e-6
    # a real per-task estimator: its adapted network
    X, y = np.random.default_rng(0).standard_normal((2, 8, 6))
    reg = EquivariantRegressor(exact, inner_steps=3).fit(X, y)
    assert equivariance_error(reg, group, random_state=0) < 1e-5
    with pytest.raises(ValueError, match="acts on 7 outputs"):
        equivariance_error(torch.nn.Linear(7, 6), FiniteGroup([np.arange(7)]))
    with pytest.raises(TypeError, match="cannot test the equivariance"):
        equivariance_error("model", group)
    with pytest.raises(ValueError, match="elements must be"):
        equivariance_error(Fitted(), group, elements="some")


def test_equivariance_error_of_conv_layers_inside_a_network():
    """A layer's own module runs on the inputs it reads in the network: after padding,
    pooling and a lifting layer, with the groups' flat channel-major layout."""
    policy = {"features.0.weight": exact_lifting_sharing("c4", n_fields=1),
              "features.3.weight": exact_group_conv_sharing("c4", n_fields=2, in_fields=1)}
    sym = LearnedSymmetry.initial(ConvNet, policy, input_shape=(1, 9, 9), n_outputs=3,
                                  module__channels=(4, 8), module__padding=1,
                                  module__pool="max", random_state=0)
    assert sym.weight_names == ["features.0.weight", "features.3.weight", "head.0.weight"]
    lift = grid_group(9, "c4", out_rep="regular", out_size=9)  # padding keeps 9x9
    assert equivariance_error(sym, lift, layer=0, random_state=0) < 1e-5
    # the second conv reads the pooled 4 x 4 x 4 maps of the first
    regular = grid_group(4, "c4", in_rep="regular", out_rep="regular", out_size=4,
                         n_out_fields=2)
    assert equivariance_error(sym, regular, layer=1, random_state=0) < 1e-5
    learned = LearnedSymmetry.initial(ConvNet, input_shape=(1, 9, 9), n_outputs=3,
                                      module__channels=(4, 8), module__padding=1,
                                      module__pool="max", module__n_copies=4,
                                      module__couple_copies=True, random_state=0)
    assert equivariance_error(learned, regular, layer=1, random_state=0) > 0.1
    # flat rows that the network reshapes: the same layer inputs
    flat = LearnedSymmetry.initial(ConvNet, policy, n_features=81, n_outputs=3,
                                   module__input_shape=(1, 9, 9), module__channels=(4, 8),
                                   module__padding=1, module__pool="max", random_state=0)
    assert equivariance_error(flat, regular, layer=1, random_state=0) < 1e-5
    with pytest.raises(ValueError, match=r"layer 1 \(features.3.weight\) reads inputs of "
                                         r"shape \(4, 4, 4\) \(64 values\); the group acts "
                                         r"on 81 inputs"):
        equivariance_error(sym, lift, layer=1)


def test_equivariance_error_of_built_in_layers_and_modules_without_an_input_shape():
    # LocallyConnected1d: its own weight (8, 3), adapted as is, reading flat signals
    sym = LearnedSymmetry.initial(LocallyConnected1d, n_features=10, n_outputs=8,
                                  layer="dense", random_state=0)
    assert sym.weight_names == ["weight"]
    assert equivariance_error(sym, trivial_group(10, 8), random_state=0) == 0.0
    assert equivariance_error(sym, FiniteGroup([np.arange(10)[::-1]], [np.arange(8)[::-1]]),
                              random_state=0) > 0.1  # an untied filter per position
    # a MetaModel of a user module: what one sample looks like must be said
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 6, bias=False))
    model = MetaModel(net, {"1.weight": FixedSharing(cyclic_group(6).sharing_basis())})
    with pytest.raises(ValueError, match="pass input_shape="):
        equivariance_error(model, cyclic_group(6))
    assert equivariance_error(model, cyclic_group(6), input_shape=(1, 2, 3),
                              random_state=0) < 1e-6


def test_compare_subspaces_measures_containment_excess_and_angles():
    rng = np.random.default_rng(0)
    theta = 0.3
    a = np.zeros((5, 1)); a[0] = 1
    b = np.zeros((5, 1)); b[0], b[1] = np.cos(theta), np.sin(theta)
    c = compare_subspaces(b, a)
    assert c.max_angle == pytest.approx(theta, abs=1e-12)
    assert c.chordal_distance == pytest.approx(np.sin(theta), abs=1e-12)
    assert c.excess == pytest.approx(np.sin(theta) ** 2, abs=1e-12)

    UG = symmetric_group(5).sharing_basis()  # 2-dim
    bigger = np.hstack([UG, rng.standard_normal((25, 3))])
    c = compare_subspaces(bigger, UG)
    assert c.containment_angle < 1e-12
    assert c.excess == pytest.approx(3 / 5, abs=1e-12)  # 3 of 5 directions lie outside
    smaller = compare_subspaces(UG[:, :1], UG)
    assert smaller.containment_angle == pytest.approx(np.pi / 2)
    assert smaller.excess < 1e-20
    # tiny angles stay accurate (an arccos of cosines would give 0 or ~1e-8)
    tiny = compare_subspaces(UG + 1e-10 * rng.standard_normal(UG.shape), UG)
    assert 1e-12 < tiny.max_angle < 1e-9
    A, B = rng.standard_normal((30, 4)), rng.standard_normal((30, 6))
    np.testing.assert_allclose(compare_subspaces(A, B).principal_angles,
                               scipy.linalg.subspace_angles(A, B), atol=1e-12)


# --------------------------------------------------------------------------- report
def test_report_recovers_the_generating_group():
    rng = np.random.default_rng(0)
    cases = [(cyclic_group(8), ["shift"], 8, "C8"),
             (dihedral_group(8), ["shift", "reflection"], 16, "D8"),
             (symmetric_group(8), ["shift", "reflection", "transposition"], math.factorial(8),
              "S8"),
             (grid_group(4, "c4"), ["rot90"], 4, "C4"),
             (grid_group(4, "d4"), ["rot90", "flip"], 8, "D4")]
    for group, passing, order, name in cases:
        U = noisy_basis(group.sharing_basis(), 0.01, rng)
        report = symmetry_report(U, weight_shape=group.weight_shape)
        assert isinstance(report, pd.DataFrame)
        assert report.index[report["passed"]].tolist() == passing, group
        assert report.loc[passing, "score"].max() < 0.1
        assert (report.loc[~report["passed"], "score"] > 0.5).all()
        summary = report.attrs["summary"]
        assert summary["order"] == order
        assert summary["name"] == report.attrs["group"].name == name
        assert summary["dim_group"] == summary["dim"] == group.sharing_basis().shape[1]
        assert summary["containment_angle"] < 0.05
    random = np.linalg.qr(rng.standard_normal((64, 8)))[0]
    report = symmetry_report(random, weight_shape=(8, 8))
    assert not report["passed"].any()
    assert report["score"].min() > 0.5  # a transposition moves only 28 of the 64 weights
    assert report.attrs["summary"]["order"] == 1
    assert report.attrs["summary"]["name"] == "trivial"


def test_report_on_symmetries_and_explicit_candidates():
    lift = grid_group(3, "c4", out_rep="regular", out_size=1)
    pixels = lambda t: transform_grid(np.arange(9).reshape(3, 3), t).ravel()  # noqa: E731
    wrong = FiniteGroup([pixels((0, 1))], [(-np.arange(4)) % 4], names=["flip"], name="wrong")
    report = symmetry_report(lift.sharing_basis(), candidates=[lift, wrong], weight_shape=(4, 9))
    assert report["passed"].tolist() == [True, False]
    assert report.attrs["group"].order == 4
    sym = symmetry_with_sharing(dihedral_group(6).sharing_basis(), 6, 6)
    report = symmetry_report(sym, layer=0)
    assert report.index[report["passed"]].tolist() == ["shift", "reflection"]
    with pytest.raises(TypeError, match="needs weight_shape"):
        symmetry_report(np.eye(36)[:, :3])
    with pytest.raises(ValueError, match="act on weights of shape"):
        symmetry_report(np.eye(36)[:, :3], candidates=cyclic_group(5), weight_shape=(6, 6))
    with pytest.raises(ValueError, match="square layer"):
        symmetry_report(np.eye(30)[:, :3], weight_shape=(5, 6))


# --------------------------------------------------------------------------- hardening
def test_hardening_to_the_group_gives_an_exact_layer_close_to_the_soft_one():
    rng = np.random.default_rng(0)
    n, eps = 6, 1e-3
    group = symmetric_group(n)
    soft_U = noisy_basis(group.sharing_basis(), eps, rng)
    v = rng.standard_normal(2)
    soft_W = (soft_U @ v).reshape(n, n)
    soft = export_layer(soft_U, (n, n), weight=soft_W, bias=np.zeros(n))
    report = symmetry_report(soft_U, weight_shape=(n, n))
    hard_U = harden_to_group(soft_U, report)  # the report names the group
    assert compare_subspaces(hard_U, group.sharing_basis()).max_angle < 1e-10
    hard = export_layer(hard_U, (n, n), weight=soft_W, bias=np.zeros(n))
    assert sum(p.numel() for p in hard.parameters()) == 2 + n  # dim U^G + bias
    assert isinstance(hard, nn.Linear)
    assert [name for name, _ in hard.named_parameters()] == [
        "bias", "parametrizations.weight.original"]
    assert equivariance_error(soft, group, random_state=0) > 1e-4
    assert equivariance_error(hard, group, random_state=0) <= 1e-6
    x = torch.randn(64, n)
    with torch.no_grad():
        gap = (hard(x) - soft(x)).norm() / soft(x).norm()
    assert gap < 10 * eps
    # state_dict round trip into a fresh layer
    fresh = export_layer(np.zeros_like(hard_U), (n, n), bias=np.ones(n))
    fresh.load_state_dict(hard.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), hard(x))


def test_hardening_a_learned_symmetry_keeps_k_directions():
    group = cyclic_group(6)
    rng = np.random.default_rng(1)
    partial = noisy_basis(group.sharing_basis()[:, :3], 1e-3, rng)  # k = 3 < dim U^G = 6
    hard = harden_to_group(symmetry_with_sharing(partial, 6, 6), group)
    assert hard.shape == (36, 3)
    assert compare_subspaces(hard, group.sharing_basis()).excess < 1e-20  # hard lies in U^G
    assert compare_subspaces(hard, partial).max_angle < 1e-2


@pytest.mark.parametrize("make", [lambda: cyclic_group(8), lambda: symmetric_group(6),
                                  lambda: grid_group(5, "c4")], ids=["C8", "S6", "C4 5x5"])
def test_partition_hardening_recovers_the_orbits(make):
    group = make()
    rng = np.random.default_rng(0)
    soft = noisy_basis(group.sharing_basis(), 0.005, rng)
    labels = tied_weight_partition(soft, random_state=0)
    assert partition_distance(labels, group.weight_orbits()) == 0
    if group.sharing_basis().shape[1] <= 8:
        kmeans = tied_weight_partition(soft, n_groups=group.sharing_basis().shape[1],
                                       random_state=0)
        assert partition_distance(kmeans, group.weight_orbits()) == 0
    assert compare_subspaces(partition_sharing(labels), group.sharing_basis()).max_angle < 1e-10


def test_partition_hardening_ties_untouched_weights_to_zero():
    band = translation_sharing(n_features=10, kernel_size=3)  # valid conv 10 -> 8
    soft = noisy_basis(band, 1e-3, np.random.default_rng(0))
    labels = tied_weight_partition(soft, random_state=0)
    truth = np.where(band.any(axis=1), band.argmax(axis=1), -1)
    assert (labels == -1).sum() == 80 - 3 * 8
    assert partition_distance(labels, truth) == 0
    assert partition_sharing(labels).shape == (80, 3)


def test_partition_distance_counts_moved_weights():
    assert partition_distance([0, 0, 1, 1, 2], [7, 7, 3, 3, 1]) == 0
    assert partition_distance([0, 0, 0, 1], [0, 0, 1, 1]) == 1
    assert partition_distance([0, 1, 2, 3], [0, 0, 0, 0]) == 3
    with pytest.raises(ValueError, match="label 3 and 4 weights"):
        partition_distance([0, 1, 2], [0, 1, 2, 3])


def test_export_layer_builds_convolutions_and_checks_shapes():
    lift = grid_group(3, "c4", out_rep="regular", out_size=1)
    conv = export_layer(lift.sharing_basis(), (4, 1, 3, 3), weight=np.random.randn(4, 1, 3, 3),
                        input_shape=(1, 7, 7))
    assert isinstance(conv, nn.Conv2d) and conv.padding == (0, 0) and conv.stride == (1, 1)
    assert sum(p.numel() for p in conv.parameters()) == 9
    assert equivariance_error(conv, grid_group(7, "c4", out_rep="regular", out_size=5),
                              random_state=0, input_shape=(1, 7, 7)) <= 1e-6
    # a plain torch layer: it trains in any loop, and only v moves
    optimizer = torch.optim.SGD(conv.parameters(), lr=0.1)
    conv(torch.randn(2, 1, 7, 7)).square().sum().backward()
    optimizer.step()
    assert equivariance_error(conv, grid_group(7, "c4", out_rep="regular", out_size=5),
                              random_state=0, input_shape=(1, 7, 7)) <= 1e-6
    assert isinstance(export_layer(np.eye(6)[:, :2], (2, 1, 3)), nn.Conv1d)
    with pytest.raises(ValueError, match="weight has shape"):
        export_layer(np.eye(4), (2, 2), weight=np.ones((3, 3)))
    with pytest.raises(ValueError, match="input_shape is for a convolution"):
        export_layer(np.eye(4), (2, 2), input_shape=(1, 2, 1))
    with pytest.raises(ValueError, match=r"input_shape=\(2, 7, 7\) has 2 channel\(s\)"):
        export_layer(np.eye(8), (2, 1, 2, 2), input_shape=(2, 7, 7))
    with pytest.raises(ValueError, match="kernel does not fit"):
        export_layer(np.eye(8), (2, 1, 2, 2), input_shape=(1, 1, 7))
    with pytest.raises(ValueError, match=r"weight_shape must be \(n_out, n_in\)"):
        export_layer(np.eye(8), (2, 1, 2, 2, 1))
    with pytest.raises(ValueError, match=r"must have shape \(8, k\)"):
        export_layer(np.eye(9), (2, 1, 2, 2))


# --------------------------------------------------------------------------- plotting
def test_plot_symmetry_matrix_writes_a_picture(tmp_path):
    pytest.importorskip("matplotlib")
    from msr_sklearn.inspection.plotting import plot_symmetry_matrix

    group = cyclic_group(8)
    soft = noisy_basis(group.sharing_basis(), 1e-2, np.random.default_rng(0))
    path = tmp_path / "u.png"
    figure = plot_symmetry_matrix(soft, (8, 8), reference=group.sharing_basis(),
                                  max_columns=3, path=path)
    assert path.stat().st_size > 1000
    assert len(figure.axes) == 2 * (1 + 3)
    sym = symmetry_with_sharing(soft, 8, 8)
    assert len(plot_symmetry_matrix(sym, max_columns=2).axes) == 3
    with pytest.raises(TypeError, match="needs weight_shape"):
        plot_symmetry_matrix(soft)


def test_plotting_without_matplotlib_says_how_to_install(monkeypatch):
    from msr_sklearn.inspection.plotting import plot_symmetry_matrix

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot_symmetry_matrix(np.eye(4)[:, :2], (2, 2))


# --------------------------------------------------------------------------- integration
def test_meta_learned_sharing_on_permutation_tasks_is_reported_as_symmetric_group():
    from msr_sklearn import MetaSymmetryLearner
    from msr_sklearn.datasets import make_permutation_tasks

    n = 6
    X, y, truth = make_permutation_tasks(n_tasks=300, n_samples=10, n_features=n,
                                         return_subspace=True, random_state=0)
    # 300 steps: the output weight's initial v0 now has the norm of the module's own
    # weight, sqrt(n_weights / k) = 4.2x the old N(0, 1/n_out^2) filters, and after 200
    # steps span(U) is 0.154 rad from the truth (0.080 from the old v0; 0.058 after 300)
    learner = MetaSymmetryLearner(n_filters=2, bias=False, n_support=8, meta_lr=0.03,
                                  n_meta_steps=300, random_state=0).fit(X, y)
    report = symmetry_report(learner.symmetry_)
    assert report["passed"].all(), report
    assert report.attrs["summary"]["order"] == math.factorial(n)
    assert report.attrs["summary"]["containment_angle"] < 0.15
    assert compare_subspaces(learner.symmetry_.symmetry_matrix(0), truth).max_angle < 0.15
    hard = export_layer(harden_to_group(learner.symmetry_, report), (n, n),
                        weight=(learner.symmetry_.symmetry_matrix(0)
                                @ learner.symmetry_.initial_filters(0)).reshape(n, n))
    assert equivariance_error(hard, symmetric_group(n), random_state=0) <= 1e-6
