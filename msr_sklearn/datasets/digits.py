"""Aug-Digits: few-shot episodes of scikit-learn's 8×8 digits with augmented queries.

The protocol of Aug-Omniglot (MSR paper, §3.2 of the reference notes) on data that
ship with scikit-learn (``sklearn.datasets.load_digits``: 1,797 images, 10 classes,
no download): every episode adapts on a *clean* support set and is scored on a
*query* set transformed by exact grid symmetries (90° rotations, flips, optional
integer shifts with zero fill). A learner that does well must have meta-learned the
invariance, since the support never shows it.

The loader lives here; :mod:`msr_sklearn.datasets.synthetic` re-exports it as
``load_aug_digits_tasks``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from sklearn.utils import check_random_state

from ._episodes import AUGMENTATIONS, check_bool, check_episode_size, draw_episodes, info_frame
from ._episodes import check_augment as _check_augment
from ._episodes import check_choice as _check_choice
from ._episodes import check_int as _check_int
from ._episodes import transform_many as _transform_many

__all__ = ["AUG_DIGITS_AUGMENTATIONS", "aug_digits_split", "load_aug_digits_tasks"]

#: the transformations ``augment`` may name
AUG_DIGITS_AUGMENTATIONS = AUGMENTATIONS

#: seed of the fixed image split; a constant, so train and test never share an image
_SPLIT_SEED = 0
#: meta-train classes of ``split_by="classes"`` (the odd digits are meta-test): 6 and 9,
#: which a 180° rotation swaps, fall on different sides, as do 2 and 5
_TRAIN_CLASSES = (0, 2, 4, 6, 8)
_SIDE = 8
#: share of the meta-train side's images (per class) held out as ``split="val"``
_VAL_FRACTION = 0.2


@lru_cache(maxsize=1)
def _digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float64)  # 0..16 -> [0, 1]
    images.setflags(write=False)
    target = bunch.target.astype(np.int64)
    target.setflags(write=False)
    return images, target


@lru_cache(maxsize=1)
def _pixel_moments():
    """Mean and standard deviation of every pixel of the meta-train images (image split)."""
    images, _ = _digits()
    pixels = images[aug_digits_split("train", "images")]
    return float(pixels.mean()), float(pixels.std())


def aug_digits_split(split="train", split_by="images"):
    """Indices into ``load_digits().images`` of one part of the fixed meta-split.

    The split is fixed (seeded by a constant, independent of any ``random_state``), so
    episodes drawn from different parts never share an image.

    Parameters
    ----------
    split : {"train", "val", "test"}
        ``"val"`` is a fixed fifth of the meta-train side's images (per class),
        removed from ``"train"``, for choosing hyperparameters without touching the
        meta-test images.
    split_by : {"images", "classes"}
        ``"images"``: a fixed, seeded, class-stratified half of every class's images is
        meta-test (all 10 digits on both sides, no image on both). ``"classes"``: the
        even digits are meta-train (and val) and the odd digits meta-test.

    Returns
    -------
    ndarray of int
        Sorted image indices.

    Examples
    --------
    >>> from msr_sklearn.datasets import aug_digits_split
    >>> parts = [aug_digits_split(s) for s in ("train", "val", "test")]
    >>> [len(p) for p in parts], len(set(parts[0]) & set(parts[2]))
    ([722, 179, 896], 0)
    """
    _check_choice("split", split, ("train", "val", "test"))
    _check_choice("split_by", split_by, ("images", "classes"))
    _, target = _digits()
    rng = np.random.RandomState(_SPLIT_SEED)
    chosen = []
    for c in range(10):
        members = np.flatnonzero(target == c)
        members = members[rng.permutation(len(members))]
        if split_by == "images":
            half = (len(members) + 1) // 2
            train_side, test_side = members[:half], members[half:]
        elif c in _TRAIN_CLASSES:
            train_side, test_side = members, members[:0]
        else:
            train_side, test_side = members[:0], members
        n_val = int(round(_VAL_FRACTION * len(train_side)))
        chosen.append({"train": train_side[n_val:], "val": train_side[:n_val],
                       "test": test_side}[split])
    return np.sort(np.concatenate(chosen))


def _transform(image, rotation, flip, dy, dx):
    """Flip left-right ``flip`` times, rotate ``rotation``×90° counter-clockwise (as
    :func:`numpy.rot90`, the order of :func:`msr_sklearn.groups.grid_transforms`),
    then shift by ``(dy, dx)`` pixels with zero fill. All exact on the 8×8 grid."""
    out = np.fliplr(image) if flip else image
    out = np.rot90(out, rotation)
    if dy or dx:
        shifted = np.zeros_like(out)
        h, w = out.shape
        shifted[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
            out[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
        out = shifted
    return out


def load_aug_digits_tasks(n_tasks, n_way=5, n_shot=1, n_query=5, split="train",
                          augment=("rot90", "flip"), shift=0, augment_support=False,
                          split_by="images", standardize=False, return_info=False,
                          random_state=None):
    """N-way K-shot episodes of 8×8 digits: clean support, augmented query.

    Each episode draws ``n_way`` digit classes and ``n_shot + n_query`` distinct
    images per class from one side of a fixed meta-split (so meta-train and meta-test
    episodes never share an image), gives the classes fresh label values (``n_way``
    distinct integers drawn from ``0..999``, assigned at random, so the learner's
    per-task label encoding puts the digits in a random order), and transforms every
    query image by an independent random element of the group that ``augment``
    generates, followed by a random integer shift of at most ``shift`` pixels per
    axis with zero fill. Support images stay clean unless ``augment_support``.

    Use the tasks with ``MetaSymmetryLearner(support_split="first",
    n_support=n_way * n_shot, module=ConvNet, module__input_shape=(1, 8, 8), ...)``:
    the support rows come first in every task.

    Parameters
    ----------
    n_tasks : int
        Number of episodes.
    n_way : int, default=5
        Classes per episode (at most 10, or 5 with ``split_by="classes"``). 5-way is
        the usual Omniglot protocol and keeps episodes varied (252 class subsets).
    n_shot : int, default=1
        Support images per class. 1-shot is where a meta-learned invariance matters
        most: a single clean example shows none of the query's poses. Use 5 for the
        5-shot variant.
    n_query : int, default=5
        Query images per class (the C3 re-implementation's choice for Aug-Omniglot).
    split : {"train", "val", "test"}, default="train"
        Part of the fixed meta-split to draw from (:func:`aug_digits_split`):
        ``"val"`` holds a fifth of the meta-train side's images, for tuning.
    augment : tuple of {"rot90", "flip"} or None, default=("rot90", "flip")
        ``("rot90",)``: a uniformly random rotation by a multiple of 90° (C4);
        ``("flip",)``: a left-right flip with probability 1/2; both: a uniform element
        of the dihedral group D4 (flip, then rotate). ``()`` or ``None``: none.
        Every transformation permutes pixels exactly (no interpolation).
    shift : int, default=0
        Maximum integer translation per axis (``0..7``); pixels moved off the grid are
        lost and the vacated ones are zero.
    augment_support : bool, default=False
        Also augment the support images (independent draws). Meant for training a
        baseline with augmented support sets; the protocol's test episodes keep
        ``False``.
    split_by : {"images", "classes"}, default="images"
        ``"images"``: a fixed, seeded, class-stratified halving of every class (about
        90 images per class meta-test, 72 meta-train and 18 val); all 10 digits appear
        in every part. With
        only 10 classes a class-disjoint split leaves 5 per side, so every 5-way
        episode would contain the same 5 digits; the image split keeps episodes
        varied, and the symmetry to be learned (D4) does not depend on the digit.
        ``"classes"``: even digits are meta-train (a fifth of their images val), odd
        digits meta-test (new classes at meta-test; 6/9 and 2/5, which rotations and flips confuse, are separated).
        Note that with ``"images"`` a 180° rotation makes a 6 look like a 9, so no
        D4-invariant classifier can reach 100 % on episodes that hold both.
    standardize : bool, default=False
        Map pixels ``x`` to ``(x - m) / s`` with the mean ``m`` and standard deviation
        ``s`` of all meta-train pixels (two scalars, so every augmentation stays an
        exact pixel permutation; zero-filled pixels become the background value).
        Zero-mean inputs help networks without normalization layers; without it the
        pixels are in ``[0, 1]``.
    return_info : bool, default=False
        Also return a DataFrame describing every row.
    random_state : int, RandomState or None, default=None
        Controls the episodes (classes, images, labels, transformations); the
        meta-split itself is fixed.

    Returns
    -------
    tasks : list of (X, y)
        ``X`` of shape ``(n_way * (n_shot + n_query), 64)``: row-major 8×8 images
        scaled to ``[0, 1]`` (or standardized); ``y`` of shape ``(n_way * (n_shot + n_query),)``, int64
        labels. The first ``n_way * n_shot`` rows are the support (in random order),
        the rest the query (in random order).
    info : pandas.DataFrame, only if ``return_info``
        One row per image row of ``tasks``: ``task``, ``row``, ``role``
        (``"support"``/``"query"``), ``label``, ``digit``, ``image`` (index into
        ``load_digits().images``), ``rotation`` (quarter turns), ``flip``,
        ``shift_y``, ``shift_x``.

    Examples
    --------
    >>> from msr_sklearn.datasets import load_aug_digits_tasks
    >>> tasks = load_aug_digits_tasks(3, n_way=5, n_shot=1, n_query=5, random_state=0)
    >>> X, y = tasks[0]
    >>> X.shape, y.shape
    ((30, 64), (30,))
    >>> len(set(y[:5])) == 5 and set(y[5:]) == set(y[:5])   # one support image per class
    True
    """
    n_tasks = _check_int("n_tasks", n_tasks, 1)
    n_way = _check_int("n_way", n_way, 2)
    n_shot = _check_int("n_shot", n_shot, 1)
    n_query = _check_int("n_query", n_query, 1)
    shift = _check_int("shift", shift, 0)
    if shift >= _SIDE:
        raise ValueError(f"shift must be < {_SIDE} (the image side); got {shift}")
    _check_choice("split", split, ("train", "val", "test"))
    _check_choice("split_by", split_by, ("images", "classes"))
    augment = _check_augment(augment)
    augment_support = check_bool("augment_support", augment_support)
    standardize = check_bool("standardize", standardize)
    images, target = _digits()
    pool = aug_digits_split(split, split_by)
    by_class = {c: pool[target[pool] == c] for c in np.unique(target[pool])}
    check_episode_size(by_class, n_way, n_shot, n_query,
                       f"the {split!r} side (split_by={split_by!r})")

    rng = check_random_state(random_state)
    draws, ways, labels = draw_episodes(rng, by_class, n_tasks, n_way, n_shot, n_query,
                                        augment, shift, augment_support)
    n_rows = n_way * (n_shot + n_query)
    flat = {k: v.ravel() for k, v in draws.items()}
    X_all = _transform_many(images[flat["item"]], flat["rotation"], flat["flip"],
                            flat["shift_y"], flat["shift_x"], shift)
    X_all = X_all.reshape(n_tasks, n_rows, _SIDE * _SIDE)
    if standardize:
        mean, std = _pixel_moments()
        X_all = (X_all - mean) / std
    tasks = [(X_all[t].copy(), labels[t][draws["way"][t]]) for t in range(n_tasks)]
    if not return_info:
        return tasks
    info = info_frame(draws, ways, labels, n_way * n_shot, "digit", item_column="image")
    return tasks, info
