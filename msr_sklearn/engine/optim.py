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

__all__ = ["DEEP_TRUST_RATIO", "HIDDEN_SHARING_SIZE", "META_OPTIMIZERS", "MetaAdam",
           "ONE_LAYER_DENSE_LR_SCALE", "PRUNING_QUANTILES",
           "hidden_sharing_lr_scale", "make_meta_optimizer", "prune_rows"]

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
    Adam's bias corrections; ``second_moment="row"`` keeps one such scalar per slice
    along the first dimension (for a :class:`~msr_sklearn.sharing.DenseSharing` ``basis`` of
    shape ``(k, n_weights)``, one per column of ``U``: a direction of the symmetry that
    carries little signal moves as fast as a strong one); a group with
    ``second_moment="element"`` (the default) is Adam (the same update as
    :class:`torch.optim.Adam`).

    A group with ``trust_ratio=r > 0`` bounds the norm of each tensor's step by
    ``r * ||p||`` (a trust region: the relative change per step is at most ``r``,
    whatever the tensor's size).

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
        ``betas``, ``eps``, ``second_moment``, ``row_sparsity``, ``row_dim``,
        ``trust_ratio``, and an ``lr_scale`` the training loop multiplies the scheduled
        rate by).
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
                             row_sparsity=0.0, row_dim=0, trust_ratio=0.0)
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
        if group["second_moment"] not in ("element", "tensor", "row"):
            raise ValueError("second_moment must be 'element', 'tensor' or 'row'; got "
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
            state = self.state[p] = {
                "step": torch.zeros((), dtype=torch.float32),  # on the CPU: no device sync
                "exp_avg": torch.zeros_like(p),
                "exp_avg_sq": torch.zeros(_second_moment_shape(group["second_moment"], p),
                                          dtype=p.dtype, device=p.device)}
        state["step"] += 1
        t = float(state["step"])
        state["exp_avg"].lerp_(grad, 1 - beta1)
        if state["exp_avg_sq"].dim() == 0:  # one second moment for the whole tensor
            state["exp_avg_sq"].lerp_(grad.square().mean(), 1 - beta2)
        elif state["exp_avg_sq"].shape != p.shape:  # one per slice along dim 0
            state["exp_avg_sq"].lerp_(grad.square().mean(tuple(range(1, p.dim())),
                                                         keepdim=True), 1 - beta2)
        else:
            state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (state["exp_avg_sq"].sqrt() / math.sqrt(1 - beta2 ** t)).add_(group["eps"])
        # a step size beyond the dtype's range (meta_lr=1e38) would not convert: it is
        # clamped to the largest, and the training loop rejects the state that gives
        step_size = max(-group["lr"] / (1 - beta1 ** t), -torch.finfo(p.dtype).max)
        if group["trust_ratio"] > 0:  # a trust region: ||step|| <= trust_ratio * ||p||
            step = state["exp_avg"] / denom * step_size
            bound = group["trust_ratio"] * p.norm()
            p.add_(step * (bound / step.norm().clamp_min(1e-30)).clamp_max(1.0))
            return
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
            second = _second_moment_shape(group["second_moment"], p)
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


def _second_moment_shape(kind, p):
    """One second moment per tensor (``"tensor"``), per slice along dim 0 (``"row"``) or
    per entry (``"element"``)."""
    if kind == "tensor" or p.dim() == 0:
        return ()
    return tuple(p.shape) if kind == "element" else (p.shape[0],) + (1,) * (p.dim() - 1)


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


#: ``"msr_adam"`` bounds each sharing tensor's step of a network of several layers to
#: ``DEEP_TRUST_RATIO * ||p||`` (a trust region): an Adam step normalized per
#: tensor moves a sharing of ``n`` entries by about ``lr * sqrt(n)``, which for the
#: 160 x 1280 dense head of the D4-shaped Aug-Digits net is a third of its norm per step
#: at meta_lr 1e-2; with 7 steps of warm-up that net died on every seed (loss spikes to
#: 100s, then ln 5), within the bound on none (docs/convergence.md). A one-layer
#: network keeps the unbounded step: its U grows from norm 1 to about 15 in the first
#: 100 steps, and that scale is its inner step size.
DEEP_TRUST_RATIO = 0.01

#: ``"msr_adam"`` moves the dense ``U`` of a one-layer network at this multiple of the
#: meta-lr: a weak direction of the symmetry leaves its plateau sooner (zoo, 2 seeds:
#: rank-5 translation 5.5 -> 3.8 degrees, S10 DeepSets with a weak mean 3.2 -> 1.7, query
#: MSE no worse), and the decaying schedule still averages out the noise
ONE_LAYER_DENSE_LR_SCALE = 2.0

#: the row-norm quantiles :func:`prune_rows` tries, in this order: half of the rows first
#: (a direction spread over many weights goes whole or not at all), then ever finer
#: steps (a symmetry that is local in the weights uses few of them)
PRUNING_QUANTILES = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.925, 0.95, 0.96, 0.97, 0.98, 0.99,
                     0.995, 0.998, 0.999)


@torch.no_grad()
def prune_rows(param, loss_fn, quantiles=PRUNING_QUANTILES, dim=0, state=None, tol=1e-3):
    """Zero the rows of a sharing that the loss does not need: a held-out-checked Occam step.

    The rows of ``param`` are its slices across ``dim`` (for a
    :class:`~msr_sklearn.sharing.DenseSharing` ``basis`` of shape ``(k, n_weights)`` and
    ``dim=0``, the row of ``U`` of each weight of the layer). For each quantile ``q``,
    in increasing order, the rows whose norm is at most the ``q``-quantile of the row
    norms are set to 0 and ``loss_fn()`` (a query loss on held-out tasks) is evaluated;
    the largest ``q`` before the first whose loss is above the unpruned one's (by more than
    the relative ``tol``) is kept.
    Half of the rows at the first try: a direction spread over many weights is either
    kept whole or removed whole, never whittled away by pruning steps too small to
    measure; finer steps follow once half could go. So rows are only removed when removing them does not raise the loss:
    unlike a proximal group-lasso step of a fixed strength,
    which removes a direction of the symmetry that is spread over many weights and
    carries little signal (the mean term of a DeepSets layer, ``docs/convergence.md``),
    this removes only weights no task needs. The pruned rows' first moments in ``state``
    (an optimizer's state of ``param``) are zeroed too, so that momentum does not bring
    them back at once.

    Parameters
    ----------
    param : Tensor
        The sharing tensor, pruned in place.
    loss_fn : callable
        ``loss_fn()`` returns the (scalar) loss of the model with ``param`` as it is.
    quantiles : sequence of float in (0, 1), default=PRUNING_QUANTILES
        The row-norm quantiles tried, increasing; trying stops at the first rejected.
    dim : int, default=0
        The dimension a row's norm is taken over.
    state : dict or None, default=None
        The optimizer's state of ``param`` (its ``exp_avg`` is masked).
    tol : float >= 0, default=1e-3
        The relative rise of the loss that still counts as not above it: removing rows
        that hold only noise changes it by less (rounding, and noise that happens to fit
        the held-out tasks), removing a real direction by far more (a DeepSets mean
        term with 9% of the signal: +48%).

    Returns
    -------
    float
        The fraction of rows pruned (0 when none could be).

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.engine.optim import prune_rows
    >>> basis = torch.tensor([[1.0, 0.01, 2.0, 0.02], [1.0, -0.01, 0.0, 0.01]])
    >>> target = torch.tensor([[1.0, 0.0, 2.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    >>> prune_rows(basis, lambda: float((basis - target).square().sum()))
    0.5
    >>> basis
    tensor([[1., 0., 2., 0.],
            [1., 0., 0., 0.]])
    """
    keep = param.detach().clone()
    norms = keep.square().sum(dim, keepdim=True).sqrt_()
    base, chosen = loss_fn(), None
    for q in quantiles:
        mask = norms > torch.quantile(norms.flatten(), q)
        if chosen is not None and torch.equal(mask, chosen):
            continue
        param.copy_(torch.where(mask, keep, 0.0))
        if loss_fn() > base + tol * abs(base):
            break
        chosen = mask
    param.copy_(keep if chosen is None else torch.where(chosen, keep, 0.0))
    if chosen is None:
        return 0.0
    if state is not None and "exp_avg" in state:
        state["exp_avg"].masked_fill_(~chosen, 0.0)
    return 1.0 - float(chosen.float().mean())


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
        ``"adam"``: Adam on every parameter (the paper's code). ``"msr_adam"``, for a
        network of one layer: Adam with one second moment per sharing tensor
        (:class:`msr_sklearn.engine.MetaAdam`; per column for a dense ``U``), so the
        entries of ``U`` that carry no signal move in proportion to their gradient
        instead of by the full learning rate, and a dense ``U`` at
        :data:`ONE_LAYER_DENSE_LR_SCALE` times the rate; for a network of several
        layers: Adam with every sharing's step bounded by :data:`DEEP_TRUST_RATIO`
        times its norm (a trust region), and a large sharing of a hidden layer at a
        reduced rate (:func:`~msr_sklearn.engine.hidden_sharing_lr_scale`: every later
        layer's features depend on it). The other meta-parameters get plain Adam.
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
    >>> [(len(g["params"]), g["second_moment"], g.get("lr_scale", 1.0))
    ...  for g in optimizer.param_groups]
    [(1, 'row', 2.0), (3, 'element', 1.0)]
    >>> net = MLP(64, 5, hidden_layer_sizes=(64,))
    >>> mlp = MetaModel(net, net.default_sharing("msr", n_filters=(256, 40)))
    >>> [g.get("lr_scale", 1.0) for g in make_meta_optimizer(mlp, meta_optimizer="msr_adam")
    ...  .param_groups]                  # hidden sharing (2**20 entries), output, the rest
    [0.125, 1.0, 1.0]
    >>> [g["trust_ratio"] for g in make_meta_optimizer(mlp, meta_optimizer="msr_adam")
    ...  .param_groups]                  # a deep network's sharings: a trust region
    [0.01, 0.01, 0.0]
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
        deep = model.n_adapted_weights > 1
        trust = DEEP_TRUST_RATIO if scaled and deep else 0.0  # deep: bounded
        # one layer: one second moment per tensor, and per column of a dense U (a row of
        # its basis), so a weak direction of the symmetry is learned as fast as a strong
        # one; a deep network: Adam's own, within the trust region (Aug-Digits: +1 to +8
        # points over one per tensor, docs/convergence.md)
        groups = [{"params": [p], "second_moment": ("element" if not scaled or deep else
                                                    "row" if id(p) in dense else "tensor"),
                   "lr_scale": (1.0 if not scaled else ONE_LAYER_DENSE_LR_SCALE
                                if not deep and id(p) in dense else 1.0
                                if id(p) in output else hidden_sharing_lr_scale(p.numel())),
                   "row_sparsity": float(sharing_sparsity) if id(p) in dense else 0.0,
                   "trust_ratio": trust}
                  for p in sharings]
        taken = {id(p) for p in sharings}
        groups.append({"params": [p for p in params if id(p) not in taken]})
        groups = [g for g in groups if g["params"]]
    return MetaAdam(groups or params, lr=meta_lr)
