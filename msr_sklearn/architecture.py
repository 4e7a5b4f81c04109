"""From the learner's settings to a MetaModel: which module, built how, shared how.

A :class:`ModuleSpec` records how to build the network: a built-in model by name and
its parameters (JSON, rebuilt from a file with no code imported), a user's module class
by its import path and parameters (imported at load only when the caller allows it),
or a user's module instance (a template copied at every build; a file records its class
and needs the caller to pass the module again). :func:`build_meta_model` builds the
module without touching torch's global random state and puts it under a policy.
"""

from __future__ import annotations

import copy
import inspect
import json
import math

import torch
from torch import nn

from .engine import MetaModel, auto_inner_lrs
from .models import BUILTIN_MODELS, MLP, default_policy
from .sharing import import_object, sharing_from_spec, sharing_spec

__all__ = ["ModuleSpec", "build_meta_model", "resolved_policy"]

#: the data dimensions a module class receives when its ``__init__`` names them
DATA_PARAMETERS = ("n_features", "input_shape", "n_outputs")


class ModuleSpec:
    """How to build a network: a built-in model, a user's class, or a user's instance.

    Parameters
    ----------
    module : None, nn.Module subclass or nn.Module instance
        ``None``: the built-in :class:`~msr_sklearn.models.MLP`.
    params : dict, default=None
        Constructor parameters (``module__*`` of the learner) for a class.

    Examples
    --------
    >>> from msr_sklearn.architecture import ModuleSpec
    >>> from msr_sklearn.models import ConvNet
    >>> spec = ModuleSpec(ConvNet, {"channels": (4,)})
    >>> net = spec.build(input_shape=(1, 6, 6), n_outputs=3)
    >>> spec.params["input_shape"], spec.to_json()["kind"]
    ((1, 6, 6), 'builtin')
    """

    def __init__(self, module=None, params=None):
        params = dict(params or {})
        if module is None:
            module = MLP
        if isinstance(module, nn.Module):
            if params:
                raise ValueError(f"module parameters {sorted(params)} were given with a module "
                                 "instance; pass the class (module=MyNet, module__x=...) or set "
                                 "them on the instance")
            self.kind, self.obj = "instance", module
        elif isinstance(module, type) and issubclass(module, nn.Module):
            builtin = BUILTIN_MODELS.get(module.__name__) is module
            self.kind, self.obj = ("builtin" if builtin else "class"), module
        else:
            raise TypeError("module must be a torch.nn.Module subclass or instance, or None for "
                            f"the built-in MLP; got {module!r}")
        self.params = params

    @property
    def cls(self):
        """The module's class."""
        return type(self.obj) if self.kind == "instance" else self.obj

    def build(self, input_shape=None, n_outputs=None):
        """A fresh module; a class gets the data dimensions its ``__init__`` names.

        ``n_features``, ``input_shape`` and ``n_outputs`` are filled from the data
        unless given; the filled values are recorded in :attr:`params`.
        """
        if self.kind == "instance":
            return copy.deepcopy(self.obj)
        names = inspect.signature(self.obj.__init__).parameters
        filled = {"input_shape": None if input_shape is None else tuple(input_shape),
                  "n_features": None if input_shape is None else math.prod(input_shape),
                  "n_outputs": n_outputs}
        for name in DATA_PARAMETERS:
            if name in names and name not in self.params and filled[name] is not None:
                self.params[name] = filled[name]
        try:
            module = self.obj(**self.params)
        except TypeError as exc:
            raise TypeError(f"cannot build {self.obj.__name__}(**{self.params!r}): {exc}; "
                            "check the module__* parameters") from exc
        except ValueError:  # the module's own message
            raise
        except Exception as exc:  # e.g. torch's on a negative size: say which call failed
            raise ValueError(f"cannot build {self.obj.__name__}(**{self.params!r}): "
                             f"{type(exc).__name__}: {exc}; check the module__* parameters"
                             ) from exc
        empty = [f"{name} {tuple(p.shape)}" for name, p in module.named_parameters()
                 if p.numel() == 0]
        if empty:
            raise ValueError(f"{self.obj.__name__}(**{self.params!r}) has parameters without "
                             f"values: {', '.join(empty)}; every layer needs at least one "
                             "unit (check the module__* sizes and the data's dimensions)")
        return module

    def to_json(self):
        """The spec as JSON values; an instance or non-JSON parameters record the class only."""
        path = f"{self.cls.__module__}:{self.cls.__qualname__}"
        if self.kind == "builtin":
            return {"kind": "builtin", "name": self.cls.__name__, "params": _json(self.params)}
        params = _json(self.params) if self.kind == "class" else None
        if params is None:
            return {"kind": "instance", "path": path}
        return {"kind": "class", "path": path, "params": params}

    @classmethod
    def from_json(cls, data, module=None, allow_import=False):
        """The spec of :meth:`to_json`; user code comes from ``module`` or an allowed import."""
        kind = data.get("kind")
        if kind == "builtin":
            if data.get("name") not in BUILTIN_MODELS:
                raise ValueError(f"unknown built-in model {data.get('name')!r}")
            return cls(BUILTIN_MODELS[data["name"]], _tuples(data.get("params") or {}))
        if kind not in ("class", "instance"):
            raise ValueError(f"unknown module kind {kind!r}")
        params = _tuples(data.get("params") or {})
        if module is not None:
            if isinstance(module, nn.Module):
                return cls(module)
            return cls(module, params if kind == "class" else {})
        if kind == "instance":
            raise ValueError(f"the network is an instance of {data.get('path')!r}, which a file "
                             "cannot rebuild: pass the module (an instance of that class, or "
                             "the class) as module=")
        return cls(import_object(data.get("path"), allow_import, "module"), params)

    def __repr__(self):
        return f"ModuleSpec({self.cls.__name__}, kind={self.kind!r}, params={self.params!r})"


def _json(params):
    """``params`` as JSON values (tuples as lists), or None when they are not JSON."""
    try:
        return json.loads(json.dumps(params))
    except (TypeError, ValueError):
        return None


def _tuples(params):
    return {k: _as_tuple(v) for k, v in params.items()}


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list) else value


def build_meta_model(spec, policy, input_shape, n_outputs, *, inner_lr=0.1,
                     learn_inner_lr=True, seed=0, layer="msr", n_filters=8, loss="mse"):
    """Build ``spec``'s module and put it under ``policy``, deterministically from ``seed``.

    The module is constructed with torch's global generator forked and seeded (so its
    own initialization is reproducible and the caller's random state untouched);
    the sharings and initial filters come from a local generator.

    Parameters
    ----------
    spec : ModuleSpec
    policy : dict or None
        The sharing policy; ``None``: the module's default (:func:`default_policy`
        with ``layer`` and ``n_filters``).
    input_shape : tuple of int
        One sample's shape.
    n_outputs : int
        Outputs (regression) or ways (classification).
    inner_lr : float or "auto", default=0.1
        ``"auto"``: :func:`~msr_sklearn.engine.auto_inner_lrs` for ``loss``, from 0.1.
    learn_inner_lr : bool, default=True
    seed : int, default=0
    layer : str, default="msr"
    n_filters : int or sequence of int, default=8
    loss : {"mse", "cross_entropy"}, default="mse"
        The inner loop's loss (for ``inner_lr="auto"``).

    Returns
    -------
    MetaModel
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = spec.build(input_shape, n_outputs)
    if torch.empty(0).is_meta:  # shapes only (a file checked): a copied instance too
        module = module.to("meta")
    if policy is None:
        policy = default_policy(module, layer, n_filters)
    generator = torch.Generator().manual_seed(seed)
    auto = isinstance(inner_lr, str) and inner_lr == "auto"
    model = MetaModel(module, policy, inner_lr=0.1 if auto else inner_lr,
                      learn_inner_lr=learn_inner_lr, generator=generator)
    if auto:
        rates = auto_inner_lrs(model, loss)
        with torch.no_grad():
            model.inner_lrs.copy_(torch.tensor([rates[n] for n in model.inner_names]))
    return model


def resolved_policy(model):
    """The explicit per-parameter policy of a MetaModel, as JSON values.

    ``{parameter name: sharing spec (a dict) or role}``, every parameter named.
    """
    return {name: sharing_spec(model.sharing(name)) if role == "shared" else role
            for name, role in model.roles.items()}


def policy_from_json(policy, allow_import=False):
    """Templates for :func:`resolved_policy`'s JSON (exact names as patterns)."""
    return {name: value if isinstance(value, str) else sharing_from_spec(value, allow_import)
            for name, value in policy.items()}
