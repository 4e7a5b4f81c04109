"""
=============================================
Soft symmetry: how far may a task leave it?
=============================================

Real tasks rarely share an exact symmetry. A strict MSR layer writes every weight as
``W = U v``, so a task that breaks the symmetry a little is fit badly. A **residual
sharing** (``layer="msr_residual"``, or :class:`~msr_sklearn.sharing.Residual` around
any sharing of a policy) adds a free weight beside the shared one,
``W = reshape(U v) + R``: ``R`` is adapted per task like ``v``, from a meta-learned
``R0``, at its own meta-learned inner rate. The outer loop decides how far the tasks may
leave the symmetry: a rate near 0 is strict MSR, a large one is plain MAML, and ``R0``
holds the symmetry breaking that all tasks share.

Here three task families, all 1-D maps from 20 to 18 features learned from 10 examples
each: exact convolutions, convolutions plus a dense perturbation that all tasks share,
and dense random maps with no symmetry at all.
"""

import matplotlib.pyplot as plt
import numpy as np
import torch

from msr_sklearn import MetaSymmetryLearner
from msr_sklearn.datasets import make_translation_tasks

torch.set_num_threads(1)

# %%
# Three families of tasks
# -----------------------
# ``shared_breaking=0.5`` adds one fixed dense matrix ``S`` to every task's
# convolution, half as large as a typical convolution matrix.
rng = np.random.default_rng(0)
n_tasks, n_features = 2300, 20
dense = (rng.standard_normal((n_tasks, n_features - 2, n_features))
         * np.sqrt(3 / n_features))
X_dense = rng.standard_normal((n_tasks, 20, n_features))
families = {
    "exact": make_translation_tasks(n_tasks, n_features=n_features, random_state=0),
    "shared breaking": make_translation_tasks(n_tasks, n_features=n_features,
                                              shared_breaking=0.5, random_state=0),
    "no symmetry": (X_dense, np.einsum("tni,tpi->tnp", X_dense, dense)),
}

# %%
# Strict MSR, MSR with a residual pathway, and MAML
# -------------------------------------------------
# Same budget: only ``layer`` differs (``"dense"`` is plain MAML on a full weight).
# Each learner meta-trains on 2000 tasks and is scored on 300 new ones (10 support
# rows, 10 query rows).
LAYERS = {"msr": "strict MSR", "msr_residual": "MSR-residual", "dense": "MAML"}
results, learners = {}, {}
for family, (X, y) in families.items():
    for layer in LAYERS:
        learner = MetaSymmetryLearner(layer=layer, n_filters=3, n_support=10,
                                      n_meta_steps=1000, random_state=0)
        learner.fit(X[:2000], y[:2000])
        results[family, layer] = learner.evaluate(X[2000:], y[2000:])["mse"].mean()
        learners[family, layer] = learner
    print(f"{family:>16}: query MSE " + ", ".join(
        f"{name} {results[family, layer]:.3f}" for layer, name in LAYERS.items()))

# %%
# How much symmetry was learned
# -----------------------------
# :meth:`~msr_sklearn.MetaSymmetryLearner.symmetry_strength` adapts each held-out task
# and reports the fraction of its adapted weight's squared norm that lies in
# ``span(U)`` (1: the strict symmetry; towards 0: none), the residual's learned inner
# rate, and ``R0`` relative to the tasks' own weights (``shared_breaking``).
strength = {family: learners[family, "msr_residual"].symmetry_strength(X[2000:],
                                                                        y[2000:])
            for family, (X, y) in families.items()}
for family, table in strength.items():
    row = table.loc[0]
    print(f"{family:>16}: strength {row['strength']:.3f}, residual lr "
          f"{row['residual_lr']:.3f}, shared breaking {row['shared_breaking']:.2f}")

# %%
# ``R0`` is the breaking the tasks share
# --------------------------------------
# The convolutions average to zero, so the mean of the tasks' own maps (each solved
# exactly from its 20 rows) is the shared perturbation ``S``. The meta-learned ``R0``
# found it from 10 rows per task, without being told it exists.
X, y = families["shared breaking"]
maps = np.stack([np.linalg.lstsq(X[t], y[t], rcond=None)[0].T for t in range(2000)])
shared = maps.mean(0)
R0 = learners["shared breaking", "msr_residual"].symmetry_.initial_residual(0)
print("correlation of R0 with the tasks' mean map:",
      round(float(np.corrcoef(R0.ravel(), shared.ravel())[0, 1]), 3))

fig, axes = plt.subplots(1, 3, figsize=(11, 3.3))
names = list(families)
width = 0.27
ax = axes[0]
for j, (layer, label) in enumerate(LAYERS.items()):
    ax.bar(np.arange(3) + (j - 1) * width, [results[f, layer] for f in names], width,
           label=label)
ax.set_xticks(range(3), names, fontsize=8)
ax.set_yscale("log")
ax.set_ylabel("query MSE (held-out tasks)")
ax.legend(fontsize=8)
ax.set_title("same budget, one setting apart", fontsize=9)
# the residual matches strict MSR where the symmetry holds and MAML where there is none
for ax, image, title in ((axes[1], shared, "mean of the tasks' maps"),
                         (axes[2], R0, "meta-learned R0")):
    ax.imshow(image, cmap="RdBu_r", vmin=-abs(shared).max(), vmax=abs(shared).max())
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
fig.tight_layout()
plt.show()
