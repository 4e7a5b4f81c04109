"""A learned sharing on any module's weight in plain torch, through ``torch.nn.utils.parametrize``.

After :func:`attach_sharing`, ``module.<name>`` is computed from the sharing's inner
tensors (``module.parametrizations.<name>.original`` for one, ``original0``,
``original1``... for a :class:`~msr_sklearn.sharing.Residual`), so any torch training
loop (learn2learn, Lightning, your own) that optimizes only those adapts the weight
inside the learned symmetry.
"""

from __future__ import annotations

import torch
from torch.nn.utils import parametrize

__all__ = ["attach_sharing"]


def attach_sharing(module, name, sharing, inner=None, freeze_symmetry=True):
    """Make parameter ``name`` of ``module`` a function of a sharing's inner tensors.

    Parameters
    ----------
    module : torch.nn.Module
        The network (changed in place).
    name : str
        A parameter name of ``module.named_parameters()``, e.g. ``"features.0.weight"``.
    sharing : Sharing
        A template (bound to the weight's shape here) or a bound sharing (e.g. from a
        learned symmetry).
    inner : dict of str to Tensor or None, default=None
        Initial inner tensors (``{"filters": v0}``, plus ``"residual"`` for a residual).
        ``None``: ``sharing.right_inverse`` of the current weight (its nearest weight in
        the sharing's span).
    freeze_symmetry : bool, default=True
        Whether ``U`` (the sharing's own parameters) stops requiring gradients, so that
        only the inner tensors train.

    Returns
    -------
    Sharing
        The bound sharing now registered on the module.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from msr_sklearn.sharing import DenseSharing, attach_sharing
    >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 1))
    >>> _ = attach_sharing(net, "0.weight", DenseSharing(n_filters=2))
    >>> [n for n, p in net.named_parameters() if p.requires_grad]
    ['0.bias', '0.parametrizations.weight.original', '2.weight', '2.bias']
    >>> net[0].weight.shape
    torch.Size([3, 4])
    """
    owner_name, _, attr = name.rpartition(".")
    try:
        owner = module.get_submodule(owner_name)
    except AttributeError:
        owner = None
    weight = getattr(owner, attr, None)
    if not isinstance(weight, torch.Tensor):
        raise ValueError(f"{type(module).__name__} has no parameter {name!r}")
    bound = sharing.bind(weight.shape) if sharing.weight_shape is None else sharing
    if bound.weight_shape != tuple(weight.shape):
        raise ValueError(f"the sharing builds weights of shape {bound.weight_shape}; "
                         f"{name} has shape {tuple(weight.shape)}")
    bound = bound.to(weight.device)
    if freeze_symmetry:
        bound.requires_grad_(False)
    parametrize.register_parametrization(owner, attr, bound)
    if inner is not None:
        originals = owner.parametrizations[attr]
        with torch.no_grad():
            if len(bound.inner_names) == 1:
                originals.original.copy_(inner[bound.inner_names[0]])
            else:
                for i, inner_name in enumerate(bound.inner_names):
                    getattr(originals, f"original{i}").copy_(inner[inner_name])
    return bound
