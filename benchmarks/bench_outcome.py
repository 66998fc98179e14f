"""Does curated data beat random data? The product's thesis, measured (issue #11).

    .venv/bin/python benchmarks/bench_outcome.py                    # CPU default: N=1,000 of Alpaca, 3 arms
    .venv/bin/python benchmarks/bench_outcome.py --size gpu         # GPU: more steps, every eval prompt
    .venv/bin/python benchmarks/bench_outcome.py --study refusal    # refusal.ratio 0 vs the 3% default (and more)
    options: --base smollm2|gemma3|DIR [--template auto|alpaca|...] --budget N --steps S --batch B
             --ifeval-prompts K --safety-prompts K --reference-records K --suites ifeval,safety,reference
             --refusal-ratios 0,0.03,0.15 --threads T --work DIR --json FIGURES.json

Arms (`--study arms`, the default): Alpaca (`$SFT_SHARED_DATA/alpaca_data.json`)
is curated once with `selection.budget: N` (the default strategy,
diverse-quality); then
  curated  the selection of N records,
  random   its random control: N records of the same pool and task mix (control.jsonl),
  all      every record that passed hygiene (the selection's whole pool),
are each trained from the same base model with the same hyperparameters and
the same number of optimiser steps (LoRA, packing: every step trains on the
same number of tokens, so the arms get the same compute), then evaluated by
the same suites: IFEval (the first K prompts), safety (K prompts per set,
spread over its types), reference NLL of held-out human-written answers
(LIMA, which no arm trains on) and, with --suites, style and forgetting. The
untrained base model is evaluated too, as a reference column. Each figure
is printed with its 95% bootstrap interval, and each arm's delta against the
random arm with a paired-bootstrap interval over the prompts both answered
(`sft_trainer.evaluation.stats`), plus wall and CPU seconds per arm.

`--study refusal` trains the curated selection with `refusal.ratio` 0, 0.03
(the default) and more (`--refusal-ratios`), and evaluates safety only:
refusal on held-out AdvBench, over-refusal on XSTest safe; deltas against
ratio 0.

The three arms' records are written as the pool's own Alpaca records (looked
up by source_index), so every arm is read by the trainer the same way.
Refusal conditioning stays at its default in the arms study; it is capped by
the 260 shipped refusals, so the `all` arm gets a smaller share of them
(its refusalsMixed is reported).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "trainer_image"), str(REPO / "operator")]

SHARED = Path(os.environ.get("SFT_SHARED_DATA", REPO.parent / "shared" / "data"))
MODELS = Path(os.environ.get("SFT_MODEL_CACHE", REPO / ".cache" / "models"))
# name -> (model folder under SFT_MODEL_CACHE, chat template). Gemma 3 270M is a base model without a
# chat template: it trains and is evaluated with the built-in Alpaca template (EOS ends a reply).
BASES = {"smollm2": ("smollm2-135m-instruct", "auto"), "gemma3": ("gemma-3-270m", "alpaca")}

# Sizes. CPU: <= 60 min on 2 idle cores, projected from the CPU seconds measured per token (docs/evaluation.md);
# GPU: ~3 epochs of the selection, every IFEval and safety prompt.
SIZES: dict[str, dict[str, Any]] = {
    "cpu": {
        "base": "smollm2",
        "budget": 1000,
        "steps": 24,  # 24 x 4 x 512 = 49k tokens per arm: ~0.3 of the selection's tokens, ~0.6 of the control's
        "batch": 4,
        "seq": 512,
        "ifeval_prompts": 60,
        "ifeval_max_new_tokens": 192,
        "safety_prompts": 30,
        "safety_max_new_tokens": 48,
        "reference_records": 50,
        "refusal_steps": 24,
        "batch_size_eval": 16,
    },
    "gpu": {
        "base": "smollm2",
        "budget": 1000,
        "steps": 60,  # 60 x 8 x 1024 = 491k tokens: about 3 epochs of the selection (~160k tokens), the default
        "batch": 8,
        "seq": 1024,
        "ifeval_prompts": None,
        "ifeval_max_new_tokens": 256,
        "safety_prompts": None,
        "safety_max_new_tokens": 64,
        "reference_records": 300,
        "refusal_steps": 60,
        "batch_size_eval": 64,
    },
}


# ---------------------------------------------------------------------------
# Data: the pool, the curation, the arms' files
# ---------------------------------------------------------------------------


def curate(
    pool_file: Path, budget: int, out: Path, tokenizer: Path, template: str, seed: int, overrides: dict[str, Any]
) -> dict[str, Any]:
    """`sftctl curate POOL --budget N` (the same entry point) with the arms' tokenizer and chat template, so the
    template check builds every record as training will; returns the selection status and seconds."""
    from sft_trainer.config import CurationConfig, CurationRunConfig
    from sft_trainer.curation.entrypoint import run_from_config

    cfg = CurationRunConfig(
        input=str(pool_file),
        output_dir=str(out),
        tokenizer=str(tokenizer),
        curation=CurationConfig.model_validate(
            {"template": {"name": template}, **overrides, "selection": {"budget": budget}, "seed": seed}
        ),
    )
    started = time.monotonic()
    code = run_from_config(cfg)
    if code != 0:
        raise SystemExit(f"curation of {pool_file} failed with exit code {code}; see {out}")
    status = json.loads((out / "report.json").read_text(encoding="utf-8"))["status"]
    return {"seconds": round(time.monotonic() - started, 1), "counts": status["counts"], **status["selection"]}


def _source_indices(path: Path, keep: Any = None) -> list[int]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return sorted(r["source_index"] for r in rows if keep is None or keep(r))


def arm_files(pool: list[dict[str, Any]], curated: Path, out: Path) -> dict[str, Path]:
    """curated / random / all as Alpaca JSON files of the pool's own records."""
    selected = _source_indices(curated / "curated.jsonl")
    control = _source_indices(curated / "control.jsonl")
    not_selected = _source_indices(curated / "rejected.jsonl", lambda r: r["reasons"] == ["selection.not_selected"])
    arms = {"curated": selected, "random": control, "all": sorted(selected + not_selected)}
    files = {}
    for name, indices in arms.items():
        files[name] = out / f"arm_{name}.json"
        files[name].write_text(json.dumps([pool[i] for i in indices]), encoding="utf-8")
    return files


# ---------------------------------------------------------------------------
# One arm: train, evaluate
# ---------------------------------------------------------------------------


@dataclass
class Arm:
    name: str
    dataset: Path | None
    """None: the untrained base model (evaluated, not trained)."""
    training: dict[str, Any] = field(default_factory=dict)
    """Overrides of the shared training settings (the refusal study's ratio)."""
    records: int = 0
    train: dict[str, Any] = field(default_factory=dict)
    eval_seconds: float = 0.0
    results: dict[str, Any] = field(default_factory=dict)
    """suite -> SuiteResult."""


class Clock:
    """Wall and CPU seconds (all threads of this process) of a block."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.monotonic(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.monotonic() - self.wall, time.process_time() - self.cpu


def training_settings(args: argparse.Namespace, steps: int) -> dict[str, Any]:
    """What every arm trains with: the defaults (LoRA r=16, lr 2e-4, cosine) and these."""
    return {
        "method": "lora",
        "maxSteps": steps,
        "epochs": 20,  # maxSteps decides; no arm runs out of epochs first
        "batchSize": args.batch,
        "maxSeqLength": args.seq,
        "packing": True,
        "evalFraction": 0,  # every arm trains all its records for exactly `steps` steps (no early stopping)
        "checkpointEverySteps": 100_000,
        "template": {"name": args.template},
        "probes": {"memorisationPrompts": 0},
        "evaluation": {"enabled": False},  # this benchmark evaluates every arm itself, the same way
        "seed": args.seed,
    }


def train(arm: Arm, model: Path, settings: dict[str, Any], out: Path) -> None:
    from sft_trainer.config import TrainRunConfig
    from sft_trainer.training.entrypoint import run_from_config

    assert arm.dataset is not None
    merged = {**settings, **arm.training}
    cfg = TrainRunConfig.model_validate(
        {"model": str(model), "dataset": str(arm.dataset), "outputDir": str(out), "training": merged}
    )
    with Clock() as clock:
        code = run_from_config(cfg)
    if code != 0:
        raise SystemExit(f"training arm {arm.name} failed with exit code {code}; see {out}")
    report = json.loads((out / "train_report.json").read_text(encoding="utf-8"))
    history = report["training"]["history"]
    arm.train = {
        "steps": len(history),
        "seconds": round(clock.wall, 1),
        "cpuSeconds": round(clock.cpu, 1),
        "firstLoss": round(history[0]["loss"], 4),
        "lastLoss": round(history[-1]["loss"], 4),
        "medianTokensPerSecond": round(statistics.median(h["tokensPerSecond"] for h in history), 1),
        "refusalsMixed": int(report["data"].get("refusalsMixed", 0)),
        "trainSamples": report["data"].get("trainSamples"),
    }


def evaluate(arm: Arm, model: Path, adapter: Path | None, args: argparse.Namespace, out: Path) -> None:
    import gc

    from sft_trainer.config import EvaluationConfig
    from sft_trainer.evaluation.generation import load_eval_model
    from sft_trainer.evaluation.runner import EvalSettings, run_suites

    config = EvaluationConfig.model_validate(
        {
            "ifeval": {
                "enabled": "ifeval" in args.suites,
                "prompts": args.ifeval_prompts,
                "maxNewTokens": args.ifeval_max_new_tokens,
                "data": str(SHARED / "eval" / "ifeval_input_data.jsonl"),
            },
            "safety": {
                "enabled": "safety" in args.suites,
                "promptsPerSet": args.safety_prompts,
                "maxNewTokens": args.safety_max_new_tokens,
                "data": str(SHARED / "safety"),
            },
            "reference": {
                "enabled": "reference" in args.suites,
                "records": args.reference_records,
                "data": str(SHARED / "lima_llamafactory.json"),
            },
            "style": {"enabled": "style" in args.suites, "prompts": args.reference_records},
            "forgetting": {"enabled": "forgetting" in args.suites},
            "batchSize": args.eval_batch_size,
        }
    )
    with Clock() as clock:
        loaded = load_eval_model(model, adapter, template=args.template, batch_size=args.eval_batch_size, name=arm.name)
        settings = EvalSettings(config)
        settings.check()
        arm.results = run_suites(loaded, settings, out)
        del loaded
        gc.collect()
    arm.eval_seconds = round(clock.wall, 1)
    failed = {suite: r.error for suite, r in arm.results.items() if r.error}
    if failed:
        raise SystemExit(f"evaluation of arm {arm.name} could not run: {failed}")


# ---------------------------------------------------------------------------
# Figures, deltas, the table
# ---------------------------------------------------------------------------


def figures(arm: Arm) -> dict[str, Any]:
    """suite.key -> Figure."""
    return {f"{suite}.{f.key}": f for suite, r in arm.results.items() for f in r.figures}


def compare(arms: list[Arm], baseline: str) -> dict[str, Any]:
    """Every arm's figures with intervals, and each trained arm's delta (arm minus baseline) by the paired bootstrap."""
    from sft_trainer.evaluation.stats import paired_delta, ratio_estimate

    reference = figures(next(a for a in arms if a.name == baseline))
    rows: dict[str, Any] = {}
    for arm in arms:
        for key, figure in figures(arm).items():
            row = rows.setdefault(
                key, {"label": figure.label, "unit": figure.unit, "higherIsBetter": figure.higher_is_better}
            )
            row[arm.name] = ratio_estimate(figure.numerators, figure.denominators).to_json()
            if arm.dataset is not None and arm.name != baseline and key in reference:
                common = [pid for pid in reference[key].ids if pid in set(figure.ids)]
                delta = paired_delta(reference[key].pick(common), figure.pick(common))
                row.setdefault("delta", {})[arm.name] = delta.to_json()
    return rows


def _cell(estimate: dict[str, Any] | None, unit: str, signed: bool = False) -> str:
    if not estimate or estimate["value"] is None:
        return "n/a"
    scale, digits = (100.0, 1) if unit == "rate" else (1.0, 3)
    sign = "+" if signed else ""
    value = f"{estimate['value'] * scale:{sign}.{digits}f}"
    if estimate["low"] is None:
        return value
    return f"{value} [{estimate['low'] * scale:{sign}.{digits}f}, {estimate['high'] * scale:{sign}.{digits}f}]"


def table(arms: list[Arm], rows: dict[str, Any], baseline: str) -> str:
    """One markdown table: a row per figure, a column per arm, a delta column per arm against the baseline."""
    names = [a.name for a in arms]
    compared = [a.name for a in arms if a.dataset is not None and a.name != baseline]
    head = ["figure", *names, *[f"{n} − {baseline}" for n in compared]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows.values():
        unit = " (%)" if row["unit"] == "rate" else ""  # NLL labels name their unit
        better = "↑" if row["higherIsBetter"] else "↓"
        cells = [f"{row['label']}{unit} {better}"]
        cells += [_cell(row.get(n), row["unit"]) for n in names]
        cells += [_cell(row.get("delta", {}).get(n), row["unit"], signed=True) for n in compared]
        lines.append("| " + " | ".join(cells) + " |")
    facts = {
        "records trained on": lambda a: str(a.records) if a.dataset else "—",
        "refusals mixed in": lambda a: str(a.train.get("refusalsMixed", "—")),
        "train loss first → last": lambda a: f"{a.train['firstLoss']} → {a.train['lastLoss']}" if a.train else "—",
        "train wall s (CPU s)": lambda a: f"{a.train['seconds']:.0f} ({a.train['cpuSeconds']:.0f})" if a.train else "—",
        "eval wall s": lambda a: f"{a.eval_seconds:.0f}",
    }
    for label, fact in facts.items():
        lines.append("| " + " | ".join([label, *[fact(a) for a in arms], *[""] * len(compared)]) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu")
    parser.add_argument("--study", choices=["arms", "refusal"], default="arms")
    parser.add_argument("--base", help="smollm2, gemma3 (`make base-model`) or a model folder (default: the size's)")
    parser.add_argument("--template", help="chat template (default: the base's: auto, alpaca for gemma3)")
    parser.add_argument("--pool", type=Path, default=SHARED / "alpaca_data.json", help="dataset curated into arms")
    parser.add_argument("--pool-size", type=int, help="a seeded sample of this many pool records (default: all)")
    parser.add_argument("--budget", type=int, help="N: records selected (and in the random control)")
    parser.add_argument(
        "--curation-settings",
        type=json.loads,
        default={},
        help='JSON object merged into the curation settings, e.g. \'{"relevance": {"maxRecordsOnCpu": 0}}\'',
    )
    parser.add_argument("--steps", type=int, help="optimiser steps of every arm")
    parser.add_argument("--batch", type=int, help="packed sequences per step")
    parser.add_argument("--seq", type=int, help="tokens per packed sequence")
    parser.add_argument("--ifeval-prompts", type=int, help="the first K IFEval prompts (0: all 541)")
    parser.add_argument("--ifeval-max-new-tokens", type=int)
    parser.add_argument("--safety-prompts", type=int, help="prompts per safety set (0: all)")
    parser.add_argument("--safety-max-new-tokens", type=int)
    parser.add_argument("--reference-records", type=int, help="LIMA records whose answers are scored")
    parser.add_argument("--suites", default="ifeval,safety,reference", help="also: style, forgetting")
    parser.add_argument("--refusal-ratios", default="0,0.03,0.15", help="--study refusal: ratios (first: baseline)")
    parser.add_argument("--eval-batch-size", type=int, help="prompts generated together")
    parser.add_argument("--no-base-eval", action="store_true", help="skip evaluating the untrained base model")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-outcome"), help="curation, arms, adapters")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    size = SIZES[args.size]
    for key in ("base", "budget", "steps", "batch", "seq", "ifeval_max_new_tokens", "safety_max_new_tokens"):
        if getattr(args, key) is None:
            setattr(args, key, size[key])
    for key in ("ifeval_prompts", "safety_prompts", "reference_records"):
        value = getattr(args, key)
        setattr(args, key, size[key] if value is None else (value or None))  # 0: all
    if args.eval_batch_size is None:
        args.eval_batch_size = size["batch_size_eval"]
    if args.study == "refusal" and args.steps == size["steps"]:
        args.steps = size["refusal_steps"]
    folder, template = BASES.get(args.base, (args.base, "auto"))
    args.model = MODELS / folder if args.base in BASES else Path(folder)
    args.template = args.template or template
    args.suites = [s.strip() for s in args.suites.split(",") if s.strip()]
    if args.study == "refusal":
        args.suites = ["safety"]
    if not (args.model / "config.json").is_file():
        hint = " (run `make base-model`)" if args.base == "gemma3" else " (run `make model`)"
        parser.error(f"--base: {args.model} is not a model folder{hint}")
    if not args.pool.is_file():
        parser.error(f"--pool: {args.pool} does not exist (set SFT_SHARED_DATA)")
    return args


def pool_records(args: argparse.Namespace) -> tuple[list[dict[str, Any]], Path]:
    """The pool's records (a seeded sample with --pool-size), and the file curation reads."""
    pool = json.loads(args.pool.read_text(encoding="utf-8"))
    if args.pool_size is None or args.pool_size >= len(pool):
        return pool, args.pool
    pool = random.Random(args.seed).sample(pool, args.pool_size)
    path = args.work / "pool.json"
    path.write_text(json.dumps(pool), encoding="utf-8")
    return pool, path


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import logging

    import torch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    started = time.monotonic()

    pool, pool_file = pool_records(args)
    curation = curate(
        pool_file, args.budget, args.work / "curation", args.model, args.template, args.seed, args.curation_settings
    )
    files = arm_files(pool, args.work / "curation", args.work)
    if args.study == "arms":
        baseline = "random"
        arms = [Arm(name, files[name]) for name in ("curated", "random", "all")]
    else:
        ratios = [float(r) for r in args.refusal_ratios.split(",")]
        baseline = f"refusal {ratios[0]:g}"
        arms = [Arm(f"refusal {r:g}", files["curated"], {"refusal": {"enabled": r > 0, "ratio": r}}) for r in ratios]
    if not args.no_base_eval:
        arms.insert(0, Arm("base", None))

    settings = training_settings(args, args.steps)
    for arm in arms:
        out = args.work / "runs" / arm.name.replace(" ", "_")
        shutil.rmtree(out, ignore_errors=True)  # a checkpoint left by an earlier run would be resumed, not retrained
        adapter = None
        if arm.dataset is not None:
            arm.records = len(json.loads(arm.dataset.read_text(encoding="utf-8")))
            train(arm, args.model, settings, out)
            adapter = out / "adapter"
        evaluate(arm, args.model, adapter, args, out / "eval")
        print(f"[{time.monotonic() - started:.0f} s] arm {arm.name}: train {arm.train} eval {arm.eval_seconds} s",
              file=sys.stderr, flush=True)  # fmt: skip

    rows = compare(arms, baseline)
    text = table(arms, rows, baseline)
    total = round(time.monotonic() - started, 1)
    print(text)
    print(f"\nTotal wall time {total:.0f} s; curation {curation['seconds']:.0f} s; load average before "
          f"{load_before[0]:.1f}, after {os.getloadavg()[0]:.1f}; {os.cpu_count()} CPUs, "
          f"{torch.get_num_threads()} torch threads")  # fmt: skip
    if args.json:
        figures_json = {
            "study": args.study,
            "size": args.size,
            "baseline": baseline,
            "settings": {
                "model": str(args.model),
                "template": args.template,
                "pool": str(args.pool),
                "poolRecords": len(pool),
                "budget": args.budget,
                "curationSettings": args.curation_settings,
                "training": settings,
                "suites": args.suites,
                "ifevalPrompts": args.ifeval_prompts,
                "ifevalMaxNewTokens": args.ifeval_max_new_tokens,
                "safetyPromptsPerSet": args.safety_prompts,
                "safetyMaxNewTokens": args.safety_max_new_tokens,
                "referenceRecords": args.reference_records,
            },
            "machine": {
                "cpuCount": os.cpu_count(),
                "torchThreads": torch.get_num_threads(),
                "device": "cuda" if torch.cuda.is_available() else "cpu",
                "loadAverageBefore": [round(x, 2) for x in load_before],
                "loadAverageAfter": [round(x, 2) for x in os.getloadavg()],
            },
            "curation": curation,
            "arms": {
                a.name: {
                    "records": a.records,
                    "train": a.train,
                    "evalSeconds": a.eval_seconds,
                    "counts": {suite: r.counts for suite, r in a.results.items()},
                    "skipped": {suite: dict(r.skipped) for suite, r in a.results.items()},
                }
                for a in arms
            },
            "figures": rows,
            "totalSeconds": total,
            "table": text,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures_json, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
