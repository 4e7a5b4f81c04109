"""MNIST-1D episodes and the conv sharing of a dense first layer."""

import random
import sys

import numpy as np
import pytest
import torch

from msr_sklearn.datasets import _cache, load_mnist1d_tasks, mnist1d_conv_sharing
from msr_sklearn.datasets import mnist1d as mnist1d_module

pytest.importorskip("mnist1d")


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    path = tmp_path_factory.mktemp("mnist1d_home")
    load_mnist1d_tasks(1, data_home=path, random_state=0)
    return path


def test_data_are_mnist1d_and_global_random_state_is_kept(tmp_path):
    from mnist1d.data import get_dataset_args, make_dataset

    np.random.seed(123)
    random.seed(123)
    before = np.random.get_state()[1].copy(), random.getstate()
    tasks, info = load_mnist1d_tasks(3, split="test", data_home=tmp_path, return_info=True,
                                     random_state=0)
    np.testing.assert_array_equal(np.random.get_state()[1], before[0])
    assert random.getstate() == before[1]
    reference = make_dataset(get_dataset_args())
    rows = np.concatenate([X[:, 0] for X, _ in tasks])
    np.testing.assert_allclose(rows, reference["x_test"][info.signal], rtol=1e-6)
    assert (reference["y_test"][info.signal] == info.digit).all()


@pytest.mark.parametrize("n_way, n_shot, n_query", [(5, 1, 5), (5, 5, 5), (10, 1, 2)])
def test_shapes_and_support_first(home, n_way, n_shot, n_query):
    tasks = load_mnist1d_tasks(4, n_way=n_way, n_shot=n_shot, n_query=n_query,
                               data_home=home, random_state=0)
    n_support = n_way * n_shot
    for X, y in tasks:
        assert X.shape == (n_way * (n_shot + n_query), 1, 40) and X.dtype == np.float32
        assert y.dtype == np.int64
        labels, counts = np.unique(y[:n_support], return_counts=True)
        assert len(labels) == n_way and (counts == n_shot).all()
        labels_q, counts_q = np.unique(y[n_support:], return_counts=True)
        assert np.array_equal(labels_q, labels) and (counts_q == n_query).all()
    X, _ = load_mnist1d_tasks(1, flat=True, data_home=home, random_state=0)[0]
    assert X.shape == (30, 40)


def test_deterministic_and_labels_fresh(home):
    a = load_mnist1d_tasks(3, data_home=home, random_state=5)
    b = load_mnist1d_tasks(3, data_home=home, random_state=5)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    _, info = load_mnist1d_tasks(200, data_home=home, return_info=True, random_state=0)
    assert (info.groupby(["task", "digit"]).label.nunique() == 1).all()
    assert info.groupby("digit").label.nunique().min() > 20
    first = info.sort_values(["task", "label"]).groupby("task").digit.first()
    assert first.nunique() == 10                  # the encoding order is random


def test_splits_share_classes_but_not_signals(home):
    seen = {}
    for split in ("train", "val", "test"):
        _, info = load_mnist1d_tasks(400, n_way=10, n_query=2, split=split, data_home=home,
                                     return_info=True, random_state=0)
        seen[split] = set(info.signal)
        assert set(info.digit) == set(range(10))
    assert not seen["train"] & seen["val"]        # both index MNIST-1D's training signals
    assert len(mnist1d_module._signals("train", home)[1]) == 3200
    assert len(mnist1d_module._signals("val", home)[1]) == 800
    assert len(mnist1d_module._signals("test", home)[1]) == 1000


def test_cache_is_reused(home, monkeypatch):
    assert [p.name for p in (home / "msr_sklearn").iterdir()] == ["mnist1d_v1.npz"]

    def no_building():
        raise AssertionError("built again instead of reading the cache")

    monkeypatch.setattr(mnist1d_module, "_build", no_building)
    _cache._read.cache_clear()
    load_mnist1d_tasks(2, data_home=home, random_state=0)


def test_missing_package_is_named(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mnist1d", None)
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    with pytest.raises(ImportError, match="package 'mnist1d'.*pip install mnist1d"):
        load_mnist1d_tasks(1, data_home=tmp_path)


def test_errors_name_the_problem(home):
    with pytest.raises(ValueError, match="n_way=11 exceeds the 10 classes"):
        load_mnist1d_tasks(1, n_way=11, data_home=home)
    with pytest.raises(ValueError, match="split must be one of"):
        load_mnist1d_tasks(1, split="validation", data_home=home)
    with pytest.raises(ValueError, match="never meets the signal"):
        mnist1d_conv_sharing(kernel_size=3, padding=1, n_features=1)


@pytest.mark.parametrize("channels, kernel, stride, padding", [(1, 5, 1, 0), (3, 5, 2, 1),
                                                                (2, 79, 1, 39)])
def test_conv_sharing_is_torch_conv1d(channels, kernel, stride, padding):
    """A Conv1d written as a dense matrix lies in span(U); U is orthonormal, one column
    per tap, and a dense matrix with one tap moved off its band does not."""
    U = mnist1d_conv_sharing(channels, kernel, stride, padding)
    assert U.shape[1] == channels * kernel
    np.testing.assert_allclose(U.T @ U, np.eye(channels * kernel), atol=1e-12)
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(1, channels, kernel, stride, padding, bias=False).double()
    with torch.no_grad():
        dense = conv(torch.eye(40, dtype=torch.float64)[:, None]).flatten(1).T.numpy()
    w = dense.ravel()                             # (channels * L_out, 40), row-major
    assert np.linalg.norm(w - U @ (U.T @ w)) < 1e-12 * np.linalg.norm(w)
    broken = dense.copy()
    broken[0, np.argmin(np.abs(broken[0]))] += 1.0
    b = broken.ravel()
    assert np.linalg.norm(b - U @ (U.T @ b)) > 0.5
