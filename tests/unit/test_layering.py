"""The architecture's import rules, enforced rather than hoped for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support.kube import REPO_ROOT

BIN = Path(sys.executable).parent


def test_import_contracts_hold() -> None:
    """sft_trainer never imports sft_operator; the operator imports only sft_trainer.config."""
    result = subprocess.run([str(BIN / "lint-imports")], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_operator_passes_strict_mypy() -> None:
    result = subprocess.run([str(BIN / "mypy")], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_finds_nothing() -> None:
    """Lint and formatting are part of the gate, so they stay at zero findings."""
    for args in (["check", "."], ["format", "--check", "."]):
        result = subprocess.run([str(BIN / "ruff"), *args], cwd=REPO_ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_operator_package_loads_without_torch() -> None:
    """The operator image has no torch: importing the API must not pull it in."""
    code = "import sys, sft_operator.api, sft_operator.crdgen; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_operator_folder_does_not_shadow_the_standard_library() -> None:
    assert not (REPO_ROOT / "operator" / "__init__.py").exists()
    code = "import operator; assert operator.__file__ and 'site-packages' not in operator.__file__; operator.add"
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)
