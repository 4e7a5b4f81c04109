"""Pictures of sharing matrices (matplotlib is an optional dependency).

Figures are built on matplotlib's Agg canvas without :mod:`matplotlib.pyplot`: no
window opens, no global figure state is touched, and the figure is returned (and
written to ``path`` when given). Install the extra with ``pip install msr_sklearn[plot]``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["plot_symmetry_matrix"]


def _new_figure(**kwargs):
    """A matplotlib Figure on an Agg canvas; a clear ImportError without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(
            "msr_sklearn.inspection.plotting needs matplotlib, which is not installed; install it with "
            "`pip install matplotlib` (or `pip install msr_sklearn[plot]`)") from exc
    figure = Figure(**kwargs)
    FigureCanvasAgg(figure)
    return figure


def _picture(column, shape):
    """A weight as an image: ``(n_out, n_in)`` as is; a filter tensor ``(C_out, C_in,
    kh, kw)`` as its ``kh × kw`` filters tiled (output channels across, input channels
    down) with blank separators."""
    if len(shape) == 2:
        return column.reshape(shape)
    c_out, c_in = shape[0], shape[1]
    kh, kw = shape[-2] if len(shape) == 4 else 1, shape[-1]
    filters = column.reshape(c_out, c_in, kh, kw)
    tiles = np.full((c_in, kh + 1, c_out, kw + 1), np.nan)
    tiles[:, :kh, :, :kw] = filters.transpose(1, 2, 0, 3)
    return tiles.reshape(c_in * (kh + 1), c_out * (kw + 1))[:-1, :-1]


def plot_symmetry_matrix(U, weight_shape=None, reference=None, *, layer=0, max_columns=6,
                         align=True, random_state=0, path=None, dpi=100, figure=None):
    """Draw the columns of ``U`` as ``n_out × n_in`` weight images.

    Filter tensors ``(C_out, C_in, kh, kw)`` (MSR-Conv sharings) are drawn as their
    ``kh × kw`` filters side by side, so that rotated copies are visible.

    The first panel of a row is a random weight ``W = U z`` of the span, which shows
    the tying pattern (e.g. a circulant) whatever basis ``U`` happens to be in; the
    next panels are single columns. ``U`` is identifiable only up to ``U -> U R``, so
    with a ``reference`` (e.g. the true band or ``U^G``) and ``align=True`` the
    learned row shows, under each reference column, its projection onto ``span(U)``:
    a perfect recovery makes the two rows identical.

    Parameters
    ----------
    U : array-like (n_weights, k), LearnedSymmetry, MetaModel or Sharing
    weight_shape : tuple or None
        ``(n_out, n_in)`` or ``(C_out, C_in, kh, kw)``; needed for an array ``U``.
    reference : array-like (n_weights, r) or None
    layer : int or str
        The layer of a LearnedSymmetry or MetaModel (an index into its adapted weights,
        or a weight's name).
    max_columns : int
        Columns drawn per row (besides the random weight).
    align : bool
        Project the reference columns onto ``span(U)`` instead of drawing ``U``'s own.
    random_state : int or None
        For the random weights.
    path : str, path-like or None
        Where to save the figure (format from the extension).
    dpi : int
    figure : matplotlib.figure.Figure or None
        Draw into this (empty) figure, e.g. ``pyplot.figure()`` so that pyplot,
        notebooks or sphinx-gallery see it; by default a new figure on an Agg canvas.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> from msr_sklearn.datasets import translation_sharing
    >>> from msr_sklearn.inspection.plotting import plot_symmetry_matrix
    >>> band = translation_sharing(n_features=10, kernel_size=3)
    >>> fig = plot_symmetry_matrix(band, (8, 10), reference=band)
    >>> len(fig.axes)
    8
    """
    from ._inputs import _sharing_of
    from ..groups.subspaces import _orth

    U, shape = _sharing_of(U, layer, weight_shape, flatten=False)
    if shape is None:
        raise TypeError("a plain U array needs weight_shape=(n_out, n_in)")
    if not isinstance(max_columns, (int, np.integer)) or max_columns < 1:
        raise ValueError(f"max_columns must be a positive integer; got {max_columns!r}")
    rng = np.random.default_rng(random_state)
    rows = []
    if reference is None:
        rows.append(("learned U", U[:, :max_columns], U @ rng.standard_normal(U.shape[1])))
    else:
        ref, _ = _sharing_of(reference)
        if ref.shape[0] != U.shape[0]:
            raise ValueError(f"reference has {ref.shape[0]} rows; U has {U.shape[0]}")
        q = _orth(U)
        z = rng.standard_normal(ref.shape[1])
        learned = q @ (q.T @ ref[:, :max_columns]) if align else U[:, :max_columns]
        rows.append(("learned (projected)" if align else "learned U", learned,
                     q @ (q.T @ (ref @ z)) if align else U @ rng.standard_normal(U.shape[1])))
        rows.append(("reference", ref[:, :max_columns], ref @ z))
    n_cols = 1 + max(block.shape[1] for _, block, _ in rows)
    height, width = _picture(np.zeros(math.prod(shape)), shape).shape
    aspect = width / height
    panel_width = 1.8 * min(max(aspect, 0.5), 3.0)
    panel_height = 0.4 + min(max(panel_width / aspect, 0.8), 2.0)
    size = (1.0 + panel_width * n_cols, 0.3 + panel_height * len(rows))
    if figure is None:
        figure = _new_figure(figsize=size, dpi=dpi)
    else:
        figure.set_size_inches(*size)
    grid = figure.add_gridspec(len(rows), n_cols)
    for r, (label, block, sample) in enumerate(rows):
        panels = [("random weight", sample)] + [(f"column {j}", block[:, j])
                                                for j in range(block.shape[1])]
        for c, (title, column) in enumerate(panels):
            ax = figure.add_subplot(grid[r, c])
            image = _picture(np.asarray(column), shape)
            limit = float(np.nanmax(np.abs(image))) or 1.0
            ax.imshow(image, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest",
                      aspect="auto" if len(shape) == 2 else "equal")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=8)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    figure.tight_layout()
    if path is not None:
        figure.savefig(path)
    return figure
