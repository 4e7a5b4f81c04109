"""MNIST-1D few-shot episodes: does a learned dense sharing (MSR-FC) reach a convolution?

Tasks: :func:`msr_sklearn.datasets.load_mnist1d_tasks` (Greydanus 2020, built from its
templates with ``mnist1d.make_dataset``, no download): 5-way episodes of 40-step
signals with fresh labels, 1-shot and 5-shot (5 query signals per class). Meta-training
draws fresh episodes from MNIST-1D's training signals at every step; the test
episodes (fixed, the same for every row) come from its test signals. With only 10
digits the splits share the classes, not the signals. Published single-task test
accuracy: MLP 68 %, CNN 94 %.

Methods, all the same size: a first layer of ``CHANNELS × 36`` hidden units (a
5-tap valid convolution with ``CHANNELS`` channels, or the dense layer of that shape),
ReLU, and a dense head to the 5 ways:

- ``MAML-FC``: :class:`~msr_sklearn.models.MLP` (40 → 144 → 5), every weight adapted.
- ``MAML-Conv1d``: :class:`Conv1dNet`, a ``Conv1d(1, 4, 5)`` and the head, every weight
  adapted: the right symmetry given.
- ``MSR-FC``: the MLP with a learned dense sharing ``U`` on the first layer
  (``DenseSharing(n_filters=20)``: as many filter values as the convolution's 4 × 5
  taps); the head adapted as is.

Reported per row: test accuracy (mean ± 95% CI over training seeds; each seed's
accuracy is the mean over the test episodes), and for MSR-FC the angle between the
learned first layer's sharing and the convolution's (:func:`matched_conv_angle`: the
largest principal angle, after matching the hidden units to the convolution's
``(channel, position)`` slots; 90° for unrelated spans), at initialization and after
training, and the share of ``span(U)`` outside the convolution's span.

Run: ``python benchmarks/mnist1d_fewshot.py [--quick]``; writes
``benchmarks/results/mnist1d_fewshot.md`` and ``.csv``. GPU entry point: :func:`run_row`.
(Not ``mnist1d.py``: a script of that name shadows the ``mnist1d`` package that builds
the data, for every script run from this folder.)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _real_images import cpu_settings, header, over_seeds, parser, pm  # noqa: E402
from _report import map_single_threaded, write_results  # noqa: E402

from msr_sklearn import MetaSymmetryLearner  # noqa: E402
from msr_sklearn.data.streams import TaskStream  # noqa: E402
from msr_sklearn.datasets import load_mnist1d_tasks, mnist1d_conv_sharing  # noqa: E402
from msr_sklearn.groups import compare_subspaces  # noqa: E402
from msr_sklearn.groups.subspaces import _orth  # noqa: E402
from msr_sklearn.models import MLP  # noqa: E402
from msr_sklearn.sharing import DenseSharing  # noqa: E402

METHODS = ("MAML-FC", "MAML-Conv1d", "MSR-FC")
N_FEATURES, CHANNELS, KERNEL, N_WAY, N_QUERY = 40, 4, 5, 5, 5
HIDDEN = CHANNELS * (N_FEATURES - KERNEL + 1)
SHOTS = (1, 5)
#: the CPU setting; every other learner parameter at the library's defaults
CPU = dict(meta_batch_size=32, n_meta_steps=2000)
N_TEST, TEST_SEED = 600, 10_000


class Conv1dNet(nn.Module):
    """A valid ``Conv1d(1, channels, kernel_size)``, ReLU and a dense head, on flat signals.

    Parameters
    ----------
    n_features : int
    n_outputs : int
    channels : int, default=4
    kernel_size : int, default=5
    """

    def __init__(self, n_features, n_outputs, channels=CHANNELS, kernel_size=KERNEL):
        super().__init__()
        self.conv = nn.Conv1d(1, channels, kernel_size)
        self.head = nn.Linear(channels * (n_features - kernel_size + 1), n_outputs)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x.unsqueeze(-2))).flatten(-2))


def make_learner(method, n_shot, meta_batch_size=32, n_meta_steps=2000, device="cpu",
                 random_state=0):
    """The learner of one method (library defaults but the network and its policy)."""
    params = dict(n_support=N_WAY * n_shot, support_split="first",
                  meta_batch_size=meta_batch_size, n_meta_steps=n_meta_steps, device=device,
                  random_state=random_state)
    if method == "MAML-FC":
        return MetaSymmetryLearner(module=MLP, module__hidden_layer_sizes=(HIDDEN,),
                                   layer="dense", **params)
    if method == "MAML-Conv1d":
        return MetaSymmetryLearner(module=Conv1dNet, layer="dense", **params)
    if method == "MSR-FC":
        return MetaSymmetryLearner(module=MLP, module__hidden_layer_sizes=(HIDDEN,),
                                   sharing={"0.weight": DenseSharing(CHANNELS * KERNEL)},
                                   **params)
    raise ValueError(f"method must be one of {METHODS}; got {method!r}")


def matched_conv_angle(U, channels=CHANNELS, kernel_size=KERNEL, n_features=N_FEATURES,
                       n_restarts=8, random_state=0):
    """Angle between a dense layer's sharing and a convolution's, hidden units matched.

    ``U`` shares a dense weight ``(channels * L, n_features)`` (rows unit-major), ``L =
    n_features - kernel_size + 1``. Hidden units have no fixed order, so the units are
    assigned to the convolution's ``(channel, position)`` slots by alternating
    minimization: project the permuted ``span(U)`` onto the convolution's span
    (:func:`~msr_sklearn.datasets.mnist1d_conv_sharing`), then re-assign units to the
    projected slots (Hungarian assignment), until the assignment stops changing; each
    restart starts from the units sorted by where their weights lie, with random
    channels. Returns ``(largest principal angle in degrees, share of span(U) outside
    the convolution's span)`` of the best assignment.
    """
    L = n_features - kernel_size + 1
    n_out = channels * L
    q = _orth(np.asarray(U, dtype=float)).reshape(n_out, n_features, -1)
    reference = mnist1d_conv_sharing(channels, kernel_size, n_features=n_features)
    mass = (q ** 2).sum(-1)
    centre = (mass * np.arange(n_features)).sum(1) / np.maximum(mass.sum(1), 1e-12)
    rng = np.random.default_rng(random_state)
    taps = np.arange(L)[:, None] + np.arange(kernel_size)  # (position, tap) -> input
    best = None
    for _ in range(n_restarts):
        # slot c * L + p; units sorted by centre fill positions, random channels
        order = np.argsort(centre + 1e-9 * rng.standard_normal(n_out))
        slots = np.empty(n_out, dtype=int)
        for p in range(L):
            unit = order[p * channels:(p + 1) * channels]
            slots[unit] = rng.permutation(channels) * L + p
        for _ in range(50):
            permuted = np.empty_like(q)
            permuted[slots] = q
            # projection onto the convolution: each (channel, tap) averaged over positions
            blocks = permuted.reshape(channels, L, n_features, -1)
            filters = blocks[:, np.arange(L)[:, None], taps].mean(1)  # (C, kernel, k)
            projected = np.zeros_like(blocks)
            projected[:, np.arange(L)[:, None], taps] = filters[:, None]
            projected = projected.reshape(n_out, -1)
            flat = q.reshape(n_out, -1)
            cost = (flat ** 2).sum(1)[:, None] + (projected ** 2).sum(1)[None] \
                - 2 * flat @ projected.T
            _, new = linear_sum_assignment(cost)
            if np.array_equal(new, slots):
                break
            slots = new
        permuted = np.empty_like(q)
        permuted[slots] = q
        c = compare_subspaces(permuted.reshape(n_out * n_features, -1), reference)
        if best is None or c.excess < best.excess:
            best = c
    return float(np.degrees(best.max_angle)), best.excess


def first_layer_angle(learner):
    with torch.no_grad():
        U = learner.model_.sharing("0.weight").matrix().double().cpu().numpy()
    return matched_conv_angle(U)


def _episodes(n_shot, split="train"):
    def draw(n_tasks, rng):
        return load_mnist1d_tasks(n_tasks, n_way=N_WAY, n_shot=n_shot, n_query=N_QUERY,
                                  split=split, flat=True, random_state=int(rng.integers(2 ** 31)))
    return TaskStream(draw)


def run_row(method, n_shot=1, random_state=0, meta_batch_size=32, n_meta_steps=2000,
            device="cpu", n_test=N_TEST):
    """One fit and its measurements (the function a GPU script calls).

    Returns a dict: ``accuracy`` (mean over the test episodes) and its 95% half-width
    over episodes, ``angle_start`` / ``angle_end`` / ``excess_end`` (MSR-FC only),
    ``fit_seconds``.
    """
    torch.manual_seed(random_state)
    learner = make_learner(method, n_shot, meta_batch_size, n_meta_steps, device, random_state)
    start = (np.nan, np.nan)
    if method == "MSR-FC":
        probe = make_learner(method, n_shot, meta_batch_size, 1, device, random_state)
        probe.set_params(learn_symmetry=False).fit(_episodes(n_shot))
        start = first_layer_angle(probe)
    wall = time.perf_counter()
    learner.fit(_episodes(n_shot))
    wall = time.perf_counter() - wall
    test = load_mnist1d_tasks(n_test, n_way=N_WAY, n_shot=n_shot, n_query=N_QUERY,
                              split="test", flat=True, random_state=TEST_SEED + n_shot)
    accuracy = learner.evaluate(test, metrics="accuracy")["accuracy"].to_numpy()
    mean, half = over_seeds(accuracy)
    end = first_layer_angle(learner) if method == "MSR-FC" else (np.nan, np.nan)
    return dict(method=method, n_shot=n_shot, seed=random_state,
                meta_batch_size=meta_batch_size, n_meta_steps=n_meta_steps, accuracy=mean,
                accuracy_episode_ci=half, angle_start=start[0], angle_end=end[0],
                excess_end=end[1], fit_seconds=wall)


def _job(job):
    return run_row(**job)


def main(argv=None):
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    torch.set_num_threads(1)
    settings = cpu_settings(args, CPU)
    n_test, name = N_TEST, "mnist1d_fewshot"
    if args.quick:
        settings, n_test = dict(meta_batch_size=4, n_meta_steps=20), 20
        name = "mnist1d_fewshot_quick"
        args.seeds = args.seeds[:1]
    jobs = [dict(method=m, n_shot=k, random_state=s, device=args.device, n_test=n_test,
                 **settings) for k in SHOTS for m in METHODS for s in args.seeds]
    rows = pd.DataFrame(list(map_single_threaded(_job, jobs, args.n_jobs)))
    lines = header("MNIST-1D few-shot: MAML-FC, MAML-Conv1d, MSR-FC", args, {
        "protocol": f"5-way episodes, {N_QUERY} query signals per class, fresh training "
                    f"episodes every step, {n_test} fixed test episodes; meta-batch "
                    f"{settings['meta_batch_size']}, {settings['n_meta_steps']} meta-steps, "
                    "1 inner step, every other setting at the library's defaults",
        "network": f"40 → {HIDDEN} (ReLU) → 5; the first layer a 5-tap convolution of "
                   f"{CHANNELS} channels (MAML-Conv1d) or dense"})
    lines += ["| shots | method | test accuracy (%) | angle to the convolution, start → end (°) "
              "| span(U) outside the convolution's | fit (s, wall) |", "|" + "---|" * 6]
    for (k, m), part in rows.groupby(["n_shot", "method"], sort=False):
        angle = "—" if m != "MSR-FC" else \
            f"{pm(part.angle_start, digits=1)} → {pm(part.angle_end, digits=1)}"
        excess = "—" if m != "MSR-FC" else pm(part.excess_end, digits=2)
        lines.append(f"| {k} | {m} | {pm(part.accuracy, 100)} | {angle} | {excess} | "
                     f"{part.fit_seconds.mean():.0f} |")
    write_results(name, "\n".join(lines) + "\n", rows)


if __name__ == "__main__":
    main()
