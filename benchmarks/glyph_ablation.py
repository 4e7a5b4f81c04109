"""Why MSR-Conv's learned sharing stays trivial on Aug-Glyphs: copies, coupling, start.

``benchmarks/glyphs.py`` found MSR-Conv's conv sharings named *trivial* after 6,400
training episodes (D4 error 1.30–1.38) and its accuracy no better than MAML's. This
study varies one thing at a time around that row, on the same Conv-4 (32 channels,
batch statistics per task), the same learned dense head sharing and the same protocol
(5-way 1-shot, clean support, D4-augmented queries, fresh training episodes), and
scores every variant on the fixed meta-validation episodes (Greek letters; the test
split is never seen), so that a choice made here cannot fit the test table:

- ``MSR-Conv (8 copies, coupled)``: the benchmark's row.
- ``8 copies, not coupled``: every convolution reads its input as plain channels.
- ``4 copies, coupled``, ``2 copies, coupled``: smaller fields (4 is the size of C4,
  not D4), so more fields and more filter values per layer.
- ``1 copy (A ⊗ B ⊗ S)``: no copies: a learned Kronecker factorization of each
  convolution's ``U`` over output channels, input channels and the 3×3 pixels, as
  many filter values as the plain convolution has weights (the structure of the
  third-party Aug-Omniglot re-implementation in ``shared/reference/anchors.md``).
- ``8 copies, coupled, identity start``: the copies of a field start equal.
- ``plain Adam (no trust region)``: the benchmark's row with ``meta_optimizer="adam"``
  (the paper's): the default ``"msr_adam"`` keeps every sharing's step within 1% of its
  norm, which may hold ``U`` near its random start.
- ``started at exact D4``: every conv sharing starts at the exact lifting / group
  convolution of D4 (fields of 8) and the outer loop may move it: does the meta-
  objective keep a D4 sharing it is handed, and what is it worth in this network?
- ``exact D4, fixed``: the same sharings with ``U`` frozen (the Conv-4's per-channel
  batch-norm scales and its flattening head are not invariant, so the network is not
  exactly invariant; the head's learned sharing can make it so).
- ``learned U in the oracle's network``: the oracle's network (regular fields of 8,
  one bias per field, norm scales frozen, the mean over each field, a linear head),
  its convolutions' exact D4 sharings replaced by learned MSR-Conv sharings of the
  same fields from a random start, at the oracle's tuned rate: in this network a D4
  sharing makes the predictions exactly invariant, so does the outer loop find it?
- ``oracle's network, started at exact D4``: the oracle with its exact sharings
  learnable: does the outer loop keep D4 where D4 makes the network invariant (in the
  Conv-4 it moves off it)?
- ``oracle (exact D4, fixed)``: the benchmark's oracle row, for the two above.
- ``started at exact D4, sharing steps ÷10`` and the same in the oracle's network: the
  D4 starts with every sharing's meta-step bounded at 0.1% of its norm instead of
  ``msr_adam``'s 1%. Adam normalizes each entry's step, so a large sharing tensor
  (the 576 × 72 factors) hits the bound and moves by the full 1% at nearly every step,
  noise or signal: does a D4 start drift because the objective pulls it off, or
  because of that step?
- ``MAML-Conv4``: the reference, at its own tuned rate.
- ``MAML-Conv4, 64 channels``: the baseline's own architecture choice, the width of
  the MAML paper's Omniglot Conv-4 (the MSR variants choose copies; this gives MAML
  a choice too).

Every MSR variant runs at MSR-Conv's tuned initial inner rate (1.0) but those in the
oracle's network (the oracle's, 0.4), MAML at its own (0.1), all read from
``results/glyphs_tuning.csv``; the variants were not tuned
separately. Reported per variant (mean ± 95% CI over seeds): validation accuracy, the
final training loss, the first convolution's and the worst convolution's D4 error as
:func:`~msr_sklearn.inspection.symmetry_report` scores it, and what it names the first.

Run: ``python benchmarks/glyph_ablation.py [--seeds 0 1 2] [--n-jobs 2]``; writes
``benchmarks/results/glyph_ablation.md`` and ``.csv``. With ``--test --variants ...``,
variants chosen here run on the *test* episodes at the main table's budget, measured
as ``glyphs.py`` measures its rows: ``glyph_ablation_test.md``.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _glyph_measures import layer_reports  # noqa: E402
from _real_images import cpu_settings, header, parser, pm  # noqa: E402
from _report import RESULTS, map_single_threaded, write_results  # noqa: E402
from glyphs import (CHANNELS, HEAD_FILTERS_PER_WAY, ROWS,  # noqa: E402
                    exact_d4_sharings, fit_row, final_loss, learner_params, oracle_policy,
                    run_row, saved_rates, validation_accuracy)

from msr_sklearn.engine import optim  # noqa: E402
from msr_sklearn.models import Conv4  # noqa: E402
from msr_sklearn.sharing import ConvFilterSharing, DenseSharing  # noqa: E402

#: a variant's suffix that bounds every sharing's meta-step at a tenth of the default
#: trust region (``msr_adam``'s :data:`~msr_sklearn.engine.optim.DEEP_TRUST_RATIO`, 1% of
#: the tensor's norm): whether a D4 start drifts by signal or by the fixed-size steps
SLOW = ", sharing steps ÷10"
VARIANTS = ("MSR-Conv (8 copies, coupled)", "8 copies, not coupled", "4 copies, coupled",
            "2 copies, coupled", "1 copy (A ⊗ B ⊗ S)",
            "8 copies, coupled, identity start", "plain Adam (no trust region)",
            "started at exact D4", "exact D4, fixed", "learned U in the oracle's network",
            "oracle's network, started at exact D4", "oracle (exact D4, fixed)",
            "started at exact D4" + SLOW, "oracle's network, started at exact D4" + SLOW,
            "MAML-Conv4", "MAML-Conv4, 64 channels")
#: the variants in the oracle's network: how their sharing is learned
#: (:func:`glyphs.oracle_policy`'s ``learned``)
IN_ORACLE = {"learned U in the oracle's network": "random",
             "oracle's network, started at exact D4": "d4",
             "oracle (exact D4, fixed)": None}
#: the MAML Conv-4's width in the MAML paper's Omniglot network (the benchmark's is 32)
WIDE = 64
#: 5-way, meta-batch 8, 400 meta-steps (3,200 episodes), 200 validation episodes
CPU = dict(meta_batch_size=8, n_meta_steps=400)
#: ``--test``: the main glyph table's budget (meta-batch 8, 800 meta-steps)
TEST_CPU = dict(meta_batch_size=8, n_meta_steps=800)
N_WAY, N_VAL, D4_COPIES = 5, 200, 8
ORACLE = ROWS[-1]


def split_variant(variant):
    """A variant's network variant and the trust ratio of its sharings' steps."""
    if variant.endswith(SLOW):
        return variant[:-len(SLOW)], optim.DEEP_TRUST_RATIO / 10
    return variant, optim.DEEP_TRUST_RATIO


@contextmanager
def sharing_trust_ratio(ratio):
    """``msr_adam``'s bound on a sharing's step, relative to its norm, set to ``ratio``
    for the fits inside (the learner has no parameter for it: this is a diagnosis)."""
    default, optim.DEEP_TRUST_RATIO = optim.DEEP_TRUST_RATIO, ratio
    try:
        yield
    finally:
        optim.DEEP_TRUST_RATIO = default


def base_row(variant):
    """The benchmark row a variant changes: its rate and training episodes."""
    variant = split_variant(variant)[0]
    if variant.startswith("MAML-Conv4"):
        return "MAML-Conv4"
    return ORACLE if variant in IN_ORACLE else "MSR-Conv"


def conv_names(n_copies):
    """The Conv-4's convolution weights, first to last."""
    net = Conv4(input_shape=(1, 32, 32), channels=CHANNELS, n_copies=n_copies)
    return [f"{name}.weight" for name in net.convolutions]


def conv_policy(n_copies, couple=True, init="random"):
    """A learned :class:`~msr_sklearn.sharing.ConvFilterSharing` on every convolution."""
    return {name: ConvFilterSharing(n_copies, n_copies if couple and i else 1, init=init)
            for i, name in enumerate(conv_names(n_copies))}


def exact_d4_policy(learnable):
    """The exact D4 lifting / group-convolution sharings on the Conv-4's convolutions."""
    net = Conv4(input_shape=(1, 32, 32), channels=CHANNELS, n_copies=D4_COPIES)
    return exact_d4_sharings(net, learnable)


def variant_params(variant, n_way=N_WAY):
    """The learner parameters (network and sharing) of a variant."""
    variant = split_variant(variant)[0]
    if variant == "MAML-Conv4":
        return learner_params("MAML-Conv4", n_way)
    if variant == "MAML-Conv4, 64 channels":
        return dict(learner_params("MAML-Conv4", n_way), module__channels=WIDE)
    if variant in IN_ORACLE:
        return dict(learner_params(ORACLE, n_way),
                    sharing=oracle_policy(learned=IN_ORACLE[variant]))
    if variant == VARIANTS[0]:
        return learner_params("MSR-Conv", n_way)
    if variant == "plain Adam (no trust region)":
        return dict(learner_params("MSR-Conv", n_way), meta_optimizer="adam")
    policy = {"8 copies, not coupled": lambda: conv_policy(8, couple=False),
              "4 copies, coupled": lambda: conv_policy(4),
              "2 copies, coupled": lambda: conv_policy(2),
              "1 copy (A ⊗ B ⊗ S)": lambda: conv_policy(1),
              "8 copies, coupled, identity start": lambda: conv_policy(8, init="identity"),
              "started at exact D4": lambda: exact_d4_policy(learnable=True),
              "exact D4, fixed": lambda: exact_d4_policy(learnable=False)}
    if variant not in policy:
        raise ValueError(f"variant must be one of {VARIANTS}; got {variant!r}")
    head = {"head.0.weight": DenseSharing(HEAD_FILTERS_PER_WAY * n_way)}
    return dict(module=Conv4, module__channels=CHANNELS, sharing={**policy[variant](), **head})


def conv_filter_values(variant, n_way=N_WAY):
    """The filter values the inner loop adapts in a variant's four convolutions (every
    weight, for a convolution without a sharing)."""
    params = variant_params(variant, n_way)
    module = {k.removeprefix("module__"): v for k, v in params.items()
              if k.startswith("module__")}
    net = params["module"](input_shape=(1, 32, 32), n_outputs=n_way, **module)
    policy = params.get("sharing")
    if policy is None:
        policy = net.default_sharing(params.get("layer", "msr"))
    return sum(policy[f"{name}.weight"].bind(tuple(conv.weight.shape)).n_filters
               if f"{name}.weight" in policy else conv.weight.numel()
               for name, conv in net.convolutions.items())


def run_variant(variant, inner_lr, random_state=0, meta_batch_size=8, n_meta_steps=400,
                n_val=N_VAL, device="cpu"):
    """Meta-train one variant and score it on the validation episodes."""
    with sharing_trust_ratio(split_variant(variant)[1]):
        learner, wall = fit_row(base_row(variant), N_WAY, inner_lr, meta_batch_size,
                                n_meta_steps, device, random_state,
                                params=variant_params(variant))
    out = dict(variant=variant, seed=random_state, inner_lr=inner_lr,
               meta_batch_size=meta_batch_size, n_meta_steps=n_meta_steps, n_val=n_val,
               val_acc_aug=validation_accuracy(learner, N_WAY, n_val),
               final_loss=final_loss(learner), fit_seconds=wall)
    convs = {name: v for name, v in layer_reports(learner).items() if name.startswith("features")}
    if convs:
        first = convs[min(convs, key=lambda n: int(n.split(".")[1]))]
        out["first_conv_report"], out["first_conv_d4"] = first[0], max(first[1:])
        out["worst_conv_d4"] = max(max(v[1:]) for v in convs.values())
    return out


def test_variant(variant, inner_lr, random_state=0, meta_batch_size=8, n_meta_steps=800,
                 n_test=300, n_invariance=50, device="cpu"):
    """A variant chosen here, meta-trained and measured on the *test* episodes exactly
    as ``glyphs.py`` measures its rows (:func:`glyphs.run_row`)."""
    with sharing_trust_ratio(split_variant(variant)[1]):
        out = run_row(base_row(variant), N_WAY, random_state, meta_batch_size, n_meta_steps,
                      inner_lr, device, n_test, n_invariance, params=variant_params(variant))
    return dict(out, variant=variant)


def _job(job):
    job = dict(job)
    return (test_variant if job.pop("test", False) else run_variant)(**job)


def test_report(rows, args, settings, rates):
    """The test-episode table of ``--test`` variants."""
    lines = header("Aug-Glyphs ablation variants on the test episodes", args,
                   {"protocol": f"{N_WAY}-way 1-shot, clean support, D4-augmented queries, "
                    "the test episodes and measures of benchmarks/glyphs.py (run_row)",
                    "settings": f"meta-batch {settings['meta_batch_size']}, "
                    f"{settings['n_meta_steps']} meta-steps, {args.n_test} test episodes "
                    f"per set, {args.n_invariance} through make_estimator for invariance",
                    "initial inner lr": ", ".join(
                        f"{v}: {rates[base_row(v)]}" for v in args.variants)})
    lines += ["| variant | 1-shot, aug. queries (%) | 1-shot, clean (%) | 5-shot, aug. (%) | "
              "invariant predictions (%) | first conv named (D4 error) | worst conv D4 error "
              "| fit (min, wall) |", "|" + "---|" * 8]
    for variant in args.variants:
        r = rows[rows.variant == variant]
        d4 = [c for c in r.columns if c.startswith("d4_features.")]
        first = min(d4, key=lambda c: int(c.split(".")[1])) if d4 else None
        named = (f"{', '.join(sorted(set(r['report_' + first[3:]].dropna())))} "
                 f"({r[first].mean():.2f})" if first else "—")
        worst = f"{r[d4].max(axis=1).mean():.2f}" if d4 else "—"
        lines.append(f"| {variant} | {pm(r.acc_aug, 100)} | {pm(r.acc_clean, 100)} | "
                     f"{pm(r.acc_aug_5shot, 100)} | {pm(r.invariant, 100)} | {named} | "
                     f"{worst} | {r.fit_seconds.mean() / 60:.1f} |")
    return "\n".join(lines) + "\n"


def report(rows, args, settings, rates, kept=0):
    kept = ({"earlier fits": f"{kept} (variant, seed) fits kept from the previous results "
             "file (`--resume`), the rest run by this command"} if kept else {})
    lines = header("Aug-Glyphs MSR-Conv ablation (meta-validation episodes)", args,
                   {"protocol": f"{N_WAY}-way 1-shot, clean support, D4-augmented queries, "
                    "Conv-4 of 32 channels (but the 64-channel and oracle-network "
                    "variants), images padded to 32×32, 1 inner step, every other setting "
                    "at the library's defaults",
                    "settings": f"meta-batch {settings['meta_batch_size']}, "
                    f"{settings['n_meta_steps']} meta-steps, {rows.n_val.iloc[0]} fixed "
                    "validation episodes (Greek letters; the test split is not used)",
                    "initial inner lr": f"MSR variants {rates['MSR-Conv']} (MSR-Conv's tuned "
                    f"rate) but those in the oracle's network {rates[ORACLE]} (the "
                    f"oracle's), MAML-Conv4 {rates['MAML-Conv4']} (its tuned rate), from "
                    "results/glyphs_tuning.csv; the variants were not tuned separately",
                    **kept})
    lines += ["Validation accuracy on augmented queries (%), the mean training loss of the "
              "last 50 meta-steps, and the D4 error of the learned conv sharings as "
              "`symmetry_report` scores them (0 exact, about 1.4 for unrelated filters), "
              "mean ± 95% CI over seeds; the name is the first convolution's, per seed.", "",
              "| variant | conv filter values | val. accuracy (%) | Δ vs MSR-Conv (paired, pts) "
              "| final loss | first conv D4 error | worst conv D4 error | first conv named | "
              "fit (s) |",
              "|---|---|---|---|---|---|---|---|---|"]
    base = rows[rows.variant == VARIANTS[0]].set_index("seed").val_acc_aug
    for variant in VARIANTS:
        part = rows[rows.variant == variant]
        if part.empty:
            continue
        delta = (part.set_index("seed").val_acc_aug - base).dropna()
        names = " / ".join(part.get("first_conv_report", pd.Series(dtype=str)).fillna("—"))
        cells = [f"{conv_filter_values(variant):,}", pm(part.val_acc_aug, 100),
                 pm(delta, 100) if variant != VARIANTS[0] else "—", pm(part.final_loss, digits=3)]
        cells += [pm(part[c], digits=2) if c in part and part[c].notna().any() else "—"
                  for c in ("first_conv_d4", "worst_conv_d4")]
        cells += [names or "—", f"{part.fit_seconds.mean():.0f}"]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--n-val", type=int, default=N_VAL, help="validation episodes")
    p.add_argument("--test", action="store_true",
                   help="run the variants on the test episodes (glyphs.py's measures, "
                        "meta-batch 8 x 800 by default) and write glyph_ablation_test.md")
    p.add_argument("--n-test", type=int, default=300, help="test episodes per set (--test)")
    p.add_argument("--n-invariance", type=int, default=50,
                   help="test episodes checked for invariance (--test)")
    p.add_argument("--resume", action="store_true",
                   help="keep the (variant, seed) fits already in the results CSV and run "
                        "only the missing ones; the report covers both")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    settings, n_val, name = cpu_settings(args, CPU), args.n_val, "glyph_ablation"
    if args.quick:
        settings, n_val, name = dict(meta_batch_size=2, n_meta_steps=3), 8, name + "_quick"
        args.seeds = args.seeds[:1]
    rates = saved_rates()
    if args.test:
        return run_tests(args, rates)
    jobs = [dict(variant=v, random_state=s, device=args.device, n_val=n_val,
                 inner_lr=rates[base_row(v)], **settings)
            for v in args.variants for s in args.seeds]
    done = pd.DataFrame()
    if args.resume and (RESULTS / f"{name}.csv").exists():
        done = pd.read_csv(RESULTS / f"{name}.csv")
        have = set(zip(done.variant, done.seed))
        jobs = [j for j in jobs if (j["variant"], j["random_state"]) not in have]
    rows = pd.concat([done, pd.DataFrame(list(map_single_threaded(_job, jobs, args.n_jobs)))],
                     ignore_index=True)
    write_results(name, report(rows, args, settings, rates, len(done)), rows)


def run_tests(args, rates):
    """``--test``: the chosen variants on the test episodes."""
    settings = cpu_settings(args, TEST_CPU)
    if args.quick:
        settings, args.n_test, args.n_invariance = dict(meta_batch_size=2, n_meta_steps=3), 4, 1
    jobs = [dict(test=True, variant=v, random_state=s, device=args.device,
                 inner_lr=rates[base_row(v)], n_test=args.n_test,
                 n_invariance=args.n_invariance, **settings)
            for v in args.variants for s in args.seeds]
    rows = pd.DataFrame(list(map_single_threaded(_job, jobs, args.n_jobs)))
    name = "glyph_ablation_test" + ("_quick" if args.quick else "")
    write_results(name, test_report(rows, args, settings, rates), rows)


if __name__ == "__main__":
    main()
