"""The paper's 2-D rotation experiment at its size: MSR-Conv, MAML-Conv and the exact oracle.

Tasks: :func:`msr_sklearn.datasets.make_rotation2d_tasks` (the paper's ``2d_rot8`` and
``2d_rot8_flip``: random C8 / D8 steerable lifting convolutions, 32×32 white-noise
inputs, 24 / 48 output maps of 30×30, 20 images per task of which 1 is the support).
1,000 training tasks per seed (seeded by the training seed), 100 validation tasks
(for the inner-rate grid) and 200 test tasks (fixed, the same for every row).

Methods, all one 3×3 convolution 1 → 24 (C8) or 1 → 48 (D8) channels with a bias per
channel (:class:`~msr_sklearn.models.ConvNet`, ``n_outputs=None``):

- ``MSR-Conv``: the learner's default policy for the network,
  ``ConvFilterSharing(n_copies=|G|)`` (3 fields of 8 or 16 copies), ``U`` learned.
- ``MAML-Conv``: ``layer="dense"``: the filters are adapted as they are.
- ``Oracle``: ``FixedSharing`` with the true span
  (:func:`~msr_sklearn.datasets.rotation2d_sharing`, 18 filter values), ``U`` fixed.

Three settings: the library's defaults (``inner_lr="auto"``: an output convolution
under the MSE starts its rates at ``C_out / 2``, 12 for C8 and 24 for D8; learned
per-tensor rates, meta-lr 1e-2 on the inverse-time schedule), ``inner_lr=0.1`` (the
previous default and the paper's, every rate learned from 0.1), and *tuned*: each
method's initial inner rate chosen on the validation tasks from :data:`TUNE_GRID` (one
seed), then trained with every seed. The query loss averages over 24 × 900 (or
48 × 900) outputs, so one inner step needs a rate near 12 (C8) or 24 (D8) to move the
filters far enough, and a learned rate starting at 0.1 climbs only slowly: at 0.1 the
comparison measures the inner step size as much as the symmetry.

Reported per row: query MSE on the test tasks after one inner step on their first
image (mean ± 95% CI over training seeds), the learned final inner rate of the
filters, and for MSR-Conv the angle between the learned sharing and the true span
(the largest principal angle of the true span to ``span(U)``, degrees; ``U`` has 27
columns, the truth 18) and the share of ``span(U)`` outside the truth, at
initialization and after training.

Memory (issue 20, item 6): :func:`measure_memory` fits 1,000 C8 tasks in a fresh
process and compares its peak resident memory with the tasks' own float32 size.

Run: ``python benchmarks/rotation2d.py [--quick] [--device cuda --meta-batch-size 32]
[--reuse results/rotation2d.csv]`` (``--reuse``: fits already in that file are read
back, not re-run);
writes ``benchmarks/results/rotation2d.md`` and ``.csv``. The GPU entry point is
:func:`run_row` (one fit and its measurements).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _real_images import (cpu_settings, header, over_seeds, parser,  # noqa: E402
                          peak_rss_bytes, pm, rss_bytes)
from _report import map_single_threaded, write_results  # noqa: E402

from msr_sklearn import MetaSymmetryLearner  # noqa: E402
from msr_sklearn.datasets import make_rotation2d_tasks, rotation2d_sharing  # noqa: E402
from msr_sklearn.groups import compare_subspaces  # noqa: E402
from msr_sklearn.models import ConvNet  # noqa: E402
from msr_sklearn.sharing import FixedSharing  # noqa: E402

GROUPS = ("c8", "d8")
ORDER = {"c8": 8, "d8": 16}
METHODS = ("MSR-Conv", "MAML-Conv", "Oracle")
#: initial inner rates the tuned setting chooses from
TUNE_GRID = (4.0, 12.0, 24.0)
#: the settings run with every seed: the library's default, and the previous one (0.1)
SETTINGS = {"defaults": "auto", "inner_lr=0.1": 0.1}
#: the CPU setting (the paper's meta-batch is 32: ``--meta-batch-size 32``)
CPU = dict(meta_batch_size=8, n_meta_steps=1000)
N_TRAIN, N_VAL, N_TEST = 1000, 100, 200
VAL_SEED, TEST_SEED = 20_000, 10_000
WEIGHT = "features.0.weight"


def tasks(group, n_tasks, random_state):
    """``(X, y)`` with ``y`` flattened per image (a view: no copy)."""
    X, y = make_rotation2d_tasks(group, n_tasks=n_tasks, random_state=random_state)
    return X, y.reshape(n_tasks, X.shape[1], -1)


def make_learner(method, group, inner_lr="auto", meta_batch_size=32, n_meta_steps=1000,
                 device="cpu", random_state=0):
    """The learner of one method; everything but ``inner_lr`` at the library's defaults."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    m = ORDER[group]
    params = dict(module=ConvNet, module__n_outputs=None, module__channels=(3 * m,),
                  module__n_copies=m, n_support=1, inner_lr=inner_lr,
                  meta_batch_size=meta_batch_size, n_meta_steps=n_meta_steps, device=device,
                  random_state=random_state)
    if method == "MAML-Conv":
        params["layer"] = "dense"
    elif method == "Oracle":
        params["sharing"] = {WEIGHT: FixedSharing(matrix=rotation2d_sharing(group))}
    return MetaSymmetryLearner(**params)


def sharing_angle(model, group):
    """(largest angle of the true span to span(U) in degrees, share of span(U) outside it)."""
    with torch.no_grad():
        U = model.sharing(WEIGHT).matrix().double().cpu().numpy()
    c = compare_subspaces(U, rotation2d_sharing(group))
    return float(np.degrees(c.containment_angle)), c.excess


def run_row(group, method, inner_lr="auto", random_state=0, meta_batch_size=32,
            n_meta_steps=1000, device="cpu", n_train=N_TRAIN, n_test=N_TEST, n_val=N_VAL):
    """One fit and its measurements (the function a GPU script calls).

    Parameters
    ----------
    group : {"c8", "d8"}
    method : {"MSR-Conv", "MAML-Conv", "Oracle"}
    inner_lr : float or "auto", default="auto"
        Initial inner rate (0.1 is the library's default; 12 / 24 the tuned ones).
    random_state : int, default=0
        Seeds the training tasks and the learner.
    meta_batch_size, n_meta_steps : int
        The paper's protocol is 32 and 1,000.
    device : str, default="cpu"
    n_train, n_test, n_val : int
        Training, test and validation tasks (1,000, 200 and 100); the test and
        validation tasks are the same for every row.

    Returns
    -------
    dict
        ``query_mse`` (mean over test tasks) and its 95% half-width over tasks,
        ``val_mse`` (mean over validation tasks, for the inner-rate grid),
        ``filter_inner_lr`` (the learned final rate of the filters), ``angle_start`` /
        ``angle_end`` and ``excess_start`` / ``excess_end`` (MSR-Conv only, else NaN),
        ``fit_seconds`` (wall) and ``fit_cpu_seconds``.
    """
    torch.manual_seed(random_state)
    X, y = tasks(group, n_train, random_state)
    learner = make_learner(method, group, inner_lr, meta_batch_size, n_meta_steps, device,
                           random_state)
    start_angle = (np.nan, np.nan)
    if method == "MSR-Conv":
        # the start: the same learner with no meta-step (same seed, same initialization)
        start = make_learner(method, group, inner_lr, meta_batch_size, 1, device, random_state)
        start.set_params(learn_symmetry=False).fit(X[:2], y[:2])
        start_angle = sharing_angle(start.model_, group)
    wall, cpu = time.perf_counter(), time.process_time()
    learner.fit(X, y)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    del X, y
    scores = {}
    for part, n, seed in (("test", n_test, TEST_SEED), ("val", n_val, VAL_SEED)):
        scores[part] = learner.evaluate(*tasks(group, n, seed), metrics="mse")["mse"]
    mean, half = over_seeds(scores["test"].to_numpy())
    end_angle = sharing_angle(learner.model_, group) if method == "MSR-Conv" \
        else (np.nan, np.nan)
    lr_column = next(c for c in learner.history_.columns if c.startswith(f"inner_lr[{WEIGHT}"))
    return dict(group=group, method=method, inner_lr=inner_lr, seed=random_state,
                meta_batch_size=meta_batch_size, n_meta_steps=n_meta_steps,
                query_mse=mean, query_mse_task_ci=half, val_mse=float(scores["val"].mean()),
                filter_inner_lr=float(learner.history_[lr_column].iloc[-1]),
                angle_start=start_angle[0], angle_end=end_angle[0],
                excess_start=start_angle[1], excess_end=end_angle[1],
                fit_seconds=wall, fit_cpu_seconds=cpu)


def _job(job):
    return run_row(**job)


# ------------------------------------------------------------------------ memory
def _memory_child(n_tasks, group, n_meta_steps, meta_batch_size, queue):
    import tracemalloc

    torch.set_num_threads(1)
    base = rss_bytes()
    tracemalloc.start()
    X, y = tasks(group, n_tasks, 0)
    task_bytes = X.nbytes + y.nbytes
    after_tasks = rss_bytes()
    tracemalloc.reset_peak()
    before_fit = tracemalloc.get_traced_memory()[0]
    learner = make_learner("MSR-Conv", group, meta_batch_size=meta_batch_size,
                           n_meta_steps=n_meta_steps)
    learner.fit(X, y)
    numpy_peak = tracemalloc.get_traced_memory()[1] - before_fit
    queue.put(dict(n_tasks=n_tasks, group=group, task_bytes=task_bytes, rss_start=base,
                   rss_after_tasks=after_tasks, peak_rss=peak_rss_bytes(),
                   traced_peak_during_fit=numpy_peak))


def measure_memory(n_tasks=1000, group="c8", n_meta_steps=3, meta_batch_size=8):
    """Peak resident memory of a fit on ``n_tasks`` tasks, in a fresh process.

    Returns a dict: the tasks' own float32 bytes, resident memory at the start (Python,
    numpy, torch and the library loaded), after the tasks were generated, the peak
    (``VmHWM``) by the end of the fit, the peak of Python-traced allocations (numpy's
    included, torch's not) during the fit, and ``peak_over_tasks``.
    """
    import multiprocessing as mp

    context = mp.get_context("spawn")  # a fresh process: no memory of this one's runs
    queue = context.Queue()
    child = context.Process(target=_memory_child,
                            args=(n_tasks, group, n_meta_steps, meta_batch_size, queue))
    child.start()
    result = queue.get()
    child.join()
    result["peak_over_tasks"] = result["peak_rss"] / result["task_bytes"]
    return result


# ------------------------------------------------------------------------ main
def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--n-train", type=int, default=N_TRAIN,
                   help="training tasks per seed (default %(default)s)")
    p.add_argument("--grid", type=float, nargs="+", default=list(TUNE_GRID),
                   help="initial inner rates the tuned setting chooses from")
    p.add_argument("--memory-tasks", type=int, default=1000,
                   help="tasks of the memory measurement (default %(default)s)")
    p.add_argument("--reuse", default=None,
                   help="a CSV of an earlier run: its fits are read back, not re-run")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    settings = cpu_settings(args, CPU)
    n_train, n_test, grid, name = args.n_train, N_TEST, tuple(args.grid), "rotation2d"
    if args.quick:
        settings, n_train, n_test, grid, name = (dict(meta_batch_size=4, n_meta_steps=20), 40,
                                                 20, TUNE_GRID[2:3], "rotation2d_quick")
        args.seeds = args.seeds[:1]
    common = dict(device=args.device, n_train=n_train, n_test=n_test,
                  n_val=n_test // 2, **settings)
    first, rest = args.seeds[0], args.seeds[1:]
    # the defaults with every seed, and the grid with the first seed; every fit is
    # scored on the validation tasks (to choose) and on the test tasks (to report)
    jobs = [dict(group=g, method=m, inner_lr=lr, random_state=s, **common)
            for g in GROUPS for m in METHODS
            for lr, seeds in tuple((lr, args.seeds) for lr in SETTINGS.values())
            + tuple((lr, [first]) for lr in grid)
            for s in seeds]
    earlier = _read_rows(args.reuse)
    rows = _run(jobs, earlier, args.n_jobs)
    tuning = rows[(rows.seed == first) & rows.inner_lr.isin(grid)]
    tuning = tuning.assign(inner_lr=tuning.inner_lr.astype(float))
    best = tuning.loc[tuning.groupby(["group", "method"])["val_mse"].idxmin()]
    jobs = [dict(group=r.group, method=r.method, inner_lr=r.inner_lr, random_state=s, **common)
            for r in best.itertuples() for s in rest]
    rows = pd.concat([rows, _run(jobs, earlier, args.n_jobs)], ignore_index=True)
    chosen = rows[rows.inner_lr.isin(grid)].assign(inner_lr=lambda d: d.inner_lr.astype(float))
    chosen = chosen.merge(best[["group", "method", "inner_lr"]])
    chosen["setting"] = "tuned inner lr"
    final = pd.concat([rows[rows.inner_lr.astype(str) == str(lr)].assign(setting=setting)
                       for setting, lr in SETTINGS.items()] + [chosen], ignore_index=True)
    memory = measure_memory(n_tasks=100 if args.quick else args.memory_tasks)
    reused = sum(_key(r) in earlier for r in rows.to_dict("records"))
    if reused:  # say which fits this run made and which it read back
        made_at = subprocess.run(["git", "log", "-1", "--format=%h", "--", args.reuse],
                                 capture_output=True, text=True).stdout.strip() or "unknown"
        settings = {**settings, "reused": f"{reused} of {len(rows)} fits read back from "
                    f"`{args.reuse}` (as committed at {made_at}, the same protocol); the "
                    "others were fitted by this run"}
    text = report(final, tuning, memory, args, settings, n_train, n_test)
    write_results(name, text, rows)


def _key(row):
    return (row["group"], row["method"], str(row["inner_lr"]), int(row["random_state"]
            if "random_state" in row else row["seed"]), int(row["meta_batch_size"]),
            int(row["n_meta_steps"]))


def _read_rows(path):
    """The fits of an earlier run's CSV by job key (``{}`` without one)."""
    if path is None:
        return {}
    earlier = pd.read_csv(path, dtype={"inner_lr": str})
    earlier["inner_lr"] = [v if v == "auto" else float(v) for v in earlier.inner_lr]
    return {_key(r): r for r in earlier.to_dict("records")}


def _run(jobs, earlier, n_jobs):
    """Rows of ``jobs``: read back from ``earlier`` where there, else fitted."""
    todo = [job for job in jobs if _key(job) not in earlier]
    fitted = iter(map_single_threaded(_job, todo, n_jobs))
    rows = [earlier[_key(job)] if _key(job) in earlier else next(fitted) for job in jobs]
    return pd.DataFrame(rows)


def _lr(value):
    return value if isinstance(value, str) else f"{value:g}"


def report(rows, tuning, memory, args, settings, n_train, n_test):
    lines = header("2-D rotation tasks at the paper's size: MSR-Conv, MAML-Conv, exact oracle",
                   args, {"protocol": f"{n_train} training tasks per seed, {n_test} test tasks "
                          f"(1 support + 19 query images), meta-batch "
                          f"{settings['meta_batch_size']}, {settings['n_meta_steps']} "
                          "meta-steps, 1 inner step, every other setting at the defaults"
                          + (f"; {settings['reused']}" if "reused" in settings else "")})
    lines += ["## Query MSE on test tasks (mean ± 95% CI over seeds)", "",
              "| group | setting | method | initial inner lr | query MSE | × oracle | "
              "× MAML-Conv | learned filter lr | angle to truth start → end (°) | "
              "span(U) outside truth | fit (s, wall) |", "|" + "---|" * 11]
    verdicts = []
    for (g, setting), part in rows.groupby(["group", "setting"], sort=False):
        means = {m: part.loc[part.method == m, "query_mse"] for m in METHODS}
        for m in METHODS:
            r = part[part.method == m]
            ratio = lambda other: f"{r.query_mse.mean() / means[other].mean():.2f}"  # noqa: E731
            angle = "—" if m != "MSR-Conv" else \
                f"{pm(r.angle_start, digits=1)} → {pm(r.angle_end, digits=3)}"
            excess = "—" if m != "MSR-Conv" else pm(r.excess_end, digits=3)
            lines.append(f"| {g.upper()} | {setting} | {m} | {_lr(r.inner_lr.iloc[0])} | "
                         f"{pm(r.query_mse, digits=4)} | {ratio('Oracle')} | "
                         f"{ratio('MAML-Conv')} | {pm(r.filter_inner_lr, digits=2)} | {angle} | "
                         f"{excess} | {r.fit_seconds.mean():.0f} |")
        msr, maml, oracle = (means[m].mean() for m in METHODS)
        verdicts.append(f"- {g.upper()}, {setting}: MSR-Conv / oracle = {msr / oracle:.2f} "
                        f"(target ≤ 1.1: {'met' if msr <= 1.1 * oracle else 'missed'}), "
                        f"MSR-Conv / MAML-Conv = {msr / maml:.3f} (target ≤ 0.5: "
                        f"{'met' if msr <= 0.5 * maml else 'missed'})")
    lines += ["", "## Targets (issue 20, item 5)", ""] + verdicts
    lines += ["", "## Inner-rate grid (validation MSE, first seed)", "",
              "| group | method | " + " | ".join(f"lr {lr:g}" for lr in
                                                sorted(tuning.inner_lr.unique())) + " |",
              "|" + "---|" * (2 + tuning.inner_lr.nunique())]
    for (g, m), part in tuning.groupby(["group", "method"], sort=False):
        cells = [f"{v:.4f}" for v in part.sort_values("inner_lr").val_mse]
        lines.append(f"| {g.upper()} | {m} | " + " | ".join(cells) + " |")
    gib = 2 ** 30
    lines += ["", f"## Memory of a fit on {memory['n_tasks']:,} C8 tasks (issue 20, item 6)", "",
              f"A fresh process generates {memory['n_tasks']} C8 tasks "
              f"({memory['task_bytes'] / gib:.2f} GiB of float32) and fits MSR-Conv on "
              f"them (a few meta-steps: the data path, not the training, sets the peak).",
              "",
              f"- resident at the start (Python, numpy, torch, the library): "
              f"{memory['rss_start'] / gib:.2f} GiB",
              f"- after generating the tasks: {memory['rss_after_tasks'] / gib:.2f} GiB",
              f"- peak by the end of the fit: {memory['peak_rss'] / gib:.2f} GiB = "
              f"{memory['peak_over_tasks']:.2f} × the tasks' own size (target ≤ 1.5: "
              f"{'met' if memory['peak_over_tasks'] <= 1.5 else 'missed'}); above the start: "
              f"{(memory['peak_rss'] - memory['rss_start']) / memory['task_bytes']:.2f} × the "
              "tasks' size",
              f"- Python-traced allocations (numpy's, not torch's) at their peak during the "
              f"fit: {memory['traced_peak_during_fit'] / gib:.2f} GiB above what the tasks "
              "held before it", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
