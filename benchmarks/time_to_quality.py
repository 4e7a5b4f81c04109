"""Time to quality: whole-process seconds for the default learner to reach the official plateau.

The official MSR code's 5000-step MSR-FC runs on this machine
(``/work/shared/reference/official-baseline.md``) level off at a query MSE of about
0.17 / 0.223 / 0.233 on the rank-1 / 2 / 5 translation problems. This benchmark measures
how long :class:`~msr_sklearn.MetaSymmetryLearner` *at its defaults* takes to reach the
same MSE, as a whole process, and puts it beside the official code's time to the same
MSE on this machine.

Protocol (the paper's data protocol): 10000 tasks of 20 samples from
``make_translation_tasks(rank=r, random_state=seed)``, tasks 0-7999 meta-train and
8000-9999 meta-test, ``n_support=1``, ``n_filters`` = 3 / 6 / 30 for rank 1 / 2 / 5,
``bias=False``, ``random_state=seed``; every other parameter at the learner's default
(``meta_lr=1e-2`` under ``meta_lr_schedule="inverse_time"``, ``meta_optimizer="msr_adam"``,
``symmetry_gradient="auto"``, no validation during ``fit``). Each seed draws its own data
and initialization.

Since the default schedule is relative to ``n_meta_steps``, a seed's "time to the
target" is the time of a whole run: the run at the smallest grid value of
``n_meta_steps`` whose final query MSE on **all 2000** meta-test tasks (one seeded
support/query split per task; the official code logs the mean over 300 random tasks,
which is noisier) is at or below the target. The criterion is per seed: the *chosen*
``n_meta_steps`` of a rank is the largest of its seeds' values, every seed is run there,
and the table reports the fraction of seeds at or below the target and their seconds.
On rank 1 the exact convolution (``module=Conv1dLayer``, rows labelled
``layer="conv1d"``) is also fitted on each seed's
tasks: the floor that seed's tasks allow.

Each (rank, n_meta_steps, seed) is its own subprocess (``--worker``), timed from outside
with ``time.perf_counter()`` around ``subprocess.run``: interpreter start-up, imports,
data generation, fitting, scoring and exit. Inside, the worker times its phases (the
learner's meta-optimizer is its own, so no process imports ``torch._dynamo``, which
torch's first ``torch.optim`` optimizer would). Workers run one at a time, single-threaded
(``torch.set_num_threads(1)``, ``OMP_NUM_THREADS=MKL_NUM_THREADS=1``, as the official
runs).

Run ``python benchmarks/time_to_quality.py`` (full: 5 seeds, about 5 min on a quiet
2-core machine) or ``--quick`` (one seed, grid 150 / 600, about a minute, prints only).
The full run writes ``benchmarks/results/time_to_quality.md`` and ``.csv``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

RANKS = (1, 2, 5)
K_OF_RANK = {1: 3, 2: 6, 5: 30}
N_TASKS, N_TRAIN = 10000, 8000
#: the official code's plateau query MSE (its 5000-step MSR-FC curves)
TARGET = {1: 0.17, 2: 0.223, 5: 0.233}

FULL = dict(seeds=5, grid=(100, 150, 200, 300, 400, 600, 800, 1000, 1500, 2000),
            plateau_tol=0.001, floor_steps=1000)
QUICK = dict(seeds=1, grid=(150, 600), plateau_tol=0.001, floor_steps=300)

#: official code, this machine, MSR-FC (share_fc), 5000 outer steps, one run per rank
#: (official-baseline.md): test MSE (300 random meta-test tasks) logged at steps 0, 499,
#: 999, ..., 4999; steps/s (its own printout, loop incl. its test evaluations); wall s
#: (/usr/bin/time, the whole process)
OFFICIAL_CURVE_STEPS = (0, 499, 999, 1499, 1999, 2499, 2999, 3499, 3999, 4499, 4999)
OFFICIAL_CURVE = {
    1: (3.24, 1.01, 0.18, 0.19, 0.18, 0.18, 0.19, 0.19, 0.15, 0.19, 0.15),
    2: (1.97, 0.53, 0.49, 0.34, 0.25, 0.22, 0.23, 0.21, 0.22, 0.22, 0.22),
    5: (1.05, 0.49, 0.35, 0.26, 0.26, 0.22, 0.23, 0.23, 0.23, 0.23, 0.23),
}
OFFICIAL_STEPS_PER_S = {1: 45.8, 2: 46.3, 5: 35.0}
OFFICIAL_WALL_S = {1: 112.7, 2: 111.8, 5: 146.7}
OFFICIAL_N_STEPS = 5000
#: rank 1: the 1000-step runs (3 per rank) -- whole process and steps/s -- cross-check
OFFICIAL_1000 = dict(wall_s=25.1, steps_per_s=46.5, mse=(0.160, 0.177, 0.190))


# --------------------------------------------------------------------------- worker
def model_params(layer, rank):
    """Learner parameters of a row's model: ``"msr"`` is MSR-FC (the built-in one-layer
    MLP, k of the rank, no bias), ``"conv1d"`` the exact 3-tap convolution
    (``module=Conv1dLayer``, no bias), the rank-1 floor."""
    if layer == "conv1d":
        from msr_sklearn.models import Conv1dLayer

        return dict(module=Conv1dLayer, layer="dense", module__bias=False)
    if layer != "msr":
        raise ValueError(f"unknown model {layer!r}; use 'msr' or 'conv1d'")
    return dict(layer="msr", n_filters=K_OF_RANK[rank], bias=False)


def worker(rank, n_meta_steps, seed, t_launch, layer="msr"):
    """One whole run, timed by phase; returns a dict (printed as JSON)."""
    t_enter = time.time()
    t0 = time.perf_counter()
    import numpy as np
    import torch

    from msr_sklearn import MetaSymmetryLearner
    from msr_sklearn.datasets import make_translation_tasks
    t1 = time.perf_counter()
    torch.set_num_threads(1)
    t2 = time.perf_counter()
    X, y = make_translation_tasks(N_TASKS, rank=rank, random_state=seed)
    train, test = (X[:N_TRAIN], y[:N_TRAIN]), (X[N_TRAIN:], y[N_TRAIN:])
    t3 = time.perf_counter()
    learner = MetaSymmetryLearner(**model_params(layer, rank), n_support=1,
                                  n_meta_steps=n_meta_steps, random_state=seed)
    c3 = time.process_time()
    learner.fit(*train)
    t4, c4 = time.perf_counter(), time.process_time()
    per_task, summary = learner.evaluate(*test, return_summary=True)
    t5 = time.perf_counter()
    mse = per_task["mse"].to_numpy()
    official_style = np.random.default_rng(seed).choice(len(mse), 300, replace=False)
    return dict(rank=rank, layer=layer, n_meta_steps=n_meta_steps, seed=seed,
                mse=float(summary.loc["mse", "mean"]), mse_ci95=float(summary.loc["mse", "ci95"]),
                n_test_tasks=int(summary.loc["mse", "n_tasks"]),
                mse_300=float(mse[official_style].mean()),
                startup_s=t_enter - t_launch, imports_s=t1 - t0,
                data_s=t3 - t2, fit_s=t4 - t3, score_s=t5 - t4, inside_s=t5 - t0,
                fit_cpu_s=c4 - c3)


def run_worker(rank, n_meta_steps, seed, layer="msr"):
    """Run one worker as a subprocess; the whole-process wall and CPU seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    t_launch = time.time()
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--worker", str(rank), str(n_meta_steps),
                           str(seed), repr(t_launch), layer], env=env, capture_output=True,
                          text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise RuntimeError(f"worker rank {rank} steps {n_meta_steps} seed {seed} failed:\n"
                           + proc.stderr)
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {**row, "target": TARGET[rank], "meets": row["mse"] <= TARGET[rank],
            "wall_s": wall, "cpu_s": cpu, "load_1min": load}


def library_fingerprint():
    """A hash of the ``msr_sklearn`` sources the workers import (without importing it)."""
    import hashlib
    import importlib.util

    root = Path(importlib.util.find_spec("msr_sklearn").origin).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()[:12]


# -------------------------------------------------------------------------- official
def official_times(rank):
    """The official code's time to its plateau: the logged step, seconds, derivation.

    Its test MSE is logged every 500 steps, so the crossing lies between the last
    logged point above the plateau and the first on it: ``steps`` is that first point
    (``lower_steps`` the point before it, +1). Ranks 2 and 5: the first logged value at
    or below the target. Rank 1: the target 0.17 is below this run's own plateau (0.18
    from step 999 on, 0.178 on average; its three 1000-step runs end at 0.160 / 0.177 /
    0.190, mean 0.176), so a strict crossing happens only at step 3999, on a noisy 0.15;
    the plateau itself starts at step 999 (1.01 at step 499).
    """
    rate, curve = OFFICIAL_STEPS_PER_S[rank], OFFICIAL_CURVE[rank]
    strict = next(s for s, v in zip(OFFICIAL_CURVE_STEPS, curve) if v <= TARGET[rank])
    first = 999 if rank == 1 else strict
    i = OFFICIAL_CURVE_STEPS.index(first)
    steps, lower = first + 1, OFFICIAL_CURVE_STEPS[i - 1] + 1
    startup = OFFICIAL_WALL_S[rank] - OFFICIAL_N_STEPS / rate  # imports + data load
    return dict(rank=rank, steps=steps, lower_steps=lower, strict_steps=strict + 1,
                startup_s=startup, fit_s=steps / rate, whole_s=startup + steps / rate,
                fit_lower_s=lower / rate, whole_lower_s=startup + lower / rate,
                strict_whole_s=startup + (strict + 1) / rate,
                plateau_mean=sum(curve[i:]) / len(curve[i:]),
                logged=curve[i], logged_before=curve[i - 1])


# ----------------------------------------------------------------------------- scan
def scan(rank, cfg, log):
    """Each seed's smallest grid value meeting the target, then every seed at the largest.

    Seed 0 scans the grid upwards from its start. Every later seed starts at the last
    seed's value and steps down while it still meets the target, or up until it does
    (so each seed's value is its smallest, given that more steps do not hurt, which the
    runs at the chosen value check). A seed still above the target whose query MSE has
    improved by less than ``cfg["plateau_tol"]`` over the last two grid values it ran
    has levelled off above the target: it does not reach it.

    Returns the runs, the chosen value (the largest of the seeds' smallest values, run
    with every seed; ``None`` when no seed reaches the target) and the seeds' values.
    """
    grid, runs = cfg["grid"], {}

    def meets(i, seed):
        if (grid[i], seed) not in runs:
            runs[grid[i], seed] = run_worker(rank, grid[i], seed)
            log(runs[grid[i], seed])
        return runs[grid[i], seed]["meets"]

    def levelled_off(i, seed):
        ran = [runs.get((grid[j], seed)) for j in (i - 2, i - 1, i)] if i >= 2 else [None]
        return None not in ran and ran[0]["mse"] - ran[2]["mse"] < cfg["plateau_tol"]

    smallest, start = {}, 0
    for seed in range(cfg["seeds"]):
        i = start
        if meets(i, seed):
            while i > 0 and meets(i - 1, seed):
                i -= 1
        else:
            met = None
            while met is None and i + 1 < len(grid) and not levelled_off(i, seed):
                i += 1
                met = i if meets(i, seed) else None
            i = met
        smallest[seed] = None if i is None else grid[i]
        if i is not None:
            start = i
    reached = [n for n in smallest.values() if n is not None]
    chosen = max(reached) if reached else None
    if chosen is not None:
        for seed in range(cfg["seeds"]):
            meets(grid.index(chosen), seed)
    return list(runs.values()), chosen, smallest


def floor_runs(cfg, log):
    """Rank 1: the exact convolution (``module=Conv1dLayer``) at the defaults, every seed:
    the query MSE an exact symmetry reaches on that seed's tasks and split."""
    rows = []
    for seed in range(cfg["seeds"]):
        rows.append(run_worker(1, cfg["floor_steps"], seed, layer="conv1d"))
        log(rows[-1])
    return rows


# --------------------------------------------------------------------------- report
def pm(mean, ci):
    """'mean ± ci', or the mean alone for one seed."""
    return f"{mean:.2f} ± {ci:.2f}" if ci == ci else f"{mean:.2f}"


def ratio_cell(official, mean, ci):
    """official / ours, with the interval propagated from ours (official has no CI)."""
    if not ci == ci:  # one seed: no interval
        return f"**{official / mean:.1f}×**"
    lo = official / (mean + ci)
    hi = official / (mean - ci) if mean > ci else float("inf")
    return f"**{official / mean:.1f}×** ({lo:.1f}–{hi:.1f})"


def load_line(loads):
    """What the 1-minute load averages at the runs' starts say about the timings."""
    median = loads[len(loads) // 2]
    span = (f"1-minute load average {loads[0]:.1f}–{loads[-1]:.1f} (median {median:.1f}) at "
            "the starts of the runs")
    cores = os.cpu_count() or 1
    if median < cores:  # the worker itself adds about 1
        return (f"Load: {span}, below the {cores} cores, so no other job was competing for "
                "them and the wall seconds are those of a quiet machine; the CPU seconds "
                "(user + system) of the same runs are given beside them.")
    return (f"Load: **other jobs were running on this {cores}-core machine**: {span}. Wall "
            "seconds therefore include waiting for a core (the official runs were timed one "
            "at a time); the CPU seconds (user + system) of the same runs are given beside "
            "them as the load-robust figure.")


def machine_lines(argv, wall, n_runs, loads, fingerprints):
    import torch

    from _report import cpu_name, library_version

    cpu = cpu_name()
    loads = sorted(loads)
    return [
        f"Command: `{' '.join(['python benchmarks/time_to_quality.py', *argv])}`; "
        f"{datetime.date.today()}.",
        f"Machine: {cpu}, {os.cpu_count()} cores, {platform.system()}, Python "
        f"{platform.python_version()}, torch {torch.__version__} (CPU). **1 thread** per "
        "worker (`torch.set_num_threads(1)`, `OMP_NUM_THREADS=MKL_NUM_THREADS=1`), one worker "
        "at a time.",
        load_line(loads),
        f"Library: commit {library_version()}; its sources (sha256 {fingerprints[0]}) "
        + ("did not change during the run." if len(set(fingerprints)) == 1 else
           f"**changed during the run** (now {fingerprints[-1]}): the runs mix versions.")
        + f" Benchmark wall time: **{wall / 60:.1f} min** ({n_runs} worker processes).",
    ]


def report(df, chosen, smallest, cfg, argv, wall, loads, fingerprints, ranks):
    from msr_sklearn.data.tasks import mean_confidence_interval

    def mci(values):
        return mean_confidence_interval(list(values))

    df = df.assign(other_s=df["wall_s"] - df["inside_s"] - df["startup_s"])
    msr, floor = df[df["layer"] == "msr"], df[df["layer"] != "msr"]
    official = {r: official_times(r) for r in ranks}
    lines = [
        "# Time to quality: the default learner vs the official code",
        "",
        *machine_lines(argv, wall, len(df), loads, fingerprints),
        "",
        "## What is measured",
        "",
        "- **Protocol**: 10000 tasks × 20 samples from `make_translation_tasks(rank=r, "
        "random_state=seed)`, tasks 0–7999 meta-train, 8000–9999 meta-test, `n_support=1`, "
        "`n_filters` = 3 / 6 / 30, `bias=False`, `random_state=seed`, everything else at the "
        "learner's defaults (`meta_lr=1e-2`, `meta_lr_schedule='inverse_time'`, "
        "`meta_optimizer='msr_adam'`, `symmetry_gradient='auto'`, no validation in `fit`). "
        "Each seed draws its own data and initialization.",
        "- **Target**: the official code's plateau query MSE, "
        + " / ".join(f"{TARGET[r]}" for r in ranks) + " on rank "
        + " / ".join(map(str, ranks)) + ".",
        "- **Score**: query MSE after adaptation on **all 2000** meta-test tasks (one seeded "
        "support/query split each). The official code logs the mean over 300 random tasks "
        "(95% CI ±0.015–0.03 at these values); 2000 tasks is the stricter test: no lucky "
        "draw of 300 tasks gets a run under the target.",
        "- **Criterion: per seed.** The default schedule is relative to `n_meta_steps`, so "
        "a run's quality is that of its final state, and a seed's time to the target is "
        "the run at the smallest value of the grid "
        f"{', '.join(map(str, cfg['grid']))} whose final MSE is at or below the target. "
        "Seed 0 scans upwards; each later seed starts at the value the last one needed and "
        "steps down while it still meets the target or up until it does. A seed above the "
        f"target whose MSE improved by less than {cfg['plateau_tol']} over its last two "
        "grid values has levelled off: it does not reach the target. The **chosen** "
        "`n_meta_steps` is the largest of the seeds' values, and every seed is run there: "
        "the headline numbers are those runs (the fraction of seeds at or below the target, "
        "and the seconds).",
        "- **Our seconds**: each run is its own process, timed from outside around "
        "`subprocess.run` (interpreter start-up, imports, data generation, fit, scoring, "
        "exit): mean ± 95% CI over seeds. **Fit-only**: `learner.fit` alone.",
        "- **Official seconds**: derived from its logged 5000-step curves (below); it has "
        "n = 1 run per rank, so its side has no CI, and the ratios' CIs come from ours only.",
        "",
        "## Result",
        "",
        "| rank | target | chosen n_meta_steps | seeds at or below the target there | "
        "ours, whole process s | official, whole process s (lower bound) | ratio, whole "
        "process (95% CI) | ours, fit-only s | official, fit-only s (lower bound) | ratio, "
        "fit-only (95% CI) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    summary = []
    for rank in ranks:
        d, off, n = msr[msr["rank"] == rank], official[rank], chosen.get(rank)
        if n is None:
            lines.append(f"| {rank} | {TARGET[rank]} | not reached in the grid by any seed | "
                         "0 | | | | | | |")
            continue
        at = d[d["n_meta_steps"] == n]
        whole, whole_ci = mci(at["wall_s"])
        fit, fit_ci = mci(at["fit_s"])
        cpu_whole, cpu_whole_ci = mci(at["cpu_s"])
        cpu_fit, cpu_fit_ci = mci(at["fit_cpu_s"])
        lines.append(
            f"| {rank} | {TARGET[rank]} | {n} | {int(at['meets'].sum())}/{len(at)} | "
            f"{pm(whole, whole_ci)} | {off['whole_s']:.1f} ({off['whole_lower_s']:.1f}) "
            f"| {ratio_cell(off['whole_s'], whole, whole_ci)} | {pm(fit, fit_ci)} | "
            f"{off['fit_s']:.1f} ({off['fit_lower_s']:.1f}) | "
            f"{ratio_cell(off['fit_s'], fit, fit_ci)} |")
        summary.append(dict(rank=rank, n=n, off=off, at=at, whole=whole, fit=fit,
                            cpu=(cpu_whole, cpu_whole_ci), cpu_fit=(cpu_fit, cpu_fit_ci)))
    lines += [
        "",
        "Ratio = official / ours; its interval is official / (our mean ∓ CI). The official "
        "log has a point every 500 steps, so it may have got there up to 499 steps earlier; "
        "against those lower bounds the ratios are "
        + "; ".join(f"rank {s['rank']}: {s['off']['whole_lower_s'] / s['whole']:.1f}× whole, "
                    f"{s['off']['fit_lower_s'] / s['fit']:.1f}× fit-only" for s in summary)
        + ".",
        "",
        "**Load-adjusted**: the same runs in CPU seconds. A single-threaded process's CPU "
        "time is about the wall time it takes on an idle machine, which is how the official "
        "runs were timed.",
        "",
        "| rank | ours, whole process cpu s | ratio, whole process (95% CI) | ours, fit cpu s | "
        "ratio, fit-only (95% CI) |",
        "|---|---|---|---|---|",
    ]
    for s in summary:
        lines.append(f"| {s['rank']} | {pm(*s['cpu'])} | "
                     f"{ratio_cell(s['off']['whole_s'], *s['cpu'])} | "
                     f"{pm(*s['cpu_fit'])} | "
                     f"{ratio_cell(s['off']['fit_s'], *s['cpu_fit'])} |")
    lines += ["", "### Per seed", "", *seed_lines(msr, floor, smallest, official, cfg, ranks,
                                                   mci)]
    lines += [
        "",
        "### Where our seconds go (chosen n_meta_steps, mean over seeds, wall s)",
        "",
        "| rank | start-up | imports (torch, sklearn, msr_sklearn) | "
        "data | fit | score (2000 tasks) | exit | whole process | cpu s | all but fit | "
        "best possible whole-process ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        m = s["at"].mean(numeric_only=True)
        fixed = m["wall_s"] - m["fit_s"]
        lines.append(
            f"| {s['rank']} | {m['startup_s']:.2f} | {m['imports_s']:.2f} "
            f"| {m['data_s']:.2f} | {m['fit_s']:.2f} | {m['score_s']:.2f} | {m['other_s']:.2f} "
            f"| {m['wall_s']:.2f} | {m['cpu_s']:.2f} | {fixed:.2f} | "
            f"{s['off']['whole_s'] / fixed:.1f}× |")
    lines += [
        "",
        "Start-up: from launch to the worker's first line (interpreter, site). Exit: from "
        "the end of scoring to the end of `subprocess.run` (printing, interpreter "
        "shut-down). 'All but fit' is what a process spends outside `fit`; the last column "
        "is official / that: the whole-process ratio that even a fit of zero seconds could "
        "not beat.",
        "",
        "## The goal (≥ 30× faster)",
        "",
        *goal_lines(summary),
        "",
        *official_lines(official, ranks),
        "",
        "## The scan",
        "",
        "Every run: query MSE on the 2000 meta-test tasks per seed (seed: MSE), the seeds at "
        "or below the target of those run, and mean whole-process and fit seconds. "
        "`mse_300` in the CSV is each run's MSE on 300 random meta-test tasks, the official "
        "code's way of scoring.",
        "",
        "| rank | n_meta_steps | query MSE per seed | at or below target | whole process s | "
        "fit s |",
        "|---|---|---|---|---|---|",
    ]
    for (rank, n), g in msr.groupby(["rank", "n_meta_steps"]):
        per_seed = ", ".join(f"{s}: {v:.3f}" for s, v in zip(g["seed"], g["mse"]))
        lines.append(f"| {rank} | {n} | {per_seed} | {int(g['meets'].sum())}/{len(g)} | "
                     f"{g['wall_s'].mean():.2f} | {g['fit_s'].mean():.2f} |")
    return "\n".join(lines) + "\n", df


def seed_lines(msr, floor, smallest, official, cfg, ranks, mci):
    """Each seed's own smallest value, its run, and (rank 1) the exact convolution."""
    lines = [
        "Each seed's smallest grid value meeting the target and that run (the issue's "
        "definition of a seed's time to the target); rank 1 also shows what the exact "
        f"convolution (`module=Conv1dLayer`, the learner's defaults, {cfg['floor_steps']} "
        "steps) "
        "reaches on the same seed's tasks and support/query split: the floor of any "
        "learner with this one-step, one-example adaptation.",
        "",
        "| rank | seed | smallest n_meta_steps | query MSE | whole process s | fit s | cpu s | "
        "exact convolution's MSE |",
        "|---|---|---|---|---|---|---|---|",
    ]
    own = []
    for rank in ranks:
        d = msr[msr["rank"] == rank]
        for seed, n in smallest.get(rank, {}).items():
            conv = floor[(floor["rank"] == rank) & (floor["seed"] == seed)]
            conv = f"{conv['mse'].iloc[0]:.4f}" if len(conv) else "–"
            if n is None:
                ran = d[d["seed"] == seed].sort_values("n_meta_steps")
                tried = ", ".join(f"{m}: {v:.4f}" for m, v in zip(ran["n_meta_steps"],
                                                                    ran["mse"]))
                why = ("the grid ends" if ran["n_meta_steps"].iloc[-1] == cfg["grid"][-1]
                       else "levelled off")
                lines.append(f"| {rank} | {seed} | not reached ({why}; {tried}) | | | | "
                             f"| {conv} |")
                continue
            r = d[(d["seed"] == seed) & (d["n_meta_steps"] == n)].iloc[0]
            own.append(dict(rank=rank, wall_s=r["wall_s"], fit_s=r["fit_s"]))
            lines.append(f"| {rank} | {seed} | {n} | {r['mse']:.4f} | {r['wall_s']:.2f} | "
                         f"{r['fit_s']:.2f} | {r['cpu_s']:.2f} | {conv} |")
    above = floor[floor["mse"] > floor["target"]]
    if len(above):
        lines += ["", "The exact convolution itself stays above the target on "
                  + ", ".join(f"rank {r.rank} seed {r.seed} ({r.mse:.4f})"
                              for r in above.itertuples())
                  + ": those tasks do not allow the target to a learner of this protocol, "
                  "whatever its speed."]
    lines += ["", "Mean over the seeds that reach the target, each at its own smallest value:"]
    for rank in ranks:
        runs = [o for o in own if o["rank"] == rank]
        if not runs:
            continue
        whole, whole_ci = mci(o["wall_s"] for o in runs)
        fit, fit_ci = mci(o["fit_s"] for o in runs)
        off = official[rank]
        lines.append(
            f"- rank {rank} ({len(runs)}/{len(smallest[rank])} seeds): whole process "
            f"{pm(whole, whole_ci)} s, {ratio_cell(off['whole_s'], whole, whole_ci)}; "
            f"fit-only {pm(fit, fit_ci)} s, {ratio_cell(off['fit_s'], fit, fit_ci)}.")
    return lines


def goal_lines(summary):
    lines = []
    for s in summary:
        r, off = s["rank"], s["off"]
        m = s["at"].mean(numeric_only=True)
        fixed = m["wall_s"] - m["fit_s"]
        whole, fit = off["whole_s"] / s["whole"], off["fit_s"] / s["fit"]
        cpu_whole, cpu_fit = off["whole_s"] / s["cpu"][0], off["fit_s"] / s["cpu_fit"][0]

        def verdict(*ratios):
            return "met" if min(ratios) >= 30 else (
                "not met" if max(ratios) < 30 else "met only load-adjusted")

        lines.append(
            f"- rank {r}: whole process **{whole:.1f}×** (load-adjusted {cpu_whole:.1f}×), "
            f"fit-only **{fit:.1f}×** (load-adjusted {cpu_fit:.1f}×): the goal is "
            f"**{verdict(whole, cpu_whole)}** whole-process and **{verdict(fit, cpu_fit)}** "
            f"fit-only. Outside `fit` a process spends {fixed:.1f} s (imports "
            f"{m['imports_s']:.1f} s, data "
            f"{m['data_s']:.1f} s, scoring {m['score_s']:.1f} s, start-up and exit "
            f"{m['startup_s'] + m['other_s']:.1f} s), which caps the whole-process ratio at "
            f"{off['whole_s'] / fixed:.1f}× even with an instant fit; 30× would need the whole "
            f"process in {off['whole_s'] / 30:.2f} s and the fit in {off['fit_s'] / 30:.2f} s "
            f"(it takes {m['fit_s']:.2f} s, {m['fit_cpu_s']:.2f} s of CPU).")
    return lines


def official_lines(official, ranks):
    o1 = official_times(1)
    lines = [
        "## The official code's time to the same MSE",
        "",
        "It is not on this machine and cannot be installed (no network beyond package "
        "registries), so it was not re-run: its times are derived from its logged runs in "
        "`official-baseline.md` (same machine, torch 2.13 CPU, 1 thread, one run at a "
        "time). Its 5000-step MSR-FC runs logged the test MSE every 500 steps, its steps/s "
        "(over the loop, which includes its periodic 300-task test evaluations, about 6% of "
        "its time by its profile) and the process's wall time.",
        "",
        "- Start-up (imports, about 3 s, and data loading, about 1 s) = wall − 5000 / "
        "(steps/s): " + ", ".join(
            f"rank {r}: {OFFICIAL_WALL_S[r]} − 5000/{OFFICIAL_STEPS_PER_S[r]} = "
            f"{official[r]['startup_s']:.1f} s" for r in ranks) + ".",
        "- Fit-only time to step s = s / (steps/s); whole process = start-up + that.",
    ]
    for r in ranks:
        o = official[r]
        curve = " ".join(f"{v:.2f}" for v in OFFICIAL_CURVE[r])
        lines.append(
            f"- rank {r}: curve {curve}. First on the plateau at step {o['steps'] - 1} "
            f"({o['logged']:.2f}; {o['logged_before']:.2f} at step {o['lower_steps'] - 1}): "
            f"{o['steps']} / {OFFICIAL_STEPS_PER_S[r]} = {o['fit_s']:.1f} s fit-only, "
            f"{o['whole_s']:.1f} s whole process (lower bound at step {o['lower_steps']}: "
            f"{o['fit_lower_s']:.1f} / {o['whole_lower_s']:.1f} s).")
    lines += [
        f"- Rank 1 is a judgment call: the target 0.17 is *below* the official run's own "
        f"plateau ({o1['logged']:.2f} at step 999 and {o1['plateau_mean']:.3f} on average "
        f"from there; a value ≤ 0.17 is logged first at step {o1['strict_steps'] - 1}, a "
        "noisy 0.15), and its three 1000-step runs end at "
        f"{', '.join(f'{v:.3f}' for v in OFFICIAL_1000['mse'])} (one of three ≤ 0.17). The "
        "official time is taken at the start of its plateau (step 1000), not at the strict "
        f"crossing ({o1['strict_whole_s']:.0f} s), which would flatter us; we are held to "
        f"the stricter 0.17. Cross-check: its 1000-step runs took {OFFICIAL_1000['wall_s']} s "
        f"as whole processes ({1000 / OFFICIAL_1000['steps_per_s']:.1f} s loop), against the "
        f"{o1['whole_s']:.1f} s derived here.",
        "- The issue's 22 / 54 / 75 s are the loop times to 1000 / 2500 / 2500 steps (rank 5 "
        "at the 1000-step runs' 33.2 steps/s); the fit-only column uses the 5000-step runs' "
        "own rates, and the whole-process column adds the start-up.",
    ]
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="one seed, grid 150 / 600 (about 1 min), prints only")
    parser.add_argument("--seeds", type=int, help="seeds (default 5)")
    parser.add_argument("--grid", type=int, nargs="+", help="n_meta_steps values")
    parser.add_argument("--ranks", type=int, nargs="+", choices=RANKS, default=list(RANKS))
    parser.add_argument("--worker", nargs=5,
                        metavar=("RANK", "STEPS", "SEED", "T_LAUNCH", "LAYER"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        rank, steps, seed, t_launch, layer = args.worker
        print(json.dumps(worker(int(rank), int(steps), int(seed), float(t_launch), layer)))
        return None
    argv = sys.argv[1:] if argv is None else argv
    cfg = dict(QUICK if args.quick else FULL)
    if args.seeds:
        cfg["seeds"] = args.seeds
    if args.grid:
        cfg["grid"] = tuple(sorted(args.grid))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import pandas as pd

    start, fingerprint = time.perf_counter(), library_fingerprint()

    def log(row):
        print(f"[{time.perf_counter() - start:5.0f} s] rank {row['rank']} {row['layer']} steps "
              f"{row['n_meta_steps']:>4} seed {row['seed']}: mse {row['mse']:.4f} "
              f"({'meets' if row['meets'] else 'above'} {row['target']}) whole "
              f"{row['wall_s']:.2f} s (fit {row['fit_s']:.2f}, imports {row['imports_s']:.2f}), "
              f"cpu {row['cpu_s']:.2f}, load "
              f"{row['load_1min']:.1f}", flush=True)

    rows, chosen, smallest = [], {}, {}
    for rank in args.ranks:
        r_rows, chosen[rank], smallest[rank] = scan(rank, cfg, log)
        rows += r_rows
    if 1 in args.ranks:
        rows += floor_runs(cfg, log)
    wall = time.perf_counter() - start
    df = pd.DataFrame(rows)
    loads = list(df["load_1min"]) + [os.getloadavg()[0]]
    text, df = report(df, chosen, smallest, cfg, argv, wall, loads,
                      (fingerprint, library_fingerprint()), tuple(args.ranks))
    if args.quick:
        print(text)
    else:
        from _report import write_results

        write_results("time_to_quality", text, df, float_format="%.6g")
    return df


if __name__ == "__main__":
    main()
