"""Soft-symmetry diagnostics: how far adapted weights ``W = reshape(U v) + R`` leave span(U).

A residual layer (``layer="msr_residual"`` and the other ``"_residual"`` kinds) adapts a
free weight ``R`` beside the shared one, at its own meta-learned inner rate. Two numbers
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

from ..engine.meta import adapt
from ..nn import FixedSharing, MetaLayer
from ..data.tasks import mean_confidence_interval


def _span_basis(sharing):
    """Orthonormal columns spanning ``span(U)`` (an SVD with a relative cut-off), in
    float64 on the CPU (any device's ``U``), or None for the identity sharing, whose span
    is everything."""
    if isinstance(sharing, FixedSharing) and sharing.is_identity:
        return None
    with torch.no_grad():
        u = sharing.matrix().detach().to("cpu", torch.float64)
        left, s, _ = torch.linalg.svd(u, full_matrices=False)
        return left[:, s > s.max() * 1e-6]


def _meta_indices(network):
    """The network positions of the layers with a sharing (what ``layer=j`` counts)."""
    return [i for i, m in enumerate(network.layers) if isinstance(m, MetaLayer)]


def residual_info(source, layer=0, inner_lrs=None):
    """The residual of layer ``layer`` (counting layers with a sharing), or None.

    ``source`` is a LearnedSymmetry, a MetaNetwork (with its ``inner_lrs`` by name) or
    a MetaLayer; anything else, or a layer without a residual, gives None. Returns
    ``{"residual_lr", "residual_norm", "residual_relative_size"}``: the learned inner
    rate of ``R`` (None for a bare layer, which does not know it), ``||R0||_F`` and
    ``||R0||_F / ||reshape(U v0) + R0||_F``, the share of the meta-learned initial
    weight that lies in the residual (0 when that weight is 0).
    """
    from ..symmetry import LearnedSymmetry

    if isinstance(source, LearnedSymmetry):
        source, layer, inner_lrs = (source.build_network(), source._layer_index(layer),
                                    source.inner_lrs)
    rate = None
    if hasattr(source, "meta_layers"):
        index = _meta_indices(source)[layer]
        source = source.layers[index]
        rate = None if inner_lrs is None else inner_lrs.get(f"{index}.residual")
    if not isinstance(source, MetaLayer) or source.residual is None:
        return None
    with torch.no_grad():
        norm = float(source.residual.norm())
        initial = float(source.weight().norm())
    return {"residual_lr": None if rate is None else float(rate), "residual_norm": norm,
            "residual_relative_size": norm / initial if initial > 0 else 0.0}


def warn_dropped_residual(source, layer, what):
    """Warn that ``what`` keeps only the ``U`` part of a residual layer (if it has one)."""
    info = residual_info(source, layer)
    if info is not None:
        rate = "" if info["residual_lr"] is None else (
            f", and R adapts at the learned rate {info['residual_lr']:.3g}")
        warnings.warn(
            f"{what} acts on the shared part U of layer {layer}, a residual layer, and drops "
            f"its free residual R: R0 has norm {info['residual_norm']:.3g} "
            f"({info['residual_relative_size']:.1%} of the layer's initial weight){rate}",
            UserWarning, stacklevel=3)


def symmetry_strength(model, batch, *, loss="mse", inner_steps=1, chunk_size=512):
    """Per layer, the fraction of the adapted weights' squared norm inside ``span(U)``.

    Every task of ``batch`` is adapted on its support rows (:func:`msr_sklearn.engine.adapt`,
    without meta-gradients, ``chunk_size`` tasks at a time); for each layer and task,
    ``||P_U vec(W_t)||^2 / ||vec(W_t)||^2`` of the adapted ``W_t = reshape(U v_t) + R_t``.

    Parameters
    ----------
    model : MetaModel
        The meta-learned model.
    batch : TaskBatch
        The tasks (their support rows are used).
    loss : {"mse", "cross_entropy"}, default="mse"
        The inner loss.
    inner_steps : int, default=1
        Inner SGD steps.
    chunk_size : int, default=512
        Tasks adapted at once.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``layer`` (counting layers with a sharing), with columns
        ``strength`` (mean over tasks), ``ci95`` (its Student-t half-width),
        ``residual_lr`` (the residual's learned inner rate), ``shared_breaking``
        (``||R0||_F / sqrt(mean_t ||W_t - R0||_F^2)``: the symmetry breaking common to
        all tasks, relative to their own weights) and ``n_tasks``; for a layer without
        a residual (strength 1) the rate and the breaking are NaN.
    """
    network = model.network
    names = dict(zip(model.inner_names, model.inner_lrs.detach().cpu().tolist()))
    indices = _meta_indices(network)
    bases = [_span_basis(network.layers[i].sharing) for i in indices]
    in_span = [[] for _ in indices]
    own = np.zeros(len(indices))  # sum_t ||W_t - R0||^2 per layer
    for start in range(0, batch.n_tasks, chunk_size):
        chunk = batch.select(slice(start, start + chunk_size))
        inner = adapt(model, chunk.x_support, chunk.y_support, loss=loss,
                      inner_steps=inner_steps, track_meta_gradients=False)
        with torch.no_grad():
            for j, i in enumerate(indices):
                module = network.layers[i]
                weight = module.weight(inner[f"{i}.filters"], inner.get(f"{i}.residual"))
                flat = weight.reshape(chunk.n_tasks, -1).to("cpu", torch.float64)
                total = flat.pow(2).sum(-1)
                inside = total if bases[j] is None else (flat @ bases[j]).pow(2).sum(-1)
                fraction = torch.where(total > 0, inside / total.clamp_min(1e-300),
                                       torch.ones_like(total))
                in_span[j].append(fraction.numpy())
                if module.residual is not None:
                    own[j] += float((weight - module.residual).pow(2).sum())
    rows = []
    for j in range(len(indices)):
        mean, ci = mean_confidence_interval(np.concatenate(in_span[j]))
        info = residual_info(network, j, names) or {}
        rate, norm = info.get("residual_lr", np.nan), info.get("residual_norm", np.nan)
        scale = np.sqrt(own[j] / batch.n_tasks)
        rows.append({"layer": j, "strength": mean, "ci95": ci, "residual_lr": rate,
                     "shared_breaking": norm / scale if scale > 0 else norm * 0.0,
                     "n_tasks": batch.n_tasks})
    return pd.DataFrame(rows).set_index("layer")


def set_residual_lr(model, lr):
    """Set the inner learning rate of every residual of ``model`` to ``lr`` (None: keep)."""
    names = [j for j, name in enumerate(model.inner_names) if name.endswith(".residual")]
    if lr is None:
        return
    if not names:
        raise ValueError(f"residual_lr={lr!r} sets the inner rate of residual layers, but the "
                         "network has none; use a '_residual' layer or conv_layer kind, or "
                         "residual_lr=None")
    with torch.no_grad():
        model.inner_lrs[names] = float(lr)
