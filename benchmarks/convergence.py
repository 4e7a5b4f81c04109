"""Does the learned U converge onto the symmetry? The defaults' worst case over the zoo.

For every family of :data:`msr_sklearn.datasets.ZOO` (a dense MSR layer whose tasks have
a known sharing, from translations of rank 1-5 to S_n on pairs, products, dihedral
groups, lifting convolutions, weak symmetry directions and noisy targets), the largest
principal angle between ``span(U)`` and the true sharing after meta-training, and the
query MSE on held-out tasks, for the learner's defaults, the paper's protocol, and
ablations that each change one thing in the defaults. The defaults are chosen by the
worst case over the families (issue 21), so the report leads with it: per condition,
the worst angle relative to its family's target, and the worst query MSE relative to
the best of {the paper's protocol, the defaults without the prior}.

Every run: ``layer="msr"``, ``bias=False``, the family's ``n_filters`` (= the true
sharing's dimension) and ``n_support``, 1000 meta-steps of meta-batch 32, 6000 tasks of
20 samples (5000 train, 1000 test), every other learner parameter at its default; 3
seeds, mean ± 95% CI over seeds. Run ``python benchmarks/convergence.py [--quick]
[--jobs 2] [--families ...] [--conditions ...] [--seeds N]``; writes
``results/convergence.md`` and ``.csv`` (``--quick`` and partial runs print only).
Single-threaded workers (``torch.set_num_threads(1)``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.linalg import subspace_angles

sys.path.insert(0, str(Path(__file__).parent))
from _report import cpu_name, library_version, map_single_threaded, write_results  # noqa: E402

from msr_sklearn import MetaSymmetryLearner  # noqa: E402
from msr_sklearn.data.tasks import mean_confidence_interval  # noqa: E402
from msr_sklearn.datasets import ZOO, make_zoo_tasks  # noqa: E402
from msr_sklearn.training import Callback  # noqa: E402

#: the paper's outer loop (the official code's defaults)
PROTOCOL = dict(meta_lr=1e-3, meta_lr_schedule="constant", symmetry_gradient="second_order",
                meta_optimizer="adam", sharing_sparsity=0.0)
#: name -> (learner parameters changed from the defaults, callback factory name or None)
CONDITIONS = {
    "defaults": ({}, None),
    "protocol (paper)": (PROTOCOL, None),
    "no prior": (dict(sharing_sparsity=0.0), None),
    "prior 0.15 (the old default)": (dict(sharing_sparsity=0.15), None),
    "second-order symmetry gradient": (dict(symmetry_gradient="second_order"), None),
    "plain Adam": (dict(meta_optimizer="adam"), None),
    "plain Adam, no prior": (dict(meta_optimizer="adam", sharing_sparsity=0.0), None),
    "constant 1e-2": (dict(meta_lr_schedule="constant"), None),
    "cosine": (dict(meta_lr_schedule="cosine"), None),
    "Stiefel U (QR retraction)": ({}, "stiefel"),
    "meta-batch 64": (dict(meta_batch_size=64), None),
}
#: the conditions a default run measures (the rest: ``--conditions``)
MAIN = ("defaults", "protocol (paper)", "no prior", "prior 0.15 (the old default)",
        "second-order symmetry gradient", "plain Adam")
#: the query MSE of the defaults is compared with the best of these
MSE_REFERENCES = ("protocol (paper)", "no prior")


def max_angle(U, subspace):
    """Largest principal angle, in degrees."""
    return float(np.degrees(subspace_angles(np.asarray(U, dtype=float), subspace).max()))


class StiefelRetraction(Callback):
    """After every step, ``U <- Q`` with ``U = Q R`` (orthonormal columns), ``v0 <- R v0``,
    so ``W = U v0`` is unchanged and ``U`` stays on the Stiefel manifold."""

    @torch.no_grad()
    def on_step_end(self, trainer):
        model = trainer.model
        name = model.shared_names[0]
        basis, filters = model.sharing(name).basis, model.shared[name.replace(".", "-")].filters
        q, r = torch.linalg.qr(basis.T)
        sign = torch.sign(torch.diagonal(r))
        basis.copy_((q * sign).T)
        filters.copy_((r * sign[:, None]) @ filters)


def run_one(job):
    """One (family, condition, seed): the angle, the query MSE and the fit time."""
    family, condition, seed, steps, n_tasks = job
    spec = ZOO[family]
    X, y, subspace = make_zoo_tasks(family, n_tasks, return_subspace=True, random_state=seed)
    n_test = n_tasks // 6
    params, extra = CONDITIONS[condition]
    callbacks = [StiefelRetraction()] if extra == "stiefel" else None
    learner = MetaSymmetryLearner(layer="msr", n_filters=spec.n_filters, bias=False,
                                  n_support=spec.n_support, n_meta_steps=steps,
                                  random_state=seed, callbacks=callbacks, **params)
    start = time.perf_counter()
    learner.fit(X[:-n_test], y[:-n_test])
    seconds = time.perf_counter() - start
    mse = learner.evaluate(X[-n_test:], y[-n_test:])["mse"]
    U = learner.symmetry_.symmetry_matrix(0)
    lrs = learner.model_.inner_lrs.detach()
    return dict(family=family, condition=condition, seed=seed, steps=steps,
                angle_deg=max_angle(U, subspace), mse=float(mse.mean()), fit_s=seconds,
                diverged=bool(learner.history_["diverged"].any()),
                inner_lr=float(lrs[0]), target_deg=spec.max_angle)


def jobs(cfg):
    for family in cfg["families"]:
        for condition in cfg["conditions"]:
            for seed in range(cfg["seeds"]):
                yield family, condition, seed, cfg["steps"], cfg["n_tasks"]


# --------------------------------------------------------------------------- tables
def _cell(values, digits):
    mean, ci = mean_confidence_interval(values)
    return f"{mean:.{digits}f}" + ("" if np.isnan(ci) else f" ± {ci:.{digits}f}")


def family_table(df, families, conditions, digits=(2, 4)):
    """Rows: families; per condition, the angle and the query MSE (mean ± 95% CI)."""
    head = "| family | target | " + " | ".join(f"{c}: angle (°) | {c}: MSE"
                                               for c in conditions) + " |"
    lines = [head, "|" + "---|" * (2 + 2 * len(conditions))]
    for family in families:
        cells = [family, f"≤ {ZOO[family].max_angle:g}°"]
        for condition in conditions:
            part = df[(df.family == family) & (df.condition == condition)]
            cells += ([_cell(part.angle_deg, digits[0]), _cell(part.mse, digits[1])]
                      if len(part) else ["–", "–"])
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def mse_excess(df):
    """Per (family, condition): mean query MSE over the best reference's, minus 1."""
    means = df.groupby(["family", "condition"]).mse.mean().unstack()
    refs = [c for c in MSE_REFERENCES if c in means]
    if not refs:
        return None
    best = means[refs].min(axis=1)
    return means.div(best, axis=0) - 1


def worst_case_lines(df, conditions):
    """Per condition: the family of the worst angle (relative to its target, on the worst
    seed) and of the worst MSE excess, and how many families meet both targets."""
    excess = mse_excess(df)
    lines = ["| condition | worst angle / target (family, seed's angle) | families over the "
             "angle target | worst MSE excess over the best reference (family) | families "
             "over +2% |", "|---|---|---|---|---|"]
    for condition in conditions:
        part = df[df.condition == condition]
        if not len(part):
            continue
        ratio = part.angle_deg / part.target_deg
        worst = part.loc[ratio.idxmax()]
        over = sorted({r.family for r in part.itertuples() if r.angle_deg > r.target_deg})
        mse_cell, n_mse = "–", "–"
        if excess is not None and condition in excess:
            col = excess[condition].dropna()
            mse_cell = f"{100 * col.max():+.1f}% ({col.idxmax()})"
            n_mse = str(int((col > 0.02).sum()))
        lines.append(f"| {condition} | {ratio.max():.2f} ({worst.family}, "
                     f"{worst.angle_deg:.2f}°) | {len(over)} of {part.family.nunique()}"
                     f"{': ' + ', '.join(over) if over else ''} | {mse_cell} | {n_mse} |")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 steps, 1 seed")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--families", nargs="*", default=None, help="only these families")
    parser.add_argument("--conditions", nargs="*", default=None,
                        help=f"conditions (default: {', '.join(MAIN)})")
    parser.add_argument("--seeds", type=int, default=None, help="seeds (default 3; quick 1)")
    parser.add_argument("--steps", type=int, default=None, help="meta-steps (default 1000)")
    parser.add_argument("--csv", default=None, help="also write the rows of a partial run here")
    parser.add_argument("--previous", nargs="*", default=(),
                        help="CSV files of earlier runs (--csv) whose (family, condition) "
                             "pairs this run does not repeat, merged into the report")
    args = parser.parse_args(argv)
    for name, given, known in (("family", args.families, ZOO),
                               ("condition", args.conditions, CONDITIONS)):
        unknown = sorted(set(given or ()) - set(known))
        if unknown:
            parser.error(f"unknown {name}(s) {unknown}; choose from {list(known)}")
    cfg = dict(steps=args.steps or (300 if args.quick else 1000),
               seeds=args.seeds or (1 if args.quick else 3),
               n_tasks=1200 if args.quick else 6000, families=args.families or list(ZOO),
               conditions=args.conditions or list(MAIN))
    start = time.perf_counter()
    rows = []
    for row in map_single_threaded(run_one, list(jobs(cfg)), args.jobs):
        rows.append(row)
        print(f"[{time.perf_counter() - start:5.0f} s] {row['family']:>24} "
              f"{row['condition']:<30} seed {row['seed']}: angle {row['angle_deg']:6.2f}° "
              f"mse {row['mse']:.4f} lr {row['inner_lr']:.2f} ({row['fit_s']:.1f} s)",
              flush=True)
    wall = time.perf_counter() - start
    df = pd.DataFrame(rows)
    if args.csv:
        df.to_csv(args.csv, index=False)
    ran = set(zip(df.family, df.condition))
    for path in args.previous:  # earlier rows of pairs this run did not repeat
        earlier = pd.read_csv(path)
        keep = [(f, c) not in ran for f, c in zip(earlier.family, earlier.condition)]
        df = pd.concat([df, earlier[keep]], ignore_index=True)
    families = [f for f in ZOO if f in set(df.family)]
    conditions = [c for c in CONDITIONS if c in set(df.condition)]
    command = "python benchmarks/convergence.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    lines = [
        "# Convergence of the learned U over the family zoo: the defaults' worst case",
        "",
        f"Written by `{command.strip()}` on {datetime.date.today()}, msr_sklearn at "
        f"{library_version()}; {cpu_name()} ({platform.machine()}), {os.cpu_count()} cores "
        f"shared with other jobs, torch {torch.__version__}, 1 thread per worker, "
        f"{args.jobs} worker(s); whole run {wall / 60:.1f} min."
        + (f" Merged with the rows of {', '.join(args.previous)} for the (family, "
           "condition) pairs this run did not repeat (written by the same script at the "
           "commit and machine their own command names; see docs/convergence.md)."
           if args.previous else ""),
        "",
        f"Every run: {cfg['steps']} meta-steps, meta-batch 32 unless stated, "
        f"{cfg['n_tasks']} tasks of 20 samples ({cfg['n_tasks'] - cfg['n_tasks'] // 6} train,"
        f" {cfg['n_tasks'] // 6} test), one dense MSR layer without bias, the family's "
        "`n_filters` and `n_support` (`msr_sklearn.datasets.ZOO`), every other learner "
        "parameter at its default. Protocol: meta_lr 1e-3 constant, plain Adam, second "
        f"order, no prior. Cells: mean ± 95% CI over {cfg['seeds']} seed(s).",
        "",
        "## Worst case over the families",
        "",
        "The angle ratio is the largest over families and seeds of the angle over the "
        "family's target; the MSE excess is the seed-mean query MSE over the best seed-mean "
        f"of {{{', '.join(MSE_REFERENCES)}}} for the family (target ≤ +2%).",
        "",
        *worst_case_lines(df, conditions),
        "",
        "## Per family: largest principal angle (degrees) and query MSE",
        "",
        *family_table(df, families, conditions),
        "",
        "## Fit seconds per run (mean over families and seeds; not timings: shared machine)",
        "",
        *[f"- {c}: {df[df.condition == c].fit_s.mean():.1f} s" for c in conditions],
        "",
    ]
    text = "\n".join(lines)
    if args.quick or args.steps or args.seeds or (
            (args.families or args.conditions) and not args.previous):
        print(text)
    else:
        write_results("convergence", text, df)


if __name__ == "__main__":
    main()
