"""The group object: :class:`FiniteGroup`, a finite group acting on a layer's weights.

A group is given by the images of its generators on the inputs and on the outputs
(permutations or invertible matrices). This module holds :class:`FiniteGroup` (its
elements by breadth-first closure, its order by the Schreier-Sims algorithm for
permutation groups, its exact sharing ``U^G`` and its weight orbits), the helpers that
compose, invert and apply group elements, and :data:`MAX_ORDER`.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .partitions import partition_sharing
from .subspaces import _orth

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
