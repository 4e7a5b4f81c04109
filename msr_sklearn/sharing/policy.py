"""A sharing policy: which of a module's parameters are shared, adapted, meta-learned or frozen.

As skorch selects parameter groups by name pattern, a policy maps
:func:`fnmatch.fnmatchcase` patterns over ``module.named_parameters()`` names to a
role::

    {"features.*.weight": ConvFilterSharing(n_copies=4),   # shared: U outer, v inner
     "head.weight": DenseSharing(n_filters=16),
     "features.0.bias": "outer",                           # meta-learned, not adapted
     "norm.*": "frozen"}                                   # never changes

Every parameter is exactly one of:

- **shared**: a :class:`~msr_sklearn.sharing.Sharing` builds it, ``W = U v``: ``U`` is
  meta-learned (outer), ``v`` adapted per task (inner);
- **inner**: adapted per task from a meta-learned initial value (plain MAML);
- **outer**: meta-learned, the same for every task;
- **frozen**: left at its initial value.

The first pattern that matches a name decides; parameters no pattern matches are
*inner* (biases included), so an empty policy is MAML on the whole module. A pattern
with wildcards gives its sharing to the weights it matches (parameters of two or more
dimensions) and passes over vectors: ``"features.*.weight"`` shares the convolutions of a
network whose features also hold normalization scales. A name without wildcards gets
its sharing whatever its shape.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import NamedTuple

from .base import Sharing

__all__ = ["ROLES", "ParameterRole", "resolve_policy"]

#: the roles a policy may give a parameter by name (a Sharing object makes it shared)
ROLES = ("inner", "outer", "frozen")


class ParameterRole(NamedTuple):
    """How one parameter of a module is meta-learned (:func:`resolve_policy` returns them).

    Parameters
    ----------
    name : str
        The parameter's name in ``module.named_parameters()``.
    role : {"shared", "inner", "outer", "frozen"}
        What the outer and inner loops do with it.
    sharing : Sharing or None
        For a shared parameter, the sharing bound to its shape; else None.
    pattern : str or None
        The policy pattern that matched it; None when no pattern did (then inner).

    Examples
    --------
    >>> from torch import nn
    >>> from msr_sklearn.sharing import resolve_policy
    >>> role = resolve_policy(nn.Linear(3, 2), {"bias": "frozen"})[1]
    >>> role.name, role.role, role.pattern
    ('bias', 'frozen', 'bias')
    """

    name: str
    role: str
    sharing: Sharing | None
    pattern: str | None


def resolve_policy(module, policy=None, generator=None):
    """The role of every parameter of ``module`` under ``policy``, with bound sharings.

    Parameters
    ----------
    module : torch.nn.Module
        The network.
    policy : mapping of str to (Sharing or {"inner", "outer", "frozen"}) or None
        Name patterns (:func:`fnmatch.fnmatchcase`, ``*`` also matches dots) to roles;
        the first matching pattern decides. ``None`` or ``{}``: every parameter inner.
    generator : torch.Generator or None, default=None
        The source of the sharings' random initial ``U``.

    Returns
    -------
    list of ParameterRole
        In the order of ``module.named_parameters()``.

    Raises
    ------
    TypeError
        If the policy is not a mapping of string patterns to sharings or role names.
    ValueError
        If a pattern matches no parameter, or a sharing cannot build the weight it is
        given (both named in the message).

    Examples
    --------
    >>> from torch import nn
    >>> from msr_sklearn.sharing import DenseSharing, resolve_policy
    >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> roles = resolve_policy(net, {"0.weight": DenseSharing(n_filters=5), "2.*": "outer"})
    >>> [(r.name, r.role) for r in roles]
    [('0.weight', 'shared'), ('0.bias', 'inner'), ('2.weight', 'outer'), ('2.bias', 'outer')]
    >>> roles[0].sharing.matrix().shape
    torch.Size([12, 5])
    >>> resolve_policy(net, {"1.weight": "inner"})
    Traceback (most recent call last):
    ...
    ValueError: sharing pattern '1.weight' matches no parameter of Sequential it can apply to; its parameters are ['0.weight', '0.bias', '2.weight', '2.bias']
    """
    policy = _checked(policy)
    params = list(module.named_parameters())
    names = [name for name, _ in params]
    for pattern, value in policy.items():
        if not any(fnmatch.fnmatchcase(name, pattern) and not _passes_over(pattern, value, p)
                   for name, p in params):
            raise ValueError(f"sharing pattern {pattern!r} matches no parameter of "
                             f"{type(module).__name__} it can apply to; its parameters are "
                             f"{names}")
    roles = []
    for name, param in params:
        pattern = next((p for p in policy if fnmatch.fnmatchcase(name, p)
                        and not _passes_over(p, policy[p], param)), None)
        value = "inner" if pattern is None else policy[pattern]
        if isinstance(value, str):
            roles.append(ParameterRole(name, value, None, pattern))
            continue
        try:
            bound = value.bind(param.shape, generator)
        except ValueError as exc:
            raise ValueError(f"sharing pattern {pattern!r} gives {name} (shape "
                             f"{tuple(param.shape)}) the sharing {value!r}, which cannot "
                             f"build it: {exc}") from exc
        roles.append(ParameterRole(name, "shared", bound, pattern))
    return roles


def _passes_over(pattern, value, param):
    """A wildcard pattern's sharing is for weights: it passes over vectors (biases, scales)."""
    wildcard = any(c in pattern for c in "*?[")
    return wildcard and not isinstance(value, str) and param.dim() < 2


def _checked(policy):
    if policy is None:
        return {}
    if not isinstance(policy, Mapping):
        raise TypeError("sharing must be a dict of parameter-name patterns to Sharing objects "
                        f"or one of {ROLES}; got {type(policy).__name__}")
    for pattern, value in policy.items():
        if not isinstance(pattern, str):
            raise TypeError(f"sharing patterns must be strings; got {pattern!r}")
        if isinstance(value, str):
            if value not in ROLES:
                raise ValueError(f"sharing[{pattern!r}] = {value!r}: a role must be one of "
                                 f"{ROLES}, or a Sharing object")
        elif not isinstance(value, Sharing):
            raise TypeError(f"sharing[{pattern!r}] must be a Sharing object (e.g. "
                            f"DenseSharing(n_filters=8)) or one of {ROLES}; got "
                            f"{type(value).__name__}")
    return dict(policy)
