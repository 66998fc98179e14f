"""Bad data, end to end: every hostile kind through the real curation and training command.

tests/data/hostile_inputs.py lists the kinds: malformed and hostile records,
broken files (truncated, other encodings, wrong Parquet schema, a named pipe,
a 100 MB record ...) and path tricks (`..`, symbolic links out of the volume,
a link loop, a link planted in the output folder). For each kind, both
`python -m sft_trainer curate` and `... train` (one process runs them all,
see cli_batch.py) must:

* not crash and not hang (a run has 90 s; the whole batch a subprocess timeout);
* read what can be read (exit 0; training may exit 42 only because nothing is
  trainable), or refuse with exit 42 and a message naming the file or field;
* account for every record: curated + rejected + review (curation), train +
  eval + rejected_samples (training), each record exactly once, each
  rejection with a reason;
* write nothing outside its output folder: the batch runs under
  `strace -f` (the calls that write) and every path created, opened for writing,
  renamed, removed or changed is checked (with HOME, TMPDIR, HF_HOME and
  XDG_CACHE_HOME pointing at folders that count as outside). Without strace
  a before/after snapshot of the whole test folder decides instead.

The last test prints the figure of the issue.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))

import hostile_inputs as hostile  # noqa: E402
from cli_batch import MARKER  # noqa: E402

PIPELINES: tuple[hostile.Pipeline, ...] = ("curate", "train")
STRACE = shutil.which("strace")
BATCH_SECONDS_LIMIT = 420
PEAK_RSS_LIMIT_MB = 3000

TRAINING = {
    "maxSteps": 2,
    "batchSize": 2,
    "maxSeqLength": 256,
    "evalFraction": 0.2,
    "evalEverySteps": 2,
    "checkpointEverySteps": 2,
    "probes": {"memorisationPrompts": 0},
    "evaluation": {"enabled": False},
}


@dataclass
class Run:
    """One kind (or the record corpus) through one pipeline: where it read and wrote, how it ended."""

    id: str
    pipeline: hostile.Pipeline
    case: hostile.Case
    refused: str | None
    exit: int | str = "not run"
    stderr: str = ""
    seconds: float = 0.0
    written_outside: set[str] = field(default_factory=set)
    transient: set[str] = field(default_factory=set)
    """Scratch files outside the output folder that the run removed again (see `settle_transient`)."""
    placed: dict[int, list[tuple[str, list[str]]]] | None = None
    """`placements(run)`, read once."""

    @property
    def output(self) -> Path:
        return Path(self.case.output)

    def ended(self, result: dict[str, Any]) -> None:
        """Take cli_batch's result for this run."""
        self.exit, self.stderr, self.seconds = result["exit"], result["stderr"], result["seconds"]

    def allowed(self, path: str) -> bool:
        """Inside the output folder as configured (its last component not resolved: it may be the trick)."""
        folder = os.path.join(os.path.realpath(os.path.dirname(self.case.output)), os.path.basename(self.case.output))
        return os.path.commonpath([os.path.realpath(path), folder]) == folder


@dataclass
class BadData:
    layout: hostile.Layout
    runs: dict[str, Run]
    by_kind: dict[str, dict[str, str]]
    """kind name -> pipeline -> run id."""
    corpus: list[tuple[str, int, str | None]]
    """Record kinds: (kind, source_index in the corpus, curation reason)."""
    peak_rss_mb: int
    watched_changes: list[str]
    """Paths created, changed or removed outside every output folder, from the before/after snapshot."""


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48]


# ----------------------------------------------------------------- set-up


def run_config(pipeline: hostile.Pipeline, case: hostile.Case, model: Path) -> dict[str, Any]:
    if pipeline == "curate":
        # Every judge runs but the scorer LM: it scores ~0.5 records/s on 2 CPU cores, which 58 runs under
        # strace cannot afford; its own hostile inputs (empty, NaN, 100k tokens, non-English, code) are
        # tests/trainer/test_scorer.py's.
        curation = {"scorer": {"enabled": False}}
        return {"input": case.dataset, "outputDir": case.output, "tokenizer": str(model), "curation": curation}
    return {"model": str(model), "dataset": case.dataset, "outputDir": case.output, "training": TRAINING}


def plan_runs(
    layout: hostile.Layout, model: Path, configs: Path
) -> tuple[dict[str, Run], dict[str, dict[str, str]], list[tuple[str, int, str | None]]]:
    """Every run (the record corpus and each file and path kind, per pipeline) with its run config written."""
    corpus_path = layout.data / "records" / "corpus.jsonl"
    corpus = hostile.write_record_corpus(corpus_path)
    runs: dict[str, Run] = {}
    by_kind: dict[str, dict[str, str]] = {}
    for pipeline in PIPELINES:
        corpus_run = f"{pipeline}-record-corpus"
        runs[corpus_run] = Run(
            corpus_run,
            pipeline,
            hostile.Case(str(corpus_path), str(layout.out / corpus_run), len(corpus) + len(hostile.GOOD_RECORDS)),
            None,
        )
        for number, kind in enumerate(hostile.kinds()):
            if kind.level == "record":
                by_kind.setdefault(kind.name, {})[pipeline] = corpus_run
                continue
            run_id = f"{pipeline}-{number:02d}-{slug(kind.name)}"
            case = kind.lay_out(layout, pipeline, layout.out / run_id)
            runs[run_id] = Run(run_id, pipeline, case, kind.refused)
            by_kind.setdefault(kind.name, {})[pipeline] = run_id
    for run in runs.values():
        (configs / f"{run.id}.yaml").write_text(yaml.safe_dump(run_config(run.pipeline, run.case, model)))
    return runs, by_kind, corpus


# Where the batch's home, scratch and caches are: inside the watched test folder, outside every output.
PLACES = {"HOME": "home", "TMPDIR": "tmp", "HF_HOME": "hf-home", "XDG_CACHE_HOME": "cache"}


def batch_env(root: Path) -> dict[str, str]:
    """The pod-like environment: volumes under SFT_VOLUMES_ROOT, every cache in a watched folder, no bytecode."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "XDG_", "SFT_"))}
    env.update({variable: str(root / name) for variable, name in PLACES.items()})
    env.update(
        SFT_VOLUMES_ROOT=str(root / "volumes"),
        PYTHONDONTWRITEBYTECODE="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        OMP_NUM_THREADS="2",
        TOKENIZERS_PARALLELISM="false",
        # The curation models the trainer image bakes in (read, never written: a write would be caught).
        SFT_MODEL_CACHE=os.environ["SFT_MODEL_CACHE"],
    )
    return env


def snapshot(root: Path) -> dict[str, tuple[int, int, bool]]:
    """Every entry under `root`: (size, mtime in ns, is a link). Links are not followed."""
    entries = {}
    for parent, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(parent, name)
            info = os.lstat(path)
            if os.path.isdir(path) and not os.path.islink(path):
                entries[path] = (0, 0, False)  # a folder's mtime moves with every entry added: the entries are checked
            else:
                entries[path] = (info.st_size, info.st_mtime_ns, os.path.islink(path))
    return entries


def run_batch(root: Path, plan: list[dict[str, Any]]) -> tuple[dict[str, Any], Path | None]:
    batch = root / "batch"
    batch.mkdir()
    (batch / "plan.json").write_text(json.dumps(plan))
    command = [
        sys.executable,
        str(Path(__file__).with_name("cli_batch.py")),
        str(batch / "plan.json"),
        str(batch / "results.json"),
    ]
    log = batch / "strace.log" if STRACE else None
    if log:
        command = [STRACE, "-f", "-qq", "-y", "-s", "4096", "-e", STRACE_FILTER, "-o", str(log), *command]
    work = root / "work"
    done = subprocess.run(
        command, cwd=work, env=batch_env(root), capture_output=True, text=True, timeout=BATCH_SECONDS_LIMIT
    )
    assert done.returncode == 0, f"the batch itself failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return json.loads((batch / "results.json").read_text()), log


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[BadData]:
    root = tmp_path_factory.mktemp("bad-data")
    layout = hostile.Layout(root)
    layout.create()
    configs = root / "configs"
    for folder in (configs, root / "work", *(root / name for name in PLACES.values())):
        folder.mkdir()
    runs, by_kind, corpus = plan_runs(layout, tiny_model_dir, configs)
    before = snapshot(root)
    results, log = run_batch(
        root, [{"id": r.id, "argv": [r.pipeline, str(configs / f"{r.id}.yaml")]} for r in runs.values()]
    )
    for run_id, result in results["runs"].items():
        runs[run_id].ended(result)
    if log:
        attribute_writes(log, runs, allowed_elsewhere={str(root / "batch" / "results.json")})
        settle_transient(runs.values(), scratch=(str(root / "tmp"), "/dev/shm/"))
    changes = changes_outside(before, snapshot(root), runs.values(), root / "batch")
    yield BadData(layout, runs, by_kind, corpus, results["peakRssMb"], changes)
    remove_big_files(root)


def remove_big_files(root: Path) -> None:
    """pytest keeps the last runs' folders; the 100 MB record and its rejected copies need not stay."""
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_size > 10_000_000:
            path.unlink()


# ----------------------------------------------------------- strace analysis

_CALL = re.compile(r"^(?P<pid>\d+)\s+(?P<call>\w+)\((?P<args>.*)\)\s+=\s+(?P<result>-?\d+|\?)")
_ARG = re.compile(r'\s*("(?:[^"\\]|\\.)*"|\d+<[^>]*>|[^,]+),?')
# Which arguments name a path the call writes: (dirfd position or None, path position).
_WRITES: dict[str, list[tuple[int | None, int]]] = {
    **{
        name: [(None, 0)]
        for name in (
            "creat",
            "truncate",
            "mkdir",
            "rmdir",
            "unlink",
            "chmod",
            "chown",
            "lchown",
            "utime",
            "utimes",
            "mknod",
        )
    },
    **{name: [(0, 1)] for name in ("mkdirat", "unlinkat", "fchmodat", "fchownat", "utimensat", "futimesat", "mknodat")},
    "rename": [(None, 0), (None, 1)],
    "renameat": [(0, 1), (2, 3)],
    "renameat2": [(0, 1), (2, 3)],
    "link": [(None, 1)],
    "linkat": [(2, 3)],
    "symlink": [(None, 1)],
    "symlinkat": [(1, 2)],
}
_OPENS = {"open": (None, 0, 1), "openat": (0, 1, 2), "openat2": (0, 1, 2)}
# Traced: the calls above only (not stat and access, which imports make by the hundred thousand);
# "?" lets strace skip a name this architecture does not have.
STRACE_FILTER = "trace=" + ",".join(f"?{name}" for name in [*_OPENS, *_WRITES])
_WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC")
# Written by every process and harmless.
_ALWAYS_ALLOWED = ("/dev/null", "/dev/tty", "/dev/pts/")


def strace_calls(log: Path) -> list[tuple[str, list[str], int]]:
    """(call, arguments, result) of every call, unfinished calls joined with their resumption."""
    pending: dict[str, str] = {}
    calls = []
    for line in log.read_text(errors="replace").splitlines():
        pid, _, rest = line.partition(" ")
        rest = rest.lstrip()
        if rest.endswith("<unfinished ...>"):
            pending[pid] = rest.removesuffix("<unfinished ...>")
            continue
        resumed = re.match(r"<\.\.\. \w+ resumed>", rest)
        if resumed:
            rest = pending.pop(pid, "") + rest[resumed.end() :]
        found = _CALL.match(f"{pid} {rest}")
        if found and found["result"] != "?":
            calls.append((found["call"], [a.strip() for a in _ARG.findall(found["args"])], int(found["result"])))
    return calls


def _path(args: list[str], dirfd: int | None, position: int, cwd: str) -> str | None:
    if position >= len(args):
        return None
    name = args[position]
    base = cwd
    if dirfd is not None and "<" in args[dirfd]:
        base = args[dirfd][args[dirfd].index("<") + 1 : -1]
    if name == "NULL":  # utimensat(fd, NULL, ...): the fd itself
        return base
    if not name.startswith('"'):
        return None
    name = name[1:-1].encode().decode("unicode_escape")
    return os.path.normpath(os.path.join(base, name))


def written_paths(call: str, args: list[str], cwd: str) -> list[str]:
    """Paths this call created, wrote, renamed, removed or changed."""
    if call in _OPENS:
        dirfd, position, flags = _OPENS[call]
        if flags < len(args) and any(flag in args[flags] for flag in _WRITE_FLAGS):
            return [p for p in [_path(args, dirfd, position, cwd)] if p]
        return []
    return [p for dirfd, position in _WRITES.get(call, []) if (p := _path(args, dirfd, position, cwd))]


def attribute_writes(log: Path, runs: dict[str, Run], allowed_elsewhere: set[str]) -> None:
    """Give every run the paths it wrote outside its output folder (the markers split the log per run)."""
    current: Run | None = None
    cwd = str(log.parent.parent / "work")
    for call, args, result in strace_calls(log):
        if any(MARKER in a for a in args):
            run_id = next(a for a in args if MARKER in a).strip('"').rsplit("/", 1)[-1]
            current = runs.get(run_id)
            continue
        if result < 0:
            continue
        for path in written_paths(call, args, cwd):
            if path.startswith(_ALWAYS_ALLOWED) or path in allowed_elsewhere:
                continue
            if current is None or not current.allowed(path):
                owner = current or next(iter(runs.values()))  # before the first run: blame the first
                owner.written_outside.add(f"{call} {path}")


def settle_transient(runs: Any, scratch: tuple[str, ...]) -> None:
    """Scratch files that are gone again do not count as written outside.

    Importing dill creates and at once deletes a file in TMPDIR (the pod's
    scratch volume), and multiprocessing does the same with POSIX semaphores
    in /dev/shm. They hold no data and leave nothing behind; anything still
    there after the batch, or written anywhere else, does count.
    """
    for run in runs:
        gone = {
            entry
            for entry in run.written_outside
            if entry.split(" ", 1)[1].startswith(scratch) and not os.path.lexists(entry.split(" ", 1)[1])
        }
        run.written_outside -= gone
        run.transient |= gone


def changes_outside(before: dict, after: dict, runs: Any, batch: Path) -> list[str]:
    """Entries created, changed or removed under the test folder that lie in no run's output folder."""
    changed = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    runs = list(runs)
    return sorted(
        p
        for p in changed
        if not p.startswith(str(batch)) and not any(run.allowed(p) or Path(p) == run.output for run in runs)
    )


# ------------------------------------------------------------- accounting


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    # split("\n"), not splitlines(): a record may hold a raw U+2028, which splitlines() cuts at.
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def placements(run: Run) -> dict[int, list[tuple[str, list[str]]]]:
    """source_index -> every (place, reasons) the run's outputs put it in."""
    if run.placed is None:
        run.placed = read_placements(run)
    return run.placed


def read_placements(run: Run) -> dict[int, list[tuple[str, list[str]]]]:
    found: dict[int, list[tuple[str, list[str]]]] = {}
    if run.pipeline == "curate":
        for place in ("curated", "rejected", "review"):
            for row in read_jsonl(run.output / f"{place}.jsonl"):
                found.setdefault(row["source_index"], []).append((place, row.get("reasons", [])))
        return found
    split = json.loads((run.output / "data_split.json").read_text())
    reasons = {
        row["source_index"]: row["reasons"]
        for row in read_jsonl(run.output / "rejected_samples.jsonl")
        if row["origin"] == "dataset"
    }
    for place in ("train", "eval", "rejected"):
        for index in split[place]:
            found.setdefault(index, []).append((place, reasons.get(index, []) if place == "rejected" else []))
    return found


def records_lost(run: Run) -> int:
    """Records read but in no output, in two, or rejected without a reason (0 for refused runs: nothing was read)."""
    if run.refused:
        return 0
    found = placements(run)
    missing = run.case.records - len(set(found) & set(range(run.case.records)))
    doubled = sum(len(places) - 1 for places in found.values())
    unexplained = sum(
        1 for places in found.values() for place, reasons in places if place in ("rejected", "review") and not reasons
    )
    return missing + doubled + unexplained


def run_problems(run: Run) -> list[str]:
    """Everything wrong with how one run ended; empty when it handled its input."""
    problems = [f"wrote outside its output folder: {sorted(run.written_outside)[:3]}"] if run.written_outside else []
    if run.exit in ("crash", "hang", "not run"):
        return [*problems, f"{run.exit}: {run.stderr[-800:]}"]
    if run.refused:
        if run.exit != 42 or run.refused not in run.stderr:
            problems.append(f"expected exit 42 with {run.refused!r}, got {run.exit}: {run.stderr[-400:]}")
        elif run.case.dataset not in run.stderr and not re.search(r"\b(input|dataset|outputDir): ", run.stderr):
            problems.append(f"the message names neither the file nor the field: {run.stderr[-400:]}")
        return problems
    expected_exit = 0 if run.pipeline == "curate" or run.case.trainable else 42
    if run.exit != expected_exit:
        problems.append(f"expected exit {expected_exit}, got {run.exit}: {run.stderr[-600:]}")
    elif expected_exit == 42 and "no trainable record" not in run.stderr:
        problems.append(f"exit 42 for another reason than 'no trainable record': {run.stderr[-400:]}")
    if (lost := records_lost(run)) != 0:
        problems.append(f"{lost} records lost, doubled or rejected without a reason")
    return problems


def record_problems(run: Run, index: int, curation_reason: str | None) -> list[str]:
    """What is wrong with where one record kind's line ended up."""
    places = placements(run).get(index, [])
    if len(places) != 1:
        return [f"source_index {index} is in {len(places)} places"]
    place, reasons = places[0]
    if curation_reason is None:  # hostile but legitimate text: kept, and trained as plain text
        wanted = ("curated", "review") if run.pipeline == "curate" else ("train", "eval")
        return [] if place in wanted else [f"legitimate text was {place} ({reasons})"]
    if run.pipeline == "curate" and reasons[:1] != [curation_reason]:
        return [f"curation reason {reasons[:1]}, expected {curation_reason}"]
    # Format problems are found by the shared reader: training must give the same reason.
    if run.pipeline == "train" and curation_reason.startswith("format.") and reasons[:1] != [curation_reason]:
        return [f"training reason {reasons[:1]}, expected {curation_reason}"]
    return []


def kind_problems(data: BadData, kind: hostile.Kind, pipeline: str) -> list[str]:
    run = data.runs[data.by_kind[kind.name][pipeline]]
    problems = run_problems(run)
    if kind.level == "record" and not problems:
        index = next(i for name, i, _ in data.corpus if name == kind.name)
        problems = record_problems(run, index, kind.reason)
    return problems


def failures(data: BadData, pipeline: str) -> dict[str, list[str]]:
    return {k.name: p for k in hostile.kinds() if (p := kind_problems(data, k, pipeline))}


# ------------------------------------------------------------------ tests


def test_curation_handles_every_kind(bad_data: BadData) -> None:
    assert failures(bad_data, "curate") == {}


def test_training_handles_every_kind(bad_data: BadData) -> None:
    assert failures(bad_data, "train") == {}


def test_nothing_is_written_outside_the_output_folders(bad_data: BadData) -> None:
    outside = {run.id: sorted(run.written_outside) for run in bad_data.runs.values() if run.written_outside}
    assert outside == {}
    assert bad_data.watched_changes == []
    assert (bad_data.layout.outside / "victim.txt").read_text() == "must never be overwritten\n"


def test_path_tricks_are_refused_before_anything_is_read(bad_data: BadData) -> None:
    for kind in hostile.PATH_KINDS:
        for pipeline in PIPELINES:
            run = bad_data.runs[bad_data.by_kind[kind.name][pipeline]]
            assert run.exit == 42, (kind.name, pipeline, run.stderr[-300:])
            # Nothing of the other volume or /proc reached an output.
            for name in ("rejected.jsonl", "rejected_samples.jsonl", "curated.jsonl"):
                target = run.output / name
                assert not target.exists() or target.is_symlink(), (kind.name, name)


def test_a_100_mb_record_is_rejected_quickly_and_cheaply(bad_data: BadData) -> None:
    kind = next(k for k in hostile.FILE_KINDS if "big" in k.tags)
    reasons = {}
    for pipeline in PIPELINES:
        run = bad_data.runs[bad_data.by_kind[kind.name][pipeline]]
        assert run.seconds < 60, (pipeline, run.seconds)
        reasons[pipeline] = [
            places[0][1][:1] for index, places in placements(run).items() if index == run.case.records - 1
        ][0]
    assert reasons == {"curate": ["length.response_too_long"], "train": ["template.overlong"]}
    assert bad_data.peak_rss_mb < PEAK_RSS_LIMIT_MB, bad_data.peak_rss_mb
    print(
        f"\n100 MB record: curation {bad_data.runs[bad_data.by_kind[kind.name]['curate']].seconds} s, "
        f"training {bad_data.runs[bad_data.by_kind[kind.name]['train']].seconds} s, peak RSS of the batch {bad_data.peak_rss_mb} MB"
    )


def test_the_write_check_sees_a_write_outside(tmp_path: Path) -> None:
    """The strace analysis itself: a write into the output passes; one beside it and one through a planted link do not."""
    if not STRACE:
        pytest.skip("strace is not installed (hack/install-system-deps.sh installs it)")
    out, victim = tmp_path / "out", tmp_path / "victim.txt"
    out.mkdir()
    victim.write_text("x")
    (out / "link.txt").symlink_to(victim)
    script = "\n".join(
        [
            "import contextlib, os",
            f"with contextlib.suppress(OSError): open({MARKER + '/only'!r})",  # as cli_batch marks a run's start
            f"open({str(out / 'ok.txt')!r}, 'w').write('1')",
            f"open({str(tmp_path / 'beside.txt')!r}, 'w').write('2')",
            f"open({str(out / 'link.txt')!r}, 'a').write('3')",
        ]
    )
    (tmp_path / "work").mkdir()
    log = tmp_path / "batch" / "strace.log"
    log.parent.mkdir()
    command = [
        STRACE,
        "-f",
        "-qq",
        "-y",
        "-s",
        "4096",
        "-e",
        STRACE_FILTER,
        "-o",
        str(log),
        sys.executable,
        "-c",
        script,
    ]
    subprocess.run(command, check=True, cwd=tmp_path / "work")
    run = Run("only", "curate", hostile.Case("unused", str(out), 0), None)
    attribute_writes(
        log, {"first": Run("first", "curate", hostile.Case("", str(tmp_path / "none"), 0), None), "only": run}, set()
    )
    assert {entry.split(" ", 1)[1] for entry in run.written_outside} == {
        str(tmp_path / "beside.txt"),
        str(out / "link.txt"),
    }


@pytest.mark.parametrize("flavour", ["smollm2", "llama"])
def test_chat_markup_in_content_never_becomes_control_tokens(flavour: str, tiny_tokenizer, llama_tokenizer) -> None:
    """Template syntax in a record is either rejected (it is this tokenizer's special token) or tokenized as text."""
    from sft_trainer.formats import Message, record_to_conversation
    from sft_trainer.training.masking import SPECIAL_TOKEN_TEXT, Rejection, SampleBuilder
    from sft_trainer.training.templates import resolve_template

    tokenizer = tiny_tokenizer if flavour == "smollm2" else llama_tokenizer
    builder = SampleBuilder(tokenizer, resolve_template(tokenizer), max_seq_length=512)
    special_ids = set(tokenizer.all_special_ids)
    outcome = {}
    for kind in hostile.TEMPLATE_INJECTIONS:
        conversation = record_to_conversation(hostile.record_of(kind), 0)
        sample = builder.build(conversation)
        if isinstance(sample, Rejection):
            assert sample.reason == SPECIAL_TOKEN_TEXT, (kind, sample)
            token = re.search(r"special token text '(.+)'", sample.detail)[1]
            assert token in tokenizer.all_special_tokens or token in builder.template.source, (kind, token)
            outcome[kind] = "rejected"
            continue
        # The same conversation with plain words: the template's own markup, and so its special tokens.
        plain = conversation.__class__([Message(m.role, "plain words") for m in conversation.messages], 0)
        markup_only = builder.build(plain)
        count = lambda ids: sum(1 for i in ids if i in special_ids)  # noqa: E731
        assert count(sample.input_ids) == count(markup_only.input_ids), kind
        assert conversation.messages[0].content in tokenizer.decode(sample.input_ids), kind  # verbatim, not rendered
        outcome[kind] = "text"
    expected = {kind: "text" for kind in hostile.TEMPLATE_INJECTIONS}
    expected["ChatML markup in the prompt"] = "rejected"  # <|im_start|> and <|im_end|> are both tokenizers' specials
    if flavour == "llama":
        expected["HTML <s> and </s> in the prompt"] = "rejected"  # <s> is this tokenizer's BOS
    assert outcome == expected


def test_figure_bad_data(bad_data: BadData) -> None:
    kinds = hostile.kinds()
    failed = {pipeline: failures(bad_data, pipeline) for pipeline in PIPELINES}
    handled = {pipeline: len(kinds) - len(failed[pipeline]) for pipeline in PIPELINES}
    both = sum(1 for k in kinds if all(k.name not in failed[p] for p in PIPELINES))
    lost = sum(records_lost(run) for run in bad_data.runs.values() if run.exit not in ("crash", "hang"))
    outside = len(
        {path for run in bad_data.runs.values() for path in run.written_outside} | set(bad_data.watched_changes)
    )
    levels = Counter(k.level for k in kinds)
    slowest = max(bad_data.runs.values(), key=lambda run: run.seconds)
    print(
        f"\nFIGURE bad-data: kinds handled {both}/{len(kinds)} "
        f"(curation {handled['curate']}/{len(kinds)}, training {handled['train']}/{len(kinds)}), "
        f"records lost {lost}, files written outside output {outside}"
        f"\n  kinds: {levels['record']} record, {levels['file']} file, {levels['path']} path; "
        f"write check: {'strace' if STRACE else 'snapshot'}; runs: {len(bad_data.runs)}, "
        f"slowest {slowest.id} {slowest.seconds} s, peak RSS {bad_data.peak_rss_mb} MB; "
        f"scratch files created and removed again: {sorted({p for r in bad_data.runs.values() for p in r.transient})}"
    )
    assert len(kinds) >= 30
    assert both == len(kinds) and lost == 0 and outside == 0
