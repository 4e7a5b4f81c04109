"""
====================================================================
Few-shot letters with augmented queries: Conv-4 and the exact D4 net
====================================================================

Aug-Glyphs (:func:`~msr_sklearn.datasets.load_aug_glyphs_tasks`) renders letters from
the fonts that ship with matplotlib: an Omniglot-scale few-shot set that needs no
download. Each episode has one *clean* image per class to learn from, and query images
rotated by multiples of 90° and flipped. Meta-train and meta-test letters come from
different scripts (Latin against Cyrillic, Armenian and Georgian).

Any ``torch.nn.Module`` can be meta-trained; a *sharing policy* says which of its
weights are shared and how. This example meta-trains the standard Conv-4 backbone with
plain MAML, and the same blocks as a D4 group-convolution network whose filters are
fixed to the exact D4 sharing (:func:`~msr_sklearn.sharing.exact_lifting_sharing`,
:func:`~msr_sklearn.sharing.exact_group_conv_sharing`): when the symmetry is known, a
fixed group is the strongest prior there is. The full comparison, with MSR-Conv
learning the sharing and MAML trained on augmented supports, at 1,087 classes and
three seeds, is ``benchmarks/glyphs.py`` (write-up: ``docs/real_images.md``); this is a
small slice that runs in well under a minute.
"""

# %%
# Episodes from a small slice of the letters
# ------------------------------------------
# ``max_classes_per_script=40`` renders a few hundred letters once (cached in
# scikit-learn's data folder). Images are padded from 28×28 to 32×32 so that the four
# 2×2 max-pools of a Conv-4 tile the maps evenly (32 → 16 → 8 → 4 → 2), which a
# rotation-invariant network needs.
import matplotlib.pyplot as plt
import numpy as np
import torch

from msr_sklearn import MetaSymmetryLearner
from msr_sklearn.datasets import load_aug_glyphs_tasks
from msr_sklearn.groups import grid_transforms, transform_grid
from msr_sklearn.inspection import symmetry_report
from msr_sklearn.models import Conv4, ConvNet
from msr_sklearn.sharing import exact_group_conv_sharing, exact_lifting_sharing

torch.set_num_threads(1)
N_WAY = 5


def episodes(n_tasks, split, random_state):
    tasks = load_aug_glyphs_tasks(n_tasks, n_way=N_WAY, n_shot=1, n_query=3,
                                  split=split, max_classes_per_script=40,
                                  random_state=random_state)
    return [(np.pad(X, ((0, 0), (0, 0), (2, 2), (2, 2))), y) for X, y in tasks]


train, test = episodes(240, "train", 0), episodes(30, "test", 1)
X0, y0 = test[0]
fig, axes = plt.subplots(2, N_WAY, figsize=(7, 3))
for j in range(N_WAY):
    axes[0, j].imshow(X0[j, 0], cmap="gray_r")
    axes[0, j].set_title(f"support {y0[j]}", fontsize=8)
    axes[1, j].imshow(X0[N_WAY + j, 0], cmap="gray_r")
    axes[1, j].set_title(f"query {y0[N_WAY + j]}", fontsize=8)
for ax in axes.ravel():
    ax.set_axis_off()
fig.suptitle("A test episode: clean support (top), rotated / flipped queries (bottom)")
fig.tight_layout()

# %%
# Two networks, one learner
# -------------------------
# MAML: :class:`~msr_sklearn.models.Conv4` with ``layer="dense"`` (every weight adapted
# as is). The oracle: a :class:`~msr_sklearn.models.ConvNet` with the Conv-4's blocks in
# regular D4 fields of 8 channels, one bias per field, the mean over each field (an
# invariant feature) before the head, and a ``sharing=`` policy that fixes every
# convolution to the exact D4 sharing. Its group norms keep their scales at 1 and 0
# ("frozen"): a scale per channel would break the symmetry.
channels = (16, 16, 16, 32)
oracle_net = dict(module=ConvNet, module__channels=channels, module__padding=1,
                  module__pool="max", module__norm="group", module__field_bias=True,
                  module__n_copies=8, module__couple_copies=True,
                  module__global_pool="mean_fields")
policy, fields_in = {}, None
for i, c in enumerate(channels):
    block = 5 * i    # conv, field bias, norm, ReLU, pool
    policy[f"features.{block}.weight"] = (
        exact_lifting_sharing("d4", c // 8) if i == 0
        else exact_group_conv_sharing("d4", c // 8, fields_in))
    norm = f"features.{block + 2}"
    policy[f"{norm}.weight"] = policy[f"{norm}.bias"] = "frozen"
    fields_in = c // 8

# Each network starts at the inner rate the benchmark tuned for it on validation
# letters (``benchmarks/results/glyphs_tuning.csv``): 0.1 for the plain Conv-4, whose
# query loss a rate of 0.4 blows up at the first step, and 0.4 for the oracle.
common = dict(n_support=N_WAY, support_split="first", meta_batch_size=4,
              n_meta_steps=60, random_state=0)
learners = {
    "MAML Conv-4": MetaSymmetryLearner(module=Conv4, module__channels=16,
                                       layer="dense", inner_lr=0.1, **common),
    "exact D4 net (U fixed)": MetaSymmetryLearner(**oracle_net, sharing=policy,
                                                  inner_lr=0.4, **common),
}
for name, learner in learners.items():
    learner.fit(train)

# %%
# Accuracy on rotated and flipped queries, and invariance
# -------------------------------------------------------
# For each test episode, ``make_estimator()`` returns an
# :class:`~msr_sklearn.EquivariantClassifier` that adapts on the 5 clean support images;
# it then labels every query image under all 8 rotations and flips. The share of images
# that keep their label under all 8 is the output invariance.
#
# Sixty meta-steps are far too few to learn letters: both networks stay near chance
# (20 %) here, and the benchmark's longer runs (``docs/real_images.md``) are where
# accuracy is compared. What the slice already shows is the prior: the exact D4 net
# gives every query the same label under all 8 transforms, by construction, while
# the plain Conv-4 changes its answer for most of them.
D4 = grid_transforms("d4")


def accuracy_and_invariance(learner, tasks):
    accuracy, invariant = [], []
    for X, y in tasks:
        clf = learner.make_estimator().fit(X[:N_WAY], y[:N_WAY])
        queries = X[N_WAY:]
        labels = clf.predict(np.concatenate([transform_grid(queries, g) for g in D4]))
        labels = labels.reshape(len(D4), len(queries))
        accuracy.append(np.mean(labels[0] == y[N_WAY:]))
        invariant.append(np.mean((labels == labels[0]).all(axis=0)))
    return 100 * np.mean(accuracy), 100 * np.mean(invariant)


scores = {name: accuracy_and_invariance(learner, test)
          for name, learner in learners.items()}
for name, (acc, inv) in scores.items():
    print(f"{name:24s} accuracy {acc:5.1f} %   "
          f"same label under all 8 transforms {inv:5.1f} %")

fig, ax = plt.subplots(figsize=(5.5, 3))
x = np.arange(2)
for k, (name, values) in enumerate(scores.items()):
    ax.bar(x + 0.38 * k, values, width=0.36, label=name)
ax.set_xticks(x + 0.19, ["accuracy (%)", "invariant labels (%)"])
ax.axhline(100 / N_WAY, color="k", lw=0.8, ls="--", label="chance")
ax.set_title(f"{N_WAY}-way 1-shot, clean support, D4-augmented queries")
ax.legend(fontsize=8)
fig.tight_layout()

# %%
# What the symmetry report reads off the oracle
# ---------------------------------------------
# :func:`~msr_sklearn.inspection.symmetry_report` finds, for each convolution, the
# rotation and flip of its filters (with the best relabelling of the copies) under which
# its sharing is invariant. The oracle's exact sharings score 0 and are named D4; a
# learned sharing is read the same way (the benchmark reports it per layer).
oracle = learners["exact D4 net (U fixed)"]
for name in oracle.model_.shared_names:
    report = symmetry_report(oracle.symmetry_, layer=name)
    print(f"{name:20s} {report.attrs['summary']['name']:4s} scores "
          f"{report['score'].round(6).tolist()}")
plt.show()
