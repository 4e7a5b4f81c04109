"""Meta-training speed: this version against the previous one, and the engine against a
per-task loop on image networks.

Two comparisons, each side by side in one run, single-threaded
(``torch.set_num_threads(1)``, CPU), in interleaved rounds so that the machine's state
affects every side alike; every number is the mean ± 95% CI over rounds. Times are the
process's CPU time (``time.process_time``): on a machine shared with other jobs, the
time a single-threaded process waits for a core does not count.

1. **Rank-1 protocol, this version vs the previous one** (``--baseline``, default the
   last commit before the ``module=`` redesign). One 70→68 MSR-FC layer with ``k=3``
   and no bias, meta-batch 32, 1 support + 19 query rows, 1 inner step, through the
   public ``MetaSymmetryLearner.fit`` of each version (a subprocess per fit, importing
   that version's package), at the paper's settings (Adam, meta-lr 1e-3, full second
   order) and at the library's defaults. Per-step time is the difference between a
   fit of ``--long`` and one of ``--short`` meta-steps, divided by the difference, so
   imports and set-up cancel.
2. **Image networks: the engine vs a per-task loop written as the official MSR code
   does it** (one task at a time: its inner step with higher-order autograd, its query
   loss backpropagated before the next task; the meta-step after the last). Same
   module, same sharing, same protocol: 5-way 1-shot, 15 queries per class, meta-batch
   32, 1 inner step, second order, Adam. Rows: a user-written CNN on 8×8 images (the
   Aug-Digits size) and the Conv-4 backbone at 28×28 (the glyph and Omniglot size),
   32 and 64 channels; the engine with the whole meta-batch at once and with its
   automatic chunk size (``meta_step_chunk_size``), whose graph size per meta-step is
   reported too.

Run: ``python benchmarks/speed.py [--rounds 5]``; writes ``benchmarks/results/speed.md``
and ``speed.csv``. ``benchmarks/devices.py`` runs the image rows on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from _report import cpu_name, library_version, write_results

ROOT = Path(__file__).resolve().parents[1]
#: the last commit before the module= redesign: the version whose speed must be kept
BASELINE = "1081b35"

PROTOCOLS = {
    "paper": dict(meta_optimizer="adam", meta_lr=1e-3, symmetry_gradient="second_order",
                  meta_lr_schedule="constant"),
    "defaults": {},
}


# ------------------------------------------------------------------ rank-1 worker
def rank1_worker(protocol, short, long):
    """In a subprocess whose ``msr_sklearn`` is the version under test: seconds per step."""
    torch.set_num_threads(1)
    from msr_sklearn import MetaSymmetryLearner
    from msr_sklearn.datasets import make_translation_tasks

    X, y = make_translation_tasks(2000, rank=1, random_state=0)
    params = dict(layer="msr", n_filters=3, bias=False, n_support=1, meta_batch_size=32,
                  random_state=0, **PROTOCOLS[protocol])
    MetaSymmetryLearner(**params, n_meta_steps=5).fit(X, y)  # warm-up
    seconds = {}
    for n in (short, long):
        start = time.process_time()
        MetaSymmetryLearner(**params, n_meta_steps=n).fit(X, y)
        seconds[n] = time.process_time() - start
    print(json.dumps({"s_per_step": (seconds[long] - seconds[short]) / (long - short)}))


def checkout(commit, into):
    """The package ``msr_sklearn/`` of ``commit``, extracted under ``into``."""
    archive = Path(into) / "src.tar"
    subprocess.run(["git", "archive", "-o", str(archive), commit, "msr_sklearn"], cwd=ROOT,
                   check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return Path(into)


def run_worker(source, protocol, short, long):
    env = {**os.environ, "PYTHONPATH": str(source), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, __file__, "--worker", protocol, str(short), str(long)],
                         env=env, cwd=ROOT / "benchmarks", capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["s_per_step"]


def versions_table(baseline, rounds, short, long):
    """Rows per (protocol, version), and the defaults' speed relative to the paper's
    protocol in this version (paper time / defaults time per round; > 1: faster)."""
    rows, times = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        sources = {"this version": ROOT, f"previous ({baseline})": checkout(baseline, tmp)}
        for protocol in PROTOCOLS:
            times[protocol] = {name: [] for name in sources}
            for _ in range(rounds):
                for name, source in sources.items():
                    times[protocol][name].append(run_worker(source, protocol, short, long))
            new, old = (np.array(t) for t in times[protocol].values())
            for name, t in times[protocol].items():
                rows.append({"protocol": protocol, "version": name,
                             "ms_per_step": 1e3 * np.mean(t), "ci95": 1e3 * _ci(t),
                             "ratio": np.mean(old / new), "ratio_ci95": _ci(old / new)})
    defaults = np.array(times["paper"]["this version"]) / np.array(
        times["defaults"]["this version"])
    return pd.DataFrame(rows), (defaults.mean(), _ci(defaults))


# ------------------------------------------------------------------ image rows
class DigitsCNN(nn.Module):
    """The kind of network a user brings for 8×8 images."""

    def __init__(self, n_classes=5, width=16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.GroupNorm(4, width), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(4, width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(width, n_classes)

    def forward(self, x):
        return self.head(self.features(x))


def image_rows():
    """``{row name: (module factory, policy factory, image shape)}``."""
    from msr_sklearn.models import Conv4
    from msr_sklearn.sharing import ConvFilterSharing, DenseSharing

    def conv4(width):
        return (lambda: Conv4((1, 28, 28), 5, channels=width),
                lambda net: net.default_sharing("msr", n_filters=8), (1, 28, 28))

    return {
        "user CNN, 8×8, 16 channels": (
            DigitsCNN,
            lambda net: {"features.*.weight": ConvFilterSharing(n_copies=4),
                         "head.weight": DenseSharing(n_filters=8)},
            (1, 8, 8)),
        "Conv-4, 28×28, 32 channels": conv4(32),
        "Conv-4, 28×28, 64 channels": conv4(64),
    }


def image_batches(shape, n_batches, device, way=5, shot=1, query=15, n_tasks=32, seed=0):
    from msr_sklearn.data.batch import TaskBatch

    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n_batches):
        x = torch.randn(n_tasks, way * (shot + query), *shape, generator=g)
        y = torch.arange(way).repeat(shot + query).expand(n_tasks, -1).contiguous()
        s = way * shot
        batches.append(TaskBatch(x[:, :s], y[:, :s], x[:, s:], y[:, s:]).to(device))
    return batches


def loop_meta_step(model, optimizer, batch, loop):
    """The official code's meta-step: one task at a time, backward per task."""
    from msr_sklearn.engine.reference import reference_task_losses

    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for t in range(batch.n_tasks):
        loss = reference_task_losses(model, batch.select(slice(t, t + 1)), loop).sum()
        (loss / batch.n_tasks).backward()
        total += float(loss.detach())
    optimizer.step()
    return total / batch.n_tasks


def image_model(make_net, make_policy, device):
    """An image row's meta-model, the same one for every run (seed 0)."""
    from msr_sklearn.engine import MetaModel

    torch.manual_seed(0)
    net = make_net()
    return MetaModel(net, make_policy(net), inner_lr=0.1,
                     generator=torch.Generator().manual_seed(0)).to(device)


def image_implementations(model, batch, loop):
    """``{name: (step function, graph bytes per meta-step)}`` of the three ways."""
    from msr_sklearn.engine import meta_step, meta_step_chunk_size, task_graph_bytes

    per_task = task_graph_bytes(model, batch, loop)
    auto = meta_step_chunk_size(model, batch, loop)
    return {
        "per-task loop (official)": (loop_meta_step, per_task),
        "engine, whole meta-batch": (
            lambda m, o, b, lp: meta_step(m, o, b, lp), per_task * batch.n_tasks),
        f"engine, auto chunks of {auto}": (
            lambda m, o, b, lp: meta_step(m, o, b, lp, chunk_size=auto), per_task * auto),
    }


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_images(device, rounds, steps, rows=None):
    """Seconds per meta-step of every implementation on every image row, interleaved."""
    from msr_sklearn.engine import InnerLoop, make_meta_optimizer

    loop = InnerLoop("cross_entropy", steps=1)
    # a GPU's time is wall time; on a CPU, single-threaded, the process's own CPU time
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    out = []
    for row, (make_net, make_policy, shape) in image_rows().items():
        if rows and row not in rows:
            continue
        batches = image_batches(shape, steps + 1, device)
        model = image_model(make_net, make_policy, device)
        impls = image_implementations(model, batches[0], loop)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        times = {name: [] for name in impls}
        for r in range(rounds + 1):  # round 0 warms up
            for name, (step, _) in impls.items():
                model.load_state_dict(state)  # every side takes the same steps
                optimizer = make_meta_optimizer(model, 1e-3, meta_optimizer="adam")
                step(model, optimizer, batches[0], loop)
                sync(device)
                start = clock()
                for batch in batches[1:]:
                    step(model, optimizer, batch, loop)
                sync(device)
                if r:
                    times[name].append((clock() - start) / steps)
        loop_times = np.array(times["per-task loop (official)"])
        for name, (_, graph) in impls.items():
            t = np.array(times[name])
            out.append({"network": row, "implementation": name, "device": str(device),
                        "s_per_step": t.mean(), "ci95": _ci(t),
                        "speedup_vs_loop": np.mean(loop_times / t),
                        "speedup_ci95": _ci(loop_times / t),
                        "graph_MB_per_step": graph / 2 ** 20})
            print(out[-1], flush=True)
    return pd.DataFrame(out)


#: the aten ops that do the network's own arithmetic (convolution, pooling,
#: normalization, activation; forward and backward), work a vectorized engine must do
#: as often as a per-task loop. Wrappers, fills and the small ops of double backward
#: are left out, so the share they give is a lower one and the bound a loose one.
NETWORK_KERNELS = frozenset(
    f"aten::{op}" for op in (
        "mkldnn_convolution", "convolution_backward", "_slow_conv2d_forward",
        "_slow_conv2d_backward", "max_pool2d_with_indices",
        "max_pool2d_with_indices_backward", "native_batch_norm", "native_batch_norm_backward",
        "native_group_norm", "native_group_norm_backward", "clamp_min", "threshold_backward"))


def kernel_shares(device, rows=None):
    """Per image row and implementation: the share of one meta-step's CPU time spent
    in :data:`NETWORK_KERNELS` (by ``torch.profiler``, self time of aten ops), and the
    speed-up over the loop that removing every other cost would bound."""
    from torch.profiler import profile

    from msr_sklearn.engine import InnerLoop, make_meta_optimizer

    inner_loop, out = InnerLoop("cross_entropy", steps=1), []
    for row, (make_net, make_policy, shape) in image_rows().items():
        if rows and row not in rows:
            continue
        batch = image_batches(shape, 1, device)[0]
        model = image_model(make_net, make_policy, device)
        for name, (step, _) in image_implementations(model, batch, inner_loop).items():
            optimizer = make_meta_optimizer(model, 1e-3, meta_optimizer="adam")
            step(model, optimizer, batch, inner_loop)  # warm-up
            with profile() as prof:
                step(model, optimizer, batch, inner_loop)
            events = prof.key_averages()
            total = sum(e.self_cpu_time_total for e in events)
            network = sum(e.self_cpu_time_total for e in events
                          if e.key in NETWORK_KERNELS)
            out.append({"network": row, "implementation": name,
                        "profiled_s": total / 1e6, "network_kernel_share": network / total})
            print(out[-1], flush=True)
    table = pd.DataFrame(out)
    loop = table[table.implementation == "per-task loop (official)"].set_index("network")
    return table.assign(
        kernel_s=table.profiled_s * table.network_kernel_share,
        speedup_bound=1 / table.network.map(loop.network_kernel_share))


def kernel_lines(table):
    lines = ["| network | implementation | profiled CPU s / meta-step | in the network's "
             "kernels | kernel s | speed-up bound vs loop |", "|---|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.network} | {r.implementation} | {r.profiled_s:.2f} | "
                     f"{100 * r.network_kernel_share:.0f} % | {r.kernel_s:.2f} | "
                     f"{r.speedup_bound:.2f}× |")
    return lines


def _ci(values):
    from msr_sklearn.data.tasks import mean_confidence_interval

    return mean_confidence_interval(np.asarray(values, dtype=float))[1]


def image_lines(table):
    lines = ["| network | implementation | s / meta-step | speed-up vs loop | graph per step |",
             "|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.network} | {r.implementation} | {r.s_per_step:.3f} ± "
                     f"{r.ci95:.3f} | {r.speedup_vs_loop:.2f}× ± {r.speedup_ci95:.2f} | "
                     f"{r.graph_MB_per_step:.0f} MB |")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", default=BASELINE)
    parser.add_argument("--short", type=int, default=50)
    parser.add_argument("--long", type=int, default=450)
    parser.add_argument("--image-rounds", type=int, default=3)
    parser.add_argument("--image-steps", type=int, default=2)
    parser.add_argument("--kernels", action="store_true",
                        help="only profile where the image rows' time goes "
                             "(writes results/speed_kernels.md)")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        protocol, short, long = args.worker
        return rank1_worker(protocol, int(short), int(long))
    torch.set_num_threads(1)
    if args.kernels:
        return write_kernels()

    versions, defaults_speed = versions_table(args.baseline, args.rounds, args.short,
                                              args.long)
    images = time_images(torch.device("cpu"), args.image_rounds, args.image_steps)
    lines = [
        "# Meta-training speed",
        "",
        f"Made by `python benchmarks/speed.py --rounds {args.rounds} --image-rounds "
        f"{args.image_rounds} --image-steps {args.image_steps}` at commit "
        f"{library_version()}, on {cpu_name()}, torch {torch.__version__}, CPU, one thread "
        "(`torch.set_num_threads(1)`, `OMP_NUM_THREADS=1`); times are the process's CPU "
        f"time (`time.process_time`). 1-minute load average at the start: "
        f"{os.getloadavg()[0]:.1f} (other jobs shared the machine's cores).",
        "",
        "## Rank-1 protocol: this version against the previous one",
        "",
        f"`MetaSymmetryLearner.fit` of each version (previous: commit {args.baseline}), "
        "70→68 MSR-FC k=3, no bias, meta-batch 32, 1 support + 19 query rows, 1 inner "
        f"step. Time per meta-step = (fit of {args.long} steps − fit of {args.short}) / "
        f"{args.long - args.short}; {args.rounds} interleaved rounds, a subprocess per "
        "fit. `paper`: Adam, meta-lr 1e-3, second order, constant rate; `defaults`: "
        "the library's own. Ratio > 1: this version is faster.",
        "",
        "| protocol | version | ms / meta-step | previous / this |",
        "|---|---|---|---|",
    ]
    for r in versions.itertuples():
        lines.append(f"| {r.protocol} | {r.version} | {r.ms_per_step:.2f} ± {r.ci95:.2f} | "
                     f"{r.ratio:.3f} ± {r.ratio_ci95:.3f} |")
    lines += [
        "",
        "The defaults' meta-step against the paper protocol's in this version (paper time / "
        f"defaults time per round; target ≥ 0.95): **{defaults_speed[0]:.3f} ± "
        f"{defaults_speed[1]:.3f}**.",
        "",
        "## Image networks: the engine against the official per-task loop",
        "",
        "5-way 1-shot, 15 queries per class, meta-batch 32, 1 inner step, second order, "
        f"Adam; MSR-Conv sharings on the convolutions, a dense sharing on the head. "
        f"{args.image_rounds} interleaved rounds of {args.image_steps} meta-steps after a "
        "warm-up round; every side starts each round from the same state. Graph per "
        "step: the bytes autograd holds at once (one task for the loop, a chunk for the "
        "engine).",
        "",
        *image_lines(images),
    ]
    table = pd.concat([versions.assign(section="rank-1 versions"),
                       images.assign(section="image networks")], ignore_index=True)
    write_results("speed", "\n".join(lines) + "\n", table)


def write_kernels():
    """``--kernels``: where one meta-step's CPU time goes, per image row and implementation."""
    table = kernel_shares(torch.device("cpu"))
    lines = [
        "# Meta-training speed: where the image rows' time goes",
        "",
        f"Made by `python benchmarks/speed.py --kernels` at commit {library_version()}, on "
        f"{cpu_name()}, torch {torch.__version__}, CPU, one thread "
        "(`torch.set_num_threads(1)`); one profiled meta-step (`torch.profiler`, self CPU "
        "time of every op) after a warm-up step, per row and implementation, the protocol "
        "of `speed.md`'s image rows (5-way 1-shot, 15 queries per class, meta-batch 32, "
        f"1 inner step, second order). 1-minute load average at the start: "
        f"{os.getloadavg()[0]:.1f}.",
        "",
        "In the network's kernels: the share of the step in aten ops of convolution, "
        "pooling, normalization and activation (forward, backward and double backward), "
        "arithmetic an engine that batches tasks must do as often as the per-task loop. "
        "Speed-up bound: the loop's time over its own kernels' time, the most any "
        "implementation of the same meta-step could gain on this CPU by removing every "
        "other cost (Python, autograd bookkeeping, small ops, copies), as long as the "
        "kernels themselves run no faster batched; the kernel seconds show whether they "
        "do (small images' kernels can, large ones' may run slower). Profiled times "
        "include the profiler's overhead; `speed.md` has the unprofiled ones.",
        "",
        *kernel_lines(table),
    ]
    write_results("speed_kernels", "\n".join(lines) + "\n", table)


if __name__ == "__main__":
    main()
