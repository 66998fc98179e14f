"""GPU tests: bf16 training, one-process FSDP2, kill-and-resume, export and reload, packed attention.

Every test here is marked `gpu` and skipped where CUDA is absent, unless
SFT_GPU_TESTS_ON_CPU=1: then the same test bodies run on the CPU (the dry run
of benchmarks/gpu_check.sh uses it, so the only thing left to chance on the
GPU machine is the GPU). The tiny tokenizer, model and data fixtures are the
trainer tests' own (tests/trainer/conftest.py), re-exported here.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

ON_CPU = os.environ.get("SFT_GPU_TESTS_ON_CPU") == "1"


def _trainer_fixtures():  # type: ignore[no-untyped-def]
    """tests/trainer/conftest.py as a plain module (it also puts tests/trainer on sys.path for its helpers)."""
    path = Path(__file__).resolve().parents[1] / "trainer" / "conftest.py"
    spec = importlib.util.spec_from_file_location("trainer_fixtures_for_gpu_tests", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_trainer = _trainer_fixtures()
lima_texts = _trainer.lima_texts
tiny_tokenizer = _trainer.tiny_tokenizer
tiny_model_dir = _trainer.tiny_model_dir
alpaca_gpt4_small = _trainer.alpaca_gpt4_small


def _has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    mine = [item for item in items if here in Path(str(item.fspath)).parents]
    for item in mine:
        item.add_marker(pytest.mark.gpu)
    if _has_cuda() or ON_CPU:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (SFT_GPU_TESTS_ON_CPU=1 runs the bodies on the CPU)")
    for item in mine:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def device():  # type: ignore[no-untyped-def]
    """cuda:0, or the CPU in a dry run."""
    import torch

    if _has_cuda():
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 comparisons must be fp32, not TF32
        torch.backends.cudnn.allow_tf32 = False
        return torch.device("cuda", 0)
    return torch.device("cpu")
