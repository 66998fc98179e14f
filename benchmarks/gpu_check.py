"""The GPU check's driver (benchmarks/gpu_check.sh calls it; docs/gpu.md says how and why).

    python benchmarks/gpu_check.py prepare             # here, once: wheels + tokenizer + data into .cache/
    python benchmarks/gpu_check.py wheels-to-install   # the carried wheels this machine lacks (or has older)
    python benchmarks/gpu_check.py run [--dry-run] [--out DIR] [--budget SECONDS]

`run` runs the stages below in order of value, each in its own process group
with its own time cap, all within one overall budget (a GPU lease is short):
whatever finished is in <out>/gpu_figures.json (rewritten after every stage),
every stage's output is in <out>/gpu_check.log, and one table is printed at
the end. `--dry-run` runs the same stages at tiny sizes on the CPU, with the
gpu tests' bodies on the CPU (SFT_GPU_TESTS_ON_CPU=1).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
WHEELS = REPO / ".cache" / "wheels"
INPUTS = REPO / ".cache" / "gpu-inputs"
TOKENIZER_SOURCE = REPO / ".cache" / "models" / "smollm2-135m-instruct"
DATA_FILES = ["alpaca_gpt4_en_demo_llamafactory.json", "lima_llamafactory.json"]
# What the GPU machine's Python lacks for this project (its image has torch, accelerate, pandas, pyarrow, ...;
# docs/gpu.md), and transformers and peft at the versions this virtualenv runs (the image's transformers 5.17
# predates the boolean `logits_to_keep` the trainer uses when it can). Installed there only where older or missing.
CARRIED = [
    "trl",
    "datasets",
    "dill",
    "multiprocess",
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "transformers",
    "peft",
]
CARRY_LIMIT_MIB = 64
WEIGHT_SUFFIXES = {".safetensors", ".bin", ".gguf", ".pt", ".pth"}


# ---------------------------------------------------------------------------
# prepare / wheels-to-install
# ---------------------------------------------------------------------------


def prepare(shared_data: Path) -> None:
    """Wheels for Python 3.12 on x86-64 Linux, SmolLM2's tokenizer (no weights) and the two data files."""
    from importlib.metadata import version

    shutil.rmtree(WHEELS, ignore_errors=True)
    pins = [f"{name}=={version(name)}" for name in CARRIED]
    platforms = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12"]
    command += ["--implementation", "cp", *[f"--platform={p}" for p in platforms], "-d", str(WHEELS), *pins]
    subprocess.run(command, check=True)

    shutil.rmtree(INPUTS, ignore_errors=True)
    (INPUTS / "tokenizer").mkdir(parents=True)
    if not (TOKENIZER_SOURCE / "tokenizer.json").is_file():
        raise SystemExit(f"{TOKENIZER_SOURCE} has no tokenizer.json: run `make model` first")
    for path in TOKENIZER_SOURCE.iterdir():
        if path.is_file() and path.suffix not in WEIGHT_SUFFIXES:
            shutil.copy2(path, INPUTS / "tokenizer" / path.name)
    (INPUTS / "data").mkdir()
    for name in DATA_FILES:
        shutil.copy2(shared_data / name, INPUTS / "data" / name)
    carried = sum(p.stat().st_size for folder in (WHEELS, INPUTS) for p in folder.rglob("*") if p.is_file())
    print(f"carried: {carried / 2**20:.1f} MiB in {WHEELS.name}/ and {INPUTS.name}/ (limit {CARRY_LIMIT_MIB} MiB)")
    if carried > (CARRY_LIMIT_MIB - 8) * 2**20:
        raise SystemExit("too much to carry next to the working tree")


def wheels_to_install() -> list[Path]:
    """Carried wheels whose distribution is missing here, or installed at an older version."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.version import Version

    needed = []
    for wheel in sorted(WHEELS.glob("*.whl")):
        name, wheel_version = wheel.name.split("-")[:2]
        try:
            installed = version(name)
        except PackageNotFoundError:
            needed.append(wheel)
            continue
        if Version(installed) < Version(wheel_version):
            needed.append(wheel)
    return needed


# ---------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    """What this machine runs: printed as JSON by the `environment` stage."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    versions = {}
    for name in ["torch", "transformers", "peft", "accelerate", "trl", "datasets", "pyarrow", "pydantic", "flash-attn"]:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    info: dict[str, Any] = {"python": sys.version.split()[0], "versions": versions, "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        info |= {"device": properties.name, "memoryGiB": round(properties.total_memory / 2**30, 1)}
        info |= {"capability": f"{properties.major}.{properties.minor}", "cudaRuntime": torch.version.cuda}
        info["bf16"] = torch.cuda.is_bf16_supported()
    return info


@dataclass
class Stage:
    name: str
    what: str
    command: list[str]
    cap_s: float
    result_json: Path | None = None
    """A JSON file the command writes its figures into (read even after a timeout: partial figures)."""
    junit: Path | None = None
    skip_reason: str | None = None
    env: dict[str, str] = field(default_factory=dict)


def bench_command(args: argparse.Namespace, tmp: Path, size: str, methods: str, skip_trl: bool) -> list[str]:
    command = [sys.executable, str(REPO / "benchmarks" / "bench_train.py"), "--methods", methods]
    command += ["--tokenizer", str(args.tokenizer), "--json", str(tmp / f"bench_{size}.json")]
    command += ["--profile", str(args.out / f"profile_{size}")]
    if args.dry_run:  # the same code path, at a size two CPU cores run in a minute
        command += ["--size", "small", "--steps", "2", "--warmup", "1", "--seq", "256", "--batch", "2"]
    else:
        command += ["--size", size, "--steps", "6" if size == "1b" else "4", "--warmup", "2"]
    return command + (["--skip-trl"] if skip_trl else [])


def stages(args: argparse.Namespace, tmp: Path) -> list[Stage]:
    python = sys.executable
    trl_missing = subprocess.run([python, "-c", "import trl"], capture_output=True).returncode != 0
    trl_note = " (TRL not importable: ours only)" if trl_missing else ""
    scale = 4 if args.dry_run else 1  # two shared CPU cores are slower than an H200 at everything
    return [
        Stage("environment", "versions, device", [python, __file__, "environment"], 60 * scale),
        Stage(
            "gpu_tests",
            "pytest tests/gpu",
            [python, "-m", "pytest", str(REPO / "tests" / "gpu"), "-q", "-p", "no:cacheprovider", "--durations=0"]
            + ["--junitxml", str(args.out / "gpu_tests.xml"), "--basetemp", str(tmp / "pytest")],
            150 * scale,
            junit=args.out / "gpu_tests.xml",
            env={"SFT_GPU_TESTS_ON_CPU": "1"} if args.dry_run else {},
        ),
        Stage(
            "train_1b",
            "1B-class Llama, LoRA + full, packing, bf16, vs TRL" + trl_note,
            bench_command(args, tmp, "1b", "lora,full", trl_missing),
            240 * scale,
            result_json=tmp / "bench_1b.json",
        ),
        Stage(
            "train_8b_lora",
            "8B-class Llama, LoRA, packing, bf16, vs TRL" + trl_note,
            bench_command(args, tmp, "8b", "lora", trl_missing or args.dry_run),
            200 * scale,
            result_json=tmp / "bench_8b.json",
        ),
        Stage(
            "curation_gpu",
            "curation scorer LM and embedder records/s",
            [python, str(REPO / "benchmarks" / "bench_curation_gpu.py"), "--json", str(tmp / "curation.json")],
            60 * scale,
            result_json=tmp / "curation.json",
            skip_reason=None
            if (REPO / "benchmarks" / "bench_curation_gpu.py").is_file()
            else "no GPU curation step (scorer LM / embedder) in this checkout",
        ),
        Stage(
            "eval_generation",
            "evaluation generation tokens/s",
            [python, str(REPO / "benchmarks" / "bench_eval_generation.py"), "--json", str(tmp / "eval.json")],
            60 * scale,
            result_json=tmp / "eval.json",
            skip_reason=None
            if (REPO / "benchmarks" / "bench_eval_generation.py").is_file()
            else "no evaluation generation in this checkout",
        ),
    ]


def run_stage(stage: Stage, cap_s: float, log: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run one stage in its own process group; kill the whole group at its cap."""
    started = time.monotonic()
    with log.open("a", encoding="utf-8") as sink:
        sink.write(f"\n===== {stage.name}: {' '.join(stage.command)} (cap {cap_s:.0f} s)\n")
        sink.flush()
        process = subprocess.Popen(
            stage.command,
            cwd=REPO,
            env={**env, **stage.env},
            stdout=subprocess.PIPE if stage.name == "environment" else sink,
            stderr=sink,
            start_new_session=True,
            text=True,
        )
        try:
            stdout, _ = process.communicate(timeout=cap_s)
            status = "ok" if process.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, _ = process.communicate()
            status = "timeout"
    result: dict[str, Any] = {"status": status, "seconds": round(time.monotonic() - started, 1)}
    result["returncode"] = process.returncode
    if stage.name == "environment" and status == "ok":
        result["figures"] = json.loads(stdout.strip().splitlines()[-1])
    if stage.result_json is not None and stage.result_json.is_file():
        result["figures"] = json.loads(stage.result_json.read_text())
    if stage.junit is not None and stage.junit.is_file():
        result["figures"] = junit_summary(stage.junit)
    return result


def junit_summary(path: Path) -> dict[str, Any]:
    tests = {}
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
        tests[f"{Path(case.get('classname', '').replace('.', '/')).name}::{case.get('name')}"] = {
            "outcome": outcome,
            "seconds": round(float(case.get("time", 0)), 1),
        }
    counts = {o: sum(t["outcome"] == o for t in tests.values()) for o in ("passed", "failed", "error", "skipped")}
    return {"counts": counts, "tests": tests}


def headline(name: str, result: dict[str, Any]) -> str:
    """The one-line figures of a stage for the table."""
    figures = result.get("figures")
    if not figures:
        return result.get("reason", "")
    if name == "environment":
        versions = figures["versions"]
        device = figures.get("device", "no CUDA device")
        return f"{device}; torch {versions['torch']}, transformers {versions['transformers']}, trl {versions['trl']}"
    if name == "gpu_tests":
        return ", ".join(f"{n} {o}" for o, n in figures["counts"].items() if n)
    if "rows" in figures:
        parts = []
        for row in figures["rows"]:
            mfu = f", MFU {100 * row['mfuDone']:.0f}%" if row.get("mfuDone") is not None else ""
            ratio = f", ours/TRL {row['oursOverTrl']:.2f}x" if row.get("oursOverTrl") else ""
            memory = f", {row['peakMemoryGiB']:.0f} GiB" if row.get("peakMemoryGiB") else ""
            parts.append(f"{row['method']} {row['trainer']} {row['tokensPerSecond']:,.0f} tok/s{mfu}{memory}{ratio}")
        return "; ".join(parts)
    return json.dumps(figures)[:160]


def run(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "gpu_check.log"
    log.write_text("", encoding="utf-8")
    figures_path = args.out / "gpu_figures.json"
    env = {**os.environ, "SFT_SHARED_DATA": str(args.data), "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    deadline = time.monotonic() + args.budget
    report: dict[str, Any] = {"dryRun": args.dry_run, "budgetSeconds": args.budget, "stages": {}}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for stage in stages(args, Path(tmp)):
            left = deadline - time.monotonic()
            if stage.skip_reason is not None:
                result: dict[str, Any] = {"status": "skipped", "reason": stage.skip_reason}
            elif left < 20:
                result = {"status": "skipped", "reason": f"out of time ({args.budget:.0f} s budget)"}
            else:
                print(f"[gpu_check] {stage.name}: {stage.what} (cap {min(stage.cap_s, left):.0f} s)", flush=True)
                result = run_stage(stage, min(stage.cap_s, left), log, env)
            report["stages"][stage.name] = {"what": stage.what, "command": " ".join(stage.command), **result}
            figures_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nGPU check{' (dry run on CPU)' if args.dry_run else ''}: {figures_path}\n")
    print("| stage | status | s | figures |")
    print("|---|---|---:|---|")
    for name, result in report["stages"].items():
        print(f"| {name} | {result['status']} | {result.get('seconds', '')} | {headline(name, result)} |")
    failed = [n for n, r in report["stages"].items() if r["status"] in ("failed", "timeout")]
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    prepare_parser = commands.add_parser("prepare")
    prepare_parser.add_argument(
        "--shared-data", type=Path, default=Path(os.environ.get("SFT_SHARED_DATA", REPO.parent / "shared" / "data"))
    )
    commands.add_parser("wheels-to-install")
    commands.add_parser("environment")
    run_parser = commands.add_parser("run")
    run_parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU")
    run_parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or REPO / "benchmarks/results/gpu"))
    run_parser.add_argument("--budget", type=float, default=None, help="seconds for all stages (GPU 540, dry 2400)")
    args = parser.parse_args()

    if args.command == "prepare":
        prepare(args.shared_data)
    elif args.command == "wheels-to-install":
        for wheel in wheels_to_install():
            print(wheel)
    elif args.command == "environment":
        print(json.dumps(environment()))
    else:
        args.out = args.out.resolve()
        args.budget = args.budget or (2400 if args.dry_run else 540)
        # The shared data where it is (here), else the copy that travelled (the GPU machine).
        places = [os.environ.get("SFT_SHARED_DATA", ""), INPUTS / "data", REPO.parent / "shared" / "data"]
        args.data = next((Path(p) for p in places if p and Path(p).is_dir()), INPUTS / "data")
        args.tokenizer = INPUTS / "tokenizer" if (INPUTS / "tokenizer").is_dir() else TOKENIZER_SOURCE
        sys.exit(run(args))


if __name__ == "__main__":
    main()
