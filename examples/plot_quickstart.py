"""
======================================================
Quickstart: meta-learning a convolution from its tasks
======================================================

Every task here is a 1-D convolution with its *own* random 3-tap filter: 70 inputs, 68
outputs. We see each new task through a **single** example. An unconstrained layer
(plain MAML) cannot learn 70 × 68 weights from one example; a convolution could — but
we do not tell the model that the tasks are convolutions.
:class:`~msr_sklearn.MetaSymmetryLearner` meta-learns the sharing pattern ``U`` of the
layer from the tasks alone, and the band of a convolution appears.
"""

# %%
# Tasks
# -----
# :func:`~msr_sklearn.datasets.make_translation_tasks` returns 3-D arrays: ``X`` of
# shape ``(n_tasks, n_samples, 70)`` and ``y`` of shape ``(n_tasks, n_samples, 68)``.
# We meta-train on 1500 tasks and keep 500 *new* tasks for testing.
import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.linalg import subspace_angles

from msr_sklearn import MetaSymmetryLearner
from msr_sklearn.datasets import make_translation_tasks, translation_sharing

torch.set_num_threads(1)  # small ops: one thread is fastest on a CPU

X, y = make_translation_tasks(n_tasks=2000, rank=1, random_state=0)
X_train, y_train, X_test, y_test = X[:1500], y[:1500], X[1500:], y[1500:]
print("tasks:", X.shape, "->", y.shape)

# %%
# MSR and plain MAML
# ------------------
# Both learners use the same protocol: one support example per task, one inner SGD
# step, learned inner learning rates, 1000 meta-steps. ``layer="msr"`` learns a dense
# ``U`` with ``k = 3`` columns; ``layer="dense"`` fixes ``U`` to the identity, so all
# 4760 weights are free (MAML).
common = dict(bias=False, n_support=1, inner_steps=1, n_meta_steps=1000,
              random_state=0)
msr = MetaSymmetryLearner(layer="msr", n_filters=3, **common).fit(X_train, y_train)
maml = MetaSymmetryLearner(layer="dense", **common).fit(X_train, y_train)

for name, learner in [("MSR (k=3)", msr), ("MAML", maml)]:
    _, summary = learner.evaluate(X_test, y_test, return_summary=True)
    mse, r2 = summary.loc["mse"], summary.loc["r2"]
    print(f"{name:10s} query MSE {mse['mean']:.3f} ± {mse['ci95']:.3f}   "
          f"R² {r2['mean']:.3f}")

# %%
# The learned ``U`` is a convolution
# ----------------------------------
# ``U`` is only defined up to an invertible change of basis (``U R`` with ``R⁻¹ v``
# builds the same weights), so we compare *spans*. The largest principal angle between
# the learned ``U`` and the convolution's band is close to zero:
U = msr.symmetry_.symmetry_matrix(0)  # (68 * 70, 3)
band = translation_sharing(70, 3)
angle = np.degrees(subspace_angles(U, band).max())
print(f"largest principal angle to the convolution's sharing: {angle:.1f}°")

# %%
# A picture says it better. Left: how strongly ``span(U)`` uses each weight
# ``W[p, j]`` (the norm of its row in an orthonormal basis) — the band of a convolution.
# Middle: one task's true weight matrix and the weights MSR reaches after adapting on
# that task's single support example. Right: the query errors of MSR and MAML on the
# 500 new tasks.
q, _ = np.linalg.qr(U)
weight_use = np.linalg.norm(q, axis=1).reshape(68, 70)

# the weight MSR reaches on test task 0: one inner step from v0 on one example
reg = msr.make_estimator().fit(X_test[0, :1], y_test[0, :1])
# network_.inner_dict(): the adapted v (and biases); network_.model builds W = U v
adapted = reg.network_.model.weights(reg.network_.inner_dict())
W_adapted = adapted["0.weight"][0].detach().numpy()
# the task's true filter, recovered exactly by least squares on all its rows
windows = np.lib.stride_tricks.sliding_window_view(X_test[0], 3, axis=-1)
w_true = np.linalg.lstsq(windows.reshape(-1, 3), y_test[0].ravel(), rcond=None)[0]
W_true = (band @ w_true).reshape(68, 70)

fig, axes = plt.subplots(1, 4, figsize=(13, 3.4), width_ratios=[1, 1, 1, 1.1])
corner = (slice(0, 20), slice(0, 24))
axes[0].imshow(weight_use[corner], cmap="viridis")
axes[0].set_title("learned span(U): weight use")
lim = np.abs(W_true[corner]).max()
axes[1].imshow(W_true[corner], cmap="RdBu_r", vmin=-lim, vmax=lim)
axes[1].set_title("a new task's true W")
axes[2].imshow(W_adapted[corner], cmap="RdBu_r", vmin=-lim, vmax=lim)
axes[2].set_title("MSR's W after 1 example")
for ax in axes[:3]:
    ax.set_xlabel("input j")
    ax.set_xticks([])
    ax.set_yticks([])
axes[0].set_ylabel("output p (top-left corner)")
errors = {name: learner.evaluate(X_test, y_test)["mse"]
          for name, learner in [("MSR", msr), ("MAML", maml)]}
axes[3].boxplot(list(errors.values()))
axes[3].set_xticks([1, 2], list(errors))
axes[3].set_yscale("log")
axes[3].set_ylabel("query MSE per new task")
axes[3].set_title("500 new tasks, 1 example each")
fig.tight_layout()
plt.show()

# %%
# MAML's error stays near the variance of the outputs (about 3): from one example it
# cannot tell which of its 4760 weights matter. MSR learned that only 3 numbers per task
# do, and where they go.
#
# Next: :ref:`sphx_glr_auto_examples_plot_meta_learning_dynamics.py` shows ``U``
# appear during meta-training, and
# :ref:`sphx_glr_auto_examples_plot_save_load_symmetry.py` reuses the learned
# symmetry on new tasks.
