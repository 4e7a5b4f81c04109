"""Aug-Glyphs measurements: episode accuracy, output invariance, each layer's D4 error.

Used by ``benchmarks/glyphs.py`` and the tests. Every function takes a fitted
:class:`~msr_sklearn.MetaSymmetryLearner` (image tasks ``(n, 1, H, W)``, support rows
first) and episodes of :func:`msr_sklearn.datasets.load_aug_glyphs_tasks`.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from msr_sklearn.data.tasks import check_tasks
from msr_sklearn.engine import adapted_outputs
from msr_sklearn.groups import grid_transforms, transform_grid
from msr_sklearn.inspection import symmetry_report

from _aug_digits_measures import _grid_transform  # one D4 action on image tensors

#: D4 on the square grid as (quarter turns, flip): flip left-right, then rotate
D4 = grid_transforms("d4")
#: the largest ``U`` (entries) :func:`layer_reports` reads: the report works on dense
#: float64 copies of ``U`` (minutes each above this): the oracle's last two group
#: convolutions (18,432 × 2,304 and 73,728 × 9,216) are read by their filters instead
MAX_REPORT_ENTRIES = 2 * 10 ** 7


def episode_accuracy(learner, tasks, n_support):
    """Per-episode query accuracy after adapting on the first ``n_support`` rows (the
    vectorized engine; any support size, whatever the learner was trained with)."""
    batch = check_tasks(tasks, objective="classification", n_support=n_support) \
        .to(learner.device).split(n_support, shuffle=False)
    logits = adapted_outputs(learner.model_, batch, learner._inner_loop(), chunk_size=64)
    return (logits.argmax(-1) == batch.y_query).double().mean(1).cpu().numpy()


def d4_images(images):
    """The 8 D4 transforms of images ``(n, C, H, W)``, stacked: ``(8 * n, C, H, W)``."""
    return np.concatenate([transform_grid(images, g) for g in D4])


def estimator_invariance(learner, tasks, n_support):
    """Through the user-facing path: per episode, ``learner.make_estimator().fit`` on the
    support rows, then ``predict`` on the query images under each of the 8 D4
    transforms, one ``predict`` call per transform.

    One call per transform matters for a network with batch statistics (the Conv-4's
    batch norm, as MAML's): its prediction for an image depends on the images predicted
    with it, so each call holds one episode's query set, moved as a whole, as the
    meta-learner evaluates a task's queries; the identity's labels then equal the
    engine's.

    Returns ``(accuracy, invariant)`` per episode: the query accuracy on the images as
    given, and the share of query images whose predicted label is the same under all
    8 transforms.
    """
    accuracy, invariant = [], []
    for X, y in tasks:
        clf = learner.make_estimator().fit(X[:n_support], y[:n_support])
        queries = X[n_support:]
        labels = np.stack([clf.predict(transform_grid(queries, g)) for g in D4])
        accuracy.append(np.mean(labels[0] == y[n_support:]))  # D4[0] is the identity
        invariant.append(np.mean((labels == labels[0]).all(0)))
    return np.asarray(accuracy), np.asarray(invariant)


def layer_reports(learner, names=None):
    """What :func:`~msr_sklearn.inspection.symmetry_report` says of every shared weight
    (or of the shared weights in ``names``).

    Returns ``{weight name: (group name, rot90 score, flip score)}``; a score is the
    D4 generator's relative equivariance error of ``span(U)`` with the best relabelling
    of the copies (0 exact, about 1.4 for unrelated filters; the report passes a
    generator at 0.3). A convolution is read as it is; a dense head as a layer on the
    last feature maps (``input_shape`` the maps, outputs invariant). A sharing larger
    than :data:`MAX_REPORT_ENTRIES` is named ``"not read (U too large)"`` with NaN
    scores.
    """
    model, out = learner.model_, {}
    maps = getattr(model.module, "output_shape", None)
    for name in model.shared_names:
        if names is not None and name not in names:
            continue
        sharing = model.sharing(name)
        if sharing.n_weights * sharing.n_filters > MAX_REPORT_ENTRIES:
            out[name] = ("not read (U too large)", np.nan, np.nan)
            continue
        if len(sharing.weight_shape) == 4:
            report = symmetry_report(learner.symmetry_, layer=name)
        elif maps is not None and len(maps) == 3 and maps[1] == maps[2] > 1:
            report = symmetry_report(learner.symmetry_, layer=name, input_shape=maps,
                                     kernel_size=1)
        else:
            continue
        scores = report["score"]
        pick = lambda key: float(next((s for g, s in scores.items()  # noqa: E731
                                       if g.startswith(key)), np.nan))
        out[name] = (report.attrs["summary"]["name"], pick("rot90"), pick("flip"))
    return out


def initial_filter_errors(learner):
    """D4 error of every convolution's meta-learned initial filters, up to relabelling.

    A layer is D4-equivariant (channels permuted, pixels moved) when for every ``g``
    a permutation ``σ`` of its output channels gives ``g⁻¹ W[:, π⁻¹] = W[σ]``, ``π``
    how ``g`` permutes its input channels (the identity for the image, the previous
    layer's ``σ`` after it). Per ``g`` and layer the best ``σ`` is found by linear
    assignment; the error is ``max_g ||g⁻¹ W[:, π⁻¹] - W[σ]||_F / ||W||_F`` (0 exact,
    about 1.4 for unrelated filters). The weights are the network's initial ones,
    ``U v0`` for a shared weight, what every task starts its adaptation from.
    """
    model = learner.model_
    with torch.no_grad():
        weights = model.weights(model.initial_inner())
    convs = [(name, w.detach().double().cpu()) for name, w in weights.items()
             if w.dim() == 4 and w.shape[-1] == w.shape[-2]]
    worst = {name: 0.0 for name, _ in convs}
    for g in D4[1:]:
        perm = None
        for name, w in convs:
            if perm is not None and len(perm) != w.shape[1]:
                break
            moved = w if perm is None else w[:, torch.argsort(perm)]
            moved = _grid_transform(moved, g, inverse=True)
            cost = torch.cdist(moved.flatten(1), w.flatten(1)) ** 2
            rows, cols = linear_sum_assignment(cost.numpy())
            sigma = torch.as_tensor(cols[np.argsort(rows)])
            worst[name] = max(worst[name], float((moved - w[sigma]).norm() / w.norm()))
            perm = sigma
    return worst
