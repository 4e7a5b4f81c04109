"""LearnedSymmetry: what meta-training produced, as a plain value object and a file.

It records the network (:class:`~msr_sklearn.architecture.ModuleSpec`), the policy that
says how each of its parameters is shared, adapted, meta-learned or frozen, the state
(every sharing's ``U``, the initial inner tensors ``v0``/``R0``, the outer parameters),
the learned inner learning rates and the inner loop it was trained with. A file is a
zip of ``.npy`` arrays and JSON metadata: it never runs code by itself (a user's module
class is imported only when the caller allows it).
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import torch

from .architecture import ModuleSpec, build_meta_model, policy_from_json, resolved_policy
from .persistence import TRAINING_MEMBERS, npy_bytes, read_archive, write_archive
from .sharing import ROLES, attach_sharing

#: bumped when the file layout changes; ``load`` refuses versions it does not know.
#: 2: the ``residual_pull`` architecture key and residual layer kinds; 3: any module
#: (a module spec and a per-parameter policy instead of the built-in architecture
#: flags), feature names. Version-1 and -2 files are converted on load.
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
_FORMAT_NAME = "msr_sklearn.LearnedSymmetry"
#: the keys of a version-3 ``meta.json``
_META_KEYS = {"format", "version", "module", "policy", "inner_lrs", "objective",
              "inner_steps", "input_shape", "n_outputs", "feature_names", "arrays"}
#: the member names of a symmetry file, or of a checkpoint (which adds its training state)
FILE_MEMBERS = r"meta\.json|arrays/[A-Za-z0-9_.\-]+\.npy|" + TRAINING_MEMBERS
OBJECTIVES = ("regression", "classification")


class LearnedSymmetry:
    """A meta-learned sharing pattern: the network, its policy, ``U`` and ``v0``, inner lrs.

    A plain value object (numpy arrays, builtins and the module's description) so it
    survives ``clone``, ``pickle`` and ``copy.deepcopy``, and travels to per-task
    estimators as a constructor parameter. Build one with
    :meth:`MetaSymmetryLearner.fit <msr_sklearn.MetaSymmetryLearner.fit>` or
    :meth:`initial`; save and load it with :meth:`save` / :meth:`load`.

    Parameters
    ----------
    module : ModuleSpec
        How to build the network.
    policy : dict of str to (dict or str)
        Every parameter's role: a sharing spec (shared), ``"inner"``, ``"outer"`` or
        ``"frozen"``.
    state : dict of str to ndarray
        The MetaModel's ``state_dict`` as numpy arrays.
    inner_lrs : dict of str to float
        The learned inner learning rate of each inner tensor.
    objective : {"regression", "classification"}, default="regression"
    inner_steps : int, default=1
        Inner SGD steps the symmetry was meta-trained with.
    input_shape : tuple of int
        One sample's shape (``(n_features,)`` for flat rows).
    n_outputs : int
        Outputs (regression) or ways (classification).
    feature_names : array-like of str or None, default=None
        The column names the learner was fitted on, if any.

    Examples
    --------
    >>> from msr_sklearn import LearnedSymmetry
    >>> sym = LearnedSymmetry.initial(n_features=5, n_outputs=3, n_filters=2, bias=False,
    ...                               random_state=0)
    >>> sym.symmetry_matrix(0).shape
    (15, 2)
    >>> sym.weight_names, sym.objective
    (['0.weight'], 'regression')
    """

    def __init__(self, module, policy, state, inner_lrs, objective="regression", inner_steps=1,
                 input_shape=None, n_outputs=None, feature_names=None):
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}; got {objective!r}")
        if not isinstance(module, ModuleSpec):
            raise TypeError(f"module must be a ModuleSpec; got {type(module).__name__}")
        self.module = module
        self.policy = dict(policy)
        self.state = {k: np.asarray(v).copy() for k, v in state.items()}
        self.inner_lrs = {str(k): float(v) for k, v in inner_lrs.items()}
        self.objective = objective
        self.inner_steps = int(inner_steps)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.n_outputs = int(n_outputs)
        self.feature_names = None if feature_names is None else np.asarray(feature_names,
                                                                          dtype=object)

    # ------------------------------------------------------------------ builders
    @classmethod
    def initial(cls, module=None, sharing=None, *, n_features=None, input_shape=None,
                n_outputs=1, objective="regression", hidden_layer_sizes=(), activation="relu",
                layer="msr", n_filters=8, bias=True, inner_lr=0.1, inner_steps=1,
                random_state=None, **module_params):
        """The untrained symmetry a learner would start from (a control, or a given ``U``).

        Parameters
        ----------
        module, sharing : as :class:`~msr_sklearn.MetaSymmetryLearner`'s
            ``None`` builds the MLP of ``hidden_layer_sizes``, ``activation``, ``bias``.
        n_features, input_shape : int or tuple
            One sample's size (``n_features``) or shape (``input_shape``).
        n_outputs : int, default=1
        objective : {"regression", "classification"}, default="regression"
        hidden_layer_sizes, activation, layer, n_filters, bias :
            The learner's shorthands.
        inner_lr : float, default=0.1
        inner_steps : int, default=1
        random_state : int or None, default=None
        **module_params
            ``module__<name>=value``: parameters of a module class.
        """
        if input_shape is None:
            if n_features is None:
                raise ValueError("give n_features or input_shape")
            input_shape = (int(n_features),)
        spec = ModuleSpec(module, _module_params(module, hidden_layer_sizes, activation, bias,
                                                 module_params))
        seed = 0 if random_state is None else int(random_state)
        model = build_meta_model(spec, sharing, input_shape, n_outputs, inner_lr=inner_lr,
                                 seed=seed, layer=layer, n_filters=n_filters)
        return cls.from_model(model, spec, objective=objective, inner_steps=inner_steps,
                              input_shape=input_shape, n_outputs=n_outputs)

    @classmethod
    def from_model(cls, model, module, objective="regression", inner_steps=1, input_shape=None,
                   n_outputs=None, feature_names=None):
        """The symmetry of a MetaModel built from the ModuleSpec ``module``."""
        state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()
                 if k != "inner_lrs"}  # they are inner_lrs, by name
        lrs = dict(zip(model.inner_names, model.inner_lrs.detach().cpu().tolist()))
        return cls(module, resolved_policy(model), state, lrs, objective=objective,
                   inner_steps=inner_steps, input_shape=input_shape, n_outputs=n_outputs,
                   feature_names=feature_names)

    def build_model(self, device="cpu", learn_inner_lr=True):
        """A :class:`~msr_sklearn.engine.MetaModel` holding this symmetry's state."""
        model = build_meta_model(self.module, policy_from_json(self.policy, True),
                                 self.input_shape, self.n_outputs,
                                 learn_inner_lr=learn_inner_lr)
        missing = set(model.inner_names) - set(self.inner_lrs)
        if missing:
            raise ValueError(f"the symmetry has no learned inner lr for {sorted(missing)}")
        state = {k: torch.from_numpy(np.asarray(v)) for k, v in self.state.items()}
        state["inner_lrs"] = torch.tensor([self.inner_lrs[n] for n in model.inner_names],
                                          dtype=model.inner_lrs.dtype)
        model.load_state_dict(state)
        return model.to(device)

    def to_module(self, device="cpu"):
        """The network as a plain torch module, ready to adapt with any training loop.

        Every shared weight is a parametrization (:func:`torch.nn.utils.parametrize`) of
        its sharing, started at the learned ``v0`` (``R0``) with ``U`` frozen; every other
        parameter holds its meta-learned value, and only the inner ones require
        gradients. Adapting ``module.parameters()`` that require gradients with SGD at
        :attr:`inner_lrs` is the learned inner loop.

        Examples
        --------
        >>> import torch
        >>> from msr_sklearn import LearnedSymmetry
        >>> sym = LearnedSymmetry.initial(n_features=5, n_outputs=3, n_filters=2,
        ...                               random_state=0)
        >>> net = sym.to_module()
        >>> [n for n, p in net.named_parameters() if p.requires_grad]
        ['0.bias', '0.parametrizations.weight.original']
        >>> torch.allclose(net(torch.ones(1, 5)), sym.build_model()(torch.ones(1, 5)))
        True
        """
        model = self.build_model(device)
        module, initial = model.module, model.initial_inner()
        for name in model.shared_names:
            owner, _, attr = name.rpartition(".")
            sharing = model.sharing(name)
            inner = {n: initial[f"{name}.{n}"].detach() for n in sharing.inner_names}
            # the slot is empty in the MetaModel's module: give it the current weight
            module.get_submodule(owner).register_parameter(
                attr, torch.nn.Parameter(sharing(*inner.values()).detach()))
            attach_sharing(module, name, sharing, inner)
        inner_params = {n for n, r in model.roles.items() if r == "inner"}
        for name, param in module.named_parameters():
            if name in model.roles and name not in inner_params:
                param.requires_grad_(False)
        return module

    # ------------------------------------------------------------- introspection
    @property
    def n_features(self):
        """The number of input values of one sample, ``prod(input_shape)``."""
        return math.prod(self.input_shape)

    @property
    def weight_names(self):
        """The weights a task adapts (shared, or inner with two or more dimensions), in order.

        ``layer=i`` in :meth:`symmetry_matrix` and the diagnostics counts these.
        """
        shapes = self._weight_shapes()
        return [n for n, shape in shapes.items() if len(shape) >= 2]

    @property
    def n_layers(self):
        """The number of adapted weights (:attr:`weight_names`)."""
        return len(self.weight_names)

    def _weight_shapes(self):
        shapes = {}
        for name, role in self.policy.items():
            if role == "inner":
                shapes[name] = self.state[f"module.{name}"].shape
            elif isinstance(role, dict):
                shapes[name] = self._shared_weight_shape(name)
        return shapes

    def _shared_weight_shape(self, name):
        return tuple(self._model().sharing(name).weight_shape)

    def _model(self):
        cached = self.__dict__.get("_cached_model")
        if cached is None:
            cached = self.__dict__["_cached_model"] = self.build_model()
        return cached

    def _weight_name(self, layer):
        names = self.weight_names
        if isinstance(layer, str):
            if layer not in names:
                raise ValueError(f"layer={layer!r} is not an adapted weight; they are {names}")
            return layer
        if not isinstance(layer, (int, np.integer)) or isinstance(layer, bool):
            raise TypeError(f"layer must be an int or a weight name; got {type(layer).__name__}")
        n = len(names)
        if not -n <= layer < n:
            raise ValueError(f"layer={layer} is out of range for {n} adapted weight(s) {names}")
        return names[int(layer) % n]

    def sharing(self, layer=0):
        """The bound sharing of a layer (``None`` for a weight adapted as is)."""
        name = self._weight_name(layer)
        model = self._model()
        return model.sharing(name) if model.roles[name] == "shared" else None

    def symmetry_matrix(self, layer=0):
        """``U`` of a layer as a numpy array ``(n_weights, k)``; ``W = (U @ v).reshape``.

        ``layer`` counts :attr:`weight_names` (or names one). Factored sharings are
        materialized; a weight adapted as is has the identity.
        """
        sharing = self.sharing(layer)
        if sharing is None:
            return np.eye(math.prod(self._weight_shapes()[self._weight_name(layer)]),
                          dtype=np.float32)
        with torch.no_grad():
            return sharing.matrix().cpu().numpy().copy()

    def initial_filters(self, layer=0):
        """The meta-learned initial filter values ``v0`` of a layer (its initial weight
        when it is adapted as is)."""
        name = self._weight_name(layer)
        key = f"shared.{name.replace('.', '-')}.filters"
        source = self.state[key] if key in self.state else self.state[f"module.{name}"]
        return np.asarray(source).reshape(-1).copy()

    def initial_residual(self, layer=0):
        """The meta-learned ``R0`` of a residual layer (weight-shaped), or None."""
        key = f"shared.{self._weight_name(layer).replace('.', '-')}.residual"
        return None if key not in self.state else np.asarray(self.state[key]).copy()

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_cached_model", None)
        return state

    def __repr__(self):
        return (f"LearnedSymmetry(module={self.module.cls.__name__}, input_shape="
                f"{self.input_shape}, n_outputs={self.n_outputs}, objective={self.objective!r}, "
                f"shared={[n for n, r in self.policy.items() if isinstance(r, dict)]})")

    def __eq__(self, other):
        if not isinstance(other, LearnedSymmetry):
            return NotImplemented
        return self._members() == other._members()

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

    def _meta(self):
        return {"format": _FORMAT_NAME, "version": FORMAT_VERSION,
                "module": self.module.to_json(), "policy": self.policy,
                "inner_lrs": self.inner_lrs, "objective": self.objective,
                "inner_steps": self.inner_steps, "input_shape": list(self.input_shape),
                "n_outputs": self.n_outputs,
                "feature_names": None if self.feature_names is None
                else [str(n) for n in self.feature_names],
                "arrays": sorted(self.state)}

    def _members(self):
        """The file's members, name -> bytes."""
        meta = self._meta()
        members = {"meta.json": json.dumps(meta).encode()}
        members.update({f"arrays/{name}.npy": npy_bytes(self.state[name])
                        for name in meta["arrays"]})
        return members

    @classmethod
    def load(cls, path, module=None, allow_import=False):
        """Read a file written by :meth:`save` (or a training checkpoint); never unpickles.

        Everything is checked before it is used: the member names and sizes, the
        metadata's keys and types, every array's shape and dtype against the network
        its module and policy build (on the meta device, before the array is
        decompressed), finite values and finite inner learning rates. Files of format 1
        and 2 (the learner's old architecture flags) are converted.

        Parameters
        ----------
        path : str or path
        module : nn.Module subclass or instance, or None, default=None
            The network of a symmetry learned with your own module (its class, or an
            instance for a module given as an instance). Built-in models need nothing.
        allow_import : bool, default=False
            Import the module class (and any custom sharing) the file names by its
            import path. A file never imports code unless you allow it.

        Raises
        ------
        FileNotFoundError
            No file at ``path``.
        OSError
            The system cannot read it.
        ValueError
            ``"cannot read a LearnedSymmetry from '<path>': <what is wrong>"``: the file
            is damaged, of another kind or version, or its content is not a valid
            symmetry (or names user code that is not allowed).
        """
        with read_archive(path, "LearnedSymmetry", FILE_MEMBERS) as archive:
            return cls._from_archive(archive, module, allow_import)

    @classmethod
    def _from_archive(cls, archive, module=None, allow_import=False):
        """The symmetry in an open file, checked (see :meth:`load`)."""
        meta = archive.json("meta.json")
        if meta.get("format") != _FORMAT_NAME:
            raise ValueError("it is not a LearnedSymmetry file")
        version = meta.get("version")
        if version not in READABLE_VERSIONS:
            raise ValueError(f"it has format version {version!r}; this msr_sklearn reads "
                             f"versions {', '.join(map(str, READABLE_VERSIONS))}")
        names = meta.get("arrays")
        if not (isinstance(names, list) and all(isinstance(n, str) for n in names)
                and len(set(names)) == len(names)):
            raise ValueError(f"its list of arrays is {names!r}, not a list of distinct names")
        listed = {f"arrays/{name}.npy" for name in names}
        extra = sorted(n for n in archive.names if n.startswith("arrays/") and n not in listed)
        if extra:
            raise ValueError(f"it has arrays its metadata does not list: {extra[:5]}")
        if version < 3:  # the old flags: checked, the arrays read under the caps, converted
            from .persistence.legacy import checked_v2_meta, convert_v2

            old = checked_v2_meta(meta)
            state = {name: archive.array(f"arrays/{name}.npy", dtype="<f4") for name in names}
            meta, state = convert_v2(old, state)
            meta = {**meta, "arrays": sorted(state)}
        else:
            _check_v3_meta(meta)
            state = None
        spec = ModuleSpec.from_json(meta["module"], module, allow_import)
        policy = policy_from_json(meta["policy"], allow_import)
        shapes, inner_names = _expected_state(spec, policy, meta["input_shape"],
                                              meta["n_outputs"])
        if set(meta["arrays"]) != set(shapes):
            raise ValueError(f"its arrays {sorted(meta['arrays'])} are not those of its "
                             f"network, {sorted(shapes)}")
        if state is None:
            state = {name: archive.array(f"arrays/{name}.npy", shape=shapes[name][0],
                                         dtype=shapes[name][1]) for name in names}
        else:
            wrong = [n for n, a in state.items() if tuple(a.shape) != shapes[n][0]]
            if wrong:
                raise ValueError(f"its array {wrong[0]!r} has shape {state[wrong[0]].shape}; "
                                 f"its network's is {shapes[wrong[0]][0]}")
        lrs = meta["inner_lrs"]
        if not isinstance(lrs, dict) or set(lrs) != set(inner_names):
            raise ValueError(f"its inner learning rates {lrs!r} are not those of its "
                             f"network's inner tensors {list(inner_names)}")
        bad = [k for k, v in lrs.items() if type(v) not in (int, float) or not math.isfinite(v)]
        if bad:
            raise ValueError(f"its inner learning rate of {bad[0]!r} is {lrs[bad[0]]!r}, not a "
                             "finite number")
        return cls(spec, meta["policy"], state, lrs, objective=meta["objective"],
                   inner_steps=meta["inner_steps"], input_shape=meta["input_shape"],
                   n_outputs=meta["n_outputs"], feature_names=meta["feature_names"])


def _check_v3_meta(meta):
    """The types of a version-3 ``meta.json`` (the network is checked by building it)."""
    if set(meta) != _META_KEYS:
        raise ValueError(f"its meta.json has the keys {sorted(meta)}; a LearnedSymmetry file "
                         f"has {sorted(_META_KEYS)}")

    def positive_int(v, limit=2 ** 31):
        return type(v) is int and 0 < v < limit

    shape = meta["input_shape"]
    if not (isinstance(shape, list) and 0 < len(shape) <= 4
            and all(positive_int(s) for s in shape)):
        raise ValueError(f"its input_shape {shape!r} is not a list of 1 to 4 positive ints")
    for key in ("n_outputs", "inner_steps"):
        if not positive_int(meta[key]):
            raise ValueError(f"its {key} {meta[key]!r} is not a positive integer")
    if meta["objective"] not in OBJECTIVES:
        raise ValueError(f"its objective {meta['objective']!r} is not one of {OBJECTIVES}")
    names = meta["feature_names"]
    if names is not None and not (isinstance(names, list) and len(names) == math.prod(shape)
                                  and all(isinstance(n, str) for n in names)):
        raise ValueError(f"its feature_names are not {math.prod(shape)} strings")
    policy = meta["policy"]
    if not (isinstance(policy, dict) and all(
            isinstance(v, dict) or v in ROLES for v in policy.values())):
        raise ValueError("its policy is not a dict of parameter names to sharings or roles")
    if not isinstance(meta["module"], dict):
        raise ValueError(f"its module is {meta['module']!r}, not a JSON object")


def _expected_state(spec, policy, input_shape, n_outputs):
    """``({state key: (shape, dtype)}, inner tensor names)`` of the network the file
    describes, built on the meta device: no memory and no time, whatever sizes a
    hostile file declares. (The first meta build in a process imports
    ``torch._dynamo``, about a second, which torch's Python meta kernels need.)"""
    try:
        with torch.device("meta"):
            model = build_meta_model(spec, policy, tuple(input_shape), n_outputs)
    except Exception as exc:  # whatever a module or a sharing raises for what it cannot build
        raise ValueError(f"its module and policy do not build a network "
                         f"({type(exc).__name__}: {exc})") from exc
    shapes = {k: (tuple(v.shape), np.dtype(str(v.dtype).removeprefix("torch.")).str)
              for k, v in model.state_dict().items() if k != "inner_lrs"}
    return shapes, model.inner_names


def _module_params(module, hidden_layer_sizes, activation, bias, module_params):
    """The module's parameters: ``module__*`` ones, plus the MLP shorthands for no module."""
    params = {k.removeprefix("module__"): v for k, v in module_params.items()}
    unknown = [k for k in module_params if not k.startswith("module__")]
    if unknown:
        raise TypeError(f"unexpected keyword arguments {unknown}; module parameters are "
                        "passed as module__<name>=value")
    if module is None:
        params.update(hidden_layer_sizes=tuple(int(h) for h in hidden_layer_sizes),
                      activation=activation, bias=bool(bias))
    return params


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
