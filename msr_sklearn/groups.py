"""Ground-truth sharing for finite groups, and diagnostics for a learned ``U``.

A finite group ``G`` acts on a layer's inputs through ``rho_in`` and on its outputs
through ``rho_out``. The weights of the equivariant layers ``rho_out(g) W = W
rho_in(g)`` form a subspace, and its orthonormal basis ``U^G`` is the *exact* sharing
that MSR tries to learn (Proposition 1 of the paper). With row-major ``vec`` (as in
``W = (U @ v).reshape(n_out, n_in)``) the constraint of one generator reads::

    (rho_out(g) ⊗ rho_in(g)^{-T} - I) vec(W) = 0

This module builds ``U^G`` (:meth:`FiniteGroup.sharing_basis`, by the null space of
the stacked constraints or, for permutation representations, by orbits of weight
indices), measures how far a model or a learned ``U`` is from it
(:func:`equivariance_error`, :func:`compare_subspaces`, :func:`symmetry_report`),
hardens a learned ``U`` into an exact one (:func:`harden_to_group`,
:func:`tied_weight_partition`) and exports it as a frozen layer
(:func:`export_layer`).

Conventions
-----------
A permutation ``p`` (an integer array) stands for the matrix ``P = I[p]``, so
``(P x)[i] = x[p[i]]`` and, on a batch of row vectors, ``x @ P.T == x[..., p]``.
``cyclic_group(n)`` shifts like ``numpy.roll(x, 1)``. Images and filters are
square grids flattened row-major; a *regular* field has one channel per group element
(channel-major: ``(channel, pixel)``), channel ``c`` holding the filter transformed by
element ``c`` of :func:`grid_transforms`.

Examples
--------
>>> from msr_sklearn.groups import cyclic_group, symmetric_group
>>> cyclic_group(8).sharing_basis().shape        # circulant matrices
(64, 8)
>>> symmetric_group(8).sharing_basis().shape     # lambda I + gamma 11^T (DeepSets)
(64, 2)
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pandas as pd
import scipy.linalg
import torch
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.utils import check_random_state

__all__ = [
    "FiniteGroup",
    "SubspaceComparison",
    "candidate_generators",
    "compare_subspaces",
    "cyclic_group",
    "dihedral_group",
    "equivariance_error",
    "exact_group_conv_sharing",
    "exact_lifting_sharing",
    "export_layer",
    "grid_group",
    "grid_transforms",
    "harden_to_group",
    "lifting_filter_stack",
    "partition_distance",
    "partition_sharing",
    "stacked_sharing",
    "symmetric_group",
    "symmetry_report",
    "tied_weight_partition",
    "transform_grid",
    "trivial_group",
]

#: above this many elements, :meth:`FiniteGroup.elements` refuses to enumerate
MAX_ORDER = 100_000


# --------------------------------------------------------------------- representations
def _as_generator(rep, name):
    """A generator's image: ``(perm or None, matrix)``; perm when ``rep`` permutes."""
    rep = np.asarray(rep)
    if rep.ndim == 1:
        if not np.issubdtype(rep.dtype, np.integer):
            raise TypeError(f"{name}: a 1-D generator must be an integer permutation; "
                            f"got dtype {rep.dtype}")
        n = rep.shape[0]
        if n == 0 or not np.array_equal(np.sort(rep), np.arange(n)):
            raise ValueError(f"{name}: {rep.tolist()[:12]} is not a permutation of 0..{n - 1}")
        perm = rep.astype(np.int64)
        return perm, np.eye(n)[perm]
    if rep.ndim != 2 or rep.shape[0] != rep.shape[1] or rep.shape[0] == 0:
        raise ValueError(f"{name}: a generator must be a permutation (1-D) or a square "
                         f"matrix; got shape {rep.shape}")
    matrix = rep.astype(np.float64)
    if not np.all(np.isfinite(matrix)):
        raise ValueError(f"{name}: the matrix has non-finite entries")
    if abs(np.linalg.det(matrix)) < 1e-12:
        raise ValueError(f"{name}: the matrix is singular, so it is no group element")
    is_perm = (np.isin(matrix, (0.0, 1.0)).all() and (matrix.sum(0) == 1).all()
               and (matrix.sum(1) == 1).all())
    return (np.argmax(matrix, axis=1) if is_perm else None), matrix


def _compose(a, b):
    """The element ``a b`` (matrix product ``rho(a) rho(b)``) of two elements.

    An element is a tuple of sides ``(perm, None)`` or ``(None, matrix)``, one per
    space; for permutations ``I[p_a] I[p_b] = I[p_b[p_a]]``.
    """
    out = []
    for (pa, ma), (pb, mb) in zip(a, b):
        if pa is not None and pb is not None:
            out.append((pb[pa], None))
        else:
            out.append((None, _matrix((pa, ma)) @ _matrix((pb, mb))))
    return tuple(out)


def _rep(side):
    """A side as the constructor takes it: the permutation, else the matrix."""
    return side[0] if side[0] is not None else side[1]


def _matrix(side):
    perm, matrix = side
    return np.eye(perm.shape[0])[perm] if matrix is None else matrix


def _key(element):
    parts = []
    for perm, matrix in element:
        if perm is not None:
            parts.append(perm.astype(np.int64).tobytes())
        else:
            parts.append((np.round(matrix, 8) + 0.0).tobytes())
    return b"|".join(parts)


class FiniteGroup:
    """A finite group acting on a layer's inputs ``R^n_in`` and outputs ``R^n_out``.

    The group is given by generators; each generator has an image on the input side
    and one on the output side, either a permutation (integer array ``p``, the matrix
    ``I[p]``) or an invertible matrix. The group is the one the generators generate
    *as it acts* (two words acting identically on both sides are the same element),
    which is all that equivariance can see.

    Parameters
    ----------
    generators_in : sequence of array-like
        ``rho_in`` of each generator: 1-D permutations of ``0..n_in-1`` or
        ``(n_in, n_in)`` matrices.
    generators_out : sequence of array-like or None
        ``rho_out`` of each generator; ``None`` uses ``generators_in`` (the same action
        on inputs and outputs, ``n_out == n_in``).
    names : sequence of str or None
        A name per generator (default ``"g0", "g1", ...``), used by reports.
    name : str or None
        A name for the group, e.g. ``"C8"``.

    Examples
    --------
    >>> import numpy as np
    >>> from msr_sklearn.groups import FiniteGroup
    >>> swap = FiniteGroup([np.array([1, 0, 2])], names=["swap01"], name="S2")
    >>> swap.order, swap.sharing_basis().shape[1], swap.dimension()
    (2, 5, 5)
    """

    def __init__(self, generators_in, generators_out=None, names=None, name=None):
        generators_in = list(generators_in)
        if not generators_in:
            raise ValueError("a FiniteGroup needs at least one generator")
        generators_out = generators_in if generators_out is None else list(generators_out)
        if len(generators_out) != len(generators_in):
            raise ValueError(f"got {len(generators_in)} input and {len(generators_out)} output "
                             f"generators; every generator needs both images")
        if names is None:
            names = [f"g{i}" for i in range(len(generators_in))]
        names = tuple(str(n) for n in names)
        if len(names) != len(generators_in):
            raise ValueError(f"got {len(names)} names for {len(generators_in)} generators")
        if len(set(names)) != len(names):
            raise ValueError(f"generator names must be distinct; got {names}")
        gens = []
        for i, (gi, go) in enumerate(zip(generators_in, generators_out)):
            gens.append((_as_generator(gi, f"generator {names[i]!r} (input)"),
                         _as_generator(go, f"generator {names[i]!r} (output)")))
        dims = {(g[0][1].shape[0], g[1][1].shape[0]) for g in gens}
        if len(dims) != 1:
            raise ValueError(f"generators act on spaces of different sizes (n_in, n_out): "
                             f"{sorted(dims)}")
        (self.n_in, self.n_out), = dims
        # an element is a pair of sides (input, output), each (perm, None) or (None, matrix)
        self._gens = [tuple((p, None) if p is not None else (None, m) for p, m in g)
                      for g in gens]
        self.names = names
        self.name = name
        self._elements = None
        self._order = None

    # ------------------------------------------------------------------ basics
    @property
    def n_generators(self):
        return len(self._gens)

    @property
    def weight_shape(self):
        """``(n_out, n_in)``: the shape of the weights this group acts on."""
        return (self.n_out, self.n_in)

    @property
    def is_permutation(self):
        """Whether every generator permutes both inputs and outputs."""
        return all(side[0] is not None for g in self._gens for side in g)

    def generator_matrices(self):
        """``[(rho_in(g), rho_out(g)), ...]`` for the generators, as float arrays."""
        return [(_matrix(g[0]), _matrix(g[1])) for g in self._gens]

    def _identity(self):
        # a side stays a permutation when every generator permutes it (consistent keys)
        return tuple((np.arange(n), None) if all(g[j][0] is not None for g in self._gens)
                     else (None, np.eye(n)) for j, n in enumerate((self.n_in, self.n_out)))

    def _element_list(self, max_order=MAX_ORDER):
        if self._elements is None:
            self._elements = (self._permutation_closure(max_order) if self.is_permutation
                              else self._matrix_closure(max_order))
        return self._elements

    def _too_big(self, max_order):
        return ValueError(f"{self!r} has more than max_order={max_order} elements; raise "
                          f"max_order or work with its generators")

    def _permutation_closure(self, max_order):
        """Breadth-first closure, one frontier at a time (vectorized composition)."""
        gens = [np.concatenate([g[0][0], g[1][0] + self.n_in]) for g in self._gens]
        identity = np.arange(self.n_in + self.n_out)
        found = [identity[None, :]]
        seen = {identity.tobytes()}
        frontier = identity[None, :]
        while len(frontier):
            fresh = []
            # element-major, as a queue would visit them; gen[e] is the matrix product e g
            products = np.stack([gen[frontier] for gen in gens], axis=1)
            for row in products.reshape(-1, identity.shape[0]):
                key = row.tobytes()
                if key not in seen:
                    if len(seen) >= max_order:
                        raise self._too_big(max_order)
                    seen.add(key)
                    fresh.append(row)
            frontier = np.array(fresh, dtype=identity.dtype).reshape(-1, identity.shape[0])
            found.append(frontier)
        rows = np.concatenate(found)
        return [((r[:self.n_in], None), (r[self.n_in:] - self.n_in, None)) for r in rows]

    def _matrix_closure(self, max_order):
        identity = self._identity()
        seen = {_key(identity): identity}
        queue = deque([identity])
        while queue:
            element = queue.popleft()
            for gen in self._gens:
                new = _compose(element, gen)
                key = _key(new)
                if key not in seen:
                    if len(seen) >= max_order:
                        raise self._too_big(max_order)
                    seen[key] = new
                    queue.append(new)
        return list(seen.values())

    def elements(self, max_order=MAX_ORDER):
        """All group elements as ``(rho_in(g), rho_out(g))`` matrix pairs, identity first.

        Breadth-first closure of the generators. Raises ``ValueError`` beyond
        ``max_order`` elements.
        """
        return [(_matrix(a), _matrix(b)) for a, b in self._element_list(max_order)]

    def permutations(self, max_order=MAX_ORDER):
        """All group elements as ``(p_in, p_out)`` permutation pairs (permutation groups)."""
        if not self.is_permutation:
            raise TypeError(f"{self!r} is not a permutation group; use elements()")
        return [(a[0], b[0]) for a, b in self._element_list(max_order)]

    @property
    def order(self):
        """The number of group elements.

        Permutation groups use the Schreier-Sims algorithm, without enumerating
        (``S_20`` takes milliseconds, ``S_70`` seconds); matrix groups are enumerated
        (at most :data:`MAX_ORDER` elements).
        """
        if self._order is None:
            if self.is_permutation:
                gens = [np.concatenate([g[0][0], g[1][0] + self.n_in]) for g in self._gens]
                self._order = _permutation_group_order(gens, self.n_in + self.n_out)
            else:
                self._order = len(self._element_list())
        return self._order

    def subgroup(self, generators, name=None):
        """The subgroup generated by some generators (given by index or by name)."""
        index = []
        for g in generators:
            if isinstance(g, str):
                if g not in self.names:
                    raise ValueError(f"no generator named {g!r}; the names are {self.names}")
                g = self.names.index(g)
            if not 0 <= int(g) < self.n_generators:
                raise ValueError(f"generator index {g} is out of range for "
                                 f"{self.n_generators} generators")
            index.append(int(g))
        if not index:
            return trivial_group(self.n_in, self.n_out)
        gens = [self._gens[i] for i in index]
        return FiniteGroup([_rep(g[0]) for g in gens], [_rep(g[1]) for g in gens],
                           names=[self.names[i] for i in index], name=name)

    @classmethod
    def concatenate(cls, groups, name=None):
        """One group from the generators of several (e.g. to offer all as candidates).

        Repeated generator names get the group's name (or position) as a prefix.
        """
        groups = list(groups)
        if not groups:
            raise ValueError("concatenate needs at least one group")
        shapes = {g.weight_shape for g in groups}
        if len(shapes) != 1:
            raise ValueError(f"the groups act on weights of different shapes: {sorted(shapes)}")
        all_names = [n for g in groups for n in g.names]
        gin, gout, names = [], [], []
        for j, group in enumerate(groups):
            prefix = group.name or f"group{j}"
            for gen, n in zip(group._gens, group.names):
                gin.append(_rep(gen[0]))
                gout.append(_rep(gen[1]))
                names.append(f"{prefix}.{n}" if all_names.count(n) > 1 else n)
        return cls(gin, gout, names=names, name=name)

    def lifted(self, max_order=MAX_ORDER):
        """The same input action, with outputs in the regular representation.

        Output channel ``j`` belongs to element ``g_j`` of :meth:`elements`, and ``h``
        moves channel ``idx(h^{-1} g_j)`` to ``j``: the action on the outputs of
        :func:`stacked_sharing` (Proposition 1's lifting layer ``R^n_in -> R^|G|``).
        """
        elements = self._element_list(max_order)
        index = {_key(e): j for j, e in enumerate(elements)}
        out_perms = []
        for gen in self._gens:
            inverse = _inverse(gen)
            out_perms.append(np.array([index[_key(_compose(inverse, e))] for e in elements]))
        gin = [_rep(g[0]) for g in self._gens]
        name = None if self.name is None else f"{self.name} (lifted)"
        return FiniteGroup(gin, out_perms, names=self.names, name=name)

    # ---------------------------------------------------------------- sharing
    def sharing_basis(self, method="auto", rcond=1e-6):
        """An orthonormal basis ``U^G`` (``(n_out*n_in, r)``) of the equivariant weights.

        Parameters
        ----------
        method : {"auto", "orbits", "nullspace"}
            ``"nullspace"``: null space of the stacked constraints, from the
            eigenvectors of their Gram matrix (any representation; cost grows as
            ``(n_out*n_in)^3``). ``"orbits"``: one
            column per orbit of weight indices ``(a, b)`` (permutation groups only; no
            SVD, 0/1 columns scaled to unit norm). ``"auto"`` picks orbits when it can.
        rcond : float
            Singular values of the stacked constraints below ``rcond`` times the
            largest count as zero (``"nullspace"``; EMLP's absolute 1e-5 is about
            ``rcond=5e-6`` for permutations).
        """
        if method not in ("auto", "orbits", "nullspace"):
            raise ValueError(f"method must be 'auto', 'orbits' or 'nullspace'; got {method!r}")
        if method == "orbits" and not self.is_permutation:
            raise ValueError(f"method='orbits' needs a permutation group; {self!r} has "
                             f"matrix generators")
        if method == "nullspace" or (method == "auto" and not self.is_permutation):
            return _nullspace_basis(self.generator_matrices(), rcond)
        return partition_sharing(self.weight_orbits())

    def weight_orbits(self):
        """The orbit label of every weight index (row-major), shape ``(n_out*n_in,)``.

        Weight ``(a, b)`` is tied to ``(p_out[a], p_in[b])`` under every generator; the
        labels number the orbits in order of first appearance.
        """
        if not self.is_permutation:
            raise ValueError(f"weight orbits need a permutation group; {self!r} has matrix "
                             f"generators")
        n_w = self.n_out * self.n_in
        nodes = np.arange(n_w).reshape(self.n_out, self.n_in)
        rows, cols = [], []
        for (p_in, _), (p_out, _) in self._gens:
            rows.append(nodes.ravel())
            cols.append(nodes[p_out][:, p_in].ravel())
        graph = coo_matrix((np.ones(n_w * self.n_generators),
                            (np.concatenate(rows), np.concatenate(cols))), shape=(n_w, n_w))
        _, labels = connected_components(graph, directed=True, connection="weak")
        return _relabel(labels)

    def dimension(self, max_order=MAX_ORDER):
        """``dim U^G`` by the character formula ``(1/|G|) sum_g tr rho_out(g) tr rho_in(g)``.

        Valid for every real representation of a finite group (its characters are
        real, so ``chi(g^-1) = chi(g)``); an independent check of :meth:`sharing_basis`.
        """
        total = 0.0
        elements = self._element_list(max_order)
        for a, b in elements:
            total += _trace(a) * _trace(b)
        return int(round(total / len(elements)))

    def generator_residuals(self, U):
        """Per generator: ``||(rho_out(g) ⊗ rho_in(g)^{-T} - I) orth(U)||_F / sqrt(k)``.

        0 when every weight of ``span(U)`` is equivariant under the generator; for a
        random subspace about ``sqrt(2 f)``, ``f`` the fraction of weights the
        generator moves (at most 2).
        """
        q = _orth(np.asarray(U, dtype=np.float64), "U")
        if q.shape[0] != self.n_out * self.n_in:
            raise ValueError(f"U has {q.shape[0]} rows; weights of shape {self.weight_shape} "
                             f"need {self.n_out * self.n_in}")
        k = q.shape[1]
        w = q.T.reshape(k, self.n_out, self.n_in)
        return np.array([np.linalg.norm(_act_on_weights(w, g) - w) / math.sqrt(k)
                         for g in self._gens])

    def __repr__(self):
        name = f"{self.name!r}, " if self.name else ""
        return (f"FiniteGroup({name}n_in={self.n_in}, n_out={self.n_out}, "
                f"generators={list(self.names)})")


def _trace(side):
    perm, matrix = side
    return float(np.sum(perm == np.arange(perm.shape[0]))) if matrix is None \
        else float(np.trace(matrix))


def _inverse(element):
    out = []
    for perm, matrix in element:
        if perm is not None:
            inv = np.empty_like(perm)
            inv[perm] = np.arange(perm.shape[0])
            out.append((inv, None))
        else:
            out.append((None, np.linalg.inv(matrix)))
    return tuple(out)


def _act_on_weights(w, element):
    """``rho_out(g) W rho_in(g)^{-1}`` for a stack of weights ``(..., n_out, n_in)``."""
    (p_in, m_in), (p_out, m_out) = element
    w = w[..., p_out, :] if p_out is not None else m_out @ w
    return w[..., p_in] if p_in is not None else w @ np.linalg.inv(m_in)


def _nullspace_basis(generator_matrices, rcond):
    """Orthonormal null space of the stacked constraints ``C = [A_g - I]_g``.

    The eigenvectors of ``C^T C`` for eigenvalues below ``rcond^2 * max`` (singular
    values of ``C`` below ``rcond * max``): an ``N × N`` symmetric eigenproblem, several
    times cheaper than the SVD of the stacked ``(#gens·N) × N`` matrix, and as
    accurate, because the spectral gap of finite-group constraints is large.
    """
    n_in, n_out = generator_matrices[0][0].shape[0], generator_matrices[0][1].shape[0]
    eye = np.eye(n_in * n_out)
    gram = np.zeros_like(eye)
    for m_in, m_out in generator_matrices:
        c = np.kron(m_out, np.linalg.inv(m_in).T) - eye
        gram += c.T @ c
    values, vectors = np.linalg.eigh(gram)
    cut = rcond ** 2 * max(values[-1], np.finfo(float).tiny)
    return vectors[:, values <= cut]


def _relabel(labels):
    """Labels ``0, 1, ...`` in order of first appearance; negative labels are kept."""
    labels = np.asarray(labels)
    out = np.full(labels.shape, -1, dtype=np.int64)
    keep = labels >= 0
    _, first, inverse = np.unique(labels[keep], return_index=True, return_inverse=True)
    rank = np.empty_like(first)
    rank[np.argsort(first)] = np.arange(first.shape[0])
    out[keep] = rank[inverse]
    return out


def _permutation_group_order(generators, degree):
    """Order of a permutation group by the deterministic Schreier-Sims algorithm.

    Permutations act as ``point -> p[point]`` and ``a∘b`` is ``a[b]``. Transversals
    only ever grow, so a Schreier generator that once sifted to the identity stays
    sifted and is never tested again.
    """
    identity = np.arange(degree)
    gens = [np.asarray(g) for g in generators if not np.array_equal(g, identity)]
    if not gens:
        return 1

    def inverse(p):
        inv = np.empty_like(p)
        inv[p] = identity
        return inv

    base, strong, transversals, inverses, checked = [], [], [], [], []

    def extend_orbit(level):
        """Grow the transversal of ``level`` under all of its strong generators."""
        trans = transversals[level]
        queue = list(trans)
        for point in queue:
            u = trans[point]
            for s in strong[level]:
                image = int(s[point])
                if image not in trans:
                    trans[image] = s[u]  # s∘u maps the base point to s(point)
                    inverses[level][image] = inverse(trans[image])
                    queue.append(image)

    def add_level(p):
        b = int(np.flatnonzero(p != identity)[0])
        base.append(b)
        strong.append([])
        transversals.append({b: identity})
        inverses.append({b: identity})
        checked.append(set())

    def add_generator(level, g):
        strong[level].append(g)
        extend_orbit(level)

    def sift(g, start):
        for j in range(start, len(base)):
            image = int(g[base[j]])
            if image not in transversals[j]:
                return g, j
            g = inverses[j][image][g]
        return g, len(base)

    for g in gens:
        if all(g[b] == b for b in base):
            add_level(g)
    for level in range(len(base)):
        for g in gens:
            if all(g[b] == b for b in base[:level]):
                add_generator(level, g)
    i = len(base) - 1
    while i >= 0:
        moved = False
        for point, u in list(transversals[i].items()):
            for index, s in enumerate(strong[i]):
                if (point, index) in checked[i]:
                    continue
                su = s[u]
                h = inverses[i][int(su[base[i]])][su]
                residue, j = sift(h, i + 1)
                if j == len(base) and np.array_equal(residue, identity):
                    checked[i].add((point, index))
                    continue
                if j == len(base):
                    add_level(residue)
                for level in range(i + 1, j + 1):
                    add_generator(level, residue)
                i, moved = j, True
                break
            if moved:
                break
        if not moved:
            i -= 1
    return math.prod(len(t) for t in transversals)


# --------------------------------------------------------------------- ready-made groups
def _check_positive(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")


def trivial_group(n_in, n_out=None):
    """The one-element group (every weight is free).

    Parameters
    ----------
    n_in : int
        The dimension of the inputs.
    n_out : int or None, default=None
        The dimension of the outputs; ``None`` uses ``n_in``.

    Returns
    -------
    FiniteGroup
        One identity generator named ``"identity"``; its :meth:`~FiniteGroup.sharing_basis`
        is the identity on all ``n_out * n_in`` weights.

    Examples
    --------
    >>> from msr_sklearn.groups import trivial_group
    >>> g = trivial_group(3, 2)
    >>> g.order, g.weight_shape, g.sharing_basis().shape
    (1, (2, 3), (6, 6))
    """
    n_out = n_in if n_out is None else n_out
    return FiniteGroup([np.arange(n_in)], [np.arange(n_out)], names=["identity"], name="trivial")


def cyclic_group(n):
    """``C_n`` shifting ``R^n`` (``x -> roll(x, 1)``) on inputs and outputs: circulants.

    Parameters
    ----------
    n : int
        The number of points (the order of the group), at least 2.

    Returns
    -------
    FiniteGroup
        Named ``"Cn"``, with the single generator ``"shift"``.

    Examples
    --------
    >>> from msr_sklearn.groups import cyclic_group
    >>> g = cyclic_group(8)
    >>> g.order, g.dimension()
    (8, 8)
    """
    _check_positive("n", n, 2)
    return FiniteGroup([(np.arange(n) - 1) % n], names=["shift"], name=f"C{n}")


def dihedral_group(n):
    """``D_n`` on the vertices of an ``n``-gon: the shift and the reflection ``i -> -i``.

    Parameters
    ----------
    n : int
        The number of vertices, at least 3 (the group has ``2 n`` elements).

    Returns
    -------
    FiniteGroup
        Named ``"Dn"``, with the generators ``"shift"`` and ``"reflection"``, acting
        the same way on inputs and outputs.

    Examples
    --------
    >>> from msr_sklearn.groups import dihedral_group
    >>> dihedral_group(8).order, dihedral_group(8).sharing_basis().shape[1]
    (16, 5)
    """
    _check_positive("n", n, 3)
    return FiniteGroup([(np.arange(n) - 1) % n, (-np.arange(n)) % n],
                       names=["shift", "reflection"], name=f"D{n}")


def symmetric_group(n):
    """``S_n`` permuting ``R^n``, generated by the transpositions ``(0 k)``.

    Parameters
    ----------
    n : int
        The number of permuted points, at least 2.

    Returns
    -------
    FiniteGroup
        Named ``"Sn"``, with the ``n - 1`` generators ``"swap(0,k)"``, acting the
        same way on inputs and outputs; its sharing has 2 columns (``lambda I + gamma
        11^T``).

    Examples
    --------
    >>> from msr_sklearn.groups import symmetric_group
    >>> symmetric_group(5).order
    120
    """
    _check_positive("n", n, 2)
    gens, names = [], []
    for k in range(1, n):
        p = np.arange(n)
        p[[0, k]] = p[[k, 0]]
        gens.append(p)
        names.append(f"swap(0,{k})")
    return FiniteGroup(gens, names=names, name=f"S{n}")


_GRID_GROUPS = {"c4": ((0, 0), (1, 0), (2, 0), (3, 0)),
                "d4": ((0, 0), (1, 0), (2, 0), (3, 0), (0, 1), (1, 1), (2, 1), (3, 1))}


def grid_transforms(group="c4"):
    """The elements of ``C4``/``D4`` on a square grid, in channel order.

    Element ``c`` is ``(r, f)``: flip left-right ``f`` times, then rotate by
    ``r * 90°`` counter-clockwise (``numpy.rot90``). This is the order of the channels
    of a regular field (:func:`grid_group`, :func:`~msr_sklearn.datasets.make_rotation_tasks`).

    Parameters
    ----------
    group : {"c4", "d4"}, default="c4"
        The rotations of the square (4 elements), or the rotations and reflections
        (8 elements).

    Returns
    -------
    tuple of (int, int)
        The transforms ``(r, f)``, identity first; apply one with :func:`transform_grid`.

    Examples
    --------
    >>> from msr_sklearn.groups import grid_transforms
    >>> grid_transforms("c4")
    ((0, 0), (1, 0), (2, 0), (3, 0))
    """
    if group not in _GRID_GROUPS:
        raise ValueError(f"group must be one of {sorted(_GRID_GROUPS)}; got {group!r}")
    return _GRID_GROUPS[group]


def transform_grid(a, transform):
    """Apply a grid transform ``(r, f)`` to the last two axes of ``a``.

    Parameters
    ----------
    a : array-like of shape (..., H, W)
        Images or filters; the leading axes (batch, channels) are left alone.
    transform : tuple (r, f)
        Flip left-right when ``f`` is true, then rotate by ``r * 90°``
        counter-clockwise (as :func:`numpy.rot90`); e.g. an element of
        :func:`grid_transforms`.

    Returns
    -------
    ndarray of shape (..., H, W), or (..., W, H) for an odd ``r``
        A view of ``a`` where possible (no copy).

    Examples
    --------
    >>> import numpy as np
    >>> from msr_sklearn.groups import transform_grid
    >>> a = np.arange(4).reshape(2, 2)
    >>> transform_grid(a, (1, 0))                 # rotate 90° counter-clockwise
    array([[1, 3],
           [0, 2]])
    >>> transform_grid(a, (0, 1))                 # flip left-right
    array([[1, 0],
           [3, 2]])
    """
    r, f = transform
    a = np.flip(a, axis=-1) if f else a
    return np.rot90(a, r, axes=(-2, -1))


def _grid_permutation(size, transform):
    """The pixel permutation ``p`` with ``transform(x).ravel() == x.ravel()[p]``."""
    return transform_grid(np.arange(size * size).reshape(size, size), transform).ravel()


def lifting_filter_stack(group="c4", kernel_size=3):
    """The stacked pixel permutations ``[π(g_1); ...; π(g_m)]`` of a square filter.

    Shape ``(m * kernel_size², kernel_size²)``, copies in :func:`grid_transforms` order:
    Proposition 1's ``U^G`` for one filter, and the exact spatial factor ``S`` of an
    MSR-Conv lifting convolution (:func:`exact_lifting_sharing`).

    Parameters
    ----------
    group : {"c4", "d4"}, default="c4"
        The grid group (``m = 4`` or ``8`` copies), see :func:`grid_transforms`.
    kernel_size : int, default=3
        The side of the square filter.

    Returns
    -------
    ndarray of shape (m * kernel_size**2, kernel_size**2)
        0/1 entries; block ``c`` maps a flattened filter to its transform by element
        ``c`` (as :func:`transform_grid`).

    Examples
    --------
    >>> from msr_sklearn.groups import lifting_filter_stack
    >>> lifting_filter_stack("d4", kernel_size=3).shape
    (72, 9)
    """
    eye = np.eye(kernel_size * kernel_size)
    return np.vstack([eye[_grid_permutation(kernel_size, t)] for t in grid_transforms(group)])


def exact_lifting_sharing(group="c4", n_fields=1, in_channels=1, kernel_size=3):
    """An MSR-Conv sharing set to an exact lifting group convolution.

    A :class:`~msr_sklearn.nn.ConvFilterSharing` with identity field and channel factors
    and the spatial factor :func:`lifting_filter_stack`: output channel
    ``field * m + c`` holds the field's filter transformed by ``grid_transforms(group)[c]``.

    Parameters
    ----------
    group : {"c4", "d4"}, default="c4"
        The grid group; each field gets ``m = 4`` (or ``8``) output channels.
    n_fields : int, default=1
        The number of independent filters (regular output fields).
    in_channels : int, default=1
        The input channels of the convolution (each treated as a trivial field).
    kernel_size : int, default=3
        The side of the square filters.

    Returns
    -------
    ConvFilterSharing
        With ``weight_shape == (n_fields * m, in_channels, kernel_size, kernel_size)``
        and ``n_fields * in_channels * kernel_size**2`` free filter values.

    Examples
    --------
    >>> from msr_sklearn.groups import exact_lifting_sharing
    >>> exact_lifting_sharing("c4", n_fields=2).weight_shape
    (8, 1, 3, 3)
    """
    stack = lifting_filter_stack(group, kernel_size)
    return _conv_sharing_with_spatial_factor(stack, n_fields, in_channels, kernel_size,
                                             n_copies=len(stack) // kernel_size ** 2,
                                             in_copies=1)


def exact_group_conv_sharing(group="c4", n_fields=1, in_fields=1, kernel_size=3):
    """An MSR-Conv sharing set to an exact group convolution between regular fields.

    The layer after a lifting layer (:func:`exact_lifting_sharing`): its input is
    ``in_fields`` regular fields of ``m`` channels (``m = 4`` for C4, ``8`` for D4), and
    each of its ``n_fields`` output fields is regular too. A
    :class:`~msr_sklearn.nn.ConvFilterSharing` with ``in_copies=m``, identity field
    factors and the spatial factor ``S`` an orthonormal basis of the equivariant filter
    blocks of one field pair (``dim = m * kernel_size²``, from :func:`grid_group`).
    Stacking it after a lifting layer keeps the whole front-end exactly equivariant.

    Parameters
    ----------
    group : {"c4", "d4"}, default="c4"
        The grid group, see :func:`grid_transforms`.
    n_fields : int, default=1
        Output fields (``n_fields * m`` output channels).
    in_fields : int, default=1
        Input fields (``in_fields * m`` input channels, in the order a lifting or
        group convolution layer produces them).
    kernel_size : int, default=3
        The side of the square filters.

    Returns
    -------
    ConvFilterSharing
        With ``weight_shape == (n_fields * m, in_fields * m, kernel_size, kernel_size)``
        and ``n_fields * in_fields * m * kernel_size**2`` free filter values.

    Examples
    --------
    >>> from msr_sklearn.groups import exact_group_conv_sharing
    >>> sharing = exact_group_conv_sharing("c4", n_fields=2, in_fields=3)
    >>> sharing.weight_shape, sharing.n_filters
    ((8, 12, 3, 3), 216)
    """
    _check_positive("n_fields", n_fields)
    _check_positive("in_fields", in_fields)
    m = len(grid_transforms(group))
    basis = grid_group(kernel_size, group, in_rep="regular", out_rep="regular",
                       out_size=1).sharing_basis()
    return _conv_sharing_with_spatial_factor(basis, n_fields, in_fields * m, kernel_size,
                                             n_copies=m, in_copies=m)


def _conv_sharing_with_spatial_factor(spatial, n_fields, in_channels, kernel_size, n_copies,
                                      in_copies):
    """A ConvFilterSharing with identity field factors and ``S = spatial``: every field
    pair gets the same block of filters, ``spatial`` applied to its own latent values."""
    import torch

    from .nn import ConvFilterSharing

    in_fields = in_channels // in_copies
    sharing = ConvFilterSharing(n_fields, in_channels, kernel_size, n_copies=n_copies,
                                in_copies=in_copies,
                                factor_filters=(n_fields, in_fields, spatial.shape[1]))
    with torch.no_grad():
        sharing.factors[0].copy_(torch.eye(n_fields))
        sharing.factors[1].copy_(torch.eye(in_fields))
        sharing.factors[2].copy_(torch.as_tensor(spatial))
    return sharing


def _regular_channel_permutation(group, transform):
    """Channel ``c`` of ``g·y`` is channel ``idx(g^{-1} g_c)`` of ``y`` (left regular)."""
    elements = grid_transforms(group)
    probe = np.arange(9).reshape(3, 3)  # no nontrivial D4 element fixes it
    signatures = {transform_grid(probe, e).tobytes(): j for j, e in enumerate(elements)}
    # g^{-1} g_c: the element mapping probe to g^{-1}(g_c(probe))
    inverse = next(e for e in elements
                   if np.array_equal(transform_grid(transform_grid(probe, e), transform), probe))
    return np.array([signatures[transform_grid(transform_grid(probe, e), inverse).tobytes()]
                     for e in elements])


def _grid_field_permutation(size, group, rep, n_fields, transform):
    pixels = _grid_permutation(size, transform)
    if rep == "trivial":
        channels = np.arange(n_fields)
    else:
        regular = _regular_channel_permutation(group, transform)
        m = len(regular)
        channels = (np.arange(n_fields)[:, None] * m + regular[None, :]).ravel()
    return (channels[:, None] * size * size + pixels[None, :]).ravel()


def grid_group(size, group="c4", in_rep="trivial", out_rep="trivial", out_size=None,
               n_out_fields=1):
    """``C4`` or ``D4`` rotating (and flipping) square grids of inputs and outputs.

    Inputs are one ``size × size`` field, outputs ``n_out_fields`` fields on an
    ``out_size × out_size`` grid (channel-major). A ``"trivial"`` field is one channel
    of pixels that only move; a ``"regular"`` field has one channel per element of
    :func:`grid_transforms`, and the group also permutes its channels. ``"trivial"``
    → ``"regular"`` is a lifting layer (e.g. a valid convolution of a ``size``-image
    with ``out_size = size - kernel + 1``, or one ``size × size`` patch with
    ``out_size=1``).

    Parameters
    ----------
    size : int
    group : {"c4", "d4"}
    in_rep, out_rep : {"trivial", "regular"}
    out_size : int or None
        Defaults to ``size``.
    n_out_fields : int

    Examples
    --------
    >>> from msr_sklearn.groups import grid_group
    >>> grid_group(5, "c4").sharing_basis().shape[1]          # 625 weights -> 157
    157
    >>> lift = grid_group(3, "c4", out_rep="regular", out_size=1)
    >>> lift.weight_shape, lift.sharing_basis().shape[1]     # 36 weights -> 9
    ((4, 9), 9)
    """
    _check_positive("size", size)
    out_size = size if out_size is None else out_size
    _check_positive("out_size", out_size)
    _check_positive("n_out_fields", n_out_fields)
    for name, rep in (("in_rep", in_rep), ("out_rep", out_rep)):
        if rep not in ("trivial", "regular"):
            raise ValueError(f"{name} must be 'trivial' or 'regular'; got {rep!r}")
    gens = ((1, 0),) if group == "c4" else ((1, 0), (0, 1))
    grid_transforms(group)  # validates group
    gin = [_grid_field_permutation(size, group, in_rep, 1, t) for t in gens]
    gout = [_grid_field_permutation(out_size, group, out_rep, n_out_fields, t) for t in gens]
    return FiniteGroup(gin, gout, names=["rot90", "flip"][:len(gens)], name=group.upper())


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
    >>> from msr_sklearn.groups import candidate_generators
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


def stacked_sharing(group, max_order=MAX_ORDER):
    """Proposition 1: ``U^G = [rho_in(g_1); ...; rho_in(g_m)]``, shape ``(m*n_in, n_in)``.

    Row ``j`` of ``W = (U v).reshape(m, n_in)`` is ``rho_in(g_j) v``, so ``(W x)_j =
    <rho_in(g_j) v, x>`` is the group convolution of ``x`` with the filter ``v``. Its
    output action is :meth:`FiniteGroup.lifted` (the group's own output action is
    ignored); ``rho_in`` must be orthogonal (permutations are). The columns are
    orthogonal but not normalized (each has norm ``sqrt(m)``).

    Parameters
    ----------
    group : FiniteGroup
        Its elements, in :meth:`FiniteGroup.elements` order (identity first), give
        the ``m`` row blocks.
    max_order : int, default=MAX_ORDER
        Raise ``ValueError`` rather than enumerate a group with more elements.

    Returns
    -------
    ndarray of shape (m * n_in, n_in)

    Examples
    --------
    >>> from msr_sklearn.groups import cyclic_group, stacked_sharing
    >>> stacked_sharing(cyclic_group(4)).shape
    (16, 4)
    """
    return np.vstack([m_in for m_in, _ in group.elements(max_order)])


# --------------------------------------------------------------------- subspaces
def _orth(U, name="U", rcond=1e-10):
    """An orthonormal basis of ``span(U)`` (``U`` itself when already orthonormal).

    Rank-revealing QR rather than an SVD: exact bases of lifting layers have
    thousands of columns.
    """
    U = _to_numpy(U)
    if U.ndim != 2 or U.shape[1] == 0:
        raise ValueError(f"{name} must be a 2-D array (n_weights, k) with k >= 1; got shape "
                         f"{U.shape}")
    if not np.all(np.isfinite(U)):
        raise ValueError(f"{name} has non-finite entries")
    probe = np.random.default_rng(0).standard_normal((U.shape[1], 2))
    if np.allclose(U.T @ (U @ probe), probe, rtol=0, atol=1e-12):
        return U
    q, r, _ = scipy.linalg.qr(U, mode="economic", pivoting=True)
    diag = np.abs(np.diag(r))
    rank = int(np.sum(diag > rcond * diag[0])) if diag.size and diag[0] > 0 else 0
    if rank == 0:
        raise ValueError(f"{name} is zero: it spans no subspace")
    return q[:, :rank]


class SubspaceComparison:
    """How ``span(U)`` sits relative to a reference subspace (angles in radians).

    Returned by :func:`compare_subspaces`, which computes the constructor's arguments.

    Parameters
    ----------
    containment_angles : ndarray of shape (dim_reference,)
        The angle of each reference direction to ``span(U)``, largest first.
    excess : float
        The fraction of ``span(U)`` outside the reference.
    principal_angles : ndarray of shape (min(dim, dim_reference),)
        The principal angles between the two subspaces.
    dim : int
        ``dim span(U)``.
    dim_reference : int
        The dimension of the reference subspace.

    Attributes
    ----------
    containment_angle : float
        Largest angle between a reference direction and ``span(U)``: 0 when the
        reference lies inside ``span(U)``, ``pi/2`` when ``dim U < dim reference``.
    containment_angles : ndarray
        All ``dim reference`` such angles, largest first.
    excess : float
        ``||(I - P_ref) orth(U)||_F^2 / dim U``: the fraction of ``span(U)`` outside the
        reference (0 when ``span(U)`` lies inside it).
    chordal_distance : float
        ``sqrt(sum sin^2 theta_i)`` over the ``min(dim U, dim ref)`` principal angles.
    max_angle : float
        The largest of those principal angles (as :func:`scipy.linalg.subspace_angles`).
    principal_angles : ndarray
        The ``min(dim U, dim ref)`` principal angles.
    dim, dim_reference : int
        The dimensions of ``span(U)`` and of the reference.

    Examples
    --------
    >>> from msr_sklearn.groups import compare_subspaces, cyclic_group, dihedral_group
    >>> c = compare_subspaces(cyclic_group(6).sharing_basis(),      # circulants
    ...                       dihedral_group(6).sharing_basis())    # symmetric circulants
    >>> c.dim, c.dim_reference
    (6, 4)
    >>> c.containment_angle < 1e-10, round(c.excess, 3)   # D6 sharing inside, 2 of 6 out
    (True, 0.333)
    >>> sorted(c.as_dict())
    ['chordal_distance', 'containment_angle', 'dim', 'dim_reference', 'excess', 'max_angle']
    """

    def __init__(self, containment_angles, excess, principal_angles, dim, dim_reference):
        self.containment_angles = containment_angles
        self.containment_angle = float(containment_angles.max())
        self.excess = float(excess)
        self.principal_angles = principal_angles
        self.max_angle = float(principal_angles.max())
        self.chordal_distance = float(np.sqrt(np.sum(np.sin(principal_angles) ** 2)))
        self.dim, self.dim_reference = int(dim), int(dim_reference)

    def as_dict(self):
        return {"dim": self.dim, "dim_reference": self.dim_reference,
                "containment_angle": self.containment_angle, "excess": self.excess,
                "chordal_distance": self.chordal_distance, "max_angle": self.max_angle}

    def __repr__(self):
        items = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in self.as_dict().items())
        return f"SubspaceComparison({items})"


def compare_subspaces(U, reference):
    """Compare a learned ``U`` with a reference sharing (e.g. ``U^G``); spans only.

    ``U`` is identifiable only up to ``U -> U R``, so only column spans are compared.
    Angles combine sines and cosines, so small and large angles stay accurate.

    Parameters
    ----------
    U, reference : array-like of shape (n_weights, k) and (n_weights, r)

    Returns
    -------
    SubspaceComparison

    Examples
    --------
    >>> import numpy as np
    >>> from msr_sklearn.groups import compare_subspaces, cyclic_group
    >>> UG = cyclic_group(6).sharing_basis()
    >>> bigger = np.hstack([UG, np.random.default_rng(0).normal(size=(36, 2))])
    >>> c = compare_subspaces(bigger, UG)     # U^G inside; 2 of 8 directions outside
    >>> c.containment_angle < 1e-10, round(c.excess, 3)
    (True, 0.25)
    """
    q = _orth(U, "U")
    ref = _orth(reference, "reference")
    if q.shape[0] != ref.shape[0]:
        raise ValueError(f"U has {q.shape[0]} rows and reference {ref.shape[0]}: they describe "
                         f"weights of different sizes")
    k, r = q.shape[1], ref.shape[1]
    cross = ref.T @ q
    residual_q = q - ref @ cross
    # the min(k, r) principal angles: sines from the thinner residual (accurate near 0),
    # cosines from the cross products (accurate near pi/2)
    thin = residual_q if k <= r else ref - q @ cross.T
    sines = np.sort(np.linalg.svd(thin, compute_uv=False))[::-1]
    cosines = np.sort(np.linalg.svd(cross, compute_uv=False))[:sines.shape[0]]
    angles = np.arctan2(sines, cosines)
    # every reference direction that span(U) cannot hold (r > k) is at pi/2
    containment = np.concatenate([np.full(max(0, r - k), np.pi / 2), angles])
    excess = np.sum(residual_q ** 2) / k
    return SubspaceComparison(containment, excess, angles, k, r)


# --------------------------------------------------------------------- inputs
def _sharing_of(symmetry, layer=0, weight_shape=None, flatten=True):
    """``(U as float64 ndarray, weight_shape)`` from a symmetry, layer, sharing or array.

    A plain array keeps ``weight_shape`` (``None`` when not given); with ``flatten``,
    weight shapes of more than two axes (conv filters) are viewed as ``(n_out, rest)``.
    """
    from .nn import MetaLayer, Sharing
    from .symmetry import LearnedSymmetry

    if isinstance(symmetry, LearnedSymmetry):
        network = symmetry.build_network()
        symmetry = network.layers[symmetry._layer_index(layer)]
    if isinstance(symmetry, MetaLayer):
        symmetry = symmetry.sharing
    if isinstance(symmetry, Sharing):
        with torch.no_grad():
            U = symmetry.matrix().detach().cpu().double().numpy()
        shape = symmetry.weight_shape
    else:
        U = _to_numpy(symmetry)
        shape = None if weight_shape is None else tuple(int(s) for s in weight_shape)
    if U.ndim != 2:
        raise ValueError(f"U must be a 2-D array (n_weights, k); got shape {U.shape}")
    if shape is not None:
        if U.shape[0] != math.prod(shape):
            raise ValueError(f"U of shape {U.shape} does not fit weights of shape {shape}")
        if flatten and len(shape) != 2:
            shape = (shape[0], math.prod(shape[1:]))
    return U, shape


def _to_numpy(a):
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=np.float64)


# --------------------------------------------------------------------- equivariance
def _module_device_dtype(module):
    for t in list(module.parameters()) + list(module.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def _as_functions(model, layer, n_draws, rng):
    """The torch functions ``(N, d_in) -> (N, d_out)`` to test, with device and dtype."""
    from .nn import MetaLayer
    from .symmetry import LearnedSymmetry

    if isinstance(model, LearnedSymmetry):
        net_layer = model.build_network().layers[model._layer_index(layer)]
        return _random_filter_functions(net_layer, n_draws, rng)
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
    >>> from msr_sklearn.groups import cyclic_group, equivariance_error, export_layer
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
def symmetry_report(symmetry, candidates=None, layer=0, tol=0.3, weight_shape=None):
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
        An array ``U`` of shape ``(n_out*n_in, k)`` needs ``weight_shape``.
    candidates : FiniteGroup, sequence of FiniteGroup or None
        The candidate generators (all generators of the given groups). ``None`` uses
        :func:`candidate_generators` for a square layer.
    layer : int, default=0
        The layer of a LearnedSymmetry.
    tol : float, default=0.3
        Pass threshold for the score (in ``[0, 2]``).
    weight_shape : tuple (n_out, n_in) or None, default=None
        Required for an array ``U`` (whose rows are the row-major weights); ignored
        otherwise (the sharing knows its shape; conv filters count as
        ``(C_out, C_in * kh * kw)``).

    Returns
    -------
    pandas.DataFrame
        Indexed by generator name with columns ``score`` and ``passed``. The group
        summary is in ``report.attrs``: ``"group"`` (the :class:`FiniteGroup` of the
        passing generators, or the trivial group) and ``"summary"``, a dict with
        ``generators`` (names), ``order``, ``dim_group`` (``dim U^G``), ``dim`` (``k``),
        ``containment_angle``, ``excess``, ``chordal_distance`` (radians, see
        :func:`compare_subspaces`) and ``tol``.

    Examples
    --------
    >>> from msr_sklearn.groups import symmetric_group, symmetry_report
    >>> U = symmetric_group(6).sharing_basis()           # the exact S_6 sharing
    >>> report = symmetry_report(U, weight_shape=(6, 6))
    >>> report["passed"].tolist()
    [True, True, True]
    >>> report.attrs["summary"]["order"]                  # 6! = 720: all of S_6
    720
    """
    U, shape = _sharing_of(symmetry, layer, weight_shape)
    if shape is None:
        raise TypeError("a plain U array needs weight_shape=(n_out, n_in)")
    if candidates is None:
        candidates = candidate_generators(*shape)
    elif not isinstance(candidates, FiniteGroup):
        candidates = FiniteGroup.concatenate(candidates)
    if candidates.weight_shape != shape:
        raise ValueError(f"the candidates act on weights of shape {candidates.weight_shape}; "
                         f"the sharing has weights of shape {shape}")
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0; got {tol!r}")
    scores = candidates.generator_residuals(U)
    report = pd.DataFrame({"score": scores, "passed": scores <= tol},
                          index=pd.Index(candidates.names, name="generator"))
    passing = [n for n, ok in zip(candidates.names, report["passed"]) if ok]
    group = candidates.subgroup(passing, name="generated by " + ", ".join(passing)
                                if passing else "trivial")
    basis = group.sharing_basis() if group.is_permutation or group.n_in * group.n_out <= 4096 \
        else None
    summary = {"generators": tuple(passing), "order": group.order,
               "dim_group": None if basis is None else basis.shape[1],
               "dim": _orth(U).shape[1], "tol": float(tol)}
    if basis is not None:
        comparison = compare_subspaces(U, basis)
        summary.update(containment_angle=comparison.containment_angle,
                       excess=comparison.excess, chordal_distance=comparison.chordal_distance)
    report.attrs["group"] = group
    report.attrs["summary"] = summary
    return report


# --------------------------------------------------------------------- hardening
def harden_to_group(U, group, weight_shape=None, layer=0):
    """Snap a learned sharing onto a group's exact sharing: ``orth(P_G U)``.

    The result spans the projection of ``span(U)`` onto ``U^G``: all of ``U^G`` when
    ``span(U)`` contains it (the usual case after meta-learning), otherwise the
    ``k`` directions of ``U^G`` nearest to ``span(U)``. Every weight in it is exactly
    equivariant; the nearest hardened weight to a soft ``W = U v`` is ``P_G W``
    (see :func:`export_layer` with ``weight=``).

    Parameters
    ----------
    U : array-like (n_weights, k), LearnedSymmetry, MetaLayer or Sharing
    group : FiniteGroup or DataFrame
        A group, or a :func:`symmetry_report` (its ``attrs["group"]``).
    weight_shape, layer : see :func:`symmetry_report`

    Returns
    -------
    ndarray of shape (n_weights, min(k, dim U^G)), orthonormal columns

    Examples
    --------
    >>> import numpy as np
    >>> from msr_sklearn.groups import compare_subspaces, cyclic_group, harden_to_group
    >>> g = cyclic_group(5)
    >>> noisy = g.sharing_basis() + 1e-3 * np.random.default_rng(0).normal(size=(25, 5))
    >>> hard = harden_to_group(noisy, g, weight_shape=(5, 5))
    >>> compare_subspaces(hard, g.sharing_basis()).max_angle < 1e-10
    True
    """
    if isinstance(group, pd.DataFrame):
        if "group" not in group.attrs:
            raise ValueError("the DataFrame is no symmetry_report (attrs has no 'group')")
        group = group.attrs["group"]
    if not isinstance(group, FiniteGroup):
        raise TypeError(f"group must be a FiniteGroup or a symmetry_report; got "
                        f"{type(group).__name__}")
    U, shape = _sharing_of(U, layer, weight_shape)
    if shape is not None and shape != group.weight_shape:
        raise ValueError(f"the group acts on weights of shape {group.weight_shape}; U has "
                         f"weights of shape {shape}")
    basis = group.sharing_basis()
    q = _orth(U)
    left, _, _ = np.linalg.svd(basis.T @ q, full_matrices=False)
    return basis @ left[:, :min(q.shape[1], basis.shape[1])]


def partition_sharing(labels):
    """The hard sharing of a partition: one unit-norm 0/1 column per label ``>= 0``.

    Weights labelled ``-1`` are tied to zero (no column).

    Parameters
    ----------
    labels : array-like of int, shape (n_weights,)
        The group of each weight (e.g. from :meth:`FiniteGroup.weight_orbits` or
        :func:`tied_weight_partition`); ``-1`` ties a weight to zero.

    Returns
    -------
    ndarray of shape (n_weights, n_labels)
        Orthonormal columns, one per distinct label ``>= 0`` in increasing order;
        column ``j`` is ``1/sqrt(size)`` on the weights of its group, 0 elsewhere.

    Examples
    --------
    >>> from msr_sklearn.groups import partition_sharing
    >>> partition_sharing([0, 1, 0, -1]) ** 2
    array([[0.5, 0. ],
           [0. , 1. ],
           [0.5, 0. ],
           [0. , 0. ]])
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array; got dtype {labels.dtype} and "
                         f"shape {labels.shape}")
    keep = np.flatnonzero(labels >= 0)
    groups, column = np.unique(labels[keep], return_inverse=True)
    sizes = np.bincount(column)
    U = np.zeros((labels.shape[0], groups.shape[0]))
    U[keep, column] = 1.0 / np.sqrt(sizes[column])
    return U


def tied_weight_partition(U, n_groups=None, tol=0.1, n_probes=8, weight_shape=None, layer=0,
                          random_state=None):
    """Harden a soft sharing into tied groups of weights (``-1``: tied to zero).

    ``n_probes`` random weights ``W = P_U z`` of ``span(U)`` are drawn; each weight
    index becomes the point ``(W_1[i], ..., W_probes[i])`` (scaled to unit RMS). Indices
    whose points coincide are tied: with ``n_groups=None`` all points closer than
    ``tol`` are linked (single linkage, by a KD-tree); otherwise
    :class:`sklearn.cluster.KMeans` makes ``n_groups`` clusters (a zero group counts
    as one). A cluster whose centre is within ``tol`` of 0 becomes label ``-1``.

    Parameters
    ----------
    U : array-like (n_weights, k), LearnedSymmetry, MetaLayer or Sharing
    n_groups : int or None
    tol : float
        Linking distance and zero threshold, in units of the RMS weight.
    n_probes : int
    weight_shape, layer : see :func:`symmetry_report` (only ``U``'s rows matter here)
    random_state : int, RandomState or None

    Returns
    -------
    labels : ndarray of shape (n_weights,)
        Numbered by first appearance; feed to :func:`partition_sharing` and compare
        with :func:`partition_distance`.

    Examples
    --------
    >>> from msr_sklearn.groups import cyclic_group, partition_distance, tied_weight_partition
    >>> g = cyclic_group(6)
    >>> labels = tied_weight_partition(g.sharing_basis(), random_state=0)
    >>> partition_distance(labels, g.weight_orbits())
    0
    """
    from scipy.spatial import cKDTree

    U, _ = _sharing_of(U, layer, weight_shape)
    q = _orth(U)
    _check_positive("n_probes", n_probes)
    if not tol > 0:
        raise ValueError(f"tol must be > 0; got {tol!r}")
    rng = check_random_state(random_state)
    points = q @ rng.standard_normal((q.shape[1], n_probes))
    points /= np.sqrt(np.mean(points ** 2))
    if n_groups is None:
        pairs = cKDTree(points).query_pairs(tol, output_type="ndarray")
        n = points.shape[0]
        graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
        _, labels = connected_components(graph, directed=False)
    else:
        from sklearn.cluster import KMeans

        _check_positive("n_groups", n_groups)
        if n_groups > points.shape[0]:
            raise ValueError(f"n_groups={n_groups} exceeds the {points.shape[0]} weights")
        labels = KMeans(n_clusters=n_groups, n_init=4, random_state=rng).fit(points).labels_
    counts = np.bincount(labels)
    centres = np.zeros((counts.shape[0], n_probes))
    np.add.at(centres, labels, points)
    centres /= counts[:, None]
    zero = np.linalg.norm(centres, axis=1) < tol
    labels = np.where(zero[labels], -1, labels)
    return _relabel(labels)


def partition_distance(labels_a, labels_b):
    """Fewest weights to move so two partitions agree (Hungarian matching of groups).

    Groups are matched one-to-one to maximize the weights they share; the label
    values themselves do not matter (``-1`` is a group like any other).

    Parameters
    ----------
    labels_a, labels_b : array-like of shape (n_weights,)
        The group label of every weight in each partition (flattened).

    Returns
    -------
    int
        ``n_weights`` minus the weights on which the best matching agrees.

    Examples
    --------
    >>> from msr_sklearn.groups import partition_distance
    >>> partition_distance([0, 0, 1, 1], [5, 5, 2, 2])   # same groups, other names
    0
    >>> partition_distance([0, 0, 0, 1], [0, 0, 1, 1])   # one weight must move
    1
    """
    a, b = np.asarray(labels_a).ravel(), np.asarray(labels_b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"the partitions label {a.shape[0]} and {b.shape[0]} weights")
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    table = np.zeros((ia.max() + 1, ib.max() + 1), dtype=np.int64)
    np.add.at(table, (ia, ib), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return int(a.shape[0] - table[rows, cols].sum())


# --------------------------------------------------------------------- export
def export_layer(U, weight_shape, weight=None, bias=None, input_shape=None):
    """A frozen layer with ``U`` as a buffer and only ``v`` (and the bias) as parameters.

    A :class:`~msr_sklearn.nn.SharedLinear` (or, with ``input_shape``, a
    :class:`~msr_sklearn.nn.SharedConv2d`) over a :class:`~msr_sklearn.nn.FixedSharing`:
    ``state_dict`` round-trips, and the layer trains like any module (only
    ``filters`` and ``bias`` move).

    Parameters
    ----------
    U : array-like of shape (prod(weight_shape), k)
        E.g. from :func:`harden_to_group` or :func:`partition_sharing`.
    weight_shape : tuple
        ``(n_out, n_in)``, or ``(C_out, C_in, kh, kw)`` for a convolution.
    weight : array-like of shape weight_shape or None
        A weight to approximate (e.g. a soft model's ``W``): ``v`` is its least-squares
        fit, so the layer's weight is its projection onto ``span(U)``. ``None``: ``v = 0``.
    bias : array-like of shape (n_out,) or None
        One value per output (per output channel for a convolution); ``None`` builds
        the layer without a bias.
    input_shape : tuple (C_in, H, W) or None
        Build a valid, stride-1 convolution over such images.

    Returns
    -------
    SharedLinear or SharedConv2d

    Examples
    --------
    >>> from msr_sklearn.groups import export_layer, symmetric_group
    >>> layer = export_layer(symmetric_group(4).sharing_basis(), (4, 4))
    >>> sum(p.numel() for p in layer.parameters())
    2
    """
    from .nn import FixedSharing, SharedConv2d, SharedLinear

    U = _to_numpy(U)
    shape = tuple(int(s) for s in weight_shape)
    if input_shape is None and len(shape) != 2:
        raise ValueError(f"a linear layer needs weight_shape (n_out, n_in); got {shape} (pass "
                         f"input_shape for a convolution)")
    if input_shape is not None and len(shape) != 4:
        raise ValueError(f"a convolution needs weight_shape (C_out, C_in, kh, kw); got {shape}")
    sharing = FixedSharing(shape, U)
    has_bias = bias is not None
    layer = (SharedLinear(sharing, bias=has_bias) if input_shape is None
             else SharedConv2d(input_shape, sharing, bias=has_bias))
    with torch.no_grad():
        layer.filters.zero_()
        if weight is not None:
            weight = _to_numpy(weight)
            if weight.shape != shape:
                raise ValueError(f"weight has shape {weight.shape}; expected {shape}")
            v, *_ = np.linalg.lstsq(U, weight.ravel(), rcond=None)
            layer.filters.copy_(torch.as_tensor(v))
        if has_bias:
            bias = _to_numpy(bias).ravel()
            if bias.shape != (shape[0],):
                raise ValueError(f"bias has shape {bias.shape}; expected ({shape[0]},)")
            layer.bias.copy_(torch.as_tensor(bias))
    return layer
