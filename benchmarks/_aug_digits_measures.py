"""Aug-Digits measurements: accuracy, output invariance, equivariance of the learned layers.

Used by ``benchmarks/aug_digits.py`` (which re-exports these names) and its tests. Every
function takes a fitted learner, its meta-model (:class:`~msr_sklearn.engine.MetaModel`,
``learner.model_``) or its symmetry, and episodes of
:func:`msr_sklearn.datasets.load_aug_digits_tasks` (8×8 images, support rows first).
Also builds the oracles' sharing policy, the exact D4 group-convolution network
(:func:`exact_d4_policy`).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from msr_sklearn import LearnedSymmetry
from msr_sklearn.data.tasks import check_tasks
from msr_sklearn.engine import InnerLoop, adapt, adapted_outputs
from msr_sklearn.groups import grid_group, grid_transforms, transform_grid
from msr_sklearn.inspection import equivariance_error, export_layer, symmetry_report
from msr_sklearn.sharing import FixedSharing, exact_group_conv_sharing, exact_lifting_sharing

#: D4 on a square grid as (quarter turns, flip): flip left-right, then rotate
C4 = grid_transforms("c4")
D4 = grid_transforms("d4")
SIDE = 8


# ------------------------------------------------------------------- accuracy
def _batch(tasks, n_support):
    taskset = check_tasks(tasks, objective="classification", n_support=n_support)
    return taskset.split(n_support, shuffle=False)


def _loop(inner_steps=1):
    """The benchmark's inner loop at test time (no meta-gradients are taken)."""
    return InnerLoop(loss="cross_entropy", steps=inner_steps)


def episode_accuracy(model, tasks, n_support, inner_steps=1):
    """Per-episode query accuracy after adapting on the first ``n_support`` rows."""
    batch = _batch(tasks, n_support)
    logits = adapted_outputs(model, batch, _loop(inner_steps))
    return (logits.argmax(-1) == batch.y_query).double().mean(1).numpy()


def estimator_check(learner, tasks, n_support, group=D4):
    """Per-episode accuracy and output invariance of the user-facing path.

    For each episode a fresh ``EquivariantClassifier`` (``learner.make_estimator()``)
    is fit on its support rows and predicts every query image under every element of
    ``group``. Returns ``(accuracy, invariant)``: the query accuracy (on the images as
    given; equals :func:`episode_accuracy` of ``learner.model_``, the vectorized
    engine) and the fraction of query images whose predicted label is the same under
    all elements of ``group``.
    """
    accuracy, invariant = [], []
    for X, y in tasks:
        clf = learner.make_estimator().fit(X[:n_support], y[:n_support])
        images = X[n_support:].reshape(-1, SIDE, SIDE)
        moved = np.concatenate([transform_grid(images, g).reshape(len(images), -1)
                                for g in group])
        labels = clf.predict(moved).reshape(len(group), len(images))
        accuracy.append(np.mean(labels[0] == y[n_support:]))  # group[0] is the identity
        invariant.append(np.mean((labels == labels[0]).all(0)))
    return np.asarray(accuracy), np.asarray(invariant)


def _grid_transform(x, element, inverse=False):
    """Apply ``(r, f)`` (flip left-right ``f`` times, then rotate ``r`` quarter turns
    counter-clockwise, as ``numpy.rot90``) to the last two axes of a tensor."""
    r, f = element
    if inverse:
        x = torch.rot90(x, -r, dims=(-2, -1))
        return torch.flip(x, dims=(-1,)) if f else x
    x = torch.flip(x, dims=(-1,)) if f else x
    return torch.rot90(x, r, dims=(-2, -1))


def output_invariance_error(model, tasks, n_support, group=D4, inner_steps=1):
    """Mean over episodes and non-identity ``g`` of ``||f(g x) - f(x)|| / ||f(x)||``
    for the adapted network ``f`` of each episode and its query images ``x``
    (the vectorized engine).

    Also returns the share of query images whose predicted class is the same for all
    elements of ``group`` (what :func:`estimator_check` measures through the
    estimators).
    """
    batch = _batch(tasks, n_support)
    inner = adapt(model, batch.x_support, batch.y_support, _loop(inner_steps),
                  track_meta_gradients=False)
    with torch.no_grad():
        x = batch.x_query
        base = model(x, inner)
        images = x.reshape(*x.shape[:-1], SIDE, SIDE)
        errors, agree = [], torch.ones(base.shape[:-1], dtype=torch.bool)
        for g in group:
            if g == (0, 0):
                continue
            out = model(_grid_transform(images, g).reshape(x.shape), inner)
            errors.append(((out - base).norm(dim=-1) / base.norm(dim=-1)).mean())
            agree &= out.argmax(-1) == base.argmax(-1)
    return float(torch.stack(errors).mean()), float(agree.double().mean())


# -------------------------------------------------------- equivariance of layers
def adapted_layers(model):
    """``[(name, weight_shape, sharing or None)]`` of the weights a task adapts
    (``MetaModel.adapted_weights``, in the network's order; ``sharing`` None for a
    weight adapted as is, whose ``U`` is the identity). ``model`` is a MetaModel or a
    LearnedSymmetry."""
    if not hasattr(model, "roles"):  # a LearnedSymmetry
        model = model.build_model()
    params = dict(model.module.named_parameters())
    out = []
    for name in model.adapted_weights:
        if model.roles[name] == "shared":
            sharing = model.sharing(name)
            out.append((name, tuple(sharing.weight_shape), sharing))
        else:
            out.append((name, tuple(params[name].shape), None))
    return out


def _random_weight(shape, sharing, generator):
    """``U v`` for ``v ~ N(0, I)``; a random weight for a layer adapted as is."""
    if sharing is None:
        return torch.randn(shape, generator=generator)
    return sharing(torch.randn(sharing.n_filters, generator=generator))


def filter_equivariance(model, group, filters="random", random_state=0, image_side=SIDE):
    """Equivariance error of each conv layer's filters to ``group``, up to relabelling.

    A valid convolution of a square image satisfies ``conv(g x, w) = g conv(x, g⁻¹ w)``
    for the grid symmetries ``g``, so a layer is equivariant (its channels permuted,
    pixels moved) exactly when, for every ``g``, there is a permutation ``σ`` of its
    output channels with ``g⁻¹ W[d, π⁻¹(c)] = W[σ(d), c]``, where ``π`` is how ``g``
    permutes the layer's input channels (identity for the image; the previous layer's
    ``σ`` after it). Per layer and ``g`` we find the best ``σ`` (Hungarian assignment)
    and report ``max_g ||g⁻¹ W[:, π⁻¹] - W[σ]||_F / ||W||_F``: 0 for an exactly
    equivariant layer whatever the order of its channels, about 1.4 for unrelated
    filters. Also returns the invariance error of the first dense layer after the
    (mean-pooled) front-end, ``max_g ||W[:, σ] - W|| / ||W||``, when it reads one
    feature per channel.

    A network without convolutions is read the same way: its first dense layer on the
    ``image_side × image_side`` image is a convolution whose kernel is the whole image
    (``"fc0"``, hidden units as channels), and the next dense layer is the ``"head"``.

    ``model`` is a MetaModel (``learner.model_``); its layers are its adapted weights
    (:func:`adapted_layers`): 4-D ones are convolutions, 2-D ones dense layers.
    ``filters="random"`` uses ``W = U v`` with ``v ~ N(0, I)`` (the worst of 4 draws; a
    random weight for a layer adapted as is): a property of the learned sharing, i.e. of
    every network the inner loop can reach. ``filters="initial"`` uses the meta-learned
    initial weights (``U v0``).
    """
    gen = torch.Generator().manual_seed(random_state)
    layers = adapted_layers(model)
    convs = [layer for layer in layers if len(layer[1]) == 4]
    heads = [layer for layer in layers if len(layer[1]) == 2]
    names = [f"conv{i}" for i in range(len(convs))]
    if not convs:  # an MLP on the image: the first dense layer is a whole-image filter
        if len(heads) < 2 or heads[0][1][1] != image_side ** 2:
            return {}
        convs, heads, names = heads[:1], heads[1:], ["fc0"]
    n_draws = 4 if filters == "random" else 1
    worst = {}
    with torch.no_grad():
        initial = model.weights(model.initial_inner()) if filters == "initial" else None
        for _ in range(n_draws):
            weights = []
            for name, shape, sharing in convs + heads[:1]:
                w = (_random_weight(shape, sharing, gen) if initial is None
                     else initial[name]).double()
                if w.ndim == 2 and len(weights) < len(convs):
                    w = w.reshape(w.shape[0], 1, image_side, image_side)
                weights.append(w)
            for g in group:
                if g == (0, 0):
                    continue
                perm = None  # how g permutes the current layer's input channels
                for i, w in enumerate(weights):
                    name = names[i] if i < len(convs) else "head"
                    if i == len(convs):  # pooled features: the head must be invariant
                        if perm is None or w.shape[1] != len(perm):
                            break
                        err = (w[:, perm] - w).norm() / w.norm()
                    else:
                        moved = w if perm is None else w[:, torch.argsort(perm)]
                        moved = _grid_transform(moved, g, inverse=True)
                        sigma = torch.as_tensor(_best_relabelling(moved, w))
                        err = (moved - w[sigma]).norm() / w.norm()
                        perm = sigma
                    worst[name] = max(worst.get(name, 0.0), float(err))
    return worst


def _best_relabelling(moved, target):
    """``σ`` minimizing ``sum_d ||moved[d] - target[σ[d]]||^2`` (Hungarian assignment)."""
    cost = torch.cdist(moved.flatten(1), target.flatten(1)) ** 2
    rows, cols = linear_sum_assignment(cost.numpy())
    return cols[np.argsort(rows)]


def _transform_assignment(per_channel, element):
    """``t[d]``: the channel whose filters best match channel ``d``'s moved by
    ``element`` (Hungarian assignment over the whole span of ``U``)."""
    return _best_relabelling(_grid_transform(per_channel, element), per_channel)


def lifting_error(model, group="c4", random_state=0, image_side=SIDE):
    """The first conv layer's lifting error to ``group`` by :func:`equivariance_error`.

    The layer is put in the canonical channel order of :func:`grid_group` (channel
    ``m f + c`` of a field ``f`` holds the field's filter transformed by element ``c``
    of ``grid_transforms(group)``, ``m = 4`` or ``8``), with the relabelling read off
    ``U`` itself: ``t_rot`` and ``t_flip`` map each channel to the one holding its
    filters rotated (flipped) (Hungarian assignment over the span of ``U``), and a
    field is ``t_rot^r t_flip^f (e)`` for the elements ``(r, f)`` and a base channel
    ``e``. The reordered layer (:func:`~msr_sklearn.inspection.export_layer` of the
    reordered ``U``: a valid ``nn.Conv2d`` lifting the ``image_side²`` image to regular
    fields) is then measured on random images and random filters in the span of ``U``
    (``equivariance_error(..., layer="random")``). When the assignments do not split the
    channels into such fields (no relabelling exists) the layer's own order is used. NaN
    when the layer does not read one image channel, its channels are not a multiple of
    ``m``, or it is a plain convolution too large to measure (``U`` the identity on more
    than 4096 weights: its span holds every filter, so the value would be that of
    unrelated filters, and the assignment would need the whole identity in memory).

    ``model`` is a MetaModel whose first adapted 4-D weight is the convolution (with
    valid padding and stride 1, as the built-in ConvNet's default).
    """
    name, (c_out, c_in, kh, kw), sharing = next(
        layer for layer in adapted_layers(model) if len(layer[1]) == 4)
    elements = grid_transforms(group)
    n_weights = c_out * c_in * kh * kw
    if c_in != 1 or c_out % len(elements) or (sharing is None and n_weights > 4096):
        return float("nan")
    with torch.no_grad():  # (c_out * kh * kw, k); the identity for a plain convolution
        u = (torch.eye(n_weights) if sharing is None else sharing.matrix()).double()
    per_channel = u.T.reshape(-1, c_out, kh, kw).transpose(0, 1)  # (c_out, k, kh, kw)
    rot, flip = (_transform_assignment(per_channel, e) for e in ((1, 0), (0, 1)))
    order, seen = [], set()
    for base in range(c_out):
        if base in seen:
            continue
        field = []
        for r, f in elements:
            c = flip[base] if f else base
            for _ in range(r):
                c = rot[c]
            field.append(int(c))
        if len(set(field)) != len(elements) or seen & set(field):
            order = list(range(c_out))
            break
        seen.update(field)
        order += field
    matrix = u.reshape(c_out, -1, u.shape[1])[torch.as_tensor(order)].reshape(u.shape)
    layer = export_layer(matrix.float().numpy(), (c_out, c_in, kh, kw), bias=np.zeros(c_out),
                         input_shape=(1, image_side, image_side))
    out_size = image_side - kh + 1
    grid = grid_group(image_side, group, in_rep="trivial", out_rep="regular",
                      out_size=out_size, n_out_fields=c_out // len(elements))
    return float(equivariance_error(layer, grid, layer="random", n_draws=4,
                                    random_state=random_state,
                                    input_shape=(1, image_side, image_side)))


def report_verdicts(symmetry):
    """:func:`symmetry_report` with its default candidates on every shared conv layer.

    Returns ``{"conv{i}": (group name, rot90 score, flip score)}`` (``i`` counts the
    network's convolutions; a plain one, adapted as is, has no ``U`` to report on and
    is left out); the scores are in ``[0, √2]`` (0: ``span(U)`` is exactly invariant
    under the transform with the best relabelling of its copies), and a generator passes
    at the report's ``tol=0.3``.
    """
    verdicts = {}
    convs = [(name, sharing) for name, shape, sharing in adapted_layers(symmetry)
             if len(shape) == 4]
    for j, (name, sharing) in enumerate(convs):
        if sharing is None:
            continue
        report = symmetry_report(symmetry, layer=name)
        scores = report["score"]
        verdicts[f"conv{j}"] = (report.attrs["summary"]["name"],
                                float(scores.get("rot90", np.nan)),
                                float(scores.get("flip", np.nan)))
    return verdicts


# ------------------------------------------------------------------- the oracle
def orbit_head_basis(n_outputs, n_fields, side, group="d4"):
    """The exact sharing of a dense head that is invariant on regular fields.

    The head reads ``n_fields`` regular fields of ``m`` channels on a ``side × side``
    grid (channel-major, as an exact group convolution writes them); a weight row is
    invariant when it is constant on every orbit of ``(copy, pixel)`` under the group.
    Returns ``U`` of shape ``(n_outputs * n_fields * m * side², n_outputs * n_fields *
    n_orbits)`` with orthonormal columns (one per output, field and orbit).
    """
    one_field = grid_group(side, group, in_rep="regular", out_rep="trivial",
                           out_size=1).sharing_basis()
    return np.kron(np.eye(n_outputs), np.kron(np.eye(n_fields), one_field))


def n_orbit_filters(conv_channels, n_outputs=5, group="d4", kernel_size=3):
    """``n_filters`` of the oracle's invariant head (its ``U`` from :func:`orbit_head_basis`)."""
    m = len(grid_transforms(group))
    side = SIDE - len(conv_channels) * (kernel_size - 1)
    n_orbits = grid_group(side, group, in_rep="regular", out_rep="trivial",
                          out_size=1).sharing_basis().shape[1]
    return n_outputs * (conv_channels[-1] // m) * n_orbits


def _unit_columns(sharing):
    """An exact MSR-Conv sharing with every factor's columns scaled to unit norm (the
    span is unchanged; the learner's sharings start with orthonormal columns, and the
    inner step on ``v`` moves ``W`` by ``U Uᵀ``, so this keeps the step's scale)."""
    with torch.no_grad():
        for factor in sharing.factors:
            factor.div_(factor.norm(dim=0, keepdim=True))
    return sharing


def exact_d4_policy(net, group="d4"):
    """The sharing policy of the exact group network on ``net``'s weights.

    ``net`` is a :class:`~msr_sklearn.models.ConvNet` (valid convolutions of a square
    image) with ``n_copies = m`` (8 for D4), ``couple_copies=True`` (with two conv
    layers or more) and ``field_bias=True``, and either ``global_pool="mean_fields"``
    with any head, or ``global_pool="none"`` with a head of one dense layer. The first
    convolution gets the lifting sharing (:func:`exact_lifting_sharing`), later ones
    the group convolution between regular fields (:func:`exact_group_conv_sharing`),
    each with unit-norm factor columns (:func:`_unit_columns`); an unpooled head the
    invariant :func:`orbit_head_basis` (a ``FixedSharing``). Every other parameter is
    adapted as is. All are fixed: with these sharings the network is exactly invariant
    to ``group`` whatever its filters, biases and head (the oracle: MAML inside the
    right symmetry).
    """
    m = len(grid_transforms(group))
    convs = list(net.convolutions.items())
    coupled = net.couple_copies or len(convs) == 1
    field_bias = all(conv.bias is None for _, conv in convs)
    if net.n_copies != m or not coupled or not field_bias:
        raise ValueError(f"the exact {group.upper()} network needs module__n_copies={m}, "
                         "module__couple_copies=True (with two conv layers or more) and "
                         "module__field_bias=True")
    policy = {}
    for i, (name, conv) in enumerate(convs):
        kernel = conv.kernel_size[0]
        exact = (exact_lifting_sharing(group, conv.out_channels // m, conv.in_channels, kernel)
                 if i == 0 else exact_group_conv_sharing(group, conv.out_channels // m,
                                                         conv.in_channels // m, kernel))
        policy[f"{name}.weight"] = _unit_columns(exact)
    if net.pool.kind == "none":
        linear = net.head.linear_layers
        if len(linear) != 1:
            raise ValueError("the invariant head of an unpooled network is one dense layer "
                             "(module__hidden_layer_sizes=())")
        channels, side = net.output_shape[0], net.output_shape[1]
        head = orbit_head_basis(linear[0].out_features, channels // m, side, group)
        policy["head.0.weight"] = FixedSharing(head)
    return policy


# ------------------------------------------------------- networks of learner params
def build_network(params, n_outputs=5):
    """The module a learner with ``params`` builds (its ``module__*`` parameters)."""
    own = {k.removeprefix("module__"): v for k, v in params.items() if k.startswith("module__")}
    return params["module"](**{"n_outputs": n_outputs, **own})


def initial_symmetry(params, n_outputs=5):
    """The untrained symmetry a learner with ``params`` starts from (its network, policy,
    ``U``, ``v0`` and inner lrs at ``random_state``), as a LearnedSymmetry."""
    keys = ("module", "sharing", "hidden_layer_sizes", "layer", "n_filters", "inner_lr",
            "inner_steps", "random_state")
    own = {k: params[k] for k in keys if k in params}
    own.update({k: v for k, v in params.items() if k.startswith("module__")})
    shape = params.get("module__input_shape")
    size = {"n_features": 64} if shape is None else {"input_shape": shape}
    return LearnedSymmetry.initial(objective="classification", n_outputs=n_outputs, **size,
                                   **own)


# ------------------------------------------------------------------- references
def nearest_neighbour_accuracy(tasks, n_support, group=None):
    """Per-episode 1-NN accuracy on pixels; with ``group``, the distance
    ``min_g ||g x - s||`` over the group's transforms of the query."""
    out = []
    for X, y in tasks:
        s, q = X[:n_support], X[n_support:]
        images = q.reshape(-1, SIDE, SIDE)
        elements = group or ((0, 0),)
        candidates = np.stack([transform_grid(images, e).reshape(len(q), -1)
                               for e in elements])
        d = ((candidates[:, :, None] - s[None, None]) ** 2).sum(-1).min(0)
        out.append((y[:n_support][d.argmin(1)] == y[n_support:]).mean())
    return np.asarray(out)
