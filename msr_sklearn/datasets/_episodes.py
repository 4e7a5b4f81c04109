"""N-way K-shot episodes with the Aug protocol, shared by the few-shot loaders.

One episode draws ``n_way`` classes, ``n_shot + n_query`` distinct items per class,
fresh label values, and (for images) an element of C4 / D4 and an integer shift per
row; the support rows come first. The order of the random draws is part of the
loaders' contract (a seed gives the same episodes across versions), so every loader
draws through :func:`draw_episodes`.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np

#: the transformations ``augment`` may name
AUGMENTATIONS = ("rot90", "flip")


def check_choice(name, value, options):
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {options}; got {value!r}")


def check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a bool; got {value!r}")
    return bool(value)


def check_augment(augment):
    if augment is None:
        return ()
    if isinstance(augment, str):
        augment = (augment,)
    try:
        augment = tuple(augment)
    except TypeError:
        raise ValueError(f"augment must be a tuple drawn from {AUGMENTATIONS}; "
                         f"got {augment!r}") from None
    for a in augment:
        if a not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {a!r}; augment must be drawn from "
                             f"{AUGMENTATIONS}")
    if len(set(augment)) != len(augment):
        raise ValueError(f"augment names a transformation twice: {augment!r}")
    return augment


def check_episode_size(by_class, n_way, n_shot, n_query, where):
    """Enough classes for ``n_way`` and items for ``n_shot + n_query`` in each."""
    if n_way > len(by_class):
        raise ValueError(f"n_way={n_way} exceeds the {len(by_class)} classes of {where}")
    fewest = min(len(v) for v in by_class.values())
    if n_shot + n_query > fewest:
        raise ValueError(f"n_shot + n_query = {n_shot + n_query} exceeds the {fewest} items "
                         f"of the smallest class of {where}")


def draw_episodes(rng, by_class, n_tasks, n_way, n_shot, n_query, augment=None, shift=0,
                  augment_support=False):
    """The random draws of ``n_tasks`` episodes.

    Parameters
    ----------
    rng : numpy.random.RandomState
    by_class : dict
        Class id -> array of item indices (images, signals) of that class.
    n_tasks, n_way, n_shot, n_query : int
    augment : tuple of {"rot90", "flip"} or None
        ``None``: no transformation is drawn (1-D data); ``()``: draws that are all
        zero, kept so that a seed gives the same episodes with and without
        augmentation.
    shift : int
        Largest integer shift per axis.
    augment_support : bool
        Transform the support rows too.

    Returns
    -------
    draws : dict of ndarray of shape (n_tasks, n_rows)
        ``"item"`` (index into the pool), ``"way"`` (``0..n_way-1``, the class's
        position in ``ways``) and, unless ``augment is None``, ``"rotation"``
        (quarter turns), ``"flip"``, ``"shift_y"``, ``"shift_x"``.
    ways : ndarray of shape (n_tasks, n_way)
        The class ids of every episode.
    labels : ndarray of shape (n_tasks, n_way), int64
        Their fresh label values, distinct integers in ``0..999``.
    """
    n_support = n_way * n_shot
    n_rows = n_way * (n_shot + n_query)
    classes = np.array(sorted(by_class))
    keys = ["item", "way"]
    if augment is not None:
        keys += ["rotation", "flip", "shift_y", "shift_x"]
        rotate, flip = "rot90" in augment, "flip" in augment
        changed = (np.arange(n_rows) >= n_support) | bool(augment_support)
    draws = {key: np.empty((n_tasks, n_rows), dtype=np.int64) for key in keys}
    ways = np.empty((n_tasks, n_way), dtype=classes.dtype)
    labels = np.empty((n_tasks, n_way), dtype=np.int64)
    for t in range(n_tasks):
        ways[t] = rng.choice(classes, n_way, replace=False)
        labels[t] = rng.choice(1000, n_way, replace=False)
        picks = np.stack([rng.choice(by_class[c], n_shot + n_query, replace=False)
                          for c in ways[t]])  # (n_way, n_shot + n_query)
        way_of = np.repeat(np.arange(n_way)[:, None], n_shot + n_query, axis=1)
        support = rng.permutation(n_support)
        query = rng.permutation(n_rows - n_support)
        draws["item"][t] = np.concatenate([picks[:, :n_shot].ravel()[support],
                                           picks[:, n_shot:].ravel()[query]])
        draws["way"][t] = np.concatenate([way_of[:, :n_shot].ravel()[support],
                                          way_of[:, n_shot:].ravel()[query]])
        if augment is None:
            continue
        draws["rotation"][t] = np.where(changed & rotate, rng.randint(0, 4, n_rows), 0)
        draws["flip"][t] = np.where(changed & flip, rng.randint(0, 2, n_rows), 0)
        draws["shift_y"][t] = np.where(changed, rng.randint(-shift, shift + 1, n_rows), 0)
        draws["shift_x"][t] = np.where(changed, rng.randint(-shift, shift + 1, n_rows), 0)
    return draws, ways, labels


def transform_many(images, rotation, flip, shift_y, shift_x, shift):
    """Images ``(n, h, w)`` flipped left-right, then rotated by quarter turns
    counter-clockwise (as :func:`numpy.rot90`; the order of
    :func:`msr_sklearn.groups.grid_transforms`), then shifted with zero fill."""
    out = np.where(flip.astype(bool)[:, None, None], images[:, :, ::-1], images)
    for r in (1, 2, 3):
        rows = rotation == r
        if rows.any():
            out[rows] = np.rot90(out[rows], r, axes=(1, 2))
    if shift:
        n, h, w = out.shape
        padded = np.zeros((n, h + 2 * shift, w + 2 * shift), dtype=out.dtype)
        padded[:, shift:shift + h, shift:shift + w] = out
        # output pixel (i, j) reads input pixel (i - dy, j - dx)
        iy = shift - shift_y[:, None] + np.arange(h)[None, :]  # (n, h)
        ix = shift - shift_x[:, None] + np.arange(w)[None, :]
        out = padded[np.arange(n)[:, None, None], iy[:, :, None], ix[:, None, :]]
    return out


def info_frame(draws, ways, labels, n_support, class_column, class_names=None,
               item_column="item"):
    """One row per episode row: task, row, role, label, the class (``class_names[id]``
    if given), the item (``item_column``) and its transformation."""
    import pandas as pd

    n_tasks, n_rows = draws["item"].shape
    class_of = np.take_along_axis(ways, draws["way"], axis=1).ravel()
    columns = {
        "task": np.repeat(np.arange(n_tasks), n_rows),
        "row": np.tile(np.arange(n_rows), n_tasks),
        "role": np.tile(np.where(np.arange(n_rows) >= n_support, "query", "support"), n_tasks),
        "label": np.take_along_axis(labels, draws["way"], axis=1).ravel(),
        class_column: class_of if class_names is None else np.asarray(class_names)[class_of],
    }
    for key in draws:
        if key == "item":
            columns[item_column] = draws[key].ravel()
        elif key != "way":
            columns[key] = draws[key].ravel().astype(bool) if key == "flip" \
                else draws[key].ravel()
    return pd.DataFrame(columns)
