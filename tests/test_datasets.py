"""Task generators: shapes, determinism, exact generating subspaces, equivariance."""

import numpy as np
import pytest
import torch

from msr_sklearn.datasets import (
    make_permutation_tasks,
    make_rotation_tasks,
    make_translation_tasks,
)
from msr_sklearn.groups import (
    compare_subspaces,
    grid_group,
    grid_transforms,
    symmetric_group,
)
from msr_sklearn.sharing import FixedSharing, exact_lifting_sharing


def rotation_conv(group, n_fields, image_size, kernel_size, subspace):
    """A valid convolution of flat images whose filter tensor is ``subspace @ v``
    (float64): ``conv(x, filters=v)``."""
    m = len(grid_transforms(group))
    shape = (n_fields * m, 1, kernel_size, kernel_size)
    sharing = FixedSharing(torch.as_tensor(subspace)).bind(shape).double()

    def conv(x, filters):
        images = x.reshape(len(x), 1, image_size, image_size)
        return torch.nn.functional.conv2d(images, sharing(filters)).reshape(len(x), -1)
    return conv


def fit_in_subspace(design_columns, y):
    """Least-squares coefficients of y on the columns; returns (coef, relative residual)."""
    A = np.stack([c.ravel() for c in design_columns], axis=1)
    coef, *_ = np.linalg.lstsq(A, y.ravel(), rcond=None)
    return coef, np.linalg.norm(A @ coef - y.ravel()) / np.linalg.norm(y)


@pytest.mark.parametrize("group,n_fields", [("c4", 1), ("d4", 1), ("c4", 2)])
def test_rotation_tasks_have_the_documented_shapes(group, n_fields):
    m = {"c4": 4, "d4": 8}[group]
    X, y, U = make_rotation_tasks(group, n_tasks=3, n_samples=5, image_size=6, kernel_size=3,
                                  n_fields=n_fields, return_subspace=True, random_state=0)
    assert X.shape == (3, 5, 36)
    assert y.shape == (3, 5, n_fields * m * 4 * 4)
    assert U.shape == (n_fields * m * 9, n_fields * 9)
    np.testing.assert_allclose(U.T @ U, np.eye(n_fields * 9), atol=1e-12)


def test_generators_are_deterministic_given_random_state():
    for make in (lambda rs: make_rotation_tasks("d4", n_tasks=2, n_samples=3, image_size=5,
                                                random_state=rs),
                 lambda rs: make_permutation_tasks(n_tasks=2, n_samples=3, random_state=rs)):
        (X1, y1), (X2, y2), (_, y3) = make(0), make(0), make(1)
        np.testing.assert_array_equal(X1, X2)
        np.testing.assert_array_equal(y1, y2)
        assert not np.allclose(y1, y3)


@pytest.mark.parametrize("group,n_fields", [("c4", 1), ("d4", 2)])
def test_rotation_targets_come_from_a_filter_in_the_subspace(group, n_fields):
    size, k = 6, 3
    X, y, U = make_rotation_tasks(group, n_tasks=4, n_samples=3, image_size=size,
                                  n_fields=n_fields, return_subspace=True, random_state=0)
    conv = rotation_conv(group, n_fields, size, k, U)
    coefs = []
    for t in range(4):
        # the response of each basis filter, through the package's own conv layer
        with torch.no_grad():
            x = torch.as_tensor(X[t])
            columns = [conv(x, filters=torch.as_tensor(e)).numpy() for e in np.eye(U.shape[1])]
        coef, residual = fit_in_subspace(columns, y[t])
        assert residual < 1e-12
        coefs.append(coef)
    # the tasks' filters are generic: together they span the whole subspace
    assert np.linalg.matrix_rank(np.array(coefs)) == min(4, U.shape[1])


def test_rotation_subspace_is_the_exact_lifting_sharing():
    for group in ("c4", "d4"):
        _, _, U = make_rotation_tasks(group, n_tasks=1, image_size=5, n_fields=2,
                                      return_subspace=True, random_state=0)
        lift = grid_group(3, group, out_rep="regular", out_size=1, n_out_fields=2)
        assert compare_subspaces(U, lift.sharing_basis()).max_angle < 1e-10
    # and what MSR-Conv expresses with identity field factors and stacked rotations
    with torch.no_grad():
        conv_u = exact_lifting_sharing("c4", n_fields=2).double().matrix().numpy()
    _, _, U = make_rotation_tasks("c4", n_tasks=1, image_size=5, n_fields=2,
                                  return_subspace=True, random_state=0)
    assert compare_subspaces(conv_u, U).max_angle < 1e-10


@pytest.mark.parametrize("group", ["c4", "d4"])
def test_rotation_maps_are_exactly_equivariant(group):
    size = 5
    X, y = make_rotation_tasks(group, n_tasks=2, n_samples=40, image_size=size, random_state=0)
    lifting = grid_group(size, group, out_rep="regular", out_size=size - 2)
    for t in range(2):
        # the task's dense map, recovered from its (noise-free) samples
        W = np.linalg.lstsq(X[t], y[t], rcond=None)[0].T
        assert np.linalg.norm(X[t] @ W.T - y[t]) < 1e-10 * np.linalg.norm(y[t])
        residuals = lifting.generator_residuals(W.reshape(-1, 1))
        assert residuals.max() < 1e-10
        # and it is not equivariant if the output channels are left in place
        fixed = grid_group(size, group, out_rep="trivial", out_size=size - 2,
                           n_out_fields=len(grid_transforms(group)))
        assert fixed.generator_residuals(W.reshape(-1, 1)).max() > 0.1


def test_permutation_targets_come_from_the_deepsets_subspace():
    n = 6
    X, y, U = make_permutation_tasks(n_tasks=5, n_samples=4, n_features=n,
                                     return_subspace=True, random_state=0)
    assert X.shape == y.shape == (5, 4, n)
    np.testing.assert_allclose(U.T @ U, np.eye(2), atol=1e-12)
    assert compare_subspaces(U, symmetric_group(n).sharing_basis()).max_angle < 1e-10
    coefs = []
    for t in range(5):
        columns = [X[t] @ u.reshape(n, n).T for u in U.T]
        coef, residual = fit_in_subspace(columns, y[t])
        assert residual < 1e-12
        coefs.append(coef)
    assert np.linalg.matrix_rank(np.array(coefs)) == 2
    # y commutes with permuting the features
    perm = np.random.default_rng(0).permutation(n)
    W = (U @ coefs[0]).reshape(n, n)
    np.testing.assert_allclose(X[0][:, perm] @ W.T, (X[0] @ W.T)[:, perm], atol=1e-12)


def test_both_terms_of_the_permutation_maps_matter():
    n = 8
    X, y = make_permutation_tasks(n_tasks=4000, n_samples=1, n_features=n, random_state=0)
    mean_part = y.mean(-1)                      # (a + b) mean(x)
    deviation = y - y.mean(-1, keepdims=True)   # a (x - mean(x))
    ratio = np.mean(mean_part ** 2) / np.mean(deviation ** 2)
    # E[(a + b)^2] E[mean(x)^2] = (1 + n) / n  over  E[a^2] (n - 1) / n per entry
    assert ratio == pytest.approx((1 + n) / (n - 1), rel=0.15)


def test_noise_is_added_at_the_requested_scale():
    clean = make_permutation_tasks(n_tasks=50, n_samples=20, random_state=0)[1]
    noisy = make_permutation_tasks(n_tasks=50, n_samples=20, noise=0.5, random_state=0)[1]
    assert np.std(noisy - clean) == pytest.approx(0.5, rel=0.05)
    clean = make_rotation_tasks(n_tasks=5, image_size=5, random_state=0)[1]
    noisy = make_rotation_tasks(n_tasks=5, image_size=5, noise=0.5, random_state=0)[1]
    assert np.std(noisy - clean) == pytest.approx(0.5, rel=0.05)


@pytest.mark.parametrize("kwargs,match", [
    ({"group": "c8"}, "group must be one of"),
    ({"n_tasks": 0}, "n_tasks must be a positive integer"),
    ({"image_size": 2.5}, "image_size must be a positive integer"),
    ({"n_fields": True}, "n_fields must be a positive integer"),
    ({"kernel_size": 7, "image_size": 5}, "kernel_size=7 exceeds image_size=5"),
    ({"noise": -1.0}, "noise must be >= 0"),
])
def test_rotation_tasks_reject_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_rotation_tasks(**kwargs)


@pytest.mark.parametrize("kwargs,match", [
    ({"n_features": 1}, "n_features must be >= 2"),
    ({"n_samples": -3}, "n_samples must be a positive integer"),
    ({"noise": float("nan")}, "noise must be >= 0"),
])
def test_permutation_tasks_reject_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_permutation_tasks(**kwargs)


def test_translation_tasks_match_their_subspace():
    X, y, U = make_translation_tasks(n_tasks=3, n_samples=4, n_features=10, return_subspace=True,
                                     random_state=0)
    for t in range(3):
        columns = [X[t] @ u.reshape(8, 10).T for u in U.T]
        assert fit_in_subspace(columns, y[t])[1] < 1e-12


def _task_maps(X, y):
    """Each task's exact linear map ``W_t`` (n_out, n_features) from noise-free data."""
    return np.stack([np.linalg.lstsq(x, t, rcond=None)[0].T for x, t in zip(X, y)])


def test_translation_breaking_has_the_requested_relative_sizes():
    kwargs = dict(n_tasks=4, n_samples=30, n_features=12, random_state=0)
    X, y = make_translation_tasks(**kwargs)
    Xe, ye = make_translation_tasks(symmetry_breaking=0.3, **kwargs)
    Xs, ys = make_translation_tasks(shared_breaking=0.5, **kwargs)
    W = _task_maps(X, y)
    # the per-task breaking keeps the inputs and convolutions, and adds a dense E_t
    assert np.array_equal(X, Xe)
    E = _task_maps(X, ye - y)
    relative = np.linalg.norm(E, axis=(1, 2)) / np.linalg.norm(W, axis=(1, 2))
    np.testing.assert_allclose(relative, 0.3, rtol=1e-8)
    assert (np.abs(E) > 1e-3).mean() > 0.9  # dense, not banded
    assert not np.allclose(E[0], E[1])      # each task its own
    # the shared breaking is one S for all tasks (rank 1 draws it first), of norm
    # s * sqrt(E ||W_t||^2) = s * sqrt(K * n_out); what is left of each map is banded
    direction = np.random.RandomState(0).standard_normal((10, 12))
    S = 0.5 * np.sqrt(3 * 10) * direction / np.linalg.norm(direction)
    conv = _task_maps(Xs, ys) - S
    band = np.triu(np.tril(np.ones((10, 12)), 2))
    np.testing.assert_allclose(conv * (1 - band), 0, atol=1e-9)
    np.testing.assert_allclose(conv[:, 0, :3], conv[:, 5, 5:8], atol=1e-9)  # convolutions
    # and S does not depend on the number of tasks
    more = _task_maps(*make_translation_tasks(**{**kwargs, "n_tasks": 7}, shared_breaking=0.5))
    np.testing.assert_allclose((more - S) * (1 - band), 0, atol=1e-9)


@pytest.mark.parametrize("kwargs,match", [
    ({"symmetry_breaking": -0.1}, "symmetry_breaking must be >= 0 and finite"),
    ({"shared_breaking": float("nan")}, "shared_breaking must be >= 0 and finite"),
    ({"shared_breaking": True}, "shared_breaking must be >= 0 and finite"),
    ({"noise": -1.0}, "noise must be >= 0 and finite"),
])
def test_translation_tasks_reject_bad_breaking(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_translation_tasks(n_tasks=2, **kwargs)
