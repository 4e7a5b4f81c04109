"""Speed of the vectorized meta-learning engine against a per-task loop.

Protocol (the paper's rank-1 setting): one 70→68 MSR-FC layer with k=3 and no bias,
meta-batch 32, 1 support + 19 query rows per task, 1 inner SGD step, second order,
Adam. Both implementations run in this one process, single-threaded
(``torch.set_num_threads(1)``), interleaved in repeated blocks, so the machine's state
affects both alike. Reports steps/s as mean ± 95% CI over blocks and their ratio, and
the whole-run wall time of ``MetaSymmetryLearner.fit`` on the protocol (1000
meta-steps plus a 300-task evaluation every 100 steps).

Run: ``python benchmarks/speed.py [--blocks 5 --steps 200]``; writes
``benchmarks/results/speed.md`` and ``speed.csv``.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import pandas as pd
import torch

from _report import write_results

from msr_sklearn import MetaSymmetryLearner
from msr_sklearn.engine.reference import reference_task_losses
from msr_sklearn.datasets import make_translation_tasks
from msr_sklearn.engine import MetaModel, TaskBatch, make_meta_optimizer, meta_step
from msr_sklearn.nn import build_network
from msr_sklearn.data.tasks import mean_confidence_interval



def loop_meta_step(model, optimizer, batch):
    """The reference: one task at a time, as the official implementation does."""
    optimizer.zero_grad(set_to_none=True)
    loss = reference_task_losses(model, batch).mean()
    loss.backward()
    optimizer.step()
    return loss.detach()


def time_block(step_fn, model, optimizer, batches):
    start = time.perf_counter()
    for batch in batches:
        step_fn(model, optimizer, batch)
    return len(batches) / (time.perf_counter() - start)


def engine_vs_loop(n_blocks, n_steps, seed=0):
    X, y = make_translation_tasks(2000, rank=1, random_state=seed)
    X = torch.tensor(X, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n_steps):
        idx = torch.randint(0, len(X), (32,), generator=g)
        batches.append(TaskBatch(X[idx, :1], y[idx, :1], X[idx, 1:], y[idx, 1:]))
    impls = {"vectorized": meta_step, "per-task loop": loop_meta_step}
    models = {}
    for name in impls:
        model = MetaModel(build_network(70, 68, layer="msr", n_filters=3, bias=False,
                                        random_state=seed), inner_lr=0.1)
        models[name] = (model, make_meta_optimizer(model, 1e-3))
        time_block(impls[name], *models[name], batches[:20])  # warm-up
    rates = {name: [] for name in impls}
    for _ in range(n_blocks):
        for name, fn in impls.items():
            rates[name].append(time_block(fn, *models[name], batches))
    return rates


def whole_run(seed=0, n_meta_steps=1000):
    X, y = make_translation_tasks(10000, rank=1, random_state=seed)
    learner = MetaSymmetryLearner(layer="msr", n_filters=3, bias=False, n_support=1,
                                  n_meta_steps=n_meta_steps, validation_interval=100,
                                  random_state=seed)
    # warm-up: one-time imports and allocator growth are not part of a run
    MetaSymmetryLearner(**{**learner.get_params(), "n_meta_steps": 5}).fit(X[:64], y[:64])
    start = time.perf_counter()
    learner.fit(X[:8000], y[:8000], validation_tasks=(X[8000:8300], y[8000:8300]))
    seconds = time.perf_counter() - start
    return seconds, float(learner.history_["valid_loss"].dropna().iloc[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3, help="whole-run repetitions")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    rates = engine_vs_loop(args.blocks, args.steps)
    rows = []
    for name, r in rates.items():
        mean, ci = mean_confidence_interval(r)
        rows.append({"implementation": name, "steps_per_s": mean, "ci95": ci,
                     "blocks": len(r), "steps_per_block": args.steps})
    ratios = np.array(rates["vectorized"]) / np.array(rates["per-task loop"])
    ratio, ratio_ci = mean_confidence_interval(ratios)
    table = pd.DataFrame(rows)

    runs = [whole_run(seed=s) for s in range(args.runs)]
    seconds = [r[0] for r in runs]
    run_mean, run_ci = mean_confidence_interval(seconds)

    lines = [
        "# Meta-training speed: vectorized engine vs per-task loop",
        "",
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        "1 thread (`torch.set_num_threads(1)`), CPU.",
        "Protocol: rank-1, 70→68 MSR-FC k=3, meta-batch 32, 1 support + 19 query, "
        "1 inner step, second order, Adam.",
        "",
        "| implementation | meta-steps/s (mean ± 95% CI) | blocks × steps |",
        "|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row['implementation']} | {row['steps_per_s']:.0f} ± {row['ci95']:.0f} "
                     f"| {row['blocks']} × {row['steps_per_block']} |")
    lines += [
        "",
        f"Speed-up of the vectorized engine over the loop (per block): **{ratio:.1f}× ± "
        f"{ratio_ci:.1f}**.",
        "",
        "## Whole run",
        "",
        f"`MetaSymmetryLearner.fit`, 1000 meta-steps on 8000 tasks plus a 300-task evaluation "
        f"every 100 steps, after a warm-up fit (imports excluded): **{run_mean:.2f} s ± "
        f"{run_ci:.2f}** over {len(seconds)} seeds (final held-out query MSE "
        f"{', '.join(f'{r[1]:.3f}' for r in runs)}).",
    ]
    text = "\n".join(lines) + "\n"
    write_results("speed", text, table.assign(ratio_vs_loop=[ratio, 1.0],
                                              whole_run_s=[run_mean, np.nan]))


if __name__ == "__main__":
    main()
