"""LearnedSymmetry: what meta-training produced, as a plain value object."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from .engine.meta import MetaModel
from .nn.network import SINGLE_LAYER_KINDS, build_network

#: bumped when the file layout changes; ``load`` refuses versions it does not know.
#: 2: the ``residual_pull`` architecture key and the residual layer kinds (version-1
#: files, which have neither, still load)
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
#: the layout of a checkpoint's training state (unchanged by the symmetry's version 2)
_CHECKPOINT_VERSION = 1
_FORMAT_NAME = "msr_sklearn.LearnedSymmetry"
_CHECKPOINT_NAME = "msr_sklearn.TrainingCheckpoint"
_TRAINING = "training.json"
#: how a training state marks its tensors and numpy arrays in JSON
_TENSOR, _ARRAY = "__tensor__", "__array__"

#: the settings that define a network; ``build_network`` takes exactly these
ARCHITECTURE_KEYS = ("n_features", "n_outputs", "hidden_layer_sizes", "layer", "n_filters",
                     "activation", "bias", "kernel_size", "input_shape", "n_copies",
                     "conv_channels", "conv_layer", "pooling", "couple_copies", "residual_pull",
                     "conv_bias")
#: settings added after the first files were written, with the value those files meant
#: (``conv_bias`` came later than version 2 and needs no new version: a file without it
#: meant one bias per channel)
OPTIONAL_ARCHITECTURE = {"couple_copies": False, "residual_pull": False,
                         "conv_bias": "channels"}
OBJECTIVES = ("regression", "classification")


class LearnedSymmetry:
    """A meta-learned sharing pattern: architecture, ``U`` per layer, ``v0``, inner lrs.

    A plain value object (numpy arrays and builtins only) so it survives ``clone``,
    ``pickle`` and ``copy.deepcopy``, and travels to per-task estimators as a
    constructor parameter. :meth:`save` / :meth:`load` use a zip of ``.npy`` arrays
    and JSON metadata, which cannot execute code when read.

    Parameters
    ----------
    architecture : dict
        Keyword arguments of :func:`msr_sklearn.nn.build_network` (``n_features``,
        ``n_outputs``, ``hidden_layer_sizes``, ``layer``, ``n_filters``, ``activation``,
        ``bias``, ``kernel_size``).
    state : dict of str to ndarray
        The network's ``state_dict`` as numpy arrays (sharings and initial inner
        parameters).
    inner_lrs : dict of str to float
        The learned inner learning rate of each inner parameter (``"0.filters"``...).
    objective : {"regression", "classification"}
    inner_steps : int
        Inner SGD steps the symmetry was meta-trained with.

    Examples
    --------
    >>> from msr_sklearn import LearnedSymmetry
    >>> sym = LearnedSymmetry.initial(n_features=5, n_outputs=3, layer="msr", n_filters=2,
    ...                               bias=False, random_state=0)
    >>> sym.symmetry_matrix(0).shape
    (15, 2)
    >>> sym.n_layers, sym.objective
    (1, 'regression')
    """

    def __init__(self, architecture, state, inner_lrs, objective="regression", inner_steps=1):
        architecture = {**OPTIONAL_ARCHITECTURE, **architecture}
        missing = set(ARCHITECTURE_KEYS) - set(architecture)
        if missing:
            raise ValueError(f"architecture is missing {sorted(missing)}")
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}; got {objective!r}")
        self.architecture = {k: _plain(architecture[k]) for k in ARCHITECTURE_KEYS}
        self.state = {k: np.asarray(v, dtype=np.float32).copy() for k, v in state.items()}
        self.inner_lrs = {str(k): float(v) for k, v in inner_lrs.items()}
        self.objective = objective
        self.inner_steps = int(inner_steps)

    # ------------------------------------------------------------------ builders
    @classmethod
    def initial(cls, objective="regression", inner_lr=0.1, inner_steps=1, random_state=None,
                **architecture):
        """The untrained symmetry a learner would start from (useful as a control)."""
        arch = {"hidden_layer_sizes": (), "layer": "msr", "n_filters": 8, "activation": "relu",
                "bias": True, "kernel_size": 3, "input_shape": None, "n_copies": 1,
                "conv_channels": (), "conv_layer": "msr_conv2d", "pooling": "none",
                **OPTIONAL_ARCHITECTURE, **architecture}
        network = build_network(random_state=random_state, **arch)
        model = MetaModel(network, inner_lr=inner_lr)
        return cls.from_model(model, arch, objective=objective, inner_steps=inner_steps)

    @classmethod
    def from_model(cls, model: MetaModel, architecture, objective="regression", inner_steps=1):
        state = {k: v.detach().cpu().numpy() for k, v in model.network.state_dict().items()}
        lrs = dict(zip(model.inner_names, model.inner_lrs.detach().cpu().tolist()))
        return cls(architecture, state, lrs, objective=objective, inner_steps=inner_steps)

    def build_network(self, device="cpu"):
        """A fresh :class:`~msr_sklearn.nn.MetaNetwork` holding this symmetry's state."""
        network = build_network(random_state=0, **self.architecture)
        network.load_state_dict({k: torch.from_numpy(v) for k, v in self.state.items()})
        return network.to(device)

    def build_model(self, device="cpu", learn_inner_lr=True):
        """A :class:`~msr_sklearn.engine.MetaModel` (network + learned lrs), e.g. to resume."""
        model = MetaModel(self.build_network(), learn_inner_lr=learn_inner_lr)
        with torch.no_grad():
            model.inner_lrs.copy_(torch.tensor([self.inner_lrs[n] for n in model.inner_names]))
        return model.to(device)

    # ------------------------------------------------------------- introspection
    @property
    def n_layers(self):
        arch = self.architecture
        if arch["layer"] in SINGLE_LAYER_KINDS:
            return 1
        return len(arch["conv_channels"]) + len(arch["hidden_layer_sizes"]) + 1

    @property
    def n_features(self):
        return self.architecture["n_features"]

    @property
    def n_outputs(self):
        return self.architecture["n_outputs"]

    def _layer_index(self, layer):
        if not isinstance(layer, (int, np.integer)) or isinstance(layer, bool):
            raise TypeError(f"layer must be an int; got {type(layer).__name__}")
        n = self.n_layers
        if not -n <= layer < n:
            raise ValueError(f"layer={layer} is out of range for {n} layer(s)")
        return int(layer) % n

    def symmetry_matrix(self, layer=0):
        """``U`` of a layer as a numpy array ``(n_weights, k)``; ``W = (U @ v).reshape``.

        Kronecker-factored sharings are materialized.
        """
        with torch.no_grad():
            return self._meta_layer(layer).sharing.matrix().cpu().numpy().copy()

    def initial_filters(self, layer=0):
        """The meta-learned initial filter values ``v0`` of a layer."""
        return self._meta_layer(layer).filters.detach().cpu().numpy().copy()

    def initial_residual(self, layer=0):
        """The meta-learned ``R0`` of a residual layer (weight-shaped), or None."""
        residual = self._meta_layer(layer).residual
        return None if residual is None else residual.detach().cpu().numpy().copy()

    def _meta_layer(self, layer):
        """Layer ``layer`` (counting only layers with a sharing) of a fresh network."""
        return self.build_network().meta_layers[self._layer_index(layer)]

    def __repr__(self):
        arch = ", ".join(f"{k}={v!r}" for k, v in self.architecture.items())
        return f"LearnedSymmetry({arch}, objective={self.objective!r})"

    def __eq__(self, other):
        if not isinstance(other, LearnedSymmetry):
            return NotImplemented
        return (self.architecture == other.architecture and self.objective == other.objective
                and self.inner_steps == other.inner_steps and self.inner_lrs == other.inner_lrs
                and self.state.keys() == other.state.keys()
                and all(np.array_equal(self.state[k], other.state[k]) for k in self.state))

    __hash__ = None

    # ---------------------------------------------------------------- persistence
    def save(self, path):
        """Write to ``path`` (a zip of ``.npy`` arrays and JSON metadata; no pickle).

        The file is written to a temporary name, flushed to disk and moved into
        place, so an interrupted save never leaves a truncated file where a good one
        was.
        """
        _write_archive(path, self._members())

    def fingerprint(self):
        """A hash of the file this symmetry saves as: equal symmetries, equal strings.

        SHA-256 over the names and bytes of the file's members (what :meth:`save`
        writes), e.g. to record which ``initial_symmetry`` a training run started from.

        Examples
        --------
        >>> from msr_sklearn import LearnedSymmetry
        >>> symmetry = LearnedSymmetry.initial(n_features=5, n_outputs=3, random_state=0)
        >>> symmetry.fingerprint() == LearnedSymmetry.initial(
        ...     n_features=5, n_outputs=3, random_state=0).fingerprint()
        True
        >>> symmetry.fingerprint()[:23]
        'LearnedSymmetry sha256:'
        """
        digest = hashlib.sha256()
        for name, data in sorted(self._members().items()):
            digest.update(name.encode())
            digest.update(data)
        return "LearnedSymmetry sha256:" + digest.hexdigest()

    def _members(self):
        """The file's members, name -> bytes."""
        meta = {"format": _FORMAT_NAME, "version": FORMAT_VERSION,
                "architecture": self.architecture, "inner_lrs": self.inner_lrs,
                "objective": self.objective, "inner_steps": self.inner_steps,
                "arrays": sorted(self.state)}
        members = {"meta.json": json.dumps(meta).encode()}
        members.update({f"arrays/{name}.npy": _npy_bytes(self.state[name])
                        for name in meta["arrays"]})
        return members

    @classmethod
    def load(cls, path):
        """Read a file written by :meth:`save` (or a training checkpoint); never unpickles."""
        path = _existing(path)
        with _reading(path, "LearnedSymmetry"), zipfile.ZipFile(path) as zf:
            return cls._from_zip(zf)

    @classmethod
    def _from_zip(cls, zf):
        meta = json.loads(zf.read("meta.json"))
        if meta.get("format") != _FORMAT_NAME:
            raise ValueError("it is not a LearnedSymmetry file")
        if meta.get("version") not in READABLE_VERSIONS:
            raise ValueError(f"it has format version {meta.get('version')!r}; this msr_sklearn "
                             f"reads versions {', '.join(map(str, READABLE_VERSIONS))}")
        state = {name: _load_npy(zf, f"arrays/{name}.npy") for name in meta["arrays"]}
        arch = meta["architecture"]
        # JSON has lists where the architecture had tuples
        arch = {k: tuple(v) if isinstance(v, list) else v for k, v in arch.items()}
        return cls(arch, state, meta["inner_lrs"], objective=meta["objective"],
                   inner_steps=meta["inner_steps"])


# ------------------------------------------------------------ training checkpoints
def write_checkpoint(path, symmetry, state):
    """Write a training checkpoint: ``symmetry``'s file plus a training ``state``.

    The file is a complete :class:`LearnedSymmetry` file (:meth:`LearnedSymmetry.load`
    reads it) with two more kinds of members: ``training.json`` (the JSON part of
    ``state``) and ``training/<i>.npy`` (its arrays and tensors). Written atomically,
    as :meth:`LearnedSymmetry.save`.

    Parameters
    ----------
    path : str or path
        Where to write.
    symmetry : LearnedSymmetry
        The symmetry the file holds.
    state : dict
        Nested dicts (string keys) and lists of JSON values, numpy arrays and torch
        tensors; :func:`read_checkpoint` returns it with tensors and arrays restored.
    """
    arrays = []
    tree = _flatten(state, arrays)
    members = symmetry._members()
    members[_TRAINING] = json.dumps({"format": _CHECKPOINT_NAME, "version": _CHECKPOINT_VERSION,
                                     "state": tree}).encode()
    members.update({f"training/{i}.npy": _npy_bytes(a) for i, a in enumerate(arrays)})
    _write_archive(path, members)


def read_checkpoint(path):
    """``(symmetry, state)`` from a file written by :func:`write_checkpoint`.

    Raises ``FileNotFoundError`` when there is no file, and a ``ValueError`` when it is
    damaged, of another kind, or a symmetry without a training state.
    """
    path = _existing(path, "training checkpoint")
    with _reading(path, "training checkpoint"), zipfile.ZipFile(path) as zf:
        symmetry = LearnedSymmetry._from_zip(zf)
        if _TRAINING not in zf.namelist():
            raise ValueError("it holds a LearnedSymmetry but no training state (it was "
                             "written by LearnedSymmetry.save or an older msr_sklearn)")
        head = json.loads(zf.read(_TRAINING))
        if head.get("format") != _CHECKPOINT_NAME or head.get("version") != _CHECKPOINT_VERSION:
            raise ValueError(f"its training state has format {head.get('format')!r} version "
                             f"{head.get('version')!r}; this msr_sklearn reads "
                             f"{_CHECKPOINT_NAME!r} version {_CHECKPOINT_VERSION}")
        return symmetry, _unflatten(head["state"], lambda i: _load_npy(zf, f"training/{i}.npy"))


def _flatten(tree, arrays):
    """``tree`` as JSON values, its arrays and tensors appended to ``arrays``."""
    if isinstance(tree, (np.ndarray, torch.Tensor)):
        arrays.append(tree.detach().cpu().numpy() if isinstance(tree, torch.Tensor) else tree)
        return {_TENSOR if isinstance(tree, torch.Tensor) else _ARRAY: len(arrays) - 1}
    if isinstance(tree, dict):
        if not all(isinstance(k, str) for k in tree):
            raise TypeError(f"a checkpoint state needs string keys; got {sorted(map(repr, tree))}")
        return {k: _flatten(v, arrays) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_flatten(v, arrays) for v in tree]
    return tree.item() if isinstance(tree, np.generic) else tree


def _unflatten(tree, load):
    if isinstance(tree, dict):
        if len(tree) == 1 and (_TENSOR in tree or _ARRAY in tree):
            (kind, index), = tree.items()
            array = load(int(index))
            return torch.from_numpy(array) if kind == _TENSOR else array
        return {k: _unflatten(v, load) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_unflatten(v, load) for v in tree]
    return tree


# ------------------------------------------------------------------ file helpers
def _npy_bytes(array):
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def _load_npy(zf, name):
    with zf.open(name) as f:
        return np.load(io.BytesIO(f.read()), allow_pickle=False)


def _write_archive(path, members):
    """Write a zip of ``members`` (name -> bytes) at ``path``, atomically and durably.

    The zip goes to ``<path>.tmp``, is flushed and fsynced, then renamed over ``path``
    (``os.replace``): a crash or a power cut at any moment leaves either the previous
    file or the new one, never a partial file at ``path``.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for name, data in members.items():
                    zf.writestr(name, data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):  # POSIX: make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _existing(path, what="LearnedSymmetry"):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} file at {str(path)!r}")
    return path


@contextlib.contextmanager
def _reading(path, what):
    """Turn any failure to read the file at ``path`` into one clear ``ValueError``."""
    try:
        yield
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, EOFError, OSError) as exc:
        raise ValueError(
            f"cannot read a {what} from {str(path)!r}: the file is truncated, corrupted or "
            f"of another kind ({type(exc).__name__}: {exc})") from exc
    except (ValueError, TypeError) as exc:
        raise ValueError(f"cannot read a {what} from {str(path)!r}: {exc}") from exc


def _plain(value):
    """Builtins only (JSON- and hash-friendly): tuples for sequences, int/float/str."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(_plain(v) for v in value)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    return value
