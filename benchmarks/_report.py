"""What every benchmark does with its outcome: print the table, write results/NAME.md/.csv."""

from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def write_results(name, text, table, **to_csv):
    """Print ``text`` and write it to ``results/{name}.md``, ``table`` to ``{name}.csv``."""
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text)
    table.to_csv(RESULTS / f"{name}.csv", index=False, **to_csv)


def library_version():
    """The commit the library was at, and whether its files differed from it."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "-uno", "msr_sklearn"], cwd=root,
                               text=True, capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (msr_sklearn/ with uncommitted changes)" if dirty else "")


def cpu_name():
    """The CPU's model name (from /proc/cpuinfo), else what ``platform`` knows."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def map_single_threaded(function, jobs, n_jobs):
    """``function(job)`` for each job, yielded in the jobs' order.

    With ``n_jobs > 1`` the jobs run in that many worker processes, each limited to
    one torch thread; otherwise here, also single-threaded.
    """
    import torch

    if n_jobs <= 1:
        torch.set_num_threads(1)
        yield from map(function, jobs)
        return
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(n_jobs, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        yield from pool.map(function, jobs)
