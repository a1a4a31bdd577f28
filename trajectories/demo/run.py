"""The offline demo: train a mini Pythia suite on a toy English grammar (with extra seeds of the small sizes if
asked), then run both experiments through the public API, each into its own results folder: a grammar sweep of every
checkpoint on the grammar's minimal-pair tasks (the built-in `minigrammar` family) and its held-out text (the
`minigrammar_heldout` perplexity task), and a memorization run over the suite's training stream and canaries; then
collect, plot and analyse, with n-gram baselines trained on the suite's own corpus. No network needed."""

from __future__ import annotations

import time
from pathlib import Path

import trajectories as tj
from trajectories.demo import train
from trajectories.report import memorization_answer

DEMO_TASKS = "minigrammar"
HELDOUT_TASK = "minigrammar_heldout"
QUICK_LIMIT = 100  # pairs per paradigm in --quick: enough to see every curve, a fraction of the time
# Pairs per paradigm by default: half of each task's 1000 keeps the demo within 10 minutes on 2 cores (with all 1000 it
# took 12 min) while CIs stay narrow (about ±0.04 at accuracy 0.5).
DEFAULT_LIMIT = 500
# Sampled training rows per data file. The mini models memorize no natural row (packed random sentences), so a small
# sample shows it; the canaries carry the experiment.
MEMORIZATION_SAMPLE = {train.DEFAULT: 256, train.QUICK: 128}
# The demo's rows pack sentences between <|endoftext|> tokens: with EleutherAI's rule (no EOS in the continuation)
# none of them could ever count as memorized, so EOS is allowed here. Canaries hold no EOS: the rule does not matter
# for them.
BAN_EOS = False
N_BOOT = 500  # bootstrap replicates of the demo's analysis: half the default, to keep the demo short
QUICK_N_BOOT = 200  # --quick: the analysis, not the sweep, dominates its time
SEEDS = 0  # extra seeds of the small sizes (train.TrainConfig.seed_sizes): `--seeds K` trains them


def final_accuracies(curves) -> str:
    """Final accuracy per paradigm (rows) and model (columns), as text."""
    rows = curves[curves.level == "paradigm"]
    final = rows[rows.step == rows.groupby("model").step.transform("max")]
    table = final.pivot_table(index="task", columns="model", values="acc")
    table.index = table.index.str.removeprefix(f"{DEMO_TASKS}_")
    return table.round(3).to_string()


def run_demo(out: str | Path = "results/demo", quick: bool = False, device: str | None = None,
             config: train.TrainConfig | None = None, limit: int | None = None, seeds: int = SEEDS,
             n_boot: int | None = None) -> int:
    """The whole demo; `config`, `limit` and `n_boot` override the preset (tests use smaller ones)."""
    config = config or (train.QUICK if quick else train.DEFAULT)
    limit = limit or (QUICK_LIMIT if quick else DEFAULT_LIMIT)
    n_boot = n_boot or (QUICK_N_BOOT if quick else N_BOOT)
    started = time.perf_counter()
    out = Path(out)

    print(f"1/4 training the suite in {out / 'suite'} (reuses finished models)", flush=True)
    suite_dir = train.build_suite(out / "suite", config, seeds=seeds)

    print(f"2/4 sweeping every checkpoint on the {DEMO_TASKS} tasks and the held-out text", flush=True)
    summary = tj.sweep(f"local:{suite_dir}", [DEMO_TASKS, HELDOUT_TASK], out=out / "sweep", limit=limit,
                       device=device)
    print(summary.report())

    # The evenly spaced checkpoints: where canaries of each third have all been seen.
    every = config.checkpoint_every
    print("3/4 memorization of sampled training rows and canaries", flush=True)
    memorized = tj.measure_memorization(
        f"local:{suite_dir}", steps=f"{every}:{config.steps}:{every}", out=out / "memorization",
        sample=MEMORIZATION_SAMPLE.get(config, 32), strata=32, ban_eos=BAN_EOS, device=device)
    print(memorized.report())

    print("4/4 figures and reports: onsets, stages, seeds, item agreement, matched loss, n-gram baselines; "
          "memorization", flush=True)
    analysis = tj.analyze(out / "sweep", n_boot=n_boot, ngram_corpus=suite_dir / "corpus.txt")
    memorization = tj.analyze(out / "memorization")
    print("\nfinal accuracy per paradigm and model:")
    print(final_accuracies(tj.load_curves(out / "sweep")))
    print("\nare rows seen later in training more likely to be memorized?")
    print("\n".join(f"  {line}" for line in memorization_answer(memorization.tables)))
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s")
    print(f"  suite:   {suite_dir}")
    print(f"  curves:  {out / 'sweep' / 'curves.csv'}")
    print(f"  figures: {analysis.figures[0].parent}")
    print(f"  reports: {analysis.html}")
    print(f"           {memorization.html}")
    return 0 if summary.ok and memorized.ok else 1
