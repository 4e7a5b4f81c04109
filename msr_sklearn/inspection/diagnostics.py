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


def _as_functions(model, layer, n_draws, rng):
    """The torch functions ``(N, d_in) -> (N, d_out)`` to test, with device and dtype."""
    from ..nn import MetaLayer
    from ..symmetry import LearnedSymmetry

    if isinstance(model, LearnedSymmetry):
        return _random_filter_functions(model._meta_layer(layer), n_draws, rng)
    if hasattr(model, "network_"):
        model = model.network_
    if isinstance(model, MetaLayer) and layer == "random":
        return _random_filter_functions(model, n_draws, rng)
    if isinstance(model, torch.nn.Module):
        device, dtype = _module_device_dtype(model)
        return [model], device, dtype
    if callable(model):
        return [model], torch.device("cpu"), torch.get_default_dtype()
    raise TypeError(f"cannot test the equivariance of a {type(model).__name__}: pass a torch "
                    f"module, a LearnedSymmetry or a fitted estimator with network_")


def _random_filter_functions(layer, n_draws, rng):
    """The layer with random filters ``v`` (so ``W = U v`` is a random weight in span U)."""
    device, dtype = _module_device_dtype(layer)
    k = layer.sharing.n_filters
    functions = []
    for _ in range(n_draws):
        v = torch.as_tensor(rng.standard_normal(k), dtype=dtype, device=device)
        zero = torch.zeros(layer.n_outputs, dtype=dtype, device=device)
        functions.append(lambda x, v=v, zero=zero: layer(x, filters=v, bias=zero))
    return functions, device, dtype


def _apply(side, x):
    """``rho x`` for a batch of row vectors ``x`` (torch); side = (perm, matrix)."""
    perm, matrix = side
    if perm is not None:
        return x[..., torch.as_tensor(perm, device=x.device)]
    return x @ torch.as_tensor(matrix, dtype=x.dtype, device=x.device).T


def equivariance_error(model, group, n_samples=32, elements="all", layer=0, n_draws=4,
                       random_state=None, max_order=MAX_ORDER):
    """Relative equivariance error ``max_g ||f(rho_in(g) x) - rho_out(g) f(x)|| / ||f(x)||``.

    Norms are Frobenius norms over ``n_samples`` random inputs ``x ~ N(0, I)``; the
    maximum is over every group element (or only the generators). Inputs follow the
    model's device and dtype.

    Parameters
    ----------
    model : torch.nn.Module, LearnedSymmetry or fitted estimator
        A module (a :class:`~msr_sklearn.nn.MetaLayer`, a network, anything mapping
        ``(n, n_in) -> (n, n_out)``); an estimator exposing its adapted network as
        ``network_``; or a :class:`~msr_sklearn.LearnedSymmetry`, whose layer
        ``layer`` is tested with ``n_draws`` random filter values ``v`` (a random
        weight ``U v`` of its sharing, bias zero).
    group : FiniteGroup
        The group; it must act on the model's ``n_in`` inputs and ``n_out`` outputs.
    n_samples : int, default=32
        The number of random inputs.
    elements : {"all", "generators"}, default="all"
        Test every element (breadth-first closure, at most ``max_order``) or only the
        generators (for large groups).
    layer : int or "random", default=0
        The layer of a LearnedSymmetry; ``"random"`` tests a MetaLayer with random
        filters instead of its own.
    n_draws : int, default=4
        Random filter draws (LearnedSymmetry or ``layer="random"``); the worst is kept.
    random_state : int, RandomState or None, default=None
        Seeds the inputs and the filter draws.
    max_order : int, default=MAX_ORDER
        With ``elements="all"``, raise ``ValueError`` rather than enumerate a group
        with more elements.

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
    functions, device, dtype = _as_functions(model, layer, n_draws, rng)
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
    symmetry : LearnedSymmetry, MetaLayer, Sharing or array-like
        An array ``U`` of shape ``(n_weights, k)`` needs ``weight_shape``.
    candidates : FiniteGroup, sequence of FiniteGroup or None
        The candidate generators (all generators of the given groups), acting on the
        weights as ``(n_out, n_in)`` (a convolution's as ``(C_out, C_in * kh * kw)``).
        ``None`` uses :func:`default_candidates`: rotations and flips of the grid with
        the copy permutations found from ``U`` for convolutions and dense layers on
        images, :func:`candidate_generators` for other square layers.
    layer : int, default=0
        The layer of a LearnedSymmetry.
    tol : float, default=0.3
        Pass threshold for the score (in ``[0, 2]``).
    weight_shape : tuple or None, default=None
        Required for an array ``U`` (whose rows are the row-major weights):
        ``(n_out, n_in)``, or ``(C_out, C_in, kh, kw)`` for a convolution; ignored
        otherwise (the sharing knows its shape).
    input_shape : tuple (C, H, W) or None, default=None
        The images a dense layer reads, for the default candidates (see
        :func:`default_candidates`; a LearnedSymmetry's first layer knows its own).
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

    >>> from msr_sklearn.groups import exact_lifting_sharing
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
