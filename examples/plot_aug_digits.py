"""
=====================================================================
Aug-Digits: baking data augmentation into the architecture (few-shot)
=====================================================================

The paper's augmentation experiment on scikit-learn's 8×8 digits. Each task is a
5-way 1-shot episode: one *clean* image per class to learn from, and query images that
are rotated by multiples of 90° and flipped. Augmentation is available only while
meta-training (the queries), never in a new task's support set. MSR meta-learns a
sharing ``U`` under which one clean example already generalizes to the transformed
queries; plain MAML has to learn each new task from the clean example alone.

The full comparison (conv nets, a frozen-``U`` control, MAML trained with augmented
support sets, the exact D4 network as an oracle, 600 test episodes, 3 seeds) is
``benchmarks/aug_digits.py``; this is a small version that runs in seconds.
"""

# %%
# Episodes
# --------
# :func:`~msr_sklearn.datasets.load_aug_digits_tasks` draws episodes from disjoint
# images for meta-train and meta-test. In every task the 5 support rows come first, so
# the learners use ``support_split="first"``.
import matplotlib.pyplot as plt
import numpy as np
import torch

from msr_sklearn import MetaSymmetryLearner
from msr_sklearn.datasets import load_aug_digits_tasks
from msr_sklearn.groups import grid_transforms, transform_grid

torch.set_num_threads(1)

train = load_aug_digits_tasks(2000, split="train", standardize=True, random_state=0)
test = load_aug_digits_tasks(200, split="test", standardize=True, random_state=1)
X0, y0 = test[0]
fig, axes = plt.subplots(2, 5, figsize=(7, 3))
for j in range(5):
    axes[0, j].imshow(X0[j].reshape(8, 8), cmap="gray_r")
    axes[0, j].set_title(f"support {y0[j]}", fontsize=8)
    q = 5 + j * 5  # the first query of another class position
    axes[1, j].imshow(X0[q].reshape(8, 8), cmap="gray_r")
    axes[1, j].set_title(f"query {y0[q]}", fontsize=8)
for ax in axes.ravel():
    ax.set_axis_off()
fig.suptitle("One episode: clean support (top), augmented queries (bottom)")
fig.tight_layout()

# %%
# Meta-train MSR and MAML with the same network and budget
# ---------------------------------------------------------
# A 64 → 64 → 5 MLP; ``layer="msr"`` learns a dense ``U`` per layer, ``layer="dense"``
# keeps ``U`` the identity (plain MAML). Both use the learner's default meta-optimizer
# and meta-lr schedule.
common = dict(hidden_layer_sizes=(64,), n_support=5, support_split="first", inner_steps=1,
              inner_lr=0.5, meta_batch_size=32, n_meta_steps=300, random_state=0)
learners = {
    "MSR (learned U)": MetaSymmetryLearner(layer="msr", n_filters=(256, 40), **common),
    "MAML (U = I)": MetaSymmetryLearner(layer="dense", **common),
}
summaries = {}
for name, learner in learners.items():
    learner.fit(train)
    _, summary = learner.evaluate(test, return_summary=True)
    summaries[name] = summary.loc["accuracy"]
    print(f"{name:18s} accuracy on augmented queries: {summary.loc['accuracy', 'mean']:.3f} "
          f"± {summary.loc['accuracy', 'ci95']:.3f}")

# %%
# Accuracy on augmented queries of new episodes
# ---------------------------------------------
# Chance is 20 %. Mean ± 95% CI over the 200 test episodes.
fig, ax = plt.subplots(figsize=(5, 3))
names = list(summaries)
ax.bar(names, [100 * summaries[n]["mean"] for n in names],
       yerr=[100 * summaries[n]["ci95"] for n in names], color=["tab:blue", "tab:gray"],
       capsize=6)
ax.axhline(20, color="k", lw=0.8, ls="--", label="chance")
ax.set_ylabel("accuracy (%)")
ax.set_title("5-way 1-shot, clean support, D4-augmented queries")
ax.legend()
fig.tight_layout()

# %%
# A new episode, learned through ``EquivariantClassifier``
# --------------------------------------------------------
# ``make_estimator`` returns an :class:`~msr_sklearn.EquivariantClassifier` bound to the
# learned symmetry. Its ``fit`` adapts only the filter values ``v`` (and biases) on the
# five clean support images of a new episode; ``predict`` then labels the augmented
# queries. This is the per-task estimator behind ``evaluate`` (the benchmark checks that
# both give the same accuracies).
clf = learners["MSR (learned U)"].make_estimator()
X_new, y_new = test[0]
clf.fit(X_new[:5], y_new[:5])
pred = clf.predict(X_new[5:])
print(f"new episode: {np.mean(pred == y_new[5:]):.0%} of its {len(pred)} augmented queries "
      "right")
fig, axes = plt.subplots(2, 10, figsize=(9, 2.4))
for ax, image, label, true in zip(axes.ravel(), X_new[5:], pred, y_new[5:]):
    ax.imshow(image.reshape(8, 8), cmap="gray_r")
    ax.set_title(str(label), fontsize=8, color="tab:green" if label == true else "tab:red")
    ax.set_axis_off()
fig.suptitle("Augmented queries of a new episode, with the predicted label (red: wrong)")
fig.tight_layout()

# %%
# How invariant are the adapted classifiers?
# ------------------------------------------
# Predict every query image under all 8 rotations and flips
# (:func:`~msr_sklearn.groups.grid_transforms`): the share of images that get the same
# label all 8 times. A network whose ``U`` is the exact D4 sharing scores 100 %
# (the benchmark's oracle); a learned ``U`` only approaches it.

def invariant_share(learner, tasks):
    shares = []
    for X, y in tasks:
        clf = learner.make_estimator().fit(X[:5], y[:5])
        images = X[5:].reshape(-1, 8, 8)
        moved = np.concatenate([transform_grid(images, g).reshape(len(images), -1)
                                for g in grid_transforms("d4")])
        labels = clf.predict(moved).reshape(8, len(images))
        shares.append(np.mean((labels == labels[0]).all(axis=0)))
    return np.mean(shares)


for name, learner in learners.items():
    print(f"{name:18s} same label under all 8 transforms: "
          f"{invariant_share(learner, test[:50]):.0%} of the query images")

# %%
# Learning curves
# ---------------
# ``history_`` holds the meta-training query loss of every step.
fig, ax = plt.subplots(figsize=(5, 3))
for name, learner in learners.items():
    loss = learner.history_["train_loss"].rolling(20, min_periods=1).mean()
    ax.plot(learner.history_["step"], loss, label=name)
ax.set_xlabel("meta-step")
ax.set_ylabel("query cross-entropy (smoothed)")
ax.legend()
fig.tight_layout()
plt.show()
print("mean accuracy difference:",
      np.round(summaries["MSR (learned U)"]["mean"] - summaries["MAML (U = I)"]["mean"], 3))
