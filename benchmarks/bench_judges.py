"""How much planted noise the default curation catches, and how much clean LIMA it stops.

    SFT_SHARED_DATA=../shared/data .venv/bin/python benchmarks/bench_judges.py [--half test] [--scorer-on-cpu] [--json PATH]

Clean LIMA records of one half (by default the held-out half that no
threshold was calibrated on) plus `--per-kind` planted records of every
noise kind (`sft_trainer.curation.noise`), made from other LIMA records so
that deduplication cannot catch a copy by its original. The whole default
pipeline runs over the mix, exactly as `sftctl curate FILE --out DIR` with no
flags (no tokenizer), and the table gives per kind the share a judge stopped
(rejected or held for review) and the reasons that did it. Balance drops are
choices about the mix, not verdicts, and are shown apart.

Goals (issue #10): recall >= 0.8 for every kind, <= 3% of clean LIMA judged noisy
(rejected; the clean row's rate is that share, its `held` column the records a
person is asked to look at).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sft_trainer.config import CurationConfig
from sft_trainer.config.curation import ScorerStep
from sft_trainer.cpus import usable_cpus
from sft_trainer.curation.noise import CLEAN, judged_mix, judgement_table
from sft_trainer.curation.pipeline import curate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--half", default="test", choices=["test", "calibration"])
    parser.add_argument("--clean", type=int, default=400, help="clean LIMA records in the mix")
    parser.add_argument(
        "--per-kind",
        type=int,
        help="planted records of every kind (default: one per donor, every LIMA record of the half not among the "
        "clean ones: about 108 on the test half with --clean 400, so a rate is known to about +-0.04)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--scorer-on-cpu",
        action="store_true",
        help="run the scorer LM here whatever the set's size (curation.scorer.maxRecordsOnCpu unset), as the "
        "defaults do on a GPU: coherence and completeness read the LM, style reads its perplexity (about 1 "
        "record/s on 2 CPU cores)",
    )
    parser.add_argument("--json", type=Path, help="write the table here")
    args = parser.parse_args()

    convs, kinds = judged_mix(args.half, clean_count=args.clean, per_kind=args.per_kind, seed=args.seed)
    started = time.perf_counter()
    config = CurationConfig(scorer=ScorerStep(max_records_on_cpu=None)) if args.scorer_on_cpu else CurationConfig()
    result = curate(convs, config, workers=usable_cpus())
    seconds = time.perf_counter() - started
    rejected = {r.source_index: r.reasons for r in result.rejected}
    held = {c.source_index: reasons for c, reasons in result.review}
    table = judgement_table(kinds, rejected, held)

    print(f"{len(convs)} records ({args.half} half), default curation in {seconds:.1f} s")
    print(
        f"{'kind':<18} {'records':>7} {'rejected':>8} {'held':>5} {'caught':>7} {'rate':>6} {'mix drops':>9}  reasons"
    )
    for kind in [CLEAN, *sorted(k for k in table if k != CLEAN)]:
        row = table[kind]
        shown = None if kind == CLEAN else 4  # every reason a clean record was stopped for
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(row["reasons"].items(), key=lambda kv: -kv[1])[:shown])
        label = "clean (judged noisy)" if kind == CLEAN else kind
        rate = row["rejected_rate"] if kind == CLEAN else row["rate"]
        print(
            f"{label:<18} {row['records']:>7} {row['rejected']:>8} {row['held']:>5} {row['caught']:>7} "
            f"{rate:>6.3f} {row['dropped_for_mix']:>9}  {reasons}"
        )
    scorer = result.stats["step_reports"].get("scorer")
    if scorer:
        print("scorer: " + ", ".join(f"{k} {v}" for k, v in scorer.items()))
    for note in result.notes:
        print(f"note: {note}")
    if args.json:
        args.json.write_text(json.dumps({"seconds": seconds, "half": args.half, "table": table}, indent=2))


if __name__ == "__main__":
    main()
