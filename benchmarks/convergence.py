"""Does the learned U converge onto the symmetry? Defaults against the paper's protocol.

For each family of tasks with a known sharing (the true ``U``), the largest principal
angle between ``span(U)`` and the true subspace after meta-training, and the query MSE
on held-out tasks, for the learner's defaults, the paper's protocol, and ablations
that each change one thing in the defaults. The families (one dense MSR layer; the
issue's table):

- ``rank-1``: 1-D translation, 70 -> 68, k = 3, 1 support row (the demo);
- ``S10``: permutation-equivariant maps on 10 features (DeepSets layer), k = 2, 5 rows;
- ``rank-2``: translation whose two filters mix by position, k = 6, 1 row;
- ``C4`` / ``D4``: lifting convolutions of 5x5 images to 4 / 8 channels of 3x3 maps,
  k = 9 (one 3x3 filter), 5 rows;

and, for robustness (defaults vs protocol only), other sizes: rank-1 on 100 features,
S20, C4 lifting on 7x7 images, and C4 lifting with two fields (k = 18).

Ablations (each one change to the defaults): the symmetry gradient second order; plain
Adam; no row-sparsity ("Occam") prior on ``U`` (``sharing_sparsity=0``; the default
0.15 for one dense layer) or a stronger one; a constant meta-lr (1e-3, the protocol's,
and 1e-2, the defaults' peak); the cosine schedule; an orthonormal (Stiefel) ``U`` kept
by a QR retraction after every step (a training callback,
:class:`msr_sklearn.training.Callback`: studied here, not a library option); meta-batch
16 / 64 / 128.

Every run: 1000 meta-steps unless stated, tasks of 20 samples (6000 tasks: 5000 train,
1000 test), all other learner parameters at their defaults; 3 seeds, mean ± 95% CI over
seeds, and paired differences against the defaults on the same seeds. Run ``python
benchmarks/convergence.py [--quick] [--jobs 2]``; writes ``results/convergence.md`` and
``.csv``. Single-threaded workers (``torch.set_num_threads(1)``).
"""

from __future__ import annotations

import argparse
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

sys.path.insert(0, str(Path(__file__).parent))
from _report import library_version, map_single_threaded, write_results  # noqa: E402
from synthetic import conv_weight_subspace  # noqa: E402

from msr_sklearn import MetaSymmetryLearner  # noqa: E402
from msr_sklearn.datasets import (  # noqa: E402
    make_permutation_tasks,
    make_rotation_tasks,
    make_translation_tasks,
    translation_sharing,
)
from msr_sklearn.data.tasks import mean_confidence_interval  # noqa: E402
from msr_sklearn.training import Callback  # noqa: E402

#: the paper's outer loop (the official code's defaults)
PROTOCOL = dict(meta_lr=1e-3, meta_lr_schedule="constant", symmetry_gradient="second_order",
                meta_optimizer="adam", sharing_sparsity=0.0)
#: name -> (learner parameters changed from the defaults, callback factory or None)
CONDITIONS = {
    "defaults": ({}, None),
    "protocol (paper)": (PROTOCOL, None),
    "second-order symmetry gradient": (dict(symmetry_gradient="second_order"), None),
    "plain Adam": (dict(meta_optimizer="adam"), None),
    "no sparsity prior": (dict(sharing_sparsity=0.0), None),
    "sparsity prior 0.5": (dict(sharing_sparsity=0.5), None),
    "constant 1e-3": (dict(meta_lr=1e-3, meta_lr_schedule="constant"), None),
    "constant 1e-2": (dict(meta_lr_schedule="constant"), None),
    "cosine": (dict(meta_lr_schedule="cosine"), None),
    "Stiefel U (QR retraction)": ({}, "stiefel"),
    "meta-batch 16": (dict(meta_batch_size=16), None),
    "meta-batch 64": (dict(meta_batch_size=64), None),
    "meta-batch 128": (dict(meta_batch_size=128), None),
}
ROBUSTNESS = ("defaults", "protocol (paper)", "no sparsity prior")
FAMILIES = {  # name -> (k, n_support, in the table?)
    "rank-1": (3, 1, True), "S10": (2, 5, True), "rank-2": (6, 1, True),
    "C4": (9, 5, True), "D4": (9, 5, True),
    "rank-1, 100 features": (3, 1, False), "S20": (2, 5, False),
    "C4, 7x7 images": (9, 5, False), "C4, 2 fields": (18, 5, False),
}


def family_data(name, seed, n_tasks):
    """``(X, y, true_subspace)`` of a family; the subspace has orthonormal columns."""
    if name.startswith("rank"):
        rank = int(name[5])
        n_features = 100 if "100" in name else 70
        X, y, S = make_translation_tasks(n_tasks, rank=rank, n_features=n_features,
                                         return_subspace=True, random_state=seed)
        return X, y, S
    if name.startswith("S"):
        return make_permutation_tasks(n_tasks, n_features=int(name[1:]), return_subspace=True,
                                      random_state=seed)
    group = name[:2].lower()
    size = 7 if "7x7" in name else 5
    fields = 2 if "2 fields" in name else 1
    X, y, filters = make_rotation_tasks(group, n_tasks, image_size=size, n_fields=fields,
                                        return_subspace=True, random_state=seed)
    channels = fields * (4 if group == "c4" else 8)
    return X, y, conv_weight_subspace(filters, channels, size)


def max_angle(U, subspace):
    """Largest principal angle, in degrees."""
    return float(np.degrees(subspace_angles(np.asarray(U, dtype=float), subspace).max()))


class StiefelRetraction(Callback):
    """After every step, ``U <- Q`` with ``U = Q R`` (orthonormal columns), ``v0 <- R v0``,
    so ``W = U v0`` is unchanged and ``U`` stays on the Stiefel manifold."""

    @torch.no_grad()
    def on_step_end(self, trainer):
        layer = trainer.model.network.meta_layers[0]
        q, r = torch.linalg.qr(layer.sharing.basis.T)
        sign = torch.sign(torch.diagonal(r))
        layer.sharing.basis.copy_((q * sign).T)
        layer.filters.copy_((r * sign[:, None]) @ layer.filters)


def run_one(job):
    """One (family, condition, seed, steps): the angle, the query MSE and the fit time."""
    family, condition, seed, steps, n_tasks = job
    k, n_support, _ = FAMILIES[family]
    X, y, subspace = family_data(family, seed, n_tasks)
    n_test = n_tasks // 6
    params, extra = CONDITIONS[condition]
    callbacks = [StiefelRetraction()] if extra == "stiefel" else None
    learner = MetaSymmetryLearner(layer="msr", n_filters=k, n_support=n_support,
                                  n_meta_steps=steps, random_state=seed, callbacks=callbacks,
                                  **params)
    start = time.perf_counter()
    learner.fit(X[:-n_test], y[:-n_test])
    seconds = time.perf_counter() - start
    mse = learner.evaluate(X[-n_test:], y[-n_test:])["mse"]
    U = learner.symmetry_.symmetry_matrix(0)
    return dict(family=family, condition=condition, seed=seed, steps=steps,
                angle_deg=max_angle(U, subspace), mse=float(mse.mean()),
                fit_s=seconds, diverged=bool(learner.history_["diverged"].any()))


def jobs(cfg):
    for family, (_, _, main_table) in FAMILIES.items():
        conditions = CONDITIONS if main_table else ROBUSTNESS
        if cfg["families"] and family not in cfg["families"]:
            continue
        for condition in conditions:
            for seed in range(cfg["seeds"]):
                yield family, condition, seed, cfg["steps"], cfg["n_tasks"]


# --------------------------------------------------------------------------- tables
def _cell(values, digits):
    mean, ci = mean_confidence_interval(values)
    return f"{mean:.{digits}f}" + ("" if np.isnan(ci) else f" ± {ci:.{digits}f}")


def summary_table(df, families, conditions, metric, digits):
    """Rows: conditions; columns: families; cells mean ± 95% CI over seeds."""
    head = "| condition | " + " | ".join(families) + " |"
    lines = [head, "|" + "---|" * (len(families) + 1)]
    for condition in conditions:
        cells = []
        for family in families:
            part = df[(df.family == family) & (df.condition == condition)]
            cells.append(_cell(part[metric], digits) if len(part) else "–")
        lines.append(f"| {condition} | " + " | ".join(cells) + " |")
    return lines


def paired_lines(df, families, metric, digits, against="protocol (paper)"):
    """Defaults minus ``against`` on the same seeds, per family."""
    out = []
    for family in families:
        part = df[df.family == family].pivot(index="seed", columns="condition", values=metric)
        if "defaults" not in part or against not in part:
            continue
        diff = part["defaults"] - part[against]
        out.append(f"- {family}: {_cell(diff, digits)} (per seed "
                   + ", ".join(f"{d:+.{digits}f}" for d in diff) + ")")
    return out


def targets(df):
    """The issue's targets at the defaults, per seed."""
    d = df[df.condition == "defaults"]
    today = df[df.condition == "protocol (paper)"]
    lines = []
    for family, bound in (("rank-1", 1.0), ("S10", 1.0), ("C4", 1.0), ("D4", 1.0),
                          ("rank-2", 5.0)):
        angles = d[d.family == family].angle_deg
        if len(angles):
            lines.append(f"- {family}: largest angle ≤ {bound:g}° in {int((angles <= bound).sum())}"
                         f" of {len(angles)} seeds (max {angles.max():.2f}°)")
    mse = d[d.family == "rank-2"].mse
    if len(mse):
        lines.append(f"- rank-2 query MSE ≤ 0.25 in {int((mse <= 0.25).sum())} of {len(mse)} "
                     f"seeds (max {mse.max():.3f})")
    for family in FAMILIES:
        a, b = d[d.family == family].mse, today[today.family == family].mse
        if len(a) and len(b):
            worse = a.mean() > b.mean()
            lines.append(f"- {family}: query MSE {a.mean():.3f} (defaults) vs {b.mean():.3f} "
                         f"(protocol): {'WORSE' if worse else 'no worse'}")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 steps, 1 seed (~2 min)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--families", nargs="*", default=None, help="only these families")
    args = parser.parse_args(argv)
    cfg = dict(steps=300 if args.quick else 1000, seeds=1 if args.quick else 3,
               n_tasks=1200 if args.quick else 6000, families=args.families)
    start = time.perf_counter()
    rows = []
    for row in map_single_threaded(run_one, list(jobs(cfg)), args.jobs):
        rows.append(row)
        print(f"[{time.perf_counter() - start:5.0f} s] {row['family']:>20} "
              f"{row['condition']:<32} seed {row['seed']}: angle {row['angle_deg']:6.2f}° "
              f"mse {row['mse']:.3f} ({row['fit_s']:.1f} s)", flush=True)
    wall = time.perf_counter() - start
    df = pd.DataFrame(rows)
    main_families = [f for f, (_, _, m) in FAMILIES.items() if m and f in set(df.family)]
    other = [f for f, (_, _, m) in FAMILIES.items() if not m and f in set(df.family)]
    conditions = [c for c in CONDITIONS if c in set(df.condition)]
    lines = [
        "# Convergence of the learned U: the defaults against the paper's protocol",
        "",
        f"Written by `python benchmarks/convergence.py{' --quick' if args.quick else ''}"
        f" --jobs {args.jobs}` on {datetime.date.today()}, msr_sklearn at "
        f"{library_version()}; {platform.machine()}, {os.cpu_count()} cores shared with other "
        f"jobs, torch {torch.__version__}, 1 thread per worker, {args.jobs} worker(s); whole "
        f"run {wall / 60:.1f} min.",
        "",
        f"Every run: {cfg['steps']} meta-steps, meta-batch 32 unless stated, "
        f"{cfg['n_tasks']} tasks of 20 samples ({cfg['n_tasks'] - cfg['n_tasks'] // 6} train,"
        f" {cfg['n_tasks'] // 6} test), one dense MSR layer, every other learner parameter at "
        "its default. Defaults: meta_lr 1e-2 under `inverse_time`, `msr_adam`, "
        "`symmetry_gradient='auto'` (first order for one layer), `sharing_sparsity='auto'` "
        "(0.15 for one dense layer). Protocol: meta_lr 1e-3 constant, plain Adam, second "
        "order, no prior. Cells: mean ± 95% CI over "
        f"{cfg['seeds']} seed(s).",
        "",
        "## Largest principal angle between span(U) and the true sharing (degrees)",
        "",
        *summary_table(df, main_families, conditions, "angle_deg", 2),
        "",
        "## Query MSE on held-out tasks",
        "",
        *summary_table(df, main_families, conditions, "mse", 3),
        "",
        "## Paired differences, defaults − protocol (same seeds)",
        "",
        "Angle (degrees):",
        "",
        *paired_lines(df, main_families + other, "angle_deg", 2),
        "",
        "Query MSE:",
        "",
        *paired_lines(df, main_families + other, "mse", 3),
        "",
    ]
    if other:
        lines += ["## Other sizes: defaults and protocol", "",
                  *summary_table(df, other, ROBUSTNESS, "angle_deg", 2), "",
                  *summary_table(df, other, ROBUSTNESS, "mse", 3), ""]
    lines += ["## The issue's targets at the defaults", "", *targets(df), "",
              "## Fit seconds per run (mean over runs)", "",
              *summary_table(df, main_families, conditions, "fit_s", 1), ""]
    text = "\n".join(lines)
    if args.quick:
        print(text)
    else:
        write_results("convergence", text, df)


if __name__ == "__main__":
    main()
