"""Equivariance diagnostics and the symmetry report.

:func:`equivariance_error` measures how far a model is from commuting with a group;
:func:`symmetry_report` scores candidate generators against a learned sharing and
compares the group they generate with it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from sklearn.utils import check_random_state
from torch.func import functional_call

from ..groups._inputs import _check_positive
from .candidates import _candidates_for, _describe
from ..groups.finite_group import MAX_ORDER, FiniteGroup
from ..groups.subspaces import _orth, compare_subspaces


# --------------------------------------------------------------------- equivariance
def _module_device_dtype(module):
    for t in list(module.parameters()) + list(module.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def _as_functions(model, layer, n_draws, rng, input_shape):
    """The torch functions ``(N, d_in) -> (N, d_out)`` to test, with device and dtype."""
    from ._inputs import _is_model, _is_symmetry

    if _is_symmetry(model) or _is_model(model):
        return _random_filter_functions(model, layer, n_draws, rng, input_shape)
    if hasattr(model, "network_"):
        model = model.network_
    if isinstance(model, torch.nn.Module):
        device, dtype = _module_device_dtype(model)
        if layer == "random":
            functions = [_with_random_sharings(model, rng, device, dtype)
                         for _ in range(n_draws)]
        else:
            functions = [model]
        if input_shape is not None:
            functions = [_on_flat_vectors(f, input_shape) for f in functions]
        return functions, device, dtype
    if callable(model):
        functions = [model if input_shape is None else _on_flat_vectors(model, input_shape)]
        return functions, torch.device("cpu"), torch.get_default_dtype()
    raise TypeError(f"cannot test the equivariance of a {type(model).__name__}: pass a torch "
                    f"module, a LearnedSymmetry, a MetaModel or a fitted estimator with "
                    f"network_")


def _on_flat_vectors(f, shape, what="the model"):
    """``f`` on flat vectors: each row reshaped to ``shape`` (channel-major, row-major
    pixels, as the groups number them), each output flattened the same way."""
    shape = tuple(int(s) for s in np.ravel(shape))
    size = math.prod(shape)

    def flat(x):
        if x.shape[1] != size:
            raise ValueError(f"{what} reads inputs of shape {shape} ({size} values); the group "
                             f"acts on {x.shape[1]} inputs")
        return f(x.reshape(x.shape[0], *shape)).reshape(x.shape[0], -1)

    return flat


def _with_random_sharings(module, rng, device, dtype):
    """``module`` with random filters ``v`` in every weight that carries a sharing
    (:func:`~msr_sklearn.sharing.attach_sharing`), a residual as it is, those modules'
    biases at 0."""
    from torch.nn.utils import parametrize

    from ..sharing import Sharing

    params = {}
    for prefix, owner in module.named_modules():
        if not parametrize.is_parametrized(owner):
            continue
        dot = f"{prefix}." if prefix else ""
        for attr, chain in owner.parametrizations.items():
            if len(chain) != 1 or not isinstance(chain[0], Sharing):
                continue
            sharing = chain[0]
            # the filters are the first inner tensor (original0 when there are more)
            key = f"{dot}parametrizations.{attr}.original" + (
                "0" if len(sharing.inner_names) > 1 else "")
            params[key] = torch.as_tensor(rng.standard_normal(sharing.n_filters), dtype=dtype,
                                          device=device)
            bias = getattr(owner, "bias", None)
            if isinstance(bias, torch.Tensor):
                params[f"{dot}bias"] = torch.zeros_like(bias)
    if not params:
        raise ValueError(f"layer='random' draws the filters of the weights that carry a "
                         f"sharing, and the {type(module).__name__} has none (attach one with "
                         f"msr_sklearn.sharing.attach_sharing, or use export_layer)")
    return lambda x: functional_call(module, params, (x,))


def _layer_input_shape(found, network_input_shape, device, dtype):
    """The shape of one input of a layer's owning module (without the batch axis), from
    one call of the network on zeros of ``network_input_shape``, through a forward hook."""
    model, name = found.model, found.name
    owner_name = name.rpartition(".")[0]
    owner = model.module.get_submodule(owner_name)
    seen = []

    def hook(module, args, kwargs):
        if not seen:
            inputs = list(args) + list(kwargs.values())
            seen.append(next(t for t in inputs if isinstance(t, torch.Tensor)).shape[1:])

    handle = owner.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():  # two samples: a batch norm needs more than one
            model(torch.zeros(2, *network_input_shape, device=device, dtype=dtype))
    finally:
        handle.remove()
    if not seen:
        raise ValueError(f"the network never calls {owner_name or 'itself'}, the module that "
                         f"owns {found.where}")
    return tuple(seen[0])


def _random_filter_functions(source, layer, n_draws, rng, input_shape):
    """The layer function of a LearnedSymmetry's or MetaModel's adapted weight: its owning
    module called with a random weight ``U v`` (``v ~ N(0, I)``, a residual layer's
    ``R0`` added), its bias at 0, on flat inputs of the layer's input shape."""
    from ._inputs import _layer_of, _network_input_shape

    found = _layer_of(source, layer)
    model = found.model
    device, dtype = _module_device_dtype(model)
    in_shape = _layer_input_shape(found, _network_input_shape(source, input_shape), device,
                                  dtype)
    owner_name, _, attr = found.name.rpartition(".")
    owner = model.module.get_submodule(owner_name)
    prefix = f"{owner_name}." if owner_name else ""
    with torch.no_grad():
        initial = model.initial_inner()
        params = {k[len(prefix):]: v.detach() for k, v in model.weights(initial).items()
                  if k.startswith(prefix)}
    bias = params.get("bias", getattr(owner, "bias", None))
    if isinstance(bias, torch.Tensor):
        params["bias"] = torch.zeros_like(bias)
    sharing = found.sharing
    functions = []
    for _ in range(n_draws):
        with torch.no_grad():
            if sharing is None:  # a weight adapted as is: any weight
                weight = torch.as_tensor(rng.standard_normal(found.weight_shape), dtype=dtype,
                                         device=device)
            else:
                v = torch.as_tensor(rng.standard_normal(sharing.n_filters), dtype=dtype,
                                    device=device)
                rest = [initial[f"{found.name}.{n}"].detach() for n in sharing.inner_names[1:]]
                weight = sharing(v, *rest)
        call = {**params, attr: weight}
        functions.append(lambda x, call=call: functional_call(owner, call, (x,)))
    return [_on_flat_vectors(f, in_shape, found.where) for f in functions], device, dtype


def _apply(side, x):
    """``rho x`` for a batch of row vectors ``x`` (torch); side = (perm, matrix)."""
    perm, matrix = side
    if perm is not None:
        return x[..., torch.as_tensor(perm, device=x.device)]
    return x @ torch.as_tensor(matrix, dtype=x.dtype, device=x.device).T


def equivariance_error(model, group, n_samples=32, elements="all", layer=0, n_draws=4,
                       random_state=None, max_order=MAX_ORDER, input_shape=None):
    """Relative equivariance error ``max_g ||f(rho_in(g) x) - rho_out(g) f(x)|| / ||f(x)||``.

    Norms are Frobenius norms over ``n_samples`` random inputs ``x ~ N(0, I)``; the
    maximum is over every group element (or only the generators). Inputs follow the
    model's device and dtype. The groups act on flat vectors: images and feature maps
    are flattened channel-major with row-major pixels (``tensor.reshape(n, -1)``).

    Parameters
    ----------
    model : torch.nn.Module, LearnedSymmetry, MetaModel, fitted estimator or callable
        A module or callable mapping ``(n, n_in) -> (n, n_out)`` (with ``input_shape``:
        ``(n, *input_shape)`` to anything with ``n_out`` values per sample), tested as a
        whole; an estimator exposing its adapted network as ``network_``; or a layer of a
        :class:`~msr_sklearn.LearnedSymmetry` or :class:`~msr_sklearn.engine.MetaModel`:
        its adapted weight ``layer`` with ``n_draws`` random filter values ``v`` (the
        random weight ``W = U v`` of its sharing, plus the meta-learned ``R0`` of a
        residual; any weight for a weight adapted as is), the bias of its module at 0.
        That module (an ``nn.Linear``, an ``nn.Conv2d`` with its own padding and
        stride, an ``nn.Conv1d``, a built-in layer such as
        :class:`~msr_sklearn.models.LocallyConnected1d`...) is called alone, through
        :func:`torch.func.functional_call`, on inputs of the shape it reads in the
        network (found by running the network once).
    group : FiniteGroup
        The group; it must act on the function's ``n_in`` inputs and ``n_out`` outputs.
    n_samples : int, default=32
        The number of random inputs.
    elements : {"all", "generators"}, default="all"
        Test every element (breadth-first closure, at most ``max_order``) or only the
        generators (for large groups).
    layer : int, str or "random", default=0
        The layer of a LearnedSymmetry or MetaModel: an index into its adapted weights
        (:attr:`~msr_sklearn.LearnedSymmetry.weight_names`) or a weight's name. For a
        torch module, ``"random"`` draws random filter values for every weight that
        carries a sharing (:func:`~msr_sklearn.sharing.attach_sharing`,
        :func:`export_layer`) instead of its own (a residual's ``R`` kept, those modules'
        biases at 0); any other value is ignored.
    n_draws : int, default=4
        Random filter draws (LearnedSymmetry, MetaModel or ``layer="random"``); the worst
        is kept.
    random_state : int, RandomState or None, default=None
        Seeds the inputs and the filter draws.
    max_order : int, default=MAX_ORDER
        With ``elements="all"``, raise ``ValueError`` rather than enumerate a group
        with more elements.
    input_shape : tuple of int or None, default=None
        One sample's shape. For a torch module or callable: the flat inputs are reshaped
        to ``(n, *input_shape)`` and the outputs flattened (e.g. ``(C, H, W)`` for an
        ``nn.Conv2d``); ``None`` passes flat vectors as they are. For a MetaModel: what
        its network reads (needed only when the module has no ``input_shape`` or
        ``n_features`` attribute); a LearnedSymmetry knows its own.

    Returns
    -------
    float
        The worst relative error (``inf`` when ``f(x) = 0`` but ``f(g x) != 0``).

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.groups import cyclic_group
    >>> from msr_sklearn.inspection import equivariance_error, export_layer
    >>> g = cyclic_group(6)
    >>> layer = export_layer(g.sharing_basis(), (6, 6), weight=torch.randn(6, 6))
    >>> equivariance_error(layer, g, random_state=0) < 1e-6
    True
    >>> equivariance_error(torch.nn.Linear(6, 6), g, random_state=0) > 0.1
    True

    A convolution reads images: give their shape.

    >>> from msr_sklearn.groups import grid_group
    >>> from msr_sklearn.sharing import exact_lifting_sharing
    >>> lift = exact_lifting_sharing("c4")                # filters (4, 1, 3, 3)
    >>> conv = export_layer(lift, weight=lift(torch.randn(lift.n_filters)))
    >>> rotations = grid_group(7, "c4", out_rep="regular", out_size=5)
    >>> equivariance_error(conv, rotations, input_shape=(1, 7, 7), random_state=0) < 1e-5
    True
    """
    if not isinstance(group, FiniteGroup):
        raise TypeError(f"group must be a FiniteGroup; got {type(group).__name__}")
    _check_positive("n_samples", n_samples)
    _check_positive("n_draws", n_draws)
    if elements == "all":
        chosen = group._element_list(max_order)
    elif elements == "generators":
        chosen = group._gens
    else:
        raise ValueError(f"elements must be 'all' or 'generators'; got {elements!r}")
    rng = check_random_state(random_state)
    functions, device, dtype = _as_functions(model, layer, n_draws, rng, input_shape)
    x = torch.as_tensor(rng.standard_normal((n_samples, group.n_in)), dtype=dtype,
                        device=device)
    chunk = max(1, 2 ** 20 // (n_samples * max(group.n_in, group.n_out)))
    worst = 0.0
    with torch.no_grad():
        for f in functions:
            fx = f(x)
            if fx.shape != (n_samples, group.n_out):
                raise ValueError(f"the model maps ({n_samples}, {group.n_in}) inputs to "
                                 f"{tuple(fx.shape)}; the group acts on {group.n_out} outputs")
            scale = fx.norm()
            for start in range(0, len(chosen), chunk):
                part = chosen[start:start + chunk]
                gx = torch.cat([_apply(e[0], x) for e in part])
                f_gx = f(gx).reshape(len(part), n_samples, group.n_out)
                g_fx = torch.stack([_apply(e[1], fx) for e in part])
                err = (f_gx - g_fx).flatten(1).norm(dim=1)
                top = float(err.max())
                if top > 0:
                    worst = max(worst, top / float(scale) if scale > 0 else math.inf)
    return worst


# --------------------------------------------------------------------- report
def symmetry_report(symmetry, candidates=None, layer=0, tol=0.3, weight_shape=None,
                    input_shape=None, kernel_size=None):
    """Which candidate symmetries a learned sharing has, and the group they generate.

    Each candidate generator ``g`` gets the score ``||(rho_out(g) ⊗ rho_in(g)^{-T} - I)
    orth(U)||_F / sqrt(k)``: 0 when every weight of ``span(U)`` is equivariant under
    ``g``, up to ``sqrt(2)`` for a random subspace. Generators scoring at most ``tol``
    pass; the group they generate is compared with ``U`` through the principal angles
    to its exact sharing ``U^G``. Meta-learned sharings score about 0.03-0.2 on their
    true symmetries and above 1 on false ones, hence the default ``tol``.

    Parameters
    ----------
    symmetry : LearnedSymmetry, MetaModel, Sharing or array-like
        A layer of a :class:`~msr_sklearn.LearnedSymmetry` or a
        :class:`~msr_sklearn.engine.MetaModel` (see ``layer``), a bound
        :class:`~msr_sklearn.sharing.Sharing`, or an array ``U`` of shape
        ``(n_weights, k)``, which needs ``weight_shape``. A weight adapted as is has the
        identity ``U``.
    candidates : FiniteGroup, sequence of FiniteGroup or None
        The candidate generators (all generators of the given groups), acting on the
        weights as ``(n_out, n_in)`` (a convolution's as ``(C_out, C_in * kh * kw)``).
        ``None`` uses :func:`default_candidates`: rotations and flips of the grid with
        the copy permutations found from ``U`` for convolutions and dense layers on
        images, :func:`candidate_generators` for other square layers.
    layer : int or str, default=0
        The layer of a LearnedSymmetry or MetaModel: an index into its adapted weights
        (:attr:`~msr_sklearn.LearnedSymmetry.weight_names`) or a weight's name.
    tol : float, default=0.3
        Pass threshold for the score (in ``[0, 2]``).
    weight_shape : tuple or None, default=None
        Required for an array ``U`` (whose rows are the row-major weights):
        ``(n_out, n_in)``, or ``(C_out, C_in, kh, kw)`` for a convolution; ignored
        otherwise (the sharing knows its shape).
    input_shape : tuple (C, H, W) or None, default=None
        The images a dense layer reads, for the default candidates (see
        :func:`default_candidates`; the first layer of a network that reads images knows
        its own).
    kernel_size : int or None, default=None
        The default candidates' output maps of a dense layer on images have side
        ``H - kernel_size + 1`` (see :func:`default_candidates`).

    Returns
    -------
    pandas.DataFrame
        Indexed by generator name with columns ``score`` and ``passed``. The group
        summary is in ``report.attrs``: ``"group"`` (the :class:`FiniteGroup` of the
        passing generators, or the trivial group) and ``"summary"``, a dict with
        ``name`` (``"C4"``, ``"D4"``, ``"S6"``... when the group is recognized),
        ``generators`` (names), ``order``, ``dim_group`` (``dim U^G``), ``dim``
        (``k``), ``containment_angle``, ``excess``, ``chordal_distance`` (radians, see
        :func:`compare_subspaces`) and ``tol``. For a residual layer (soft symmetry,
        ``W = reshape(U v) + R``; the scores are of ``U``) also ``residual_lr`` (the
        learned inner rate of ``R``: 0 is the strict symmetry; None for a bare layer),
        ``residual_norm`` (``||R0||_F``) and ``residual_relative_size``
        (``||R0||_F / ||reshape(U v0) + R0||_F``, the part of the meta-learned initial
        weight that breaks the symmetry).

    Examples
    --------
    >>> from msr_sklearn.groups import symmetric_group
    >>> from msr_sklearn.inspection import symmetry_report
    >>> U = symmetric_group(6).sharing_basis()           # the exact S_6 sharing
    >>> report = symmetry_report(U, weight_shape=(6, 6))
    >>> report["passed"].tolist()
    [True, True, True]
    >>> report.attrs["summary"]["order"]                  # 6! = 720: all of S_6
    720

    An MSR-Conv sharing needs no candidates: the rotations of its filter grid are
    tried with the permutation of its copies found from ``U``.

    >>> from msr_sklearn.sharing import exact_lifting_sharing
    >>> report = symmetry_report(exact_lifting_sharing("c4"))
    >>> report["passed"].tolist(), report.attrs["summary"]["name"]
    ([True, False], 'C4')
    """
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0; got {tol!r}")
    info = _describe(symmetry, layer, weight_shape, input_shape, kernel_size)
    info = info._replace(U=_orth(info.U))  # once: every step below needs it orthonormal
    candidates = _candidates_for(info) if candidates is None else _as_candidates(candidates)
    if candidates.weight_shape != info.matrix_shape:
        raise ValueError(f"the candidates act on weights of shape {candidates.weight_shape}; "
                         f"{info.describe_shape()}")
    scores = candidates.generator_residuals(info.U)
    report = pd.DataFrame({"score": scores, "passed": scores <= tol},
                          index=pd.Index(candidates.names, name="generator"))
    passing = [n for n, ok in zip(candidates.names, report["passed"]) if ok]
    group = candidates.subgroup(passing)
    group.name = _group_name(group, passing)
    basis = group.sharing_basis() if group.is_permutation or group.n_in * group.n_out <= 4096 \
        else None
    summary = {"name": group.name, "generators": tuple(passing), "order": group.order,
               "dim_group": None if basis is None else basis.shape[1],
               "dim": info.U.shape[1], "tol": float(tol)}
    if basis is not None:
        comparison = compare_subspaces(info.U, basis)
        summary.update(containment_angle=comparison.containment_angle,
                       excess=comparison.excess, chordal_distance=comparison.chordal_distance)
    from .soft_symmetry import residual_info

    summary.update(residual_info(symmetry, layer) or {})
    report.attrs["group"] = group
    report.attrs["summary"] = summary
    return report


def _as_candidates(candidates):
    """One FiniteGroup from a group or a sequence of groups, or a clear TypeError."""
    if isinstance(candidates, FiniteGroup):
        return candidates
    if isinstance(candidates, (str, bytes)) or not hasattr(candidates, "__iter__"):
        raise TypeError(f"candidates must be a FiniteGroup or a sequence of FiniteGroup; got "
                        f"{type(candidates).__name__}")
    candidates = list(candidates)
    wrong = [type(c).__name__ for c in candidates if not isinstance(c, FiniteGroup)]
    if wrong:
        raise TypeError(f"candidates must be FiniteGroups; got {', '.join(wrong)}")
    if not candidates:
        raise ValueError("candidates is empty: pass at least one FiniteGroup, or None for "
                         "the defaults")
    return FiniteGroup.concatenate(candidates)


def _group_name(group, passing):
    """``"C4"``, ``"D4"``, ``"S6"``... for a recognized group, else what generates it.

    One generator: cyclic. Two, ``a`` and an involution ``b`` with ``b a b = a^{-1}``
    and ``|G| = 2 |a|``: dihedral. ``|G| = n!`` for a group acting on ``n`` inputs and
    ``n`` outputs: symmetric.
    """
    if not passing:
        return "trivial"
    if len(passing) == 1:
        return f"C{group.order}"
    if group.is_permutation:
        gens = [np.concatenate([p_in, p_out + group.n_in])
                for p_in, p_out in (_perms(g) for g in group._gens)]
        if len(gens) == 2:
            for a, b in (gens, gens[::-1]):
                n = _permutation_order(a)
                inverse = np.argsort(a)
                if (n >= 2 and _permutation_order(b) == 2 and group.order == 2 * n
                        and np.array_equal(b[a[b]], inverse)):
                    return f"D{n}"
        if group.n_in == group.n_out and group.order == math.factorial(group.n_in):
            return f"S{group.n_in}"
    return "generated by " + ", ".join(passing)


def _perms(element):
    (p_in, _), (p_out, _) = element
    return p_in, p_out


def _permutation_order(p):
    """The order of a permutation: the lcm of its cycle lengths."""
    seen = np.zeros(p.size, dtype=bool)
    order = 1
    for start in range(p.size):
        length, i = 0, start
        while not seen[i]:
            seen[i] = True
            i = p[i]
            length += 1
        if length:
            order = math.lcm(order, length)
    return order
