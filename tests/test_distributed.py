"""Data-parallel meta-training: 2 CPU processes (gloo, loopback) == 1 process.

Also a crash-safe resume under torch.distributed: rank 0 writes the checkpoint, every
rank reads it, and the resumed 2-process run ends exactly as the uninterrupted one.
"""

import os
import socket

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from msr_sklearn import LearnedSymmetry, MetaSymmetryLearner
from msr_sklearn.datasets import make_translation_tasks
from msr_sklearn.training.checkpoints import read_checkpoint
from msr_sklearn.training import Callback
from msr_sklearn.sharing import DenseSharing, Residual
from msr_sklearn.training.callbacks import Checkpoint

PARAMS = dict(n_filters=3, bias=True, n_support=2, n_meta_steps=25, meta_batch_size=8,
              random_state=0)
SOFT = dict(PARAMS, sharing={"0.weight": Residual(DenseSharing(3), pull=True)}, inner_steps=2)


def tasks():
    return make_translation_tasks(n_tasks=40, n_samples=6, n_features=10, random_state=0)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Crash(Callback):
    def on_step_end(self, trainer):
        if trainer.step == 15:  # after the checkpoint of step 10, on every rank
            raise RuntimeError("crash")


def _worker(rank, world, port, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        X, y = tasks()
        # random_state=None on purpose for rank 1: the seed is broadcast from rank 0
        params = {**PARAMS, "random_state": 0 if rank == 0 else None,
                  "callbacks": [Checkpoint(os.path.join(out_dir, f"ckpt_rank{rank}.msr"),
                                           interval=10)]}
        learner = MetaSymmetryLearner(**params).fit(X, y)
        learner.symmetry_.save(os.path.join(out_dir, f"final_rank{rank}.msr"))
        # a soft-symmetry network: the residuals R0 and their pulls are all-reduced too
        soft = MetaSymmetryLearner(**SOFT).fit(X, y)
        soft.symmetry_.save(os.path.join(out_dir, f"soft_rank{rank}.msr"))
        try:  # a meta-batch smaller than the world cannot be split
            MetaSymmetryLearner(**{**PARAMS, "meta_batch_size": 1}).fit(X, y)
        except ValueError as exc:
            with open(os.path.join(out_dir, f"err{rank}.txt"), "w") as f:
                f.write(str(exc))
        checkpoint = Checkpoint(os.path.join(out_dir, "resume.msr"), interval=10, resume=True)
        resume = {**PARAMS, "callbacks": [checkpoint]}
        try:
            MetaSymmetryLearner(**{**resume, "callbacks": [checkpoint, _Crash()]}).fit(X, y)
        except RuntimeError:
            pass
        step = read_checkpoint(checkpoint.path)[1]["trainer"]["step"]
        with open(os.path.join(out_dir, f"resumed_from{rank}.txt"), "w") as f:
            f.write(str(step))
        learner = MetaSymmetryLearner(**resume).fit(X, y)  # the same call, started again
        learner.symmetry_.save(os.path.join(out_dir, f"resumed_rank{rank}.msr"))
    finally:
        dist.destroy_process_group()
    if os.path.isdir("/proc/self/task"):  # Linux: which threads outlive the group
        names = [open(f"/proc/self/task/{t}/comm").read().strip()
                 for t in os.listdir("/proc/self/task")]
        with open(os.path.join(out_dir, f"threads{rank}.txt"), "w") as f:
            f.write("\n".join(names))


def test_two_processes_match_one(tmp_path):
    port = _free_port()
    mp.spawn(_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    single = MetaSymmetryLearner(**PARAMS).fit(*tasks()).symmetry_
    ranks = [LearnedSymmetry.load(tmp_path / f"final_rank{r}.msr") for r in range(2)]
    # the replicas stay identical, and equal the single process with the same total batch
    assert ranks[0] == ranks[1]
    soft = [LearnedSymmetry.load(tmp_path / f"soft_rank{r}.msr") for r in range(2)]
    assert soft[0] == soft[1]
    for one, many in ((single, ranks[0]),
                      (MetaSymmetryLearner(**SOFT).fit(*tasks()).symmetry_, soft[0])):
        for name, value in one.state.items():
            np.testing.assert_allclose(many.state[name], value, rtol=1e-4, atol=1e-6,
                                       err_msg=name)
    # only rank 0 writes checkpoints
    assert (tmp_path / "ckpt_rank0.msr").exists()
    assert not (tmp_path / "ckpt_rank1.msr").exists()
    # both ranks resumed rank 0's checkpoint of step 10 and ended bit-identical to the
    # uninterrupted 2-process run
    for r in range(2):
        assert (tmp_path / f"resumed_from{r}.txt").read_text() == "10"
        assert LearnedSymmetry.load(tmp_path / f"resumed_rank{r}.msr") == ranks[r]
    for r in range(2):
        assert "raise meta_batch_size to at least 2" in (tmp_path / f"err{r}.txt").read_text()
        # destroy_process_group() really freed the group: no gloo thread is left to be
        # torn down at interpreter exit (which aborted the process now and then)
        threads = tmp_path / f"threads{r}.txt"
        if threads.exists():
            assert "gloo" not in threads.read_text()


