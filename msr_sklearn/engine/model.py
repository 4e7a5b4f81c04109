"""MetaModel: any ``nn.Module`` under a sharing policy, with its meta-learned inner lrs.

Everything a MetaModel holds is meta-learned by the outer loop: the sharings' ``U``,
the initial inner tensors (``v0`` of every shared weight, ``R0`` of a residual, the
initial values of the plain inner parameters), the outer parameters, and one inner
learning rate per inner tensor. What a task adapts are the *inner* tensors, named

- ``"<parameter>.filters"`` (and ``".residual"``) for a shared parameter, whose
  weight is then ``sharing(filters[, residual])``;
- ``"<parameter>"`` for a parameter adapted as is (plain MAML).

A shared parameter is removed from the module (``register_parameter(name, None)``) and
supplied by :func:`torch.func.functional_call` at every call, so the module itself is
never changed and any module works.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from ..sharing import resolve_policy
from .batched import check_vectorizable, sequential_plan, task_batched_call

__all__ = ["MetaModel", "SharedWeight", "auto_inner_lrs"]


def _key(name):
    """A parameter name as a submodule key (dots are not allowed there)."""
    return name.replace(".", "-")


class SharedWeight(nn.Module):
    """One shared parameter: its bound sharing (outer) and its initial inner tensors.

    Parameters
    ----------
    sharing : Sharing
        Bound to the parameter's shape.
    initial : dict of str to Tensor
        The initial inner tensors by name (``filters``, and ``residual`` for a residual),
        meta-learned like ``U``.

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.engine import SharedWeight
    >>> from msr_sklearn.sharing import DenseSharing
    >>> entry = SharedWeight(DenseSharing(2).bind((3, 4)), {"filters": torch.zeros(2)})
    >>> [name for name, _ in entry.named_parameters()]
    ['filters', 'sharing.basis']
    """

    def __init__(self, sharing, initial):
        super().__init__()
        self.sharing = sharing
        for name in sharing.inner_names:
            self.register_parameter(name, nn.Parameter(initial[name].detach().clone()))

    def initial_inner(self):
        return {name: getattr(self, name) for name in self.sharing.inner_names}


class MetaModel(nn.Module):
    """A module under a sharing policy, plus one meta-learned inner lr per inner tensor.

    Parameters
    ----------
    module : torch.nn.Module
        The network. It is taken over (shared weights are removed from it): pass a copy
        to keep yours. Normalization layers must not keep running statistics.
    sharing : dict or None, default=None
        The policy (:func:`msr_sklearn.sharing.resolve_policy`): name patterns to
        sharings or to ``"inner"``, ``"outer"``, ``"frozen"``; unmatched parameters
        are inner.
    inner_lr : float or dict of str to float, default=0.1
        Initial value of every inner learning rate (a
        :class:`~msr_sklearn.sharing.Residual`'s ``inner_lr`` sets its residual's), or
        of each inner tensor by name (:attr:`inner_names`; as :func:`auto_inner_lrs`
        returns them).
    learn_inner_lr : bool, default=True
        Whether the outer loop updates the inner learning rates.
    generator : torch.Generator or None, default=None
        The source of the sharings' initial ``U`` and the initial filters.

    Attributes
    ----------
    module : torch.nn.Module
        The network, without its shared weights.
    shared : torch.nn.ModuleDict of SharedWeight
        One entry per shared parameter (keys: the name with dots as dashes).
    roles : dict of str to str
        Every parameter's role: ``"shared"``, ``"inner"``, ``"outer"`` or ``"frozen"``.
    output_weight : str or None
        The last weight (two or more dimensions) a task adapts: the output layer's.
    inner_names : tuple of str
        The inner tensors, in the order of ``inner_lrs``.
    inner_lrs : Parameter of shape (len(inner_names),)

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from msr_sklearn.engine import MetaModel
    >>> from msr_sklearn.sharing import DenseSharing
    >>> net = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> model = MetaModel(net, {"0.weight": DenseSharing(n_filters=4)},
    ...                   generator=torch.Generator().manual_seed(0))
    >>> model.inner_names
    ('0.weight.filters', '0.bias', '2.weight', '2.bias')
    >>> model(torch.randn(3, 5)).shape                      # one task, initial values
    torch.Size([3, 2])
    >>> inner = {n: p.expand(7, *p.shape) for n, p in model.initial_inner().items()}
    >>> model(torch.randn(7, 3, 5), inner).shape            # 7 tasks at once
    torch.Size([7, 3, 2])
    """

    def __init__(self, module, sharing=None, *, inner_lr=0.1, learn_inner_lr=True,
                 generator=None):
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be a torch.nn.Module; got {type(module).__name__}")
        check_vectorizable(module)
        roles = resolve_policy(module, sharing, generator)
        _check_untied(module, roles)
        self.module = module
        self.shared = nn.ModuleDict()
        self.roles = {r.name: r.role for r in roles}
        self.output_weight = output = _last_adapted_weight(module, roles)
        names, lrs = [], []
        for role in roles:
            owner_name, _, attr = role.name.rpartition(".")
            owner = module.get_submodule(owner_name)
            param = getattr(owner, attr)
            if role.role == "shared":
                sharing_ = role.sharing.to(param.device)
                initial = sharing_.initial_inner(param.detach(), generator,
                                                 output=role.name == output)
                entry = SharedWeight(sharing_, initial)
                self.shared[_key(role.name)] = entry
                owner.register_parameter(attr, None)  # built from the sharing at every call
                for inner_name in sharing_.inner_names:
                    names.append(f"{role.name}.{inner_name}")
                    own = getattr(sharing_, "inner_lr", None) if inner_name == "residual" else None
                    lrs.append(inner_lr if own is None else own)
            elif role.role == "inner":
                names.append(role.name)
                lrs.append(inner_lr)
            elif role.role == "frozen":
                param.requires_grad_(False)
        self.inner_names = tuple(names)
        if isinstance(inner_lr, dict):
            unknown, missing = set(inner_lr) - set(names), set(names) - set(inner_lr)
            if unknown or missing:
                raise ValueError(f"inner_lr as a dict needs a rate for every inner tensor "
                                 f"{list(names)}; unknown: {sorted(unknown)}, missing: "
                                 f"{sorted(missing)}")
            lrs = [float(inner_lr[name]) for name in names]
        self.inner_lrs = nn.Parameter(torch.tensor(lrs, dtype=torch.get_default_dtype()),
                                      requires_grad=learn_inner_lr)
        self._plan = sequential_plan(module)

    # ---------------------------------------------------------------- structure
    @property
    def shared_names(self):
        """The shared parameters' names, in the module's order."""
        return [name for name, role in self.roles.items() if role == "shared"]

    def sharing(self, name):
        """The bound sharing of shared parameter ``name``."""
        return self.shared[_key(name)].sharing

    @property
    def adapted_weights(self):
        """The names of the weights (two or more dimensions) a task adapts, shared or
        inner, in the module's order: what ``layer=j`` counts in the inspection tools
        (as :attr:`LearnedSymmetry.weight_names <msr_sklearn.LearnedSymmetry.weight_names>`)."""
        own = dict(self.module.named_parameters())
        dims = {name: len(self.sharing(name).weight_shape) if role == "shared"
                else own[name].dim() for name, role in self.roles.items()
                if role in ("shared", "inner")}
        return [name for name, dim in dims.items() if dim >= 2]

    @property
    def n_adapted_weights(self):
        """The number of :attr:`adapted_weights`."""
        return len(self.adapted_weights)

    def initial_inner(self):
        """The meta-learned initial inner tensors (``v0``, ``R0``, inner parameters), by name."""
        out, own = {}, dict(self.module.named_parameters())
        for name in self.inner_names:
            shared = name.rpartition(".")[0]
            if self.roles.get(shared) == "shared":
                out[name] = getattr(self.shared[_key(shared)], name.rpartition(".")[2])
            else:
                out[name] = own[name]
        return out

    def symmetry_parameters(self):
        """``{shared parameter name: [tensors of its U]}``: what ``learn_symmetry`` acts on."""
        return {name: self.sharing(name).symmetry_parameters() for name in self.shared_names}

    # ------------------------------------------------------------------- calls
    def weights(self, inner, hold=False):
        """Every adapted parameter's value from the inner tensors, by parameter name.

        Parameters
        ----------
        inner : dict of str to Tensor
            Inner tensors by name (with or without a leading task dimension).
        hold : bool, default=False
            Build shared weights with :meth:`Sharing.held
            <msr_sklearn.sharing.Sharing.held>` (``symmetry_gradient="first_order"``).
        """
        params = {}
        for name in self.roles:
            role = self.roles[name]
            if role == "shared":
                sharing = self.sharing(name)
                tensors = [inner[f"{name}.{n}"] for n in sharing.inner_names]
                params[name] = sharing.held(*tensors) if hold else sharing(*tensors)
            elif role == "inner":
                params[name] = inner[name]
        return params

    def forward(self, x, inner=None, *, hold=False, batched=None):
        """The network's outputs.

        Parameters
        ----------
        x : Tensor of shape (n, ...) or, batched, (T, n, ...)
            Inputs of one task, or of ``T`` tasks.
        inner : dict of str to Tensor or None, default=None
            Inner tensors (:attr:`inner_names`); ``None``: the initial ones.
        hold : bool, default=False
            See :meth:`weights`.
        batched : bool or None, default=None
            Whether ``inner`` and ``x`` have a leading task dimension; ``None``: when
            ``inner`` is given.

        Returns
        -------
        Tensor of shape (n, ...) or (T, n, ...)
        """
        batched = inner is not None if batched is None else batched
        params = self.weights(self.initial_inner() if inner is None else inner, hold)
        if batched:
            return task_batched_call(self.module, params, x, self._plan)
        return functional_call(self.module, params, (x,))

    def inner_penalty(self, inner, initial=None):
        """The sharings' inner-loss terms (a residual's pull), per task, or None.

        Parameters
        ----------
        inner : dict of str to Tensor
            Inner tensors by name, with or without a leading task dimension.
        initial : dict of str to Tensor or None, default=None
            The values the pulls act towards; ``None``: the meta-learned ones.
        """
        initial = self.initial_inner() if initial is None else initial
        total = None
        for name in self.shared_names:
            sharing = self.sharing(name)
            keys = {n: f"{name}.{n}" for n in sharing.inner_names}
            term = sharing.penalty({n: inner[k] for n, k in keys.items()},
                                   {n: initial[k] for n, k in keys.items()})
            if term is not None:
                total = term if total is None else total + term
        return total

    def extra_repr(self):
        return f"inner_names={list(self.inner_names)}"


def auto_inner_lrs(model, loss="mse"):
    """Initial inner learning rates at the scale the loss needs (``inner_lr="auto"``).

    The MSE averages over the ``n_out`` outputs, so the support loss's curvature in a
    weight is about ``2 P / n_out`` for unit-variance inputs, ``P`` the output positions
    the weight is used at: a convolution's filter tap is used at every pixel of its
    output maps (``P = H' W'``), whatever the support size. The rate of one
    Newton-sized inner step is then ``n_out / (2 P) = C_out / 2`` (a 32×32 image lifted
    to 24 maps of 30×30: 12, where a fixed 0.1 climbed to only 4.7 in 1,000 meta-steps
    and left the exact-symmetry oracle no better than MAML-Conv). That rate is given to
    the inner tensors of the output layer when it is an ``nn.Conv2d`` whose maps are the
    outputs, under ``loss="mse"``; every other tensor keeps the model's rate. A dense
    weight's curvature depends on how its sharing spreads it, and a learned dense ``U``
    supplies the step size through its own scale (its singular values grow to about 15
    on translation tasks): there the fixed start is kept (``docs/convergence.md``).

    Parameters
    ----------
    model : MetaModel
    loss : {"mse", "cross_entropy"}, default="mse"
        The loss of the inner loop.

    Returns
    -------
    dict of str to float
        The rate of every inner tensor, by name (:attr:`MetaModel.inner_names`).

    Examples
    --------
    >>> from msr_sklearn.engine import MetaModel, auto_inner_lrs
    >>> from msr_sklearn.models import ConvNet, MLP
    >>> net = ConvNet((1, 8, 8), n_outputs=None, channels=(8,))   # 8 maps of 6×6 out
    >>> auto_inner_lrs(MetaModel(net, net.default_sharing("msr")))    # C_out / 2
    {'features.0.weight.filters': 4.0, 'features.0.bias': 4.0}
    >>> mlp = MLP(5, 2)
    >>> rates = auto_inner_lrs(MetaModel(mlp, mlp.default_sharing("msr", n_filters=3)))
    >>> {name: round(rate, 6) for name, rate in rates.items()}       # the model's own
    {'0.weight.filters': 0.1, '0.bias': 0.1}
    """
    rates = dict(zip(model.inner_names, model.inner_lrs.detach().cpu().tolist()))
    output = model.output_weight
    if loss != "mse" or output is None:
        return rates
    owner_name = output.rpartition(".")[0]
    owner = model.module.get_submodule(owner_name)
    if isinstance(owner, nn.Conv2d) and output == f"{owner_name}.weight":
        rate = owner.out_channels / 2.0
        prefix = f"{owner_name}."
        own = getattr(model.sharing(output), "inner_lr", None) \
            if model.roles[output] == "shared" else None
        for name in rates:
            if name.startswith(prefix) and not (name.endswith(".residual") and own is not None):
                rates[name] = rate
    return rates


def _last_adapted_weight(module, roles):
    """The network's output weight: the last one of two or more dimensions a task adapts."""
    own = dict(module.named_parameters())
    adapted = [r.name for r in roles if r.role in ("shared", "inner") and own[r.name].dim() >= 2]
    return adapted[-1] if adapted else None


def _check_untied(module, roles):
    """A shared weight must not also be another parameter (a tied embedding): the
    policy would share one name and leave the other pointing at a stale tensor."""
    by_id = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(p), []).append(name)
    for role in roles:
        if role.role == "shared":
            owner, _, attr = role.name.rpartition(".")
            tied = by_id[id(getattr(module.get_submodule(owner), attr))]
            if len(tied) > 1:
                raise ValueError(f"{role.name} is tied to {[n for n in tied if n != role.name]}; "
                                 "a shared weight cannot also be another parameter: share "
                                 "untied weights, or give it the role 'inner' or 'outer'")
