"""
==================================================
Bring your own network: a CNN on few-shot digits
==================================================

:class:`~msr_sklearn.MetaSymmetryLearner` meta-learns the sharing of *any* PyTorch
network. Here the network is a small CNN written as a plain :class:`torch.nn.Module`,
the tasks are 5-way 1-shot episodes of scikit-learn's 8×8 digits given as images of
shape ``(n, 1, 8, 8)``, and a *policy* says which of its weights are shared: an MSR-Conv
sharing on the convolution (each filter comes in 4 learned copies) and a dense learned
``U`` on the head. Every support image is clean; every query image is rotated by a
multiple of 90° and possibly flipped (Aug-Digits,
:func:`~msr_sklearn.datasets.load_aug_digits_tasks`), so a network does well only if
it has meta-learned that a digit keeps its label under those moves.
"""

# %%
# The network and the tasks
# -------------------------
# An ordinary module. Its ``__init__`` takes ``n_outputs``, so the learner fills it in
# from the tasks (5 ways); ``width`` is ours, set through ``module__width`` as in
# skorch.
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from msr_sklearn import EquivariantClassifier, LearnedSymmetry, MetaSymmetryLearner
from msr_sklearn.datasets import load_aug_digits_tasks
from msr_sklearn.sharing import ConvFilterSharing, DenseSharing

torch.set_num_threads(1)  # small ops: one thread is fastest on a CPU


class DigitCNN(nn.Module):
    """3×3 convolution (padding 1), ReLU, 2×2 max-pooling, a linear head."""

    def __init__(self, n_outputs, width=8):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(width * 4 * 4, n_outputs)

    def forward(self, x):  # x: (n, 1, 8, 8)
        x = self.pool(torch.relu(self.conv(x)))
        return self.head(x.flatten(1))


def as_images(tasks):
    """Aug-Digits rows of 64 pixels as (n, 1, 8, 8) images."""
    return [(X.reshape(-1, 1, 8, 8), y) for X, y in tasks]


train = as_images(load_aug_digits_tasks(4000, standardize=True, random_state=0))
test = as_images(load_aug_digits_tasks(300, split="test", standardize=True,
                                       random_state=1))
X0, y0 = test[0]
print("one episode:", X0.shape, "labels", y0[:5], "(the 5 support images come first)")

# %%
# MSR and MAML on the same network
# --------------------------------
# The policy maps parameter names to sharings; unmatched parameters (the biases) are
# adapted per task as they are. ``sharing={}`` shares nothing: plain MAML on the whole
# network. Both learners run the same protocol: the first 5 rows of an episode are its
# support (``support_split="first"``), one inner step, 500 meta-steps.
policy = {"conv.weight": ConvFilterSharing(n_copies=4),
          "head.weight": DenseSharing(n_filters=20)}
common = dict(module=DigitCNN, module__width=8, n_support=5, support_split="first",
              inner_lr=0.5, n_meta_steps=500, random_state=0)
msr = MetaSymmetryLearner(sharing=policy, **common).fit(train)
maml = MetaSymmetryLearner(sharing={}, **common).fit(train)
for name, role in msr.model_.roles.items():  # what the policy made of each parameter
    print(f"{name:12s} {role}")

accuracy = {}
for name, learner in [("MSR", msr), ("MAML", maml)]:
    _, summary = learner.evaluate(test, return_summary=True)
    accuracy[name] = summary.loc["accuracy"]
    print(f"{name:5s} query accuracy {accuracy[name]['mean']:.3f} "
          f"± {accuracy[name]['ci95']:.3f} (300 new episodes, chance 0.2)")

# %%
# One new episode, learned as a scikit-learn estimator
# ----------------------------------------------------
# :meth:`~msr_sklearn.MetaSymmetryLearner.make_estimator` gives an
# :class:`~msr_sklearn.EquivariantClassifier` that runs the learned inner loop on one
# task: ``fit`` on the 5 clean support images, ``predict`` the 25 moved queries. The
# symmetry saves and loads like a built-in one; for a module of your own, pass its
# class to :meth:`~msr_sklearn.LearnedSymmetry.load` (a file never imports code by
# itself).
clf = msr.make_estimator().fit(X0[:5], y0[:5])
predicted = clf.predict(X0[5:])
print("episode 0 accuracy:", np.mean(predicted == y0[5:]))

with tempfile.TemporaryDirectory() as folder:
    path = Path(folder) / "digits_cnn.msr"
    msr.symmetry_.save(path)
    loaded = LearnedSymmetry.load(path, module=DigitCNN)
same = EquivariantClassifier(symmetry=loaded).fit(X0[:5], y0[:5])
assert (same.predict(X0[5:]) == predicted).all()

fig = plt.figure(figsize=(11, 3.6))
grid = fig.add_gridspec(3, 12, width_ratios=[1] * 10 + [1.6, 5])
for i in range(5):
    ax = fig.add_subplot(grid[0, i])
    ax.imshow(X0[i, 0], cmap="gray_r")
    ax.set_title(f"label {y0[i]}", fontsize=8)
    ax.axis("off")
fig.text(0.01, 0.8, "support\n(clean)", fontsize=9)
for j in range(20):
    ax = fig.add_subplot(grid[1 + j // 10, j % 10])
    ax.imshow(X0[5 + j, 0], cmap="gray_r")
    right = predicted[j] == y0[5 + j]
    ax.set_title(f"{predicted[j]}", fontsize=8, color="green" if right else "red")
    ax.axis("off")
fig.text(0.01, 0.35, "queries\n(moved):\npredicted", fontsize=9)
ax = fig.add_subplot(grid[:, 11])
names = list(accuracy)
ax.bar(names, [accuracy[n]["mean"] for n in names],
       yerr=[accuracy[n]["ci95"] for n in names], color=["C0", "C1"], capsize=4)
ax.axhline(0.2, color="0.5", ls=":", lw=1)
ax.text(1.45, 0.22, "chance", color="0.4", fontsize=8, ha="right")
ax.set_ylim(0, 1)
ax.set_ylabel("query accuracy")
ax.set_title("300 new episodes", fontsize=10)
fig.subplots_adjust(left=0.08, right=0.98, wspace=0.15, hspace=0.5)
plt.show()

# %%
# With the sharing, the network learns a new episode from its 5 clean images far
# better than MAML does: the learned ``U`` ties each convolution filter to its copies
# and the head to a few directions, so the one inner step moves the network only where
# tasks differ. Read what was learned with
# :func:`~msr_sklearn.inspection.symmetry_report` (``layer="conv.weight"``), search
# ``module__width`` with ``GridSearchCV``, or take the network into plain torch with
# :meth:`~msr_sklearn.LearnedSymmetry.to_module`: see :ref:`custom_modules`.
