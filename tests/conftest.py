"""Fixtures shared by the test modules."""

import pytest
import torch

from msr_sklearn.datasets import make_translation_tasks


@pytest.fixture(autouse=True)
def _single_thread():
    # small CPU ops are faster single-threaded; keeps the suite quick on 2 cores
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def interrupt_at(monkeypatch):
    """``interrupt_at(n)``: the n-th meta-step of the training loop raises KeyboardInterrupt
    (as Ctrl-C would); ``interrupt_at(None)`` restores the real meta-step."""
    import msr_sklearn.training.loop as training_module

    real_step = training_module.meta_step

    def patch(n):
        calls = {"n": 0}

        def interrupting_step(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == n:
                raise KeyboardInterrupt
            return real_step(*args, **kwargs)

        monkeypatch.setattr(training_module, "meta_step",
                            real_step if n is None else interrupting_step)
    return patch


@pytest.fixture
def losses_times_at(monkeypatch):
    """``losses_times_at(n, factor)``: the task losses of the n-th meta-step of the training
    loop are multiplied by ``factor`` (NaN: a task whose loss overflows), whatever else
    computes task losses (the graph-size probe does)."""
    import msr_sklearn.engine.outer as outer
    import msr_sklearn.training.loop as training_module

    real_step, real_losses = training_module.meta_step, outer.task_losses

    def patch(n, factor):
        calls = {"n": 0}

        def step(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] != n:
                return real_step(*args, **kwargs)
            with monkeypatch.context() as m:
                m.setattr(outer, "task_losses",
                          lambda *a, **k: real_losses(*a, **k) * factor)
                return real_step(*args, **kwargs)

        monkeypatch.setattr(training_module, "meta_step", step)
    return patch


@pytest.fixture(scope="module")
def tasks():
    """40 small translation tasks ``(X, y)``: 8 rows of 10 features each; what the
    training, checkpoint and resume tests fit on."""
    return make_translation_tasks(n_tasks=40, n_samples=8, n_features=10, random_state=0)
