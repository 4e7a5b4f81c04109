"""
=========================================================
Which symmetry was learned? Report, harden and export it
=========================================================

MSR meta-learns a sharing pattern ``U`` from tasks, never being told which symmetry the
tasks have. :mod:`msr_sklearn.groups` turns a learned ``U`` into an answer:
:func:`~msr_sklearn.inspection.symmetry_report` tests candidate symmetries one generator at
a time, names the group the passing ones generate and measures the angle between
``U`` and that group's exact sharing ``U^G``. The learned sharing is then *hardened*
onto ``U^G`` and exported as a plain torch layer that is exactly equivariant: an
``nn.Linear`` or ``nn.Conv2d`` whose weight is parametrized by ``U`` (only the filter
values ``v`` train), ready for any torch network.

We do this three times, each time with the report's default candidates: on
permutation-equivariant maps (DeepSets layers), on an MSR-Conv layer learned from
lifting convolutions that rotate a filter by 90°, and on a dense layer learned from
images.
"""

# %%
# Permutation-equivariant tasks
# -----------------------------
# Each task is ``y = a x + b mean(x)`` on 6 features with its own ``a`` and ``b``;
# every such map commutes with every permutation of the features. The learner sees 8
# support examples per task and learns a ``U`` with ``k = 2`` columns.
import matplotlib.pyplot as plt
import numpy as np
import torch

from msr_sklearn import MetaSymmetryLearner
from msr_sklearn.datasets import make_permutation_tasks, make_rotation_tasks
from msr_sklearn.groups import compare_subspaces, grid_group, symmetric_group
from msr_sklearn.inspection import (
    equivariance_error,
    export_layer,
    harden_to_group,
    symmetry_report,
)
from msr_sklearn.inspection.plotting import plot_symmetry_matrix
from msr_sklearn.models import ConvNet

torch.set_num_threads(1)  # small ops: one thread is fastest on a CPU

n = 6
X, y, truth = make_permutation_tasks(n_tasks=300, n_samples=10, n_features=n,
                                     return_subspace=True, random_state=0)
perm_learner = MetaSymmetryLearner(n_filters=2, bias=False, n_support=8, meta_lr=0.03,
                                   n_meta_steps=300, random_state=0).fit(X, y)
sym = perm_learner.symmetry_
angle = np.degrees(compare_subspaces(sym.symmetry_matrix(0), truth).max_angle)
print(f"largest angle between the learned U and span{{I, 11ᵀ}}: {angle:.1f}°")

# %%
# The report. With no candidates given, a square layer is tested against the cyclic
# shift, the reflection ``i -> -i`` and the transposition ``(0 1)``. A score is
# ``||(ρ_out(g) ⊗ ρ_in(g)^{-T} - I) orth(U)||_F / sqrt(k)``: 0 when every weight the
# sharing can express is equivariant under ``g``, and around 1 or more when it is not.
report = symmetry_report(sym)
print(report)
summary = report.attrs["summary"]
print(f"generated group: order {summary['order']} (6! = {np.prod(range(1, n + 1))}), "
      f"dim U^G = {summary['dim_group']}, containment angle "
      f"{np.degrees(summary['containment_angle']):.1f}°")

# %%
# All three pass, and shift plus transposition generate the whole symmetric group
# ``S_6``. Hardening projects ``span(U)`` onto ``U^G``; the exported ``nn.Linear`` keeps
# ``U`` as a buffer of its weight's parametrization and has just 2 trainable numbers.
# Its weights start at the projection of the meta-learned initial weight ``U v0``.
# ``equivariance_error`` of the learned symmetry tests its layer with random filter
# values, of the exported layer the layer itself.
soft_weight = (sym.symmetry_matrix(0) @ sym.initial_filters(0)).reshape(n, n)
hard = export_layer(harden_to_group(sym, report), (n, n), weight=soft_weight)
print("trainable parameters:", sum(p.numel() for p in hard.parameters()))
S6 = symmetric_group(n)
print(f"equivariance error over all 720 permutations: "
      f"learned {equivariance_error(sym, S6):.1e}, "
      f"hardened {equivariance_error(hard, S6):.1e}")

# %%
# Rotation tasks
# --------------
# Each task is a lifting convolution of a 7×7 image: one random 3×3 filter and its
# rotations by 90°, 180° and 270° give 4 output maps of 5×5. We give the tasks as
# images ``(n, 1, 7, 7)`` and meta-learn the sharing of the filter tensor of a single
# convolution (a ``ConvNet`` without a head, whose 4 output maps are the outputs), with
# MSR-Conv's ``n_copies=4`` output channels per filter, from one support example per
# task.
X, y, truth = make_rotation_tasks("c4", n_tasks=300, n_samples=10, image_size=7,
                                  return_subspace=True, random_state=0)
images = X.reshape(300, 10, 1, 7, 7)
rot_learner = MetaSymmetryLearner(ConvNet, module__channels=(4,), module__n_copies=4,
                                  module__n_outputs=None, module__bias=False,
                                  n_support=1, meta_lr=0.01, n_meta_steps=300,
                                  random_state=0)
rot_sym = rot_learner.fit(images, y).symmetry_
U = rot_sym.symmetry_matrix(0)  # the filter tensor (4, 1, 3, 3) from 9 filter values
print(f"largest angle to the exact lifting sharing: "
      f"{np.degrees(compare_subspaces(U, truth).max_angle):.1f}°")

# %%
# No candidates are needed here either. For a convolution the report tries the 90°
# rotation and the flip of the 3×3 filter grid, each together with a relabelling of
# the filter's 4 copies: the learned order of the copies is arbitrary, so for every
# candidate it finds the relabelling under which ``span(U)`` is most nearly invariant
# (a linear assignment between copies) and scores the candidate with it. The filter
# tensor counts as a weight of shape ``(4 copies, 9 pixels)``: the layer on one patch.
report = symmetry_report(rot_sym)
print(report)
summary = report.attrs["summary"]
rot_in, rot_out = report.attrs["group"].generator_matrices()[0]
print(f"named {summary['name']} (order {summary['order']}); copy c of a filter is copy "
      f"{rot_out.argmax(axis=1).tolist()}[c] rotated by 90°")

# %%
# The rotation passes with the cyclic relabelling of the copies; the flip fails with
# every relabelling (the tasks' filters are not mirror-symmetric). Harden onto
# ``U^G`` and export an ``nn.Conv2d`` (valid, stride 1); check its equivariance under
# all rotations of 7×7 images (outputs rotate and their channels cycle). The groups act
# on flat vectors, so the convolution is told the shape of its images.
filters = U @ rot_sym.initial_filters(0)
hard_conv = export_layer(harden_to_group(rot_sym, report), (4, 1, 3, 3),
                         weight=filters.reshape(4, 1, 3, 3), input_shape=(1, 7, 7))
image_group = grid_group(7, "c4", out_rep="regular", out_size=5)
learned_error = equivariance_error(rot_sym, image_group)
hard_error = equivariance_error(hard_conv, image_group, input_shape=(1, 7, 7))
print(f"equivariance error over C4: learned {learned_error:.1e}, "
      f"hardened {hard_error:.1e}")
print(hard_conv)

# %%
# ``hard_conv`` is an ordinary ``nn.Conv2d``: it goes into any network (here a small
# classifier) and any training loop, and its filters stay inside the group's sharing
# (its trainable parameters are the 9 filter values).
classifier = torch.nn.Sequential(hard_conv, torch.nn.ReLU(), torch.nn.Flatten(),
                                 torch.nn.Linear(4 * 5 * 5, 10))
print("classifier logits:", tuple(classifier(torch.randn(2, 1, 7, 7)).shape),
      "| conv parameters:", [tuple(p.shape) for p in hard_conv.parameters()])

# %%
# A dense layer on images
# -----------------------
# The same kind of tasks under ``D4`` (rotations and flips: 8 output maps), on 5×5
# images given as flat rows, learned by the default dense MSR layer 25 → 72
# (``layer="msr"``, ``k = 9``) that is never told it reads images. Told the images'
# shape (``input_shape=(1, 5, 5)``; a network that reads images, such as tasks of
# shape ``(n, 1, 5, 5)``, would say it itself), the report rotates and flips the input
# grid and tries two readings of the outputs: ``invariant`` (they stay put) and
# ``8x3x3 maps`` (8 channels of 3×3 maps, the side ``5 - kernel_size + 1``, moved with
# the image and their channels relabelled as found from ``U``).
X, y = make_rotation_tasks("d4", n_tasks=500, n_samples=10, image_size=5,
                           random_state=0)
dense_learner = MetaSymmetryLearner(layer="msr", n_filters=9, bias=False, n_support=4,
                                    meta_lr=0.01, n_meta_steps=1000,
                                    random_state=0).fit(X, y)
dense_sym = dense_learner.symmetry_
report = symmetry_report(dense_sym, input_shape=(1, 5, 5))
print(report)
print(f"named {report.attrs['summary']['name']}")
hard = export_layer(harden_to_group(dense_sym, report), (72, 25),
                    weight=(dense_sym.symmetry_matrix(0)
                            @ dense_sym.initial_filters(0)).reshape(72, 25))
lifting_d4 = grid_group(5, "d4", out_rep="regular", out_size=3)
print(f"equivariance error over D4: "
      f"learned {equivariance_error(dense_sym, lifting_d4):.1e}, "
      f"hardened {equivariance_error(hard, lifting_d4):.1e}")

# %%
# Pictures
# --------
# Under each column of the exact sharing (bottom), its projection onto the learned
# span (top): identical rows mean the symmetry was recovered. The first panel of a row
# is a random weight of the span. First figure: the permutation sharing (``I`` and
# the off-diagonal ``11ᵀ - I``). Second figure: filter tensors, drawn as the 3×3
# filters of the 4 output channels side by side, each the previous one rotated by 90°.
exact_permutations = make_permutation_tasks(n_tasks=1, n_features=n,
                                            return_subspace=True)[2]
plot_symmetry_matrix(sym, reference=exact_permutations, max_columns=2,
                     figure=plt.figure())
plot_symmetry_matrix(rot_sym, reference=truth, max_columns=4, figure=plt.figure())
