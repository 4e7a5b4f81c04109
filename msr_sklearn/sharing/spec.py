"""Sharings as JSON: a spec records a sharing's kind and hyperparameters, never code.

A file stores the spec of every sharing in a network (its values go with the state
arrays); :func:`sharing_from_spec` rebuilds the template. Built-in kinds are looked up
by name; a user's own :class:`~msr_sklearn.sharing.Sharing` subclass is recorded by its
import path and imported only when the caller allows it.
"""

from __future__ import annotations

import importlib

import torch

from .base import Sharing
from .conv import ConvFilterSharing
from .dense import DenseSharing, KroneckerSharing
from .fixed import FixedSharing
from .residual import Residual

__all__ = ["BUILTIN_SHARINGS", "import_object", "sharing_from_spec", "sharing_spec"]

#: the sharing kinds a spec names directly
BUILTIN_SHARINGS = {cls.__name__: cls for cls in (DenseSharing, KroneckerSharing,
                                                  ConvFilterSharing, FixedSharing, Residual)}
_TENSOR = "tensor_shape"


def sharing_spec(sharing):
    """A JSON-able description of ``sharing``'s kind and hyperparameters.

    Tensors among the hyperparameters (a fixed ``U``) are recorded by shape only:
    their values belong to the network's state.

    Parameters
    ----------
    sharing : Sharing
        A template or a bound sharing.

    Returns
    -------
    dict
        ``{"kind": ..., <hyperparameter>: <JSON value>, ...}``.

    Examples
    --------
    >>> from msr_sklearn.sharing import DenseSharing, Residual, sharing_spec
    >>> sharing_spec(Residual(DenseSharing(n_filters=3), pull=True))
    {'kind': 'Residual', 'sharing': {'kind': 'DenseSharing', 'n_filters': 3, 'learnable': True}, 'inner_lr': None, 'pull': True}
    """
    cls = type(sharing)
    kind = cls.__name__ if BUILTIN_SHARINGS.get(cls.__name__) is cls else \
        f"{cls.__module__}:{cls.__qualname__}"
    spec = {"kind": kind}
    for name, value in sharing.get_config().items():
        if isinstance(value, Sharing):
            value = sharing_spec(value)
        elif isinstance(value, torch.Tensor):
            value = {_TENSOR: list(value.shape)}
        elif isinstance(value, tuple):
            value = list(value)
        spec[name] = value
    return spec


def sharing_from_spec(spec, allow_import=False):
    """The template a :func:`sharing_spec` describes (load the values into it once bound).

    Parameters
    ----------
    spec : dict
        From :func:`sharing_spec`.
    allow_import : bool, default=False
        Import a user's sharing class named by its import path. A file never imports
        code by itself.

    Returns
    -------
    Sharing

    Raises
    ------
    ValueError
        For an unknown kind, a user kind without ``allow_import``, or bad hyperparameters.

    Examples
    --------
    >>> from msr_sklearn.sharing import ConvFilterSharing, sharing_from_spec, sharing_spec
    >>> sharing_from_spec(sharing_spec(ConvFilterSharing(n_copies=4)))
    ConvFilterSharing(n_copies=4, in_copies=1, factor_filters=None, init='random', learnable=True)
    """
    if not isinstance(spec, dict) or not isinstance(spec.get("kind"), str):
        raise ValueError(f"a sharing spec must be a dict with a 'kind'; got {spec!r}")
    kind = spec["kind"]
    if kind in BUILTIN_SHARINGS:
        cls = BUILTIN_SHARINGS[kind]
    else:
        cls = import_object(kind, allow_import, "sharing")
        if not (isinstance(cls, type) and issubclass(cls, Sharing)):
            raise ValueError(f"{kind!r} is not a Sharing class")
    config = {}
    for name, value in spec.items():
        if name == "kind":
            continue
        if isinstance(value, dict) and "kind" in value:
            value = sharing_from_spec(value, allow_import)
        elif isinstance(value, dict) and set(value) == {_TENSOR}:
            value = torch.zeros([int(s) for s in value[_TENSOR]])
        elif isinstance(value, list):
            value = tuple(value)
        config[name] = value
    try:
        return cls(**config)
    except TypeError as exc:
        raise ValueError(f"cannot rebuild a {kind} from {spec!r}: {exc}") from exc


def import_object(path, allow_import=False, what="object"):
    """The object at ``"package.module:Qualified.name"``, if the caller allows importing.

    Parameters
    ----------
    path : str
        ``"package.module:Qualified.name"``.
    allow_import : bool, default=False
        Whether importing is allowed; ``False`` raises a ``ValueError`` that says how to
        allow it.
    what : str, default="object"
        What the object is, for the messages ("module", "sharing").

    Returns
    -------
    object

    Examples
    --------
    >>> from msr_sklearn.sharing import import_object
    >>> import_object("torch.nn:Linear", allow_import=True)
    <class 'torch.nn.modules.linear.Linear'>
    """
    if not isinstance(path, str) or path.count(":") != 1:
        raise ValueError(f"a {what} is recorded as 'module:QualifiedName'; got {path!r}")
    if not allow_import:
        raise ValueError(f"the {what} {path!r} is user code; loading it imports that module. "
                         f"Pass the class itself (e.g. module=...) or allow_import=True if you "
                         "trust the file")
    module_name, qualname = path.split(":")
    try:
        obj = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import the {what} {path!r}: {exc}") from exc
    return obj
