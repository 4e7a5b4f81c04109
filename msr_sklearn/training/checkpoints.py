"""Training checkpoints on disk: write them, read and check them, hold one during a fit.

The file mechanics are :mod:`msr_sklearn.persistence`'s; this module knows what a
training state holds (:meth:`Trainer.state_dict() <msr_sklearn.training.Trainer.state_dict>`
plus the run's ``info``) and checks it before anything is used: every tensor against
the network that the file's own symmetry builds (before it is decompressed), the
trainer's fields against each other and against the run's settings. A checkpoint that
fails is a ``ValueError`` naming the file and what is wrong; it is never trained from,
so it is never overwritten with a state derived from it.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

from ..persistence import (check_checkpoint_location, checkpoint_file_kind, checkpoint_lock,
                           read_archive, read_training_state, training_members, write_archive)
from ..symmetry import FILE_MEMBERS, LearnedSymmetry

__all__ = ["check_training_state", "read_checkpoint", "restore_checkpoint", "resume_hint",
           "using_checkpoint", "write_checkpoint"]

#: callbacks of this library whose stops a checkpoint shows (DivergenceStop: a diverged
#: row; EarlyStopping: its patience used up) or that never stop; any other callback may
#: stop training for reasons a checkpoint cannot show
_KNOWN_STOPS = {"History", "DivergenceStop", "StabilityWarnings", "SharingPruning",
                "Validation", "EarlyStopping", "Checkpoint", "ProgressBar"}


def write_checkpoint(path, symmetry, state):
    """Write a training checkpoint: ``symmetry``'s file plus a training ``state``.

    The file is a complete :class:`~msr_sklearn.LearnedSymmetry` file
    (:meth:`LearnedSymmetry.load <msr_sklearn.LearnedSymmetry.load>` reads it) with
    ``training.json`` and ``training/<i>.npy`` members, written atomically
    (:func:`msr_sklearn.persistence.write_archive`).

    Parameters
    ----------
    path : str or path
        Where to write.
    symmetry : LearnedSymmetry
        The symmetry the file holds.
    state : dict
        Nested dicts (string keys) and lists of JSON values, numpy arrays and torch
        tensors; :func:`read_checkpoint` returns it with tensors and arrays restored.

    Examples
    --------
    >>> import os, tempfile
    >>> import torch
    >>> from msr_sklearn import LearnedSymmetry
    >>> from msr_sklearn.training.checkpoints import read_checkpoint, write_checkpoint
    >>> path = os.path.join(tempfile.mkdtemp(), "run.msr")
    >>> symmetry = LearnedSymmetry.initial(n_features=4, n_outputs=2, random_state=0)
    >>> write_checkpoint(path, symmetry, {"note": "hello", "t": torch.zeros(1)})
    >>> read_checkpoint(path)[1]
    {'note': 'hello', 't': tensor([0.])}
    """
    members = symmetry._members()
    members.update(training_members(state))
    write_archive(path, members)


def read_checkpoint(path):
    """``(symmetry, state)`` from a file written by :func:`write_checkpoint`, checked.

    The symmetry is checked as by :meth:`LearnedSymmetry.load
    <msr_sklearn.LearnedSymmetry.load>`; then, before each is decompressed, the
    training state's tensors: the model's (and early stopping's best state) must be the
    ``state_dict`` of the network the symmetry builds, key for key, in shape and dtype,
    and finite; the optimizer's must be finite and shaped as a parameter (or scalars),
    for parameters that exist; the sampler's a ``uint8`` generator state.

    Parameters
    ----------
    path : str or path
        The checkpoint.

    Returns
    -------
    symmetry : LearnedSymmetry
    state : dict
        The training state, with its tensors and arrays.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    OSError
        The system cannot read it.
    ValueError
        ``"cannot read a training checkpoint from '<path>': ..."``: it is damaged, of
        another kind, a symmetry without a training state, or its content is not valid.

    Examples
    --------
    >>> from msr_sklearn.training.checkpoints import read_checkpoint
    >>> read_checkpoint("no-such-file.msr")
    Traceback (most recent call last):
    ...
    FileNotFoundError: no training checkpoint file at 'no-such-file.msr'
    """
    with read_archive(path, "training checkpoint", FILE_MEMBERS) as archive:
        symmetry = LearnedSymmetry._from_archive(archive)
        model = symmetry.build_model()
        state = read_training_state(archive, _expectations(model), torch.from_numpy)
        _check_against_model(state, model)
    return symmetry, state


def _expectations(model):
    """``expect(path)`` of :func:`~msr_sklearn.persistence.read_training_state`."""
    own = {k: (tuple(v.shape), np.dtype(str(v.dtype).removeprefix("torch.")))
           for k, v in model.state_dict().items()}
    shapes = {tuple(p.shape) for p in model.parameters()} | {()}
    # MetaAdam's second moments: per entry, per tensor, or per slice along dim 0 ("row")
    shapes |= {(shape[0],) + (1,) * (len(shape) - 1) for shape in shapes if shape}
    generator = tuple(torch.Generator().get_state().shape)

    def expect(path):
        if path[:2] == ("trainer", "model") or path[:4] == ("trainer", "callbacks",
                                                            "EarlyStopping", "best_state"):
            if len(path) not in (3, 5) or path[-1] not in own:
                raise ValueError(f"its training state has a tensor {'.'.join(path)!r}, which "
                                 "the model of its architecture does not have")
            shape, dtype = own[path[-1]]
            return {"shape": shape, "dtype": dtype, "finite": True}
        if path[:2] == ("trainer", "optimizer"):
            return {"shapes": shapes, "dtype": "<f4", "finite": True}
        if path == ("trainer", "generator"):
            return {"shape": generator, "dtype": "|u1"}
        return {"finite": False}  # history columns (NaN marks no value), user callbacks

    return expect


def _check_against_model(state, model):
    """The tensors' keys: the model's state, the optimizer's parameters (where present:
    :func:`check_training_state` requires them for a resume)."""
    trainer = state.get("trainer") if isinstance(state, dict) else None
    if trainer is None:
        return
    own = set(model.state_dict())
    for where, tensors in (("trainer.model", _field(trainer, "model", dict, "trainer.")),
                           ("EarlyStopping's best state", _best_state(trainer))):
        if tensors is not None and (set(tensors) != own or not all(
                isinstance(t, torch.Tensor) for t in tensors.values())):
            raise ValueError(f"its {where} has the tensors {sorted(tensors)}, but the model "
                             f"of its architecture has {sorted(own)}")
    n_params = len(list(model.parameters()))
    for key, moments in _field(trainer, "optimizer", dict, "trainer.").items():
        if not (key.isdigit() and int(key) < n_params and isinstance(moments, dict)
                and all(isinstance(t, torch.Tensor) for t in moments.values())):
            raise ValueError(f"its optimizer state has an entry {key!r}, but the model has "
                             f"{n_params} parameters")


def _best_state(trainer):
    callbacks = _field(trainer, "callbacks", dict, "trainer.")
    early = callbacks.get("EarlyStopping")
    best = early.get("best_state") if isinstance(early, dict) else None
    if best is not None and not isinstance(best, dict):
        raise ValueError("its EarlyStopping best state is not a state dict")
    return best


def check_training_state(state):
    """Check a checkpoint's trainer fields against each other and its ``info``.

    The fields a :class:`~msr_sklearn.MetaSymmetryLearner` checkpoint holds: ``info``
    (settings, seed, fit start, task fingerprints) and the trainer's ``step`` and
    ``fit_start`` (integers, ``0 <= fit_start <= step``, at most ``n_meta_steps`` steps
    into the fit), ``history`` (one row per step, numbered ``0 .. step - 1``),
    ``finished`` (only after ``n_meta_steps`` steps, or after a stop: a diverged last
    row, early stopping's patience used up, or a callback of the user's), and early
    stopping's state.

    Parameters
    ----------
    state : dict
        ``read_checkpoint(path)[1]``.

    Raises
    ------
    ValueError
        Naming the first field that is wrong.

    Examples
    --------
    >>> from msr_sklearn.training.checkpoints import check_training_state
    >>> check_training_state({"info": {}})
    Traceback (most recent call last):
    ...
    ValueError: its training state lacks 'trainer'
    """
    info, trainer = _field(state, "info", dict), _field(state, "trainer", dict)
    settings = _field(info, "settings", dict, "info.")
    n_steps = _field(settings, "n_meta_steps", int, "info.settings.")
    seed = _field(info, "seed", int, "info.")
    if not 0 <= seed < 2**63 or n_steps < 1:
        raise ValueError(f"its seed {seed} or n_meta_steps {n_steps} is out of range")
    _field(info, "training tasks", str, "info.")
    if len(_field(info, "validation tasks", list, "info.")) != 2:
        raise ValueError("its info['validation tasks'] is not a pair")
    step = _field(trainer, "step", int, "trainer.")
    fit_start = _field(trainer, "fit_start", int, "trainer.")
    finished = _field(trainer, "finished", bool, "trainer.")
    stopped = _field(trainer, "stop_training", bool, "trainer.")
    started = _field(info, "fit_start", int, "info.")
    if not 0 <= fit_start <= step <= fit_start + n_steps or started != fit_start:
        raise ValueError(f"its trainer is at step {step} of a fit that started at step "
                         f"{fit_start} (info: {started}) and has {n_steps} steps")
    for key, kind in (("model", dict), ("optimizer", dict), ("generator", torch.Tensor)):
        _field(trainer, key, kind, "trainer.")
    history = _history(trainer, step)
    callbacks = _field(trainer, "callbacks", dict, "trainer.")
    patience = _early_stopping(callbacks, step, settings)
    if finished and not stopped and step - fit_start != n_steps:
        raise ValueError(f"it says the fit finished, but after {step - fit_start} of its "
                         f"{n_steps} meta-steps, with no stop")
    if stopped:
        diverged = history.get("diverged")
        reasons = [diverged is not None and step > 0 and bool(diverged[-1]), patience,
                   bool(set(callbacks) - _KNOWN_STOPS)]
        if not any(reasons):
            raise ValueError(f"it says training was stopped at step {step}, but no "
                             "divergence, early stop or callback of the user's stopped it")


def _field(tree, key, kind, where=""):
    if not isinstance(tree, dict) or key not in tree:
        raise ValueError(f"its training state lacks {where + key!r}")
    value = tree[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"its training state has {where + key}={value!r}, not "
                         f"{'an' if kind is int else 'a'} {kind.__name__}")
    return value


def _history(trainer, step):
    """The history columns, each ``step`` long, the ``step`` column numbering them."""
    history = _field(trainer, "history", dict, "trainer.")
    lengths = {name: len(column) for name, column in history.items()
               if isinstance(column, (list, np.ndarray)) and np.ndim(column) == 1}
    if (set(lengths) != set(history) or any(n != step for n in lengths.values())
            or (step and "step" not in history)):  # so np.arange(step) below is bounded
        raise ValueError(f"its history has columns of {sorted(set(lengths.values()))} rows "
                         f"(or not columns), but its trainer is at step {step}")
    if step and not np.array_equal(history["step"], np.arange(step)):
        raise ValueError(f"its history's steps are not numbered 0 to {step - 1}")
    return history


def _early_stopping(callbacks, step, settings):
    """Check early stopping's state; whether its patience was used up."""
    state = callbacks.get("EarlyStopping")
    if state is None:
        return False
    best_step, wait = state.get("best_step"), state.get("wait")
    best_loss, best_state = state.get("best_loss"), state.get("best_state")
    if type(wait) is not int or wait < 0 or (best_step is None) != (best_loss is None) or (
            best_step is None) != (best_state is None) or not (
            best_step is None or (type(best_step) is int and 0 <= best_step < step
                                  and type(best_loss) in (int, float)
                                  and math.isfinite(best_loss))):
        raise ValueError(f"its EarlyStopping state (best_step={best_step!r}, "
                         f"best_loss={best_loss!r}, wait={wait!r}) is not valid")
    patience = settings.get("n_iter_no_change")  # a learner setting, or the callback's own
    return wait >= (patience if type(patience) is int else 1)


def resume_hint(path):
    """What to do about a checkpoint ``path`` that cannot be resumed, for a message.

    Parameters
    ----------
    path : str or path
        The checkpoint.

    Returns
    -------
    str

    Examples
    --------
    >>> from msr_sklearn.training.checkpoints import resume_hint
    >>> resume_hint("no-such-file.msr")
    'delete the file, or set resume=False to start afresh (which overwrites it)'
    """
    if checkpoint_file_kind(path) in ("symmetry", "other"):  # resume=False refuses it too
        return ("it is not a training checkpoint of msr_sklearn: move or delete the file, or "
                "choose another checkpoint_path")
    return "delete the file, or set resume=False to start afresh (which overwrites it)"


def restore_checkpoint(trainer, saved, path):
    """Load a resumed state into ``trainer``; a state that does not fit is a ``ValueError``.

    Parameters
    ----------
    trainer : Trainer
        The fit's trainer, with its model, optimizer and sampler built.
    saved : dict
        What :func:`~msr_sklearn.training.callbacks.resume_state` returned.
    path : str or path
        The checkpoint, for the message.

    Raises
    ------
    ValueError
        Naming the file, what does not fit (e.g. Adam's moments for another
        parameter's shape) and what to do.

    Examples
    --------
    >>> from msr_sklearn.training.checkpoints import restore_checkpoint
    >>> restore_checkpoint(None, {"trainer": {}}, "run.msr")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: cannot read a training checkpoint from 'run.msr': its training state does not ...
    """
    try:
        trainer.load_state_dict(saved["trainer"])
    except (ValueError, RuntimeError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"cannot read a training checkpoint from {str(path)!r}: its training "
                         f"state does not fit this fit ({type(exc).__name__}: {exc}); "
                         f"{resume_hint(path)}") from exc


@contextlib.contextmanager
def using_checkpoint(path, resume, process_group=None):
    """Check a fit's checkpoint location and hold the checkpoint for the ``with`` block.

    Rank 0 (the writer) runs
    :func:`~msr_sklearn.persistence.check_checkpoint_location` and takes
    :func:`~msr_sklearn.persistence.checkpoint_lock`; under ``torch.distributed`` every
    rank raises the same error when it fails.

    Parameters
    ----------
    path : str, path or None
        The fit's ``checkpoint_path``; ``None``: nothing to do.
    resume : bool
        The fit's ``resume``.
    process_group : ProcessGroup or None, default=None
        The ``torch.distributed`` group; ``None``: one process.

    Raises
    ------
    ValueError, OSError
        As the location check and the lock raise them (another fit holds the
        checkpoint; a missing directory; ``resume=False`` over a file that is not a
        checkpoint...).

    Examples
    --------
    >>> import os, tempfile
    >>> from msr_sklearn.training.checkpoints import using_checkpoint
    >>> path = os.path.join(tempfile.mkdtemp(), "run.msr")
    >>> with using_checkpoint(path, resume=False):
    ...     sorted(os.listdir(os.path.dirname(path)))
    ['run.msr.lock']
    """
    if path is None:
        yield
        return
    rank = 0 if process_group is None else torch.distributed.get_rank(process_group)
    with contextlib.ExitStack() as stack:
        error = None
        if rank == 0:
            try:
                check_checkpoint_location(path, resume)
                stack.enter_context(checkpoint_lock(path))
            except (OSError, ValueError) as exc:
                error = exc
        if process_group is not None:  # every rank hears of rank 0's failure
            seen = [None] * torch.distributed.get_world_size(process_group)
            torch.distributed.all_gather_object(seen, error, group=process_group)
            error = next((e for e in seen if e is not None), None)
        if error is not None:
            raise error
        yield
