"""Task generators with known symmetries, and real-data few-shot tasks.

Synthetic families (:func:`make_translation_tasks`, :func:`make_rotation_tasks`,
:func:`make_permutation_tasks`, and the paper's 2-D steerable-convolution problems
:func:`make_rotation2d_tasks`) come with the sharing that generated them. :data:`ZOO`
(:mod:`msr_sklearn.datasets.zoo`) is a registry of families with known true sharings
that differ in group, size and how much signal each symmetry direction carries, on
which the learner's defaults are chosen by their worst case. Few-shot classification:
Aug-Digits (:func:`load_aug_digits_tasks`, scikit-learn's 8×8 digits) and Aug-Glyphs
(:func:`load_aug_glyphs_tasks`, 1,087 letter classes rendered from matplotlib's fonts,
Omniglot's scale), both with clean support and D4-augmented queries, and MNIST-1D
(:func:`load_mnist1d_tasks`). Rendered or generated sets are cached in
:func:`sklearn.datasets.get_data_home`; nothing is downloaded.
"""

from .digits import AUG_DIGITS_AUGMENTATIONS, aug_digits_split, load_aug_digits_tasks
from .glyphs import AUG_GLYPHS_SPLITS, load_aug_glyphs_tasks, load_glyphs
from .mnist1d import load_mnist1d_tasks, mnist1d_conv_sharing
from .rotation2d import ROTATION2D_GROUPS, make_rotation2d_tasks, rotation2d_sharing
from .synthetic import (
    make_permutation_tasks,
    make_rotation_tasks,
    make_translation_tasks,
    translation_sharing,
)
from .zoo import (
    ZOO,
    ZooFamily,
    conv_weight_subspace,
    make_group_tasks,
    make_lifting_tasks,
    make_zoo_tasks,
    pair_permutation_group,
    product_permutation_group,
)

__all__ = [
    "AUG_DIGITS_AUGMENTATIONS",
    "AUG_GLYPHS_SPLITS",
    "ZOO",
    "ZooFamily",
    "conv_weight_subspace",
    "make_group_tasks",
    "make_lifting_tasks",
    "make_zoo_tasks",
    "pair_permutation_group",
    "product_permutation_group",
    "aug_digits_split",
    "load_aug_digits_tasks",
    "load_aug_glyphs_tasks",
    "load_glyphs",
    "load_mnist1d_tasks",
    "mnist1d_conv_sharing",
    "ROTATION2D_GROUPS",
    "make_permutation_tasks",
    "make_rotation2d_tasks",
    "make_rotation_tasks",
    "make_translation_tasks",
    "rotation2d_sharing",
    "translation_sharing",
]
