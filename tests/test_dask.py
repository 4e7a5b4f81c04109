"""Grid search of MetaSymmetryLearner on a Dask cluster equals the sequential run."""

import numpy as np
import pytest

from msr_sklearn import MetaSymmetryLearner
from msr_sklearn.datasets import make_translation_tasks

distributed = pytest.importorskip("distributed", reason="Dask is an optional extra")


def test_grid_search_on_a_local_dask_cluster_matches_sequential():
    import joblib
    from sklearn.model_selection import GridSearchCV

    X, y = make_translation_tasks(n_tasks=30, n_samples=6, n_features=10, random_state=0)
    tasks = [(X[i], y[i]) for i in range(len(X))]
    grid = {"inner_lr": [0.05, 0.3], "n_filters": [2, 3]}
    base = MetaSymmetryLearner(bias=False, n_support=2, n_meta_steps=20, meta_batch_size=8,
                               random_state=0)
    sequential = GridSearchCV(base, grid, cv=3).fit(tasks)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        with joblib.parallel_config(backend="dask"):
            on_dask = GridSearchCV(base, grid, cv=3, n_jobs=-1).fit(tasks)
        # the work really ran on the cluster's two worker processes
        assert len(client.scheduler_info()["workers"]) == 2
    for key in ("params", "mean_test_score", "split0_test_score", "split2_test_score"):
        a, b = on_dask.cv_results_[key], sequential.cv_results_[key]
        if key == "params":
            assert a == b
        else:
            np.testing.assert_allclose(a, b, rtol=1e-6)
    assert on_dask.best_params_ == sequential.best_params_
