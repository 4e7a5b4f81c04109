"""Crash-safe checkpoints: Checkpoint(resume=True) ends exactly where an uninterrupted fit
ends."""

import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from msr_sklearn import LearnedSymmetry, MetaSymmetryLearner
from msr_sklearn.datasets import make_translation_tasks
from msr_sklearn.data.streams import TaskStream
from msr_sklearn.training.checkpoints import read_checkpoint, write_checkpoint
from msr_sklearn.training import Callback
from msr_sklearn.training.callbacks import Checkpoint, EarlyStopping

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(n_filters=3, bias=False, n_support=2, n_meta_steps=40, meta_batch_size=8,
             random_state=0)


def stream():
    return TaskStream(lambda n, rng: make_translation_tasks(
        n_tasks=n, n_samples=6, n_features=10, random_state=int(rng.integers(2**31))))


class Crash(Callback):
    """Dies at a step, as a killed process would (nothing after it is written)."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer):
        if trainer.step == self.step:
            raise RuntimeError("crash")


def assert_same_run(a, b):
    """Bit-identical: U, v0, inner lrs, Adam's state, history, early-stopping results."""
    assert a.symmetry_ == b.symmetry_
    pd.testing.assert_frame_equal(a.history_, b.history_, check_exact=True)
    for name, value in a.model_.state_dict().items():
        assert torch.equal(value, b.model_.state_dict()[name]), name
    sa, sb = a._optimizer.state_dict()["state"], b._optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for key in sa[i]:
            assert torch.equal(sa[i][key], sb[i][key]), (i, key)
    assert (a.n_iter_, a.best_step_, a.best_valid_loss_) == (
        b.n_iter_, b.best_step_, b.best_valid_loss_)


CASES = {
    # validation, early stopping, the cosine schedule; it dies 12 steps after the best
    # validation loss, when early stopping has counted 2 checks without improvement
    "tasks": (dict(meta_lr=3e-2, n_meta_steps=300, validation_interval=5,
                   meta_lr_schedule="cosine"), None, 5),
    # fresh tasks drawn from seeds of the sampler; validation_tasks; first rows as support
    "stream": (dict(n_support=1, validation_interval=6, support_split="first"), 25, 10),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_crashed_fit_resumes_bit_identically(tasks, tmp_path, case):
    params, crash_at, interval = CASES[case]
    params = {**SMALL, **params}
    early = [EarlyStopping(n_iter_no_change=4, tol=0.0)] if case == "tasks" else []
    X, y = tasks
    data = ((X, y), {}) if case == "tasks" else ((stream(),), {"validation_tasks": (X[:6],
                                                                                   y[:6])})
    reference = MetaSymmetryLearner(**params, callbacks=early).fit(*data[0], **data[1])
    if case == "tasks":
        assert reference.n_iter_ == reference.best_step_ + 21 < 300  # early stopping stopped
        crash_at = reference.best_step_ + 12
    path = tmp_path / "run.msr"
    checkpoint = Checkpoint(path, interval=interval, resume=True)
    run = dict(params, callbacks=[*early, checkpoint])
    with pytest.raises(RuntimeError, match="crash"):
        MetaSymmetryLearner(**{**run, "callbacks": [*early, checkpoint, Crash(crash_at)]}).fit(
            *data[0], **data[1])
    # the checkpoint is the last one before the crash; the rows after it are recomputed
    saved = read_checkpoint(path)[1]["trainer"]
    assert saved["step"] == (crash_at + 1) // interval * interval
    if case == "tasks":
        assert saved["callbacks"]["EarlyStopping"]["wait"] == 2
    resumed = MetaSymmetryLearner(**run).fit(*data[0], **data[1])
    assert_same_run(resumed, reference)
    # the file now holds the finished run: resuming again returns it without training
    again = MetaSymmetryLearner(**{**run, "callbacks": [*early, checkpoint, Crash(0)]}).fit(
        *data[0], **data[1])
    assert_same_run(again, reference)
    assert LearnedSymmetry.load(path) == reference.symmetry_


def test_a_warm_started_fit_resumes_into_a_fresh_learner(tasks, tmp_path):
    params = dict(SMALL, warm_start=True, validation_fraction=0.2, validation_interval=10)
    reference = MetaSymmetryLearner(**params).fit(*tasks).fit(*tasks)
    path = tmp_path / "run.msr"
    checkpoint = Checkpoint(path, interval=10, resume=True)
    first = MetaSymmetryLearner(**params, callbacks=[checkpoint]).fit(*tasks)
    with pytest.raises(RuntimeError, match="crash"):  # the second fit dies
        first.set_params(callbacks=[checkpoint, Crash(65)]).fit(*tasks)
    resumed = MetaSymmetryLearner(**params, callbacks=[checkpoint]).fit(*tasks)
    assert list(resumed.history_["step"]) == list(range(80))
    assert_same_run(resumed, reference)


def test_resume_without_a_file_starts_afresh(tasks, tmp_path):
    path = tmp_path / "new.msr"
    learner = MetaSymmetryLearner(**SMALL, callbacks=[Checkpoint(path, resume=True)])
    assert learner.fit(*tasks).symmetry_ == MetaSymmetryLearner(**SMALL).fit(*tasks).symmetry_
    assert path.is_file() and sorted(os.listdir(tmp_path)) == ["new.msr"]
    with pytest.raises(ValueError, match="more than one Checkpoint"):
        MetaSymmetryLearner(**SMALL, callbacks=[Checkpoint(path), Checkpoint(path)]).fit(*tasks)
    with pytest.raises(ValueError, match="interval must be a positive integer"):
        Checkpoint(path, interval=0)


@pytest.fixture
def checkpoint(tasks, tmp_path):
    path = tmp_path / "run.msr"
    MetaSymmetryLearner(**SMALL, callbacks=[Checkpoint(path, interval=10)]).fit(*tasks)
    return path


@pytest.mark.parametrize("change, message", [
    ({"n_filters": 4}, "was written with n_filters=3, but the learner has n_filters=4"),
    ({"meta_lr_schedule": "cosine"},
     "was written with meta_lr_schedule='inverse_time', but the learner has "
     "meta_lr_schedule='cosine'"),
    ({"random_state": None}, "random_state=0, but the learner has random_state=None"),
    ({"n_meta_steps": 50, "inner_lr": 0.2}, "inner_lr='auto', but the learner has inner_lr=0.2; "
                                            "n_meta_steps=40, but the learner has "
                                            "n_meta_steps=50"),
])
def test_a_checkpoint_of_other_settings_is_refused_and_kept(tasks, checkpoint, change,
                                                              message):
    before = checkpoint.read_bytes()
    with pytest.raises(ValueError, match=message):
        MetaSymmetryLearner(**{**SMALL, **change},
                            callbacks=[Checkpoint(checkpoint, resume=True)]).fit(*tasks)
    assert checkpoint.read_bytes() == before


def test_a_checkpoint_of_other_tasks_is_refused_and_kept(tasks, checkpoint):
    X, y = tasks
    before = checkpoint.read_bytes()
    learner = MetaSymmetryLearner(**SMALL, callbacks=[Checkpoint(checkpoint, resume=True)])
    other = X.copy()
    other[3, 2, 1] += 1e-3
    with pytest.raises(ValueError, match="the training tasks differ from those the checkpoint"):
        learner.fit(other, y)
    with pytest.raises(ValueError, match="the validation tasks differ"):
        learner.fit(X, y, validation_tasks=(X[:4], y[:4]))
    assert checkpoint.read_bytes() == before
    # the settings that do not change the computation may change (but the device: CPU)
    assert MetaSymmetryLearner(**SMALL, verbose=0, callbacks=[
        Checkpoint(checkpoint, interval=3, resume=True)]).fit(X, y).n_iter_ == 40


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "symmetry only",
                                    "no trainer"])
def test_a_damaged_checkpoint_is_a_clear_error_and_is_not_overwritten(tasks, checkpoint,
                                                                        damage):
    data = checkpoint.read_bytes()
    if damage == "truncated":
        checkpoint.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        checkpoint.write_bytes(b"not a zip file at all")
    elif damage == "empty":
        checkpoint.write_bytes(b"")
    elif damage == "symmetry only":  # an old checkpoint, or LearnedSymmetry.save
        LearnedSymmetry.load(checkpoint).save(checkpoint)
    else:
        symmetry, state = read_checkpoint(checkpoint)
        del state["trainer"]
        write_checkpoint(checkpoint, symmetry, state)
    damaged = checkpoint.read_bytes()
    match = {"symmetry only": "holds a LearnedSymmetry but no training state",
             "no trainer": "its training state lacks 'trainer'"}.get(
        damage, "the file is truncated, corrupted or of another kind")
    with pytest.raises(ValueError, match=match) as error:
        MetaSymmetryLearner(**SMALL, callbacks=[Checkpoint(checkpoint, resume=True)]).fit(*tasks)
    assert checkpoint.read_bytes() == damaged
    if damage in ("garbage", "symmetry only"):
        # not a checkpoint (a file of another kind, a saved symmetry): resume=False
        # would not overwrite it either, so the hint does not offer it
        assert "move or delete the file, or choose another checkpoint_path" in str(error.value)
        with pytest.raises(ValueError, match="this fit would overwrite it"):
            MetaSymmetryLearner(**SMALL, callbacks=[Checkpoint(checkpoint)]).fit(*tasks)
        assert checkpoint.read_bytes() == damaged
    else:  # a damaged checkpoint of ours: resume=False starts afresh over it
        assert "set resume=False to start afresh" in str(error.value)
        MetaSymmetryLearner(**SMALL, callbacks=[Checkpoint(checkpoint)]).fit(*tasks)
        assert read_checkpoint(checkpoint)[1]["trainer"]["finished"]


def test_the_checkpoint_holds_the_whole_training_state_without_pickle(tasks, checkpoint):
    with zipfile.ZipFile(checkpoint) as zf:
        names = zf.namelist()
        assert {"meta.json", "training.json"} <= set(names)
        assert all(n.endswith(".npy") for n in names if n not in ("meta.json",
                                                                  "training.json"))
    symmetry, state = read_checkpoint(checkpoint)
    learner = MetaSymmetryLearner(**SMALL).fit(*tasks)
    assert symmetry == learner.symmetry_ == LearnedSymmetry.load(checkpoint)
    trainer, info = state["trainer"], state["info"]
    assert trainer["step"] == 40 and trainer["finished"] and trainer["fit_start"] == 0
    adam = learner._optimizer.state_dict()["state"]
    assert set(trainer["optimizer"]) == {str(i) for i in adam}
    for i, moments in adam.items():
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(trainer["optimizer"][str(i)][key], moments[key])
    assert trainer["generator"].dtype == torch.uint8
    np.testing.assert_array_equal(trainer["history"]["train_loss"],
                                  learner.history_["train_loss"])
    assert info["seed"] == 0 and info["settings"]["n_filters"] == 3
    assert len(info["training tasks"]) == 64  # a SHA-256 of the padded tasks


def test_an_interrupted_fit_keeps_the_last_periodic_checkpoint(tasks, tmp_path, interrupt_at):
    path = tmp_path / "run.msr"
    run = dict(SMALL, callbacks=[Checkpoint(path, interval=10, resume=True)])
    interrupt_at(26)
    with pytest.warns(RuntimeWarning, match="interrupted after 25 meta-steps"):
        MetaSymmetryLearner(**run).fit(*tasks)
    assert read_checkpoint(path)[1]["trainer"]["step"] == 20
    interrupt_at(None)
    assert_same_run(MetaSymmetryLearner(**run).fit(*tasks),
                    MetaSymmetryLearner(**SMALL).fit(*tasks))


# ----------------------------------------------------------------------- SIGKILL
KILLED = dict(n_filters=3, bias=False, n_support=2, n_meta_steps=300, meta_batch_size=8,
              random_state=0, validation_fraction=0.2, validation_interval=25,
              meta_lr_schedule="cosine", meta_lr=1e-2)
SCRIPT = """
import sys, time
import torch
torch.set_num_threads(1)
from msr_sklearn import MetaSymmetryLearner
from msr_sklearn.datasets import make_translation_tasks
from msr_sklearn.training import Callback
from msr_sklearn.training.callbacks import Checkpoint

class Slow(Callback):  # so that a kill lands mid-run, wherever the machine is
    def on_step_end(self, trainer):
        time.sleep(0.003)

X, y = make_translation_tasks(n_tasks=40, n_samples=8, n_features=10, random_state=0)
learner = MetaSymmetryLearner(**{params!r}, callbacks=[
    Slow(), Checkpoint(sys.argv[1], interval=5, resume=True)]).fit(X, y)
open(sys.argv[2], "w").write("done")
"""


def _kill_when(process, ready, timeout=60.0):
    start = time.monotonic()
    while not ready():
        assert process.poll() is None, (
            f"the run ended before it could be killed: {process.stderr.read().decode()}")
        assert time.monotonic() - start < timeout, "the run made no checkpoint in time"
        time.sleep(0.002)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_a_run_killed_with_sigkill_ends_bit_identical_to_an_uninterrupted_one(tasks, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(SCRIPT).replace("{params!r}", repr(KILLED)))
    path, done = tmp_path / "run.msr", tmp_path / "done"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def start():
        return subprocess.Popen([sys.executable, str(script), str(path), str(done)], env=env,
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    # killed right after its first checkpoint appears
    _kill_when(start(), path.exists)
    first = read_checkpoint(path)[1]["trainer"]["step"]
    # started again with the same call: killed once it wrote a newer checkpoint (the
    # rename gives the file a new inode), at whatever point it then is
    inode = path.stat().st_ino
    _kill_when(start(), lambda: path.stat().st_ino != inode)
    second = read_checkpoint(path)[1]["trainer"]["step"]
    assert 0 < first < second < KILLED["n_meta_steps"] and not done.exists()
    # a kill mid-write leaves a partial temporary file, which a resume ignores and
    # removes once it holds the checkpoint
    (tmp_path / ".run.msr.k1ll3d_x.tmp").write_bytes(b"partial")
    resumed = MetaSymmetryLearner(**KILLED, callbacks=[Checkpoint(path, interval=5,
                                                                  resume=True)]).fit(*tasks)
    assert_same_run(resumed, MetaSymmetryLearner(**KILLED).fit(*tasks))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
