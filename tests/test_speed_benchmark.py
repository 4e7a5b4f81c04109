"""The speed benchmark compares like with like: its per-task loop (the official code's
meta-step) and the engine, whole or chunked, take the same meta-step."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import speed  # noqa: E402

from msr_sklearn.engine import InnerLoop, MetaModel, make_meta_optimizer  # noqa: E402

ROW = "user CNN, 8×8, 16 channels"


def test_the_loop_and_the_engine_take_the_same_meta_step():
    make_net, make_policy, shape = speed.image_rows()[ROW]
    batch = speed.image_batches(shape, 1, torch.device("cpu"), n_tasks=4)[0]
    loop = InnerLoop("cross_entropy", steps=1)
    torch.manual_seed(0)
    net = make_net()
    model = MetaModel(net, make_policy(net), inner_lr=0.1,
                      generator=torch.Generator().manual_seed(0))
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    impls = speed.image_implementations(model, batch, loop)
    assert len(impls) == 3
    after = []
    for step, graph_bytes in impls.values():
        assert graph_bytes > 0
        model.load_state_dict(start)
        optimizer = make_meta_optimizer(model, 1e-3, meta_optimizer="adam")
        step(model, optimizer, batch, loop)
        after.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    moved = max(float((after[0][k] - start[k]).abs().max()) for k in start)
    assert moved > 1e-4  # the step changes the parameters ...
    for other in after[1:]:  # ... and every implementation changes them alike
        for k in start:
            torch.testing.assert_close(other[k], after[0][k], rtol=1e-4, atol=1e-6)


def test_time_images_reports_every_implementation_against_the_loop():
    table = speed.time_images(torch.device("cpu"), rounds=1, steps=1, rows=[ROW])
    assert len(table) == 3 and set(table.network) == {ROW}
    loop = table[table.implementation == "per-task loop (official)"]
    assert float(loop.speedup_vs_loop.iloc[0]) == pytest.approx(1.0)
    assert (table.s_per_step > 0).all() and (table.graph_MB_per_step > 0).all()


def test_kernel_shares_split_each_step_between_the_networks_kernels_and_the_rest():
    table = speed.kernel_shares(torch.device("cpu"), rows=[ROW])
    assert len(table) == 3 and set(table.network) == {ROW}
    assert ((table.network_kernel_share > 0.05) & (table.network_kernel_share < 1)).all()
    loop = table[table.implementation == "per-task loop (official)"].iloc[0]
    # the bound is the loop's time over its kernels' time, the same for every side
    assert table.speedup_bound.nunique() == 1
    assert loop.speedup_bound == pytest.approx(loop.profiled_s / loop.kernel_s)
    assert "| speed-up bound vs loop |" in speed.kernel_lines(table)[0]
