"""What the real-image benchmarks share (glyphs, rotation2d, mnist1d): their command-line
options, the results header (how a file was made), seed summaries and memory readings."""

from __future__ import annotations

import argparse
import datetime
import platform
import shlex
import sys

import numpy as np

from _report import cpu_name, library_version

from msr_sklearn.data.tasks import mean_confidence_interval


def parser(description, seeds=(0, 1, 2)):
    """The options every benchmark takes; a script adds its own."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", default="cpu", help="torch device of the fits (default cpu)")
    p.add_argument("--meta-batch-size", type=int, default=None,
                   help="tasks per meta-step (default: the script's CPU setting)")
    p.add_argument("--n-meta-steps", type=int, default=None,
                   help="meta-steps per fit (default: the script's CPU setting)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(seeds),
                   help="training seeds (default: %(default)s)")
    p.add_argument("--n-jobs", type=int, default=2,
                   help="worker processes, one torch thread each (default 2)")
    p.add_argument("--quick", action="store_true",
                   help="a tiny run that checks the script end to end (results_quick)")
    return p


def cpu_settings(args, cpu):
    """The protocol's ``cpu`` settings with ``--meta-batch-size`` / ``--n-meta-steps``
    applied where given."""
    settings = dict(cpu)
    if args.meta_batch_size:
        settings["meta_batch_size"] = args.meta_batch_size
    if args.n_meta_steps:
        settings["n_meta_steps"] = args.n_meta_steps
    return settings


def header(title, args, settings):
    """The lines that say how a results file was made."""
    import torch

    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    lines = [f"# {title}", "",
             f"- command: `{command}`",
             f"- library commit: {library_version()}",
             f"- machine: {cpu_name()} ({platform.machine()}), device `{args.device}`",
             f"- threads: 1 torch thread per fit (`torch.set_num_threads(1)`), "
             f"{args.n_jobs} fits in parallel processes",
             f"- versions: torch {torch.__version__}, numpy {np.__version__}, "
             f"python {platform.python_version()}",
             f"- training seeds: {', '.join(str(s) for s in args.seeds)}",
             f"- date: {datetime.date.today().isoformat()}"]
    lines += [f"- {key}: {value}" for key, value in settings.items()]
    return lines + [""]


def over_seeds(values):
    """``(mean, 95% half-width)`` over seeds (Student t; NaN half-width for one seed)."""
    values = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if not len(values):
        return float("nan"), float("nan")
    return mean_confidence_interval(values)


def pm(values, scale=1.0, digits=1):
    """``"mean ± half-width"`` of ``values`` over seeds, times ``scale``."""
    mean, half = over_seeds(values)
    if not np.isfinite(mean):
        return "n/a"
    if not np.isfinite(half):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {half * scale:.{digits}f}"


def peak_rss_bytes():
    """The process's peak resident memory so far (``VmHWM``), or NaN off Linux."""
    return _status_bytes("VmHWM")


def rss_bytes():
    """The process's resident memory now (``VmRSS``), or NaN off Linux."""
    return _status_bytes("VmRSS")


def _status_bytes(key):
    try:
        with open("/proc/self/status") as f:
            line = next(line for line in f if line.startswith(key + ":"))
    except (OSError, StopIteration):
        return float("nan")
    return int(line.split()[1]) * 1024
