"""`sftctl review` used as a person uses it: tmux runs it, the test presses keys, reads the screen, checks the files."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_review import curate_into, plant

from sft_trainer.curation.entrypoint import verify_accounting
from sft_trainer.curation.review import DECISIONS_FILE, DROPPED, Outputs

ROOT = Path(__file__).resolve().parents[3]


class Tmux:
    """One tmux server of our own (its socket in the test's folder), one window of 110x36."""

    def __init__(self, folder: Path) -> None:
        if shutil.which("tmux") is None:
            pytest.skip("tmux is missing: hack/install-system-deps.sh installs it")
        self.folder = folder
        self.starts = 0
        self.base: list[str] = []

    def start(self, command: list[str]) -> None:
        # A server (socket) per start: `kill-server` returns before the old server has gone, and a new
        # session on its socket can fail while it is still exiting.
        self.starts += 1
        self.base = ["tmux", "-S", str(self.folder / f"tmux{self.starts}.sock")]
        # The shell stays after the command, so what it printed on exit can be read. COLUMNS and LINES
        # (pytest's) would override the window's size for Textual.
        line = f"env -u COLUMNS -u LINES {shlex.join(command)}; echo EXIT=$?; sleep 600"
        subprocess.run([*self.base, "new-session", "-d", "-x", "110", "-y", "36", "-c", str(ROOT), line], check=True)

    def screen(self) -> str:
        return subprocess.run([*self.base, "capture-pane", "-p"], capture_output=True, text=True, check=True).stdout

    def wait_for(self, *texts: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if all(t in screen for t in texts):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"screen never showed {texts}; it shows:\n{screen}")
            time.sleep(0.2)

    def keys(self, *keys: str) -> None:
        subprocess.run([*self.base, "send-keys", *keys], check=True)

    def type(self, text: str) -> None:
        subprocess.run([*self.base, "send-keys", "-l", text], check=True)

    def stop(self) -> None:
        if self.base:
            subprocess.run([*self.base, "kill-server"], check=False, capture_output=True)


@pytest.fixture
def tmux(tmp_path: Path):
    terminal = Tmux(tmp_path)
    yield terminal
    terminal.stop()


def review_command(out: Path) -> list[str]:
    return [sys.executable, "-m", "sftctl.cli", "review", str(out), "--reviewer", "ana"]


def test_a_reviewer_works_through_the_queue_and_a_second_run_resumes(
    tmux: Tmux, tmp_path: Path, alpaca: list[dict]
) -> None:
    out = curate_into(plant(alpaca[:60]), tmp_path)
    total = len(Outputs.read(out).held)
    tmux.start(review_command(out))

    tmux.wait_for(
        f"0/{total} decided",
        "Record #3",
        "Held for ood.mixed_script: a word mixes Latin letters",
        "mixed-script word 'аre': U+0430 CYRILLIC SMALL LETTER A",
    )

    tmux.keys("k")
    tmux.wait_for(f"1/{total} decided", "Record #5", "Tele⟦U+200B⟧gram", "invisible character: U+200B ZERO WIDTH SPACE")

    tmux.keys("d")
    tmux.wait_for("Note (optional)")
    tmux.type("hidden character")
    tmux.keys("Enter")
    tmux.wait_for(f"2/{total} decided", "Record #10")

    tmux.keys("e")
    tmux.wait_for("ctrl+s: keep the edited version")
    tmux.type("Edited: ")
    tmux.keys("C-s")
    tmux.wait_for(f"3/{total} decided", "Record #12")

    tmux.keys("s")  # skip: nothing decided
    tmux.wait_for(f"3/{total} decided", "Record #17")
    tmux.keys("u")  # undo the edit of record 10
    tmux.wait_for(f"2/{total} decided", "Record #10")
    tmux.keys("k")
    tmux.wait_for(f"3/{total} decided")

    tmux.keys("/")
    tmux.wait_for("reason contains")
    tmux.type("mixed")
    tmux.keys("Enter")
    tmux.wait_for("filter: mixed", "Record #17")

    tmux.keys("q")
    tmux.wait_for(f"Applied: 2 kept, 1 dropped, {total - 3} pending", "EXIT=0")

    log = [json.loads(line) for line in (out / DECISIONS_FILE).read_text().splitlines()]
    assert [(d["source_index"], d["decision"]) for d in log] == [
        (3, "keep"),
        (5, "drop"),
        (10, "edit"),
        (10, "undo"),
        (10, "keep"),
    ]
    assert log[2]["edited_response"].startswith("Edited: Julius C")
    assert {d["reviewer"] for d in log} == {"ana"}
    verify_accounting(out, 60)
    curated = {r["source_index"]: r for r in map(json.loads, (out / "curated.jsonl").read_text().splitlines())}
    rejected = {r["source_index"]: r for r in map(json.loads, (out / "rejected.jsonl").read_text().splitlines())}
    assert curated[3]["review"]["decision"] == curated[10]["review"]["decision"] == "keep"
    assert not curated[10]["messages"][-1]["content"].startswith("Edited")  # the edit was undone
    assert rejected[5]["reasons"][0] == DROPPED and rejected[5]["detail"] == "hidden character"
    report = json.loads((out / "report.json").read_text())
    assert report["status"]["review"] == {"pending": total - 3, "kept": 2, "dropped": 1}

    tmux.stop()
    tmux.start(review_command(out))  # resumes at the first undecided record
    tmux.wait_for(f"3/{total} decided", "Record #12")
    tmux.keys("q")
    tmux.wait_for(f"Already applied: 2 kept, 1 dropped, {total - 3} pending", "EXIT=0")
