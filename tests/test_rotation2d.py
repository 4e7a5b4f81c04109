"""The paper's 2-D steerable-convolution tasks (msr_sklearn.datasets.rotation2d)."""

import numpy as np
import pytest

from msr_sklearn.datasets import make_rotation2d_tasks, rotation2d_sharing
from msr_sklearn.groups import transform_grid


def _compose(a, b):
    """Group law of elements ``(k, f)``: rotate by ``k * 45°`` after ``f`` flips."""
    (k1, f1), (k2, f2) = a, b
    return ((k1 + (-1) ** f1 * k2) % 8, f1 ^ f2)


def _inverse(a):
    k, f = a
    return ((-k) % 8, 0) if f == 0 else (k, 1)


def _elements(group):
    return [(c % 8, c // 8) for c in range(8 if group == "c8" else 16)]


def _conv(images, filters):
    """Valid cross-correlation of (n, H, W) images with (C, 3, 3) filters -> (n, C, H-2, W-2)."""
    windows = np.lib.stride_tricks.sliding_window_view(images, (3, 3), axis=(-2, -1))
    return np.einsum("nijab,cab->ncij", windows, filters)


def _recovered_filters(X, y):
    """Least-squares filters (C, 9) of one task from its images and maps, and the residual."""
    c = y.shape[1]
    windows = np.lib.stride_tricks.sliding_window_view(X[:, 0].astype(np.float64), (3, 3),
                                                       axis=(-2, -1))
    patches = windows.reshape(-1, 9)
    targets = y.astype(np.float64).transpose(0, 2, 3, 1).reshape(-1, c)
    filters, *_ = np.linalg.lstsq(patches, targets, rcond=None)
    residual = np.linalg.norm(patches @ filters - targets) / np.linalg.norm(targets)
    return filters.T, residual


@pytest.mark.parametrize("group, channels", [("c8", 24), ("d8", 48)])
def test_shapes_dtypes_and_subspace(group, channels):
    X, y, U = make_rotation2d_tasks(group, n_tasks=3, n_samples=4, image_size=10,
                                    return_subspace=True, random_state=0)
    assert X.shape == (3, 4, 1, 10, 10) and y.shape == (3, 4, channels, 8, 8)
    assert X.dtype == np.float32 and y.dtype == np.float32
    assert U.shape == (channels * 9, 18)
    np.testing.assert_allclose(U.T @ U, np.eye(18), atol=1e-12)
    assert rotation2d_sharing(group, n_fields=2).shape == (channels // 3 * 2 * 9, 12)


def test_default_size_is_the_papers():
    X, y = make_rotation2d_tasks("c8", n_tasks=1, random_state=0)
    assert X.shape == (1, 20, 1, 32, 32) and y.shape == (1, 20, 24, 30, 30)


def test_deterministic_and_tasks_do_not_depend_on_n_tasks():
    a = make_rotation2d_tasks("d8", n_tasks=2, image_size=6, random_state=3)
    b = make_rotation2d_tasks("d8", n_tasks=5, image_size=6, random_state=3)
    c = make_rotation2d_tasks("d8", n_tasks=2, image_size=6, random_state=4)
    np.testing.assert_array_equal(a[0], b[0][:2])
    np.testing.assert_array_equal(a[1], b[1][:2])
    assert not np.allclose(a[1], c[1])


@pytest.mark.parametrize("group", ["c8", "d8"])
def test_targets_are_a_convolution_with_filters_in_the_span(group):
    X, y, U = make_rotation2d_tasks(group, n_tasks=4, n_samples=3, image_size=12,
                                    return_subspace=True, random_state=1)
    weights = []
    for t in range(4):
        filters, residual = _recovered_filters(X[t], y[t])
        assert residual < 1e-6                    # float32 targets of an exact conv
        w = filters.ravel()                       # row-major (C_out, 1, 3, 3)
        assert np.linalg.norm(w - U @ (U.T @ w)) < 1e-5 * np.linalg.norm(w)
        weights.append(w)
    # the tasks do use the whole span, not a smaller part of it
    assert np.linalg.matrix_rank(U.T @ np.stack(weights, axis=1), tol=1e-6) == 4


@pytest.mark.parametrize("group", ["c8", "d8"])
def test_target_variance_is_e2cnn_he_scale(group):
    # generalized He init over e2cnn's normalized basis: E||W_c||^2 = 1/|G| + 4/8
    _, y = make_rotation2d_tasks(group, n_tasks=300, n_samples=2, image_size=5, random_state=0)
    expected = 0.625 if group == "c8" else 0.5625
    assert abs(y.var() - expected) < 0.08 * expected


@pytest.mark.parametrize("group", ["c8", "d8"])
def test_90_degree_rotations_and_flips_are_exact(group):
    rng = np.random.default_rng(0)
    U = rotation2d_sharing(group, n_fields=1)
    elements = _elements(group)
    filters = (U @ rng.standard_normal(U.shape[1])).reshape(len(elements), 3, 3)
    images = rng.standard_normal((2, 11, 11))
    maps = _conv(images, filters)
    for r in range(4):
        for f in ((0, 1) if group == "d8" else (0,)):
            g = (2 * r, f)
            moved = _conv(transform_grid(images, (r, f)), filters)
            source = [elements.index(_compose(_inverse(g), c)) for c in elements]
            expected = transform_grid(maps[:, source], (r, f))
            np.testing.assert_allclose(moved, expected, atol=1e-12)


def _rotation_error(filters, elements, steps, rng, width=2.5, radius=10):
    """Relative equivariance error of a lifting conv for a rotation by ``steps * 45°``.

    The input is a smooth function (a sum of Gaussian blobs), so the rotated input is
    evaluated exactly instead of interpolated, and so is the map of the unrotated
    input at the rotated positions: only the filters' own error is left.
    """
    centres, amplitudes = rng.uniform(-8, 8, (12, 2)), rng.standard_normal(12)

    def image(points):
        d2 = ((points[..., None, :] - centres) ** 2).sum(-1)
        return (amplitudes * np.exp(-d2 / (2 * width ** 2))).sum(-1)

    i, j = np.meshgrid(np.arange(3), np.arange(3), indexing="ij")
    offsets = np.stack([(j - 1).ravel(), (1 - i).ravel()], axis=1)   # x right, y up
    gx, gy = np.meshgrid(np.arange(-radius, radius + 1), np.arange(-radius, radius + 1))
    points = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(float)
    points = points[np.hypot(*points.T) <= radius]
    a = np.pi / 4 * steps
    inverse = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    moved = filters @ image((points[:, None] + offsets) @ inverse.T).T
    unmoved = filters @ image((points @ inverse.T)[:, None] + offsets).T
    source = [elements.index(_compose(_inverse((steps, 0)), c)) for c in elements]
    return np.linalg.norm(moved - unmoved[source]) / np.linalg.norm(moved)


@pytest.mark.parametrize("group", ["c8", "d8"])
def test_45_degree_rotation_is_approximate_on_smooth_inputs(group):
    rng = np.random.default_rng(0)
    U = rotation2d_sharing(group, n_fields=1)
    elements = _elements(group)
    steerable, unconstrained, quarter = [], [], []
    for _ in range(10):
        filters = (U @ rng.standard_normal(U.shape[1])).reshape(len(elements), 9)
        steerable.append(_rotation_error(filters, elements, 1, rng))
        quarter.append(_rotation_error(filters, elements, 2, rng))
        unconstrained.append(_rotation_error(rng.standard_normal((len(elements), 9)),
                                             elements, 1, rng))
    # measured: mean 0.009, max 0.02 over 20 inputs of blob width 2.5 px
    assert max(steerable) < 0.04
    assert max(quarter) < 1e-12
    assert min(unconstrained) > 0.8


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="group must be one of"):
        make_rotation2d_tasks("c4")
    with pytest.raises(ValueError, match="image_size must be an integer >= 3"):
        make_rotation2d_tasks(image_size=2)
    with pytest.raises(ValueError, match="n_fields"):
        rotation2d_sharing("c8", n_fields=0)
