"""Task generators with known symmetries, and real-data few-shot tasks.

Synthetic families (:func:`make_translation_tasks`, :func:`make_rotation_tasks`,
:func:`make_permutation_tasks`) come with the sharing that generated them; Aug-Digits
(:func:`load_aug_digits_tasks`) is few-shot classification on scikit-learn's digits
with augmented queries.
"""

from .digits import AUG_DIGITS_AUGMENTATIONS, aug_digits_split, load_aug_digits_tasks
from .glyphs import AUG_GLYPHS_SPLITS, load_aug_glyphs_tasks, load_glyphs
from .rotation2d import ROTATION2D_GROUPS, make_rotation2d_tasks, rotation2d_sharing
from .synthetic import (
    make_permutation_tasks,
    make_rotation_tasks,
    make_translation_tasks,
    translation_sharing,
)

__all__ = [
    "AUG_DIGITS_AUGMENTATIONS",
    "AUG_GLYPHS_SPLITS",
    "aug_digits_split",
    "load_aug_digits_tasks",
    "load_aug_glyphs_tasks",
    "load_glyphs",
    "ROTATION2D_GROUPS",
    "make_permutation_tasks",
    "make_rotation2d_tasks",
    "make_rotation_tasks",
    "make_translation_tasks",
    "rotation2d_sharing",
    "translation_sharing",
]
