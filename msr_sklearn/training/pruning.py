"""Held-out-checked pruning of learned dense sharings: :class:`SharingPruning`."""

from __future__ import annotations

import numpy as np
import torch

from ..engine import evaluate_task_losses, prune_rows
from ..sharing import DenseSharing
from .loop import Callback

__all__ = ["SharingPruning"]


class SharingPruning(Callback):
    """Remove the weights no task needs from every learned dense ``U``, checked on fresh tasks.

    From the fraction ``start`` of the fit's steps on (the default: when the default
    schedule starts to decay, once the symmetry's directions have been learned), every
    ``interval`` steps and at the last step, :func:`~msr_sklearn.engine.prune_rows`
    zeroes the rows of each learned :class:`~msr_sklearn.sharing.DenseSharing` (one per
    weight of the layer) with the smallest norms, as many as the query loss of
    ``n_batches`` freshly drawn meta-batches allows without rising. The weights no
    task uses carry only the noise of task sampling, and removing them takes that
    noise out of ``span(U)`` (rank-2 translation: 2.1 degrees from the symmetry without,
    0.65 with; rank-5: 17 and 5.1); a direction that is spread over many weights and
    carries little signal (the mean term of a DeepSets layer) is kept, because removing
    it raises the loss. ``MetaSymmetryLearner(sharing_sparsity="auto")`` adds it for a
    network of one strict dense MSR layer (``docs/convergence.md``).

    Parameters
    ----------
    start : float in [0, 1], default=0.5
        The fraction of the fit's steps before which nothing is pruned.
    interval : int, default=100
        Meta-steps between pruning steps.
    n_batches : int, default=2
        Meta-batches drawn (from the training sampler) to check each pruning on.

    Attributes
    ----------
    pruned : list of (int, str, float)
        ``(step, weight name, fraction of its rows pruned)`` of every pruning step.

    Examples
    --------
    >>> from msr_sklearn import MetaSymmetryLearner
    >>> from msr_sklearn.datasets import make_translation_tasks
    >>> from msr_sklearn.training.callbacks import SharingPruning
    >>> X, y = make_translation_tasks(n_tasks=200, n_features=12, random_state=0)
    >>> learner = MetaSymmetryLearner(n_filters=3, bias=False, n_support=1, n_meta_steps=200,
    ...                               sharing_sparsity=0.0, random_state=0)
    >>> pruning = SharingPruning(interval=50)
    >>> learner.set_params(callbacks=[pruning]).fit(X, y).n_iter_
    200
    >>> [step for step, _, _ in pruning.pruned]
    [100, 150, 200]
    >>> U = learner.symmetry_.symmetry_matrix(0)   # 10 x 12 weights, 30 on the band
    >>> int((abs(U).sum(axis=1) > 0).sum()) < 120
    True
    """

    def __init__(self, start=0.5, interval=100, n_batches=2):
        self.start, self.interval, self.n_batches = start, interval, n_batches

    def initialize(self):
        self.pruned = []

    def on_step_end(self, trainer):
        done = trainer.fit_step + 1
        if (not np.isfinite(trainer.loss) or done < self.start * trainer.n_steps
                or (done % self.interval and done != trainer.n_steps)):
            return
        model = trainer.model
        bases = [(name, model.sharing(name).basis) for name in model.shared_names
                 if type(model.sharing(name)) is DenseSharing
                 and model.sharing(name).basis.requires_grad]
        if not bases:
            return
        batches = [next(trainer.batches) for _ in range(self.n_batches)]

        def loss():
            return float(torch.cat([evaluate_task_losses(model, b, trainer.loop)
                                    for b in batches]).mean())

        for name, basis in bases:
            fraction = prune_rows(basis, loss, state=trainer.optimizer.state.get(basis))
            self.pruned.append((trainer.step + 1, name, fraction))

    def state_dict(self):
        return {"pruned": [list(p) for p in self.pruned]}

    def load_state_dict(self, state):
        self.pruned = [(int(s), str(n), float(f)) for s, n, f in state["pruned"]]
