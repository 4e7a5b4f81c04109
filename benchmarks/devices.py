"""Meta-steps/s on each available device, for meta-batches of 32 and 256 tasks.

Rank-1 protocol (70→68 MSR-FC k=3, 1 support + 19 query, 1 inner step, second order,
Adam) through the vectorized engine. CPU runs single-threaded
(``torch.set_num_threads(1)``); CUDA runs where ``torch.cuda.is_available()``. Each
cell is the mean ± 95% CI of steps/s over ``--blocks`` timed blocks after a warm-up,
with CUDA synchronized at block ends. On a GPU it also times the image rows of
``benchmarks/speed.py`` (a user CNN on 8×8 images, the Conv-4 at 28×28 with 32 and 64
channels; meta-batch 32), the engine against the official per-task loop, and issue
20's rows at the paper's meta-batch of 32 (``--real-steps`` meta-steps: the 2-D
rotation tasks and the 5-way 1-shot glyph rows). Writes
``benchmarks/results/devices.md`` and ``.csv``; the ratio column compares each device
with the CPU at the same batch size.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import pandas as pd
import torch

from _report import cpu_name, library_version, write_results

from msr_sklearn.data.batch import TaskBatch
from msr_sklearn.data.tasks import mean_confidence_interval
from msr_sklearn.datasets import make_translation_tasks
from msr_sklearn.engine import InnerLoop, MetaModel, make_meta_optimizer, meta_step
from msr_sklearn.models import MLP

#: the rank-1 protocol's inner loop: MSE, one SGD step, second-order meta-gradients
LOOP = InnerLoop(loss="mse", steps=1, first_order=False, symmetry_gradient="second_order")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rank1_model(seed=0):
    """MSR-FC of the rank-1 protocol: a 70 -> 68 linear layer, no bias, a dense ``U``
    with k = 3; built from ``seed`` without touching torch's global random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = MLP(70, 68, bias=False)
    return MetaModel(net, net.default_sharing("msr", n_filters=3),
                     generator=torch.Generator().manual_seed(seed))


def steps_per_second(device, batch_size, n_blocks, n_steps, seed=0):
    X, y = make_translation_tasks(4 * batch_size, rank=1, random_state=seed)
    X = torch.tensor(X, dtype=torch.float32, device=device)
    y = torch.tensor(y, dtype=torch.float32, device=device)
    model = rank1_model(seed).to(device)
    optimizer = make_meta_optimizer(model)
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n_steps):
        idx = torch.randint(0, len(X), (batch_size,), generator=g).to(device)
        batches.append(TaskBatch(X[idx, :1], y[idx, :1], X[idx, 1:], y[idx, 1:]))
    for b in batches[:10]:  # warm-up
        meta_step(model, optimizer, b, LOOP)
    rates = []
    for _ in range(n_blocks):
        _sync(device)
        start = time.perf_counter()
        for b in batches:
            meta_step(model, optimizer, b, LOOP)
        _sync(device)
        rates.append(n_steps / (time.perf_counter() - start))
    return rates


def cuda_matches_cpu():
    """Fit one bound per-task estimator on CPU and on CUDA; max |prediction difference|."""
    from msr_sklearn import EquivariantRegressor, LearnedSymmetry

    X, y = make_translation_tasks(1, n_samples=12, random_state=0)
    symmetry = LearnedSymmetry.initial(n_features=70, n_outputs=68, layer="msr", n_filters=3,
                                       bias=False, inner_steps=3, random_state=0)
    preds = [EquivariantRegressor(symmetry, device=d).fit(X[0, :4], y[0, :4]).predict(X[0])
             for d in ("cpu", "cuda")]
    return float(abs(preds[0] - preds[1]).max())


def real_image_rows(device, n_meta_steps, random_state=0):
    """Issue 20's rows at meta-batch 32 on ``device``: the 2-D rotation tasks (every
    group and method at the library's defaults) and the 5-way 1-shot glyph rows (each
    at the initial inner rate ``glyphs.py`` tuned for it)."""
    import glyphs
    import rotation2d

    rows = []
    for group in rotation2d.GROUPS:
        for method in rotation2d.METHODS:
            r = rotation2d.run_row(group, method, random_state=random_state,
                                   meta_batch_size=32, n_meta_steps=n_meta_steps,
                                   device=str(device))
            rows.append({"benchmark": "rotation2d", "name": f"{group} {method}",
                         "score": r["query_mse"], "fit_seconds": r["fit_seconds"]})
    rates = glyphs.saved_rates()   # each row at its rate tuned on CPU
    for row in glyphs.ROWS:
        r = glyphs.run_row(row, n_way=5, random_state=random_state, meta_batch_size=32,
                           n_meta_steps=n_meta_steps, inner_lr=rates[row], device=str(device))
        rows.append({"benchmark": "glyphs 5-way 1-shot", "name": row, "score": r["acc_aug"],
                     "fit_seconds": r["fit_seconds"]})
    return pd.DataFrame(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--image-rounds", type=int, default=3)
    parser.add_argument("--image-steps", type=int, default=5)
    parser.add_argument("--real-steps", type=int, default=300,
                        help="meta-steps of issue 20's rows on a GPU (0: skip them)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    rows = []
    for device in devices:
        for batch_size in (32, 256):
            mean, ci = mean_confidence_interval(
                steps_per_second(device, batch_size, args.blocks, args.steps))
            name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (1 thread)"
            rows.append({"device": name, "meta_batch": batch_size, "steps_per_s": mean,
                         "ci95": ci, "tasks_per_s": mean * batch_size})
    df = pd.DataFrame(rows)
    cpu = df[df.device.str.startswith("cpu")].set_index("meta_batch")["steps_per_s"]
    df["ratio_vs_cpu"] = df.steps_per_s / df.meta_batch.map(cpu)
    command = " ".join(["python benchmarks/devices.py", *(argv or sys.argv[1:])])
    lines = ["# Meta-steps/s by device", "",
             f"Command: `{command}`. Library: commit {library_version()}. Machine: "
             f"{cpu_name()}, {os.cpu_count()} cores; CPU rows on 1 thread "
             f"(`torch.set_num_threads(1)`), 1-minute load average {load:.1f} at the start "
             "(other jobs may share the cores).", "",
             f"torch {torch.__version__}; rank-1 protocol, second order; {args.blocks} blocks × "
             f"{args.steps} steps per cell.", "",
             "| device | meta-batch | meta-steps/s (mean ± 95% CI) | tasks/s | × CPU |",
             "|---|---|---|---|---|"]
    for r in df.itertuples():
        lines.append(f"| {r.device} | {r.meta_batch} | {r.steps_per_s:.0f} ± {r.ci95:.0f} | "
                     f"{r.tasks_per_s:.0f} | {r.ratio_vs_cpu:.2f} |")
    if len(devices) > 1:
        lines += ["", "EquivariantRegressor fitted on CPU and on CUDA: max |prediction "
                  f"difference| = {cuda_matches_cpu():.2e}."]
        # the image rows of speed.py (user CNN, Conv-4 at 28×28) on the GPU, meta-batch 32
        from speed import image_lines, time_images

        images = time_images(devices[1], args.image_rounds, args.image_steps)
        lines += ["", "## Image networks on the GPU: the engine against the official "
                  "per-task loop", "", f"{args.image_rounds} rounds of {args.image_steps} "
                  "meta-steps, meta-batch 32, the protocol of `benchmarks/speed.py`.", "",
                  *image_lines(images)]
        df = pd.concat([df, images], ignore_index=True)
        if args.real_steps:
            real = real_image_rows(devices[1], args.real_steps)
            lines += ["", "## Issue 20's rows on the GPU at the paper's meta-batch of 32", "",
                      f"{args.real_steps} meta-steps, seed 0: `rotation2d.run_row` at the "
                      "defaults, `glyphs.run_row` 5-way 1-shot (see docs/real_images.md).",
                      "", "| benchmark | row | query MSE / accuracy (aug.) | fit (s) |",
                      "|---|---|---|---|"]
            for r in real.itertuples():
                lines.append(f"| {r.benchmark} | {r.name} | {r.score:.4f} | "
                             f"{r.fit_seconds:.0f} |")
            df = pd.concat([df, real], ignore_index=True)
    if len(devices) == 1:
        lines += ["", "No CUDA device on this machine: the GPU rows are absent (the same code "
                  "path is tested on CPU; run this script on a GPU machine to fill them)."]
    text = "\n".join(lines) + "\n"
    write_results("devices", text, df)


if __name__ == "__main__":
    main()
