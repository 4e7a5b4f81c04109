"""Files that are shared, hostile or damaged (issue 23, items 1-5 and 10).

Each test reproduces an item with the issue's settings: a second fit on a checkpoint in
use, planted links, a zip bomb, corrupt files and odd metadata, content that does not
fit its architecture, trainer fields that contradict each other, a checkpoint location
that cannot work, and a seeded fuzz of single-byte flips. Reading a file raises
FileNotFoundError, OSError (the system's) or ValueError, and nothing else.
"""

import errno
import io
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from msr_sklearn import LearnedSymmetry, MetaSymmetryLearner
from msr_sklearn.training.callbacks import Checkpoint, EarlyStopping
from msr_sklearn.persistence import (MAX_MEMBER_BYTES, check_checkpoint_location,
                                     checkpoint_file_kind, checkpoint_lock, write_archive)
from msr_sklearn.training import Callback
from msr_sklearn.training.checkpoints import (check_training_state, read_checkpoint,
                                              write_checkpoint)

ROOT = Path(__file__).resolve().parents[1]
Q = dict(n_filters=2, n_support=2, n_meta_steps=5, meta_batch_size=4, random_state=0)


@pytest.fixture(scope="module")
def reference(tasks):
    return MetaSymmetryLearner(**Q).fit(*tasks)


@pytest.fixture
def checkpoint(tasks, tmp_path):
    """A finished run's checkpoint."""
    path = tmp_path / "run.msr"
    MetaSymmetryLearner(**Q, callbacks=[Checkpoint(path, interval=1)]).fit(*tasks)
    return path


@pytest.fixture
def symmetry_file(reference, tmp_path):
    path = tmp_path / "sym.msr"
    reference.symmetry_.save(path)
    return path


class Crash(Callback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer):
        if trainer.step == self.step:
            raise RuntimeError("crash")


def members(path):
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def rewrite(path, changes=(), meta=None):
    """Rewrite the zip at ``path`` member by member (as a hostile editor would)."""
    files = members(path)
    if meta is not None:
        files["meta.json"] = json.dumps(meta(json.loads(files["meta.json"]))).encode()
    files.update(changes)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            if data is not None:
                zf.writestr(name, data)


def edit_state(path, edit):
    symmetry, state = read_checkpoint(path)
    edit(state)
    write_checkpoint(path, symmetry, state)


def npy(array):
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def raw_npy(descr, shape, data=b""):
    """An .npy member with any header (shape and dtype need not match the data)."""
    header = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {shape!r}, }}"
    header = header.ljust(117) + "\n"  # 128 bytes in all, as numpy aligns them
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + data


# --------------------------------------------------------- 1. one checkpoint, two fits
RUN = """
import os, sys, time
import torch
torch.set_num_threads(1)
from msr_sklearn import MetaSymmetryLearner
from msr_sklearn.datasets import make_translation_tasks
from msr_sklearn.training import Callback
from msr_sklearn.training.callbacks import Checkpoint

path, started, go_on = sys.argv[1:4]

class Handshake(Callback):  # holds the first fit at step 2 until the second one is done
    def on_step_end(self, trainer):
        if trainer.step == 2 and go_on != "-":
            open(started, "w").close()
            deadline = time.monotonic() + 120
            while not os.path.exists(go_on) and time.monotonic() < deadline:
                time.sleep(0.01)

X, y = make_translation_tasks(n_tasks=40, n_samples=8, n_features=10, random_state=0)
try:
    MetaSymmetryLearner(**{params!r}, callbacks=[
        Handshake(), Checkpoint(path, interval=1, resume=True)]).fit(X, y)
except ValueError as exc:
    print(exc)
    sys.exit(3)
"""


def test_a_second_fit_on_a_checkpoint_in_use_is_refused_and_the_first_is_unharmed(
        tasks, reference, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(RUN).replace("{params!r}", repr(Q)))
    path, started, go_on = tmp_path / "run.msr", tmp_path / "started", tmp_path / "go_on"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen([sys.executable, str(script), str(path), str(started),
                              str(go_on)], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not started.exists():  # the first fit holds the checkpoint, mid-run
            assert first.poll() is None, first.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # the same call in a second process: refused at once, naming the holder
        second = subprocess.run([sys.executable, str(script), str(path), "-", "-"], env=env,
                                cwd=ROOT, capture_output=True, timeout=120)
        assert second.returncode == 3, second.stderr.decode()
        message = second.stdout.decode()
        assert f"is in use by another fit (process {first.pid})" in message
        assert "give this fit another checkpoint_path" in message
        assert read_checkpoint(path)[1]["trainer"]["step"] == 2  # untouched by the second
    finally:
        go_on.touch()
        assert first.wait(timeout=120) == 0, first.stderr.read().decode()
    # the first ran to its end: its checkpoint is whole, and no lock or temporary is left
    symmetry, state = read_checkpoint(path)
    assert state["trainer"]["finished"] and symmetry == reference.symmetry_
    assert sorted(os.listdir(tmp_path)) == ["go_on", "run.msr", "run.py", "started"]


def test_the_lock_refuses_in_the_same_process_and_is_released_after_a_failed_fit(
        tasks, tmp_path):
    path = tmp_path / "run.msr"
    with checkpoint_lock(path):
        with pytest.raises(ValueError, match=r"in use by another fit \(this process\)"):
            MetaSymmetryLearner(**Q, callbacks=[Checkpoint(path)]).fit(*tasks)
    assert not path.exists()
    with pytest.raises(RuntimeError, match="crash"):
        MetaSymmetryLearner(**Q, callbacks=[Crash(3), Checkpoint(path, interval=1)]).fit(*tasks)
    assert sorted(os.listdir(tmp_path)) == ["run.msr"]  # the lock went with the fit
    resumed = MetaSymmetryLearner(**Q, callbacks=[Checkpoint(path, resume=True)]).fit(*tasks)
    assert resumed.n_iter_ == 5


# ------------------------------------------------------------------- 2. planted links
@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_planted_links_are_never_followed(tasks, reference, tmp_path, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    path = tmp_path / "run.msr"
    # the old fixed temporary name, and the next name mkstemp will try
    (tmp_path / "run.msr.tmp").symlink_to(victim)
    (tmp_path / ".run.msr.aaaaaaaa.tmp").symlink_to(victim)
    names = iter(["aaaaaaaa", "bbbbbbbb", "cccccccc", "dddddddd"])
    monkeypatch.setattr(tempfile, "_get_candidate_names", lambda: names)
    reference.symmetry_.save(path)
    monkeypatch.undo()
    assert LearnedSymmetry.load(path) == reference.symmetry_
    assert victim.read_text() == "precious"
    assert (tmp_path / ".run.msr.aaaaaaaa.tmp").is_symlink()  # O_EXCL: it took another
    # a planted lock file link: refused, the target untouched
    other = tmp_path / "other.msr"
    (tmp_path / "other.msr.lock").symlink_to(victim)
    with pytest.raises(ValueError, match="lock file .* is a symbolic link"):
        MetaSymmetryLearner(**Q, callbacks=[Checkpoint(other)]).fit(*tasks)
    assert victim.read_text() == "precious" and not other.exists()


# ------------------------------------------------------------------------ 3. zip bomb
def _zip_with(path, files, name, stream, crc, size):
    """A zip of ``files`` plus member ``name``: an already deflated ``stream``."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for n, data in files.items():
            zf.writestr(n, data)
    data = path.read_bytes()
    end = data.rindex(b"PK\x05\x06")
    n, cd_size, cd_offset = struct.unpack("<HII", data[end + 10:end + 20])
    raw = name.encode()
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(stream),
                        size, len(raw), 0) + raw
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc,
                          len(stream), size, len(raw), 0, 0, 0, 0, 0, cd_offset) + raw
    directory = data[cd_offset:cd_offset + cd_size] + central
    tail = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n + 1, n + 1, len(directory),
                       cd_offset + len(local) + len(stream), 0)
    path.write_bytes(data[:cd_offset] + local + stream + directory + tail)


def _bomb(descr, n):
    """A real deflate stream of an .npy of ``n`` zeros (~1 KiB per MiB)."""
    itemsize = np.dtype(descr).itemsize
    header = raw_npy(descr, (n,))
    chunk = bytes(1 << 20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = compressor.compress(header) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    repeats = n * itemsize // len(chunk)
    stream = head + block * repeats + compressor.flush()
    crc = zlib.crc32(header)
    for _ in range(repeats):
        crc = zlib.crc32(chunk, crc)
    return stream, crc, len(header) + n * itemsize


@pytest.mark.parametrize("descr, n, message", [
    # the issue's: 2**28 float64 (2 GiB), over the cap on a member's declared size
    ("<f8", 2**28, "declares 2147483776 bytes; the limit is"),
    # under the cap (256 MiB): its .npy header is read and its shape refused
    ("<f4", 2**26, r"holds an array of shape \(67108864,\), but \(\d+,\) was expected"),
])
def test_a_zip_bomb_is_refused_from_its_sizes_before_it_is_decompressed(
        symmetry_file, descr, n, message):
    stream, crc, size = _bomb(descr, n)
    assert len(stream) < 1100 * (size >> 20) + 4096  # ~1 KiB per MiB
    files = members(symmetry_file)
    name = "arrays/shared.0-weight.filters.npy"
    del files[name]
    _zip_with(symmetry_file, files, name, stream, crc, size)
    assert zipfile.ZipFile(symmetry_file).getinfo(name).file_size == size
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ValueError, match=message):
            LearnedSymmetry.load(symmetry_file)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0 and peak < 20 * 2**20, (elapsed, peak)
    assert (size > MAX_MEMBER_BYTES) == (descr == "<f8")


def test_an_npy_header_claiming_a_terabyte_is_a_clear_error(symmetry_file):
    rewrite(symmetry_file, {"arrays/shared.0-weight.filters.npy": raw_npy("<f4", (2**38,))})
    with pytest.raises(ValueError, match="cannot read a LearnedSymmetry from .*'arrays/shared"
                                         r".0-weight.filters.npy' holds an array of shape"):
        LearnedSymmetry.load(symmetry_file)
    # where no shape is expected, the header's size against the member's
    path = symmetry_file.with_name("x.zip")
    write_archive(path, {"x.npy": raw_npy("<f4", (2**38,))})
    from msr_sklearn.persistence import read_archive
    with pytest.raises(ValueError, match=r"declares 128 bytes, but its header describes "
                                         r"1099511627904"):
        with read_archive(path, "test file") as archive:
            archive.array("x.npy")


# ------------------------------------------------------- 4. corrupt files, odd metadata
def _deep(depth):
    return "[" * depth + "]" * depth


HOSTILE = {
    "unknown compression": None,  # set in the test: method 99 in the central directory
    "encrypted flag": None,
    "not utf-8": {"meta.json": b"\xff\xfe{}"},
    "deep nesting": {"meta.json": _deep(100_000).encode()},
    "nesting over the limit": {"meta.json": json.dumps({"a": json.loads(_deep(80))}).encode()},
    "meta is a list": {"meta.json": b"[1, 2]"},
    "repeated key": {"meta.json": b'{"format": 1, "format": 2}'},
    "absolute member": {"/etc/passwd": b"x"},
    "dot-dot member": {"arrays/../../x.npy": b"x"},
    "unknown member": {"notes.txt": b"hello"},
    "unlisted array": {"arrays/extra.npy": npy(np.zeros(2, np.float32))},
    "object array": {"arrays/shared.0-weight.filters.npy": npy(np.array([None, 1], dtype=object))},
    "complex array": {"arrays/shared.0-weight.filters.npy": npy(np.zeros(2, np.complex64))},
    "float64 array": {"arrays/shared.0-weight.filters.npy": npy(np.zeros(2))},
    "wrong shape": {"arrays/shared.0-weight.filters.npy": npy(np.zeros(3, np.float32))},
    "negative shape": {"arrays/shared.0-weight.filters.npy": raw_npy("<f4", (-3,))},
    "nan array": {"arrays/shared.0-weight.filters.npy": npy(np.full(2, np.nan, np.float32))},
    "not npy": {"arrays/shared.0-weight.filters.npy": b"\x93NUMPY garbage"},
    "missing array": {"arrays/shared.0-weight.filters.npy": None},
}
ODD_META = {
    "module is a list": (("module",), [1, 2]),
    "input_shape a string": (("input_shape",), "10"),
    "input_shape negative": (("input_shape",), [-10]),
    "input_shape huge": (("input_shape",), [10**12]),
    "zero outputs": (("n_outputs",), 0),
    "hidden sizes nested": (("module", "params", "hidden_layer_sizes"), [[4]]),
    "activation unknown": (("module", "params", "activation"), "evil"),
    "unknown module setting": (("module", "params", "evil"), 1),
    "unknown model": (("module", "name"), "Evil"),
    "user code without permission": (("module",), {"kind": "class", "path": "os:system",
                                                   "params": {}}),
    "unknown sharing": (("policy", "0.weight", "kind"), "evil"),
    "a role that is none": (("policy", "0.bias"), "learned"),
    "k above the weights": (("policy", "0.weight", "n_filters"), 10**9),
    "feature names of another length": (("feature_names",), ["a"]),
    "inner lr nan": (("inner_lrs", "0.weight.filters"), float("nan")),
    "inner lr infinite": (("inner_lrs", "0.weight.filters"), float("inf")),
    "inner lr a string": (("inner_lrs", "0.weight.filters"), "0.1"),
    "inner lr for nothing": (("inner_lrs", "9.weight.filters"), 0.1),
    "objective": (("objective",), 3),
    "inner steps": (("inner_steps",), True),
    "array key escapes": (("arrays",), ["../../x"]),
    "arrays not a list": (("arrays",), {"a": 1}),
    "extra key": (("evil",), 1),
    "version": (("version",), 99),
}


def _set(meta, keys, value):
    target = meta
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value
    return meta


@pytest.mark.parametrize("case", sorted(HOSTILE) + sorted(ODD_META))
def test_a_hostile_or_corrupt_file_is_a_valueerror_naming_the_file(symmetry_file, case):
    if case in ODD_META:
        rewrite(symmetry_file, meta=lambda m: _set(m, *ODD_META[case]))
    elif case in ("unknown compression", "encrypted flag"):
        data = bytearray(symmetry_file.read_bytes())
        at = data.index(b"PK\x01\x02")  # the first member's central directory entry
        if case == "unknown compression":
            data[at + 10:at + 12] = struct.pack("<H", 99)
        else:
            data[at + 8] |= 1
        symmetry_file.write_bytes(bytes(data))
    else:
        rewrite(symmetry_file, HOSTILE[case])
    with pytest.raises(ValueError, match=r"^cannot read a LearnedSymmetry from '.*sym.msr': ") as e:
        LearnedSymmetry.load(symmetry_file)
    assert len(str(e.value)) < 2000


def test_version_1_files_still_load_and_missing_files_are_filenotfound(tmp_path):
    symmetry = LearnedSymmetry.load(ROOT / "tests" / "data" / "learned_symmetry_v1.msr")
    assert symmetry.module.cls.__name__ == "MLP" and symmetry.inner_steps == 2
    with pytest.raises(FileNotFoundError, match="no LearnedSymmetry file"):
        LearnedSymmetry.load(tmp_path / "nope.msr")
    with pytest.raises(FileNotFoundError, match="no training checkpoint file"):
        read_checkpoint(tmp_path)  # a directory is no file either


V2_FIXTURES = sorted((ROOT / "tests" / "data" / "v2").glob("*.msr"))


@pytest.mark.parametrize("path", V2_FIXTURES, ids=[p.stem for p in V2_FIXTURES])
def test_version_2_files_load_and_reproduce_their_release(path):
    """Each file of the last release before module= (one per architecture its flags
    could spell) loads into today's modules and adapts to the outputs that release
    computed (tests/data/README.md)."""
    from msr_sklearn.data.batch import TaskBatch
    from msr_sklearn.engine import InnerLoop, adapted_outputs

    assert len(V2_FIXTURES) == 10
    expected = np.load(path.parent / "expected.npz")
    x = torch.from_numpy(expected[f"{path.stem}/x"])
    y = torch.from_numpy(expected[f"{path.stem}/y"])
    symmetry = LearnedSymmetry.load(path)
    assert symmetry.inner_steps == 2
    model = symmetry.build_model()
    loss = "cross_entropy" if symmetry.objective == "classification" else "mse"
    with torch.no_grad():
        initial = model(x[0])
    torch.testing.assert_close(initial.reshape(expected[f"{path.stem}/initial"].shape),
                               torch.from_numpy(expected[f"{path.stem}/initial"]),
                               rtol=1e-4, atol=1e-5)
    out = adapted_outputs(model, TaskBatch(x[:, :4], y[:, :4], x[:, 4:], y[:, 4:]),
                          InnerLoop(loss, steps=2))
    torch.testing.assert_close(out.reshape(expected[f"{path.stem}/out"].shape),
                               torch.from_numpy(expected[f"{path.stem}/out"]),
                               rtol=1e-4, atol=1e-5)


# ------------------------------------------------- 5. checkpoint content and fields
def _unfinished(tasks, tmp_path, interrupt_at):
    """A checkpoint at step 3 of 5: the run was interrupted after it."""
    path = tmp_path / "run.msr"
    interrupt_at(5)
    with pytest.warns(RuntimeWarning, match="interrupted"):
        MetaSymmetryLearner(**Q, callbacks=[Checkpoint(path, interval=3)]).fit(*tasks)
    interrupt_at(None)
    assert read_checkpoint(path)[1]["trainer"]["step"] == 3
    return path


def _nan_moment(state):
    state["trainer"]["optimizer"]["0"]["exp_avg"][0, 0] = float("nan")


def _swap_moments(state):
    optimizer = state["trainer"]["optimizer"]
    optimizer["0"], optimizer["1"] = optimizer["1"], optimizer["0"]


def _negative_second_moment(state):
    state["trainer"]["optimizer"]["1"]["exp_avg_sq"][:] = -1.0


def _history_row_short(state):
    state["trainer"]["history"] = {k: v[:-1] for k, v in state["trainer"]["history"].items()}


def _model_shape(state):
    model = state["trainer"]["model"]
    model["inner_lrs"] = torch.zeros(7)


CONTENT = {
    "finished at step 3 of 5": (lambda s: s["trainer"].update(finished=True),
                                "it says the fit finished, but after 3 of its 5 meta-steps"),
    "stopped without a reason": (lambda s: s["trainer"].update(finished=True,
                                                                stop_training=True),
                                 "no divergence, early stop or callback of the user's"),
    "nan in adam's moments": (_nan_moment, "holds NaN or infinite values"),
    "moments of another parameter": (_swap_moments, r"moments of shapes"),
    "negative second moment": (_negative_second_moment, "negative values"),
    "history shorter than step": (_history_row_short, "its history has columns of"),
    "model tensor of another shape": (_model_shape, r"holds an array of shape \(7,\)"),
    "unknown model tensor": (lambda s: s["trainer"]["model"].update(evil=torch.zeros(1)),
                             "tensor 'trainer.model.evil', which the model"),
    "missing model tensor": (lambda s: s["trainer"]["model"].pop("inner_lrs"),
                             "its trainer.model has the tensors"),
    "generator of floats": (lambda s: s["trainer"].update(generator=torch.zeros(5056)),
                            "has dtype '<f4', but '|u1' was expected"),
    "negative step": (lambda s: s["trainer"].update(step=-1), "is at step -1"),
    "huge step, no history": (lambda s: (s["trainer"].update(step=10**15, fit_start=10**15,
                                                             history={}),
                                         s["info"].update(fit_start=10**15)),
                              r"history has columns of \[\] rows .* at step 1000000000000000"),
    "step a string": (lambda s: s["trainer"].update(step="3"), "trainer.step='3', not an int"),
    "finished an int": (lambda s: s["trainer"].update(finished=1),
                        "trainer.finished=1, not a bool"),
    "no seed": (lambda s: s["info"].pop("seed"), "lacks 'info.seed'"),
    "settings a list": (lambda s: s["info"].update(settings=[1]), "info.settings=.*not a dict"),
    "nan early-stopping loss": (
        lambda s: s["trainer"]["callbacks"].update(EarlyStopping={
            "best_loss": float("nan"), "best_step": 1, "wait": 0, "best_state": None}),
        "its EarlyStopping state"),
}


@pytest.mark.parametrize("case", sorted(CONTENT))
def test_a_checkpoint_whose_content_does_not_hold_is_refused_and_never_overwritten(
        tasks, tmp_path, interrupt_at, case):
    path = _unfinished(tasks, tmp_path, interrupt_at)
    edit, message = CONTENT[case]
    edit_state(path, edit)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=message) as error:
        MetaSymmetryLearner(**Q, callbacks=[Checkpoint(path, resume=True)]).fit(*tasks)
    assert str(error.value).startswith(f"cannot read a training checkpoint from '{path}'")
    assert str(error.value).endswith("delete the file, or set resume=False to start afresh "
                                     "(which overwrites it)")
    assert path.read_bytes() == before  # a NaN state is never written back over it


def test_the_checkpoints_of_stopped_runs_resume_as_finished(tasks, tmp_path):
    """The cross-checks refuse no checkpoint a run writes: a diverged run, early stopping."""
    path = tmp_path / "diverged.msr"
    params = dict(Q, n_meta_steps=50, meta_lr=1e6, inner_lr=50.0, meta_lr_schedule="constant")
    with pytest.warns(RuntimeWarning, match="non-finite"):
        first = MetaSymmetryLearner(**params, callbacks=[Checkpoint(path)]).fit(*tasks)
    state = read_checkpoint(path)[1]
    assert state["trainer"]["stop_training"] and first.n_iter_ < 50
    check_training_state(state)
    again = MetaSymmetryLearner(**params, callbacks=[Checkpoint(path, resume=True)]).fit(*tasks)
    assert again.n_iter_ == first.n_iter_
    path = tmp_path / "early.msr"
    params = dict(Q, n_meta_steps=1000, validation_fraction=0.2, validation_interval=2)
    early = EarlyStopping(n_iter_no_change=2, tol=1.0)
    first = MetaSymmetryLearner(**params, callbacks=[early, Checkpoint(path)]).fit(*tasks)
    assert first.n_iter_ < 1000
    again = MetaSymmetryLearner(**params, callbacks=[
        early, Crash(0), Checkpoint(path, resume=True)]).fit(*tasks)
    assert again.symmetry_ == first.symmetry_


# ----------------------------------------------------------- 10. checkpoint location
class Started(Callback):
    def on_train_begin(self, trainer):
        raise AssertionError("training started before the location was checked")


def test_a_missing_directory_fails_before_training(tasks, tmp_path):
    path = tmp_path / "no" / "run.msr"
    with pytest.raises(FileNotFoundError, match=r"the directory '.*no' does not exist"):
        MetaSymmetryLearner(**Q, callbacks=[Started(), Checkpoint(path)]).fit(*tasks)


def test_an_unwritable_location_fails_before_training(tasks, tmp_path, monkeypatch):
    import msr_sklearn.persistence.checkpoint as module

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(module.tempfile, "mkstemp", read_only)
    with pytest.raises(OSError, match=r"cannot create files in .*Read-only file system") as e:
        MetaSymmetryLearner(**Q, callbacks=[Started(), Checkpoint(tmp_path / "run.msr")]).fit(*tasks)
    assert e.value.errno == errno.EROFS


def test_a_full_disk_names_the_path_and_keeps_the_previous_file(tasks, checkpoint,
                                                                 monkeypatch):
    before = checkpoint.read_bytes()

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(zipfile.ZipFile, "writestr", full)
    with pytest.raises(OSError, match=re.escape(f"cannot write '{checkpoint}': No space "
                                                "left")) as e:
        MetaSymmetryLearner(**{**Q, "n_meta_steps": 6}, callbacks=[Checkpoint(checkpoint, interval=2)]).fit(*tasks)
    assert e.value.errno == errno.ENOSPC
    with pytest.raises(OSError, match="cannot write '.*sym.msr': No space left"):
        LearnedSymmetry.load(checkpoint).save(checkpoint.with_name("sym.msr"))
    assert checkpoint.read_bytes() == before
    assert sorted(os.listdir(checkpoint.parent)) == ["run.msr"]  # no temporary file left


@pytest.mark.parametrize("kind", ["unrelated", "saved symmetry", "directory"])
def test_resume_false_never_overwrites_a_file_that_is_not_a_checkpoint(tasks, reference,
                                                                        tmp_path, kind):
    path = tmp_path / "results.msr"
    if kind == "unrelated":
        path.write_text("three weeks of results")
    elif kind == "saved symmetry":
        reference.symmetry_.save(path)
    else:
        path.mkdir()
    before = None if kind == "directory" else path.read_bytes()
    match = {"unrelated": "is not a training checkpoint of msr_sklearn; this fit would "
                          "overwrite it: move or delete the file",
             "saved symmetry": r"a LearnedSymmetry file \(LearnedSymmetry.save\)",
             "directory": "is a directory"}[kind]
    with pytest.raises(ValueError, match=match):
        MetaSymmetryLearner(**Q, callbacks=[Started(), Checkpoint(path)]).fit(*tasks)
    if before is not None:
        assert path.read_bytes() == before


def test_resume_false_overwrites_a_checkpoint_or_an_empty_file(tasks, checkpoint, tmp_path):
    assert checkpoint_file_kind(checkpoint) == "checkpoint"
    edit_state(checkpoint, lambda s: s["trainer"].update(step=1))  # any checkpoint of ours
    MetaSymmetryLearner(**Q, callbacks=[Checkpoint(checkpoint)]).fit(*tasks)
    assert read_checkpoint(checkpoint)[1]["trainer"]["step"] == 5
    empty = tmp_path / "empty.msr"
    empty.touch()
    check_checkpoint_location(empty, resume=False)
    truncated = tmp_path / "truncated.msr"
    truncated.write_bytes(checkpoint.read_bytes()[:300])
    assert checkpoint_file_kind(truncated) == "damaged"
    check_checkpoint_location(truncated, resume=False)


# -------------------------------------------------------------------------- fuzzing
def _same_tree(a, b):
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(
            _same_tree(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same_tree, a, b))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return (isinstance(b, np.ndarray) and a.dtype == b.dtype
                and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
    return type(a) is type(b) and (a == b or (a != a and b != b))


def fuzz(path, load, same, n_flips, seed):
    """Flip one byte at a time: (documented errors, identical loads, changed loads,
    other exception types)."""
    original = path.read_bytes()
    rng = np.random.default_rng(seed)
    refused = identical = 0
    changed, others = [], []
    damaged = path.with_name("flipped" + path.suffix)
    for _ in range(n_flips):
        data = bytearray(original)
        at = int(rng.integers(len(data)))
        data[at] ^= int(rng.integers(1, 256))
        damaged.write_bytes(bytes(data))
        try:
            loaded = load(damaged)
        except ValueError:
            refused += 1
            continue
        except Exception as exc:  # noqa: BLE001 - what the test counts
            others.append((at, type(exc).__name__, str(exc)[:200]))
            continue
        if same(loaded):
            identical += 1
        else:
            changed.append(at)
    return refused, identical, changed, others


def test_fuzzed_files_never_load_changed_content_or_raise_undocumented_types(
        symmetry_file, checkpoint, reference):
    refused, identical, changed, others = fuzz(
        symmetry_file, LearnedSymmetry.load, lambda s: s == reference.symmetry_, 300, seed=0)
    assert (changed, others) == ([], []) and refused > 250, (refused, identical)
    symmetry, state = read_checkpoint(checkpoint)

    def load(path):
        loaded = read_checkpoint(path)
        check_training_state(loaded[1])
        return loaded

    refused, identical, changed, others = fuzz(
        checkpoint, load, lambda s: s[0] == symmetry and _same_tree(s[1], state), 200, seed=1)
    assert (changed, others) == ([], []) and refused > 170, (refused, identical)
