"""Training checkpoints as files: the training-state tree, the lock, the location check.

A checkpoint is a :class:`~msr_sklearn.LearnedSymmetry` file with two more kinds of
members: ``training.json`` (the JSON part of the training state, whose arrays are
``{"__tensor__": i}`` or ``{"__array__": i}``) and ``training/<i>.npy``. This module
reads and writes that tree (:func:`training_members`, :func:`read_training_state`);
what the tree must hold is checked by its caller
(:mod:`msr_sklearn.training.checkpoints`). It also keeps two fits from sharing one
checkpoint (:func:`checkpoint_lock`) and checks the location before a fit starts
(:func:`check_checkpoint_location`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np

from .archive import TEMP_SUFFIX, npy_bytes, read_archive

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
try:
    import msvcrt
except ImportError:  # POSIX
    msvcrt = None

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "TRAINING_MEMBERS",
           "check_checkpoint_location", "checkpoint_file_kind", "checkpoint_lock",
           "read_training_state", "training_members"]

CHECKPOINT_FORMAT = "msr_sklearn.TrainingCheckpoint"
#: the layout of the training state (unchanged by the symmetry's own versions)
CHECKPOINT_VERSION = 1
#: the member names a checkpoint adds to a symmetry file (a regular expression)
TRAINING_MEMBERS = r"training\.json|training/[0-9]+\.npy"
_TRAINING = "training.json"
#: how the tree marks its tensors and numpy arrays in JSON
_TENSOR, _ARRAY = "__tensor__", "__array__"


# ------------------------------------------------------------------- the state tree
def training_members(state):
    """The members a training ``state`` adds to a symmetry file, name -> bytes.

    Parameters
    ----------
    state : dict
        Nested dicts (string keys) and lists of JSON values, numpy arrays and torch
        tensors (anything with ``detach``, ``cpu`` and ``numpy``).

    Returns
    -------
    dict of str to bytes
        ``training.json`` and one ``training/<i>.npy`` per array.

    Examples
    --------
    >>> import numpy as np
    >>> from msr_sklearn.persistence import training_members
    >>> sorted(training_members({"step": 3, "w": np.zeros(2)}))
    ['training.json', 'training/0.npy']
    """
    arrays = []
    tree = _flatten(state, arrays)
    members = {_TRAINING: json.dumps({"format": CHECKPOINT_FORMAT,
                                      "version": CHECKPOINT_VERSION, "state": tree}).encode()}
    members.update({f"training/{i}.npy": npy_bytes(a) for i, a in enumerate(arrays)})
    return members


def read_training_state(archive, expect=None, tensor=None):
    """The training state in an open checkpoint, each array checked before it is read.

    Parameters
    ----------
    archive : ArchiveReader
        The open checkpoint (:func:`~msr_sklearn.persistence.read_archive`).
    expect : callable or None, default=None
        ``expect(path)`` -> keyword arguments of :meth:`ArchiveReader.array` (``shape``,
        ``shapes``, ``dtype``, ``finite``) for the array at ``path`` in the tree (a tuple
        of keys, e.g. ``("trainer", "model", "inner_lrs")``); it raises ``ValueError``
        for a path that should not hold an array. ``None``: any allowed dtype, NaN
        allowed.
    tensor : callable or None, default=None
        Turns the arrays the writer marked as tensors into tensors
        (``torch.from_numpy``); ``None``: they stay numpy arrays.

    Returns
    -------
    dict
        The state tree.

    Raises
    ------
    ValueError
        The file has no training state, or another layout, or an array that is not
        what ``expect`` says, or members its tree does not use.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from msr_sklearn.persistence import (read_archive, read_training_state,
    ...                                      training_members, write_archive)
    >>> path = os.path.join(tempfile.mkdtemp(), "state.zip")
    >>> write_archive(path, training_members({"step": 3, "w": np.zeros(2)}))
    >>> with read_archive(path, "training state") as archive:
    ...     read_training_state(archive)
    {'step': 3, 'w': array([0., 0.])}
    """
    if _TRAINING not in archive.names:
        raise ValueError("it holds a LearnedSymmetry but no training state (it was "
                         "written by LearnedSymmetry.save or an older msr_sklearn)")
    head = archive.json(_TRAINING)
    if set(head) != {"format", "version", "state"} or (
            head["format"], head["version"]) != (CHECKPOINT_FORMAT, CHECKPOINT_VERSION):
        raise ValueError(f"its training state has format {head.get('format')!r} version "
                         f"{head.get('version')!r}; this msr_sklearn reads "
                         f"{CHECKPOINT_FORMAT!r} version {CHECKPOINT_VERSION}")
    members = {n for n in archive.names if n.startswith("training/")}
    used = set()

    def load(kind, index, path):
        name = f"training/{index}.npy"
        if type(index) is not int or name not in members or name in used:
            raise ValueError(f"its training state refers to array {index!r} at "
                             f"{'.'.join(path)}, which is missing or used twice")
        used.add(name)
        array = archive.array(name, **(expect(path) if expect else {"finite": False}))
        return tensor(array) if kind == _TENSOR and tensor is not None else array

    state = _unflatten(head["state"], load, ())
    if members - used:
        raise ValueError(f"it has members that are no part of its training state: "
                         f"{sorted(members - used)[:5]}")
    return state


def _flatten(tree, arrays):
    """``tree`` as JSON values, its arrays and tensors appended to ``arrays``."""
    is_tensor = all(hasattr(tree, a) for a in ("detach", "cpu", "numpy"))  # torch-free
    if is_tensor or isinstance(tree, np.ndarray):
        arrays.append(tree.detach().cpu().numpy() if is_tensor else tree)
        return {_TENSOR if is_tensor else _ARRAY: len(arrays) - 1}
    if isinstance(tree, dict):
        if not all(isinstance(k, str) for k in tree):
            raise TypeError(f"a checkpoint state needs string keys; got {sorted(map(repr, tree))}")
        return {k: _flatten(v, arrays) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_flatten(v, arrays) for v in tree]
    return tree.item() if isinstance(tree, np.generic) else tree


def _unflatten(tree, load, path):
    if isinstance(tree, dict):
        if len(tree) == 1 and (_TENSOR in tree or _ARRAY in tree):
            (kind, index), = tree.items()
            return load(kind, index, path)
        return {k: _unflatten(v, load, path + (k,)) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_unflatten(v, load, path + (str(i),)) for i, v in enumerate(tree)]
    return tree


# ------------------------------------------------------------------ what a file is
def checkpoint_file_kind(path):
    """What the file at a ``checkpoint_path`` is, before a fit overwrites or reads it.

    Parameters
    ----------
    path : str or path
        The file.

    Returns
    -------
    {"missing", "empty", "checkpoint", "damaged", "symmetry", "other"}
        ``"checkpoint"``: a readable training checkpoint of this library;
        ``"damaged"``: a file this library wrote (it starts as its files do) that cannot
        be read whole; ``"symmetry"``: a :class:`~msr_sklearn.LearnedSymmetry` file
        without a training state (``LearnedSymmetry.save``); ``"other"``: anything else.

    Examples
    --------
    >>> import os, tempfile
    >>> from msr_sklearn.persistence import checkpoint_file_kind
    >>> path = os.path.join(tempfile.mkdtemp(), "notes.txt")
    >>> checkpoint_file_kind(path)
    'missing'
    >>> with open(path, "w") as f:
    ...     _ = f.write("my notes")
    >>> checkpoint_file_kind(path)
    'other'
    """
    path = Path(path)
    if not path.exists():
        return "missing"
    if not path.is_file():
        return "other"
    if path.stat().st_size == 0:
        return "empty"
    try:
        with read_archive(path, "file") as archive:
            names = set(archive.names)
            if "meta.json" in names and _TRAINING in names:
                head = archive.json(_TRAINING)
                if head.get("format") == CHECKPOINT_FORMAT:
                    return "checkpoint"
            elif "meta.json" in names:
                meta = archive.json("meta.json")
                if str(meta.get("format", "")).startswith("msr_sklearn."):
                    return "symmetry"
    except ValueError:
        pass
    with open(path, "rb") as f:
        head = f.read(64)
    # a zip whose first member is meta.json, as every file of this library starts
    if head[:4] == b"PK\x03\x04" and head[26:28] == b"\x09\x00" and head[30:39] == b"meta.json":
        return "damaged"
    return "other"


def check_checkpoint_location(path, resume):
    """Fail fast, before a fit, where its checkpoint could not be written or would harm.

    Checks that ``path``'s directory exists and takes new files (a unique temporary file
    is created and removed there), that ``path`` is not a directory, and, with
    ``resume=False``, that an existing file at ``path`` is one a fit may overwrite: a
    training checkpoint of this library (possibly damaged) or an empty file, never a
    saved :class:`~msr_sklearn.LearnedSymmetry` or an unrelated file.

    Parameters
    ----------
    path : str or path
        The fit's ``checkpoint_path``.
    resume : bool
        The fit's ``resume``; with ``True`` the file is read, and refused if it cannot
        be, by the resume itself.

    Raises
    ------
    FileNotFoundError
        The directory does not exist.
    OSError
        New files cannot be created there (``PermissionError``, a read-only file
        system...), with a message naming the directory.
    ValueError
        ``path`` is a directory, or (``resume=False``) a file that is not a checkpoint.

    Examples
    --------
    >>> import os, tempfile
    >>> from msr_sklearn.persistence import check_checkpoint_location
    >>> folder = tempfile.mkdtemp()
    >>> check_checkpoint_location(os.path.join(folder, "run.msr"), resume=False)
    >>> check_checkpoint_location(os.path.join(folder, "no", "run.msr"), resume=False)
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: checkpoint_path='.../no/run.msr': the directory '.../no' does not exist; ...
    """
    path = Path(path)
    where = f"checkpoint_path={str(path)!r}"
    directory = path.parent
    if not directory.is_dir():
        raise FileNotFoundError(f"{where}: the directory {str(directory)!r} does not exist; "
                                "create it, or choose another checkpoint_path")
    if path.is_dir():
        raise ValueError(f"{where} is a directory; give the checkpoint's file name")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX,
                                     dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        message = (f"{where}: cannot create files in {str(directory)!r} "
                   f"({exc.strerror or exc}); choose a writable location")
        raise (type(exc)(exc.errno, message) if exc.errno is not None
               else OSError(message)) from exc
    if not resume:
        kind = checkpoint_file_kind(path)
        if kind in ("symmetry", "other"):
            what = ("a LearnedSymmetry file (LearnedSymmetry.save), not a training "
                    "checkpoint" if kind == "symmetry" else
                    "not a training checkpoint of msr_sklearn")
            raise ValueError(f"{where} names an existing file that is {what}; this fit "
                             "would overwrite it: move or delete the file, or choose "
                             "another checkpoint_path")


# ------------------------------------------------------------------------- the lock
@contextlib.contextmanager
def checkpoint_lock(path):
    """Hold checkpoint ``path`` exclusively for the ``with`` block.

    The lock is ``fcntl.flock`` on a sidecar file ``<path>.lock``, opened without
    following links and removed on release; the holder's process id is written in it.
    A second holder, in this process or another (on one machine, or across NFS
    clients where the server supports locks), is refused at once. Once held,
    temporary files that a killed writer of ``path`` left (:func:`write_archive`'s
    ``.<name>.<random>.tmp``) are removed. On Windows ``msvcrt.locking`` is used; where
    neither exists, or the file system cannot lock, this does not lock (with a
    ``RuntimeWarning`` in the latter case).

    Parameters
    ----------
    path : str, path or None
        The checkpoint; ``None``: nothing to hold.

    Raises
    ------
    ValueError
        Another fit holds the checkpoint, or ``<path>.lock`` is a symbolic link.

    Examples
    --------
    >>> import os, tempfile
    >>> from msr_sklearn.persistence import checkpoint_lock
    >>> path = os.path.join(tempfile.mkdtemp(), "run.msr")
    >>> with checkpoint_lock(path):
    ...     with checkpoint_lock(path):  # doctest: +ELLIPSIS
    ...         pass
    Traceback (most recent call last):
    ...
    ValueError: the checkpoint '...run.msr' is in use by another fit (this process); ...
    >>> os.listdir(os.path.dirname(path))
    []
    """
    if path is None or (fcntl is None and msvcrt is None):
        yield
        return
    path = Path(path)
    lock = path.with_name(path.name + ".lock")
    fd = _acquire(lock, path)
    try:
        _remove_temporaries(path)
        yield
    finally:
        if fd is not None:
            _release(fd, lock)


def _acquire(lock, path):
    """An open, locked descriptor of ``lock`` (None where the file system cannot lock)."""
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(20):  # a holder may remove the file between our open and our lock
        try:
            fd = os.open(lock, flags, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ValueError(f"the lock file {str(lock)!r} of the checkpoint is a symbolic "
                                 "link; remove it") from exc
            raise type(exc)(exc.errno, f"cannot lock the checkpoint {str(path)!r}: "
                                       f"{exc.strerror}") from exc
        try:
            locked = _try_lock(fd)
        except OSError as exc:  # e.g. ENOLCK: a file system without locks
            os.close(fd)
            warnings.warn(f"cannot lock the checkpoint {str(path)!r} ({exc.strerror}); two "
                          "fits with this checkpoint_path would overwrite each other's "
                          "checkpoints", RuntimeWarning, stacklevel=4)
            return None
        if not locked:
            holder = _read_pid(fd)
            os.close(fd)
            who = ("this process" if holder == os.getpid() else
                   f"process {holder}" if holder else "another process")
            raise ValueError(f"the checkpoint {str(path)!r} is in use by another fit ({who}); "
                             "wait for that fit to end, or give this fit another "
                             "checkpoint_path")
        try:
            current = os.stat(lock, follow_symlinks=False)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(os.fstat(fd), current):
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)  # we locked a file its holder had just removed: try again
    raise ValueError(f"cannot lock the checkpoint {str(path)!r}: other fits keep taking it")


def _try_lock(fd):
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError as exc:
        if isinstance(exc, BlockingIOError) or exc.errno in (errno.EACCES, errno.EAGAIN,
                                                             errno.EDEADLK):
            return False
        raise
    return True


def _read_pid(fd):
    with contextlib.suppress(OSError, ValueError):
        os.lseek(fd, 0, os.SEEK_SET)
        return int(os.read(fd, 32).decode().strip())
    return None


def _release(fd, lock):
    try:
        with contextlib.suppress(OSError):
            if fcntl is not None:  # remove it while it is still locked and ours
                if os.path.samestat(os.fstat(fd), os.stat(lock, follow_symlinks=False)):
                    os.unlink(lock)
            else:
                os.lseek(fd, 0, os.SEEK_SET)
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    finally:
        os.close(fd)
        if fcntl is None:  # Windows cannot remove an open file
            with contextlib.suppress(OSError):
                os.unlink(lock)


def _remove_temporaries(path):
    """Remove the temporary files a killed writer of ``path`` left (we hold ``path``)."""
    pattern = re.compile(re.escape(f".{path.name}.") + r"[a-z0-9_]{8}" + re.escape(TEMP_SUFFIX))
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            if pattern.fullmatch(entry.name):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
