"""LearnedSymmetry: what meta-training produced, as a plain value object."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import torch

from .engine.meta import MetaModel
from .nn.network import SINGLE_LAYER_KINDS, build_network
from .persistence import TRAINING_MEMBERS, npy_bytes, read_archive, write_archive

#: bumped when the file layout changes; ``load`` refuses versions it does not know.
#: 2: the ``residual_pull`` architecture key and the residual layer kinds (version-1
#: files, which have neither, still load)
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
_FORMAT_NAME = "msr_sklearn.LearnedSymmetry"
#: the keys of ``meta.json``
_META_KEYS = {"format", "version", "architecture", "inner_lrs", "objective", "inner_steps",
              "arrays"}
#: the member names of a symmetry file, or of a checkpoint (which adds its training state)
FILE_MEMBERS = r"meta\.json|arrays/[A-Za-z0-9_.\-]+\.npy|" + TRAINING_MEMBERS

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

        The file is written to a new, uniquely named temporary file, flushed to disk
        and moved into place (:func:`msr_sklearn.persistence.write_archive`), so an
        interrupted save never leaves a truncated file where a good one was, and a
        planted link is never followed. An ``OSError`` (a full disk...) names ``path``.
        """
        write_archive(path, self._members())

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
        members.update({f"arrays/{name}.npy": npy_bytes(self.state[name])
                        for name in meta["arrays"]})
        return members

    @classmethod
    def load(cls, path):
        """Read a file written by :meth:`save` (or a training checkpoint); never unpickles.

        Everything is checked before it is used: the member names and sizes, the
        metadata's keys and types, every array's shape and dtype against the network
        its architecture builds (before the array is decompressed), finite values and
        finite inner learning rates.

        Raises
        ------
        FileNotFoundError
            No file at ``path``.
        OSError
            The system cannot read it.
        ValueError
            ``"cannot read a LearnedSymmetry from '<path>': <what is wrong>"``: the file
            is damaged, of another kind or version, or its content is not a valid
            symmetry.
        """
        with read_archive(path, "LearnedSymmetry", FILE_MEMBERS) as archive:
            return cls._from_archive(archive)

    @classmethod
    def _from_archive(cls, archive):
        """The symmetry in an open file, checked (see :meth:`load`)."""
        meta = archive.json("meta.json")
        if meta.get("format") != _FORMAT_NAME:
            raise ValueError("it is not a LearnedSymmetry file")
        if meta.get("version") not in READABLE_VERSIONS:
            raise ValueError(f"it has format version {meta.get('version')!r}; this msr_sklearn "
                             f"reads versions {', '.join(map(str, READABLE_VERSIONS))}")
        if set(meta) != _META_KEYS:
            raise ValueError(f"its meta.json has the keys {sorted(meta)}; a LearnedSymmetry "
                             f"file has {sorted(_META_KEYS)}")
        arch = _checked_architecture(meta["architecture"])
        shapes, inner_names = _expected_state(arch)
        names = meta["arrays"]
        if not (isinstance(names, list) and all(isinstance(n, str) for n in names)
                and len(set(names)) == len(names) and set(names) == set(shapes)):
            raise ValueError(f"its arrays {names!r} are not those of its architecture, "
                             f"{sorted(shapes)}")
        listed = {f"arrays/{name}.npy" for name in names}
        extra = sorted(n for n in archive.names if n.startswith("arrays/") and n not in listed)
        if extra:
            raise ValueError(f"it has arrays its metadata does not list: {extra[:5]}")
        state = {name: archive.array(f"arrays/{name}.npy", shape=shapes[name], dtype="<f4")
                 for name in names}
        lrs = meta["inner_lrs"]
        if not isinstance(lrs, dict) or set(lrs) != set(inner_names):
            raise ValueError(f"its inner learning rates {lrs!r} are not those of its "
                             f"architecture's inner parameters {list(inner_names)}")
        bad = [k for k, v in lrs.items() if type(v) not in (int, float) or not math.isfinite(v)]
        if bad:
            raise ValueError(f"its inner learning rate of {bad[0]!r} is {lrs[bad[0]]!r}, not a "
                             "finite number")
        if meta["objective"] not in OBJECTIVES:
            raise ValueError(f"its objective {meta['objective']!r} is not one of {OBJECTIVES}")
        steps = meta["inner_steps"]
        if type(steps) is not int or steps < 1:
            raise ValueError(f"its inner_steps {steps!r} is not a positive integer")
        return cls(arch, state, lrs, objective=meta["objective"], inner_steps=steps)


#: the JSON types of the architecture's settings: "int", "ints" (a list of int), "str"...
_ARCHITECTURE_TYPES = {
    "n_features": "int", "n_outputs": "int", "kernel_size": "int", "n_copies": "int",
    "n_filters": "int or ints", "hidden_layer_sizes": "ints", "conv_channels": "ints",
    "input_shape": "null or ints", "layer": "str", "activation": "str", "conv_layer": "str",
    "pooling": "str", "conv_bias": "str", "bias": "bool", "couple_copies": "bool",
    "residual_pull": "bool"}


def _checked_architecture(raw):
    """A file's architecture with the types ``build_network`` takes (lists -> tuples)."""
    if not isinstance(raw, dict):
        raise ValueError(f"its architecture is {type(raw).__name__}, not a JSON object")
    unknown = sorted(set(raw) - set(ARCHITECTURE_KEYS))
    if unknown:
        raise ValueError(f"its architecture has unknown settings {unknown}")
    arch = {**OPTIONAL_ARCHITECTURE, **raw}

    def is_int(v):
        return type(v) is int and 0 <= v < 2**31

    def fits(value, kind):
        return {"int": is_int(value), "str": isinstance(value, str),
                "bool": isinstance(value, bool), "null": value is None,
                "ints": isinstance(value, list) and all(map(is_int, value))}[kind]

    for key, value in arch.items():
        kinds = _ARCHITECTURE_TYPES[key].split(" or ")
        if not any(fits(value, kind) for kind in kinds):
            kind = _ARCHITECTURE_TYPES[key].replace("ints", "a list of int").replace(
                "int", "an int in [0, 2**31)").replace("a list of an", "a list of")
            raise ValueError(f"its architecture has {key}={value!r}; {key} must be {kind}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in arch.items()}


def _expected_state(architecture):
    """``({state key: shape}, inner parameter names)`` of the network ``architecture``
    builds, from a network on the meta device: no memory and no time, whatever sizes a
    hostile file declares. (The first meta build in a process imports ``torch._dynamo``,
    about a second, which torch's Python meta kernels need.)"""
    try:
        with torch.device("meta"):
            network = build_network(random_state=0, **architecture)
            inner_names = MetaModel(network).inner_names
    except Exception as exc:  # whatever the builder raises for settings it cannot build
        raise ValueError(f"its architecture does not build a network ({type(exc).__name__}: "
                         f"{exc})") from exc
    return {k: tuple(v.shape) for k, v in network.state_dict().items()}, inner_names


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
