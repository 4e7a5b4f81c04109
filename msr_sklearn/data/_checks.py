"""Checks of raw task data that name what is wrong: ragged nested lists, dates or text
where numbers belong, missing or unorderable task ids, padding that cannot be stored.

:mod:`msr_sklearn.data.tasks` calls them while it validates tasks.
"""

from __future__ import annotations

import math
import os

import numpy as np

#: padded tasks above this size are checked before allocation: refused when they need
#: more memory than is available, or (the padding being the problem) this many times the
#: tasks' own rows
PADDING_CHECKED_BYTES = 2 ** 30
PADDING_MAX_WASTE = 100


def as_array(a, what, hint=""):
    """``a`` (numpy, pandas or nested lists) as a numpy array; a ragged nested list is a
    ``ValueError`` that says so (numpy's own names an "inhomogeneous shape")."""
    try:
        return np.asarray(a.to_numpy() if hasattr(a, "to_numpy") else a)
    except ValueError as exc:
        if "inhomogeneous" not in str(exc):
            raise
        raise ValueError(f"{what} is a ragged nested list: its rows (or tasks) differ in "
                         f"length ({exc}){hint or '; every sample needs the same features'}"
                         ) from exc


def refuse_non_numbers(a, what):
    """A ``ValueError`` for dates, durations and text (numeric text included), which a
    float conversion would turn into numbers silently."""
    if a.dtype.kind in "mM":
        raise ValueError(f"{what} must be numeric; got dates or durations ({a.dtype}). Convert "
                         "them to numbers first (e.g. seconds since a reference time, or "
                         "calendar features)")
    if a.dtype.kind in "US" or a.dtype.kind == "O" and any(
            isinstance(v, (str, bytes)) for v in a.flat):
        raise ValueError(f"{what} must be numeric; got strings (dtype {a.dtype}), which are "
                         "not converted silently. Encode categorical features first, e.g. "
                         "with OneHotEncoder; convert numbers stored as text yourself "
                         "(e.g. with .astype(float))")


def unique_task_ids(groups):
    """``np.unique(groups, return_index=True, return_inverse=True)``, once every task id is
    present (no None or NaN) and the ids can be ordered (not ints mixed with strings)."""
    if groups.dtype.kind in "fcO":
        missing = np.flatnonzero([v is None or (isinstance(v, (float, complex, np.inexact))
                                                and v != v) for v in groups.tolist()])
        if len(missing):
            more = f" and {len(missing) - 1} more rows" if len(missing) > 1 else ""
            raise ValueError(f"groups has no task id (None or NaN) at row {missing[0]}{more}; "
                             "every row needs the id of its task")
    try:
        return np.unique(groups, return_index=True, return_inverse=True)
    except TypeError as exc:
        kinds = sorted({type(v).__name__ for v in groups.tolist()})
        raise TypeError(f"groups mixes task ids of types {kinds}, which cannot be ordered; "
                        "give every task id one type (e.g. groups.astype(str))") from exc


def available_memory():
    """Bytes of memory available now (Linux's MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_padded_size(Xs, ys, sizes, itemsize, objective):
    """Refuse, before allocating, tasks whose padding to the largest one cannot or should
    not be stored: name the largest task and what to do instead.

    ``Xs`` and ``ys`` are the tasks' arrays, ``sizes`` their rows, ``itemsize`` the bytes
    of one stored value.
    """
    n_max = max(sizes)
    classification = objective == "classification"
    y_values = 1 if classification else max(math.prod(y.shape[1:]) for y in ys)
    per_row = Xs[0][0].size * itemsize + y_values * (8 if classification else itemsize)
    padded, own = len(Xs) * n_max * per_row, sum(sizes) * per_row
    if padded < PADDING_CHECKED_BYTES:
        return
    available = available_memory()
    gib = 2 ** 30
    if available is not None and padded > available:
        why = f"more than the {available / gib:.1f} GiB of memory available"
    elif padded > PADDING_MAX_WASTE * own:
        why = (f"{padded / own:.0f} times their own rows ({own / gib:.2g} GiB), in memory and "
               "in every meta-step's compute")
    else:
        return
    largest = int(np.argmax(sizes))
    raise ValueError(
        f"the {len(Xs)} tasks are stored padded to the largest one, task {largest} of {n_max} "
        f"rows: {padded / gib:.1f} GiB, {why}. Split the large task into tasks of about the "
        "others' size, or pass the tasks as a stream (msr_sklearn.data.streams.TaskStream), "
        "which holds one meta-batch at a time")
