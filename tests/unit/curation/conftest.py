"""Shared fixtures: the real data in ../shared/data and the real target tokenizer."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests" / "data" / "curation"))

from support.data import SHARED_DATA as DATA  # noqa: E402

TOKENIZER_DIR = ROOT / ".cache" / "models" / "smollm2-135m-instruct"


def load(name: str) -> list:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.exists():
        pytest.skip(f"shared data folder {DATA} is missing")
    return DATA


@pytest.fixture(scope="session")
def alpaca(data_dir: Path) -> list[dict]:
    return load("alpaca_data.json")


@pytest.fixture(scope="session")
def tokenizer_view():
    if not (TOKENIZER_DIR / "tokenizer.json").exists():
        pytest.skip(f"target tokenizer not built yet at {TOKENIZER_DIR} (the trainer's model conversion produces it)")
    from sft_trainer.curation.tokens import TokenizerView

    return TokenizerView.load(str(TOKENIZER_DIR))
