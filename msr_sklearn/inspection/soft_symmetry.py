"""Soft-symmetry diagnostics: how far adapted weights ``W = reshape(U v) + R`` leave span(U).

A residual sharing (:class:`~msr_sklearn.sharing.Residual`, or ``layer="msr_residual"``)
adapts a free weight ``R`` beside the shared one, at its own meta-learned inner rate. Two numbers
say how much symmetry was learned: the **strength** (the fraction of the adapted
weights' squared norm inside ``span(U)``: 1 for a strict symmetry, towards 0 for none)
and the residual's learned **rate** (0: the strict symmetry; large: MAML). The
relative size of the meta-learned ``R0`` says how much symmetry breaking all tasks
share. :meth:`MetaSymmetryLearner.symmetry_strength
<msr_sklearn.MetaSymmetryLearner.symmetry_strength>`, the symmetry report, and
hardening and export use these helpers.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch

from ..data.tasks import mean_confidence_interval
from ..engine import InnerLoop, adapt
from ..sharing import FixedSharing, Residual


def _span_basis(sharing):
    """Orthonormal columns spanning ``span(U)`` (an SVD with a relative cut-off), in
    float64 on the CPU (any device's ``U``), or None where the span is everything (a
    weight adapted as is, or the identity sharing)."""
    if sharing is None or (isinstance(sharing, FixedSharing) and sharing.is_identity):
        return None
    with torch.no_grad():
        u = sharing.matrix().detach().to("cpu", torch.float64)
        left, s, _ = torch.linalg.svd(u, full_matrices=False)
        return left[:, s > s.max() * 1e-6]


def residual_info(source, layer=0):
    """The residual of layer ``layer`` (an index counting adapted weights, or a name), or None.

    ``source`` is a :class:`~msr_sklearn.LearnedSymmetry`, a
    :class:`~msr_sklearn.engine.MetaModel` or a bound
    :class:`~msr_sklearn.sharing.Residual`; anything else, or a layer without a
    residual, gives None. Returns ``{"residual_lr", "residual_norm",
    "residual_relative_size"}``: the learned inner rate of ``R``, ``||R0||_F`` and
    ``||R0||_F / ||U v0 + R0||_F``, the share of the meta-learned initial weight that
    lies in the residual (0 when that weight is 0). A bare sharing holds neither ``R0``
    nor its rate: all three are None.
    """
    from ._inputs import _is_model, _is_symmetry, _layer_of

    if isinstance(source, Residual):
        return {"residual_lr": None, "residual_norm": None, "residual_relative_size": None}
    if not (_is_symmetry(source) or _is_model(source)):
        return None
    found = _layer_of(source, layer)
    if not isinstance(found.sharing, Residual):
        return None
    model, name = found.model, found.name
    initial = model.initial_inner()
    lrs = dict(zip(model.inner_names, model.inner_lrs.detach().cpu().tolist()))
    with torch.no_grad():
        residual = initial[f"{name}.residual"]
        norm = float(residual.norm())
        weight = float(found.sharing(initial[f"{name}.filters"], residual).norm())
    return {"residual_lr": lrs.get(f"{name}.residual"), "residual_norm": norm,
            "residual_relative_size": norm / weight if weight > 0 else 0.0}


def warn_dropped_residual(source, layer, what):
    """Warn that ``what`` keeps only the ``U`` part of a residual layer (if it has one)."""
    from ._inputs import _layer_of

    info = residual_info(source, layer)
    if info is None:
        return
    where = "the layer" if isinstance(source, Residual) else _layer_of(source, layer).where
    size = "" if info["residual_norm"] is None else (
        f": R0 has norm {info['residual_norm']:.3g} "
        f"({info['residual_relative_size']:.1%} of the layer's initial weight)")
    rate = "" if info["residual_lr"] is None else (
        f", and R adapts at the learned rate {info['residual_lr']:.3g}")
    warnings.warn(
        f"{what} acts on the shared part U of {where}, a residual layer, and drops "
        f"its free residual R{size}{rate}", UserWarning, stacklevel=3)


def symmetry_strength(model, batch, loop=InnerLoop(), *, chunk_size=512):
    """Per layer, the fraction of the adapted weights' squared norm inside ``span(U)``.

    Every task of ``batch`` is adapted on its support rows (:func:`msr_sklearn.engine.adapt`,
    without meta-gradients, ``chunk_size`` tasks at a time); for each adapted weight and
    task, ``||P_U vec(W_t)||^2 / ||vec(W_t)||^2`` of the adapted ``W_t = U v_t + R_t``.

    Parameters
    ----------
    model : MetaModel
        The meta-learned model.
    batch : TaskBatch
        The tasks (their support rows are used).
    loop : InnerLoop, default=InnerLoop()
        The inner loop.
    chunk_size : int, default=512
        Tasks adapted at once.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``layer`` (counting adapted weights), with columns ``strength``
        (mean over tasks), ``ci95`` (its Student-t half-width), ``residual_lr`` (the
        residual's learned inner rate), ``shared_breaking`` (``||R0||_F /
        sqrt(mean_t ||W_t - R0||_F^2)``: the symmetry breaking common to all tasks,
        relative to their own weights) and ``n_tasks``; for a layer without a residual
        (strength 1) the rate and the breaking are NaN.
    """
    names = model.adapted_weights
    sharings = [model.sharing(n) if model.roles[n] == "shared" else None for n in names]
    bases = [_span_basis(s) for s in sharings]
    in_span = [[] for _ in names]
    own = np.zeros(len(names))  # sum_t ||W_t - R0||^2 per layer
    initial = model.initial_inner()
    training = model.training
    model.eval()
    try:
        for start in range(0, batch.n_tasks, chunk_size):
            chunk = batch.select(slice(start, start + chunk_size))
            inner = adapt(model, chunk.x_support, chunk.y_support, loop,
                          track_meta_gradients=False)
            with torch.no_grad():
                weights = model.weights(inner)
                for j, name in enumerate(names):
                    flat = weights[name].reshape(chunk.n_tasks, -1).to("cpu", torch.float64)
                    total = flat.pow(2).sum(-1)
                    inside = total if bases[j] is None else (flat @ bases[j]).pow(2).sum(-1)
                    fraction = torch.where(total > 0, inside / total.clamp_min(1e-300),
                                           torch.ones_like(total))
                    in_span[j].append(fraction.numpy())
                    if isinstance(sharings[j], Residual):
                        r0 = initial[f"{name}.residual"]
                        own[j] += float((weights[name] - r0).pow(2).sum())
    finally:
        model.train(training)
    rows = []
    for j in range(len(names)):
        mean, ci = mean_confidence_interval(np.concatenate(in_span[j]))
        info = residual_info(model, j) or {}
        rate, norm = info.get("residual_lr", np.nan), info.get("residual_norm", np.nan)
        scale = np.sqrt(own[j] / batch.n_tasks)
        rows.append({"layer": j, "strength": mean, "ci95": ci, "residual_lr": rate,
                     "shared_breaking": norm / scale if scale > 0 else norm * 0.0,
                     "n_tasks": batch.n_tasks})
    return pd.DataFrame(rows).set_index("layer")
