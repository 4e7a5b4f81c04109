"""LearnedSymmetry: what meta-training produced, as a plain value object."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from .meta import MetaModel
from .nn.network import SINGLE_LAYER_KINDS, build_network

#: bumped when the file layout changes; ``load`` refuses other versions
FORMAT_VERSION = 1
_FORMAT_NAME = "msr_sklearn.LearnedSymmetry"

#: the settings that define a network; ``build_network`` takes exactly these
ARCHITECTURE_KEYS = ("n_features", "n_outputs", "hidden_layer_sizes", "layer", "n_filters",
                     "activation", "bias", "kernel_size", "input_shape", "n_copies",
                     "conv_channels", "conv_layer", "pooling", "couple_copies")
#: settings added after the first files were written, with the value those files meant
OPTIONAL_ARCHITECTURE = {"couple_copies": False}
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
        """A :class:`~msr_sklearn.meta.MetaModel` (network + learned lrs), e.g. to resume."""
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

        The file is written to a temporary name and moved into place, so an
        interrupted save never leaves a truncated file where a good one was.
        """
        path = Path(path)
        meta = {"format": _FORMAT_NAME, "version": FORMAT_VERSION,
                "architecture": self.architecture, "inner_lrs": self.inner_lrs,
                "objective": self.objective, "inner_steps": self.inner_steps,
                "arrays": sorted(self.state)}
        tmp = path.with_name(path.name + ".tmp")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("meta.json", json.dumps(meta))
            for name in meta["arrays"]:
                buf = io.BytesIO()
                np.save(buf, self.state[name], allow_pickle=False)
                zf.writestr(f"arrays/{name}.npy", buf.getvalue())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path):
        """Read a file written by :meth:`save`; never unpickles anything."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no LearnedSymmetry file at {str(path)!r}")
        try:
            with zipfile.ZipFile(path) as zf:
                meta = json.loads(zf.read("meta.json"))
                if meta.get("format") != _FORMAT_NAME:
                    raise ValueError("it is not a LearnedSymmetry file")
                if meta.get("version") != FORMAT_VERSION:
                    raise ValueError(
                        f"it has format version {meta.get('version')!r}; this msr_sklearn "
                        f"reads version {FORMAT_VERSION}")
                state = {}
                for name in meta["arrays"]:
                    with zf.open(f"arrays/{name}.npy") as f:
                        state[name] = np.load(io.BytesIO(f.read()), allow_pickle=False)
        except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, EOFError, OSError) as exc:
            raise ValueError(
                f"cannot read a LearnedSymmetry from {str(path)!r}: the file is truncated, "
                f"corrupted or of another kind ({type(exc).__name__}: {exc})") from exc
        except ValueError as exc:
            raise ValueError(f"cannot read a LearnedSymmetry from {str(path)!r}: {exc}") from exc
        arch = meta["architecture"]
        # JSON has lists where the architecture had tuples
        arch = {k: tuple(v) if isinstance(v, list) else v for k, v in arch.items()}
        return cls(arch, state, meta["inner_lrs"], objective=meta["objective"],
                   inner_steps=meta["inner_steps"])


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
