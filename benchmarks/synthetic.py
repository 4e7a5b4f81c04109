"""The paper's synthetic experiments, through the public API, beside the official code.

Reproduces the MSR paper's synthetic regression tables with
:class:`~msr_sklearn.MetaSymmetryLearner` and compares them with the paper's own
implementation re-run on this machine (``/work/shared/reference/official-baseline.md``).

Protocol (the official ``train_synthetic.py`` defaults): 10000 tasks of 20 samples,
tasks 0-7999 meta-train and 8000-9999 meta-test; 1 support + 19 query rows per task
(a fresh random split at every meta-step), 1 inner SGD step, inner lr 0.1 learned per
layer, second-order meta-gradients, Adam 1e-3, meta-batch 32, no bias. Translation
(1-D, 70 -> 68): MAML-FC (the built-in MLP, ``layer="dense"``), MAML-LC
(``module=LocallyConnected1d``), MAML-Conv (``module=Conv1dLayer``) and MSR-FC
(``layer="msr"``, k = 3 / 6 / 30 for ranks 1 / 2 / 5). Rotation (2-D lifting
convolutions under C4 / D4, :func:`make_rotation_tasks`): one valid 3x3 convolution
without a head (``module=ConvNet``, ``module__n_outputs=None``, ``module__channels=(m,)``
for a group of order ``m``): MAML-Conv (``layer="dense"``: plain filters) and MSR-Conv
(``module__n_copies=m`` under ``ConvFilterSharing(m, init="identity")``); and MSR-FC
(``"msr"``, k = 9, one 3x3 filter, on the flattened image).

Every number is the query MSE after adaptation on all 2000 meta-test tasks (one
seeded support/query split per task): per run, mean ± Student-t 95% CI over tasks;
across seeds, mean ± 95% CI over seeds with the per-seed values listed. The longer
column continues the same runs (``warm_start``: same Adam state, same model). For
MSR, the largest principal angle (degrees, :func:`scipy.linalg.subspace_angles`)
between the learned ``U`` and the true sharing subspace measures how well the
symmetry was recovered (for rank 5, k = 30 > 15 true dimensions: the angle says how
much of the true subspace ``span(U)`` contains).

Ablations (MSR-FC, translation) explain the differences from the official code: the
paper's initialization (``U ~ N(0, 0.01²)`` instead of orthonormal columns), the sum
instead of the mean over tasks in the meta-loss, a 10x lower meta-lr for the last
quarter of training, and, on rank 2, what it takes to leave the ~0.5 plateau within
1000 steps (meta-lr 2e-3, or k = 12).

Run ``python benchmarks/synthetic.py`` (full, about 15 min on 2 CPU cores) or
``--quick`` (about 1 min); single-threaded (``torch.set_num_threads(1)``). Writes
``synthetic.md``, ``synthetic.csv`` and ``translation_sharing.png`` to
``benchmarks/results`` (``--quick`` only prints, unless ``--out DIR`` is given).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.linalg import subspace_angles

import msr_sklearn._fitting as fitting_module
import msr_sklearn.training.loop as loop_module
from msr_sklearn import MetaSymmetryLearner
from msr_sklearn.datasets import (conv_weight_subspace, make_rotation_tasks,
                                  make_translation_tasks, translation_sharing)
from msr_sklearn.data.tasks import mean_confidence_interval
from msr_sklearn.models import Conv1dLayer, ConvNet, LocallyConnected1d
from msr_sklearn.sharing import ConvFilterSharing, DenseSharing

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when loaded by path (tests)
from _report import cpu_name, library_version  # noqa: E402

RESULTS = Path(__file__).parent / "results"

#: the official train_synthetic.py defaults, common to every row
PROTOCOL = dict(bias=False, n_support=1, support_split="random", inner_steps=1, inner_lr=0.1,
                learn_inner_lr=True, first_order=False, meta_lr=1e-3, meta_batch_size=32,
                meta_lr_schedule="constant", symmetry_gradient="second_order",
                meta_optimizer="adam", sharing_sparsity=0.0)
#: the protocol's data and inner loop without its outer loop: the "defaults" rows leave
#: meta_lr, its schedule, the symmetry gradient and the optimizer at the learner's defaults
DATA_PROTOCOL = {k: v for k, v in PROTOCOL.items()
                 if k not in ("meta_lr", "meta_lr_schedule", "symmetry_gradient", "meta_optimizer",
                              "sharing_sparsity")}
N_TASKS, N_TRAIN = 10000, 8000
K_OF_RANK = {1: 3, 2: 6, 5: 30}
TRANSLATION_MODELS = {
    "MAML-FC": dict(layer="dense"),
    "MAML-LC": dict(module=LocallyConnected1d, layer="dense"),
    "MAML-Conv": dict(module=Conv1dLayer, layer="dense"),
    "MSR-FC": dict(layer="msr"),
}
ROTATION_MODELS = ("MAML-Conv", "MSR-Conv", "MSR-FC")
GROUP_ORDER = {"c4": 4, "d4": 8}


def rotation_model(model, group, image_size):
    """Learner parameters of a rotation row: one valid 3x3 convolution to ``m`` channels
    (no head, the maps are the outputs), plain (MAML-Conv) or with ``m`` copies of one
    learned filter (MSR-Conv); or MSR-FC, a dense ``U`` with k = 9 on the flat image.

    MSR-Conv's copies start identical (``ConvFilterSharing(init="identity")``), as this
    benchmark's single MSR-Conv layer always did; the ConvNet's default policy would
    start them as different filters (``init="random"``)."""
    if model == "MSR-FC":
        return dict(layer="msr", n_filters=9)
    m = GROUP_ORDER[group]
    conv = dict(module=ConvNet, module__input_shape=(1, image_size, image_size),
                module__channels=(m,), module__n_outputs=None)
    if model == "MAML-Conv":
        return dict(conv, layer="dense")
    return dict(conv, module__n_copies=m,
                sharing={"features.0.weight": ConvFilterSharing(m, init="identity")})


def learner_params(params, defaults=False):
    """The protocol (with ``defaults``: its data and inner loop only) and a row's
    parameters; ``bias=False`` goes to the module's own ``bias`` when a row has one."""
    params = {**(DATA_PROTOCOL if defaults else PROTOCOL), **params}
    if params.get("module") is not None and "bias" in params:
        params.setdefault("module__bias", params.pop("bias"))
    return params

#: official code, this machine, 1000 steps (official-baseline.md): the one-seed value
#: and its 95% CI half-width quoted in the issue, and mean ± sd over its 3 runs
OFFICIAL = {
    (1, "MAML-FC"): (2.94, 0.28, 2.978, 0.120), (1, "MAML-LC"): (2.90, 0.26, 2.786, 0.118),
    (1, "MAML-Conv"): (0.150, 0.026, 0.171, 0.018), (1, "MSR-FC"): (0.160, 0.022, 0.176, 0.015),
    (2, "MAML-FC"): (1.84, 0.14, 1.891, 0.045), (2, "MAML-LC"): (1.78, 0.14, 1.818, 0.032),
    (2, "MAML-Conv"): (0.501, 0.040, 0.523, 0.019), (2, "MSR-FC"): (0.539, 0.042, 0.504, 0.046),
    (5, "MAML-FC"): (1.01, 0.062, 1.017, 0.006), (5, "MAML-LC"): (1.00, 0.055, 0.965, 0.034),
    (5, "MAML-Conv"): (0.485, 0.023, 0.481, 0.004), (5, "MSR-FC"): (0.349, 0.017, 0.344, 0.005),
}
#: official code, 5000 steps, one run each (MSE ± 95% CI over 300 tasks)
OFFICIAL_5000 = {
    (1, "MAML-Conv"): (0.175, 0.030), (1, "MSR-FC"): (0.151, 0.023),
    (2, "MAML-Conv"): (0.549, 0.047), (2, "MSR-FC"): (0.223, 0.024),
    (5, "MAML-Conv"): (0.470, 0.024), (5, "MSR-FC"): (0.233, 0.015),
}
#: official code, seconds per 1000 meta-steps (1 thread, this machine, incl. its 11
#: evaluations): 1000 / (steps per second) from official-baseline.md
OFFICIAL_S_PER_1000 = {
    (1, "MAML-FC"): 16.7, (1, "MAML-LC"): 16.4, (1, "MAML-Conv"): 23.6, (1, "MSR-FC"): 21.5,
    (2, "MAML-FC"): 16.6, (2, "MAML-LC"): 17.5, (2, "MAML-Conv"): 25.4, (2, "MSR-FC"): 25.2,
    (5, "MAML-FC"): 16.5, (5, "MAML-LC"): 16.4, (5, "MAML-Conv"): 24.3, (5, "MSR-FC"): 30.1,
}

FULL = dict(steps=1000, long_steps=3000, seeds=3, rotation_seeds=2, rotation_long_steps=2000,
            image_size=9, eval_every=100)
QUICK = dict(steps=200, long_steps=400, seeds=1, rotation_seeds=1, rotation_long_steps=400,
             image_size=7, eval_every=50)


# ----------------------------------------------------------------------------- data
def max_angle(U, subspace):
    """Largest principal angle in degrees between ``span(U)`` and ``subspace``."""
    return float(np.degrees(subspace_angles(np.asarray(U, dtype=float), subspace).max()))


# ------------------------------------------------------------------ ablation hooks
@contextlib.contextmanager
def paper_initialization():
    """Build networks with the official ``ShareLinearFull`` init, ``U ~ N(0, 0.01²)``
    (ours: orthonormal columns); ``v0 ~ N(0, 1/n_out²)`` is the same in both.

    Patches the learner's network builder (``build_meta_model``) so that every dense
    ``U`` is redrawn right after it is built, from a generator seeded by the fit's seed.
    """
    build = fitting_module.build_meta_model

    def patched(*args, seed=0, **kwargs):
        model = build(*args, seed=seed, **kwargs)
        generator = torch.Generator().manual_seed(seed)
        for name in model.shared_names:
            sharing = model.sharing(name)
            if isinstance(sharing, DenseSharing):
                with torch.no_grad():
                    sharing.basis.copy_(0.01 * torch.randn(sharing.basis.shape,
                                                           generator=generator))
        return model

    fitting_module.build_meta_model = patched
    try:
        yield
    finally:
        fitting_module.build_meta_model = build


@contextlib.contextmanager
def sum_over_tasks():
    """Meta-loss = sum of the tasks' query losses (the official per-task ``backward``)
    instead of our mean: the meta-gradient is ``meta_batch_size`` times larger.

    Patches the :func:`~msr_sklearn.engine.meta_step` the training loop calls: with
    ``n_total_tasks=1`` its meta-loss (the tasks' losses summed over every chunk, divided
    by ``n_total_tasks``) is the sum.
    """
    meta_step = loop_module.meta_step

    def summed(*args, n_total_tasks=None, **kwargs):
        return meta_step(*args, n_total_tasks=1, **kwargs)

    loop_module.meta_step = summed
    try:
        yield
    finally:
        loop_module.meta_step = meta_step


def set_meta_lr(learner, lr):
    """Change the meta-lr of a fitted learner for its next ``warm_start`` fit."""
    learner.set_params(meta_lr=lr)


# --------------------------------------------------------------------------- runs
class Run:
    """One learner meta-trained in stages (warm starts), evaluated at checkpoints."""

    def __init__(self, learner, train, valid, test, subspace=None, context=None):
        self.learner = learner.set_params(warm_start=True)
        self.train, self.valid, self.test = train, valid, test
        self.subspace = subspace
        self.context = context or contextlib.nullcontext
        self.steps, self.fit_seconds = 0, 0.0

    def advance(self, to_step):
        n = to_step - self.steps
        if n <= 0:
            return self
        self.learner.set_params(n_meta_steps=n)
        start = time.perf_counter()
        with self.context():
            self.learner.fit(*self.train, validation_tasks=self.valid)
        self.fit_seconds += time.perf_counter() - start
        self.steps = to_step
        return self

    def branch(self):
        other = copy.copy(self)
        other.learner = copy.deepcopy(self.learner)
        return other

    def result(self, **labels):
        _, summary = self.learner.evaluate(*self.test, return_summary=True)
        angle = np.nan
        if self.subspace is not None:
            angle = max_angle(self.learner.symmetry_.symmetry_matrix(0), self.subspace)
        lrs = self.learner.model_.inner_lrs.detach().cpu().numpy()
        return dict(labels, steps=self.steps, mse=summary.loc["mse", "mean"],
                    mse_ci95=summary.loc["mse", "ci95"], n_test_tasks=int(
                        summary.loc["mse", "n_tasks"]), angle_deg=angle,
                    fit_s=self.fit_seconds, s_per_1000_steps=1000 * self.fit_seconds / self.steps,
                    inner_lr=float(lrs[0]))

    def curve(self):
        h = self.learner.history_
        return h.loc[h["valid_loss"].notna(), ["step", "valid_loss"]]


def make_learner(seed, cfg, defaults=False, **params):
    """The protocol's learner, or with ``defaults`` the learner's own outer loop."""
    return MetaSymmetryLearner(**learner_params(params, defaults),
                               validation_interval=cfg["eval_every"], random_state=seed)


def translation_data(rank, seed):
    X, y, subspace = make_translation_tasks(N_TASKS, rank=rank, return_subspace=True,
                                            random_state=seed)
    X, y = X.astype(np.float32), y.astype(np.float32)
    train = (X[:N_TRAIN], y[:N_TRAIN])
    valid = (X[N_TRAIN:N_TRAIN + 300], y[N_TRAIN:N_TRAIN + 300])  # the learning curve
    test = (X[N_TRAIN:], y[N_TRAIN:])
    return train, valid, test, subspace


def run_translation(cfg, log):
    """Main table and ablations on ranks 1, 2, 5. Returns rows, curves, rank-1 U."""
    rows, curves, figure_U = [], [], None
    steps, long_steps = cfg["steps"], cfg["long_steps"]
    decay_at = {steps: steps - steps // 4, long_steps: long_steps - long_steps // 4}
    for rank in (1, 2, 5):
        for seed in range(cfg["seeds"]):
            train, valid, test, subspace = translation_data(rank, seed)
            for model, params in TRANSLATION_MODELS.items():
                if model == "MSR-FC":
                    params = {**params, "n_filters": K_OF_RANK[rank]}
                labels = dict(problem=f"rank{rank}", model=model, seed=seed)
                run = Run(make_learner(seed, cfg, **params), train, valid, test,
                          subspace if model == "MSR-FC" else None)
                budgets = [steps]
                if seed == 0 or model == "MSR-FC":  # the baselines plateau early
                    budgets.append(long_steps)
                for budget in budgets:
                    if model == "MSR-FC":  # ablation: meta-lr / 10 for the last quarter
                        decayed = run.advance(decay_at[budget]).branch()
                        set_meta_lr(decayed.learner, PROTOCOL["meta_lr"] / 10)
                        rows.append(decayed.advance(budget).result(
                            **labels, variant="meta-lr/10 last 25%"))
                    rows.append(run.advance(budget).result(**labels, variant="protocol"))
                    log(rows[-1])
                curves.append(run.curve().assign(**labels))
                if rank == 1 and seed == 0 and model == "MSR-FC":
                    figure_U = run.learner.symmetry_.symmetry_matrix(0)
                default = Run(make_learner(seed, cfg, defaults=True, **params), train, valid,
                              test, subspace if model == "MSR-FC" else None)
                rows.append(default.advance(steps).result(**labels, variant="defaults"))
                log(rows[-1])
            # ablations at the 1000-step budget, MSR-FC only
            k = K_OF_RANK[rank]
            ablations = [("paper init U~N(0,0.01²)", dict(n_filters=k), paper_initialization),
                         ("sum over tasks", dict(n_filters=k), sum_over_tasks)]
            if rank == 2:
                ablations += [("meta-lr 2e-3", dict(n_filters=k, meta_lr=2e-3), None),
                              ("k = 12", dict(n_filters=12), None)]
            for variant, params, context in ablations:
                if variant == "sum over tasks" and seed != 0:
                    continue  # Adam's scale invariance: one seed shows it
                run = Run(make_learner(seed, cfg, layer="msr", **params), train, valid, test,
                          subspace, context)
                rows.append(run.advance(steps).result(problem=f"rank{rank}", model="MSR-FC",
                                                      seed=seed, variant=variant))
                log(rows[-1])
                curves.append(run.curve().assign(problem=f"rank{rank}", model="MSR-FC",
                                                 seed=seed, variant=variant))
    return rows, curves, figure_U


def rotation_data(group, seed, image_size):
    X, y, filters = make_rotation_tasks(group, N_TASKS, image_size=image_size,
                                        return_subspace=True, random_state=seed)
    X, y = X.astype(np.float32), y.astype(np.float32)
    n_channels = GROUP_ORDER[group]
    dense = conv_weight_subspace(filters, n_channels, image_size)
    return ((X[:N_TRAIN], y[:N_TRAIN]), (X[N_TRAIN:N_TRAIN + 300], y[N_TRAIN:N_TRAIN + 300]),
            (X[N_TRAIN:], y[N_TRAIN:]), filters, dense)


def run_rotation(cfg, log):
    rows, curves = [], []
    size = cfg["image_size"]
    for group in ("c4", "d4"):
        for seed in range(cfg["rotation_seeds"]):
            train, valid, test, filters, dense = rotation_data(group, seed, size)
            for model in ROTATION_MODELS:
                params = rotation_model(model, group, size)
                subspace = {"MAML-Conv": None, "MSR-Conv": filters, "MSR-FC": dense}[model]
                labels = dict(problem=group.upper(), model=model, seed=seed)
                run = Run(make_learner(seed, cfg, **params), train, valid, test, subspace)
                for budget in (cfg["steps"], cfg["rotation_long_steps"]):
                    rows.append(run.advance(budget).result(**labels, variant="protocol"))
                    log(rows[-1])
                curves.append(run.curve().assign(**labels))
                default = Run(make_learner(seed, cfg, defaults=True, **params), train, valid,
                              test, subspace)
                rows.append(default.advance(cfg["steps"]).result(**labels, variant="defaults"))
                log(rows[-1])
                if model == "MAML-Conv":  # ablation: start the inner lr near its optimum
                    run = Run(make_learner(seed, cfg, **params, inner_lr=1.0), train, valid,
                              test)
                    rows.append(run.advance(cfg["steps"]).result(**labels,
                                                                 variant="inner lr 1.0 at init"))
                    log(rows[-1])
    return rows, curves


# ------------------------------------------------------------------------- report
def _num(value):
    """As quoted: 2 decimals at or above 1, else 3."""
    return f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def _fmt(mean, ci, digits=3):
    if not np.isfinite(mean):
        return "–"
    return f"{mean:.{digits}f} ± {ci:.{digits}f}" if np.isfinite(ci) else f"{mean:.{digits}f}"


def _cell(group, metric="mse", digits=3):
    """'mean ± CI over seeds (a, b, c)' or, for one seed, 'mean ± CI over tasks'."""
    if group.empty:
        return "–"
    values = group[metric].to_numpy()
    if metric == "angle_deg" and not np.isfinite(values).any():
        return "–"
    if len(values) == 1:
        if metric == "mse":
            return _fmt(values[0], group["mse_ci95"].iloc[0], digits) + " ¹"
        return f"{values[0]:.{digits}f}"
    mean, ci = mean_confidence_interval(values)
    per_seed = ", ".join(f"{v:.{digits}f}" for v in values)
    return f"{_fmt(mean, ci, digits)} ({per_seed})"


def translation_table(df, cfg):
    steps, long_steps = cfg["steps"], cfg["long_steps"]
    main = df[(df["variant"] == "protocol") & df["problem"].str.startswith("rank")]
    lines = [
        f"| problem | model | ours, {steps} steps | official, 1000 steps: one seed "
        f"(3-run mean ± sd) | ours, {long_steps} steps | official, 5000 steps | "
        f"U angle ° ({steps} / {long_steps}) | s per 1000 steps: ours (official) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rank in (1, 2, 5):
        for model in TRANSLATION_MODELS:
            sel = main[(main["problem"] == f"rank{rank}") & (main["model"] == model)]
            short, long_ = sel[sel["steps"] == steps], sel[sel["steps"] == long_steps]
            off = OFFICIAL[(rank, model)]
            off5 = OFFICIAL_5000.get((rank, model))
            angle = "–"
            if model == "MSR-FC":
                angle = f"{_cell(short, 'angle_deg', 1)} / {_cell(long_, 'angle_deg', 1)}"
            speed = short["s_per_1000_steps"].mean()
            lines.append(
                f"| rank {rank} | {model} | {_cell(short)} | {_num(off[0])} ± {_num(off[1])} "
                f"({off[2]:.3f} ± {off[3]:.3f}) | {_cell(long_)} | "
                f"{_fmt(*off5) if off5 else '–'} | {angle} | {speed:.1f} "
                f"({OFFICIAL_S_PER_1000[(rank, model)]:.1f}) |")
    return lines


def ablation_table(df, cfg):
    steps, long_steps = cfg["steps"], cfg["long_steps"]
    msr = df[(df["model"] == "MSR-FC") & df["problem"].str.startswith("rank")]
    order = ["protocol", "paper init U~N(0,0.01²)", "sum over tasks", "meta-lr/10 last 25%",
             "meta-lr 2e-3", "k = 12"]
    lines = ["| problem | MSR-FC variant | steps | query MSE | U angle ° |", "|---|---|---|---|---|"]
    for rank in (1, 2, 5):
        for variant in order:
            for budget in (steps, long_steps):
                sel = msr[(msr["problem"] == f"rank{rank}") & (msr["variant"] == variant)
                          & (msr["steps"] == budget)]
                if sel.empty:
                    continue
                lines.append(f"| rank {rank} | {variant} | {budget} | {_cell(sel)} | "
                             f"{_cell(sel, 'angle_deg', 1)} |")
    return lines


def rotation_table(df, cfg):
    steps, long_steps = cfg["steps"], cfg["rotation_long_steps"]
    rot = df[df["problem"].isin(["C4", "D4"])]
    lines = [f"| group | model | ours, {steps} steps | ours, {long_steps} steps | "
             f"U angle ° ({steps} / {long_steps}) | learned inner lr | s per 1000 steps |",
             "|---|---|---|---|---|---|---|"]
    for group in ("C4", "D4"):
        for model, variant in [(m, "protocol") for m in ROTATION_MODELS] + [
                ("MAML-Conv", "inner lr 1.0 at init")]:
            sel = rot[(rot["problem"] == group) & (rot["model"] == model)
                      & (rot["variant"] == variant)]
            if sel.empty:
                continue
            if variant != "protocol":
                model = f"{model}, {variant}"
            short, long_ = sel[sel["steps"] == steps], sel[sel["steps"] == long_steps]
            angle = "–" if model == "MAML-Conv" else (
                f"{_cell(short, 'angle_deg', 1)} / {_cell(long_, 'angle_deg', 1)}")
            lr = (long_ if len(long_) else short)["inner_lr"].mean()
            lines.append(f"| {group} | {model} | {_cell(short)} | {_cell(long_)} | {angle} | "
                         f"{lr:.2f} | "
                         f"{short['s_per_1000_steps'].mean():.1f} |")
    return lines


def defaults_table(df, cfg):
    """Every model at the protocol's outer loop and at the learner's defaults, same seeds."""
    steps = cfg["steps"]
    sel = df[df["variant"].isin(["protocol", "defaults"]) & (df["steps"] == steps)]
    lines = [f"| problem | model | protocol, {steps} steps | defaults, {steps} steps | "
             "defaults − protocol (paired) | U angle °: protocol / defaults |",
             "|---|---|---|---|---|---|"]
    for problem in ("rank1", "rank2", "rank5", "C4", "D4"):
        models = ROTATION_MODELS if problem in ("C4", "D4") else TRANSLATION_MODELS
        for model in models:
            part = sel[(sel["problem"] == problem) & (sel["model"] == model)]
            proto, dflt = (part[part["variant"] == v].set_index("seed") for v in
                           ("protocol", "defaults"))
            if dflt.empty:
                continue
            diff = (dflt["mse"] - proto["mse"]).dropna()
            dm, dci = mean_confidence_interval(diff.to_numpy()) if len(diff) else (np.nan,) * 2
            angle = "–" if model.startswith("MAML") else (
                f"{_cell(proto.reset_index(), 'angle_deg', 1)} / "
                f"{_cell(dflt.reset_index(), 'angle_deg', 2)}")
            lines.append(f"| {problem} | {model} | {_cell(proto.reset_index())} | "
                         f"{_cell(dflt.reset_index())} | {_fmt(dm, dci)} | {angle} |")
    return lines


def target_lines(df, cfg):
    """The issue's targets, checked on the numbers above (paired by seed where possible)."""
    steps, long_steps = cfg["steps"], cfg["long_steps"]
    main = df[df["variant"] == "protocol"]

    def by_seed(problem, model, budget):
        sel = main[(main["problem"] == problem) & (main["model"] == model)
                   & (main["steps"] == budget)]
        return sel.set_index("seed")["mse"]

    lines = []
    for rank in (1, 2, 5):
        p = f"rank{rank}"
        ours = by_seed(p, "MSR-FC", steps)
        off = OFFICIAL[(rank, "MSR-FC")]
        mean, ci = mean_confidence_interval(ours.to_numpy())
        verdict = "yes" if mean <= off[0] else (
            "equal to its 3-run mean, not below its quoted seed" if mean <= off[2] + 0.005
            else "no")
        diffs = []
        for budget in (steps, long_steps):
            # the convolution has plateaued by `steps` (its seeds 1+ stop there)
            d = (by_seed(p, "MSR-FC", budget) - by_seed(p, "MAML-Conv", steps)).dropna()
            dm, dci = mean_confidence_interval(d.to_numpy())
            diffs.append(f"{budget} steps {_fmt(dm, dci)} (per seed "
                         + ", ".join(f"{v:+.3f}" for v in d) + ")")
        lines.append(
            f"- rank {rank}: MSR-FC at {steps} steps {_fmt(mean, ci)} vs official {_num(off[0])} "
            f"(one seed) / {off[2]:.3f} (3-run mean): at least as good? **{verdict}**. "
            f"MSR-FC − MAML-Conv ({steps}-step conv, same seed): " + "; ".join(diffs) + ".")
    angles = df[(df["problem"] == "rank1") & (df["model"] == "MSR-FC")]
    for variant in ("protocol", "meta-lr/10 last 25%"):
        for budget in (steps, long_steps):
            a = angles[(angles["variant"] == variant) & (angles["steps"] == budget)]["angle_deg"]
            if len(a):
                lines.append(f"- rank-1 U angle to the convolution band, {variant}, {budget} "
                             f"steps: {a.mean():.1f}° (max {a.max():.1f}°); the off-band part of U "
                             "leaks adapted weight off the band, roughly 3·sin²θ = "
                             f"{3 * np.sin(np.radians(a.mean())) ** 2:.3f} of query MSE "
                             "(E‖w‖² = 3).")
    for group in ("C4", "D4"):
        d = (by_seed(group, "MSR-Conv", steps) - by_seed(group, "MAML-Conv", steps)).dropna()
        if len(d):
            lines.append(f"- {group}: MSR-Conv − MAML-Conv at {steps} steps, per seed: "
                         + ", ".join(f"{v:+.3f}" for v in d) + ".")
    return lines


def curve_lines(curves, every):
    """Validation query MSE (300 meta-test tasks) along training, MSR-FC protocol runs."""
    lines = []
    for c in curves:
        if c.empty or c["model"].iloc[0] != "MSR-FC" or "variant" in c:
            continue
        pts = c[(c["step"] + 1) % every == 0]
        values = " ".join(f"{v:.2f}" for v in pts["valid_loss"])
        lines.append(f"- {c['problem'].iloc[0]} seed {c['seed'].iloc[0]}: {values}")
    return lines


def save_figure(U, path, note=""):
    """The learned rank-1 U beside the true band, zoomed on the top-left corner."""
    from msr_sklearn.inspection.plotting import plot_symmetry_matrix

    band = translation_sharing(70, 3)
    fig = plot_symmetry_matrix(U, (68, 70), reference=band, align=False, max_columns=3)
    rows, cols = 12, 14
    for ax in fig.axes:
        title = ax.get_title()
        if title.startswith("column"):  # single columns: zoom; the random weight stays whole
            ax.set_xlim(-0.5, cols - 0.5)
            ax.set_ylim(rows - 0.5, -0.5)
            ax.set_title(f"{title} (rows 0-{rows - 1}, cols 0-{cols - 1})", fontsize=7)
        else:
            ax.set_title(f"{title}, W = U z (68×70)", fontsize=7)
    angle = max_angle(U, np.linalg.qr(band)[0])
    fig.suptitle(f"rank 1: learned U (MSR-FC{note}, top) vs the convolution band (bottom); "
                 f"largest principal angle {angle:.1f}°", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="short runs, one seed, 7x7 images (about 1 min)")
    parser.add_argument("--steps", type=int, help="protocol budget (default 1000)")
    parser.add_argument("--long-steps", type=int, help="longer budget (default 3000)")
    parser.add_argument("--seeds", type=int, help="seeds per translation row (default 3)")
    parser.add_argument("--rotation-seeds", type=int, help="seeds per rotation row (default 3)")
    parser.add_argument("--rotation-long-steps", type=int,
                        help="longer rotation budget (default 2000)")
    parser.add_argument("--image-size", type=int, help="rotation image side (default 9)")
    parser.add_argument("--skip-rotation", action="store_true")
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder (default benchmarks/results; --quick writes "
                             "nothing unless given)")
    args = parser.parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL)
    for key in ("steps", "long_steps", "seeds", "rotation_seeds", "rotation_long_steps",
                "image_size"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    torch.set_num_threads(1)
    start = time.perf_counter()
    stamp = lambda: f"[{time.perf_counter() - start:6.0f} s]"  # noqa: E731

    def log(row):
        print(f"{stamp()} {row['problem']:>5} {row['model']:<9} {row['variant']:<24} "
              f"seed {row['seed']} step {row['steps']:>5}: mse {row['mse']:.3f} ± "
              f"{row['mse_ci95']:.3f}  angle {row['angle_deg']:5.1f}  "
              f"({row['s_per_1000_steps']:.1f} s/1000)", flush=True)

    rows, curves, U = run_translation(cfg, log)
    t_translation = time.perf_counter() - start
    if not args.skip_rotation:
        rot_rows, rot_curves = run_rotation(cfg, log)
        rows += rot_rows
        curves += rot_curves
    wall = time.perf_counter() - start
    df = pd.DataFrame(rows)

    out = args.out if args.out is not None or args.quick else RESULTS
    fig_path = Path("translation_sharing.png")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        fig_path = out / fig_path
        save_figure(U, fig_path, f", seed 0, {cfg['long_steps']} steps")

    cpu = cpu_name()
    lines = [
        "# The paper's synthetic experiments: ours vs the official implementation",
        "",
        f"Command: `{' '.join(['python benchmarks/synthetic.py', *(argv or sys.argv[1:])])}`; "
        f"{datetime.date.today()}.",
        f"Machine: {cpu}, {os.cpu_count()} cores, {platform.system()}, Python "
        f"{platform.python_version()}, torch {torch.__version__} (CPU), **1 thread** "
        f"(`torch.set_num_threads(1)`); other jobs may share the cores.",
        f"Library: commit {library_version()}.",
        f"Wall time: **{wall / 60:.1f} min** in all (translation incl. ablations "
        f"{t_translation / 60:.1f} min, rotation {(wall - t_translation) / 60:.1f} min).",
        "",
        "Protocol (the official defaults): 10000 tasks × 20 samples, 8000 meta-train / 2000 "
        "meta-test, 1 support + 19 query (random split every step), 1 inner SGD step, "
        "inner lr 0.1 learned per layer, second order, Adam 1e-3, meta-batch 32, no bias. "
        "Query MSE after adaptation on all 2000 meta-test tasks. Several seeds: mean ± 95% "
        "CI over seeds (per-seed values in brackets; each seed draws its own data, "
        "connectivity and initialization). ¹ one seed: mean ± 95% CI over the 2000 tasks. "
        f"The {cfg['long_steps']}-step column continues the same runs (MAML baselines: "
        "seed 0 only; they plateau early). U angle: largest principal angle between span(U) and the true sharing "
        "subspace (rank 5: k = 30 > 15 true dimensions, so it measures how much of the "
        "true subspace span(U) holds). Speed: fit time (incl. a 300-task validation every "
        f"{cfg['eval_every']} steps) per 1000 meta-steps.",
        "",
        "Official: the paper's code (`train_synthetic.py`, torch 2.13, 1 thread, this "
        "machine; official-baseline.md): the one-seed value ± its 95% CI over 300 tasks, and "
        "in brackets mean ± sd over its 3 runs; 5000 steps: one run.",
        "",
        "## Translation (1-D, 70 → 68)",
        "",
        *translation_table(df, cfg),
        "",
        "## The learner's defaults beside the protocol",
        "",
        "The same data, inner loop and budget; the 'defaults' rows leave the outer loop at "
        "the learner's defaults (meta_lr 1e-2 under `inverse_time`, `msr_adam`, "
        "`symmetry_gradient='auto'`: first order for these one-layer networks, "
        "`sharing_sparsity='auto'`: 0.15 for a dense MSR layer) instead of the protocol's "
        "(Adam 1e-3, constant, second order, no prior). Fresh runs of "
        f"{cfg['steps']} steps (the schedule spans the whole fit).",
        "",
        *defaults_table(df, cfg),
        "",
        "## Ablations (MSR-FC)",
        "",
        "What explains the differences from the official code: its initialization of U, "
        "its sum (not mean) over tasks, a lower meta-lr at the end, and what escapes the "
        "rank-2 plateau within the protocol's 1000 steps.",
        "",
        *ablation_table(df, cfg),
    ]
    if not args.skip_rotation:
        lines += [
            "",
            f"## Rotation (2-D lifting convolution, {cfg['image_size']}×{cfg['image_size']} "
            "images, 3×3 filter)",
            "",
            "`make_rotation_tasks`: each task draws one 3×3 filter; its outputs are the "
            "image correlated with the filter under every element of C4 (4 channels) or D4 "
            f"(8 channels), {cfg['image_size'] - 2}×{cfg['image_size'] - 2} each. MAML-Conv: "
            "`module=ConvNet` with `module__channels=(m,)`, `module__n_outputs=None` (one "
            "valid convolution, no head) and `layer='dense'`: a free filter per channel; "
            "MSR-Conv: the same network with `module__n_copies=m`, m = group order, under "
            "`ConvFilterSharing(m, init='identity')` (copies start equal; angle against the "
            "exact lifting sharing of the filter tensor); "
            "MSR-FC: `layer='msr'` with k = 9 on the flattened image (angle against the full "
            "weight matrices of the lifting convolution). Same protocol as above; "
            f"{cfg['rotation_seeds']} seed(s), longer column {cfg['rotation_long_steps']} steps. "
            "'MAML-Conv, inner lr 1.0 at init': the protocol starts every inner lr at 0.1 and "
            "Adam moves a scalar by at most ~1e-3 per step, which limits MAML-Conv (whose "
            "only meta-parameters besides v0 are that lr); this row starts it near its "
            "optimum, to separate that from the value of the tied copies.",
            "",
            *rotation_table(df, cfg),
        ]
    lines += [
        "",
        "## The targets",
        "",
        *target_lines(df, cfg),
        "",
        "## Learning curves (MSR-FC, protocol)",
        "",
        f"Validation query MSE on 300 meta-test tasks every {cfg['eval_every'] * 2} steps, "
        f"from step {cfg['eval_every'] * 2}:",
        "",
        *curve_lines(curves, cfg["eval_every"] * 2),
        "",
        f"Figure: `{fig_path.name}` (rank 1, seed 0, after {cfg['long_steps']} steps).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if out is not None:
        (out / "synthetic.md").write_text(text)
        df.to_csv(out / "synthetic.csv", index=False, float_format="%.6g")
    return df


if __name__ == "__main__":
    main()
