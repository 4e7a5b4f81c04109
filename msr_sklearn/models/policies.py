"""Default sharing policies: the ``layer`` / ``n_filters`` shorthands as policies.

``layer`` names the sharing of a dense weight: ``"msr"`` a learned dense ``U``,
``"msr_kron"`` a Kronecker-factored one, ``"dense"`` none (the weight is adapted as is:
plain MAML), and the ``"_residual"`` kinds the same with a free residual beside
(``W = U v + R``). A built-in model turns them into a policy for its own weights
(``default_sharing``); any other module gets the kind on every weight of two or more
dimensions (:func:`default_policy`).
"""

from __future__ import annotations

from numbers import Integral

from ..sharing import DenseSharing, KroneckerSharing, Residual

__all__ = ["LAYER_KINDS", "default_policy", "layer_sharing", "per_weight_filters"]

#: the ``layer`` kinds: how a dense weight is shared
LAYER_KINDS = ("msr", "msr_kron", "dense", "msr_residual", "msr_kron_residual")


def layer_sharing(layer, n_filters):
    """The policy value of one weight for the ``layer`` kind: a sharing, or ``"inner"``.

    Parameters
    ----------
    layer : {"msr", "msr_kron", "dense", "msr_residual", "msr_kron_residual"}
        The kind.
    n_filters : int
        ``k`` of the sharing.

    Returns
    -------
    Sharing or "inner"

    Examples
    --------
    >>> from msr_sklearn.models import layer_sharing
    >>> layer_sharing("msr", 4), layer_sharing("dense", 4)
    (DenseSharing(n_filters=4, learnable=True), 'inner')
    """
    if layer not in LAYER_KINDS:
        raise ValueError(f"layer must be one of {LAYER_KINDS}; got {layer!r}")
    base = layer.removesuffix("_residual")
    if base == "dense":
        return "inner"
    sharing = DenseSharing(n_filters) if base == "msr" else KroneckerSharing(n_filters=n_filters)
    return Residual(sharing) if layer.endswith("_residual") else sharing


def per_weight_filters(n_filters, n_weights):
    """``n_filters`` as one ``k`` per shared weight (an int repeated, or a sequence checked).

    Parameters
    ----------
    n_filters : int or sequence of int
    n_weights : int
        The number of shared weights.

    Returns
    -------
    list of int

    Examples
    --------
    >>> from msr_sklearn.models import per_weight_filters
    >>> per_weight_filters(4, 3), per_weight_filters((8, 2), 2)
    ([4, 4, 4], [8, 2])
    """
    if isinstance(n_filters, Integral) and not isinstance(n_filters, bool):
        return [int(n_filters)] * n_weights
    ks = [int(k) for k in n_filters]
    if len(ks) != n_weights:
        raise ValueError(f"n_filters has {len(ks)} entries for {n_weights} shared weights")
    return ks


def default_policy(module, layer="msr", n_filters=8):
    """The policy a learner uses when it is given no ``sharing=``.

    A module with a ``default_sharing(layer, n_filters)`` method (every built-in model)
    says its own; any other module gets ``layer``'s sharing on every parameter of two
    or more dimensions (its weights; biases and norm scales stay inner).

    Parameters
    ----------
    module : torch.nn.Module
    layer : {"msr", "msr_kron", "dense", "msr_residual", "msr_kron_residual"}, default="msr"
    n_filters : int or sequence of int, default=8
        One ``k``, or one per shared weight.

    Returns
    -------
    dict
        The policy (parameter names to sharings or roles).

    Examples
    --------
    >>> from torch import nn
    >>> from msr_sklearn.models import default_policy
    >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 1))
    >>> default_policy(net, "msr", n_filters=(5, 2))
    {'0.weight': DenseSharing(n_filters=5, learnable=True), '2.weight': DenseSharing(n_filters=2, learnable=True)}
    """
    own = getattr(module, "default_sharing", None)
    if callable(own):
        return own(layer=layer, n_filters=n_filters)
    weights = [name for name, p in module.named_parameters() if p.dim() >= 2]
    ks = per_weight_filters(n_filters, len(weights))
    return {name: layer_sharing(layer, k) for name, k in zip(weights, ks)}
