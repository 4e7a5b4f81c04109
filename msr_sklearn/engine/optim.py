"""The outer-loop optimizer: Adam, with one second moment per sharing tensor.

Adam divides every coordinate's update by the root of its own running squared
gradient, so every entry of ``U`` moves by about the learning rate at each step,
whatever its gradient. Most entries of a sharing carry no signal (a 70 → 68 layer
whose symmetry is a 3-tap convolution has 4,556 × 3 entries outside the band): their
meta-gradient is sampling noise, and Adam turns that noise into steps as large as the
signal's. That noise keeps ``span(U)`` a few degrees off the symmetry
(``docs/convergence.md``). :class:`MetaAdam` normalizes each sharing tensor by one
second moment for the whole tensor instead, so an entry moves in proportion to its
own gradient, as in SGD with momentum; the scale-free step of Adam is kept per
tensor. Every other meta-parameter (``v0``, biases, inner learning rates) gets the
usual Adam. :func:`make_meta_optimizer` builds it.
"""

from __future__ import annotations

import math

import torch

from ..sharing import DenseSharing, Residual

__all__ = ["HIDDEN_SHARING_SIZE", "META_OPTIMIZERS", "MetaAdam", "hidden_sharing_lr_scale",
           "make_meta_optimizer"]

#: the ``meta_optimizer`` names :func:`make_meta_optimizer` accepts
META_OPTIMIZERS = ("msr_adam", "adam")

#: ``"msr_adam"`` moves a hidden layer's sharing of ``n`` entries at
#: ``min(1, sqrt(HIDDEN_SHARING_SIZE / n))`` times the meta-lr: every later layer's
#: features depend on it, and a large one (the 64 -> 64 layer of an MLP with k = 256
#: has 2**20 entries) changes them too fast at full rate (Aug-Digits MLP at meta_lr
#: 1e-2: chance accuracy at the full rate, 88% at an eighth). Small sharings, such as
#: MSR-Conv's factors, keep the full rate, which they need (Aug-Digits MSR-Conv at a
#: tenth: 66% against 73% at a constant meta-lr, 57% against 69% under a decay).
HIDDEN_SHARING_SIZE = 2 ** 14


def hidden_sharing_lr_scale(n_entries):
    """The rate of a hidden layer's sharing tensor of ``n_entries``, relative to the meta-lr.

    Parameters
    ----------
    n_entries : int
        The tensor's number of entries.

    Returns
    -------
    float
        ``min(1, sqrt(HIDDEN_SHARING_SIZE / n_entries))``.

    Examples
    --------
    >>> from msr_sklearn.engine import hidden_sharing_lr_scale
    >>> hidden_sharing_lr_scale(36 * 9), hidden_sharing_lr_scale(256 * 64 * 64)
    (1.0, 0.125)
    """
    return min(1.0, (HIDDEN_SHARING_SIZE / max(int(n_entries), 1)) ** 0.5)


class MetaAdam:
    """Adam whose parameter groups may normalize a whole tensor by one second moment.

    A group with ``second_moment="tensor"`` keeps, per tensor, the running mean ``v``
    of the *mean* squared gradient over the tensor's entries (a scalar) next to the
    usual first moment, and updates ``p -= lr * m_hat / (sqrt(v_hat) + eps)`` with
    Adam's bias corrections; a group with ``second_moment="element"`` (the default) is
    Adam (the same update as :class:`torch.optim.Adam`).

    A group with ``row_sparsity=lam > 0`` (and ``row_dim``) then takes a proximal
    group-lasso step on each of its tensors: every slice along ``row_dim`` (for a
    :class:`~msr_sklearn.sharing.DenseSharing` ``basis`` of shape ``(k, n_weights)``,
    ``row_dim=0``: the row of ``U`` of one weight of the layer) has its norm shrunk by
    ``lr * lam`` (to 0 if it is smaller), which drives the weights that no task needs
    out of ``span(U)``: their share of it fell from 5e-4 to 3e-5 on rank-1 tasks.

    It has the interface the training loop uses of a :class:`torch.optim.Optimizer`
    (``param_groups``, ``state``, ``step``, ``zero_grad``, ``state_dict`` /
    ``load_state_dict`` in torch's layout, so checkpoints hold ``step``, ``exp_avg`` and
    ``exp_avg_sq`` per parameter) without deriving from it: building any torch
    optimizer imports ``torch._dynamo``, about a second of CPU in every process that
    meta-trains.

    Parameters
    ----------
    params : iterable of Tensor or of dict
        Parameters, or parameter groups (dicts with ``"params"`` and any of ``lr``,
        ``betas``, ``eps``, ``second_moment``, ``row_sparsity``, ``row_dim``, and an
        ``lr_scale`` the training loop multiplies the scheduled rate by).
    lr : float, default=1e-3
        Learning rate.
    betas : tuple of float, default=(0.9, 0.999)
        Decay rates of the first and second moments.
    eps : float, default=1e-8
        Added to the root of the second moment.

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.engine import MetaAdam
    >>> signal, noise = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    >>> opt = MetaAdam([{"params": [signal]},
    ...                 {"params": [noise], "second_moment": "tensor"}], lr=0.1)
    >>> signal.grad, noise.grad = torch.tensor([1.0, 1e-3]), torch.tensor([1.0, 1e-3])
    >>> opt.step()
    >>> signal.detach()          # Adam: both entries move by the learning rate
    tensor([-0.1000, -0.1000])
    >>> noise.detach()           # one second moment: the small gradient moves little
    tensor([-0.1414, -0.0001])
    >>> sorted(opt.state_dict()["state"][0])
    ['exp_avg', 'exp_avg_sq', 'step']
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        self.defaults = dict(lr=lr, betas=tuple(betas), eps=eps, second_moment="element",
                             row_sparsity=0.0, row_dim=0)
        self.param_groups, self.state = [], {}
        groups = list(params)
        if not groups:
            raise ValueError("MetaAdam got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, param_group):
        """Add a group (a dict with ``"params"``); unset options take the defaults."""
        group = {**self.defaults, **param_group, "params": list(param_group["params"])}
        if group["second_moment"] not in ("element", "tensor"):
            raise ValueError("second_moment must be 'element' or 'tensor'; got "
                             f"{group['second_moment']!r}")
        if not group["row_sparsity"] >= 0:
            raise ValueError(f"row_sparsity must be >= 0; got {group['row_sparsity']!r}")
        taken = {id(p) for g in self.param_groups for p in g["params"]}
        for p in group["params"]:
            if not isinstance(p, torch.Tensor) or not p.is_leaf:
                what = "a non-leaf tensor" if isinstance(p, torch.Tensor) else type(p).__name__
                raise TypeError(f"MetaAdam optimizes leaf tensors; got {what}")
            if id(p) in taken:
                raise ValueError("a parameter appears in more than one parameter group")
            taken.add(id(p))
        self.param_groups.append(group)

    def zero_grad(self, set_to_none=True):
        """Clear every parameter's gradient (``None``, or zeros)."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter with a gradient; returns ``closure()`` if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._adam_step(group, p, p.grad)
            if group["row_sparsity"] > 0:
                _shrink_rows(group["params"], group["lr"] * group["row_sparsity"],
                             group["row_dim"])
        return loss

    def _adam_step(self, group, p, grad):
        beta1, beta2 = group["betas"]
        state = self.state.get(p)
        if state is None:
            tensorwise = group["second_moment"] == "tensor"
            state = self.state[p] = {
                "step": torch.zeros((), dtype=torch.float32),  # on the CPU: no device sync
                "exp_avg": torch.zeros_like(p),
                "exp_avg_sq": (torch.zeros((), dtype=p.dtype, device=p.device) if tensorwise
                               else torch.zeros_like(p))}
        state["step"] += 1
        t = float(state["step"])
        state["exp_avg"].lerp_(grad, 1 - beta1)
        if state["exp_avg_sq"].dim() == 0:  # one second moment for the whole tensor
            state["exp_avg_sq"].lerp_(grad.square().mean(), 1 - beta2)
        else:
            state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (state["exp_avg_sq"].sqrt() / math.sqrt(1 - beta2 ** t)).add_(group["eps"])
        # a step size beyond the dtype's range (meta_lr=1e38) would not convert: it is
        # clamped to the largest, and the training loop rejects the state that gives
        step_size = max(-group["lr"] / (1 - beta1 ** t), -torch.finfo(p.dtype).max)
        p.addcdiv_(state["exp_avg"], denom, value=step_size)

    def _index(self):
        return {id(p): i for i, p in enumerate(p for g in self.param_groups
                                               for p in g["params"])}

    def state_dict(self):
        """``{"state": {index: {...}}, "param_groups": [...]}``, torch's layout."""
        index = self._index()
        groups = [{**{k: v for k, v in g.items() if k != "params"},
                   "params": [index[id(p)] for p in g["params"]]} for g in self.param_groups]
        state = {index[id(p)]: dict(s) for p, s in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore a :meth:`state_dict` (tensors move to their parameter's device).

        Checked before anything changes: a state for a parameter the optimizer does not
        have, moments of another shape than their parameter's (one second moment per
        tensor where the group keeps one), a negative or non-finite value are a
        ``ValueError``.
        """
        groups = state_dict["param_groups"]
        if [len(g["params"]) for g in groups] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError("the state dict's parameter groups do not match the optimizer's")
        params = [(p, g) for g in self.param_groups for p in g["params"]]
        state = {}
        for i, saved in state_dict["state"].items():
            if not 0 <= int(i) < len(params) or set(saved) != {"step", "exp_avg", "exp_avg_sq"}:
                raise ValueError(f"the state dict has a state {sorted(saved)} for parameter "
                                 f"{i}; the optimizer has {len(params)} parameters")
            p, group = params[int(i)]
            moments = {"step": torch.as_tensor(saved["step"], dtype=torch.float32).detach(),
                       "exp_avg": torch.as_tensor(saved["exp_avg"]).to(p.device, p.dtype),
                       "exp_avg_sq": torch.as_tensor(saved["exp_avg_sq"]).to(p.device, p.dtype)}
            second = () if group["second_moment"] == "tensor" else p.shape
            if (moments["step"].shape != () or moments["exp_avg"].shape != p.shape
                    or moments["exp_avg_sq"].shape != second):
                raise ValueError(f"the state of parameter {i} (shape {tuple(p.shape)}) has "
                                 f"moments of shapes {tuple(moments['exp_avg'].shape)} and "
                                 f"{tuple(moments['exp_avg_sq'].shape)}")
            if not all(torch.isfinite(t).all() for t in moments.values()) or (
                    moments["step"] < 0 or (moments["exp_avg_sq"] < 0).any()):
                raise ValueError(f"the state of parameter {i} holds NaN, infinite or "
                                 "negative values")
            state[p] = {k: v.clone() for k, v in moments.items()}
        for group, saved in zip(self.param_groups, groups):
            group.update({k: v for k, v in saved.items() if k != "params"})
        self.state = state

    def __repr__(self):
        return (f"MetaAdam({len(self.param_groups)} group(s), "
                f"{sum(len(g['params']) for g in self.param_groups)} parameter(s))")


def _unwrapped(sharing):
    """The sharing inside a residual (whose ``U`` is that sharing's)."""
    return getattr(sharing, "sharing", sharing) if isinstance(sharing, Residual) else sharing


@torch.no_grad()
def _shrink_rows(params, threshold, dim):
    """The proximal step of ``threshold * sum_rows ||row||``: each row's norm shrinks."""
    for p in params:
        # the square-sum-sqrt form: torch's norm over a non-contiguous dim takes a slow
        # path (430 us against 7 us for a (3, 4760) basis, a third of a rank-1 meta-step)
        norms = p.square().sum(dim, keepdim=True).sqrt_()
        p.mul_((1 - threshold / norms.clamp_min_(1e-30)).clamp_min_(0))


def make_meta_optimizer(model, meta_lr=1e-3, meta_optimizer="adam", sharing_sparsity=0.0):
    """The outer-loop optimizer over every learned meta-parameter (U, v0, biases, inner lrs).

    Parameters with ``requires_grad=False`` (fixed inner learning rates, a frozen
    ``U``) are left out.

    Parameters
    ----------
    model : MetaModel
        The model whose parameters the optimizer updates.
    meta_lr : float, default=1e-3
        The outer (meta) learning rate.
    meta_optimizer : {"msr_adam", "adam"}, default="adam"
        ``"adam"``: Adam on every parameter (the paper's code). ``"msr_adam"``: Adam
        with one second moment per sharing tensor (:class:`msr_sklearn.engine.MetaAdam`),
        so the entries of ``U`` that carry no signal move in proportion to their
        gradient instead of by the full learning rate, and a large sharing of a hidden
        layer at a reduced rate (:func:`~msr_sklearn.engine.hidden_sharing_lr_scale`:
        every later layer's features depend on it); the other meta-parameters get
        plain Adam.
    sharing_sparsity : float >= 0, default=0.0
        An Occam prior on the weights a learned dense ``U``
        (:class:`~msr_sklearn.sharing.DenseSharing`) uses: after every step, the row of ``U``
        of each weight of the layer is shrunk towards 0 by ``sharing_sparsity`` times
        the current learning rate (a proximal group-lasso step, ``row_sparsity`` of
        :class:`MetaAdam`), which drives the weights no task needs out of ``span(U)``.

    Returns
    -------
    MetaAdam
        With ``"adam"`` and no sparsity, one group of plain Adam.

    Examples
    --------
    >>> from msr_sklearn.engine import MetaModel, make_meta_optimizer
    >>> from msr_sklearn.models import MLP
    >>> net = MLP(5, 2)
    >>> model = MetaModel(net, net.default_sharing("msr", n_filters=4))
    >>> optimizer = make_meta_optimizer(model, meta_lr=1e-2, meta_optimizer="msr_adam")
    >>> [(len(g["params"]), g["second_moment"]) for g in optimizer.param_groups]
    [(1, 'tensor'), (3, 'element')]
    >>> net = MLP(64, 5, hidden_layer_sizes=(64,))
    >>> mlp = MetaModel(net, net.default_sharing("msr", n_filters=(256, 40)))
    >>> [g.get("lr_scale", 1.0) for g in make_meta_optimizer(mlp, meta_optimizer="msr_adam")
    ...  .param_groups]                  # hidden sharing (2**20 entries), output, the rest
    [0.125, 1.0, 1.0]
    >>> [len(g["params"]) for g in make_meta_optimizer(model).param_groups]  # plain Adam
    [4]
    >>> [g["row_sparsity"] for g in make_meta_optimizer(model, sharing_sparsity=0.15)
    ...  .param_groups]                  # the prior acts on the dense U only
    [0.15, 0.0]
    """
    if meta_optimizer not in META_OPTIMIZERS:
        raise ValueError(f"meta_optimizer must be one of {META_OPTIMIZERS}; got "
                         f"{meta_optimizer!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not sharing_sparsity >= 0:
        raise ValueError(f"sharing_sparsity must be >= 0; got {sharing_sparsity!r}")
    groups = [{"params": params}]
    if meta_optimizer == "msr_adam" or sharing_sparsity > 0:
        learned = {id(p) for p in params}
        by_weight = model.symmetry_parameters()
        sharings = [p for ps in by_weight.values() for p in ps if id(p) in learned]
        output = {id(p) for p in by_weight.get(model.output_weight, [])}
        dense = {id(_unwrapped(model.sharing(name)).basis) for name in by_weight
                 if isinstance(_unwrapped(model.sharing(name)), DenseSharing)}
        scaled = meta_optimizer == "msr_adam"
        groups = [{"params": [p], "second_moment": "tensor" if scaled else "element",
                   "lr_scale": 1.0 if id(p) in output or not scaled
                   else hidden_sharing_lr_scale(p.numel()),
                   "row_sparsity": float(sharing_sparsity) if id(p) in dense else 0.0}
                  for p in sharings]
        taken = {id(p) for p in sharings}
        groups.append({"params": [p for p in params if id(p) not in taken]})
        groups = [g for g in groups if g["params"]]
    return MetaAdam(groups or params, lr=meta_lr)
