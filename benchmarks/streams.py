"""Peak memory of meta-training on a task stream vs on materialized tasks.

Each configuration runs in its own subprocess (so peak RSS is its own), single-threaded
(``torch.set_num_threads(1)``): rank-1 translation tasks (70 → 68, 20 samples), MSR-FC
k=3, meta-batch 32, for as many meta-steps as it takes to see 1k or 50k distinct tasks.
A stream draws a fresh meta-batch every step and holds only that; a materialized run
holds every task. Reports peak RSS (MB) over ``--repeats`` runs as mean ± 95% CI and
the ratio 50k / 1k. Writes ``benchmarks/results/streams.md`` and ``.csv``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import pandas as pd
from _report import cpu_name, library_version, write_results

BATCH = 32


def run_one(mode, n_tasks):
    import torch

    from msr_sklearn import MetaSymmetryLearner
    from msr_sklearn.datasets import make_translation_tasks
    from msr_sklearn.data.streams import TaskStream

    torch.set_num_threads(1)
    steps = max(1, n_tasks // BATCH)
    learner = MetaSymmetryLearner(n_filters=3, bias=False, n_support=1, n_meta_steps=steps,
                                  meta_batch_size=BATCH, random_state=0)
    if mode == "stream":
        learner.fit(TaskStream(lambda n, rng: make_translation_tasks(
            n_tasks=n, random_state=int(rng.integers(2**31)))))
    else:
        learner.fit(*make_translation_tasks(n_tasks=n_tasks, random_state=0))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mode": mode, "distinct_tasks": n_tasks, "meta_steps": steps, "peak_rss_mb": peak_mb}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "N_TASKS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_one(args.child[0], int(args.child[1]))))
        return
    rows = []
    for _ in range(args.repeats):
        for mode in ("stream", "materialized"):
            for n in (1000, 50000):
                out = subprocess.run([sys.executable, __file__, "--child", mode, str(n)],
                                     check=True, capture_output=True, text=True).stdout
                rows.append(json.loads(out.strip().splitlines()[-1]))
    df = pd.DataFrame(rows)
    from msr_sklearn.data.tasks import mean_confidence_interval

    import os

    import torch

    command = " ".join(["python benchmarks/streams.py", *(argv or sys.argv[1:])])
    lines = ["# Peak memory: task stream vs materialized tasks", "",
             f"Command: `{command}`. Library: commit {library_version()}. Machine: "
             f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}.", "",
             "Rank-1 translation tasks, MSR-FC k=3, meta-batch 32, 1 thread, one subprocess "
             f"per run, {args.repeats} runs each.", "",
             "| mode | distinct tasks | meta-steps | peak RSS MB (mean ± 95% CI) |",
             "|---|---|---|---|"]
    summary = []
    for (mode, n), g in df.groupby(["mode", "distinct_tasks"], sort=False):
        mean, ci = mean_confidence_interval(g["peak_rss_mb"])
        summary.append({"mode": mode, "distinct_tasks": n, "peak_rss_mb": mean, "ci95": ci})
        lines.append(f"| {mode} | {n} | {g['meta_steps'].iloc[0]} | {mean:.0f} ± {ci:.0f} |")
    s = pd.DataFrame(summary).set_index(["mode", "distinct_tasks"])["peak_rss_mb"]
    for mode in ("stream", "materialized"):
        lines.append(f"\n{mode}: peak RSS at 50k / at 1k distinct tasks = "
                     f"**{s[(mode, 50000)] / s[(mode, 1000)]:.2f}×**")
    text = "\n".join(lines) + "\n"
    write_results("streams", text, df)


if __name__ == "__main__":
    main()
