"""
=======================================
Watching meta-learning find the sharing
=======================================

What happens during :meth:`MetaSymmetryLearner.fit
<msr_sklearn.MetaSymmetryLearner.fit>`? Every meta-step adapts the filters ``v`` of a
meta-batch of tasks on their support rows (inner loop, ``U`` frozen), scores them on
the query rows, and moves ``U``, the initial filters and the inner learning rate
(outer loop). Here we follow a run on 1-D convolution tasks through three numbers:

* the query loss on held-out tasks (``validation_tasks=``, logged in ``history_``);
* the largest principal angle between ``span(U)`` and the convolution's sharing;
* the meta-learned inner learning rate (also in ``history_``).
"""

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.linalg import subspace_angles

from msr_sklearn import MetaSymmetryLearner
from msr_sklearn.datasets import make_translation_tasks, translation_sharing

torch.set_num_threads(1)

n_features = 30
X, y = make_translation_tasks(n_tasks=1200, n_features=n_features, random_state=0)
train, valid = (X[:1000], y[:1000]), (X[1000:], y[1000:])
band = translation_sharing(n_features, 3)

# %%
# One run, watched by a callback
# ------------------------------
# A :class:`~msr_sklearn.training.Callback` sees the model after every meta-step; this
# one measures the angle of ``span(U)`` to the band every 50 steps. The same fit with
# ``layer="dense"`` is plain MAML.
from msr_sklearn.training import Callback


class AngleToBand(Callback):
    def __init__(self, every=50):
        self.every, self.steps, self.angles = every, [], []

    def on_step_end(self, trainer):
        done = trainer.fit_step + 1
        if done % self.every == 0:
            # the MetaModel's sharing of the MLP's one weight, "0.weight"
            U = trainer.model.sharing("0.weight").matrix().detach().numpy()
            self.steps.append(done)
            self.angles.append(np.degrees(subspace_angles(U, band).max()))


watch = AngleToBand()
common = dict(bias=False, n_support=1, n_meta_steps=800, validation_interval=25,
              random_state=0)
msr = MetaSymmetryLearner(layer="msr", n_filters=3, callbacks=[watch], **common)
msr.fit(*train, validation_tasks=valid)
maml = MetaSymmetryLearner(layer="dense", **common).fit(*train, validation_tasks=valid)
steps, angles = watch.steps, watch.angles

print(msr.history_.tail(3).to_string())

# %%
# Three views of one run
# ----------------------
# The validation loss of MSR drops as soon as ``span(U)`` turns towards the band; MAML's
# barely moves. The inner learning rate grows as ``U`` sharpens: once every step stays
# inside the right subspace, larger steps are safe. In the second half of the run the
# meta learning rate decays (``meta_lr_schedule="inverse_time"``, the dotted line,
# ``history_["meta_lr"]``), which averages out the noise that task sampling leaves in
# ``U``: the angle keeps falling, to about a degree.
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
for name, learner, color in [("MSR (k=3)", msr, "C0"), ("MAML", maml, "C1")]:
    hist = learner.history_
    axes[0].plot(hist["step"], hist["train_loss"].rolling(25, min_periods=1).mean(),
                 color=color, alpha=0.4, label=f"{name}: meta-batch (smoothed)")
    valid_rows = hist.dropna(subset=["valid_loss"])
    axes[0].plot(valid_rows["step"], valid_rows["valid_loss"], "o-", ms=3,
                 color=color, label=f"{name}: held-out tasks")
axes[0].set_yscale("log")
axes[0].set_xlabel("meta-step")
axes[0].set_ylabel("query MSE after adaptation")
axes[0].legend(fontsize=8)

axes[1].plot(steps, angles, "o-", color="C0")
axes[1].set_yscale("log")
axes[1].set_xlabel("meta-step")
axes[1].set_ylabel("largest angle to the band (°)")
axes[1].set_title(f"span(U) vs the convolution: {angles[-1]:.2f}° at the end")
lr_axis = axes[1].twinx()
lr_axis.plot(msr.history_["step"], msr.history_["meta_lr"], color="0.5", ls=":")
lr_axis.set_ylabel("meta learning rate", color="0.5")

lr_columns = [c for c in msr.history_.columns if c.startswith("inner_lr")]
for column in lr_columns:
    axes[2].plot(msr.history_["step"], msr.history_[column], color="C0",
                 label=f"MSR {column}")
for column in [c for c in maml.history_.columns if c.startswith("inner_lr")]:
    axes[2].plot(maml.history_["step"], maml.history_[column], color="C1",
                 label=f"MAML {column}")
axes[2].set_xlabel("meta-step")
axes[2].set_ylabel("learned inner learning rate")
axes[2].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %%
# ``history_`` is a :class:`pandas.DataFrame` with one row per meta-step, so any of these
# curves is one line of pandas away. For a long run, ``verbose=1`` shows a progress bar,
# and a :class:`~msr_sklearn.training.callbacks.Checkpoint` callback,
# ``callbacks=[Checkpoint("run.msr", resume=True)]``, keeps the whole training state,
# so a killed run continues where it was;
# :class:`~msr_sklearn.training.callbacks.EarlyStopping` stops when the held-out loss
# stops improving.
