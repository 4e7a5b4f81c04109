"""The default candidate symmetries of :func:`~msr_sklearn.inspection.symmetry_report`.

A candidate is a generator that permutes a layer's weights. Square dense layers get
fixed ones (:func:`candidate_generators`). Layers on grids get the rotations and flips
of the grid, each *with* a permutation of the layer's channel copies: an MSR-Conv filter
tensor (output copies, and input copies for a coupled layer), or a dense layer that
reads images (its output channels, for lifting outputs). Those copies come in a learned
order, not a canonical one, so :func:`default_candidates` finds for every grid transform
the copy permutation under which ``span(U)`` is most nearly invariant, by linear
assignment, and builds the generator with it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..groups._inputs import _check_positive
from ..groups.finite_group import FiniteGroup
from ..groups.library import _field_permutation, _grid_permutation
from ..groups.subspaces import _orth
from ._inputs import (
    _is_model,
    _is_symmetry,
    _layer_of,
    _network_image,
    _sharing_of,
    _unwrap,
)

#: the generators tried on grids that are all square, and on the others
_SQUARE_TRANSFORMS = (("rot90", (1, 0)), ("flip", (0, 1)))
_OTHER_TRANSFORMS = (("rot180", (2, 0)), ("flip", (0, 1)))
#: at most this many alternating sweeps refine a coupled layer's copy permutations
_MAX_SWEEPS = 20


# --------------------------------------------------------------------- square layers
def candidate_generators(n_out, n_in=None):
    """Default candidate generators for :func:`symmetry_report` on ``R^n -> R^n``.

    The cyclic shift, the reflection ``i -> -i``, the transposition ``(0 1)`` and, when
    ``n`` is a square ``s*s``, the 90° rotation and left-right flip of the
    ``s × s`` grid; each acts the same way on inputs and outputs. Shift and
    reflection generate ``D_n``, shift and transposition ``S_n``.

    Parameters
    ----------
    n_out : int
        The layer's size ``n`` (at least 3).
    n_in : int or None, default=None
        Must equal ``n_out`` (``None`` does); a non-square layer raises ``ValueError``
        and needs explicit candidates.

    Returns
    -------
    FiniteGroup
        Named ``"candidates"``, with one generator per candidate.

    Examples
    --------
    >>> from msr_sklearn.inspection import candidate_generators
    >>> candidate_generators(9).names
    ('shift', 'reflection', 'transposition', 'rot90', 'flip')
    """
    n_in = n_out if n_in is None else n_in
    if n_in != n_out:
        raise ValueError(f"default candidates need a square layer (n_out == n_in); got "
                         f"{n_out}x{n_in}: pass candidates= explicitly (e.g. a grid_group)")
    n = n_out
    _check_positive("n", n, 3)
    swap = np.arange(n)
    swap[[0, 1]] = [1, 0]
    gens = [(np.arange(n) - 1) % n, (-np.arange(n)) % n, swap]
    names = ["shift", "reflection", "transposition"]
    side = math.isqrt(n)
    if side * side == n and side >= 2:
        gens += [_grid_permutation(side, (1, 0)), _grid_permutation(side, (0, 1))]
        names += ["rot90", "flip"]
    return FiniteGroup(gens, names=names, name="candidates")


# --------------------------------------------------------------------- the layer
class _LayerInfo(NamedTuple):
    """What the defaults need to know about a layer."""

    U: np.ndarray
    weight_shape: tuple  # as the layer has it, e.g. (C_out, C_in, kh, kw)
    where: str  # the layer, for messages
    copies: tuple | None  # (n_fields, n_copies, in_fields, in_copies) of an MSR-Conv sharing
    image: tuple | None  # (C, H, W) that a dense layer reads
    kernel_size: int | None

    @property
    def matrix_shape(self):
        """The weights as the groups see them: ``(n_out, n_in)``, a conv's
        ``(C_out, C_in * kh * kw)``."""
        return (self.weight_shape[0], math.prod(self.weight_shape[1:]))

    def describe_shape(self):
        shape = f"{self.where} has weights of shape {self.weight_shape}"
        if len(self.weight_shape) != 2:
            shape += f" (the groups act on them as {self.matrix_shape})"
        return shape


def _describe(symmetry, layer=0, weight_shape=None, input_shape=None, kernel_size=None):
    """The :class:`_LayerInfo` of a LearnedSymmetry's or MetaModel's layer, a bound
    sharing or an array.

    The first adapted weight of a LearnedSymmetry or MetaModel, when dense, reads the
    images its network reads (see :func:`~._inputs._network_image`) if their size
    fits; ``input_shape`` and ``kernel_size`` override what the network says.
    """
    from ..sharing import ConvFilterSharing, Residual

    sharing, _, where = _unwrap(symmetry, layer)
    U, shape = _sharing_of(symmetry, layer, weight_shape, flatten=False)
    if shape is None:
        raise TypeError("a plain U array needs weight_shape=(n_out, n_in) (or (C_out, C_in, "
                        "kh, kw) for a convolution)")
    image = kernel = None
    if _is_symmetry(symmetry) or _is_model(symmetry):
        own = _network_image(symmetry)
        if (_layer_of(symmetry, layer).index == 0 and len(shape) == 2 and own is not None
                and math.prod(own) == shape[1]):
            image = own
        kernel = (symmetry.module.params.get("kernel_size") if _is_symmetry(symmetry)
                  else getattr(symmetry.module, "kernel_size", None))
        kernel = kernel if isinstance(kernel, (int, np.integer)) else None
    if isinstance(sharing, Residual):  # the report scores the shared part U
        sharing = sharing.sharing
    copies = None
    if isinstance(sharing, ConvFilterSharing):
        copies = (sharing.n_fields, sharing.n_copies,
                  sharing.weight_shape[1] // sharing.in_copies, sharing.in_copies)
    image = image if input_shape is None else input_shape
    kernel = kernel if kernel_size is None else kernel_size
    return _LayerInfo(U, shape, where, copies, image, kernel)


# --------------------------------------------------------------------- layouts
class _Layout(NamedTuple):
    """A weight ``(n_out, n_in)`` as ``(fields, copies, pixels)`` on each side.

    A grid transform moves the pixels of every channel on its grid and permutes the
    copies of every field (the same way in each field); fields stay in place.
    """

    label: str  # "" for a conv, else how the outputs are read ("invariant", "4x3x3 maps")
    out_fields: int
    out_copies: int
    out_grid: tuple
    in_fields: int
    in_copies: int
    in_grid: tuple


def _layouts(info):
    """The layouts the defaults try, or ``None`` for a dense layer without an image."""
    shape = info.weight_shape
    if len(shape) == 4:
        c_out, c_in, kh, kw = shape
        f_out, m_out, f_in, m_in = info.copies or (1, c_out, c_in, 1)
        return [_Layout("", f_out, m_out, (1, 1), f_in, m_in, (kh, kw))]
    if info.image is None:
        return None
    n_out, n_in = info.matrix_shape
    image = tuple(int(s) for s in np.ravel(info.image))
    if len(image) != 3 or min(image) < 1:
        raise ValueError(f"input_shape must be (channels, height, width) of positive sizes; "
                         f"got {info.image!r}")
    c_in, h, w = image
    if c_in * h * w != n_in:
        raise ValueError(f"input_shape={image} has {c_in * h * w} values; {info.where} reads "
                         f"{n_in} inputs")
    kernel = 3 if info.kernel_size is None else info.kernel_size
    _check_positive("kernel_size", kernel)
    if kernel > min(h, w):
        raise ValueError(f"kernel_size={kernel} exceeds the {h}x{w} image")
    layouts = [_Layout("invariant", n_out, 1, (1, 1), c_in, 1, (h, w))]
    for grid in dict.fromkeys([(h - kernel + 1, w - kernel + 1), (h, w)]):
        pixels = grid[0] * grid[1]
        if n_out % pixels == 0:
            label = f"{n_out // pixels}x{grid[0]}x{grid[1]} maps"
            layouts.append(_Layout(label, 1, n_out // pixels, grid, c_in, 1, (h, w)))
    return layouts


def _pixel_transforms(layout):
    """``[(name, (output pixels, input pixels)), ...]``: the grid transforms to try.

    rot90 and flip when every grid of more than one pixel is square, else rot180 and
    flip; a transform that moves no pixel, or moves them as an earlier one does, is
    left out.
    """
    grids = [g for g in (layout.out_grid, layout.in_grid) if g != (1, 1)]
    square = all(h == w for h, w in grids)
    chosen, seen = [], set()
    for name, transform in _SQUARE_TRANSFORMS if square else _OTHER_TRANSFORMS:
        pixels = (_grid_permutation(layout.out_grid, transform),
                  _grid_permutation(layout.in_grid, transform))
        key = b"|".join(p.tobytes() for p in pixels)
        moves = any(np.any(p != np.arange(p.size)) for p in pixels)
        if moves and key not in seen:
            seen.add(key)
            chosen.append((name, pixels))
    return chosen


# --------------------------------------------------------------------- copy permutations
def _assign(cost):
    """The permutation ``p`` minimizing ``sum_i cost[i, p[i]]`` (Hungarian method)."""
    _, columns = linear_sum_assignment(cost)
    return columns


def _copy_costs(q, layout, pixels):
    """``cost[d, e, d', e']``: ``||W[d, e] - t W[d', e']||_F^2`` summed over ``span(U)``.

    ``W[d, e]`` is the block of weights between output copy ``d`` and input copy ``e``
    (every field and pixel) and ``t W`` the weight with its pixels transformed, for the
    orthonormal basis ``q`` of ``span(U)`` (the expectation over ``W = q z``,
    ``z ~ N(0, I)``). A generator that maps copy ``(d, e)`` to ``(σ(d), π(e))`` scores
    ``sqrt(sum_{d, e} cost[d, e, σ(d), π(e)] / k)``.
    """
    pix_out, pix_in = pixels
    m_out, m_in = layout.out_copies, layout.in_copies
    w = q.T.reshape(q.shape[1], layout.out_fields, m_out, pix_out.size, layout.in_fields, m_in,
                    pix_in.size)
    moved = w[:, :, :, pix_out][..., pix_in]
    blocks = np.moveaxis(w, (2, 5), (0, 1)).reshape(m_out * m_in, -1)
    moved = np.moveaxis(moved, (2, 5), (0, 1)).reshape(m_out * m_in, -1)
    norms = np.sum(blocks ** 2, axis=1)  # a pixel permutation keeps every block's norm
    cost = norms[:, None] + norms[None, :] - 2 * blocks @ moved.T
    return cost.reshape(m_out, m_in, m_out, m_in)


def _copy_permutations(q, layout, pixels):
    """``(σ, π)``: the output and input copy permutations that minimize the score.

    One side of copies: one assignment, the exact minimum. Copies on both sides (a
    coupled MSR-Conv layer): an assignment of copy *pairs*, factored into ``σ`` and
    ``π`` by majority (two more assignments), then alternating exact assignments of
    ``σ`` given ``π`` and ``π`` given ``σ`` until neither changes (each lowers the
    score or keeps it).
    """
    cost = _copy_costs(q, layout, pixels)
    m_out, m_in = cost.shape[:2]
    if m_in == 1:
        return _assign(cost[:, 0, :, 0]), np.zeros(1, dtype=np.int64)
    if m_out == 1:
        return np.zeros(1, dtype=np.int64), _assign(cost[0, :, 0, :])
    pairs = _assign(cost.reshape(m_out * m_in, m_out * m_in)).reshape(m_out, m_in)
    to_out, to_in = np.divmod(pairs, m_in)
    votes_out = np.zeros((m_out, m_out))
    np.add.at(votes_out, (np.repeat(np.arange(m_out), m_in), to_out.ravel()), 1)
    votes_in = np.zeros((m_in, m_in))
    np.add.at(votes_in, (np.tile(np.arange(m_in), m_out), to_in.ravel()), 1)
    sigma, pi = _assign(-votes_out), _assign(-votes_in)
    for _ in range(_MAX_SWEEPS):
        new_sigma = _assign(cost[:, np.arange(m_in), :, pi].sum(axis=0))
        new_pi = _assign(cost[np.arange(m_out), :, new_sigma, :].sum(axis=0))
        if np.array_equal(new_sigma, sigma) and np.array_equal(new_pi, pi):
            break
        sigma, pi = new_sigma, new_pi
    return sigma, pi


# --------------------------------------------------------------------- the candidates
def _grid_candidates(info, layouts):
    q = _orth(info.U)
    gens_in, gens_out, names = [], [], []
    for layout in layouts:
        for name, pixels in _pixel_transforms(layout):
            sigma, pi = _copy_permutations(q, layout, pixels)
            gens_out.append(_field_permutation(layout.out_fields, sigma, pixels[0]))
            gens_in.append(_field_permutation(layout.in_fields, pi, pixels[1]))
            names.append(f"{name}, {layout.label}" if layout.label else name)
    if not names:
        raise ValueError(f"{info.describe_shape()}: no rotation or flip moves its grids "
                         f"(1x1 filters?); pass candidates= explicitly")
    return FiniteGroup(gens_in, gens_out, names=names, name="candidates")


def _candidates_for(info):
    layouts = _layouts(info)
    if layouts is not None:
        return _grid_candidates(info, layouts)
    n_out, n_in = info.matrix_shape
    if n_out != n_in:
        raise ValueError(f"default candidates need a square layer (n_out == n_in) or an "
                         f"image: {info.describe_shape()}; pass input_shape=(C, H, W) if it "
                         f"reads images, or candidates= (e.g. a grid_group)")
    return candidate_generators(n_out)


def default_candidates(symmetry, layer=0, weight_shape=None, input_shape=None,
                       kernel_size=None):
    """The candidate generators :func:`symmetry_report` tries when given none.

    Every candidate permutes the layer's weights; which ones depend on the layer:

    * **Convolutions** (weights ``(C_out, C_in, kh, kw)``, e.g. MSR-Conv): ``rot90``
      and ``flip`` of the filter grid (``rot180`` and ``flip`` for a non-square
      kernel), each combined with a permutation of the output copies of every field
      (of a :class:`~msr_sklearn.sharing.ConvFilterSharing`'s ``n_copies``, also inside
      a :class:`~msr_sklearn.sharing.Residual`; other conv sharings, and conv weights
      adapted as is, count all ``C_out`` channels as one field) and, for a coupled
      layer (``in_copies > 1``), of the input copies. The copies' order is learned, so
      for each transform the permutation that leaves ``span(U)`` most nearly invariant
      is found by linear assignment (the exact optimum for one side of copies). With
      ``n_copies=1`` only the pixels move: the filters themselves must be symmetric.
    * **Dense layers on images** (the first adapted weight of a network that reads
      images, or ``input_shape`` given): ``rot90`` and ``flip`` (``rot180`` and
      ``flip`` for a non-square image) of the input grid, once for each output layout
      that fits ``n_out``: ``"invariant"`` (the outputs stay put) and ``"CxHxW maps"``,
      channel-major maps on the grid of side ``H - kernel_size + 1`` and on the input's
      own grid, transformed with their channels permuted by the assignment found as for
      convolutions.
    * **Other dense layers**: :func:`candidate_generators` for a square layer; a
      non-square one raises ``ValueError``.

    Parameters
    ----------
    symmetry : LearnedSymmetry, MetaModel, Sharing or array-like
        The learned sharing: a layer of a :class:`~msr_sklearn.LearnedSymmetry` or a
        :class:`~msr_sklearn.engine.MetaModel`, a bound
        :class:`~msr_sklearn.sharing.Sharing`, or an array ``U`` (which needs
        ``weight_shape``).
    layer : int or str, default=0
        The layer of a LearnedSymmetry or MetaModel: an index into its adapted weights
        (:attr:`~msr_sklearn.LearnedSymmetry.weight_names`) or a weight's name.
    weight_shape : tuple or None, default=None
        ``(n_out, n_in)`` or ``(C_out, C_in, kh, kw)`` of an array ``U``; ignored
        otherwise.
    input_shape : tuple (C, H, W) or None, default=None
        The images a dense layer reads. ``None``: for the first adapted weight of a
        LearnedSymmetry, the images its network reads when their size is the layer's
        input size: the symmetry's ``input_shape`` when tasks were images ``(n, C, H,
        W)``, else the module's ``input_shape`` parameter (a network fitted on flat rows
        that reshapes them, as ``module__input_shape``); for a MetaModel, its module's
        ``input_shape`` attribute; none otherwise. A learner's default MLP on flat rows
        records no image: pass it here. Ignored for convolutions.
    kernel_size : int or None, default=None
        Sets the side ``H - kernel_size + 1`` of a dense layer's output maps;
        ``None``: the module's ``kernel_size`` parameter if it has one, else 3.

    Returns
    -------
    FiniteGroup
        Named ``"candidates"``, one generator per candidate (with the permutations
        found), acting on weights ``(n_out, n_in)`` (a convolution's as ``(C_out,
        C_in * kh * kw)``, the layer applied to one patch).

    Examples
    --------
    A lifting convolution whose 4 output copies are the rotations of one filter:

    >>> from msr_sklearn.inspection import default_candidates
    >>> from msr_sklearn.sharing import exact_lifting_sharing
    >>> candidates = default_candidates(exact_lifting_sharing("c4"))
    >>> candidates.names, candidates.weight_shape
    (('rot90', 'flip'), (4, 9))
    >>> rot_in, rot_out = candidates.generator_matrices()[0]
    >>> rot_out.argmax(axis=1)            # copy c is the rotation of copy c - 1
    array([3, 0, 1, 2])
    """
    return _candidates_for(_describe(symmetry, layer, weight_shape, input_shape, kernel_size))
