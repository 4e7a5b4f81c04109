"""Aug-Glyphs few-shot benchmark: Conv-4 with MAML, augmentation, MSR, and the exact D4 oracle.

The Aug-Omniglot protocol of the MSR paper on
:func:`msr_sklearn.datasets.load_aug_glyphs_tasks` (1,087 font-rendered letter classes,
28×28, meta-train Latin, meta-test Cyrillic / Armenian / Georgian): N-way 1-shot
episodes whose support images are clean and whose query images are transformed by a
random element of D4. Meta-training draws fresh episodes at every step (5 query images
per class); the test episodes are fixed and the same for every row.

Every image is zero-padded by 2 pixels to 32×32 for every row: four 2×2 max-pools then
tile the maps evenly (32 → 16 → 8 → 4 → 2). At 28×28 the third pool drops a row and a
column (7 → 3) and the fourth keeps the top-left 2×2 of 3×3, which no filter sharing
can make D4-invariant.

Rows (one inner step; each row's initial ``inner_lr`` tuned on the meta-validation
split over :data:`INNER_LR_GRID`, the same grid for every row, see :func:`tune_inner_lr`;
meta-lr and every other setting at the library's defaults):

- ``MAML-Conv4``: :class:`~msr_sklearn.models.Conv4` (32 channels, batch statistics
  per task), ``layer="dense"``: every weight adapted as is.
- ``MAML-Conv4 + aug. support``: the same, meta-trained on episodes whose support is
  D4-augmented too (the data-augmentation baseline); tested like every other row.
- ``MSR-Conv``: the Conv-4's default MSR policy with fields of 8 copies: a learned
  ``ConvFilterSharing(n_copies=8)`` on every convolution (after the first, reading its
  input in fields of 8: ``couple_copies``, see :data:`COUPLE_COPIES`) and a learned
  dense sharing on the head with :data:`HEAD_FILTERS_PER_WAY` filter values per way
  (an exactly invariant head on the 2×2 maps of 4 regular fields needs 16).
- ``MSR-FC head``: the Conv-4 with plain convolutions and the same learned dense head
  sharing.
- ``Oracle: exact D4 group conv``: :class:`~msr_sklearn.models.ConvNet` shaped as the
  Conv-4 (3×3 convolutions with padding 1, group norm, ReLU, 2×2 max-pool) with
  :data:`ORACLE_CHANNELS` channels in regular D4 fields of 8, every convolution fixed
  to the exact lifting / group-convolution sharing, one bias per field, norm scales
  frozen at 1 and 0 (a per-channel scale would break the symmetry), the mean over
  each field (invariant features) and a plain linear head: exactly D4-invariant.

Reported per row (mean ± 95% CI over training seeds; each seed's value is its mean over
the test episodes): accuracy on 1-shot episodes with augmented queries (the protocol),
with clean queries, on 5-shot episodes (the same 1-shot-trained model adapting on 5
support images per class); the output invariance (share of query images whose label is
the same under all 8 D4 transforms, through ``learner.make_estimator().fit(support)``);
per shared weight what :func:`~msr_sklearn.inspection.symmetry_report` names and its D4
error (the larger of the rot90 and flip scores); the D4 error of every convolution's
meta-learned initial filters up to a relabelling of channels; and the wall time.

Run: ``python benchmarks/glyphs.py [--ways 5 20] [--quick]``; writes
``benchmarks/results/glyphs.md`` and ``.csv``. GPU entry point: :func:`run_row`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _glyph_measures import (episode_accuracy, estimator_invariance,  # noqa: E402
                             initial_filter_errors, layer_reports)
from _real_images import cpu_settings, header, parser, pm  # noqa: E402
from _report import RESULTS, map_single_threaded, write_results  # noqa: E402

from msr_sklearn import MetaSymmetryLearner  # noqa: E402
from msr_sklearn.data.streams import TaskStream  # noqa: E402
from msr_sklearn.datasets import load_aug_glyphs_tasks  # noqa: E402
from msr_sklearn.models import Conv4, ConvNet  # noqa: E402
from msr_sklearn.sharing import (ConvFilterSharing, DenseSharing,  # noqa: E402
                                 exact_group_conv_sharing, exact_lifting_sharing)

ROWS = ("MAML-Conv4", "MAML-Conv4 + aug. support", "MSR-Conv", "MSR-FC head",
        "Oracle: exact D4 group conv")
PAD, CHANNELS, N_COPIES, N_QUERY = 2, 32, 8, 5
#: the second to fourth MSR-Conv layers read their input in fields of 8 copies
COUPLE_COPIES = True
#: learned head sharing: filter values per way
HEAD_FILTERS_PER_WAY = 16
#: the oracle's channels (regular D4 fields of 8): its invariant features are the
#: last layer's fields, so the last layer is wider
ORACLE_CHANNELS = (32, 32, 64, 128)
#: the initial inner rate of every row when no grid is tuned (learned per tensor from there)
INNER_LR = 0.4
#: the initial inner rates tried for every row (:func:`tune_inner_lr`): the same tuning
#: for the baselines as for MSR, chosen on the meta-validation split (Greek letters)
INNER_LR_GRID = (0.03, 0.1, 0.4, 1.0)
#: the tuning fits: 5-way, seed 0, meta-batch 4, 300 meta-steps, 100 validation episodes
TUNE = dict(n_way=5, meta_batch_size=4, n_meta_steps=300, n_val=100)
#: the CPU settings per way (the paper's meta-batch is 32: ``--meta-batch-size 32``)
CPU = {5: dict(meta_batch_size=8, n_meta_steps=1000),
       20: dict(meta_batch_size=4, n_meta_steps=600)}
N_TEST, N_INVARIANCE, TEST_SEED, VAL_SEED = 600, 100, 10_000, 20_000
#: the tuning fits of the last run (``--reuse-tuning`` and :func:`saved_rates` read it)
TUNING_CSV = RESULTS / "glyphs_tuning.csv"
#: the tuning fits of a ``--fixed-inner-lr`` run (rates not learned)
TUNING_CSV_FIXED = RESULTS / "glyphs_tuning_fixed_rate.csv"


def pad(tasks, pad=PAD):
    """Image tasks with ``pad`` zero pixels added on every side."""
    width = ((0, 0), (0, 0), (pad, pad), (pad, pad))
    return [(np.pad(X, width), y) for X, y in tasks]


def episodes(n_tasks, n_way, n_shot=1, split="train", augment=("rot90", "flip"),
             augment_support=False, random_state=None, **kwargs):
    """Padded Aug-Glyphs episodes (support rows first)."""
    return pad(load_aug_glyphs_tasks(n_tasks, n_way=n_way, n_shot=n_shot, n_query=N_QUERY,
                                     split=split, augment=augment,
                                     augment_support=augment_support,
                                     random_state=random_state, **kwargs))


def training_stream(n_way, augment_support=False, **kwargs):
    """Fresh meta-training episodes at every step."""
    def draw(n_tasks, rng):
        return episodes(n_tasks, n_way, augment_support=augment_support,
                        random_state=int(rng.integers(2 ** 31)), **kwargs)
    return TaskStream(draw)


def exact_d4_sharings(net, learnable=False):
    """The exact D4 sharing of every convolution of ``net`` (regular fields of
    :data:`N_COPIES`): the lifting sharing on the first, the group convolution between
    regular fields on the others, sized from each convolution; ``learnable``: the outer
    loop may move them (a D4 start)."""
    policy = {}
    for i, (name, conv) in enumerate(net.convolutions.items()):
        out, kernel = conv.out_channels // N_COPIES, conv.kernel_size[0]
        policy[f"{name}.weight"] = (
            exact_lifting_sharing("d4", out, conv.in_channels, kernel, learnable=learnable)
            if i == 0 else exact_group_conv_sharing("d4", out, conv.in_channels // N_COPIES,
                                                    kernel, learnable=learnable))
    return policy


def oracle_policy(channels=ORACLE_CHANNELS, in_channels=1, learned=None):
    """The exact D4 sharings of the oracle's convolutions, its norm scales frozen.

    ``learned="d4"``: the same sharings, learnable (the outer loop may move them);
    ``learned="random"``: a learned MSR-Conv sharing of the same fields from a random
    start instead; the rest of the oracle's network unchanged either way."""
    net = ConvNet(**oracle_module(channels), input_shape=(in_channels, 32, 32), n_outputs=2)
    if learned == "random":
        policy = {f"{name}.weight": ConvFilterSharing(N_COPIES, N_COPIES if i else 1)
                  for i, name in enumerate(net.convolutions)}
    else:
        policy = exact_d4_sharings(net, learnable=learned == "d4")
    for name, m in net.features.named_children():
        if isinstance(m, nn.GroupNorm):
            policy.update({f"features.{name}.weight": "frozen",
                           f"features.{name}.bias": "frozen"})
    return policy


def oracle_module(channels=ORACLE_CHANNELS):
    """ConvNet parameters of the oracle (the Conv-4's blocks in regular D4 fields)."""
    return dict(channels=tuple(channels), kernel_size=3, padding=1, pool="max", norm="group",
                field_bias=True, n_copies=N_COPIES, couple_copies=True,
                global_pool="mean_fields")


def learner_params(row, n_way, n_copies=N_COPIES):
    """The network and policy of a row (``n_copies``: MSR-Conv's copies per field)."""
    conv4 = dict(module=Conv4, module__channels=CHANNELS)
    head = DenseSharing(HEAD_FILTERS_PER_WAY * n_way)
    if row in ("MAML-Conv4", "MAML-Conv4 + aug. support"):
        return dict(conv4, layer="dense")
    if row == "MSR-Conv":
        return dict(conv4, module__n_copies=n_copies, module__couple_copies=COUPLE_COPIES,
                    layer="msr", n_filters=HEAD_FILTERS_PER_WAY * n_way)
    if row == "MSR-FC head":
        return dict(conv4, sharing={"head.0.weight": head})
    if row == "Oracle: exact D4 group conv":
        return dict(module=ConvNet, **{f"module__{k}": v for k, v in oracle_module().items()},
                    sharing=oracle_policy())
    raise ValueError(f"row must be one of {ROWS}; got {row!r}")


def make_learner(row, n_way=5, inner_lr=INNER_LR, meta_batch_size=32, n_meta_steps=1000,
                 device="cpu", random_state=0, n_shot=1, params=None):
    """The learner of a row (``n_support`` N × K, the support rows first); ``params``
    (network and sharing) in place of the row's, for an ablation's variant."""
    params = learner_params(row, n_way) if params is None else params
    return MetaSymmetryLearner(**params, n_support=n_way * n_shot,
                               support_split="first", inner_lr=inner_lr,
                               meta_batch_size=meta_batch_size, n_meta_steps=n_meta_steps,
                               device=device, random_state=random_state)


def test_sets(n_way, n_test=N_TEST):
    """The fixed test episodes: augmented and clean queries after 1 shot, and 5 shots."""
    kw = dict(split="test", random_state=TEST_SEED + n_way)
    return {"aug": (episodes(n_test, n_way, **kw), n_way),
            "clean": (episodes(n_test, n_way, augment=(), **kw), n_way),
            "aug_5shot": (episodes(n_test, n_way, n_shot=5, **kw), 5 * n_way)}


def run_row(row, n_way=5, random_state=0, meta_batch_size=32, n_meta_steps=1000,
            inner_lr=INNER_LR, device="cpu", n_test=N_TEST, n_invariance=N_INVARIANCE,
            n_shot=1, params=None):
    """Meta-train one row and measure it (the function a GPU script calls).

    Parameters
    ----------
    row : str
        One of :data:`ROWS`.
    n_way : int, default=5
        Ways of the training and test episodes (5 and 20 in the benchmark).
    random_state : int, default=0
        Seeds the learner and its training episodes.
    meta_batch_size, n_meta_steps : int
        The paper's meta-batch is 32.
    inner_lr : float, default=INNER_LR
    device : str, default="cpu"
    n_test, n_invariance : int
        Test episodes, and how many of them go through ``make_estimator`` for the
        output invariance.
    n_shot : int, default=1
        Support images per class in the training episodes (1 or 5); every model is
        tested on the same 1-shot and 5-shot test episodes.
    params : dict or None, default=None
        Learner parameters (network and sharing) in place of the row's
        (:func:`learner_params`), e.g. MSR-Conv with other copies.

    Returns
    -------
    dict
        ``acc_aug``, ``acc_clean``, ``acc_aug_5shot`` (means over test episodes),
        ``invariant`` (share of invariant query predictions), ``estimator_acc_diff``
        (the largest per-episode difference between the estimators' accuracy and the
        engine's: 0 when they agree), ``report_<weight>``, ``d4_<weight>`` (the
        report's name and D4 error of each shared weight), ``w0_d4_<conv>`` (initial
        filters' D4 error), ``final_loss``, ``fit_seconds``.
    """
    learner, wall = fit_row(row, n_way, inner_lr, meta_batch_size, n_meta_steps, device,
                            random_state, n_shot, params)
    out = dict(row=row, n_way=n_way, n_shot=n_shot, seed=random_state,
               meta_batch_size=meta_batch_size,
               n_meta_steps=n_meta_steps, inner_lr=inner_lr, fit_seconds=wall,
               final_loss=final_loss(learner))
    tests = test_sets(n_way, n_test)
    for key, (tasks, n_support) in tests.items():
        out[f"acc_{key}"] = float(episode_accuracy(learner, tasks, n_support).mean())
    checked = tests["aug"][0][:n_invariance]
    accuracy, invariant = estimator_invariance(learner, checked, n_way)
    engine = episode_accuracy(learner, checked, n_way)
    out["invariant"] = float(invariant.mean())
    out["estimator_acc_diff"] = float(np.abs(accuracy - engine).max())
    for name, (group, rot, flip) in layer_reports(learner).items():
        out[f"report_{name}"], out[f"d4_{name}"] = group, max(rot, flip)
    for name, err in initial_filter_errors(learner).items():
        out[f"w0_d4_{name}"] = err
    return out


def fit_row(row, n_way, inner_lr, meta_batch_size, n_meta_steps, device, random_state,
            n_shot=1, params=None):
    """A row's learner meta-trained on fresh episodes, and the fit's wall seconds."""
    torch.manual_seed(random_state)
    learner = make_learner(row, n_way, inner_lr, meta_batch_size, n_meta_steps, device,
                           random_state, n_shot, params)
    stream = training_stream(n_way, augment_support=row.endswith("aug. support"),
                             n_shot=n_shot)
    wall = time.perf_counter()
    learner.fit(stream)
    return learner, time.perf_counter() - wall


def final_loss(learner):
    """The mean training loss of a fit's last 50 meta-steps."""
    return float(learner.history_["train_loss"].tail(50).mean())


def tune_inner_lr(row, inner_lr, n_way=TUNE["n_way"], random_state=0,
                  meta_batch_size=TUNE["meta_batch_size"], n_meta_steps=TUNE["n_meta_steps"],
                  n_val=TUNE["n_val"], device="cpu", params=None):
    """One tuning fit: a row at one initial inner rate, scored on fixed meta-validation
    episodes (augmented queries; the test split is never seen). Returns a dict."""
    learner, _ = fit_row(row, n_way, inner_lr, meta_batch_size, n_meta_steps, device,
                         random_state, params=params)
    return dict(row=row, inner_lr=inner_lr, n_way=n_way, seed=random_state,
                meta_batch_size=meta_batch_size, n_meta_steps=n_meta_steps, n_val=n_val,
                val_acc_aug=validation_accuracy(learner, n_way, n_val),
                final_loss=final_loss(learner))


def validation_accuracy(learner, n_way=5, n_val=TUNE["n_val"]):
    """Mean accuracy on the fixed meta-validation episodes (augmented queries)."""
    val = episodes(n_val, n_way, split="val", random_state=VAL_SEED + n_way)
    return float(episode_accuracy(learner, val, n_way).mean())


def best_rates(tuning):
    """Each row's initial inner rate of highest validation accuracy."""
    best = tuning.loc[tuning.groupby("row").val_acc_aug.idxmax()]
    return dict(zip(best.row, best.inner_lr))


def saved_rates():
    """The rates of the last tuning run (:data:`TUNING_CSV`); rows it did not
    tune (or all, with no file) at :data:`INNER_LR`."""
    rates = best_rates(pd.read_csv(TUNING_CSV)) if TUNING_CSV.exists() else {}
    return {row: rates.get(row, INNER_LR) for row in ROWS}


def _job(job):
    job = dict(job)
    return (tune_inner_lr if job.pop("tune", False) else run_row)(**job)


def _layers(rows, prefix):
    return sorted({c[len(prefix):] for c in rows.columns if c.startswith(prefix)},
                  key=lambda n: [int(t) if t.isdigit() else t for t in n.split(".")])


def report(rows, args, settings, tuning=None, rates=None):
    rates = rates or {}
    rate_text = (f"initial inner lr {next(iter(rates.values()))} for every row" if tuning is None
                 else "initial inner lr tuned per row, see below")
    learned = ("held fixed: learn_inner_lr=False" if args.fixed_inner_lr
               else "learned per tensor from there")
    lines = header("Aug-Glyphs few-shot: Conv-4 with MAML, augmentation, MSR, exact D4 oracle",
                   args, {"protocol": "clean support, D4-augmented queries, 5 query images "
                          "per class, fresh training episodes each step, images padded to "
                          f"32×32, 1 inner step, {rate_text} ({learned}), "
                          "every other setting at the library's defaults",
                          "settings": "; ".join(f"{k}-way: meta-batch {v['meta_batch_size']}, "
                                                f"{v['n_meta_steps']} meta-steps"
                                                for k, v in settings.items()),
                          "MSR-Conv": f"copies per field in every convolution: {args.msr_copies}"})
    lines += tuning_lines(tuning, rates, tuning_csv(args))
    for (n_way, n_shot), part in rows.groupby(["n_way", "n_shot"]):
        trained = "" if n_shot == 1 else f", trained on {n_shot}-shot episodes"
        lines += [f"## {n_way}-way{trained}", "",
                  "| row | initial inner lr | 1-shot, aug. queries (%) | 1-shot, clean (%) | "
                  "5-shot, aug. (%) | invariant predictions (%) | fit (min, wall) |",
                  "|" + "---|" * 7]
        for row in ROWS:
            r = part[part.row == row]
            if len(r):
                lines.append(f"| {row} | {r.inner_lr.iloc[0]:g} | {pm(r.acc_aug, 100)} | "
                             f"{pm(r.acc_clean, 100)} | "
                             f"{pm(r.acc_aug_5shot, 100)} | {pm(r.invariant, 100)} | "
                             f"{r.fit_seconds.mean() / 60:.1f} |")
        shared = _layers(part, "d4_")
        lines += ["", "Per layer: what `symmetry_report` names, and the D4 error of the "
                  "sharing (the larger of its rot90 / flip scores; 0 exact, ~1.4 unrelated; "
                  "mean over seeds; — where the network has no such shared weight); then "
                  "the D4 error of the meta-learned initial filters up to a relabelling of "
                  "channels.", "",
                  "| row | " + " | ".join(f"`{n}`" for n in shared) + " |",
                  "|" + "---|" * (1 + len(shared))]
        for row in ROWS:
            r = part[part.row == row]
            if not len(r):
                continue
            cells = []
            for n in shared:
                names = ", ".join(sorted(set(r[f"report_{n}"].dropna())))
                if not names:
                    cells.append("—")   # not in this network, or adapted as is
                elif r[f"d4_{n}"].isna().all():
                    cells.append(names)
                else:
                    cells.append(f"{names}: {r[f'd4_{n}'].mean():.2f}")
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
        convs = _layers(part, "w0_d4_")
        lines += ["", "| row | " + " | ".join(f"initial `{n}`" for n in convs) + " |",
                  "|" + "---|" * (1 + len(convs))]
        for row in ROWS:
            r = part[part.row == row]
            if len(r):
                lines.append(f"| {row} | " + " | ".join(
                    "—" if r[f"w0_d4_{n}"].isna().all() else f"{r[f'w0_d4_{n}'].mean():.2f}"
                    for n in convs) + " |")
        lines += [""] + (targets(part) if n_shot == 1 else []) + [""]
    return "\n".join(lines)


def targets(part):
    """Issue 20's item-5 targets on augmented 1-shot queries, met or missed."""
    acc = {row: part.loc[part.row == row, "acc_aug"].mean() * 100 for row in ROWS}
    msr = part[part.row == "MSR-Conv"]
    if not len(msr) or "report_features.0.weight" not in msr:
        return []
    first_err = msr["d4_features.0.weight"].mean()
    first_name = ", ".join(sorted(set(msr["report_features.0.weight"].dropna())))
    verdict = lambda ok: "met" if ok else "missed"  # noqa: E731

    def beside(text, other, least):
        """MSR-Conv's accuracy against ``other``'s: met when ahead by ``least`` points."""
        if np.isnan(acc[other]):
            return f"- {text}: not measured ({other} is not in this run)"
        diff = acc["MSR-Conv"] - acc[other]
        return (f"- {text}: {acc['MSR-Conv']:.1f} vs {acc[other]:.1f} ({diff:+.1f}): "
                f"{verdict(diff >= least)}")

    invariant = msr.invariant.mean() * 100
    return ["Targets (issue 20, item 5; means over seeds):", "",
            beside("MSR-Conv ≥ MAML-Conv4 + 5 points", "MAML-Conv4", 5),
            beside("MSR-Conv within 2 points of the oracle", "Oracle: exact D4 group conv", -2),
            f"- ≥ 90 % invariant predictions: {invariant:.1f} %: {verdict(invariant >= 90)}",
            f"- learned first layer with D4 error ≤ 0.3 that the report names: "
            f"{first_err:.2f}, named {first_name}: "
            f"{verdict(first_err <= 0.3 and first_name.startswith('D4'))}"]


def row_params(args, row, n_way):
    """The learner parameters the command line sets for a row (MSR-Conv's copies, a
    fixed inner rate), or None for the row's own (:func:`learner_params`)."""
    copies = args.msr_copies if row == "MSR-Conv" else N_COPIES
    if copies == N_COPIES and not args.fixed_inner_lr:
        return None
    params = learner_params(row, n_way, copies)
    return dict(params, learn_inner_lr=False) if args.fixed_inner_lr else params


def tuning_csv(args):
    """Where the tuning fits are kept: fixed-rate fits apart from the learned-rate ones."""
    return TUNING_CSV_FIXED if args.fixed_inner_lr else TUNING_CSV


def tuned_rates(args):
    """Each row's initial inner rate: the one value given, or the best of the grid on
    the validation episodes (tuning fits run here, or read back with ``--reuse-tuning``)."""
    grid, path = args.inner_lr_grid, tuning_csv(args)
    if len(grid) == 1:
        return {row: grid[0] for row in args.rows}, None
    if args.reuse_tuning and path.exists():
        tuning = pd.read_csv(path)
    else:
        jobs = [dict(tune=True, row=row, inner_lr=lr, device=args.device,
                     params=row_params(args, row, TUNE["n_way"]), **(
                         dict(meta_batch_size=2, n_meta_steps=3, n_val=4) if args.quick
                         else {}))
                for row in args.rows for lr in grid]
        tuning = pd.DataFrame(list(map_single_threaded(_job, jobs, args.n_jobs)))
        if not args.quick:
            tuning.to_csv(path, index=False)
    return best_rates(tuning), tuning


def tuning_lines(tuning, rates, path=TUNING_CSV):
    """The tuning table: validation accuracy of every row at every initial rate."""
    if tuning is None:
        return []
    grid = sorted(tuning.inner_lr.unique())
    t = tuning.iloc[0]
    lines = [f"## Initial inner rate, tuned per row (`{RESULTS.name}/{path.name}`)", "",
             f"{t.n_way}-way 1-shot, seed {t.seed}, meta-batch {t.meta_batch_size}, "
             f"{t.n_meta_steps} meta-steps; accuracy (%) on {t.n_val} fixed "
             "meta-validation episodes (Greek letters, augmented queries); the chosen "
             "rate in bold. Every row gets the same grid: the baselines are tuned as MSR is.",
             "", "| row | " + " | ".join(f"{lr:g}" for lr in grid) + " |",
             "|" + "---|" * (1 + len(grid))]
    for row in ROWS:
        r = tuning[tuning.row == row].set_index("inner_lr")
        if len(r):
            cells = [f"{100 * r.val_acc_aug[lr]:.1f}" if lr in r.index else "—" for lr in grid]
            cells = [f"**{c}**" if lr == rates.get(row) else c for c, lr in zip(cells, grid)]
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return lines + [""]


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--ways", type=int, nargs="+", default=[5, 20])
    p.add_argument("--rows", nargs="+", default=list(ROWS))
    p.add_argument("--shots", type=int, nargs="+", default=[1],
                   help="support images per class in the training episodes (default 1)")
    p.add_argument("--n-test", type=int, default=N_TEST, help="test episodes per set")
    p.add_argument("--n-invariance", type=int, default=N_INVARIANCE,
                   help="test episodes checked through make_estimator for invariance")
    p.add_argument("--inner-lr-grid", type=float, nargs="+", default=list(INNER_LR_GRID),
                   help="initial inner rates tuned per row on validation episodes; one "
                        "value: every row at it, no tuning (default: %(default)s)")
    p.add_argument("--reuse-tuning", action="store_true",
                   help="read the tuning fits from results/glyphs_tuning.csv if there")
    p.add_argument("--msr-copies", type=int, default=N_COPIES,
                   help="MSR-Conv's copies per field (default %(default)s)")
    p.add_argument("--fixed-inner-lr", action="store_true",
                   help="keep every row's inner rate at its initial value "
                        "(learn_inner_lr=False), in the tuning fits too")
    p.add_argument("--name", default=None,
                   help="results file name (default: glyphs, with the ways and shots "
                        "that differ from 5-way 1-shot)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    settings = {k: cpu_settings(args, CPU.get(k, CPU[5])) for k in args.ways}
    # a run without the 5-way 1-shot rows writes its own file (their table stays)
    name = "_".join(["glyphs"] + ([] if 5 in args.ways else [f"{k}way" for k in args.ways])
                    + ([] if args.shots == [1] else [f"{k}shot" for k in args.shots]))
    name = args.name or name
    n_test, n_inv = args.n_test, args.n_invariance
    if args.quick:
        settings = {k: dict(meta_batch_size=2, n_meta_steps=3) for k in args.ways}
        n_test, n_inv, name, args.seeds = 8, 2, "glyphs_quick", args.seeds[:1]
    rates, tuning = tuned_rates(args)
    jobs = [dict(row=row, n_way=k, random_state=s, device=args.device, n_test=n_test,
                 n_invariance=n_inv, inner_lr=rates[row], **settings[k])
            for k in args.ways for row in args.rows for s in args.seeds]
    jobs = [dict(job, n_shot=k, params=row_params(args, job["row"], job["n_way"]))
            for k in args.shots for job in jobs]
    rows = pd.DataFrame(list(map_single_threaded(_job, jobs, args.n_jobs)))
    write_results(name, report(rows, args, settings, tuning, rates), rows)


if __name__ == "__main__":
    main()
