"""The symmetry report's default candidates on conv layers and dense layers on images.

The copy order of a learned layer is arbitrary, so the exact sharings here have their
copies shuffled: the report must find the permutation itself.
"""

import math

import numpy as np
import pytest
import torch
from torch import nn

from msr_sklearn import LearnedSymmetry, MetaSymmetryLearner
from msr_sklearn.datasets import make_rotation_tasks
from msr_sklearn.groups import (
    FiniteGroup,
    grid_group,
    grid_transforms,
    transform_grid,
    trivial_group,
)
from msr_sklearn.inspection import (
    default_candidates,
    equivariance_error,
    export_layer,
    harden_to_group,
    symmetry_report,
)
from msr_sklearn.models import MLP, ConvNet
from msr_sklearn.sharing import (
    ConvFilterSharing,
    exact_group_conv_sharing,
    exact_lifting_sharing,
)

ORDER = {"c4": 4, "d4": 8}


# --------------------------------------------------------------------------- helpers
def shuffle_copies(sharing, out_order, in_order=None):
    """The sharing with output copy ``j`` := copy ``out_order[j]`` (and the input copies)."""
    m, m_in = sharing.n_copies, sharing.in_copies
    spatial = sharing.factors[2].detach().double()
    spatial = spatial.reshape(m, m_in, -1, spatial.shape[1])[list(out_order)]
    if in_order is not None:
        spatial = spatial[:, list(in_order)]
    with torch.no_grad():
        sharing.factors[2].copy_(spatial.reshape(sharing.factors[2].shape))
    return sharing


def perturb(sharing, noise, seed=0):
    """Every factor plus noise of about ``noise`` per (unit) column."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for factor in sharing.factors:
            factor.add_(noise * torch.randn(factor.shape, generator=gen) / factor.shape[0] ** 0.5)
    return sharing


def regular_permutation(name):
    """How rot90 and flip permute the channels of a regular field (canonical order)."""
    group = grid_group(3, name, out_rep="regular", out_size=1)
    return [out.argmax(axis=1) for _, out in group.generator_matrices()]


def reordered(perm, order):
    """``perm`` seen through copies in ``order``: ``order^-1 ∘ perm ∘ order``."""
    return np.argsort(order)[perm[order]]


def with_channel_order(group, order, n_fields, pixels):
    """``group`` acting on outputs whose copies come in ``order`` in every field."""
    m = len(order)
    channels = (np.arange(n_fields)[:, None] * m + np.asarray(order)).ravel()
    shuffle = np.eye(group.n_out)[(channels[:, None] * pixels + np.arange(pixels)).ravel()]
    matrices = group.generator_matrices()
    return FiniteGroup([m_in for m_in, _ in matrices],
                       [shuffle @ m_out @ shuffle.T for _, m_out in matrices])


def passing(report):
    return report.index[report["passed"]].tolist()


class ImageMLP(nn.Module):
    """The built-in MLP on images ``(n, C, H, W)`` (or flat rows), flattened."""

    def __init__(self, input_shape, n_outputs, bias=True):
        super().__init__()
        self.mlp = MLP(math.prod(input_shape), n_outputs, bias=bias)

    def forward(self, x):
        return self.mlp(x.flatten(-3) if x.dim() > 2 else x)


def dense_symmetry(U, n_features, n_outputs, input_shape=None, flat=False):
    """A LearnedSymmetry whose single dense layer has sharing U.

    ``input_shape`` (C, H, W): its network reads such images (``flat``: flat rows it
    reshapes, through ``module__input_shape``); None: the default MLP on flat rows.
    """
    data = {"n_features": n_features} if input_shape is None or flat else \
        {"input_shape": input_shape}
    module = {} if input_shape is None else {"module": ImageMLP, "module__bias": False}
    if flat and input_shape is not None:
        module["module__input_shape"] = input_shape
    sym = LearnedSymmetry.initial(**module, **data, n_outputs=n_outputs, layer="msr",
                                  n_filters=U.shape[1], bias=False, random_state=0)
    # set before anything reads the symmetry (it caches the network it builds)
    (key,) = [k for k in sym.state if k.endswith(".sharing.basis")]
    sym.state[key] = np.asarray(U.T, dtype=np.float32)
    return sym


def dense_lifting_subspace(name, image_size=5):
    """The dense weights ``(m*9 * image_size², 9)`` of the tasks' lifting convolutions."""
    _, _, filters = make_rotation_tasks(name, n_tasks=1, image_size=image_size,
                                        return_subspace=True, random_state=0)
    filters = torch.as_tensor(filters, dtype=torch.float64)  # (m*9, 9)
    images = torch.eye(image_size ** 2, dtype=torch.float64).reshape(-1, 1, image_size,
                                                                     image_size)
    # column j: the dense weight of the conv with filter values e_j
    columns = [torch.nn.functional.conv2d(images, (filters @ v).reshape(ORDER[name], 1, 3, 3))
               .reshape(image_size ** 2, -1).T.reshape(-1) for v in torch.eye(9).double()]
    return np.linalg.qr(torch.stack(columns, 1).numpy())[0]


# --------------------------------------------------------------------------- MSR-Conv
@pytest.mark.parametrize("name", ["c4", "d4"])
def test_lifting_conv_with_shuffled_copies_is_named_and_its_permutation_found(name):
    m = ORDER[name]
    order = np.random.default_rng(1).permutation(m)
    sharing = shuffle_copies(exact_lifting_sharing(name, n_fields=2, in_channels=2), order)
    report = symmetry_report(sharing)
    expected = ["rot90"] if name == "c4" else ["rot90", "flip"]
    assert report.index.tolist() == ["rot90", "flip"]
    assert passing(report) == expected
    assert report.loc[expected, "score"].max() < 1e-6
    assert (report.loc[~report["passed"], "score"] > 1.0).all()
    summary = report.attrs["summary"]
    assert summary["name"] == name.upper() and summary["order"] == m
    assert summary["dim_group"] == summary["dim"] == 2 * 2 * 9
    assert summary["containment_angle"] < 1e-6 and summary["excess"] < 1e-12
    group = report.attrs["group"]
    assert group.weight_shape == (2 * m, 2 * 9)
    for (_, out), canonical in zip(group.generator_matrices(), regular_permutation(name)):
        sigma = reordered(canonical, order)  # the same permutation in both fields
        np.testing.assert_array_equal(out.argmax(axis=1), np.concatenate([sigma, sigma + m]))


@pytest.mark.parametrize("name", ["c4", "d4"])
def test_coupled_group_conv_with_shuffled_copies_on_both_sides_is_named(name):
    m = ORDER[name]
    rng = np.random.default_rng(2)
    out_order, in_order = rng.permutation(m), rng.permutation(m)
    sharing = shuffle_copies(exact_group_conv_sharing(name, n_fields=1, in_fields=2),
                             out_order, in_order)
    report = symmetry_report(sharing)
    assert report.attrs["summary"]["name"] == name.upper()
    assert report.loc[passing(report), "score"].max() < 1e-6
    assert report.attrs["summary"]["containment_angle"] < 1e-6
    rot_in, rot_out = report.attrs["group"].generator_matrices()[0]
    rot = regular_permutation(name)[0]
    np.testing.assert_array_equal(rot_out.argmax(axis=1), reordered(rot, out_order))
    in_copies = rot_in.argmax(axis=1).reshape(2 * m, 9)[:, 0] // 9  # input channel moves
    np.testing.assert_array_equal(in_copies[:m], reordered(rot, in_order))


@pytest.mark.parametrize("name", ["c4", "d4"])
def test_near_equivariant_conv_is_named_and_hardened_into_an_exact_one(name):
    m = ORDER[name]
    order = np.random.default_rng(3).permutation(m)
    sharing = perturb(shuffle_copies(exact_lifting_sharing(name, n_fields=2), order), 0.05)
    report = symmetry_report(sharing)
    assert report.attrs["summary"]["name"] == name.upper()
    assert 0.01 < report.loc[passing(report), "score"].max() < 0.15
    hard = harden_to_group(sharing, report)
    assert hard.shape == (2 * m * 9, 18)
    with torch.no_grad():
        weight = sharing(torch.randn(sharing.n_filters)).double().numpy()
    # the layer on one 3x3 patch: what the report's group acts on
    soft_patch = export_layer(sharing.matrix().detach().double(), (2 * m, 9),
                              weight=weight.reshape(2 * m, 9))
    hard_patch = export_layer(hard, (2 * m, 9), weight=weight.reshape(2 * m, 9))
    assert equivariance_error(soft_patch, report.attrs["group"], random_state=0) > 1e-3
    assert equivariance_error(hard_patch, report.attrs["group"], random_state=0) < 1e-6
    # the convolution on 7x7 images, whose output channels come in the shuffled order
    images = with_channel_order(grid_group(7, name, out_rep="regular", out_size=5,
                                           n_out_fields=2), order, 2, 25)
    conv = export_layer(hard, (2 * m, 1, 3, 3), weight=weight, input_shape=(1, 7, 7))
    assert equivariance_error(conv, images, random_state=0, input_shape=(1, 7, 7)) < 1e-6
    canonical = grid_group(7, name, out_rep="regular", out_size=5, n_out_fields=2)
    assert equivariance_error(conv, canonical, random_state=0, input_shape=(1, 7, 7)) > 0.5


def conv_sharing(weight_shape, n_copies=1, in_copies=1, factor_filters=None, seed=0):
    """A ConvFilterSharing bound to ``weight_shape`` with random factors."""
    return ConvFilterSharing(n_copies, in_copies, factor_filters).bind(
        weight_shape, torch.Generator().manual_seed(seed))


def test_random_conv_sharings_name_no_group():
    for sharing in (conv_sharing((8, 1, 3, 3), n_copies=4),
                    conv_sharing((8, 8, 3, 3), n_copies=4, in_copies=4),
                    conv_sharing((3, 2, 3, 3))):
        report = symmetry_report(sharing)
        assert not report["passed"].any(), sharing
        assert report["score"].min() > 0.8
        assert report.attrs["summary"]["name"] == "trivial"


def test_symmetric_filters_without_copies_are_named_by_their_pixels():
    # one latent value per orbit of the 3x3 grid under D4: centre, edges, corners
    pixel_group = grid_group(3, "d4", out_size=1)  # D4 on the pixels, the output fixed
    spatial = pixel_group.sharing_basis()
    sharing = conv_sharing((3, 2, 3, 3), factor_filters=(3, 2, spatial.shape[1]))
    with torch.no_grad():
        sharing.factors[2].copy_(torch.as_tensor(spatial))
    report = symmetry_report(sharing)
    assert report.attrs["summary"]["name"] == "D4"
    assert report["score"].max() < 1e-6
    for _, out in report.attrs["group"].generator_matrices():
        np.testing.assert_array_equal(out, np.eye(3))  # only the pixels move


def test_a_rectangular_kernel_is_tried_with_rot180_and_flip():
    pixels = transform_grid(np.arange(15).reshape(3, 5), (2, 0)).ravel()
    spatial = np.vstack([np.eye(15), np.eye(15)[pixels]]) / np.sqrt(2)  # a filter, rotated
    sharing = conv_sharing((2, 1, 3, 5), n_copies=2, factor_filters=(1, 1, 15))
    with torch.no_grad():
        sharing.factors[2].copy_(torch.as_tensor(spatial))
    report = symmetry_report(sharing)
    assert report.index.tolist() == ["rot180", "flip"]
    assert passing(report) == ["rot180"] and report.attrs["summary"]["name"] == "C2"


def test_conv_layers_of_a_learned_symmetry_are_reported_by_index():
    sym = LearnedSymmetry.initial(ConvNet, n_features=81, n_outputs=3,
                                  module__input_shape=(1, 9, 9), module__channels=(8, 8),
                                  module__n_copies=4, module__couple_copies=True,
                                  module__global_pool="mean", random_state=0)
    exact = [shuffle_copies(exact_lifting_sharing("c4", n_fields=2), [2, 0, 3, 1]),
             exact_group_conv_sharing("c4", n_fields=2, in_fields=2)]
    for name, sharing in zip(["features.0.weight", "features.2.weight"], exact):
        for j, factor in enumerate(sharing.factors):
            key = f"shared.{name.replace('.', '-')}.sharing.factors.{j}"
            sym.state[key] = factor.detach().numpy()
    assert sym.weight_names == ["features.0.weight", "features.2.weight", "head.0.weight"]
    for layer in (0, 1, "features.2.weight"):
        report = symmetry_report(sym, layer=layer)
        assert report.attrs["summary"]["name"] == "C4", layer
        hard = harden_to_group(sym, report, layer=layer)
        assert report.attrs["group"].generator_residuals(hard).max() < 1e-10
    # the dense head reads the pooled channels (layer 2: the pooling has no weights)
    with pytest.raises(ValueError, match=r"layer 2 \(head.0.weight\) has weights of shape "
                                         r"\(3, 8\)"):
        symmetry_report(sym, layer=2)
    assert equivariance_error(sym, trivial_group(8, 3), layer=2) == 0.0
    # the same network under a policy that shares only the first conv, the rest adapted
    # as is: the weights adapted as is count as layers, with the identity U
    partial = LearnedSymmetry.initial(ConvNet, {"features.0.weight": exact[0]}, n_features=81,
                                      n_outputs=3, module__input_shape=(1, 9, 9),
                                      module__channels=(8, 8), module__global_pool="mean",
                                      random_state=0)
    assert symmetry_report(partial).attrs["summary"]["name"] == "C4"
    plain = symmetry_report(partial, layer=1)  # all 8 output channels one field of copies
    assert not plain["passed"].any() and plain.attrs["summary"]["dim"] == 8 * 8 * 9


# --------------------------------------------------------------------------- dense layers
@pytest.mark.parametrize("name", ["c4", "d4"])
def test_dense_lifting_map_on_images_is_named(name):
    m = ORDER[name]
    order = np.random.default_rng(4).permutation(m)
    U = dense_lifting_subspace(name).reshape(m, 9 * 25, 9)[order].reshape(-1, 9)
    sym = dense_symmetry(U, 25, m * 9, input_shape=(1, 5, 5))
    report = symmetry_report(sym)
    maps = f"{m}x3x3 maps"
    assert report.index.tolist() == ["rot90, invariant", "flip, invariant", f"rot90, {maps}",
                                     f"flip, {maps}"]
    expected = [f"rot90, {maps}"] + ([f"flip, {maps}"] if name == "d4" else [])
    assert passing(report) == expected
    assert report.loc[expected, "score"].max() < 1e-6
    assert report.attrs["summary"]["name"] == name.upper()
    hard = harden_to_group(sym, report)
    weight = (U @ np.random.default_rng(0).standard_normal(9)).reshape(m * 9, 25)
    images = with_channel_order(grid_group(5, name, out_rep="regular", out_size=3), order, 1, 9)
    assert equivariance_error(export_layer(hard, (m * 9, 25), weight=weight), images,
                              random_state=0) < 1e-6


@pytest.mark.parametrize("name", ["c4", "d4"])
def test_invariant_dense_maps_are_named_and_random_ones_are_not(name):
    invariant = grid_group(5, name, out_size=1, n_out_fields=3).sharing_basis()  # (75, r)
    report = symmetry_report(invariant, weight_shape=(3, 25), input_shape=(1, 5, 5))
    assert report.index.tolist() == ["rot90, invariant", "flip, invariant"]  # 3 % 9 != 0
    assert report.attrs["summary"]["name"] == name.upper()
    random = np.linalg.qr(np.random.default_rng(5).standard_normal((36 * 25, 9)))[0]
    report = symmetry_report(dense_symmetry(random, 25, 36, input_shape=(1, 5, 5)))
    assert not report["passed"].any() and report["score"].min() > 0.8
    assert report.attrs["summary"]["name"] == "trivial"


def test_dense_output_layouts_follow_the_kernel_size():
    U = np.eye(25 * 25)[:, :4]
    names = default_candidates(U, weight_shape=(25, 25), input_shape=(1, 5, 5)).names
    assert names == ("rot90, invariant", "flip, invariant", "rot90, 1x5x5 maps",
                     "flip, 1x5x5 maps")  # 25 values: no 3x3 maps, one 5x5 map
    U = np.eye(36 * 25)[:, :4]
    for kernel, maps in ((None, "4x3x3"), (3, "4x3x3"), (4, "9x2x2"), (5, "36x1x1")):
        names = default_candidates(U, weight_shape=(36, 25), input_shape=(1, 5, 5),
                                   kernel_size=kernel).names
        assert names[2:] == (f"rot90, {maps} maps", f"flip, {maps} maps"), kernel
    wide = default_candidates(np.eye(3 * 20)[:, :2], weight_shape=(3, 20),
                              input_shape=(1, 4, 5)).names
    assert wide == ("rot180, invariant", "flip, invariant")  # not square: no rot90


def test_the_image_a_dense_layer_reads_comes_from_the_network():
    """Tasks of images, or flat rows the module reshapes (module__input_shape): the first
    dense layer reads those images; a dense layer elsewhere or a flat MLP does not."""
    U = dense_lifting_subspace("c4")
    for sym in (dense_symmetry(U, 25, 36, input_shape=(1, 5, 5)),
                dense_symmetry(U, 25, 36, input_shape=(1, 5, 5), flat=True)):
        assert default_candidates(sym).names[2:] == ("rot90, 4x3x3 maps", "flip, 4x3x3 maps")
        assert symmetry_report(sym).attrs["summary"]["name"] == "C4"
    deep = LearnedSymmetry.initial(ImageMLP, input_shape=(1, 5, 5), n_outputs=36,
                                   random_state=0)  # a hidden-free MLP: layer 0 only
    assert default_candidates(deep).names[0] == "rot90, invariant"
    with pytest.raises(ValueError, match=r"pass input_shape=\(C, H, W\)"):
        default_candidates(dense_symmetry(U, 25, 36))  # flat rows, no image recorded


def test_learned_dense_layer_on_rotation_images_is_named_c4():
    X, y = make_rotation_tasks("c4", n_tasks=500, n_samples=10, image_size=5, random_state=0)
    images = X.reshape(500, 10, 1, 5, 5)  # tasks of (n, 1, 5, 5) images
    learner = MetaSymmetryLearner(ImageMLP, layer="msr", n_filters=9, module__bias=False,
                                  n_support=4, meta_lr=0.01, n_meta_steps=1000,
                                  random_state=0).fit(images, y)
    assert learner.symmetry_.input_shape == (1, 5, 5)
    report = symmetry_report(learner.symmetry_)
    assert passing(report) == ["rot90, 4x3x3 maps"]
    assert report.loc["rot90, 4x3x3 maps", "score"] < 0.25
    assert report.attrs["summary"]["name"] == "C4"


# --------------------------------------------------------------------------- refusals
def test_bad_candidates_and_layers_are_refused_with_clear_messages():
    # the old layer="msr_conv2d": a ConvNet without a head, its maps the outputs
    sym = LearnedSymmetry.initial(ConvNet, n_features=49, n_outputs=100,
                                  module__input_shape=(1, 7, 7), module__channels=(4,),
                                  module__n_copies=4, module__n_outputs=None,
                                  random_state=0)  # layer 0: weights (4, 1, 3, 3)
    wrong = grid_group(3, "c4", out_rep="regular", out_size=1, n_out_fields=2)  # (8, 9)
    with pytest.raises(ValueError, match=r"the candidates act on weights of shape \(8, 9\); "
                                         r"layer 0 \(features.0.weight\) has weights of shape "
                                         r"\(4, 1, 3, 3\)"):
        symmetry_report(sym, candidates=wrong)
    with pytest.raises(TypeError, match="a FiniteGroup or a sequence of FiniteGroup; got int"):
        symmetry_report(sym, candidates=3)
    with pytest.raises(TypeError, match="must be FiniteGroups; got str"):
        symmetry_report(sym, candidates=[wrong, "rot90"])
    with pytest.raises(ValueError, match="candidates is empty"):
        symmetry_report(sym, candidates=[])
    with pytest.raises(ValueError, match=r"layer=1 is out of range for 1 adapted weight"):
        symmetry_report(sym, layer=1)
    with pytest.raises(ValueError, match="'features.0.bias' is not an adapted weight"):
        symmetry_report(sym, layer="features.0.bias")
    with pytest.raises(TypeError, match="bind it to a weight shape"):
        symmetry_report(ConvFilterSharing(n_copies=4))
    dense = dense_symmetry(np.eye(36 * 25)[:, :3], 25, 36)  # no input_shape
    with pytest.raises(ValueError, match=r"square layer .* pass input_shape=\(C, H, W\)"):
        symmetry_report(dense)
    with pytest.raises(ValueError, match=r"input_shape=\(1, 7, 7\) has 49 values; layer 0 "
                                         r"\(0.weight\) reads 25 inputs"):
        symmetry_report(dense, input_shape=(1, 7, 7))
    with pytest.raises(ValueError, match="kernel_size=6 exceeds the 5x5 image"):
        symmetry_report(dense, input_shape=(1, 5, 5), kernel_size=6)
    with pytest.raises(ValueError, match="no rotation or flip moves its grids"):
        symmetry_report(conv_sharing((4, 3, 1, 1), n_copies=2))
    # a plain array with a conv weight shape reads all output channels as one field
    U = exact_lifting_sharing("d4").matrix().detach()
    report = symmetry_report(U, weight_shape=(8, 1, 3, 3))
    assert report.attrs["summary"]["name"] == "D4"
    assert len(grid_transforms("d4")) == report.attrs["summary"]["order"]
